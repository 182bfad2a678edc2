"""Analysts' SQL outside the service: worker processes (``store.sql_pool``), fair slots, never the event loop.

Each query runs in one of ``sql_concurrency`` worker processes under a kernel memory cap and a kill deadline
(docs/SANDBOX.md).  The service's side of a query (waiting for the worker's answer, reading its Arrow
batches from the pipe, closing) runs in a small thread pool, so ``/healthz``, the operator routes and other
requests are answered while queries run; the calls of one query are serialised by its own lock.

Fair use (:class:`FairSlots`, on the event loop): a query needs one of ``sql_concurrency`` slots, and one
API key holds at most ``sql_key_concurrency`` of them (by default all but one).  A query that cannot start
waits in one queue; when a slot comes free it goes to the waiting query of an operator first, then to the
key running the fewest queries, then to the oldest.  So one key holding its share leaves the other slots to
everyone else.  A query is answered 429 ``too_many_queries`` with ``Retry-After`` when it waited
``sql_queue_wait_s`` in vain, or when the queue (``_WAITERS_PER_SLOT`` per slot) or its key's part of it (as
many per share) is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from api.errors import ApiError, from_library
from api.metrics import ApiMetrics
from store.errors import CorridorHubError, QueryRefused
from store.sandbox import Sandbox
from store.settings import Settings
from store.sql_pool import PooledResult, QueryMemoryExceeded, QueryWorkerLost, SqlPool, WorkersBusy

T = TypeVar("T")

_WAITERS_PER_SLOT = 4
#: How long a query waits for a worker process once it holds a slot (workers being replaced start in ~2 s).
_WORKER_WAIT_S = 20.0


@dataclass(frozen=True)
class Caller:
    """Who runs a query: the API key's id, and whether it is an operator's (served first)."""

    key: str
    operator: bool = False


@dataclass(frozen=True)
class FairUse:
    key_concurrency: int = 2
    queue_wait_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> FairUse:
        return cls(settings.sql_key_share, settings.sql_queue_wait_s)


def api_error(exc: CorridorHubError) -> ApiError:
    """The API error for a library error of a query."""
    if isinstance(exc, QueryMemoryExceeded):
        return ApiError(422, "sql_memory_limit", str(exc))
    if isinstance(exc, QueryWorkerLost):
        return ApiError(422, "sql_worker_lost", str(exc))
    if isinstance(exc, WorkersBusy):
        return ApiError(503, "sql_unavailable", str(exc), {"Retry-After": "5"})
    return from_library(exc)


def outcome_of(exc: BaseException) -> str:
    """The metrics label of a failed query."""
    if isinstance(exc, ApiError):
        if exc.code == "sql_refused":
            return "refused"
        return {422: "timeout" if exc.code == "sql_timeout" else "error", 429: "rejected"}.get(
            exc.status, "error"
        )
    if isinstance(exc, QueryRefused):
        return "refused"
    if isinstance(exc, CorridorHubError):
        return "timeout" if api_error(exc).code == "sql_timeout" else "error"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "error"


@dataclass(eq=False)
class _Waiter:
    caller: Caller
    share: int
    order: int
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class FairSlots:
    """``size`` slots, at most ``share`` per key, one queue served operators first then the least-served key.
    Lives on the event loop: every method but :meth:`release_threadsafe` is called there."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self.running: Counter[str] = Counter()
        self.waiters: list[_Waiter] = []
        self._started: dict[str, list[float]] = {}
        self._order = itertools.count()
        self._loop = asyncio.get_running_loop()

    async def acquire(self, caller: Caller, fair: FairUse) -> None:
        share = min(fair.key_concurrency, self.size)
        waiter = _Waiter(caller, share, next(self._order))
        self.waiters.append(waiter)
        self._dispatch()
        if waiter.granted.done():
            return
        self.waiters.remove(waiter)
        self._refuse_when_full(caller, share)
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), fair.queue_wait_s)
        except TimeoutError:
            if waiter.granted.done():  # granted as the wait ran out
                return
            raise _too_many(f"no query slot came free within {fair.queue_wait_s:g} s", 1) from None
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self.release(caller)  # granted just as the client went away
            raise
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def release(self, caller: Caller) -> None:
        self.running[caller.key] -= 1
        starts = self._started.get(caller.key)
        if starts:
            starts.pop(0)
        if self.running[caller.key] <= 0:
            del self.running[caller.key]
            self._started.pop(caller.key, None)
        self._dispatch()

    def release_threadsafe(self, caller: Caller) -> None:
        if _on_loop(self._loop):
            self.release(caller)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: the app is gone, its slots too
                self._loop.call_soon_threadsafe(self.release, caller)

    def _dispatch(self) -> None:
        while sum(self.running.values()) < self.size:
            ready = [w for w in self.waiters if self.running[w.caller.key] < w.share and not w.granted.done()]
            if not ready:
                return
            chosen = min(ready, key=lambda w: (not w.caller.operator, self.running[w.caller.key], w.order))
            self.waiters.remove(chosen)
            self.running[chosen.caller.key] += 1
            self._started.setdefault(chosen.caller.key, []).append(time.monotonic())
            chosen.granted.set_result(None)

    def _refuse_when_full(self, caller: Caller, share: int) -> None:
        if len(self.waiters) >= _WAITERS_PER_SLOT * self.size:
            raise _too_many(f"{len(self.waiters)} queries are waiting already", 1)
        own = sum(1 for w in self.waiters if w.caller.key == caller.key)
        if self.running[caller.key] >= share and own >= _WAITERS_PER_SLOT * share:
            oldest = min(self._started.get(caller.key) or [time.monotonic()])
            retry = max(1, math.ceil(oldest + self.timeout_s - time.monotonic()))
            raise _too_many(
                f"this key runs its share of {share} queries at once and has {own} more waiting", retry
            )


class OpenQuery:
    """One running query: its result, a lock serialising the calls on it, and its slot."""

    def __init__(self, runner: QueryRunner, result: PooledResult, caller: Caller, started: float) -> None:
        self.result = result
        self._runner = runner
        self._caller = caller
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
            raise api_error(exc) from None

    def close(self, outcome: str = "ok") -> None:
        """Close the result in the pool (after a read in flight) and give back the slot; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._runner.metrics.observe_query(outcome, time.perf_counter() - self._started)
        self._runner.submit_close(self)

    def _close_now(self) -> None:
        with self._lock:
            self.result.close()


class QueryRunner:
    """The worker pool (sized ``concurrency``, with the sandbox's lake and limits), its fair slots and the
    threads that wait on it.  ``start()`` in the app's lifespan, ``shutdown()`` at its end."""

    def __init__(self, sandbox: Sandbox, concurrency: int, metrics: ApiMetrics) -> None:
        self.sandbox = sandbox  # in the service's process, for the catalog of relations only (api.tables)
        self.metrics = metrics
        self.concurrency = concurrency
        self.pool = SqlPool(sandbox.lake.root, sandbox.limits, concurrency)
        # One thread more than slots: closes and a last read may overlap a new query's start.
        self.executor = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="corridorhub-sql")
        self._slots: FairSlots | None = None

    async def start(self) -> None:
        self._slots = FairSlots(self.concurrency, self.pool.limits.timeout_s)
        self.pool.start()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()

    async def open(
        self,
        sql: str,
        params: list[Any] | dict[str, Any] | None,
        caller: Caller | None = None,
        fair: FairUse | None = None,
    ) -> OpenQuery:
        """Wait for a fair slot, start ``sql`` in a worker; 4xx for refused, bad, slow or too many queries."""
        assert self._slots is not None, "QueryRunner.start() was not awaited (app lifespan not run)"
        caller = caller or Caller("anonymous")
        started = time.perf_counter()
        self.metrics.waiting.inc()
        try:
            await self._slots.acquire(caller, fair or FairUse())
        except ApiError as exc:
            self.metrics.observe_query(outcome_of(exc), time.perf_counter() - started)
            raise
        finally:
            self.metrics.waiting.dec()
        self.metrics.in_flight.inc()
        started_query = self.executor.submit(self.pool.query, sql, params, _WORKER_WAIT_S)
        try:
            result = await asyncio.wrap_future(started_query)
        except asyncio.CancelledError:  # the client went away: close the result when it comes, then free
            started_query.add_done_callback(lambda f: self._close_abandoned(f, caller))
            self.metrics.observe_query("cancelled", time.perf_counter() - started)
            raise
        except BaseException as exc:
            self._release(caller)
            self.metrics.observe_query(outcome_of(exc), time.perf_counter() - started)
            if isinstance(exc, CorridorHubError):
                raise api_error(exc) from None
            raise
        return OpenQuery(self, result, caller, started)

    def _release(self, caller: Caller) -> None:
        self.metrics.in_flight.dec()
        assert self._slots is not None
        self._slots.release_threadsafe(caller)

    def _close_abandoned(self, started_query: Future[PooledResult], caller: Caller) -> None:
        try:
            if not started_query.cancelled() and started_query.exception() is None:
                started_query.result().close()
        finally:
            self._release(caller)

    def submit_close(self, query: OpenQuery) -> None:
        def close() -> None:
            try:
                query._close_now()
            finally:
                self._release(query._caller)

        try:
            self.executor.submit(close)
        except RuntimeError:  # the pool is shut down (app stopping): close here
            close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _too_many(reason: str, retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        "too_many_queries",
        f"The service is running as many SQL queries as it may ({reason}); retry shortly",
        {"Retry-After": str(retry_after_s)},
    )
