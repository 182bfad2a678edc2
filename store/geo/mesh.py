"""JIS X 0410 regional mesh (地域メッシュ) codes, levels 1-6, in Python (numpy) and as a DuckDB macro.

=====  ===========================  ======================  ======
level  name                         cell (lat x lon)        digits
=====  ===========================  ======================  ======
1      1次メッシュ (about 80 km)      40' x 1°                4
2      2次メッシュ (about 10 km)      5' x 7'30"              6
3      3次メッシュ (about 1 km)       30" x 45"               8
4      2分の1メッシュ (about 500 m)   15" x 22.5"             9
5      4分の1メッシュ (about 250 m)   7.5" x 11.25"           10
6      8分の1メッシュ (about 125 m)   3.75" x 5.625"          11
=====  ===========================  ======================  ======

Every level is a prefix of the level-6 code, and every cell edge is a multiple of the level-6 cell: 1/960
degree of latitude and 1/640 degree of longitude.  So a point is located once, as the integer row
``i = floor(lat * 960)`` and column ``j = floor((lon - 100) * 640)``, and each level's digits are read off
``i`` and ``j`` with integer division.

**Edges.**  A cell holds its south and west edges, not its north and east ones (half-open intervals), and
the floors above are *exact*: the value a float64 stands for is compared with the true edge, not a rounded
product.  ``lat * 64`` and ``(lon - 100) * 128`` are exact in binary floating point (a power of two; and
``lon - 100`` is exact by Sterbenz's lemma for ``lon`` in [50, 200]); what is left is ``floor(t * 15)`` and
``floor(u * 5)``, computed as ``15 * floor(t) + floor(15 * (t - floor(t)))``, where ``t - floor(t)`` is
exact and has few enough significant bits for the product with 15 (or 5) to be exact too, on the whole
domain below.  The DuckDB macro does the same IEEE double operations in the same order, so the two agree
everywhere, edges included.  (The ``jismesh`` package, used by the tests as an oracle away from edges,
uses a chain of float ``%`` and can land in the neighbouring cell at an edge.)

**Domain.**  Latitude in [20, 46] and longitude in [122, 154] degrees (Japan, with its remote islands).
Outside it, or for NaN: :func:`jis_mesh` raises :class:`ValueError`; :func:`jis_mesh_arrow` and the SQL
macro give null.
"""

from __future__ import annotations

from typing import Any, overload

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import shapely
from shapely.geometry import Polygon

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
#: Number of digits of a code at each level.
DIGITS: dict[int, int] = {1: 4, 2: 6, 3: 8, 4: 9, 5: 10, 6: 11}
#: Cell size at each level in level-6 units (1/960 degree of latitude, 1/640 degree of longitude).
_CELL_UNITS: dict[int, int] = {1: 640, 2: 80, 3: 8, 4: 4, 5: 2, 6: 1}
LAT_RANGE: tuple[float, float] = (20.0, 46.0)
LON_RANGE: tuple[float, float] = (122.0, 154.0)
#: Approximate cell size in metres, for docs.
NOMINAL_SIZE_M: dict[int, int] = {1: 80_000, 2: 10_000, 3: 1_000, 4: 500, 5: 250, 6: 125}

FloatArray = npt.NDArray[np.float64]
CodeArray = npt.NDArray[np.int64]


def _check_level(level: int) -> None:
    if isinstance(level, bool) or level not in LEVELS:
        raise ValueError(f"JIS mesh level must be one of 1-6, got {level!r}")


def _in_domain(lat: FloatArray, lon: FloatArray) -> npt.NDArray[np.bool_]:
    # NaN compares false, so it is outside.
    return (lat >= LAT_RANGE[0]) & (lat <= LAT_RANGE[1]) & (lon >= LON_RANGE[0]) & (lon <= LON_RANGE[1])


def _rows_cols(lat: FloatArray, lon: FloatArray) -> tuple[CodeArray, CodeArray]:
    """Exact ``floor(lat * 960)`` and ``floor((lon - 100) * 640)`` (see the module docstring)."""
    t = lat * 64.0
    t_int = np.floor(t)
    rows = 15 * t_int + np.floor(15.0 * (t - t_int))
    u = (lon - 100.0) * 128.0
    u_int = np.floor(u)
    cols = 5 * u_int + np.floor(5.0 * (u - u_int))
    return rows.astype(np.int64), cols.astype(np.int64)


def _codes(rows: CodeArray, cols: CodeArray, level: int) -> CodeArray:
    p, q, r = rows // 640, rows % 640 // 80, rows % 80 // 8
    u, v, w = cols // 640, cols % 640 // 80, cols % 80 // 8
    code = ((p * 100 + u) * 100 + q * 10 + v) * 100 + r * 10 + w
    for bit in (4, 2, 1):  # the 1/2, 1/4 and 1/8 subdivisions: 1 SW, 2 SE, 3 NW, 4 NE
        code = code * 10 + ((rows & bit) > 0) * 2 + ((cols & bit) > 0) + 1
    divisor: int = 10 ** (DIGITS[6] - DIGITS[level])
    result: CodeArray = code // divisor
    return result


@overload
def jis_mesh(lat: float, lon: float, level: int) -> int: ...
@overload
def jis_mesh(lat: npt.ArrayLike, lon: npt.ArrayLike, level: int) -> CodeArray: ...


def jis_mesh(lat: Any, lon: Any, level: int) -> Any:
    """The level-``level`` mesh code of each point (an ``int`` for scalars, else an int64 array).

    Raises ValueError for a bad level, a NaN, or a point outside the domain (lat 20-46, lon 122-154).
    """
    _check_level(level)
    scalar = np.ndim(lat) == 0 and np.ndim(lon) == 0
    lat_a, lon_a = np.broadcast_arrays(np.asarray(lat, np.float64), np.asarray(lon, np.float64))
    inside = _in_domain(lat_a, lon_a)
    if not inside.all():
        bad = int(np.flatnonzero(~inside.ravel())[0])
        raise ValueError(
            f"{int((~inside).sum())} point(s) outside the JIS mesh domain (lat {LAT_RANGE[0]:g}-"
            f"{LAT_RANGE[1]:g}, lon {LON_RANGE[0]:g}-{LON_RANGE[1]:g}) or NaN, the first "
            f"({lat_a.ravel()[bad]!r}, {lon_a.ravel()[bad]!r}); use jis_mesh_arrow for nulls instead"
        )
    codes = _codes(*_rows_cols(lat_a, lon_a), level)
    return int(codes) if scalar else codes


def jis_mesh_arrow(lat: npt.ArrayLike, lon: npt.ArrayLike, level: int) -> pa.Array:
    """Mesh codes as an Arrow int64 array, null for NaN or out-of-domain points (like the SQL macro)."""
    _check_level(level)
    lat_a, lon_a = np.broadcast_arrays(
        np.atleast_1d(np.asarray(lat, np.float64)), np.atleast_1d(np.asarray(lon, np.float64))
    )
    inside = _in_domain(lat_a, lon_a)
    safe_lat = np.where(inside, lat_a, LAT_RANGE[0])
    safe_lon = np.where(inside, lon_a, LON_RANGE[0])
    codes = _codes(*_rows_cols(safe_lat, safe_lon), level)
    return pa.array(codes, pa.int64(), mask=~inside)


def mesh_level(code: int) -> int:
    """The level of a mesh code, from its number of digits (raises ValueError for anything else)."""
    digits = len(str(code)) if isinstance(code, int | np.integer) and code > 0 else 0
    for level, count in DIGITS.items():
        if count == digits:
            return level
    raise ValueError(f"Not a JIS mesh code of levels 1-6: {code!r}")


def mesh_bounds(code: int) -> tuple[float, float, float, float]:
    """(south, west, north, east) of the cell in degrees (each the float nearest to the exact edge)."""
    level = mesh_level(code)
    raw = str(int(code))
    text = raw + "00000000111"[len(raw) :]  # pad to level 6: the first sub-cell of each finer level
    digits = [int(c) for c in text]
    if digits[5] > 7 or digits[4] > 7 or digits[7] > 9 or digits[6] > 9:
        raise ValueError(f"Not a JIS mesh code: {code!r} (a sub-cell digit is out of range)")
    rows = int(text[0:2]) * 640 + digits[4] * 80 + digits[6] * 8
    cols = int(text[2:4]) * 640 + digits[5] * 80 + digits[7] * 8
    for position, bit in zip((8, 9, 10), (4, 2, 1), strict=True):
        quarter = digits[position] - 1
        if not 0 <= quarter <= 3:
            raise ValueError(f"Not a JIS mesh code: {code!r} (a subdivision digit is not 1-4)")
        rows += bit * (quarter >> 1)
        cols += bit * (quarter & 1)
    size = _CELL_UNITS[level]
    return rows / 960, 100 + cols / 640, (rows + size) / 960, 100 + (cols + size) / 640


def mesh_polygon(code: int) -> Polygon:
    """The cell of ``code`` as a shapely Polygon (x = longitude, y = latitude)."""
    south, west, north, east = mesh_bounds(code)
    polygon: Polygon = shapely.box(west, south, east, north)
    return polygon


def mesh_geojson(codes: npt.ArrayLike, properties: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the cells of ``codes`` (each once), for maps.

    Each feature's properties hold ``mesh_code`` and ``level``, plus ``properties[code]`` when given.
    """
    features: list[dict[str, Any]] = []
    seen: set[int] = set()
    for raw in np.asarray(codes).ravel().tolist():
        code = int(raw)
        if code in seen:
            continue
        seen.add(code)
        south, west, north, east = mesh_bounds(code)
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        props: dict[str, Any] = {"mesh_code": code, "level": mesh_level(code)}
        props.update((properties or {}).get(code, {}))
        features.append(
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}
        )
    return {"type": "FeatureCollection", "features": features}


# -- DuckDB ----------------------------------------------------------------------------------------------

# The same operations as _rows_cols and _codes, in SQL.  `//` is integer division, `&` bitwise and.
_MACROS = (
    """CREATE OR REPLACE MACRO _jis_mesh_row(lat) AS
        CAST(15 * floor(CAST(lat AS DOUBLE) * 64.0)
             + floor(15.0 * (CAST(lat AS DOUBLE) * 64.0 - floor(CAST(lat AS DOUBLE) * 64.0))) AS BIGINT)""",
    """CREATE OR REPLACE MACRO _jis_mesh_col(lon) AS
        CAST(5 * floor((CAST(lon AS DOUBLE) - 100.0) * 128.0)
             + floor(5.0 * ((CAST(lon AS DOUBLE) - 100.0) * 128.0
                            - floor((CAST(lon AS DOUBLE) - 100.0) * 128.0))) AS BIGINT)""",
    """CREATE OR REPLACE MACRO _jis_mesh6(i, j) AS
        ((((i // 640) * 100 + j // 640) * 100 + (i % 640 // 80) * 10 + j % 640 // 80) * 100
          + (i % 80 // 8) * 10 + j % 80 // 8) * 1000
        + (((i & 4) > 0)::BIGINT * 2 + ((j & 4) > 0)::BIGINT + 1) * 100
        + (((i & 2) > 0)::BIGINT * 2 + ((j & 2) > 0)::BIGINT + 1) * 10
        + (((i & 1) > 0)::BIGINT * 2 + ((j & 1) > 0)::BIGINT + 1)""",
    f"""CREATE OR REPLACE MACRO jis_mesh(lat, lon, level) AS
        CASE
          WHEN level NOT IN (1, 2, 3, 4, 5, 6) THEN error('jis_mesh: level must be 1-6, got ' || level)
          WHEN lat BETWEEN {LAT_RANGE[0]} AND {LAT_RANGE[1]} AND lon BETWEEN {LON_RANGE[0]} AND {LON_RANGE[1]}
          THEN _jis_mesh6(_jis_mesh_row(lat), _jis_mesh_col(lon))
               // [10000000, 100000, 1000, 100, 10, 1][level]
        END""",
)


def install_geo_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the macro ``jis_mesh(lat, lon, level)`` (and its private helpers) on ``con``.

    Same codes as :func:`jis_mesh`; null for a NaN or out-of-domain point; an error for a bad level.
    """
    for statement in _MACROS:
        con.execute(statement)
