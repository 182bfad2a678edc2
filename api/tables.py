"""``GET /v1/tables`` and ``GET /v1/tables/{name}/sample``: what analysts can query, documented.

The relations are the sandbox's own (the lake's views and the analyst views); each column's type, unit and
description come from where they are declared: ``store.schema`` for the lake tables, ``store.views`` for the
analyst views.  A sample runs through the sandbox like any query.
"""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from api.auth import Role, requires
from api.errors import ApiError, documented
from api.services import services
from store.lake import duckdb_type
from store.result_formats import json_rows
from store.schema import SCHEMAS
from store.views import VIEWS_BY_NAME

router = APIRouter(tags=["analyst"], dependencies=[requires(Role.ANALYST)], responses=documented(401, 403))

MAX_SAMPLE_ROWS = 1000


class ColumnDoc(BaseModel):
    name: str
    type: str
    unit: str
    description: str


class TableDoc(BaseModel):
    name: str
    kind: str  # "table" (a lake table) or "view" (an analyst view)
    description: str
    columns: list[ColumnDoc]


class TableList(BaseModel):
    tables: list[TableDoc]


class Sample(BaseModel):
    table: str
    columns: list[dict[str, str]]
    rows: list[list[object]]
    row_count: int


def documented_relations() -> dict[str, TableDoc]:
    docs: dict[str, TableDoc] = {}
    for name, schema in SCHEMAS.items():
        columns = [ColumnDoc(name=c.name, type=duckdb_type(c.type), unit=c.unit, description=c.description)
                   for c in schema.columns]  # fmt: skip
        docs[name] = TableDoc(name=name, kind="table", description=schema.description, columns=columns)
    for name, view in VIEWS_BY_NAME.items():
        columns = [
            ColumnDoc(name=c.name, type=c.type, unit=c.unit, description=c.description) for c in view.columns
        ]
        docs[name] = TableDoc(name=name, kind="view", description=view.description, columns=columns)
    return docs


async def _queryable(request: Request) -> dict[str, TableDoc]:
    """The documented relations the sandbox offers (an undocumented one is listed without docs)."""
    relations = await asyncio.to_thread(lambda: services(request).runner.sandbox.relations)
    docs = documented_relations()
    return {
        name: docs.get(name, TableDoc(name=name, kind="table", description="", columns=[]))
        for name in sorted(relations)
    }


@router.get("/v1/tables", response_model=TableList, summary="Tables and views analysts can query")
async def list_tables(request: Request) -> TableList:
    """Every table and view `POST /v1/sql` can read, with each column's DuckDB type, unit and meaning."""
    return TableList(tables=list((await _queryable(request)).values()))


@router.get(
    "/v1/tables/{name}/sample",
    summary="A few rows of a table",
    response_model=Sample,
    responses=documented(404, 422, 429),
)
async def sample(
    request: Request,
    name: str = Path(description="A table or view name from GET /v1/tables."),
    limit: int = Query(10, ge=1, le=MAX_SAMPLE_ROWS, description="Rows to return."),
) -> Response:
    """The first `limit` rows of a table or view, read through the SQL sandbox (same limits)."""
    if name not in await _queryable(request):
        raise ApiError(404, "table_not_found", f"No table or view {name!r}: GET /v1/tables lists them")
    hub = services(request)
    quoted = '"' + name.replace('"', '""') + '"'
    query = await hub.runner.open(f"SELECT * FROM {quoted} LIMIT {limit}", None)
    outcome = "error"
    try:
        table = await query.call(query.result.fetch_all)
        outcome = "ok"
    finally:
        query.close(outcome)
    columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
    rows = b",".join(json_rows(batch) for batch in table.to_batches() if batch.num_rows)
    body = (
        b'{"table":' + orjson.dumps(name) + b',"columns":' + orjson.dumps(columns)
        + b',"rows":[' + rows + b'],"row_count":' + str(table.num_rows).encode() + b"}"
    )  # fmt: skip
    return Response(body, media_type="application/json")
