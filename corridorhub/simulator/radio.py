"""Simulated cell sites and the radio conditions a device measures at a position.

A log-distance path-loss model with log-normal shadowing gives RSRP per site; the strongest site
serves, the others interfere (scaled by their load).  SINR, RSRQ, throughput (a damped Shannon
bound on the site's bandwidth) and RTT follow from it, all clamped well inside the contract's ranges.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from corridorhub.simulator.routes import distance_m

_NOISE_DBM = -118.0  # thermal noise plus receiver noise figure per resource block, roughly
_REFERENCE_M = 50.0


@dataclass(frozen=True)
class CellSite:
    name: str
    lat: float
    lon: float
    rat: str  # NR_SA, NR_NSA or LTE
    nci: int  # cell identity (NR: 36 bits, LTE: 28 bits)
    rsrp_at_50m_dbm: float
    bandwidth_mhz: float
    base_rtt_ms: float


CELL_SITES: tuple[CellSite, ...] = (
    CellSite("kamata-station", 35.5615, 139.7195, "NR_SA", 0x1A2B30011, -68.0, 100.0, 9.0),
    CellSite("otorii", 35.5565, 139.7345, "LTE", 0x2B4C011, -72.0, 20.0, 28.0),
    CellSite("hic-tenkubashi", 35.5468, 139.7518, "NR_SA", 0x1A2B30042, -66.0, 100.0, 8.0),
    CellSite("haneda-t3", 35.5447, 139.7675, "NR_NSA", 0x1A2B30063, -67.0, 80.0, 16.0),
    CellSite("haneda-t1", 35.5497, 139.7838, "NR_NSA", 0x1A2B30071, -67.0, 80.0, 16.0),
)

_PATH_LOSS_EXPONENT = 3.6
_UPLINK_SHARE = {"NR_SA": 0.18, "NR_NSA": 0.15, "LTE": 0.25}


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


@dataclass(frozen=True, slots=True)
class RadioMeasurement:
    site: CellSite
    rsrp_dbm: float
    rsrq_db: float
    sinr_db: float
    rtt_ms: float
    dl_mbps: float
    ul_mbps: float


def measure(lat: float, lon: float, rng: random.Random) -> RadioMeasurement:
    """What a modem at (lat, lon) would report now."""
    powers = []
    for site in CELL_SITES:
        d = max(distance_m(lat, lon, site.lat, site.lon), 10.0)
        rsrp = site.rsrp_at_50m_dbm - 10 * _PATH_LOSS_EXPONENT * math.log10(d / _REFERENCE_M)
        powers.append(rsrp + rng.gauss(0.0, 3.0))
    best = max(range(len(powers)), key=powers.__getitem__)
    site = CELL_SITES[best]
    load = rng.uniform(0.2, 0.7)
    interference_mw = sum(10 ** (p / 10) for i, p in enumerate(powers) if i != best) * load
    sinr = powers[best] - 10 * math.log10(interference_mw + 10 ** (_NOISE_DBM / 10))
    sinr = _clamp(sinr, -20.0, 35.0)
    rsrp = _clamp(powers[best], -140.0, -44.0)
    rsrq = _clamp(-19.5 + (sinr + 20.0) * 0.29 + rng.gauss(0.0, 0.5), -30.0, -3.0)
    spectral = math.log2(1 + 10 ** (sinr / 10)) * 0.6
    dl = site.bandwidth_mhz * spectral * rng.uniform(0.25, 0.9)
    ul = dl * _UPLINK_SHARE.get(site.rat, 0.2) * rng.uniform(0.7, 1.2)
    rtt = site.base_rtt_ms + 30.0 * max(0.0, (5.0 - sinr) / 25.0) + rng.expovariate(1 / 4.0)
    return RadioMeasurement(
        site=site,
        rsrp_dbm=round(rsrp, 1),
        rsrq_db=round(rsrq, 1),
        sinr_db=round(sinr, 1),
        rtt_ms=round(rtt, 1),
        dl_mbps=round(dl, 2),
        ul_mbps=round(ul, 2),
    )
