"""Reading polygon features from a GeoJSON file, with one clear ConfigError for anything wrong.

Shared by the corridor zones (our own file) and the privacy zones (a file the operator configures).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.validation import explain_validity

from store.errors import ConfigError

POLYGON_TYPES = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class PolygonFeature:
    """One feature: its polygon (x = longitude, y = latitude) and its properties."""

    geometry: Polygon | MultiPolygon
    properties: dict[str, Any]


def read_polygon_features(path: str | Path, *, what: str) -> list[PolygonFeature]:
    """The Polygon/MultiPolygon features of the GeoJSON FeatureCollection (or single Feature) at ``path``.

    Raises ConfigError naming ``what`` and the file when it cannot be read, is not GeoJSON, holds another
    geometry type, an invalid polygon, or coordinates outside WGS84 ranges (lon -180..180, lat -90..90).
    """
    where = f"{what} file {str(path)!r}"
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the {where}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"The {where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("type") not in ("FeatureCollection", "Feature"):
        raise ConfigError(f"The {where} is not a GeoJSON FeatureCollection")
    raw_features = document.get("features") if document["type"] == "FeatureCollection" else [document]
    if not isinstance(raw_features, list):
        raise ConfigError(f"The {where} has no 'features' list")
    return [_feature(raw, index, where) for index, raw in enumerate(raw_features)]


def _feature(raw: object, index: int, where: str) -> PolygonFeature:
    label = f"feature {index} of the {where}"
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        raise ConfigError(f"{label.capitalize()} is not a GeoJSON Feature")
    geometry = raw.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in POLYGON_TYPES:
        found = geometry.get("type") if isinstance(geometry, dict) else type(geometry).__name__
        raise ConfigError(f"{label.capitalize()} is a {found}, expected Polygon or MultiPolygon")
    properties = raw.get("properties") or {}
    if not isinstance(properties, dict):
        raise ConfigError(f"{label.capitalize()} has properties that are not an object")
    try:
        polygon = shape(geometry)
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise ConfigError(f"{label.capitalize()} has malformed coordinates: {exc}") from exc
    if not isinstance(polygon, Polygon | MultiPolygon) or polygon.is_empty:
        raise ConfigError(f"{label.capitalize()} is an empty polygon")
    coordinates = shapely.get_coordinates(polygon)
    if not all(math.isfinite(v) for v in coordinates.ravel().tolist()):
        raise ConfigError(f"{label.capitalize()} has a non-finite coordinate")
    lon, lat = coordinates[:, 0], coordinates[:, 1]
    if (abs(lon) > 180).any() or (abs(lat) > 90).any():
        bad = int(((abs(lon) > 180) | (abs(lat) > 90)).argmax())
        raise ConfigError(
            f"{label.capitalize()} has a coordinate outside WGS84 ranges: [{lon[bad]!r}, {lat[bad]!r}]"
            " (GeoJSON order is [longitude, latitude]; longitude -180..180, latitude -90..90)"
        )
    if not polygon.is_valid:
        raise ConfigError(f"{label.capitalize()} is not a valid polygon: {explain_validity(polygon)}")
    return PolygonFeature(polygon, dict(properties))
