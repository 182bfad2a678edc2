"""``POST /v1/sql``: one analyst statement through the sandbox, streamed back as JSON, CSV, Parquet or Arrow.

How a response is made:

* The statement executes in an SQL worker process (``api.runner``, ``store.sql_pool``; docs/SANDBOX.md);
  refusals and errors known at that point are 400 (``sql_refused``, ``sql_error``); the time limit is 422
  ``sql_timeout`` (not 408, which means "the client was too slow to send its request" and which browsers
  and proxies retry on their own, re-running an expensive query); the memory cap is 422
  ``sql_memory_limit``, a worker killed from outside 422 ``sql_worker_lost``, no worker 503
  ``sql_unavailable``, a key over its share or a full queue 429 ``too_many_queries`` with ``Retry-After``.
* ``json`` streams from the first batch on: the flag ``truncated`` and ``row_count`` come at the end of
  the document, where they are known.  A failure after rows were sent (the time limit hit during the fetch)
  ends the document with an ``error`` member and ``"truncated": true``.
* ``csv``, ``parquet`` and ``arrow`` cannot carry a flag at their end that every reader sees, and HTTP/1.1
  trailers are ignored by most clients.  So the service reads the result up to the row cap
  (``sql_max_rows``, plus the one row that tells truncation) *before* the status line, and sends exact
  ``X-Corridorhub-Truncated: true|false`` and ``X-Corridorhub-Row-Count`` headers; the bytes are then
  encoded and sent batch by batch.  Memory per query is bounded by the row cap (Arrow batches, not text),
  and a time limit or error met while reading is still a clean 4xx.  Parquet also holds the flag in its
  footer metadata (``corridorhub.truncated``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from starlette.types import Receive, Scope, Send

from api.auth import Role, requires
from api.errors import ApiError, documented
from api.runner import Caller, FairUse, OpenQuery, outcome_of
from api.services import services
from store.query import analyst_relations
from store.result_formats import MEDIA_TYPES, Encoder, Format, JsonEncoder, encoder_for
from store.sql_pool import PooledResult

router = APIRouter(tags=["analyst"])

TRUNCATED_HEADER = "X-Corridorhub-Truncated"
ROW_COUNT_HEADER = "X-Corridorhub-Row-Count"
_ROWS_PER_BATCH = {"json": 10_000, "csv": 20_000, "parquet": 65_536, "arrow": 65_536}

# -- parameters: integers are bound as BIGINT, so one outside int64 is a 400 (check_params), never a double
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _not_an_integer(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError("an integer is not taken as a float")  # pydantic's strict float takes ints
    return value


Float = Annotated[StrictFloat, BeforeValidator(_not_an_integer)]
Scalar = StrictStr | StrictInt | Float | StrictBool | None


def check_params(params: list[Any] | dict[str, Any] | None) -> None:
    """400 for an integer parameter DuckDB cannot bind as BIGINT (JSON allows any size)."""
    named = enumerate(params, 1) if isinstance(params, list) else (params or {}).items()
    for name, value in named:
        if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
            raise ApiError(
                400,
                "bad_parameter",
                f"Parameter {name} is an integer outside the 64-bit range ({INT64_MIN} .. {INT64_MAX}); "
                f"pass it as a string and cast it in SQL (e.g. CAST(? AS HUGEINT))",
            )


ParamName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class SqlRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sql": "SELECT device_id, count(*) AS samples FROM state WHERE date = ? GROUP BY 1",
                    "params": ["2025-03-14"],
                    "format": "json",
                }
            ]
        },
    )

    sql: str = Field(
        min_length=1,
        max_length=100_000,
        description="One read-only statement (DuckDB dialect) over the lake's tables, the analyst views "
        "and the zone tables: "
        + "; ".join(", ".join(names) for names in analyst_relations().values())
        + " (docs/DATA_CONTRACT.md, docs/VIEWS.md).",
    )
    params: list[Scalar] | dict[ParamName, Scalar] | None = Field(
        default=None,
        description="Values for ? placeholders (a list) or $name placeholders (an object); integers must fit "
        "in 64 bits (else 400 bad_parameter).",
    )
    format: Format = Field(default="json", description="json, csv, parquet or arrow (IPC stream).")


class SqlColumn(BaseModel):
    name: str
    type: str


class SqlJsonResult(BaseModel):
    """The ``json`` format (streamed)."""

    columns: list[SqlColumn]
    rows: list[list[Any]]
    truncated: bool
    row_count: int
    error: dict[str, Any] | None = Field(default=None, description="Only when the query failed mid-stream.")


_RESULT_CONTENT: dict[str, Any] = {
    MEDIA_TYPES["json"]: {"schema": SqlJsonResult.model_json_schema()},
    MEDIA_TYPES["csv"]: {"schema": {"type": "string"}},
    MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
    MEDIA_TYPES["arrow"]: {"schema": {"type": "string", "format": "binary"}},
}


class _Reader:
    """Pulls batches from a result (inside the pool) and counts rows."""

    def __init__(self, result: PooledResult, rows_per_batch: int) -> None:
        self.result = result
        self.rows = 0
        self.finished = False
        self._batches = iter(result.batches(rows_per_batch))

    def next(self) -> pa.RecordBatch | None:
        batch = next(self._batches, None)
        if batch is not None:
            self.rows += batch.num_rows
        return batch

    def read_all(self) -> list[pa.RecordBatch]:
        out = []
        while (batch := self.next()) is not None:
            out.append(batch)
        return out

    def step(self, encoder: Encoder) -> tuple[bytes, bool]:
        """The next batch, encoded; at the end the encoder's tail and True."""
        batch = self.next()
        if batch is None:
            self.finished = True
            return encoder.end(self.result.truncated, self.rows), True
        return encoder.batch(batch), False


class _QueryResponse(StreamingResponse):
    """Closes its query however the response ends, even when the body was never iterated."""

    def __init__(self, content: AsyncIterator[bytes], query: OpenQuery, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._query = query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._query.close("cancelled")  # a no-op when the body closed it already


@router.post(
    "/v1/sql",
    dependencies=[requires(Role.ANALYST)],
    summary="Run one SQL statement",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The result, streamed.  csv, parquet and arrow carry the headers "
            f"{TRUNCATED_HEADER} and {ROW_COUNT_HEADER}; json carries them at the end of the document.",
            "content": _RESULT_CONTENT,
        },
        **documented(400, 401, 403, 413, 422, 429, 503),
    },
)
async def run_sql(body: SqlRequest, request: Request) -> StreamingResponse:
    """Run one read-only statement over the lake's committed snapshots in the SQL sandbox.

    At most `sql_max_rows` rows come back (then `truncated` is true); the statement is stopped at
    `sql_timeout_s` (422 `sql_timeout`) or at the memory cap `sql_memory_limit` (422 `sql_memory_limit`).
    One key runs at most `sql_key_concurrency` queries at once; beyond that, and when every worker is busy
    for `sql_queue_wait_s`, 429 `too_many_queries` with `Retry-After`.  Refused statements (writes, files
    outside the lake, settings, extensions...) are 400 `sql_refused` naming what was refused; other bad SQL
    is 400 `sql_error`.
    """
    check_params(body.params)
    hub = services(request)
    key = request.state.key
    caller = Caller(key.id, operator=key.role == "operator")
    query = await hub.runner.open(body.sql, body.params, caller, FairUse.from_settings(hub.settings))
    try:
        reader = _Reader(query.result, _ROWS_PER_BATCH[body.format])
        encoder = encoder_for(body.format)
        if isinstance(encoder, JsonEncoder):
            head = await query.call(_json_head, query.result, reader, encoder)
            content = _stream(query, reader, encoder, head, None)
            headers: dict[str, str] = {}
        else:
            batches = await query.call(reader.read_all)
            head = await query.call(_begin, encoder, query.result.schema, body.format, batches)
            content = _stream(query, reader, encoder, head, batches)
            headers = {
                TRUNCATED_HEADER: "true" if query.result.truncated else "false",
                ROW_COUNT_HEADER: str(reader.rows),
            }
    except BaseException as exc:
        query.close(outcome_of(exc))
        raise
    return _QueryResponse(content, query, media_type=MEDIA_TYPES[body.format], headers=headers)


def _json_head(result: PooledResult, reader: _Reader, encoder: Encoder) -> bytes:
    """The start of the document and the first batch: an error met here is still a 4xx status."""
    head = encoder.begin(result.schema)
    chunk, _ = reader.step(encoder)
    return head + chunk


def _begin(encoder: Encoder, schema: pa.Schema, fmt: str, batches: list[pa.RecordBatch]) -> bytes:
    try:
        for batch in batches:  # values the format cannot hold: a 400 before the body starts
            encoder.check(batch)
        return encoder.begin(schema)
    except (pa.ArrowException, ValueError) as exc:
        raise ApiError(400, "unsupported_result", f"This result cannot be written as {fmt}: {exc}") from None


async def _stream(
    query: OpenQuery,
    reader: _Reader,
    encoder: Encoder,
    head: bytes,
    buffered: list[pa.RecordBatch] | None,
) -> AsyncIterator[bytes]:
    outcome = "cancelled"
    try:
        yield head
        if buffered is not None:  # read ahead already: encode in the pool, batch by batch
            for batch in buffered:
                yield await query.call(encoder.batch, batch)
            yield await query.call(encoder.end, query.result.truncated, reader.rows)
        else:
            done = reader.finished
            while not done:
                chunk, done = await query.call(reader.step, encoder)
                if chunk:
                    yield chunk
        outcome = "ok"
    # -- a failure after the status line: the encoder ends the body so that a client can tell (docs/API.md)
    except ApiError as exc:
        outcome = outcome_of(exc)
        yield encoder.fail(exc.message, code=exc.code, status=exc.status)
    except (pa.ArrowException, ValueError, OverflowError) as exc:  # a value this format cannot hold
        outcome = "error"
        yield encoder.fail(f"The result cannot be written in this format: {exc}", code="unsupported_result")
    finally:
        query.close(outcome)
