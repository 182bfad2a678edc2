"""Corridor geography: JIS X 0410 mesh codes, corridor zones and privacy zones (WGS84 throughout)."""

from store.geo.mesh import (
    DIGITS,
    LAT_RANGE,
    LEVELS,
    LON_RANGE,
    install_geo_macros,
    jis_mesh,
    jis_mesh_arrow,
    mesh_bounds,
    mesh_geojson,
    mesh_level,
    mesh_polygon,
)
from store.geo.privacy import PrivacyZones
from store.geo.zones import (
    ZONE_TABLES,
    Zone,
    assign_zone,
    corridor_zones,
    install_zones,
    load_zones,
    zone_edges_table,
    zones_path,
    zones_table,
)

__all__ = [
    "DIGITS",
    "LAT_RANGE",
    "LEVELS",
    "LON_RANGE",
    "PrivacyZones",
    "ZONE_TABLES",
    "Zone",
    "assign_zone",
    "corridor_zones",
    "install_geo_macros",
    "install_zones",
    "jis_mesh",
    "jis_mesh_arrow",
    "load_zones",
    "mesh_bounds",
    "mesh_geojson",
    "mesh_level",
    "mesh_polygon",
    "zone_edges_table",
    "zones_path",
    "zones_table",
]
