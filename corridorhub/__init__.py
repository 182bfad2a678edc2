"""corridorhub's composition root: the CLI, settings loading, the demo and the benchmarks.

Nothing imports this package; it imports and wires ``ingest``, ``store``, ``api`` and ``publish``.
"""

__version__ = "0.1.0"
