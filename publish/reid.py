"""Re-identification risk of a ``trajectories-sample`` output, measured with pycanon.

**Adversary.**  Someone who knows roughly when and where one trip began and ended, on which day, and what
kind of vehicle it was (a neighbour, a colleague, a camera) looks for that trip in the sample.  Everything
else about a trip (its points) follows once it is singled out, and, through the daily pseudonym, so do the
device's other trips of that day.

**Quasi-identifiers** of a published trip (:func:`quasi_identifiers`): its Japan-time day, the Japan-time
hour of its first published point, the 1 km JIS mesh (level 3) of its first and of its last published
point, and its device type.

**Measure.**  Trips with the same quasi-identifiers form an equivalence class; the adversary's chance of
picking the right trip (prosecutor risk) is 1 / class size.  Because one device could fill a class on its
own (a robot looping a block), the class is counted in distinct pseudonyms (= devices, the pseudonym being
per day and the day a quasi-identifier) as well as in trips.  Both are measured with **pycanon**'s
``k_anonymity`` (an independent implementation: the builder's own suppression is not trusted to check
itself): on the trips, and on the distinct (quasi-identifiers, pseudonym) rows.

**Threshold.**  The gate (:func:`check_trajectories`) fails unless every class holds at least ``k`` distinct
devices (``k = publish_k``, 10 by default, as MDS requires of trips): a maximum re-identification risk of
1/k, the same bar the aggregate datasets' cells meet.

pycanon is imported lazily: it pins exact versions of numpy, typer and others that the project's own
dependencies exclude, so it is installed without its pins (``pip install --no-deps pycanon``; it needs only
numpy and pandas at run time).  Without it the check fails closed: no trajectories are released unmeasured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store.errors import ConfigError
from store.geo import jis_mesh_arrow

if TYPE_CHECKING:
    from publish.model import BuiltDataset
    from store.settings import Settings

QI_COLUMNS: tuple[str, ...] = ("day_jst", "start_hour_jst", "start_mesh1km", "end_mesh1km", "device_type")
QI_MESH_LEVEL = 3  # about 1 km
_JST = "Asia/Tokyo"


@dataclass(frozen=True)
class RiskReport:
    """Re-identification risk of a trajectories sample, for the gate and the release metadata."""

    trips: int
    devices_days: int  # distinct pseudonyms
    classes: int  # equivalence classes of the quasi-identifiers
    k_trips: int  # smallest class, in trips (pycanon k-anonymity); 0 when there are no trips
    k_devices: int  # smallest class, in distinct pseudonyms
    max_risk: float  # 1 / k_devices (0 when empty)
    mean_risk: float  # average over trips of 1 / (distinct pseudonyms of the trip's class)
    trips_at_risk: int  # trips in a class with fewer than `k` distinct pseudonyms
    k: int  # the threshold the trips were measured against
    quasi_identifiers: tuple[str, ...]
    library: str

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["quasi_identifiers"] = list(self.quasi_identifiers)
        return out


def quasi_identifiers(table: pa.Table) -> pa.Table:
    """One row per published trip: pseudonym, trip_no and the quasi-identifiers (:data:`QI_COLUMNS`).

    ``table`` has the trajectories-sample columns (pseudonym, trip_no, point_no, ts, lat, lon, device_type).
    """
    schema = pa.schema(
        [
            ("pseudonym", pa.string()),
            ("trip_no", pa.int64()),
            ("day_jst", pa.date32()),
            ("start_hour_jst", pa.int64()),
            ("start_mesh1km", pa.int64()),
            ("end_mesh1km", pa.int64()),
            ("device_type", pa.string()),
        ]
    )
    if table.num_rows == 0:
        return schema.empty_table()
    ordered = table.sort_by([("pseudonym", "ascending"), ("trip_no", "ascending"), ("point_no", "ascending")])
    pseudonym = ordered["pseudonym"].to_numpy(zero_copy_only=False).astype(str)
    trip = ordered["trip_no"].to_numpy(zero_copy_only=False).astype(np.int64)
    change = np.ones(len(trip), np.bool_)
    change[1:] = (pseudonym[1:] != pseudonym[:-1]) | (trip[1:] != trip[:-1])
    first = np.flatnonzero(change)
    last = np.append(first[1:] - 1, len(trip) - 1)
    lat = ordered["lat"].to_numpy(zero_copy_only=False).astype(np.float64)
    lon = ordered["lon"].to_numpy(zero_copy_only=False).astype(np.float64)
    local = pc.assume_timezone(
        pc.local_timestamp(ordered["ts"].cast(pa.timestamp("us", tz=_JST))), "UTC"
    ).take(pa.array(first))
    return pa.table(
        {
            "pseudonym": pa.array(pseudonym[first], pa.string()),
            "trip_no": pa.array(trip[first], pa.int64()),
            "day_jst": pc.cast(pc.floor_temporal(local, unit="day"), pa.date32()),
            "start_hour_jst": pc.cast(pc.hour(local), pa.int64()),
            "start_mesh1km": jis_mesh_arrow(lat[first], lon[first], QI_MESH_LEVEL),
            "end_mesh1km": jis_mesh_arrow(lat[last], lon[last], QI_MESH_LEVEL),
            "device_type": ordered["device_type"].take(pa.array(first)).cast(pa.string()),
        },
        schema=schema,
    )


def class_devices(qi: pa.Table) -> pa.Array:
    """For each row of ``qi``, the number of distinct pseudonyms in its equivalence class."""
    if qi.num_rows == 0:
        return pa.array([], pa.int64())
    keys = list(QI_COLUMNS)
    filled = _filled(qi)
    sizes = filled.group_by(keys).aggregate([("pseudonym", "count_distinct")])
    joined = filled.append_column("_row", pa.array(np.arange(qi.num_rows))).join(sizes, keys)
    joined = joined.sort_by("_row")
    return joined["pseudonym_count_distinct"].combine_chunks().cast(pa.int64())


def reidentification_risk(table: pa.Table, *, k: int = 10) -> RiskReport:
    """Measure the sample's re-identification risk against class size ``k`` (see the module doc)."""
    qi = quasi_identifiers(table)
    library = pycanon_version()
    if qi.num_rows == 0:
        return RiskReport(0, 0, 0, 0, 0, 0.0, 0.0, 0, k, QI_COLUMNS, library)
    from pycanon import anonymity

    frame = _filled(qi).to_pandas()
    k_trips = int(anonymity.k_anonymity(frame, list(QI_COLUMNS)))
    per_device = frame.drop_duplicates([*QI_COLUMNS, "pseudonym"])
    k_devices = int(anonymity.k_anonymity(per_device, list(QI_COLUMNS)))
    devices = class_devices(qi).to_numpy()
    classes = len(frame.drop_duplicates(list(QI_COLUMNS)))
    return RiskReport(
        trips=qi.num_rows,
        devices_days=int(pc.count_distinct(qi["pseudonym"]).as_py()),
        classes=classes,
        k_trips=k_trips,
        k_devices=k_devices,
        max_risk=1.0 / k_devices,
        mean_risk=float(np.mean(1.0 / devices)),
        trips_at_risk=int(np.sum(devices < k)),
        k=k,
        quasi_identifiers=QI_COLUMNS,
        library=library,
    )


def check_trajectories(built: BuiltDataset, settings: Settings) -> list[str]:
    """The gate's check of a trajectories sample: problems found (empty when it may be released)."""
    try:
        report = reidentification_risk(built.table, k=settings.publish_k)
    except ConfigError as exc:
        return [str(exc)]
    built.privacy.extra["reidentification"] = report.as_dict()
    if report.trips and report.k_devices < settings.publish_k:
        return [
            f"trajectories-sample: re-identification risk {report.max_risk:.3f} "
            f"above 1/{settings.publish_k}: "
            f"{report.trips_at_risk} of {report.trips} trips share their quasi-identifiers "
            f"({', '.join(QI_COLUMNS)}) with fewer than {settings.publish_k} devices "
            f"(smallest class: {report.k_devices} devices, measured with {report.library})"
        ]
    return []


def _filled(qi: pa.Table) -> pa.Table:
    """``qi`` with nulls replaced by sentinels, so that a null quasi-identifier forms a class of its own."""
    out = qi
    for name in QI_COLUMNS:
        column = out[name]
        if column.null_count:
            fill: Any = "" if pa.types.is_string(column.type) else -1
            if pa.types.is_date(column.type):
                fill = pa.scalar(0, pa.date32())
            out = out.set_column(out.column_names.index(name), name, pc.fill_null(column, fill))
    return out


def pycanon_version() -> str:
    try:
        import pycanon  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the trajectories-sample re-identification check needs pycanon: install it without its pins "
            "with 'pip install --no-deps pycanon' (its exact pins clash with corridorhub's dependencies)"
        ) from None
    return f"pycanon {metadata.version('pycanon')}"
