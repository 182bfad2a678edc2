"""Analysts' SQL off the event loop: a thread pool, at most ``sql_concurrency`` queries open at once.

Every DuckDB call (execute, fetch, close) runs in the pool, so a query that runs until its time limit
never blocks ``/healthz`` or another request.  The calls of one query are serialised by its own lock (a
DuckDB result is not to be used from two threads at once); the slot is given back when the query is closed,
which happens in the pool after any fetch still running.

When every slot is taken a request waits for one, up to ``_QUEUE_WAIT_S``; when too many already wait, or
the wait runs out, it is answered 429 ``too_many_queries`` with ``Retry-After``.  Waiting a little absorbs
bursts (the benchmark's 8 clients against 4 slots) without letting a queue grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from api.errors import ApiError, from_library
from api.metrics import ApiMetrics
from store.errors import CorridorHubError, QueryRefused
from store.sandbox import QueryResult, Sandbox

T = TypeVar("T")

_QUEUE_WAIT_S = 10.0
_WAITERS_PER_SLOT = 4


def outcome_of(exc: BaseException) -> str:
    """The metrics label of a failed query."""
    if isinstance(exc, ApiError):
        return {422: "timeout", 429: "rejected"}.get(
            exc.status, "refused" if exc.code == "sql_refused" else "error"
        )
    if isinstance(exc, QueryRefused):
        return "refused"
    if isinstance(exc, CorridorHubError):
        return "timeout" if from_library(exc).code == "sql_timeout" else "error"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "error"


class OpenQuery:
    """One running query: its result, a lock serialising its DuckDB calls, and its slot."""

    def __init__(self, runner: QueryRunner, result: QueryResult, started: float) -> None:
        self.result = result
        self._runner = runner
        self._started = started
        self._lock = threading.Lock()
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the pool, after any other call of this query; library errors become 4xx."""

        def locked() -> T:
            with self._lock:
                return fn(*args)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._runner.executor, locked)
        except CorridorHubError as exc:
            raise from_library(exc) from None

    def close(self, outcome: str = "ok") -> None:
        """Close the result in the pool (after a fetch in flight) and give back the slot; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._runner.metrics.observe_query(outcome, time.perf_counter() - self._started)
        self._runner.submit_close(self)

    def _close_now(self) -> None:
        with self._lock:
            self.result.close()


class QueryRunner:
    def __init__(self, sandbox: Sandbox, concurrency: int, metrics: ApiMetrics) -> None:
        self.sandbox = sandbox
        self.metrics = metrics
        self.concurrency = concurrency
        # One thread more than slots: closes and a last fetch may overlap a new query's execute.
        self.executor = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="corridorhub-sql")
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.concurrency)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def open(self, sql: str, params: list[Any] | dict[str, Any] | None) -> OpenQuery:
        """Wait for a slot, execute ``sql`` in the pool; 4xx for refused, bad, slow or too many queries."""
        assert self._slots is not None, "QueryRunner.start() was not awaited (app lifespan not run)"
        started = time.perf_counter()
        await self._acquire()
        self.metrics.in_flight.inc()
        started_query = self.executor.submit(self.sandbox.query, sql, params)
        try:
            result = await asyncio.wrap_future(started_query)
        except asyncio.CancelledError:  # the client went away: close the result when it comes, then free
            started_query.add_done_callback(self._close_abandoned)
            self.metrics.observe_query("cancelled", time.perf_counter() - started)
            raise
        except BaseException as exc:
            self._release()
            self.metrics.observe_query(outcome_of(exc), time.perf_counter() - started)
            if isinstance(exc, CorridorHubError):
                raise from_library(exc) from None
            raise
        return OpenQuery(self, result, started)

    async def _acquire(self) -> None:
        assert self._slots is not None
        if self._slots.locked() and self._waiting >= _WAITERS_PER_SLOT * self.concurrency:
            self.metrics.observe_query("rejected", 0.0)
            raise _too_many(f"{self._waiting} queries are waiting already")
        self._waiting += 1
        self.metrics.waiting.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), _QUEUE_WAIT_S)
        except TimeoutError:
            self.metrics.observe_query("rejected", _QUEUE_WAIT_S)
            raise _too_many(f"no query slot came free within {_QUEUE_WAIT_S:.0f} s") from None
        finally:
            self._waiting -= 1
            self.metrics.waiting.dec()

    def _release(self) -> None:
        self.metrics.in_flight.dec()
        assert self._slots is not None and self._loop is not None
        if _on_loop(self._loop):
            self._slots.release()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: the app is gone, its slots too
                self._loop.call_soon_threadsafe(self._slots.release)

    def _close_abandoned(self, started_query: Future[QueryResult]) -> None:
        try:
            if not started_query.cancelled() and started_query.exception() is None:
                started_query.result().close()
        finally:
            self._release()

    def submit_close(self, query: OpenQuery) -> None:
        def close() -> None:
            try:
                query._close_now()
            finally:
                self._release()

        try:
            self.executor.submit(close)
        except RuntimeError:  # the pool is shut down (app stopping): close here
            close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _too_many(reason: str) -> ApiError:
    return ApiError(
        429,
        "too_many_queries",
        f"The service is running as many SQL queries as it may ({reason}); retry shortly",
        {"Retry-After": "1"},
    )
