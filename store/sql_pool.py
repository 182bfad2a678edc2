"""Analysts' SQL in worker processes: a small pool, each worker under a kernel memory cap and a kill deadline.

Why processes: DuckDB's ``memory_limit`` bounds its buffer manager, not every allocation (one string value
built from small constants grew a service to 3 GB against a 1 GB limit), and its ``max_execution_time`` and
``interrupt()`` are requests a query in C code may not hear.  A worker process can be capped by the kernel
and killed outright; the service, ingest and other queries never share its memory.

* **Processes.**  ``subprocess.Popen([python, "-m", "store._sql_worker"])``, not ``multiprocessing``: a
  freshly exec'd interpreter inherits no threads, locks or descriptors of the (threaded) service, which
  ``fork`` would; the worker sets its own ``RLIMIT_DATA`` (no ``preexec_fn``, unsafe in a threaded parent);
  the hand-over is two plain pipes with a protocol we own (``store._sql_worker``) and an exit status, with
  no pickling.  The pool keeps ``size`` workers, pre-started and reused: each has the lake's views built and
  only checks for new commits per query, so isolation costs a pipe round trip, not a start-up.
* **Memory.**  A worker's data segment may grow by ``memory_limit`` past what it held when ready (DuckDB is
  given the same ``memory_limit``, so it spills or fails first where it can; the kernel stops the rest).
* **Time.**  DuckDB stops a query at ``timeout_s``; ``KILL_GRACE_S`` later the parent sends SIGKILL, so a
  worker stuck in C code (or stopped) cannot hold a slot.  The caller gets :class:`QueryTimeout`.
* **Deaths.**  A worker that dies (killed here, by the OOM killer or anyone else) is replaced at once; its
  query answers :class:`QueryTimeout`, :class:`QueryWorkerLost` or :class:`QueryMemoryExceeded` by cause.
* **Results** stream back as one Arrow IPC stream per query, read batch by batch with ``pyarrow.ipc``
  straight from the pipe (no re-encoding, no re-materialising).  A result abandoned before its end kills its
  worker rather than draining it.

All calls block; the service makes them from its SQL thread pool (``api.runner``), never its event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from store.errors import LakeError, QueryError, QueryRefused, QueryTimeout
from store.sandbox import SandboxLimits

__all__ = ["PoolStats", "PooledResult", "QueryMemoryExceeded", "QueryWorkerLost", "SqlPool", "WorkersBusy"]

log = logging.getLogger("corridorhub.sql_pool")

#: SIGKILL comes this long after DuckDB's own time limit should have stopped the query.
KILL_GRACE_S = 1.0
#: A worker that is not ready this long after it was started is killed and started again.
START_TIMEOUT_S = 60.0
_HEADER = struct.Struct(">I")
#: What reading a worker's answer raises: its own error, or a broken pipe, stream or frame (it died).
_READ_ERRORS = (QueryError, LakeError, EOFError, OSError, pa.ArrowException, ValueError)


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, or None when the stream ended (cleanly or in the middle of a frame)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(head)
    body = stream.read(length)
    if len(body) < length:
        return None
    found: dict[str, Any] = json.loads(body)
    return found


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


class QueryMemoryExceeded(QueryError):
    """The query went over the memory cap of one query and was stopped."""


class QueryWorkerLost(QueryError):
    """The query's worker process died from outside (the kernel's OOM killer, an operator's kill)."""


class WorkersBusy(QueryError):
    """No worker came free in time (all busy or still starting)."""


@dataclass(frozen=True)
class PoolStats:
    size: int
    idle: int
    busy: int
    starting: int
    started: int  # workers started since the pool opened, replacements included


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], temp_dir: Path) -> None:
        self.process = process
        self.temp_dir = temp_dir
        assert process.stdin is not None and process.stdout is not None
        self.requests: IO[bytes] = process.stdin
        self.answers: IO[bytes] = process.stdout
        self.query: object | None = None  # the token of the query it runs, None when idle
        self.killed_for: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, reason: str) -> None:
        if self.killed_for is None:
            self.killed_for = reason
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)


class SqlPool:
    """``size`` analyst-sandbox worker processes over one lake; thread-safe."""

    def __init__(self, lake_root: str | Path, limits: SandboxLimits, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.lake_root = str(lake_root)
        self.limits = limits
        self.size = size
        self._temp_root = Path(tempfile.mkdtemp(prefix="corridorhub-sql-"))
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._started = 0
        self._numbers = itertools.count()
        self._closed = False

    def __enter__(self) -> SqlPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers (in the background; :meth:`query` waits for one to be ready)."""
        for _ in range(self.size):
            self._spawn()

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(self.size, len(self._idle), len(self._busy), self._starting, self._started)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy]]

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Wait until every worker is idle and ready; False when that did not happen in time."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._idle) == self.size or self._closed, timeout_s)

    def close(self) -> None:
        """Kill every worker (a running query ends with an error) and remove their temp folders."""
        with self._lock:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
            self._lock.notify_all()
        for worker in workers:
            worker.kill("closed")
            _reap(worker)
        shutil.rmtree(self._temp_root, ignore_errors=True)

    def query(
        self, sql: str, params: list[Any] | dict[str, Any] | None = None, wait_s: float = 30.0
    ) -> PooledResult:
        """Start ``sql`` on a free worker and read its first answer; raise ``QueryRefused``, ``QueryError``
        (and its kinds above) or ``LakeError`` when it cannot run.  Close the result when done."""
        worker = self._take(wait_s)
        token = object()
        worker.query = token
        timer = threading.Timer(self.limits.timeout_s + KILL_GRACE_S, self._expire, (worker, token))
        timer.daemon = True
        timer.start()
        with contextlib.suppress(OSError):  # it died: reading says why
            write_frame(worker.requests, {"sql": sql, "params": params})
        return PooledResult(self, worker, timer)

    # -- workers --------------------------------------------------------------------------------------------

    def _take(self, wait_s: float) -> _Worker:
        with self._lock:
            if not self._lock.wait_for(lambda: self._idle or self._closed, wait_s):
                raise WorkersBusy(
                    f"No SQL worker came free within {wait_s:g} s ({len(self._busy)} busy, "
                    f"{self._starting} starting); retry shortly"
                )
            if self._closed:
                raise WorkersBusy("The SQL workers are shut down")
            worker = self._idle.pop()
            self._busy.add(worker)
            return worker

    def _give_back(self, worker: _Worker, reusable: bool) -> None:
        with self._lock:
            worker.query = None
            self._busy.discard(worker)
            if reusable and not self._closed and worker.killed_for is None:
                self._idle.append(worker)
                self._lock.notify_all()
                return
        worker.kill(worker.killed_for or "retired")
        _reap(worker)
        self._spawn()

    def _expire(self, worker: _Worker, token: object) -> None:
        with self._lock:
            if worker.query is not token:
                return
        log.warning("SQL worker %s ran past the time limit; killing it", worker.pid)
        worker.kill("deadline")

    def _spawn(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._starting += 1
            self._started += 1
            number = next(self._numbers)
        threading.Thread(target=self._start_worker, args=(number,), daemon=True).start()

    def _start_worker(self, number: int) -> None:
        temp_dir = self._temp_root / f"worker-{number}"
        limits = replace(self.limits, temp_dir=temp_dir)
        config = {"lake": self.lake_root, "limits": asdict(limits) | {"temp_dir": str(temp_dir)}}
        worker: _Worker | None = None
        try:
            temp_dir.mkdir(parents=True, exist_ok=True)
            process = subprocess.Popen(
                [sys.executable, "-m", "store._sql_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            worker = _Worker(process, temp_dir)
            timer = threading.Timer(START_TIMEOUT_S, worker.kill, ("start",))
            timer.daemon = True
            timer.start()
            write_frame(worker.requests, config)
            ready = read_frame(worker.answers)
            timer.cancel()
        except OSError as exc:
            log.error("could not start an SQL worker: %s", exc)
            ready = None
        with self._lock:
            self._starting -= 1
            if ready is not None and ready.get("ready") and not self._closed:
                assert worker is not None
                self._idle.append(worker)
                self._lock.notify_all()
                return
            closed = self._closed
        if worker is not None:
            worker.kill("start")
            _reap(worker)
        if not closed:
            log.error("an SQL worker failed to start (see its messages above); trying again in 1 s")
            time.sleep(1.0)
            self._spawn()


def _reap(worker: _Worker) -> None:
    for stream in (worker.requests, worker.answers):
        with contextlib.suppress(OSError):
            stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.process.wait(timeout=5)
    shutil.rmtree(worker.temp_dir, ignore_errors=True)


class PooledResult:
    """A query running in a worker, read as Arrow batches; the same surface as ``store.sandbox.QueryResult``
    (``schema``, ``batches()``, ``fetch_all()``, ``truncated``, ``rows``, ``close()``)."""

    def __init__(self, pool: SqlPool, worker: _Worker, timer: threading.Timer) -> None:
        self._pool = pool
        self._worker: _Worker | None = worker
        self._timer = timer
        self._ended = False
        self._consumed = False
        self.truncated = False
        self.rows = 0
        try:
            self._answer(self._frame())
            self._reader = pa.ipc.open_stream(worker.answers)
        except _READ_ERRORS as exc:
            failure = self._failure(exc)
            self.close()
            raise failure from None
        self.schema: pa.Schema = self._reader.schema

    def __enter__(self) -> PooledResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def batches(self, rows_per_batch: int = 10_000) -> Iterator[pa.RecordBatch]:
        """The rows in batches of ``rows_per_batch`` (the last may be shorter); closes the result after."""
        if rows_per_batch < 1:
            raise ValueError("rows_per_batch must be at least 1")
        if self._consumed:
            raise QueryError("The result was already read")
        self._consumed = True
        try:
            yield from _recut(self._read(), rows_per_batch)
        finally:
            self.close()

    def fetch_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def close(self) -> None:
        """Give the worker back (or kill it when the stream was not read to its end).  Safe to call twice."""
        worker, self._worker = getattr(self, "_worker", None), None
        if worker is None:
            return
        self._timer.cancel()
        self._pool._give_back(worker, reusable=self._ended and not self._retire)

    # -- internals ------------------------------------------------------------------------------------------

    _retire = False

    def _read(self) -> Iterator[pa.RecordBatch]:
        while True:
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                break
            except _READ_ERRORS as exc:
                raise self._failure(exc) from None
            self.rows += batch.num_rows
            yield batch
        try:
            end = self._frame()
        except _READ_ERRORS as exc:
            raise self._failure(exc) from None
        self._answer(end)
        self._ended = True
        self.truncated = bool(end.get("truncated"))
        self._retire = bool(end.get("retire"))

    def _frame(self) -> dict[str, Any]:
        worker = self._worker
        frame = read_frame(worker.answers) if worker is not None else None
        if frame is None:
            raise EOFError("the worker's answer ended")
        return frame

    def _answer(self, frame: dict[str, Any]) -> None:
        """Raise the error a frame carries (its query is over: the worker may be reused)."""
        if "error" not in frame:
            return
        self._ended = True
        self._retire = bool(frame.get("retire"))
        kind, message = frame["error"], str(frame.get("message", ""))
        error: Exception
        if kind == "refused":
            error = QueryRefused(message)
        elif kind == "timeout":
            error = QueryTimeout(message)
        elif kind == "memory":
            error = QueryMemoryExceeded(self._memory_message())
        elif kind == "lake":
            error = LakeError(message)
        elif kind == "error":
            error = QueryError(message)
        else:
            error = QueryError(f"The query failed inside its worker process: {message}")
        raise error

    def _memory_message(self) -> str:
        return (
            f"The query went over the memory cap of one query ({self._pool.limits.memory_limit}) and was "
            "stopped; aggregate or filter more, or select fewer or smaller values"
        )

    def _failure(self, exc: BaseException) -> BaseException:
        """What a failed read means: the worker's own error, or why the worker is gone."""
        if isinstance(exc, QueryError | LakeError):
            return exc
        worker = self._worker
        if worker is None:
            return QueryError("The result was closed")
        worker.kill(worker.killed_for or "broken")
        status = worker.process.wait()
        limits = self._pool.limits
        if worker.killed_for == "deadline":
            return QueryTimeout(
                f"The query exceeded the {limits.timeout_s:g} s time limit and its worker process was killed"
            )
        if worker.killed_for == "closed":
            return QueryWorkerLost("The SQL workers were shut down while the query ran")
        if status == -signal.SIGKILL and worker.killed_for == "broken":
            return QueryWorkerLost(
                "The query's worker process was killed from outside (SIGKILL, e.g. by the kernel's "
                f"out-of-memory killer); the query may need more memory than the machine can give "
                f"(the cap is {limits.memory_limit} per query) - retry, or aggregate or filter more"
            )
        return QueryWorkerLost(f"The query's worker process ended unexpectedly (exit status {status}); retry")


def _recut(batches: Iterator[pa.RecordBatch], rows_per_batch: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows_per_batch:
            whole = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            yield whole.slice(0, rows_per_batch)
            rest = whole.slice(rows_per_batch)
            pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending_rows:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
