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
    default=None,
    help="Seconds the query may run before it is stopped (its worker killed 1 s later) "
    "[default: the sql_timeout_s setting, 30].",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows returned at most; a note on stderr says when more were cut off "
    "[default: the sql_max_rows setting, 100000].",
)
@click.option(
    "--memory-limit",
    default=None,
    help="Memory the query may use (e.g. 512MB, 2GB): DuckDB spills beyond it to a capped temp folder, and "
    "the kernel stops its worker past it [default: the sql_memory_limit setting, 1GB].",
)
@click.pass_context
def command(
    ctx: click.Context,
    statement: str,
    lake: str | None,
    output_format: str,
    timeout: float | None,
    max_rows: int | None,
    memory_limit: str | None,
) -> None:
    settings = settings_from(
        ctx, lake=lake, sql_timeout_s=timeout, sql_max_rows=max_rows, sql_memory_limit=memory_limit
    )
    answer = run_sql(Lake(settings.lake), statement, limits=SandboxLimits.from_settings(settings))
    result = answer.table
    if output_format == "csv":
        click.echo(format_csv(result), nl=False)
    elif output_format == "json":
        click.echo(format_json(result, answer.truncated))
    else:
        click.echo(format_table(result))
    if answer.truncated:
        click.echo(
            f"Note: the result was truncated to its first {result.num_rows} rows (at most "
            f"{settings.sql_max_rows} rows and {settings.sql_max_result_mb} MiB: raise --max-rows or "
            "CORRIDORHUB_SQL_MAX_RESULT_MB).",
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
