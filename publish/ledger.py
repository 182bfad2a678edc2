"""The privacy ledger: differential-privacy budget spent by each dataset, across all its releases.

Every differentially private release spends some epsilon (and delta).  Under basic sequential composition
the releases of one dataset together are ``(sum of epsilon, sum of delta)``-DP, so the ledger adds them up
and refuses a release that would take the total epsilon over the dataset's budget (the setting
``dp_budget_epsilon``) with :class:`store.errors.PrivacyBudgetExhausted`.

Spending is two-phase so that a failed release spends nothing::

    with ledger.spending("traffic-speed-mesh", "2025-01-01_2025-01-31", epsilon=1.0, delta=1e-6):
        ...  # build, check and write the release; an exception releases the reservation

:meth:`PrivacyLedger.reserve` takes budget out under an exclusive ``flock`` (so two processes cannot both
take the last of it), :meth:`PrivacyLedger.commit` makes it final, :meth:`PrivacyLedger.cancel` gives it
back.  A reservation left by a process that died counts as spent: the ledger errs on the side of privacy.

The file is JSON (``{releases}/{dataset}/privacy-ledger.json`` by default), rewritten atomically (temporary
file, fsync, rename, fsync of the folder).  It holds parameters only, never data or secrets.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.errors import ConfigError, PrivacyBudgetExhausted

LEDGER_NAME = "privacy-ledger.json"
FORMAT = 1
_SLACK = 1e-9  # float sums of epsilons: 0.1 + 0.2 must fit a budget of 0.3


@dataclass(frozen=True)
class LedgerEntry:
    """One release's spending: reserved while the release is being made, committed once it exists."""

    dataset: str
    version: str
    epsilon: float
    delta: float
    state: str  # "reserved" or "committed"
    token: str
    at: str  # UTC time of the reservation (ISO 8601)


def ledger_path(releases: Path, dataset_id: str) -> Path:
    """Where a dataset's ledger lives: beside its release folders."""
    return Path(releases) / dataset_id / LEDGER_NAME


class PrivacyLedger:
    """The epsilon/delta spent per dataset, kept in one JSON file, with a total epsilon budget."""

    def __init__(self, path: Path, budget_epsilon: float) -> None:
        if not budget_epsilon > 0:
            raise ConfigError(f"Setting 'dp_budget_epsilon' must be above 0, got {budget_epsilon}")
        self.path = Path(path)
        self.budget_epsilon = float(budget_epsilon)

    # -- reading --------------------------------------------------------------------------------------------

    def entries(self, dataset_id: str | None = None) -> list[LedgerEntry]:
        """The entries (reserved and committed), oldest first, of one dataset or of all."""
        return [e for e in self._read() if dataset_id is None or e.dataset == dataset_id]

    def spent(self, dataset_id: str) -> tuple[float, float]:
        """Total (epsilon, delta) of the dataset's committed and reserved entries."""
        found = self.entries(dataset_id)
        return sum(e.epsilon for e in found), sum(e.delta for e in found)

    def remaining(self, dataset_id: str) -> float:
        """Epsilon the dataset may still spend (never below 0)."""
        return max(0.0, self.budget_epsilon - self.spent(dataset_id)[0])

    # -- spending -------------------------------------------------------------------------------------------

    def reserve(self, dataset_id: str, version: str, epsilon: float, delta: float) -> LedgerEntry:
        """Take ``epsilon``/``delta`` out of the budget for ``version``, or raise PrivacyBudgetExhausted."""
        if not epsilon > 0 or not 0 <= delta < 1:
            raise ConfigError(f"A release must spend epsilon > 0 and 0 <= delta < 1, got {epsilon}, {delta}")
        with self._locked():
            entries = self._read()
            mine = [e for e in entries if e.dataset == dataset_id]
            if any(e.version == version for e in mine):
                raise PrivacyBudgetExhausted(
                    f"{dataset_id} version {version} has already spent privacy budget; a rebuild must reuse "
                    "its stored noisy output instead of drawing new noise"
                )
            spent = sum(e.epsilon for e in mine)
            if spent + epsilon > self.budget_epsilon + _SLACK:
                raise PrivacyBudgetExhausted(
                    f"{dataset_id}: privacy budget exhausted: this release needs epsilon {epsilon:g}, "
                    f"spent {spent:g} of {self.budget_epsilon:g} "
                    f"({max(0.0, self.budget_epsilon - spent):g} left); raise 'dp_budget_epsilon' "
                    "deliberately or publish without differential privacy"
                )
            entry = LedgerEntry(
                dataset_id,
                version,
                float(epsilon),
                float(delta),
                "reserved",
                uuid.uuid4().hex,
                datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self._write([*entries, entry])
            return entry

    def commit(self, entry: LedgerEntry) -> LedgerEntry:
        """Make a reservation final (the release exists now)."""
        with self._locked():
            entries = self._read()
            found = [e for e in entries if e.token == entry.token]
            if not found:
                raise ConfigError(f"No reservation {entry.token} in the privacy ledger {self.path}")
            done = LedgerEntry(**{**asdict(found[0]), "state": "committed"})
            self._write([done if e.token == entry.token else e for e in entries])
            return done

    def cancel(self, entry: LedgerEntry) -> None:
        """Give a reservation back (the release failed and published nothing)."""
        with self._locked():
            entries = self._read()
            if any(e.token == entry.token and e.state == "committed" for e in entries):
                raise ConfigError(f"Reservation {entry.token} is committed and cannot be given back")
            self._write([e for e in entries if e.token != entry.token])

    @contextlib.contextmanager
    def spending(self, dataset_id: str, version: str, epsilon: float, delta: float) -> Iterator[LedgerEntry]:
        """Reserve for the block; commit when it succeeds, give the budget back when it raises."""
        entry = self.reserve(dataset_id, version, epsilon, delta)
        try:
            yield entry
        except BaseException:
            self.cancel(entry)
            raise
        self.commit(entry)

    def spend(self, dataset_id: str, version: str, epsilon: float, delta: float) -> LedgerEntry:
        """Reserve and commit at once (for a release that already exists)."""
        return self.commit(self.reserve(dataset_id, version, epsilon, delta))

    # -- the file -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> list[LedgerEntry]:
        try:
            raw: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The privacy ledger {self.path} cannot be read: {exc}") from exc
        if raw.get("format") != FORMAT or not isinstance(raw.get("entries"), list):
            raise ConfigError(f"The privacy ledger {self.path} is not a format-{FORMAT} ledger")
        try:
            return [LedgerEntry(**item) for item in raw["entries"]]
        except TypeError as exc:
            raise ConfigError(f"The privacy ledger {self.path} has a malformed entry: {exc}") from exc

    def _write(self, entries: list[LedgerEntry]) -> None:
        body = {"format": FORMAT, "entries": [asdict(e) for e in entries]}
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(body, out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
