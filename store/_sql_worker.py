"""One SQL worker of ``store.sql_pool``: ``python -m store._sql_worker``, talking over its stdin and stdout.

It builds the analyst sandbox (``store.query.analyst_sandbox``) once, warms it (the lake's views over the
current snapshots), then caps its own data segment with ``RLIMIT_DATA`` at what it holds now plus
``CAP_FACTOR`` x the query memory limit, and serves one query at a time until its stdin closes.  The
kernel then refuses any allocation past the cap (``malloc`` fails, DuckDB raises its "Out of Memory
Error", the query fails and the worker lives on).  Measured on duckdb 2.0.1: ``RLIMIT_DATA`` stops
``repeat(repeat('x', 1000000), 1500)``, ``printf('%*d', 1200000000, 1)`` and a doubling ``list_reduce``
at once, which DuckDB's ``memory_limit`` alone does not (those values live outside its buffer manager).
``RLIMIT_AS`` would also stop them but counts address space DuckDB and glibc only reserve (about 1 GB
idle), so it is not used.

The protocol (``store.sql_pool`` holds the parent's side; every message is a 4-byte big-endian length and
UTF-8 JSON, a *frame*):

    parent -> worker   {"lake": ..., "limits": {...}}            once, first
    worker -> parent   {"ready": true, "cap": bytes}             once it can take queries
    parent -> worker   {"sql": ..., "params": ...}               one query
    worker -> parent   {"error": kind, "message": ...}           refused or failed before any row, or
                       {"ok": true}, an Arrow IPC stream (schema, batches, end-of-stream), then
                       {"rows": n, "truncated": bool, "retire": bool} or {"error": ..., "message": ...}

``retire`` asks the parent to replace this worker: after a big query glibc may keep freed memory mapped, and
the next query would start with less than its share of the cap.  The worker never writes anything else to
its stdout (``print`` goes to stderr), and it ignores SIGINT (Ctrl-C in a terminal reaches the whole
process group; the service stops its workers itself).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import signal
import sys
import time
from typing import Any, BinaryIO

import pyarrow as pa

from store._sql_protocol import read_frame, write_frame
from store.errors import CorridorHubError, LakeError, QueryError, QueryRefused, QueryTimeout
from store.lake import Lake
from store.query import analyst_sandbox
from store.sandbox import Sandbox, SandboxLimits

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
#: Rows per Arrow batch sent to the parent (it re-cuts them to what its caller asks for).
BATCH_ROWS = 10_000
#: The kernel's cap on a worker's data segment past its idle size, in multiples of the query memory limit:
#: DuckDB spills or fails at the limit itself where it counts; the rest (values built outside its buffer
#: manager, operator state, freed heap glibc keeps mapped) may take this much more before ``malloc`` fails.
CAP_FACTOR = 1.5
#: A result still being written after this long is flushed batch by batch (a quick one goes in one write:
#: one wake-up of the parent per query, which matters on a loaded machine).
STREAM_AFTER_S = 0.05
#: A worker holding more than this share of its cap after a query asks to be replaced.
RETIRE_SHARE = 0.5
#: The start of the sandbox's message for DuckDB's own "Out of Memory Error" (``store._query_result``).
_MEMORY_MESSAGE = "The query exceeded the sandbox's memory limit"


def size_bytes(text: str) -> int:
    """``512MB``, ``2GB``, ``1.5GiB`` as bytes, with DuckDB's meaning of the units (MB = 10**6)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", text.upper())
    if found is None:
        raise ValueError(f"not a size such as 512MB or 2GB: {text!r}")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def data_bytes() -> int:
    """This process's data segment (``VmData``: what ``RLIMIT_DATA`` counts)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status")  # pragma: no cover - Linux always has it


def error_kind(exc: BaseException) -> str:
    """The word the parent turns back into an exception (``store.sql_pool``)."""
    if isinstance(exc, QueryRefused):
        return "refused"
    if isinstance(exc, QueryTimeout):
        return "timeout"
    if isinstance(exc, MemoryError | pa.ArrowMemoryError) or str(exc).startswith(_MEMORY_MESSAGE):
        return "memory"
    if isinstance(exc, QueryError):
        return "error"
    if isinstance(exc, LakeError):
        return "lake"
    return "internal"


def _release_memory() -> None:
    """Give freed heap back to the kernel (glibc keeps it otherwise); best effort."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _rows_within(batch: pa.RecordBatch, budget: int) -> int:
    """How many leading rows of ``batch`` fit in ``budget`` bytes (by its average row size: what the service
    holds of a result stays near ``max_result_bytes``, whatever the row cap, docs/SANDBOX.md)."""
    size, rows = int(batch.nbytes), int(batch.num_rows)
    if size <= budget:
        return rows
    if budget <= 0 or rows == 0:
        return 0
    return rows * budget // size


class Worker:
    def __init__(self, lake: str, limits: SandboxLimits, out: BinaryIO) -> None:
        self.out = out
        self.limits = limits
        self.sandbox: Sandbox = analyst_sandbox(Lake(lake), limits)
        with contextlib.suppress(CorridorHubError):  # no lake yet: each query will say so
            _ = self.sandbox.relations  # builds the database over the current snapshots
        # one statement through the guard before the cap is measured: its first use asks DuckDB for the
        # built-in macros (a connection of its own) and caches them, which must not count against queries
        with contextlib.suppress(CorridorHubError), self.sandbox.query("SELECT 1") as warm:
            warm.fetch_all()
        _release_memory()
        self.cap = int(size_bytes(limits.memory_limit) * CAP_FACTOR)
        self.baseline = data_bytes()
        limit = self.baseline + self.cap
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    def serve(self, requests: BinaryIO) -> None:
        write_frame(self.out, {"ready": True, "cap": self.cap, "pid": os.getpid()})
        while (request := read_frame(requests)) is not None:
            if not self.run(request["sql"], request.get("params")):
                return

    def run(self, sql: str, params: list[Any] | dict[str, Any] | None) -> bool:
        """Answer one query; False when this worker should be replaced."""
        try:
            result = self.sandbox.query(sql, params)
        except (CorridorHubError, MemoryError, pa.ArrowException) as exc:
            healthy = self._healthy()
            write_frame(self.out, {"error": error_kind(exc), "message": str(exc), "retire": not healthy})
            return healthy
        write_frame(self.out, {"ok": True}, flush=False)
        started = time.monotonic()
        end: dict[str, Any]
        with result:
            writer = pa.ipc.new_stream(self.out, result.schema)
            try:
                budget = self.limits.max_result_bytes
                rows, cut = 0, False
                for batch in result.batches(BATCH_ROWS):
                    fitting = _rows_within(batch, budget)
                    if fitting < batch.num_rows:
                        batch, cut = batch.slice(0, fitting), True
                    budget -= batch.nbytes
                    rows += batch.num_rows
                    writer.write_batch(batch)
                    if time.monotonic() - started > STREAM_AFTER_S:
                        self.out.flush()
                    if cut:
                        break
                end = {"rows": rows, "truncated": cut or result.truncated}
            except (CorridorHubError, MemoryError, pa.ArrowException) as exc:
                end = {"error": error_kind(exc), "message": str(exc)}
            finally:
                writer.close()
        healthy = self._healthy()
        write_frame(self.out, end | {"retire": not healthy})
        return healthy

    def _healthy(self) -> bool:
        """Whether the next query still has most of the cap (trimming the heap only when it might not)."""
        if data_bytes() - self.baseline < RETIRE_SHARE * self.cap:
            return True
        _release_memory()
        return data_bytes() - self.baseline < RETIRE_SHARE * self.cap


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol
    requests = sys.stdin.buffer
    config = read_frame(requests)
    if config is None:
        return
    Worker(config["lake"], SandboxLimits(**config["limits"]), out).serve(requests)


if __name__ == "__main__":
    main()
