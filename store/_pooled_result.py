"""The parent's side of one query in a worker process (``store.sql_pool``): its answer read from the pipe."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from store._sql_protocol import read_frame
from store.errors import (
    LakeError,
    QueryError,
    QueryMemoryExceeded,
    QueryRefused,
    QueryTimeout,
    QueryWorkerLost,
)

if TYPE_CHECKING:
    import threading

    from store.sql_pool import SqlPool, _Worker

#: What reading a worker's answer raises: its own error, or a broken pipe, stream or frame (it died).
_READ_ERRORS = (QueryError, LakeError, EOFError, OSError, pa.ArrowException, ValueError)


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
