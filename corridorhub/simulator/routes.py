"""Corridor routes: waypoint polylines with named stops, and the fleets that drive them.

Coordinates are WGS84 and follow the real streets of the Haneda-Kamata corridor closely enough for
maps, zones and JIS mesh cells to look right (a few tens of metres, not survey grade).  Every route is a
closed polyline: a loop, or an out-and-back line with its return leg appended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0

# The corridor's bounding box (lat_min, lon_min, lat_max, lon_max); every waypoint lies inside.
CORRIDOR_BBOX: tuple[float, float, float, float] = (35.53, 139.70, 35.58, 139.80)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Ground distance in metres (equirectangular: exact enough across a 10 km corridor)."""
    dy = (lat2 - lat1) * _M_PER_DEG_LAT
    dx = (lon2 - lon1) * _M_PER_DEG_LON_EQ * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, dy)


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial heading from point 1 to point 2, clockwise from true north, in [0, 360)."""
    dy = (lat2 - lat1) * _M_PER_DEG_LAT
    dx = (lon2 - lon1) * _M_PER_DEG_LON_EQ * math.cos(math.radians((lat1 + lat2) / 2))
    heading = math.degrees(math.atan2(dx, dy)) % 360.0
    return 0.0 if heading >= 360.0 else heading


@dataclass(frozen=True)
class Stop:
    name: str
    waypoint: int  # index into the route's waypoints
    dwell_s: tuple[float, float]  # uniform range of the dwell time


@dataclass(frozen=True)
class Route:
    """A closed polyline a device follows, with the stops it serves."""

    name: str
    waypoints: tuple[tuple[float, float], ...]  # (lat, lon); the last connects back to the first
    stops: tuple[Stop, ...]
    cumulative_m: tuple[float, ...] = field(init=False, repr=False)  # distance at each waypoint
    headings: tuple[float, ...] = field(init=False, repr=False)  # heading of each segment

    def __post_init__(self) -> None:
        points = (*self.waypoints, self.waypoints[0])
        cumulative = [0.0]
        headings = []
        for (lat1, lon1), (lat2, lon2) in zip(points, points[1:], strict=False):
            cumulative.append(cumulative[-1] + distance_m(lat1, lon1, lat2, lon2))
            headings.append(bearing_deg(lat1, lon1, lat2, lon2))
        object.__setattr__(self, "cumulative_m", tuple(cumulative))
        object.__setattr__(self, "headings", tuple(headings))

    @property
    def length_m(self) -> float:
        return self.cumulative_m[-1]

    def stop_offsets(self) -> tuple[float, ...]:
        """Distance along the route of each stop, in route order."""
        return tuple(self.cumulative_m[s.waypoint] for s in self.stops)

    def locate(self, s: float, segment: int = 0) -> tuple[int, float, float, float]:
        """(segment, lat, lon, heading) at distance ``s`` in [0, length), searching from ``segment``."""
        cumulative = self.cumulative_m
        last = len(cumulative) - 2
        if s < cumulative[segment]:
            segment = 0
        while segment < last and s >= cumulative[segment + 1]:
            segment += 1
        start = cumulative[segment]
        span = cumulative[segment + 1] - start
        frac = (s - start) / span if span > 0 else 0.0
        lat1, lon1 = self.waypoints[segment]
        lat2, lon2 = self.waypoints[(segment + 1) % len(self.waypoints)]
        return segment, lat1 + (lat2 - lat1) * frac, lon1 + (lon2 - lon1) * frac, self.headings[segment]


def _out_and_back(
    name: str, line: list[tuple[str | None, float, float]], dwell_s: tuple[float, float]
) -> Route:
    """A line driven there and back: the return leg revisits the same named stops."""
    forward = [(lat, lon) for _, lat, lon in line]
    names = [n for n, _, _ in line]
    back = forward[-2:0:-1]
    back_names = names[-2:0:-1]
    stops = [Stop(n, i, dwell_s) for i, n in enumerate(names + back_names) if n]
    return Route(name, tuple(forward + back), tuple(stops))


def _loop(name: str, ring: list[tuple[str | None, float, float]], dwell_s: tuple[float, float]) -> Route:
    stops = tuple(Stop(n, i, dwell_s) for i, (n, _, _) in enumerate(ring) if n)
    return Route(name, tuple((lat, lon) for _, lat, lon in ring), stops)


# Haneda Innovation City: a loop around the campus next to Tenkubashi station.
HIC_LOOP = _loop(
    "hic-loop",
    [
        ("HIC Zone A", 35.5486, 139.7500),
        (None, 35.5483, 139.7522),
        ("Tenkubashi Station", 35.5474, 139.7536),
        (None, 35.5458, 139.7534),
        ("HIC Zone K", 35.5452, 139.7512),
        (None, 35.5460, 139.7492),
        (None, 35.5474, 139.7487),
    ],
    (15.0, 40.0),
)

# Haneda Airport terminal shuttle: T3 (international) to T1 and T2 along the airport roads.
TERMINAL_SHUTTLE = _out_and_back(
    "haneda-terminals",
    [
        ("Terminal 3", 35.5440, 139.7690),
        (None, 35.5447, 139.7728),
        (None, 35.5462, 139.7770),
        (None, 35.5478, 139.7810),
        ("Terminal 1", 35.5490, 139.7850),
        (None, 35.5500, 139.7870),
        ("Terminal 2", 35.5510, 139.7890),
    ],
    (30.0, 90.0),
)

# Kamata-Haneda bus: JR Kamata, Keikyu Kamata, along the Sangyo-dori / Kanpachi to Anamori-inari,
# Tenkubashi (HIC), then the airport terminals.
KAMATA_HANEDA_BUS = _out_and_back(
    "kamata-haneda",
    [
        ("JR Kamata", 35.5620, 139.7160),
        (None, 35.5617, 139.7200),
        ("Keikyu Kamata", 35.5610, 139.7240),
        (None, 35.5590, 139.7300),
        ("Otorii", 35.5560, 139.7350),
        (None, 35.5535, 139.7400),
        ("Anamori-inari", 35.5505, 139.7460),
        ("Tenkubashi", 35.5477, 139.7515),
        (None, 35.5455, 139.7580),
        (None, 35.5440, 139.7640),
        ("Terminal 3", 35.5440, 139.7690),
        (None, 35.5462, 139.7770),
        ("Terminal 1", 35.5490, 139.7850),
        ("Terminal 2", 35.5510, 139.7890),
    ],
    (20.0, 60.0),
)

# Delivery robots: pavement loops on the west (JR) and east (Keikyu) sides of Kamata station.
KAMATA_ROBOT_WEST = _loop(
    "kamata-west",
    [
        ("Kamata West Exit", 35.5622, 139.7152),
        (None, 35.5632, 139.7146),
        ("Sun Road Shopping St", 35.5641, 139.7158),
        (None, 35.5636, 139.7175),
        ("Ota City Office", 35.5613, 139.7163),
        (None, 35.5607, 139.7148),
    ],
    (45.0, 120.0),
)
KAMATA_ROBOT_EAST = _loop(
    "kamata-east",
    [
        ("Kamata East Exit", 35.5618, 139.7172),
        (None, 35.5625, 139.7195),
        ("Keikyu Kamata West", 35.5614, 139.7228),
        (None, 35.5600, 139.7215),
        ("Kamata 5-chome", 35.5598, 139.7188),
        (None, 35.5606, 139.7170),
    ],
    (45.0, 120.0),
)


@dataclass(frozen=True)
class Fleet:
    """One operator's devices of one type on one family of routes."""

    operator: str
    device_type: str
    id_prefix: str
    routes: tuple[Route, ...]
    cruise_mps: float  # typical cruising speed
    accel_mps2: float  # comfortable acceleration and braking
    drain_pct_per_km: float  # battery used per km driven
    autonomous_disengaged_mode: str  # mode after a disengagement: manual, or remote for robots


FLEETS: tuple[Fleet, ...] = (
    Fleet("keikyu-bus", "bus", "bus", (KAMATA_HANEDA_BUS,), 9.5, 0.9, 0.09, "manual"),
    Fleet("hic-shuttle", "shuttle", "shuttle", (HIC_LOOP,), 4.5, 0.7, 0.25, "manual"),
    Fleet(
        "kamata-robotics", "robot", "robot", (KAMATA_ROBOT_WEST, KAMATA_ROBOT_EAST), 1.4, 0.5, 2.5, "remote"
    ),
    Fleet("airport-shuttle", "shuttle", "shuttle", (TERMINAL_SHUTTLE,), 6.0, 0.8, 0.2, "manual"),
    Fleet("corridor-av-lab", "car", "car", (KAMATA_HANEDA_BUS,), 11.0, 1.2, 0.15, "manual"),
)

# Device i belongs to FLEETS[FLEET_PATTERN[i % len(FLEET_PATTERN)]]: a mix where buses, shuttles and
# robots dominate and test cars are rarer.
FLEET_PATTERN: tuple[int, ...] = (0, 1, 2, 3, 2, 0, 1, 2, 4, 3)

ROUTES: tuple[Route, ...] = (
    HIC_LOOP,
    TERMINAL_SHUTTLE,
    KAMATA_HANEDA_BUS,
    KAMATA_ROBOT_WEST,
    KAMATA_ROBOT_EAST,
)
