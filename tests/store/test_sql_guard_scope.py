"""The statement guard resolves names by scope, as DuckDB's binder does, on a real sandbox over a real lake.

A CTE name shadows a catalog object only where the CTE is visible; anywhere else the name is DuckDB's own
(``pg_settings`` lists every setting: the lake's absolute path, the allowed files, the temp folder), so it
must be refused.  Built-in macros whose body reads the catalog are refused, and nesting deeper than the
guard can check is a clear refusal, never a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from lake_rows import state_rows

from store.errors import QueryError, QueryRefused
from store.lake import Lake
from store.sandbox import Sandbox, SandboxLimits

LIMITS = SandboxLimits(memory_limit="256MB", threads=2, timeout_s=5.0, max_rows=1000, max_temp_size="64MB")
SHADOW = "(WITH pg_settings AS (SELECT 'x' AS name, 'y' AS setting) SELECT * FROM pg_settings)"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("guard")
    lake = Lake(root / "lake")
    lake.ensure_tables()
    lake.append("state", state_rows([1, 2, 3], device="shuttle-01"))
    with Sandbox(lake, replace(LIMITS, temp_dir=root / "sandbox-tmp")) as box:
        yield box


def rows(sandbox: Sandbox, sql: str) -> list[dict[str, Any]]:
    with sandbox.query(sql) as result:
        return list(result.fetch_all().to_pylist())


#: A catalog name used where the CTE that shadows it is not visible, in every position a name can stand.
OUT_OF_SCOPE = {
    "FROM list, CTE in a sibling subquery": f"SELECT name, setting FROM pg_settings, {SHADOW} s",
    "the issue's own query": "SELECT name, setting FROM pg_settings, "
    "(WITH pg_settings AS (SELECT 1) FROM pg_settings)",
    "join": f"SELECT p.name FROM state JOIN pg_settings p ON true JOIN {SHADOW} s ON true",
    "scalar subquery": (
        f"SELECT (SELECT max(setting) FROM pg_settings) AS v, (SELECT count(*) FROM {SHADOW}) AS n"
    ),
    "IN and EXISTS": f"SELECT 1 AS v WHERE 'x' IN (SELECT setting FROM pg_settings) AND EXISTS {SHADOW}",
    "lateral": f"SELECT u.setting FROM {SHADOW} t, LATERAL (SELECT setting FROM pg_settings) u",
    "UNION, shadowed on the left": f"{SHADOW} UNION ALL SELECT name, setting FROM pg_settings",
    "UNION, shadowed on the right": f"SELECT name, setting FROM pg_settings UNION ALL {SHADOW}",
    "INTERSECT / EXCEPT": f"SELECT name, setting FROM pg_settings EXCEPT {SHADOW}",
    "its own non-recursive definition": "WITH pg_settings AS (SELECT * FROM pg_settings) FROM pg_settings",
    "an earlier CTE of the same WITH": (
        "WITH a AS (SELECT * FROM pg_settings), pg_settings AS (SELECT 1) FROM a"
    ),
    "a CTE defined inside another CTE": (
        "WITH a AS (WITH pg_settings AS (SELECT 1) SELECT 1) FROM a, pg_settings"
    ),
    "recursive CTE's anchor": "WITH RECURSIVE pg_settings(n) AS (SELECT count(*) FROM pg_settings "
    "UNION ALL SELECT n + 1 FROM pg_settings WHERE n < 2) FROM pg_settings",
    "recursive CTE in a subquery": "SELECT * FROM duckdb_settings, (WITH RECURSIVE duckdb_settings(n) AS "
    "(SELECT 1 UNION ALL SELECT n + 1 FROM duckdb_settings WHERE n < 2) FROM duckdb_settings) r",
    "ORDER BY subquery": f"SELECT 1 AS a FROM {SHADOW} ORDER BY (SELECT count(*) FROM pg_settings)",
    "PIVOT source": f"SELECT * FROM {SHADOW} s, (PIVOT pg_settings ON name IN ('x') USING first(setting)) p",
    "SUMMARIZE": "SUMMARIZE pg_settings",
    "DESCRIBE": "DESCRIBE pg_settings",
    "lambda body": f"SELECT list_transform([1], x -> (SELECT count(*) FROM pg_settings)) FROM {SHADOW} s",
}


@pytest.mark.parametrize("sql", OUT_OF_SCOPE.values(), ids=OUT_OF_SCOPE.keys())
def test_a_cte_shadows_a_catalog_name_only_where_it_is_visible(sandbox: Sandbox, sql: str) -> None:
    with pytest.raises(QueryError) as refused:
        rows(sandbox, sql)
    assert "tables you can use" in str(refused.value)
    assert sandbox.lake.root not in str(refused.value)


#: Catalog objects under their own names, qualified or not.
CATALOG_OBJECTS = [
    "information_schema.tables",
    "information_schema.columns",
    "information_schema.schemata",
    "pg_catalog.pg_settings",
    "pg_catalog.pg_class",
    "pg_class",
    "pg_namespace",
    "pg_settings",
    "duckdb_settings",
    "duckdb_views",
    "sqlite_master",
    "system.main.duckdb_settings",
]


@pytest.mark.parametrize("name", CATALOG_OBJECTS)
def test_information_schema_and_pg_catalog_objects_are_unknown_tables(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(QueryError, match="tables you can use"):
        rows(sandbox, f"SELECT * FROM {name}")
    last = name.rsplit(".", 1)[-1]
    with pytest.raises(
        QueryError, match="tables you can use"
    ):  # a CTE of that name elsewhere changes nothing
        rows(sandbox, f"SELECT * FROM {name}, (WITH {last} AS (SELECT 1 AS x) FROM {last}) s")


CATALOG_MACROS = {
    "pg_get_viewdef": "SELECT pg_get_viewdef(oid) AS v FROM (SELECT 1 AS oid)",
    "get_block_size": "SELECT get_block_size('memory') AS v",
    "pg_get_constraintdef": "SELECT pg_get_constraintdef(1) AS v",
    "format_type": "SELECT format_type(1, 1) AS v",
    "in a lambda": "SELECT list_transform([1], x -> pg_get_viewdef(x)) AS v",
    "in a CTE": "WITH a AS (SELECT get_block_size('memory') AS v) FROM a",
}


@pytest.mark.parametrize("sql", CATALOG_MACROS.values(), ids=CATALOG_MACROS.keys())
def test_macros_that_read_the_catalog_are_refused(sandbox: Sandbox, sql: str) -> None:
    with pytest.raises(QueryRefused, match="reads DuckDB's catalog or settings"):
        rows(sandbox, sql)


def test_qualified_catalog_macros_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(QueryRefused, match=r"pg_get_viewdef\(\) is not allowed"):
        rows(sandbox, "SELECT pg_catalog.pg_get_viewdef(1) AS v")


#: Legitimate CTE use, where the name is visible, still works and reads the CTE, not the catalog.
IN_SCOPE = {
    "shadowing CTE": (f"SELECT * FROM {SHADOW} s", [{"name": "x", "setting": "y"}]),
    "later CTE reads an earlier one": (
        "WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 AS x FROM a) SELECT x FROM b",
        [{"x": 2}],
    ),
    "CTE in a subquery, a join and a lateral": (
        "WITH a AS (SELECT 1 AS x) SELECT s.x, l.y FROM (SELECT x FROM a) s "
        "JOIN a ON a.x = s.x, LATERAL (SELECT x + s.x AS y FROM a) l",
        [{"x": 1, "y": 2}],
    ),
    "CTE over a set operation": (
        "WITH pg_settings AS (SELECT 1 AS x) SELECT x FROM pg_settings UNION ALL SELECT x FROM pg_settings",
        [{"x": 1}, {"x": 1}],
    ),
    "CTE in a scalar subquery": ("WITH a AS (SELECT 2 AS x) SELECT (SELECT x FROM a) AS y", [{"y": 2}]),
    "recursive CTE": (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT count(*) AS c FROM r",
        [{"c": 3}],
    ),
    "views and CTE together": (
        "WITH s AS (SELECT device_id FROM state) SELECT count(*) AS n FROM s JOIN state USING (device_id)",
        [{"n": 9}],
    ),
}


@pytest.mark.parametrize(("sql", "want"), IN_SCOPE.values(), ids=IN_SCOPE.keys())
def test_ctes_where_they_are_visible_still_work(
    sandbox: Sandbox, sql: str, want: list[dict[str, Any]]
) -> None:
    assert rows(sandbox, sql) == want


def test_the_settings_and_the_lake_path_never_come_back(sandbox: Sandbox) -> None:
    """The functions and macros that are allowed return nothing of the host."""
    row = rows(
        sandbox,
        "SELECT current_user AS u, current_database() AS d, current_schema() AS s, version() AS v",
    )[0]
    for value in row.values():
        assert sandbox.lake.root not in str(value) and "/" not in str(value)
    for sql in (
        "SELECT current_setting('temp_directory')",
        "SELECT getenv('HOME')",
        # binds SQL the guard never sees, and the optimizer folds the setting into the plan it returns
        "SELECT json_serialize_plan('SELECT current_setting(''allowed_paths'') AS x', optimize := true)",
    ):
        with pytest.raises(QueryRefused):
            rows(sandbox, sql)


def _nested_subqueries(depth: int) -> str:
    sql = "SELECT 1 AS x"
    for level in range(depth):
        sql = f"SELECT * FROM ({sql}) t{level}"
    return sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT " + "abs(" * 450 + "1" + ")" * 450,
        "SELECT " + "abs(" * 999 + "1" + ")" * 999,
        _nested_subqueries(600),
    ],
    ids=["abs 450 deep", "abs 999 deep", "600 nested subqueries"],
)
def test_deep_nesting_is_a_clear_refusal(sandbox: Sandbox, sql: str) -> None:
    with pytest.raises(QueryRefused, match="nested too deeply"):
        rows(sandbox, sql)


def test_moderate_nesting_runs(sandbox: Sandbox) -> None:
    assert rows(sandbox, "SELECT " + "abs(" * 100 + "-1" + ")" * 100 + " AS v") == [{"v": 1}]
    assert rows(sandbox, _nested_subqueries(100)) == [{"x": 1}]


def test_unsafe_macros_are_asked_of_duckdb() -> None:
    """The list is computed from ``duckdb_functions()``, not written by hand."""
    from store._sql_guard import _unsafe_macros

    found = _unsafe_macros()
    assert {"pg_get_viewdef", "get_block_size", "pg_get_constraintdef", "format_type"} <= found
    assert not {"nullif", "current_user", "list_sum", "current_database"} & found


def test_the_parser_depth_error_advises_what_the_sandbox_allows(sandbox: Sandbox) -> None:
    with pytest.raises(QueryError) as caught:
        rows(sandbox, "SELECT " + "(" * 5000 + "1" + ")" * 5000)
    message = str(caught.value)
    assert "Max expression depth" in message and "CTEs" in message
    assert "SET max_expression_depth" not in message  # SET is refused in the sandbox


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("SHOW TABLES FROM pg_catalog", "SHOW TABLES FROM pg_catalog is not allowed"),
        ("SHOW ALL TABLES", "SHOW ALL TABLES is not allowed"),
        ("SHOW memory_limit", "SHOW memory_limit is not allowed"),
    ],
)
def test_a_refused_show_names_what_was_shown(sandbox: Sandbox, sql: str, named: str) -> None:
    with pytest.raises(QueryRefused) as caught:
        rows(sandbox, sql)
    assert str(caught.value).startswith(named) and "SHOW TABLES" in str(caught.value)
