"""Privacy zones: configurable polygons (depots, homes, hospitals) whose points publishing removes.

The operator keeps them in a GeoJSON FeatureCollection of Polygon or MultiPolygon features (WGS84,
``[longitude, latitude]``); any properties are kept (``name`` is shown when present).  A point on a zone's
boundary counts as inside: publishing errs on the side of removing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon

from store.geo._geojson import read_polygon_features


@dataclass(frozen=True)
class PrivacyZones:
    """A set of privacy polygons, tested together (their union, prepared)."""

    polygons: tuple[Polygon | MultiPolygon, ...]
    names: tuple[str | None, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        union = shapely.union_all(self.polygons) if self.polygons else shapely.Polygon()
        shapely.prepare(union)
        object.__setattr__(self, "_union", union)

    @classmethod
    def from_geojson(cls, path: str | Path) -> PrivacyZones:
        """Load the zones of a GeoJSON file; ConfigError naming the file for anything wrong in it."""
        features = read_polygon_features(path, what="privacy zones")
        names = tuple(
            str(f.properties["name"]) if f.properties.get("name") is not None else None for f in features
        )
        return cls(tuple(f.geometry for f in features), names, str(path))

    def __len__(self) -> int:
        return len(self.polygons)

    def contains(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Whether each point lies in (or on the edge of) some privacy zone; NaN points are not."""
        lat_a = np.asarray(lat, np.float64)
        lon_a = np.asarray(lon, np.float64)
        if not self.polygons:
            return np.zeros(np.broadcast_shapes(lat_a.shape, lon_a.shape), np.bool_)
        union: Polygon | MultiPolygon = object.__getattribute__(self, "_union")
        result: npt.NDArray[np.bool_] = shapely.intersects_xy(union, lon_a, lat_a)
        return result
