"""Corridor zones: named polygons (stations, terminals, districts, road segments) and point assignment.

The zones live in ``store/geo/data/corridor_zones.geojson`` (WGS84; properties ``zone_id``, ``name_ja``,
``name_en``, ``kind``).  They are approximate (tens of metres), drawn around the real places and around the
simulator's routes.  They do not overlap; on a shared edge, and in general, **the first zone in the file
wins** (:func:`assign_zone` counts a point on a zone's boundary as inside it).

Two ways to assign points:

* :func:`assign_zone` (numpy + shapely, vectorized): what ingest calls on every flush.
* the DuckDB macro ``zone_at(lat, lon)`` installed by :func:`install_zones`: an even-odd ray-casting test
  against the ``zone_edges`` table, for rows stored without a ``zone`` column.  It agrees with
  :func:`assign_zone` everywhere except exactly on a zone boundary (where the ray test is half-open).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import shapely
from shapely.geometry import MultiPolygon, Polygon

from store.errors import ConfigError
from store.geo._geojson import read_polygon_features

ZONE_KINDS = ("terminal", "station", "district", "road")
_EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Zone:
    zone_id: str
    name_ja: str
    name_en: str
    kind: str
    polygon: Polygon | MultiPolygon

    @property
    def area_m2(self) -> float:
        """Area on the sphere, by an equirectangular projection at the zone's latitude (< 0.1 % off)."""
        lat0 = math.radians(self.polygon.centroid.y)
        k = math.radians(1) * _EARTH_RADIUS_M
        projected = shapely.transform(self.polygon, lambda xy: xy * np.array([k * math.cos(lat0), k]))
        return float(projected.area)


def zones_path() -> Path:
    """The packaged corridor zones file."""
    return Path(str(resources.files("store.geo") / "data" / "corridor_zones.geojson"))


def load_zones(path: str | Path) -> tuple[Zone, ...]:
    """Zones from a GeoJSON file, in precedence order (ConfigError naming the file when it is wrong)."""
    zones = []
    for index, feature in enumerate(read_polygon_features(path, what="zones")):
        props = feature.properties
        missing = [k for k in ("zone_id", "name_ja", "name_en", "kind") if not isinstance(props.get(k), str)]
        if missing:
            raise ConfigError(f"Feature {index} of the zones file {str(path)!r} lacks {', '.join(missing)}")
        if props["kind"] not in ZONE_KINDS:
            raise ConfigError(
                f"Zone {props['zone_id']!r} in {str(path)!r} has an unknown kind {props['kind']!r}"
            )
        names = (props["zone_id"], props["name_ja"], props["name_en"], props["kind"])
        zones.append(Zone(*names, feature.geometry))
    ids = [z.zone_id for z in zones]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"The zones file {str(path)!r} repeats a zone_id")
    return tuple(zones)


@cache
def corridor_zones() -> tuple[Zone, ...]:
    """The packaged corridor zones, loaded once, geometries prepared for fast point tests."""
    zones = load_zones(zones_path())
    for zone in zones:
        shapely.prepare(zone.polygon)
    return zones


def assign_zone(lat: npt.ArrayLike, lon: npt.ArrayLike, zones: tuple[Zone, ...] | None = None) -> pa.Array:
    """The ``zone_id`` of each point (Arrow string array), null outside every zone or for NaN.

    A point on a boundary belongs to the zone; where zones meet, the first in ``zones`` wins.
    Each zone's bounding box is tested in numpy first, so only nearby points reach shapely.
    """
    zones = corridor_zones() if zones is None else zones
    lat_a = np.asarray(lat, np.float64).ravel()
    lon_a = np.asarray(lon, np.float64).ravel()
    if lat_a.shape != lon_a.shape:
        raise ValueError(f"lat and lon differ in length: {lat_a.size} and {lon_a.size}")
    index = np.full(lat_a.size, -1, np.int32)
    if zones and lat_a.size:
        bounds = np.array([z.polygon.bounds for z in zones])  # minx, miny, maxx, maxy
        near = (
            (lon_a >= bounds[:, 0].min())
            & (lon_a <= bounds[:, 2].max())
            & (lat_a >= bounds[:, 1].min())
            & (lat_a <= bounds[:, 3].max())
        )
        candidates = np.flatnonzero(near)
        cand_lat, cand_lon = lat_a[candidates], lon_a[candidates]
        for k, zone in enumerate(zones):
            minx, miny, maxx, maxy = bounds[k]
            free = index[candidates] < 0
            box = free & (cand_lon >= minx) & (cand_lon <= maxx) & (cand_lat >= miny) & (cand_lat <= maxy)
            pick = np.flatnonzero(box)
            if pick.size:
                hit = shapely.intersects_xy(zone.polygon, cand_lon[pick], cand_lat[pick])
                index[candidates[pick[hit]]] = k
    dictionary = pa.array([z.zone_id for z in zones], pa.string())
    indices = pa.array(index, pa.int32(), mask=index < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def zones_table(zones: tuple[Zone, ...] | None = None) -> pa.Table:
    """One row per zone: zone_id, name_ja, name_en, kind, area_m2, wkt, and the bounding box."""
    zones = corridor_zones() if zones is None else zones
    bounds = [z.polygon.bounds for z in zones]
    return pa.table(
        {
            "zone_id": pa.array([z.zone_id for z in zones], pa.string()),
            "name_ja": pa.array([z.name_ja for z in zones], pa.string()),
            "name_en": pa.array([z.name_en for z in zones], pa.string()),
            "kind": pa.array([z.kind for z in zones], pa.string()),
            "area_m2": pa.array([round(z.area_m2, 1) for z in zones], pa.float64()),
            "wkt": pa.array([z.polygon.wkt for z in zones], pa.string()),
            "min_lat": pa.array([b[1] for b in bounds], pa.float64()),
            "min_lon": pa.array([b[0] for b in bounds], pa.float64()),
            "max_lat": pa.array([b[3] for b in bounds], pa.float64()),
            "max_lon": pa.array([b[2] for b in bounds], pa.float64()),
        }
    )


def zone_edges_table(zones: tuple[Zone, ...] | None = None) -> pa.Table:
    """Every ring edge of every zone (lon1, lat1) -> (lon2, lat2), with the zone's precedence."""
    zones = corridor_zones() if zones is None else zones
    columns: dict[str, list[float | int | str]] = {
        k: [] for k in ("zone_id", "precedence", "lon1", "lat1", "lon2", "lat2")
    }
    for precedence, zone in enumerate(zones):
        parts = zone.polygon.geoms if isinstance(zone.polygon, MultiPolygon) else [zone.polygon]
        for part in parts:
            for ring in (part.exterior, *part.interiors):
                xy = shapely.get_coordinates(ring)
                for (x1, y1), (x2, y2) in zip(xy[:-1].tolist(), xy[1:].tolist(), strict=True):
                    for key, value in zip(columns, (zone.zone_id, precedence, x1, y1, x2, y2), strict=True):
                        columns[key].append(value)
    return pa.table(
        {
            "zone_id": pa.array(columns["zone_id"], pa.string()),
            "precedence": pa.array(columns["precedence"], pa.int32()),
            **{k: pa.array(columns[k], pa.float64()) for k in ("lon1", "lat1", "lon2", "lat2")},
        }
    )


# Even-odd rule: a horizontal ray from the point towards +longitude crosses an odd number of edges.
_ZONE_AT = """CREATE OR REPLACE MACRO zone_at(lat, lon) AS (
    SELECT arg_min(zone_id, precedence) FROM (
        SELECT zone_id, precedence FROM zone_edges
        WHERE (lat1 > lat) <> (lat2 > lat)
          AND lon < (lon2 - lon1) * (lat - lat1) / (lat2 - lat1) + lon1
        GROUP BY zone_id, precedence
        HAVING count(*) % 2 = 1))"""


#: The tables :func:`install_zones` creates (analysts can query both; ``docs/VIEWS.md`` describes them).
ZONE_TABLES: tuple[str, ...] = ("zones", "zone_edges")


def install_zones(con: duckdb.DuckDBPyConnection, zones: tuple[Zone, ...] | None = None) -> None:
    """Create the tables ``zones`` and ``zone_edges`` and the macro ``zone_at(lat, lon)`` on ``con``."""
    tables = {"zones": zones_table(zones), "zone_edges": zone_edges_table(zones)}
    for name in ZONE_TABLES:
        table = tables[name]
        source = f"_corridorhub_{name}_arrow"
        con.register(source, table)
        try:
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {source}")
        finally:
            con.unregister(source)
    con.execute(_ZONE_AT)
