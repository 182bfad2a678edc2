"""The ``trips-od`` dataset: trips per JST day from each corridor zone (origin) to each zone (destination).

It replaces ``trajectories-sample`` (withdrawn: docs/PRIVACY.md says why).  What it publishes is a count
table, built and suppressed like the other aggregate datasets (``publish.cells``, ``publish.anonymize``):

* **Trips** are the analyst ``trips`` view's (``store.views``: runs of a device's samples between stops,
  no gap over 5 minutes), segmented **per device and JST day**: a trip running over midnight counts on each
  day as its part on that day, so a day's rows depend on that day's samples only, whatever range a release
  covers.  Privacy-zone samples are removed before segmentation (``publish.source``).
* A trip's **origin** is the corridor zone of its first sample and its **destination** the zone of its last
  (``outside`` when the sample lies in no zone): the zones of ``store/geo/data/corridor_zones.geojson``.
* **Cells**: (day, origin, destination) with the number of trips and of distinct devices; and per origin
  the total over all destinations (``destination_zone = all``).  The weight for dominance is trips.
* **Rules**: k distinct devices per cell, operator dominance by trips, **device dominance** by trips (no
  device above :data:`DEVICE_DOMINANCE` of a row's trips: one looping shuttle would make a row describe
  its service), the residual rule on the per-origin totals (the total minus its published cells must
  itself pass k and both dominance rules, or be empty; in devices too), closed days and repetition of a
  day's first release (``publish.closure``, ``publish.previous``).

No device, pseudonym, point or time finer than the day is published.  Under differential privacy
(``dp_epsilon`` set) the dataset is left out: ``--all`` skips it, asking for it by name is refused before
any work, and every differentially private release names it with the reason (:data:`WITHOUT_DP`) in its
``privacy.json`` (``left_out_under_differential_privacy``).
"""

from __future__ import annotations

import functools

import duckdb
import pyarrow as pa

from publish._registry import BuildRequest, Rollup, Use, derive, differential_privacy_on, register
from publish._specs import OUTSIDE_ZONES
from publish.cells import Candidates, build_aggregate
from publish.errors import PublishError
from publish.model import DatasetSpec, OutputColumn
from store.lake import fetch_arrow
from store.settings import Settings
from store.views import create_analyst_views

DATASET_ID = "trips-od"
ALL_DESTINATIONS = "all"  # destination_zone of an origin's total row
_SCHEMA = "trips_od_day"  # a DuckDB schema whose views segment trips per device and JST day
_DAY_SEPARATOR = "|"  # cannot occur in a device_id ([A-Za-z0-9_-]{1,64})
_JST_DAY = "CAST(timezone('Asia/Tokyo', ts) AS DATE)"

#: No device may hold more than this share of a row's trips.  At one half, the other devices of a published
#: row made at least as many of its trips as its busiest vehicle: the count is not one vehicle's timetable.
DEVICE_DOMINANCE = 0.5

WITHOUT_DP = (
    "trips-od has no differential-privacy plan (its cells are not bounded per device and no noise is "
    "drawn), and an exact release of the same vehicles next to differentially private ones would not keep "
    "the guarantee they state; it is published only without dp_epsilon"
)


def _c(
    name: str, type_: pa.DataType, unit: str, ja: str, en: str, dja: str, den: str, kind: str
) -> OutputColumn:
    return OutputColumn(name, type_, unit, ja, en, dja, den, kind)


TRIPS_OD = DatasetSpec(
    id=DATASET_ID,
    title_ja="ゾーン間トリップ数（OD 表・日別）",
    title_en="Trips between corridor zones per day (origin-destination)",
    description_ja=(
        "実証車両のトリップ数を、日本時間の日ごとに出発ゾーン（最初のサンプルのゾーン）と到着ゾーン（最後の"
        "サンプルのゾーン）の組み合わせで集計。出発ゾーンごとの合計（到着ゾーン all）も示します。端末数が k "
        "未満の組み合わせ、1事業者が大半を占める組み合わせ、1台がトリップの半数を超える組み合わせは秘匿し、"
        "合計から秘匿した組み合わせが引き算で分からないようにしています。軌跡・時刻・端末は公開しません。"
    ),
    description_en=(
        "Trips of the trial vehicles per Japan-time day, from the corridor zone of each trip's first sample "
        "(origin) to the zone of its last (destination), with each origin's total over all destinations "
        f"(destination {ALL_DESTINATIONS}). Zone pairs with fewer than k devices, dominated by one "
        "operator or with more than half of their trips made by one vehicle are suppressed, and totals "
        "are published only where subtraction cannot reveal a suppressed pair. No path, time of day or "
        "device is published."
    ),
    keywords_ja=("OD 表", "トリップ", "自動運転", "モビリティ", "羽田", "蒲田", "大田区"),
    keywords_en=(
        "origin-destination",
        "trips",
        "autonomous driving",
        "mobility",
        "Haneda",
        "Kamata",
        "Ota City",
    ),
    columns=(
        _c(
            "day_jst",
            pa.date32(),
            "JST date",
            "日付",
            "Day",
            "トリップが行われた日本時間の日付（日をまたぐトリップは日ごとに分けて数える）。",
            "Japan-time day of the trip (a trip over midnight counts on each day as its part on that day).",
            "dimension",
        ),
        _c(
            "origin_zone",
            pa.string(),
            "",
            "出発ゾーン",
            "Origin zone",
            "トリップの最初のサンプルがあったコリドーのゾーン ID"
            f"（どのゾーンにも入らない時は {OUTSIDE_ZONES}）。",
            f"Corridor zone id of the trip's first sample ({OUTSIDE_ZONES} when it lies in no zone).",
            "dimension",
        ),
        _c(
            "destination_zone",
            pa.string(),
            "",
            "到着ゾーン",
            "Destination zone",
            f"トリップの最後のサンプルがあったゾーン ID（{OUTSIDE_ZONES} は同上）。"
            f"{ALL_DESTINATIONS} は出発ゾーンごとの合計（全到着ゾーン）。",
            f"Corridor zone id of the trip's last sample ({OUTSIDE_ZONES} as above); "
            f"{ALL_DESTINATIONS} is the origin's total over every destination.",
            "dimension",
        ),
        _c(
            "trips",
            pa.int64(),
            "count",
            "トリップ数",
            "Trips",
            "トリップの数。",
            "Number of trips.",
            "measure",
        ),
        _c(
            "devices",
            pa.int64(),
            "count",
            "端末数",
            "Devices",
            "これらのトリップを行った異なる端末の数（公開する行は常に k 以上）。",
            "Distinct devices that made these trips (always at least k in a published row).",
            "measure",
        ),
    ),  # fmt: skip
    spatial=False,
    time_resolution="P1D",
)


def _destination_parent(value: object) -> object:
    return ALL_DESTINATIONS if value != ALL_DESTINATIONS else None


def _install_day_segmentation(con: duckdb.DuckDBPyConnection) -> None:
    """The analyst views again, in a schema of their own whose ``state`` keys each device per JST day, so
    that its ``trips`` are split at midnight JST (the same segmentation, one device-day at a time)."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_SCHEMA}")
    con.execute(
        f"CREATE OR REPLACE VIEW {_SCHEMA}.state AS SELECT * REPLACE "
        f"(device_id || '{_DAY_SEPARATOR}' || CAST({_JST_DAY} AS VARCHAR) AS device_id) FROM main.state"
    )
    for name in ("event", "network"):
        con.execute(f"CREATE OR REPLACE VIEW {_SCHEMA}.{name} AS SELECT * FROM main.{name}")
    con.execute(f"USE {_SCHEMA}")
    try:
        create_analyst_views(con)
    finally:
        con.execute("USE main")


_ZONE = f"coalesce(s.zone, zone_at(s.lat, s.lon), '{OUTSIDE_ZONES}')"

# One row per trip: its JST day, origin and destination zones, device and operator.  The zone of the first
# and last sample (ties at one instant broken by the zone id, so that rebuilds agree).
_TRIP_ENDS = f"""WITH t AS (SELECT operator, device_id, start_ts, end_ts FROM {_SCHEMA}.trips),
ends AS (
    SELECT t.operator, t.device_id, t.start_ts,
           min({_ZONE}) FILTER (WHERE s.ts = t.start_ts) AS origin_zone,
           min({_ZONE}) FILTER (WHERE s.ts = t.end_ts) AS destination_zone
    FROM t JOIN {_SCHEMA}.state s
      ON s.operator = t.operator AND s.device_id = t.device_id AND s.ts IN (t.start_ts, t.end_ts)
    WHERE s.lat IS NOT NULL AND s.lon IS NOT NULL
    GROUP BY t.operator, t.device_id, t.start_ts)
SELECT CAST(timezone('Asia/Tokyo', start_ts) AS DATE) AS day_jst, origin_zone, destination_zone,
       operator || '/' || split_part(device_id, '{_DAY_SEPARATOR}', 1) AS device, operator
FROM ends"""


def trips_od(con: duckdb.DuckDBPyConnection, request: BuildRequest) -> Candidates:
    _install_day_segmentation(con)
    con.execute(f"CREATE OR REPLACE TEMP TABLE trip_ends AS {_TRIP_ENDS}")
    cells = fetch_arrow(
        con,
        f"""SELECT day_jst, origin_zone,
               CASE WHEN grouping(destination_zone) = 1 THEN '{ALL_DESTINATIONS}' ELSE destination_zone END
                   AS destination_zone,
               count(*) AS trips, count(DISTINCT device) AS devices
        FROM trip_ends
        GROUP BY GROUPING SETS ((day_jst, origin_zone, destination_zone), (day_jst, origin_zone))
        ORDER BY ALL""",
    )
    leaves = fetch_arrow(
        con,
        """SELECT day_jst, origin_zone, destination_zone, device, operator, CAST(count(*) AS DOUBLE) AS weight
        FROM trip_ends GROUP BY ALL ORDER BY ALL""",
    )
    return Candidates(cells, leaves)


def _refuse_under_dp(settings: Settings) -> None:
    if differential_privacy_on(settings):
        raise PublishError(f"{DATASET_ID} is left out of releases under differential privacy: {WITHOUT_DP}")


_segmented = derive(Use.TRAVEL, "state.lat", "state.lon", "state.ts") + derive(
    Use.STATISTIC, "state.speed_mps", "state.mode"
)
_zone = derive(Use.SPACE_CELL, "state.zone", "state.lat", "state.lon")

register(
    TRIPS_OD,
    functools.partial(build_aggregate, query=trips_od),
    aggregate=True,
    key_columns=("day_jst", "origin_zone", "destination_zone"),
    time_column="day_jst",
    rollup=Rollup("destination_zone", _destination_parent),
    derivations={
        "day_jst": derive(Use.TIME_BUCKET, "state.ts"),
        "origin_zone": _zone + _segmented,
        "destination_zone": _zone + _segmented,
        "trips": derive(Use.COUNT) + _segmented,
        "devices": derive(Use.COUNT_DISTINCT, "state.device_id"),
    },
    without_dp=WITHOUT_DP,
    device_dominance=DEVICE_DOMINANCE,
    preflight=_refuse_under_dp,
)

__all__ = ["ALL_DESTINATIONS", "DATASET_ID", "DEVICE_DOMINANCE", "TRIPS_OD", "WITHOUT_DP", "trips_od"]
