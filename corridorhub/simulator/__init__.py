"""The corridor simulator: devices on real Haneda-Kamata routes publishing telemetry over MQTT.

It is both the demo's data source and the load generator of tests and benchmarks.  ``generate``
yields the messages of a run in send order, each with the ground truth of what ingest must make of
it; ``publish`` sends them to a broker.  Same config, same bytes.
"""

from corridorhub.simulator.faults import DEFAULT_FAULTS, FAULT_NAMES, MALFORMED_KINDS, FaultRates
from corridorhub.simulator.generate import (
    JST,
    MAX_DURATION_S,
    SampleKey,
    SimConfig,
    SimMessage,
    SimStats,
    Simulation,
    expected_rows,
    generate,
)
from corridorhub.simulator.routes import CORRIDOR_BBOX, ROUTES

__all__ = [
    "CORRIDOR_BBOX",
    "DEFAULT_FAULTS",
    "FAULT_NAMES",
    "JST",
    "MALFORMED_KINDS",
    "MAX_DURATION_S",
    "ROUTES",
    "FaultRates",
    "SampleKey",
    "SimConfig",
    "SimMessage",
    "SimStats",
    "Simulation",
    "expected_rows",
    "generate",
]
