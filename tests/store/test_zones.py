"""Corridor zones and privacy zones: known places, vectorized assignment, SQL fallback, bad files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import shapely

from corridorhub.simulator.routes import ROUTES
from store.errors import ConfigError
from store.geo import PrivacyZones, assign_zone, corridor_zones, install_zones, zones_table

KNOWN = {
    "haneda-t1": (35.549, 139.785),
    "haneda-t2": (35.551, 139.789),
    "haneda-t3": (35.544, 139.769),
    "hic": (35.547, 139.751),
    "tenkubashi": (35.5474, 139.7540),
    "jr-kamata": (35.562, 139.716),
    "keikyu-kamata": (35.561, 139.724),
    "kamata-east": (35.5615, 139.7200),
    "road-kampachi-otorii": (35.5575, 139.7325),
}
OUTSIDE = {
    "Tokyo Bay off Haneda": (35.580, 139.800),
    "Shinagawa station": (35.6285, 139.7388),
    "Tokyo station": (35.681236, 139.767125),
}


def per_point(lat: np.ndarray, lon: np.ndarray) -> list[str | None]:
    """The slow, obvious answer: the first zone whose polygon touches the point."""
    zones = corridor_zones()
    answer: list[str | None] = []
    for a, b in zip(lat.tolist(), lon.tolist(), strict=True):
        point = shapely.Point(b, a)
        answer.append(next((z.zone_id for z in zones if z.polygon.intersects(point)), None))
    return answer


def route_points(step_m: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = [], []
    for route in ROUTES:
        segment = 0
        for s in np.arange(0.0, route.length_m, step_m):
            segment, a, b, _ = route.locate(float(s), segment)
            lat.append(a)
            lon.append(b)
    return np.array(lat), np.array(lon)


@pytest.mark.parametrize("zone_id", sorted(KNOWN))
def test_known_places_land_in_their_zone(zone_id: str) -> None:
    lat, lon = KNOWN[zone_id]
    assert assign_zone(np.array([lat]), np.array([lon])).to_pylist() == [zone_id]


def test_places_outside_the_corridor_get_no_zone() -> None:
    lat = np.array([p[0] for p in OUTSIDE.values()] + [math.nan])
    lon = np.array([p[1] for p in OUTSIDE.values()] + [139.75])
    assert assign_zone(lat, lon).to_pylist() == [None] * 4


def test_vectorized_assignment_equals_a_per_point_check() -> None:
    rng = np.random.default_rng(3)
    lat = rng.uniform(35.540, 35.566, 4000)
    lon = rng.uniform(139.712, 139.795, 4000)
    route_lat, route_lon = route_points(50.0)
    lat, lon = np.concatenate([lat, route_lat]), np.concatenate([lon, route_lon])
    result = assign_zone(lat, lon)
    assert result.type == pa.string()
    assert result.to_pylist() == per_point(lat, lon)
    assert result.null_count < len(result)


def test_a_point_on_a_shared_edge_goes_to_the_first_zone() -> None:
    zones = {z.zone_id: z for z in corridor_zones()}
    edge = shapely.Point(139.7528, 35.547)  # hic | tenkubashi
    assert zones["hic"].polygon.intersects(edge) and zones["tenkubashi"].polygon.intersects(edge)
    assert assign_zone([35.547], [139.7528]).to_pylist() == ["hic"]


def test_zones_do_not_overlap_and_have_names_in_both_languages() -> None:
    zones = corridor_zones()
    assert len({z.zone_id for z in zones}) == len(zones) >= 12
    for a, b in itertools.combinations(zones, 2):
        overlap = a.polygon.intersection(b.polygon).area * 111_000**2
        assert overlap < 1.0, (a.zone_id, b.zone_id, overlap)  # m²: rounding slivers at most
    for zone in zones:
        assert zone.polygon.is_valid and zone.name_ja and zone.name_en.isascii()
        assert any("\u3040" <= ch <= "\u9fff" for ch in zone.name_ja), zone.name_ja


def test_simulated_routes_run_through_the_zones() -> None:
    lat, lon = route_points()
    inside = 1 - assign_zone(lat, lon).null_count / len(lat)
    assert inside >= 0.95
    visited = set(assign_zone(lat, lon).to_pylist())
    assert {"haneda-t1", "haneda-t2", "haneda-t3", "hic", "jr-kamata", "keikyu-kamata"} <= visited


def test_zones_table_and_the_sql_zone_macro() -> None:
    table = zones_table()
    assert table.column_names[:6] == ["zone_id", "name_ja", "name_en", "kind", "area_m2", "wkt"]
    areas = dict(zip(table["zone_id"].to_pylist(), table["area_m2"].to_pylist(), strict=True))
    assert 250_000 < areas["haneda-t1"] < 400_000  # about 610 m x 520 m
    con = duckdb.connect()
    install_zones(con)
    assert con.execute("SELECT count(*) FROM zones").fetchall() == [(len(corridor_zones()),)]
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(35.540, 35.566, 3000), rng.uniform(139.712, 139.795, 3000)
    points = pa.table({"i": np.arange(3000), "lat": lat, "lon": lon})
    con.register("points", points)
    sql = con.execute("SELECT zone_at(lat, lon) FROM points ORDER BY i").fetchall()
    assert [r[0] for r in sql] == assign_zone(lat, lon).to_pylist()


# -- privacy zones ----------------------------------------------------------------------------------------


def write(tmp_path: Path, document: object, name: str = "privacy.geojson") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def feature(geometry: dict[str, object], **properties: object) -> dict[str, object]:
    return {"type": "Feature", "properties": properties, "geometry": geometry}


SQUARE = [[[139.70, 35.50], [139.71, 35.50], [139.71, 35.51], [139.70, 35.51], [139.70, 35.50]]]


def test_privacy_zones_contain_points_vectorized(tmp_path: Path) -> None:
    other = [[[139.80, 35.60], [139.81, 35.60], [139.81, 35.61], [139.80, 35.60]]]
    path = write(
        tmp_path,
        {
            "type": "FeatureCollection",
            "features": [
                feature({"type": "Polygon", "coordinates": SQUARE}, name="depot"),
                feature({"type": "MultiPolygon", "coordinates": [other]}),
            ],
        },
    )
    zones = PrivacyZones.from_geojson(path)
    assert len(zones) == 2 and zones.names == ("depot", None)
    lat = np.array([35.505, 35.50, 35.52, 35.602, math.nan])
    lon = np.array([139.705, 139.705, 139.705, 139.808, 139.705])
    assert zones.contains(lat, lon).tolist() == [True, True, False, True, False]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", "not valid JSON"),
        ({"type": "Topology"}, "not a GeoJSON FeatureCollection"),
        ({"type": "FeatureCollection", "features": [{"type": "Thing"}]}, "not a GeoJSON Feature"),
        (
            {
                "type": "FeatureCollection",
                "features": [feature({"type": "Point", "coordinates": [139.7, 35.5]})],
            },
            "is a Point, expected Polygon or MultiPolygon",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [feature({"type": "LineString", "coordinates": SQUARE[0]})],
            },
            "is a LineString",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    feature(
                        {
                            "type": "Polygon",
                            "coordinates": [[[35.5, 139.7], [35.6, 139.7], [35.6, 139.8], [35.5, 139.7]]],
                        }
                    )
                ],
            },
            "outside WGS84 ranges",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    feature(
                        {
                            "type": "Polygon",
                            "coordinates": [
                                [
                                    [139.70, 35.50],
                                    [139.71, 35.51],
                                    [139.71, 35.50],
                                    [139.70, 35.51],
                                    [139.70, 35.50],
                                ]
                            ],
                        }
                    )
                ],
            },
            "not a valid polygon: Self-intersection",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [feature({"type": "Polygon", "coordinates": [[1, 2]]})],
            },
            "malformed coordinates",
        ),
    ],
)
def test_bad_privacy_files_fail_with_a_config_error_naming_the_file(
    tmp_path: Path, content: object, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as caught:
        PrivacyZones.from_geojson(path)
    assert str(path) in str(caught.value)
    assert "privacy zones file" in str(caught.value)


def test_a_missing_privacy_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read the privacy zones file .*nope.geojson"):
        PrivacyZones.from_geojson(tmp_path / "nope.geojson")
