"""Simulated devices: how each one moves along its route and what it reports.

A device drives its route stop to stop: it accelerates to a cruising speed, brakes so that it halts at
the next stop, dwells there, and leaves.  Its battery drains with distance (and a little while idle),
its odometer grows, and its mode changes: ``autonomous`` while driving itself, ``stopped`` at a stop or
after an emergency stop, ``manual`` (``remote`` for robots) for a while after a disengagement.

Events come at realistic low rates: doors at every bus and shuttle stop, delivery start and done for
robots, and a few per hour of obstacles, take-over requests, disengagements, near misses, emergency
stops and lost radio links.  Each device draws from its own ``random.Random``, so one device's story
does not depend on how many others there are, nor on the faults injected around it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from corridorhub.simulator.radio import measure
from corridorhub.simulator.routes import FLEET_PATTERN, FLEETS, Fleet, Route

Sample = dict[str, Any]
Event = tuple[str, str, str]  # (kind, severity, detail)

_HOUR = 3600.0
# Events per hour of autonomous driving: (kind, severity, rate, details to pick from).
_DRIVING_EVENTS: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("obstacle", "info", 3.0, ("pedestrian crossing", "parked vehicle", "cyclist", "debris on lane")),
    ("takeover_request", "warning", 0.6, ("construction zone", "sensor degraded", "unmapped detour")),
    ("disengagement", "info", 0.4, ("safety driver took over",)),
    ("near_miss", "critical", 0.1, ("cut-in at close range", "pedestrian stepped out")),
    ("emergency_stop", "critical", 0.15, ("obstacle inside safety envelope",)),
    ("comms_lost", "warning", 0.1, ("modem reset",)),
)
_EVENT_RATE_PER_S = sum(rate for _, _, rate, _ in _DRIVING_EVENTS) / _HOUR
_IDLE_DRAIN_PCT_PER_S = 1.0 / _HOUR
FIRMWARE_VERSIONS = ("2.3.1", "2.4.0", "3.0.2")


def _heading(value: float) -> float:
    heading = round(value % 360.0, 1)
    return 0.0 if heading >= 360.0 else heading


@dataclass(frozen=True)
class DeviceIdentity:
    operator: str
    device_id: str
    device_type: str
    ts_format: str  # "epoch_ms" or "rfc3339"
    cell_id_as_int: bool  # send cell_id as a JSON integer rather than text
    firmware: str

    def topic(self, stream: str) -> str:
        return f"corridor/{self.operator}/{self.device_id}/{stream}"


def fleet_identities(count: int) -> list[tuple[DeviceIdentity, Fleet, Route]]:
    """The first ``count`` devices of the simulated corridor fleet, in a fixed order.

    A device is (operator, device_id) by contract, but the simulated ids are unique across the whole
    fleet (two operators run shuttles: ``shuttle-001`` is one of them only), so that counting distinct
    ``device_id`` gives the number of devices, as a newcomer expects.
    """
    per_operator: dict[str, int] = {}
    per_prefix: dict[str, int] = {}
    out = []
    for i in range(count):
        fleet = FLEETS[FLEET_PATTERN[i % len(FLEET_PATTERN)]]
        number = per_operator.get(fleet.operator, 0) + 1  # picks the route among the operator's
        per_operator[fleet.operator] = number
        serial = per_prefix.get(fleet.id_prefix, 0) + 1
        per_prefix[fleet.id_prefix] = serial
        identity = DeviceIdentity(
            operator=fleet.operator,
            device_id=f"{fleet.id_prefix}-{serial:03d}",
            device_type=fleet.device_type,
            ts_format="rfc3339" if i % 2 else "epoch_ms",
            cell_id_as_int=i % 3 == 0,
            firmware=FIRMWARE_VERSIONS[i % len(FIRMWARE_VERSIONS)],
        )
        out.append((identity, fleet, fleet.routes[(number - 1) % len(fleet.routes)]))
    return out


class Device:
    """One vehicle or robot: its kinematic state and the samples it reports."""

    def __init__(self, identity: DeviceIdentity, fleet: Fleet, route: Route, rng: random.Random) -> None:
        self.identity = identity
        self.fleet = fleet
        self.route = route
        self.rng = rng
        self.seq = {"state": 0, "event": 0, "network": 0}
        self._stops = route.stop_offsets()
        self._length = route.length_m
        self._segment = 0
        self._cruise = fleet.cruise_mps * rng.uniform(0.8, 1.1)
        self.battery_pct = rng.uniform(45.0, 100.0)
        self.odometer_m = rng.uniform(10_000.0, 5_000_000.0)
        self.speed_mps = 0.0
        self.accel_mps2 = 0.0
        self.hold_s = 0.0  # time left standing at a stop or after an emergency stop
        self.disengaged_s = 0.0  # time left in manual/remote after a disengagement
        self.pending_takeover_s = 0.0  # a take-over was requested; the driver takes over when it ends
        self.comms_lost = False
        self._orders = 0
        if rng.random() < 0.25:  # start standing at a stop
            self._next_stop = rng.randrange(len(self._stops))
            self.s = self._stops[self._next_stop]
            self._next_stop = (self._next_stop + 1) % len(self._stops)
            self.hold_s = rng.uniform(*route.stops[0].dwell_s)
        else:
            self.s = rng.uniform(0.0, self._length)
            self._next_stop = next((i for i, off in enumerate(self._stops) if off > self.s), 0)
            self.speed_mps = self._cruise * rng.uniform(0.3, 1.0)

    @property
    def mode(self) -> str:
        if self.disengaged_s > 0:
            return self.fleet.autonomous_disengaged_mode
        return "stopped" if self.hold_s > 0 else "autonomous"

    # -- motion ------------------------------------------------------------------------------------
    def advance(self, dt: float) -> list[Event]:
        """Move ``dt`` seconds forward; the events that happened meanwhile."""
        events: list[Event] = []
        if self.hold_s > 0:
            self.accel_mps2 = -self.speed_mps / dt if self.speed_mps else 0.0
            self.speed_mps = 0.0
            self.hold_s -= dt
            if self.hold_s <= 0:
                self._depart(events)
        else:
            self._drive(dt, events)
        if self.disengaged_s > 0:
            self.disengaged_s -= dt
        if self.pending_takeover_s > 0:
            self.pending_takeover_s -= dt
            if self.pending_takeover_s <= 0:
                self._disengage(events, "driver took over after request")
        if self.hold_s <= 0 and self.rng.random() < _EVENT_RATE_PER_S * dt:
            self._driving_event(events)
        self.battery_pct = max(0.0, self.battery_pct - _IDLE_DRAIN_PCT_PER_S * dt)
        return events

    def _drive(self, dt: float, events: list[Event]) -> None:
        fleet = self.fleet
        target = self._stops[self._next_stop]
        to_stop = target - self.s
        if to_stop < 0:
            to_stop += self._length
        v = self.speed_mps
        v_target = min(self._cruise, math.sqrt(2.0 * fleet.accel_mps2 * to_stop))
        if to_stop > 0.5 and v_target < 0.5:
            v_target = 0.5
        a = (v_target - v) / dt
        a = max(-2.0 * fleet.accel_mps2, min(fleet.accel_mps2, a))
        v_new = max(0.0, v + a * dt)
        ds = (v + v_new) * 0.5 * dt
        arrived = ds >= to_stop or to_stop <= 0.5
        if arrived:
            ds = to_stop
            v_new = 0.0
        self.accel_mps2 = (v_new - v) / dt
        self.speed_mps = v_new
        self.odometer_m += ds
        self.battery_pct = max(0.0, self.battery_pct - ds * fleet.drain_pct_per_km / 1000.0)
        self.s += ds
        if self.s >= self._length:
            self.s -= self._length
        if arrived:
            self.s = target
            self._arrive(events)

    def _arrive(self, events: list[Event]) -> None:
        stop = self.route.stops[self._next_stop]
        self._next_stop = (self._next_stop + 1) % len(self._stops)
        self.hold_s = self.rng.uniform(*stop.dwell_s)
        kind = self.fleet.device_type
        if kind == "robot":
            if self._orders:
                events.append(("delivery_done", "info", f"order {self._orders} handed over at {stop.name}"))
        elif kind in ("bus", "shuttle"):
            events.append(("door", "info", f"open at {stop.name}"))
        if self.battery_pct < 15.0:
            self.battery_pct = self.rng.uniform(95.0, 100.0)
            self.hold_s += 300.0
            events.append(("other", "info", f"battery swapped at {stop.name}"))

    def _depart(self, events: list[Event]) -> None:
        self.hold_s = 0.0
        self._cruise = self.fleet.cruise_mps * self.rng.uniform(0.8, 1.1)
        kind = self.fleet.device_type
        if kind == "robot":
            self._orders += 1
            events.append(("delivery_start", "info", f"order {self._orders} loaded"))
        elif kind in ("bus", "shuttle"):
            events.append(("door", "info", "closed"))

    def _disengage(self, events: list[Event], detail: str) -> None:
        self.disengaged_s = self.rng.uniform(20.0, 90.0)
        events.append(("disengagement", "warning", detail))

    def _driving_event(self, events: list[Event]) -> None:
        rng = self.rng
        pick = rng.random() * _EVENT_RATE_PER_S * _HOUR
        chosen = _DRIVING_EVENTS[-1]
        for candidate in _DRIVING_EVENTS:
            pick -= candidate[2]
            if pick < 0:
                chosen = candidate
                break
        kind, severity, _, details = chosen
        detail = rng.choice(details)
        if kind == "takeover_request":
            if self.disengaged_s > 0 or self.pending_takeover_s > 0:
                return
            self.pending_takeover_s = rng.uniform(2.0, 5.0)
        elif kind == "disengagement":
            if self.disengaged_s > 0:
                return
            self._disengage(events, detail)
            return
        elif kind == "emergency_stop":
            self.hold_s = rng.uniform(8.0, 20.0)
        elif kind == "comms_lost":
            if self.comms_lost:
                return
            self.comms_lost = True
        events.append((kind, severity, detail))

    # -- samples -----------------------------------------------------------------------------------
    def position(self) -> tuple[float, float, float]:
        """(lat, lon, heading) now, with GPS noise of a metre or two."""
        self._segment, lat, lon, heading = self.route.locate(self.s, self._segment)
        gauss = self.rng.gauss
        return lat + gauss(0.0, 1.2e-5), lon + gauss(0.0, 1.5e-5), heading

    def state_sample(self, ts: int | str, seq: int) -> Sample:
        lat, lon, heading = self.position()
        return {
            "ts": ts,
            "seq": seq,
            "device_type": self.identity.device_type,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "alt_m": round(39.5 + self.rng.gauss(0.0, 0.4), 1),
            "speed_mps": round(self.speed_mps, 2),
            "heading_deg": _heading(heading + self.rng.gauss(0.0, 1.0)),
            "accel_mps2": round(self.accel_mps2, 2),
            "mode": self.mode,
            "battery_pct": round(self.battery_pct, 1),
            "odometer_m": round(self.odometer_m, 1),
        }

    def event_sample(self, ts: int | str, seq: int, event: Event) -> Sample:
        lat, lon, _ = self.position()
        kind, severity, detail = event
        return {
            "ts": ts,
            "seq": seq,
            "device_type": self.identity.device_type,
            "kind": kind,
            "severity": severity,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "detail": detail,
        }

    def network_sample(self, ts: int | str, seq: int) -> tuple[Sample, list[Event]]:
        """A radio measurement here and now, and the comms events it implies."""
        lat, lon, _ = self.position()
        radio = measure(lat, lon, self.rng)
        events: list[Event] = []
        if not self.comms_lost and radio.sinr_db < -6.0:
            self.comms_lost = True
            events.append(("comms_lost", "warning", f"SINR {radio.sinr_db} dB on {radio.site.name}"))
        elif self.comms_lost and radio.sinr_db > 0.0 and self.rng.random() < 0.2:
            self.comms_lost = False
            events.append(("comms_restored", "info", f"link back on {radio.site.name}"))
        site = radio.site
        sample = {
            "ts": ts,
            "seq": seq,
            "device_type": self.identity.device_type,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "rat": site.rat,
            "cell_id": site.nci if self.identity.cell_id_as_int else f"440-10-{site.nci:x}",
            "rsrp_dbm": radio.rsrp_dbm,
            "rsrq_db": radio.rsrq_db,
            "sinr_db": radio.sinr_db,
            "rtt_ms": radio.rtt_ms,
            "dl_mbps": radio.dl_mbps,
            "ul_mbps": radio.ul_mbps,
        }
        return sample, events

    def extra_fields(self, stream: str, seq: int) -> Sample | None:
        """Fields outside the contract, sent now and then (the hub must keep them in ``extra``)."""
        if seq != 0 and self.rng.random() >= 0.01:
            return None
        extra: Sample = {"firmware": self.identity.firmware}
        if self.identity.device_type == "robot" and stream == "state":
            extra["diag"] = {"cpu_temp_c": round(self.rng.uniform(45.0, 70.0), 1), "lidar_ok": True}
        return extra


def build_fleet(count: int, seed: int) -> list[Device]:
    """``count`` devices, each with its own random stream derived from ``seed`` and its index."""
    return [
        Device(identity, fleet, route, random.Random(f"corridorhub-sim:{seed}:{i}"))
        for i, (identity, fleet, route) in enumerate(fleet_identities(count))
    ]
