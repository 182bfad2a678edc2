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
* **Memory.**  A worker's data segment may grow by 1.5 x ``memory_limit`` past what it held when ready
  (DuckDB is given ``memory_limit`` itself, so it spills or fails first where it counts; the kernel stops
  the rest: ``store._sql_worker.CAP_FACTOR``).
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
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

from store._pooled_result import PooledResult
from store._sql_protocol import read_frame, write_frame
from store.errors import QueryMemoryExceeded, QueryWorkerLost, WorkersBusy
from store.sandbox import SandboxLimits

__all__ = ["PoolStats", "PooledResult", "QueryMemoryExceeded", "QueryWorkerLost", "SqlPool", "WorkersBusy"]

log = logging.getLogger("corridorhub.sql_pool")

#: SIGKILL comes this long after DuckDB's own time limit should have stopped the query.
KILL_GRACE_S = 1.0
#: A worker that is not ready this long after it was started is killed and started again.
START_TIMEOUT_S = 60.0
#: How often idle workers are checked for having died.
WATCH_INTERVAL_S = 0.5


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
        self._temp_root: Path | None = None  # made by start(): a pool never started leaves nothing behind
        self._lock = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._dead: list[_Worker] = []
        self._starting = 0
        self._started = 0
        self._numbers = itertools.count()
        self._closed = False

    def __enter__(self) -> SqlPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the workers (in the background; :meth:`query` waits for one to be ready) and the thread
        that replaces idle workers that died (killed from outside)."""
        self._temp_root = Path(tempfile.mkdtemp(prefix="corridorhub-sql-"))
        for _ in range(self.size):
            self._spawn()
        threading.Thread(target=self._watch, name="corridorhub-sql-pool", daemon=True).start()

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
        if self._temp_root is not None:
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
            if not self._lock.wait_for(lambda: self._live_idle() or self._closed, wait_s):
                raise WorkersBusy(
                    f"No SQL worker came free within {wait_s:g} s ({len(self._busy)} busy, "
                    f"{self._starting} starting); retry shortly"
                )
            if self._closed:
                raise WorkersBusy("The SQL workers are shut down")
            worker = self._idle.pop()
            self._busy.add(worker)
            return worker

    def _live_idle(self) -> bool:
        """Whether an idle worker is alive; dead ones (killed while idle) go to the watcher to replace."""
        while self._idle and self._idle[-1].process.poll() is not None:
            self._dead.append(self._idle.pop())
        return bool(self._idle)

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(WATCH_INTERVAL_S)
            with self._lock:
                self._dead += [w for w in self._idle if w.process.poll() is not None]
                self._idle = [w for w in self._idle if w not in self._dead]
                dead, self._dead = self._dead, []
            for worker in dead:
                log.warning("SQL worker %s died while idle; starting another", worker.pid)
                _reap(worker)
                self._spawn()

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
        assert self._temp_root is not None, "SqlPool.start() makes the temp folder before any worker"
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
