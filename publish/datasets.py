"""The registry of public datasets: each id with its spec, its builder and how the privacy gate sees it.

The four aggregate datasets (``network-quality-mesh``, ``traffic-speed-mesh``, ``safety-events``,
``fleet-activity``) register themselves from ``publish.aggregates``; other modules add theirs with
:func:`register` (``trips-od`` from ``publish.trips_od``).  Importing this module loads them
all, so ``DATASETS`` is complete once ``publish.datasets`` is imported.

For an aggregate dataset the entry also says, per output column, which lake columns it derives from and
how (:class:`Derivation`): the anonymizer refuses a derivation that the column's publish rule in
``store.schema`` does not allow, so a new lake column cannot leak into a dataset without a decision.
"""

from __future__ import annotations

import importlib
import importlib.util

from publish._registry import (
    DATASETS,
    ENTRIES,
    GATE_CHECKS,
    Builder,
    BuildRequest,
    DatasetEntry,
    Derivation,
    GateCheck,
    Rollup,
    Use,
    dataset_entry,
    default_ids,
    derive,
    differential_privacy_on,
    left_out_under_dp,
    register,
    register_check,
)

__all__ = [
    "DATASETS",
    "ENTRIES",
    "GATE_CHECKS",
    "BuildRequest",
    "Builder",
    "DatasetEntry",
    "Derivation",
    "GateCheck",
    "Rollup",
    "Use",
    "dataset_entry",
    "default_ids",
    "derive",
    "differential_privacy_on",
    "left_out_under_dp",
    "register",
    "register_check",
]


def _load_registrants() -> None:
    for module in ("publish.aggregates", "publish.aggregates_dp", "publish.trips_od"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


_load_registrants()
