"""JIS X 0410 mesh codes: Python and the DuckDB macro, against jismesh and an exact rational oracle."""

from __future__ import annotations

import math
from fractions import Fraction

import duckdb
import jismesh.utils as jismesh
import numpy as np
import pyarrow as pa
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from store.geo import (
    DIGITS,
    LEVELS,
    install_geo_macros,
    jis_mesh,
    jis_mesh_arrow,
    mesh_bounds,
    mesh_geojson,
    mesh_level,
    mesh_polygon,
)

TOKYO_STATION = (35.681236, 139.767125)
_UNITS = {1: 640, 2: 80, 3: 8, 4: 4, 5: 2, 6: 1}  # cell size in 1/960 deg lat, 1/640 deg lon


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    install_geo_macros(connection)
    return connection


def sql_codes(
    con: duckdb.DuckDBPyConnection, lat: np.ndarray, lon: np.ndarray, level: int
) -> list[int | None]:
    points = pa.table({"lat": pa.array(lat, pa.float64()), "lon": pa.array(lon, pa.float64())})
    con.register("points", points)
    try:
        rows = con.execute(f"SELECT jis_mesh(lat, lon, {level}) FROM points").fetchall()
    finally:
        con.unregister("points")
    return [r[0] for r in rows]


def exact_code(lat: float, lon: float, level: int) -> int:
    """The code from the exact rational value of the floats, digit by digit as the standard states it."""
    rows = math.floor(Fraction(lat) * 960)
    cols = math.floor((Fraction(lon) - 100) * 640)
    text = f"{rows // 640:02d}{cols // 640:02d}"
    text += f"{rows % 640 // 80}{cols % 640 // 80}{rows % 80 // 8}{cols % 80 // 8}"
    for half in (4, 2, 1):
        text += str((rows // half % 2) * 2 + (cols // half % 2) + 1)
    return int(text[: DIGITS[level]])


def random_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(20, 46, n), rng.uniform(122, 154, n)


def test_tokyo_station_has_its_known_codes_at_every_level() -> None:
    lat, lon = TOKYO_STATION
    assert jis_mesh(lat, lon, 3) == 53394611 == jismesh.to_meshcode(lat, lon, 3)
    expected = {1: 5339, 2: 533946, 3: 53394611, 4: 533946113, 5: 5339461132, 6: 53394611323}
    for level in LEVELS:
        assert jis_mesh(lat, lon, level) == expected[level] == int(jismesh.to_meshcode(lat, lon, level))
        assert len(str(expected[level])) == DIGITS[level]


@pytest.mark.parametrize("level", LEVELS)
def test_random_points_across_japan_match_jismesh_in_python_and_sql(
    con: duckdb.DuckDBPyConnection, level: int
) -> None:
    lat, lon = random_points(5000, seed=level)
    ours = jis_mesh(lat, lon, level)
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, jismesh.to_meshcode(lat, lon, level))
    assert sql_codes(con, lat, lon, level) == ours.tolist()
    assert jis_mesh_arrow(lat, lon, level).to_pylist() == ours.tolist()


def edge_points() -> tuple[np.ndarray, np.ndarray]:
    """Points on, and one float either side of, level-6 cell edges (which include every coarser edge)."""
    rng = np.random.default_rng(7)
    rows = rng.integers(20 * 960, 46 * 960, 400)
    cols = rng.integers(22 * 640, 54 * 640, 400)
    on_lat, on_lon = rows / 960, 100 + cols / 640
    lat = np.concatenate([on_lat, np.nextafter(on_lat, 0), np.nextafter(on_lat, 90), on_lat])
    lon = np.concatenate([on_lon, on_lon, on_lon, np.nextafter(on_lon, 0)])
    # Edges that floats hold exactly: 36 deg (level-1 row), 140 deg, 35.5 / 139.75 (level-3 corners).
    exact_lat = np.array([36.0, 36.0, 35.5, 35.5, np.nextafter(36.0, 0), 40.0])
    exact_lon = np.array([140.0, np.nextafter(140.0, 0), 139.75, 139.75 + 1 / 640, 140.0, 122.0])
    return np.concatenate([lat, exact_lat]), np.concatenate([lon, exact_lon])


@pytest.mark.parametrize("level", LEVELS)
def test_edge_points_follow_the_exact_rule_in_python_and_sql(
    con: duckdb.DuckDBPyConnection, level: int
) -> None:
    lat, lon = edge_points()
    expected = [exact_code(a, b, level) for a, b in zip(lat.tolist(), lon.tolist(), strict=True)]
    assert jis_mesh(lat, lon, level).tolist() == expected
    assert sql_codes(con, lat, lon, level) == expected


def test_a_cell_holds_its_south_and_west_edges() -> None:
    assert jis_mesh(36.0, 140.0, 1) == 5440  # on the corner: the cell to the north-east
    assert jis_mesh(np.nextafter(36.0, 0), 140.0, 1) == 5340
    assert jis_mesh(36.0, np.nextafter(140.0, 0), 1) == 5439
    assert mesh_bounds(5440)[:2] == (36.0, 140.0)


@settings(max_examples=300, deadline=None)
@given(
    lat=st.floats(min_value=20, max_value=46, allow_nan=False),
    lon=st.floats(min_value=122, max_value=154, allow_nan=False),
    level=st.sampled_from(LEVELS),
)
def test_any_point_gets_the_exact_code_and_lies_in_its_cell(lat: float, lon: float, level: int) -> None:
    code = jis_mesh(lat, lon, level)
    assert code == exact_code(lat, lon, level)
    assert mesh_level(code) == level
    south, west, north, east = mesh_bounds(code)
    assert south <= lat <= north and west <= lon <= east
    assert mesh_polygon(code).covers(shapely.Point(lon, lat))
    assert north - south == pytest.approx(_UNITS[level] / 960, rel=1e-9)
    assert east - west == pytest.approx(_UNITS[level] / 640, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(min_value=20 * 960 + 1, max_value=46 * 960 - 1),
    cols=st.integers(min_value=22 * 640 + 1, max_value=54 * 640 - 1),
    level=st.sampled_from(LEVELS),
)
def test_python_and_sql_agree_on_and_around_any_edge(rows: int, cols: int, level: int) -> None:
    lat = np.array([rows / 960, np.nextafter(rows / 960, 0), np.nextafter(rows / 960, 90)])
    lon = np.array([100 + cols / 640, np.nextafter(100 + cols / 640, 0), 100 + cols / 640])
    connection = duckdb.connect()
    install_geo_macros(connection)
    assert sql_codes(connection, lat, lon, level) == jis_mesh(lat, lon, level).tolist()


def test_the_mesh_polygon_has_the_cell_size_in_metres() -> None:
    code = jis_mesh(*TOKYO_STATION, 5)
    polygon = mesh_polygon(code)
    south, west, north, east = polygon.bounds[1], polygon.bounds[0], polygon.bounds[3], polygon.bounds[2]
    height_m = (north - south) * 110_574
    width_m = (east - west) * 111_320 * math.cos(math.radians((north + south) / 2))
    assert 225 < height_m < 235 and 275 < width_m < 290  # 7.5" x 11.25" at 35.7 deg N: "about 250 m"


def test_out_of_domain_or_nan_is_an_error_in_python_and_null_in_arrow_and_sql(
    con: duckdb.DuckDBPyConnection,
) -> None:
    lat = np.array([35.5, math.nan, 10.0, 35.5])
    lon = np.array([139.7, 139.7, 139.7, 170.0])
    with pytest.raises(ValueError, match="3 point\\(s\\) outside the JIS mesh domain"):
        jis_mesh(lat, lon, 5)
    with pytest.raises(ValueError, match="outside"):
        jis_mesh(math.nan, 139.7, 1)
    first = jis_mesh(35.5, 139.7, 5)
    assert jis_mesh_arrow(lat, lon, 5).to_pylist() == [first, None, None, None]
    assert sql_codes(con, lat, lon, 5) == [first, None, None, None]
    assert con.execute("SELECT jis_mesh(NULL, 139.7, 3)").fetchall() == [(None,)]


def test_a_bad_level_is_refused_in_python_and_sql(con: duckdb.DuckDBPyConnection) -> None:
    for level in (0, 7, True):
        with pytest.raises(ValueError, match="level must be one of 1-6"):
            jis_mesh(35.5, 139.7, level)
    with pytest.raises(duckdb.Error, match="level must be 1-6"):
        con.execute("SELECT jis_mesh(35.5, 139.7, 7)").fetchall()


def test_codes_that_are_not_mesh_codes_are_refused() -> None:
    for bad in (0, -5339, 12345, 533946115, 5339461150, 533986, 5339461):
        with pytest.raises(ValueError, match="Not a JIS mesh code"):
            mesh_bounds(bad)


def test_mesh_geojson_is_a_feature_collection_of_distinct_cells() -> None:
    codes = jis_mesh(np.array([35.5491, 35.5492, 35.6812]), np.array([139.785, 139.785, 139.767]), 5)
    collection = mesh_geojson(codes, properties={int(codes[0]): {"samples": 12}})
    assert collection["type"] == "FeatureCollection"
    assert [f["properties"]["mesh_code"] for f in collection["features"]] == [int(codes[0]), int(codes[2])]
    first = collection["features"][0]
    assert first["properties"] == {"mesh_code": int(codes[0]), "level": 5, "samples": 12}
    ring = first["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    south, west, _, _ = mesh_bounds(int(codes[0]))
    assert ring[0] == [west, south]
