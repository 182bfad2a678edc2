"""Which analyst statements the SQL sandbox runs: one read-only SELECT over the views, checked by DuckDB.

:func:`check_statement` is the sandbox's first line of defence (the locked, allow-listed connection is the
second, see ``store.sandbox``).  It asks DuckDB itself what the text is: ``duckdb.extract_statements``
gives the statement types, and ``json_serialize_sql`` the syntax tree of a SELECT, which is walked for

- table functions: only an allowlist (``range``, ``generate_series``, ``unnest``, ``json_each``, ``json_tree``
  and the table macros trusted set-up code added) - so no ``read_parquet``, ``glob``, ``query``, ``duckdb_*``,
  ``pragma_*`` ..., wherever they appear (CTE, subquery, lateral join, lambda);
- table names: only the relations the sandbox defines and the statement's own CTEs *where they are visible*
  (resolved by scope as DuckDB's binder does: a CTE named ``pg_settings`` in one subquery does not make
  ``pg_settings`` elsewhere the CTE) - so no ``FROM 'file.csv'`` replacement scans, no Python variables, no
  ``information_schema`` or ``pg_catalog``;
- scalar functions that read settings or the environment (``current_setting``, ``getenv``, ...), and the
  built-in macros whose body reads the catalog (``pg_get_viewdef``, ``get_block_size`` ...: found by
  checking every macro body DuckDB lists, see :func:`_unsafe_macros`);
- nesting deeper than the guard can check (orjson's 1,024 levels): refused with a message, never a crash.
- ``SHOW`` of settings (``DESCRIBE``, ``SUMMARIZE`` and ``SHOW TABLES`` are fine).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterator
from typing import Any

import duckdb
import orjson

from store.errors import QueryError, QueryRefused

#: Table functions an analyst may call: they compute rows, they read nothing.
SAFE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})

#: Scalar functions that read the sandbox's configuration or the process environment, or bind SQL text the
#: guard never sees (``json_serialize_plan(..., optimize := true)`` folds ``current_setting(...)`` into a
#: constant of the plan it returns: the allowed files' absolute paths).
DENIED_SCALAR_FUNCTIONS = frozenset(
    {
        "current_setting",
        "getenv",
        "write_log",
        "json_execute_serialized_sql",
        "json_serialize_plan",
        "setval",
        "nextval",
        "currval",  # and index_key: look catalog entries up by a name given as text
        "index_key",
    }
)

#: Scalar functions that build one value whose size an argument sets (argument index; None: range-like).
#: DuckDB 2.0.1 neither counts such a value against ``memory_limit`` nor interrupts the call that builds it
#: (``len(range(400000000))`` ran 117 s under a 3 s limit), so the size must be a constant under a cap.
SIZED_FUNCTIONS: dict[str, int | None] = {
    "repeat": 1,
    "lpad": 1,
    "rpad": 1,
    "list_resize": 1,
    "array_resize": 1,
    "range": None,
    "generate_series": None,
}
MAX_GENERATED = 1_000_000

#: Table functions that read files, named in their refusal so that the analyst knows to use the views.
_FILE_READERS = re.compile(r"^(read_|parquet_|sniff_csv|glob|.*_scan$|query$|query_table$|iceberg_|delta_)")

_READ_ONLY = "the sandbox is read-only"
#: Why each refused statement type is refused (DuckDB's StatementType names).
_REFUSAL_REASONS = {
    "COPY": _READ_ONLY,
    "COPY_DATABASE": _READ_ONLY,
    "EXPORT": _READ_ONLY,
    "INSERT": _READ_ONLY,
    "UPDATE": _READ_ONLY,
    "DELETE": _READ_ONLY,
    "MERGE_INTO": _READ_ONLY,
    "CREATE": _READ_ONLY,
    "CREATE_FUNC": _READ_ONLY,
    "DROP": _READ_ONLY,
    "ALTER": _READ_ONLY,
    "VACUUM": _READ_ONLY,
    "ANALYZE": _READ_ONLY,
    "ATTACH": "the sandbox reads only the lake",
    "DETACH": "the sandbox reads only the lake",
    "LOAD": "extensions cannot be installed or loaded in the sandbox",
    "EXTENSION": "extensions cannot be installed or loaded in the sandbox",
    "SET": "the sandbox's settings are fixed",
    "VARIABLE_SET": "the sandbox's settings are fixed",
    "PRAGMA": "pragmas change or reveal the sandbox's settings",
    "CALL": "the sandbox runs SELECT statements only",
    "TRANSACTION": "each query runs on its own",
    "PREPARE": "pass parameters with the query instead",
    "EXECUTE": "pass parameters with the query instead",
    "EXPLAIN": "the sandbox runs SELECT statements only",
    "MULTI": "it runs several statements (a PIVOT without IN (...) does: list the pivot values)",
}

_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)


def check_statement(
    sql: str,
    con: duckdb.DuckDBPyConnection,
    relations: Collection[str],
    table_functions: Collection[str] = SAFE_TABLE_FUNCTIONS,
) -> str:
    """The one read-only statement in ``sql``, or raise.

    :class:`QueryRefused` names what was refused and why; :class:`QueryError` is for SQL that is not valid
    (a parser error, an empty text) or names a table that does not exist (listing ``relations``).
    """
    if not sql.strip():
        raise QueryError("Empty SQL statement")
    try:
        statements = duckdb.extract_statements(sql)
        kinds = [_kind(s) for s in statements]
    except duckdb.ParserException as exc:
        raise QueryError(analyst_message(str(exc))) from None
    if not statements:
        raise QueryError("Empty SQL statement: only comments")
    if len(statements) > 1:
        words = ", ".join(_first_word(s.query) for s in statements)
        raise QueryRefused(f"Only one statement per query is allowed; found {len(statements)}: {words}")
    statement, kind = statements[0], kinds[0]
    if kind != "SELECT":
        reason = _REFUSAL_REASONS.get(kind, "the sandbox runs SELECT statements only")
        raise QueryRefused(f"{_first_word(statement.query)} statements are not allowed: {reason}")
    text = statement.query.strip().rstrip(";").strip()
    _check_tree(_syntax_tree(text, con), {r.lower() for r in relations}, {f.lower() for f in table_functions})
    return text


def one_line(message: str) -> str:
    """The first line of a DuckDB message (without its hints and the ``LINE 1: ...`` caret context)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "DuckDB error"


#: Lines of a list DuckDB puts in a message that are kept (``+`` has some 50 candidate functions).
MAX_LISTED = 8


#: DuckDB's parser advises a setting the sandbox refuses (``SET max_expression_depth``).
_DEPTH_ADVICE = re.compile(r'Use "SET max_expression_depth TO x" to increase the maximum expression depth\.')
_FLATTEN_IT = "Flatten it, e.g. with CTEs (the sandbox's limit cannot be raised)."


def analyst_message(message: str) -> str:
    """A DuckDB error as an analyst should read it: the first line, DuckDB's hints (``Candidate bindings:
    "speed_mps"``, ``Did you mean "state"?``, the candidate functions, at most :data:`MAX_LISTED` of a list)
    and the ``LINE 1: ...`` line with the caret under the culprit; blank lines dropped.  These echo only the
    analyst's own statement and the names they may query.  An internal error (a bug in DuckDB, whose
    message may hold a stack trace) keeps its first line only.  Paths are the caller's to hide."""
    message = _DEPTH_ADVICE.sub(_FLATTEN_IT, message)  # the sandbox refuses SET: advise what works
    first = one_line(message)
    if first.startswith(("INTERNAL Error", "FATAL Error")):
        return first
    out = [first]
    listed = 0
    for line in message.splitlines()[1:]:
        if line.startswith("Stack Trace"):
            break
        if not line.strip():
            continue
        if line.startswith("\t"):  # an item of the list the previous line announced
            listed += 1
            if listed <= MAX_LISTED:
                out.append("  " + line.strip())
            continue
        out += _more(listed)
        listed = 0
        out.append(line.rstrip())
    return "\n".join(out + _more(listed))


def _more(listed: int) -> list[str]:
    return [f"  ... and {listed - MAX_LISTED} more"] if listed > MAX_LISTED else []


def _kind(statement: duckdb.Statement) -> str:
    """DuckDB's StatementType name; "UNKNOWN" for one the Python client cannot name (UPDATE EXTENSIONS)."""
    try:
        return statement.type.name
    except ValueError:
        return "UNKNOWN"


def _first_word(sql: str) -> str:
    rest = _LEADING_NOISE.sub("", sql, count=1)
    match = re.match(r"[A-Za-z_]+", rest)
    return match.group(0).upper() if match else "These"


def _syntax_tree(text: str, con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    rows = con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()
    try:
        tree: dict[str, Any] = orjson.loads(rows[0][0]) if rows else {"error": True}
    except orjson.JSONDecodeError:  # orjson stops at 1,024 levels of nesting, without recursing in Python
        raise QueryRefused(
            "This SELECT is nested too deeply for the sandbox to check (at most about 200 nested subqueries "
            "or 400 nested function calls): flatten it, e.g. with CTEs"
        ) from None
    if tree.get("error"):
        message = str(tree.get("error_message") or "it cannot be analysed")
        raise QueryRefused(f"This SELECT cannot be checked by the sandbox: {one_line(message)}")
    return tree


Scope = frozenset[str]


def _scoped_nodes(tree: Any, scope: Scope = frozenset()) -> Iterator[tuple[dict[str, Any], Scope]]:
    """Every JSON object in the syntax tree with the CTE names visible where it stands, parents first.

    As DuckDB's binder resolves them: a query node's CTEs are visible in that node (its select list, FROM,
    subqueries, modifiers) and in the CTEs defined after them in the same WITH, not in their own definition
    (unless a recursive CTE's recursive part) and nowhere outside the node.  Iterative: deep trees do not
    recurse.
    """
    stack: list[tuple[Any, Scope]] = [(tree, scope)]
    while stack:
        node, visible = stack.pop()
        if isinstance(node, list):
            stack.extend((item, visible) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        yield node, visible
        inner = visible
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                stack.append((entry.get("value"), inner))  # sees only the CTEs before it
                inner = inner | {str(entry.get("key", "")).lower()}
        for key, value in node.items():
            if key == "cte_map":
                continue
            if key == "right" and node.get("type") == "RECURSIVE_CTE_NODE":
                stack.append((value, inner | {str(node.get("cte_name", "")).lower()}))
            else:
                stack.append((value, inner))


def _check_tree(
    tree: dict[str, Any],
    relations: set[str],
    table_functions: Collection[str],
    denied_functions: Collection[str] | None = None,
) -> None:
    """Raise for the first thing in ``tree`` the sandbox refuses.  ``denied_functions`` is given only for
    the body of a built-in macro (see :func:`_unsafe_macros`)."""
    builtin = denied_functions is not None
    denied = _unsafe_macros() if denied_functions is None else denied_functions
    called_as_table: set[int] = set()
    for node, ctes in _scoped_nodes(tree):  # parents come before their children
        ref_type = node.get("type")
        if ref_type == "TABLE_FUNCTION":
            function = node.get("function") or {}
            called_as_table.add(id(function))
            _check_table_function(str(function.get("function_name", "")).lower(), relations, table_functions)
        elif ref_type == "BASE_TABLE":
            _check_table_name(node, relations, ctes)
        elif ref_type == "SHOW_REF":
            _check_show(node)
        elif node.get("class") == "FUNCTION" and id(node) not in called_as_table:
            _check_scalar_function(node, denied, builtin)


@functools.cache
def _unsafe_macros() -> frozenset[str]:
    """DuckDB's built-in macros whose body reads what the sandbox refuses (``pg_get_viewdef`` reads
    ``duckdb_views()``, ``get_block_size`` ``pragma_database_size()`` ...), directly or through another such
    macro: asked of DuckDB itself, so a new version's macros are covered.  Names that are also an ordinary
    function in ``main`` stay callable (DuckDB resolves ``main`` first)."""
    with duckdb.connect(":memory:") as con:
        macros = con.execute(
            "SELECT function_name, function_type, macro_definition FROM duckdb_functions() "
            "WHERE internal AND function_type IN ('macro', 'table_macro') AND macro_definition IS NOT NULL"
        ).fetchall()
        ordinary = {
            str(name).lower()
            for (name,) in con.execute(
                "SELECT function_name FROM duckdb_functions() WHERE schema_name = 'main' "
                "AND function_type NOT IN ('macro', 'table_macro')"
            ).fetchall()
        }
        trees: dict[str, list[dict[str, Any]]] = {}
        unsafe: set[str] = set()
        for name, kind, definition in macros:
            text = str(definition) if kind == "table_macro" else f"SELECT {definition}"
            try:
                trees.setdefault(str(name).lower(), []).append(_syntax_tree(text, con))
            except QueryRefused:
                unsafe.add(str(name).lower())
    while True:  # until no macro calls one found unsafe
        found = {
            name
            for name, bodies in trees.items()
            if name not in unsafe and any(_refuses(body, unsafe) for body in bodies)
        }
        if not found:
            return frozenset(unsafe - ordinary)
        unsafe |= found


def _refuses(tree: dict[str, Any], denied: Collection[str]) -> bool:
    try:
        _check_tree(tree, set(), SAFE_TABLE_FUNCTIONS, denied)
    except QueryError:  # QueryRefused too
        return True
    return False


def _check_scalar_function(node: dict[str, Any], denied_macros: Collection[str], builtin: bool) -> None:
    name = str(node.get("function_name", "")).lower()
    if name in DENIED_SCALAR_FUNCTIONS:
        raise QueryRefused(
            f"The function {name}() is not allowed: it reads the sandbox's settings or environment"
        )
    if name in denied_macros:
        raise QueryRefused(
            f"The function {name}() is not allowed: it reads DuckDB's catalog or settings, which the sandbox "
            f"does not show"
        )
    if builtin:  # a built-in macro's body: only what it reads matters
        return
    if str(node.get("catalog", "")) or str(node.get("schema", "")) not in ("", "main"):
        raise QueryRefused(f"Qualified function names ({name}) are not allowed in the sandbox")
    if name not in SIZED_FUNCTIONS:
        return
    args = [_integer_constant(a.get("expression")) for a in node.get("arguments", [])]
    index = SIZED_FUNCTIONS[name]
    if index is not None:
        size = args[index] if len(args) > index else None
    elif args and len(args) <= 3 and not any(a is None for a in args):
        size = _range_size(name, [a for a in args if a is not None])
    else:
        size = None
    if size is None or size > MAX_GENERATED:
        raise QueryRefused(
            f"{name}() may build at most {MAX_GENERATED:,} characters or elements, given as integer "
            f"constants "
            f"(one huge value escapes DuckDB's memory and time limits); for rows, use FROM range(...)"
        )


def _range_size(name: str, args: list[int]) -> int | None:
    start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], 1)
    if len(args) == 3:
        step = args[2]
    if step == 0:
        return None
    return max(0, -(-(stop - start) // step)) + (name == "generate_series")


def _integer_constant(expression: Any) -> int | None:
    if not isinstance(expression, dict) or expression.get("class") != "CONSTANT":
        return None
    literal = expression.get("literal") or {}
    value = expression.get("value")
    text = literal.get("text") if isinstance(literal, dict) else None
    try:
        return int(text) if text is not None else int(value) if isinstance(value, int) else None
    except ValueError:
        return None


def _check_table_function(name: str, relations: set[str], allowed: Collection[str]) -> None:
    if name in allowed:
        return
    views = ", ".join(sorted(relations))
    if _FILE_READERS.match(name):
        raise QueryRefused(
            f"The table function {name}() is not allowed: the sandbox reads no files directly; "
            f"query the views instead ({views})"
        )
    raise QueryRefused(
        f"The table function {name}() is not allowed in the sandbox; allowed: {', '.join(sorted(allowed))}"
    )


def _check_table_name(node: dict[str, Any], relations: set[str], ctes: Scope) -> None:
    name = str(node.get("table_name", ""))
    catalog = str(node.get("catalog_name", "")).lower()
    schema = str(node.get("schema_name", "")).lower()
    if re.search(r"[/\\:.~*?]", name) or name.startswith("$"):
        raise QueryRefused(
            f"Reading files by name ({name!r}) is not allowed: the sandbox reads only its views "
            f"({', '.join(sorted(relations))})"
        )
    known = (catalog in ("", "memory") and schema in ("", "main") and name.lower() in relations) or (
        not catalog and not schema and name.lower() in ctes
    )
    if not known:
        qualified = ".".join(part for part in (catalog, schema, name) if part)
        raise QueryError(f"Unknown table {qualified!r}; tables you can use: {', '.join(sorted(relations))}")


def _check_show(node: dict[str, Any]) -> None:
    show_type = node.get("show_type")
    if show_type in ("DESCRIBE", "SUMMARY"):
        return
    if show_type == "SHOW_SPECIAL" and str(node.get("table_name", "")).strip('"').lower() == "tables":
        return
    if show_type == "SHOW_FROM":
        schema = ".".join(p for p in (node.get("catalog_name"), node.get("schema_name")) if p)
        what = f"SHOW TABLES FROM {schema}"
    elif str(node.get("table_name", "")) == "__show_tables_expanded":
        what = "SHOW ALL TABLES"
    else:
        path = node.get("qualified_name", {}).get("path", [])
        what = f"SHOW {node.get('table_name') or ' '.join(map(str, path))}"
    raise QueryRefused(
        f"{what.strip()} is not allowed: the sandbox shows only its own tables; use SHOW TABLES or DESCRIBE"
    )
