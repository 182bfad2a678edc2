"""A streaming result of one sandboxed statement: Arrow batches up to the row cap, under the time limit.

The statement starts when the result is made, and its first batch is read then, so that most errors
(binder errors, a blocking aggregate running out of memory or time) surface from ``Sandbox.query`` rather than
in the middle of a stream.  The time limit runs from the start until the result is closed: DuckDB's
``max_execution_time`` counts wall-clock time including the pauses between batches, and a timer thread calls
``interrupt()`` on the cursor shortly after as a backstop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from store._sql_guard import analyst_message, one_line
from store.errors import QueryError, QueryTimeout
from store.result_formats import check_sendable

if TYPE_CHECKING:
    from store.sandbox import SandboxLimits

#: Rows per batch DuckDB produces; ``batches()`` re-cuts them to the size its caller asks for.
CHUNK_ROWS = 10_000
#: The backstop interrupt fires this long after DuckDB's own time limit should have.
BACKSTOP_GRACE_S = 0.5


class QueryResult:
    """A streaming cursor over one read-only statement.  ``truncated`` and ``rows`` are final once the
    batches are exhausted (or ``fetch_all`` returned)."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        statement: str,
        params: list[Any] | dict[str, Any] | None,
        *,
        limits: SandboxLimits,
        hide: Mapping[str, str],
        on_close: Callable[[], None],
    ) -> None:
        self._cursor = cursor
        self._limits = limits
        self._hide = dict(hide)
        self._on_close: Callable[[], None] | None = on_close
        self._timed_out = threading.Event()
        self._timer = threading.Timer(limits.timeout_s + BACKSTOP_GRACE_S, self._interrupt)
        self._timer.daemon = True
        self._timer.start()
        self._consumed = False
        self.truncated = False
        self.rows = 0
        try:
            relation = self._bind(statement, params)
            if relation is None:  # pragma: no cover - the guard lets only SELECTs through
                raise QueryError("The statement returned no rows")
            check_sendable(relation.columns, relation.types)  # before it runs: no format carries these
            self._reader = relation.to_arrow_reader(CHUNK_ROWS)
            self.schema: pa.Schema = self._reader.schema
            self._first: pa.RecordBatch | None = self._read_next()
        except BaseException as exc:
            error = self._translate(exc)
            self.close()
            if error is None:
                raise
            raise error from None

    def __enter__(self) -> QueryResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def batches(self, rows_per_batch: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows in batches of ``rows_per_batch`` (the last may be shorter), at most ``max_rows`` in all.

        Never holds more than about one batch in memory.  Closes the result when it ends.
        """
        if rows_per_batch < 1:
            raise ValueError("rows_per_batch must be at least 1")
        if self._consumed:
            raise QueryError("The result was already read")
        self._consumed = True
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        try:
            for batch in self._capped():
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= rows_per_batch:
                    whole = pa.concat_batches(pending)
                    yield whole.slice(0, rows_per_batch)
                    rest = whole.slice(rows_per_batch)
                    pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
            if pending_rows:
                yield pa.concat_batches(pending)
        finally:
            self.close()

    def fetch_all(self) -> pa.Table:
        """Every row up to ``max_rows``, as one table (for small results)."""
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)

    def close(self) -> None:
        """Stop the statement if it still runs and give the connection back.  Safe to call twice."""
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        on_close, self._on_close = getattr(self, "_on_close", None), None
        if on_close is None:
            return
        reader = getattr(self, "_reader", None)
        try:
            if reader is not None:
                reader.close()
            self._cursor.close()
        except (duckdb.Error, OSError, pa.ArrowException):  # closing a failed statement may complain
            pass
        finally:
            on_close()

    # -- internals ------------------------------------------------------------------------------------------

    def _capped(self) -> Iterator[pa.RecordBatch]:
        """The batches DuckDB produces, cut at ``max_rows``; sets ``truncated`` when rows were left over."""
        batch, self._first = self._first, None
        while batch is not None:
            room = self._limits.max_rows - self.rows
            if batch.num_rows > room:
                self.truncated = True
                batch = batch.slice(0, room)
            if batch.num_rows:
                self.rows += batch.num_rows
                yield batch
            if self.truncated:
                return
            batch = self._read_next()
            if batch is not None and self.rows >= self._limits.max_rows and batch.num_rows:
                self.truncated = True
                return

    def _read_next(self) -> pa.RecordBatch | None:
        try:
            batch: pa.RecordBatch = self._reader.read_next_batch()
        except StopIteration:
            return None
        except BaseException as exc:
            error = self._translate(exc)
            if error is None:
                raise
            raise error from None
        return batch

    def _bind(
        self, statement: str, params: list[Any] | dict[str, Any] | None
    ) -> duckdb.DuckDBPyRelation | None:
        """The statement as a relation (bound, not run yet).  DuckDB's relation API leaves the ``LINE 1:``
        caret out of binder and catalog errors; binding once more through ``execute`` gives the message
        with it (binding fails again before anything runs)."""
        cursor = self._cursor
        try:
            return cursor.sql(statement, params=params) if params else cursor.sql(statement)
        except (duckdb.BinderException, duckdb.CatalogException) as exc:
            try:
                if params:
                    cursor.execute(statement, params)
                else:
                    cursor.execute(statement)
            except type(exc) as located:
                raise located from None
            raise

    def _interrupt(self) -> None:
        self._timed_out.set()
        self._cursor.interrupt()

    def _translate(self, exc: BaseException) -> QueryError | None:
        """The QueryError for a DuckDB failure (its message with DuckDB's hints, host paths hidden), or None
        when ``exc`` is not one (re-raise it)."""
        if isinstance(exc, QueryError):
            return exc
        if not isinstance(exc, (duckdb.Error, OSError, pa.ArrowException)):
            return None
        text = str(exc)
        for path, alias in self._hide.items():
            text = text.replace(path, alias)
        limits = self._limits
        if (
            self._timed_out.is_set()
            or isinstance(exc, duckdb.InterruptException)
            or "INTERRUPT Error" in text
        ):
            return QueryTimeout(f"The query exceeded the {limits.timeout_s:g} s time limit and was stopped")
        if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in text:
            spill = " and its temp space" if "max_temp_directory_size" in text else ""
            return QueryError(
                f"The query exceeded the sandbox's memory limit ({limits.memory_limit}){spill} and was "
                f"stopped: {one_line(text).removeprefix('Out of Memory Error: ')}"
            )
        return QueryError(analyst_message(text))
