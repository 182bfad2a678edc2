"""``corridorhub sql``: one SQL statement over the current snapshots, through the SQL sandbox, as a table, CSV
or JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
import orjson
import pyarrow as pa

from corridorhub._options import lake_option, settings_from
from store.lake import Lake
from store.query import analyst_relations, run_sql
from store.result_formats import encode_table, python_values
from store.sandbox import SandboxLimits

_MAX_CELL = 60


def _help() -> str:
    names = {kind: ", ".join(relations) for kind, relations in analyst_relations().items()}
    return f"""Run one read-only SQL STATEMENT (DuckDB dialect) over the lake, in the SQL sandbox.

    Tables: {names["tables"]}, each the Delta table's current committed snapshot (columns and units:
    docs/DATA_CONTRACT.md).  Analyst views: {names["views"]} (docs/VIEWS.md).  Zone tables:
    {names["zones"]} (the corridor zones, and the polygon edges the macro zone_at(lat, lon) tests).

    Only one SELECT is accepted: statements that write, attach, load, change settings or read files
    directly are refused (docs/SANDBOX.md).  Timestamps are UTC.  Values are written as POST /v1/sql writes
    them (docs/API.md): in json, timestamps are RFC 3339 text and binary values base64.

    Example: corridorhub sql "SELECT device_id, count(*) FROM state GROUP BY 1"
    """


@click.command("sql", help=_help())
@click.argument("statement")
@lake_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: aligned text columns; csv: with a header row; json: the document POST /v1/sql sends "
    "({columns, rows, truncated, row_count}); csv and json encode values as the API does (docs/API.md).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=SandboxLimits.timeout_s,
    show_default=True,
    help="Seconds the query may run before it is stopped.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=0),
    default=SandboxLimits.max_rows,
    show_default=True,
    help="Rows returned at most; a note on stderr says when more were cut off.",
)
@click.option(
    "--memory-limit",
    default=SandboxLimits.memory_limit,
    show_default=True,
    help="DuckDB memory the query may use (e.g. 512MB, 2GB); beyond it, it spills to a capped temp folder.",
)
@click.pass_context
def command(
    ctx: click.Context,
    statement: str,
    lake: str | None,
    output_format: str,
    timeout: float,
    max_rows: int,
    memory_limit: str,
) -> None:
    settings = settings_from(ctx, lake=lake)
    limits = SandboxLimits(memory_limit=memory_limit, timeout_s=timeout, max_rows=max_rows)
    answer = run_sql(Lake(settings.lake), statement, limits=limits)
    result = answer.table
    if output_format == "csv":
        click.echo(format_csv(result), nl=False)
    elif output_format == "json":
        click.echo(format_json(result, answer.truncated))
    else:
        click.echo(format_table(result))
    if answer.truncated:
        click.echo(
            f"Note: the result was truncated to the first {max_rows} rows (raise --max-rows to see more).",
            err=True,
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return orjson.dumps(value, default=str).decode()
    return str(value)


def format_table(result: pa.Table) -> str:
    """Aligned columns with a header and a rule; numbers right-aligned; ``(N rows)`` at the end."""
    names = result.column_names
    columns = [python_values(column.combine_chunks()) for column in result.columns]
    rows = [[_text(v) for v in row] for row in zip(*columns, strict=True)]
    rows = [[c if len(c) <= _MAX_CELL else c[: _MAX_CELL - 1] + "…" for c in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    numeric = [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in result.schema.types
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [line(names), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def format_csv(result: pa.Table) -> str:
    """CSV as ``POST /v1/sql`` sends it (``store.result_formats``): a header row, then the rows."""
    return encode_table(result, "csv", truncated=False).decode()


def format_json(result: pa.Table, truncated: bool = False) -> str:
    """The JSON document ``POST /v1/sql`` sends (``store.result_formats``): columns, rows, truncated."""
    return encode_table(result, "json", truncated).decode()
