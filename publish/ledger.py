"""The privacy ledger: the differential-privacy budget spent on each JST day, by all datasets and releases.

The privacy unit is a **device-day** (``publish.noise``): every cell of every dataset lies in one JST day,
so a device's samples of day d reach only day-d cells.  Releases of different datasets, and repeated
releases, compose sequentially on the days they share (basic composition: epsilons and deltas add up);
different days compose in parallel.  So the guarantee for a device-day is the **sum over every release of
every dataset that published its day**, and that is what the ledger keeps: one file for the whole release
folder, ``{releases}/privacy-ledger.json``, with per release the dataset, the days it published first and
the (epsilon, delta) it spent on each of them.  A release whose spending would take any of its days over
``dp_budget_epsilon`` is refused with :class:`store.errors.PrivacyBudgetExhausted`, naming the day and the
figures.  Days a release repeats from an earlier one (``publish.previous``) draw no noise and are not
charged: they are not in its ``days``.

Spending is two-phase so that the ledger and the releases agree::

    with ledger.spending("traffic-speed-mesh", "2025-01-01_2025-01-31-r1", days, epsilon=0.3, delta=0):
        ...  # build, check, write the release and rename it into place

:meth:`PrivacyLedger.reserve` charges the budget under an exclusive ``flock`` (two processes cannot both
take the last of it) **before** anything is built: a release folder never exists without its charge.
:meth:`PrivacyLedger.drawn` marks the charge as spent when the build starts reading the lake: from then
on every outcome depends on the data and the noise (a release, "nothing to publish", a gate failure, an
interruption), so it is charged whatever happens; retrying cannot choose among draws for free.
:meth:`PrivacyLedger.commit` marks the charge final once the folder is in place; a failure before the
build gives it back (:meth:`PrivacyLedger.cancel`).  A process killed in between leaves a reservation;
the next release settles it (:meth:`PrivacyLedger.settle`): given back only when it is certain nothing was
published (never drawn, no folder, and the release log, ``publish.release_log``, does not name its
version: a folder that was served and then deleted keeps its charge), committed otherwise.

Ledgers of earlier versions, one per dataset (``{releases}/{dataset}/privacy-ledger.json``), are adopted
into this one before any new charge (:func:`legacy_entries`): what they spent still counts, on every day
of each release's range.

The file is JSON, rewritten atomically (temporary file, fsync, rename, fsync of the folder).  It holds
parameters only, never data or secrets.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from publish._jsonfile import dataset_busy, locked, unused_version, write_atomic
from publish.errors import PublishError
from store.errors import ConfigError, PrivacyBudgetExhausted

if TYPE_CHECKING:
    from publish.release_log import ReleaseLog

LEDGER_NAME = "privacy-ledger.json"
FORMAT = 2
_SLACK = 1e-9  # float sums of epsilons: 0.1 + 0.2 must fit a budget of 0.3
_VERSION_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})-r\d+")


@dataclass(frozen=True)
class LedgerEntry:
    """One release's spending: reserved while the release is being made, committed once it exists."""

    dataset: str
    version: str
    days: tuple[str, ...]  # JST days (ISO) this release published first: each is charged
    epsilon: float  # per device-day, on each of ``days``
    delta: float
    state: str  # "reserved", "drawn" (its build has read the lake: the charge stands) or "committed"
    token: str
    at: str  # UTC time of the reservation (ISO 8601)


@dataclass(frozen=True)
class DaySpending:
    """What one day has spent, in total and per dataset."""

    day: str
    epsilon: float
    delta: float
    by_dataset: dict[str, float] = field(default_factory=dict)


def ledger_path(releases: Path) -> Path:
    """Where the ledger lives: at the top of the release folder, beside every dataset's folder."""
    return Path(releases) / LEDGER_NAME


class PrivacyLedger:
    """The epsilon/delta spent per JST day over all datasets, in one JSON file, with a budget per day."""

    def __init__(self, path: Path, budget_epsilon: float) -> None:
        if not budget_epsilon > 0:
            raise ConfigError(f"Setting 'dp_budget_epsilon' must be above 0, got {budget_epsilon}")
        self.path = Path(path)
        self.budget_epsilon = float(budget_epsilon)

    # -- reading --------------------------------------------------------------------------------------------

    def entries(self, dataset_id: str | None = None) -> list[LedgerEntry]:
        """The entries (reserved and committed), oldest first, of one dataset or of all."""
        return [e for e in self._read() if dataset_id is None or e.dataset == dataset_id]

    def spent(self, day: date | str) -> DaySpending:
        """Total (epsilon, delta) charged on ``day`` by every dataset's reserved and committed releases."""
        return _spending(self._read(), _iso(day))

    def remaining(self, day: date | str) -> float:
        """Epsilon ``day`` may still spend (never below 0)."""
        return max(0.0, self.budget_epsilon - self.spent(day).epsilon)

    # -- spending -------------------------------------------------------------------------------------------

    def reserve(
        self, dataset_id: str, version: str, days: Iterable[date | str], epsilon: float, delta: float
    ) -> LedgerEntry:
        """Charge ``epsilon``/``delta`` on each of ``days`` for ``version`` (or PrivacyBudgetExhausted)."""
        charged = tuple(sorted({_iso(d) for d in days}))
        if not charged:
            raise ConfigError("A release that publishes no new day spends no privacy budget")
        if not epsilon > 0 or not 0 <= delta < 1:
            raise ConfigError(f"A release must spend epsilon > 0 and 0 <= delta < 1, got {epsilon}, {delta}")
        with self._locked():
            entries = self._read()
            if any(e.dataset == dataset_id and e.version == version for e in entries):
                raise PrivacyBudgetExhausted(
                    f"{dataset_id} version {version} has already spent privacy budget; a rebuild must reuse "
                    "its stored noisy output instead of drawing new noise"
                )
            for day in charged:
                self._refuse_over_budget(_spending(entries, day), dataset_id, epsilon)
            entry = LedgerEntry(
                dataset_id,
                version,
                charged,
                float(epsilon),
                float(delta),
                "reserved",
                uuid.uuid4().hex,
                datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self._write([*entries, entry])
            return entry

    def _refuse_over_budget(self, day: DaySpending, dataset_id: str, epsilon: float) -> None:
        if day.epsilon + epsilon <= self.budget_epsilon + _SLACK:
            return
        by = ", ".join(f"{name} {value:g}" for name, value in sorted(day.by_dataset.items()))
        raise PrivacyBudgetExhausted(
            f"{dataset_id}: privacy budget exhausted for {day.day}: this release needs epsilon {epsilon:g} "
            f"per device-day, that day has spent {day.epsilon:g} of {self.budget_epsilon:g} "
            f"({max(0.0, self.budget_epsilon - day.epsilon):g} left; {by}); the day's charges stand "
            "(their noisy outputs are out): leave the day as it is, or raise 'dp_budget_epsilon' "
            "deliberately (the guarantee stated for the day weakens to the new total)"
        )

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        """Make a reservation final (the release exists now)."""
        with self._locked():
            entries = self._read()
            found = [e for e in entries if e.token == entry.token]
            if not found:
                raise ConfigError(f"No reservation {entry.token} in the privacy ledger {self.path.name}")
            done = replace(found[0], state="committed")
            self._write([done if e.token == entry.token else e for e in entries])
            return done

    def drawn(self, entry: LedgerEntry) -> LedgerEntry:
        """Mark a reservation as spent whatever happens next: its build reads the lake and draws noise
        now, and any outcome (a release, nothing publishable, a failure) depends on both."""
        with self._locked():
            entries = self._read()
            out = [replace(e, state="drawn") if e.token == entry.token and e.state == "reserved" else e
                   for e in entries]  # fmt: skip
            self._write(out)
            return next(e for e in out if e.token == entry.token)

    def cancel(self, entry: LedgerEntry) -> None:
        """Give a reservation back (the release failed before its build read anything)."""
        with self._locked():
            entries = self._read()
            if any(e.token == entry.token and e.state != "reserved" for e in entries):
                raise ConfigError(f"Reservation {entry.token} is spent and cannot be given back")
            self._write([e for e in entries if e.token != entry.token])

    def _fail(self, entry: LedgerEntry) -> None:
        """A release failed: give its reservation back if nothing was drawn, else the charge stands."""
        with self._locked():
            entries = self._read()
            drawn = any(e.token == entry.token and e.state == "drawn" for e in entries)
            out = [replace(e, state="committed") if e.token == entry.token else e for e in entries]
            self._write(out if drawn else [e for e in entries if e.token != entry.token])

    def adopt(self, legacy: Iterable[LedgerEntry]) -> int:
        """Add what earlier per-dataset ledgers spent (:func:`legacy_entries`), once; returns how many."""
        with self._locked():
            entries = self._read()
            known = {(e.dataset, e.version) for e in entries}
            new = [e for e in legacy if (e.dataset, e.version) not in known]
            if new:
                self._write([*new, *entries])
            return len(new)

    def unused_version(self, dataset_id: str, name: str) -> str:
        """``name`` (``...-r{n}``), or the next ``-r{n}`` this ledger has not charged for ``dataset_id``."""
        return unused_version(name, (e.version for e in self.entries(dataset_id)))

    def settle(self, published: Callable[[LedgerEntry], bool | None]) -> list[LedgerEntry]:
        """Settle charges left by killed processes: ``published(entry)`` says True (its release may be out:
        commit), False (certainly nothing was published and nobody is making it: give back) or None (a
        release is in progress: leave it).  A ``drawn`` entry is committed unless in progress.  Returns the
        entries given back."""
        with self._locked():
            entries = self._read()
            kept, dropped = [], []
            for e in entries:
                verdict = published(e) if e.state in ("reserved", "drawn") else None
                if verdict is False and e.state == "drawn":
                    verdict = True  # its noise was drawn: the outcome is spent
                if verdict is True:
                    kept.append(replace(e, state="committed"))
                elif verdict is False:
                    dropped.append(e)
                else:
                    kept.append(e)
            if kept != entries:
                self._write(kept)
            return dropped

    @contextlib.contextmanager
    def spending(
        self, dataset_id: str, version: str, days: Iterable[date | str], epsilon: float, delta: float
    ) -> Iterator[LedgerEntry]:
        """Reserve for the block; commit when it succeeds; when it raises, give the budget back unless
        :meth:`drawn` was called (then the charge stands)."""
        entry = self.reserve(dataset_id, version, days, epsilon, delta)
        try:
            yield entry
        except BaseException:
            self._fail(entry)
            raise
        self.commit(entry)

    def spend(
        self, dataset_id: str, version: str, days: Iterable[date | str], epsilon: float, delta: float
    ) -> LedgerEntry:
        """Reserve and commit at once (for a release that already exists)."""
        return self.commit(self.reserve(dataset_id, version, days, epsilon, delta))

    def summary(self, days: Iterable[date | str]) -> dict[str, Any]:
        """What the metadata says about ``days``: per day the total spent and by which datasets."""
        entries = self._read()
        spent = [_spending(entries, day) for day in sorted({_iso(d) for d in days})]
        return {
            "budget_epsilon_per_device_day": self.budget_epsilon,
            "spent_per_day": {
                s.day: {"epsilon": s.epsilon, "delta": s.delta, "by_dataset": s.by_dataset} for s in spent
            },
            "max_spent_epsilon": max((s.epsilon for s in spent), default=0.0),
            "max_spent_delta": max((s.delta for s in spent), default=0.0),
            "ledger": self.path.name,
        }

    # -- the file -------------------------------------------------------------------------------------------

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path)

    def _read(self) -> list[LedgerEntry]:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The privacy ledger {self.path.name} cannot be read: {exc}") from exc
        if raw.get("format") != FORMAT or not isinstance(raw.get("entries"), list):
            raise ConfigError(f"The privacy ledger {self.path.name} is not a format-{FORMAT} ledger")
        try:
            return [LedgerEntry(**{**item, "days": tuple(item["days"])}) for item in raw["entries"]]
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"The privacy ledger {self.path.name} has a malformed entry: {exc}") from exc

    def _write(self, entries: list[LedgerEntry]) -> None:
        body = {"format": FORMAT, "unit": "device-day", "entries": [asdict(e) for e in entries]}
        write_atomic(self.path, body)


def release_placed(
    releases: Path, publishing: str, provenance: str, logged: Callable[[str, str], bool]
) -> Callable[[LedgerEntry], bool | None]:
    """For :meth:`PrivacyLedger.settle`: whether a charge's release may be out (True: its folder holds
    ``provenance``, or the release log ``logged(dataset, version)`` names it, even if the folder was
    deleted since), certainly was not (False) or may still be made (None: another process holds its
    dataset's lock, ``{releases}/{dataset}/.lock``).  The caller holds ``publishing``'s lock and has
    settled the release log first."""

    def placed(entry: LedgerEntry) -> bool | None:
        if (releases / entry.dataset / entry.version / provenance).is_file():
            return True
        if entry.dataset != publishing and dataset_busy(releases, entry.dataset):
            return None
        return logged(entry.dataset, entry.version)

    return placed


def legacy_entries(releases: Path) -> list[LedgerEntry]:
    """What the per-dataset ledgers of earlier versions (``{releases}/{dataset}/privacy-ledger.json``,
    format 1, epsilon per release over its devices) spent: each release charged on every day of its range
    (from its ``provenance.json``, else from its version name), reservations as spent (their rule)."""
    out = []
    for path in sorted(Path(releases).glob(f"*/{LEDGER_NAME}")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"The privacy ledger {path.parent.name}/{path.name} cannot be read: {exc}"
            ) from exc
        if not isinstance(raw, dict) or raw.get("format") != 1:
            continue
        try:
            for item in raw.get("entries", []):
                days = _legacy_days(path.parent / item["version"], item["version"])
                out.append(
                    LedgerEntry(
                        item["dataset"], item["version"], days, float(item["epsilon"]),
                        float(item["delta"]), "committed", item["token"], item["at"],
                    )
                )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            name = f"{path.parent.name}/{path.name}"
            raise ConfigError(f"The old privacy ledger {name} has a malformed entry: {exc!r}") from exc
    return out


def released_entries(releases: Path) -> list[LedgerEntry]:
    """What the DP release folders state they spent (``privacy.json`` ``privacy_budget.this_release``), as
    committed charges: a lost or replaced ledger is rebuilt from them (:meth:`PrivacyLedger.adopt`)."""
    out = []
    for path in sorted(Path(releases).glob("*/*/privacy.json")):
        folder = path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue
        try:
            this = json.loads(path.read_text(encoding="utf-8"))["privacy"].get("privacy_budget", {})
            this = this.get("this_release")
            if not this:
                continue
            days = tuple(str(d) for d in this["days_charged"])
            epsilon, delta = float(this["epsilon"]), float(this["delta"] or 0.0)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            where = f"{folder.parent.name}/{folder.name}/privacy.json"
            raise ConfigError(f"Cannot read the privacy budget spent by release {where}: {exc!r}") from exc
        token = f"folder:{folder.parent.name}/{folder.name}"
        at = datetime.now(UTC).isoformat(timespec="seconds")
        out.append(LedgerEntry(folder.parent.name, folder.name, days, epsilon, delta, "committed", token, at))
    return out


def check_charges_known(ledger: PrivacyLedger, log: ReleaseLog, days: Iterable[date]) -> None:
    """Refuse to charge ``days`` while the release log names a DP release of them whose charge neither
    the ledger nor its folder (gone) tells: the budget spent on them would be understated."""
    wanted = {_iso(d) for d in days}
    charged = {(e.dataset, e.version) for e in ledger.entries()}
    for e in log.entries():
        if (
            e.mode != "dp"
            or (e.dataset, e.version) in charged
            or (log.releases / e.dataset / e.version).is_dir()
        ):
            continue
        for day in sorted(wanted & set(e.days)):
            raise PublishError(
                f"{day} was published with differential privacy by {e.dataset} {e.version} (release log), "
                f"but the privacy ledger {LEDGER_NAME} has no charge for it and its folder is gone: "
                "the budget spent on the day cannot be told. Restore the ledger or that release's folder "
                "from a backup"
            )


def _legacy_days(folder: Path, version: str) -> tuple[str, ...]:
    try:
        provenance = json.loads((folder / "provenance.json").read_text(encoding="utf-8"))
        first, last = date.fromisoformat(provenance["date_from"]), date.fromisoformat(provenance["date_to"])
    except (OSError, ValueError, KeyError):
        match = _VERSION_RANGE.fullmatch(version)
        if match is None:
            raise ConfigError(
                f"The old privacy ledger names release {folder.parent.name}/{version}, whose days cannot be "
                "told (no provenance.json, no date range in its name): restore its folder"
            ) from None
        first, last = date.fromisoformat(match[1]), date.fromisoformat(match[2])
    return tuple((first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1))


def _iso(day: date | str) -> str:
    return day.isoformat() if isinstance(day, date) else date.fromisoformat(day).isoformat()


def _spending(entries: list[LedgerEntry], day: str) -> DaySpending:
    by_dataset: dict[str, float] = defaultdict(float)
    epsilon = delta = 0.0
    for e in entries:
        if day in e.days:
            epsilon += e.epsilon
            delta += e.delta
            by_dataset[e.dataset] += e.epsilon
    return DaySpending(day, epsilon, delta, dict(by_dataset))
