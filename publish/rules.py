"""The schema's publish rules, applied to a dataset's output columns.

Each output column of an aggregate dataset declares where it comes from (``Derivation``: a use and the
lake columns it reads).  A use is allowed only for lake columns whose ``Publish`` rule in ``store.schema``
permits it; a column with any other rule (``DROP``, ``DOMINANCE_ONLY``, ``PSEUDONYMIZE``...) cannot reach an
aggregate dataset, and an output column without a derivation cannot be published at all.
"""

from __future__ import annotations

from collections.abc import Mapping

from publish._registry import Derivation, Use
from publish.errors import UnsafeColumn
from publish.model import DatasetSpec
from store.schema import SCHEMAS, STREAMS, Publish

ALLOWED: Mapping[Use, frozenset[Publish]] = {
    Use.AS_IS: frozenset({Publish.DIMENSION}),
    Use.TIME_BUCKET: frozenset({Publish.COARSEN_TIME}),
    Use.SPACE_CELL: frozenset({Publish.COARSEN_SPACE, Publish.DIMENSION}),
    Use.STATISTIC: frozenset({Publish.AGGREGATE, Publish.DIMENSION}),
    Use.TRAVEL: frozenset({Publish.COARSEN_SPACE, Publish.COARSEN_TIME}),
    Use.COUNT_DISTINCT: frozenset({Publish.COUNT_DISTINCT}),
    Use.COUNT: frozenset(),
}


def rule_of(source: str) -> Publish:
    """The publish rule of ``table.column``."""
    table, _, column = source.partition(".")
    try:
        return SCHEMAS[table][column].publish
    except KeyError:
        raise UnsafeColumn(f"{source!r} is not a column of the lake schema (store/schema.py)") from None


def derivation_problems(spec: DatasetSpec, derivations: Mapping[str, Derivation]) -> list[str]:
    """One line per output column that has no derivation or derives from a column its rule forbids."""
    problems = []
    for column in spec.columns:
        derivation = derivations.get(column.name)
        if derivation is None:
            problems.append(f"column {column.name!r} of {spec.id} has no declared derivation")
            continue
        for use, sources in derivation.parts:
            if use is Use.COUNT and sources:
                problems.append(f"column {column.name!r} of {spec.id} counts rows but names source columns")
            for source in sources:
                rule = rule_of(source)
                if rule not in ALLOWED[use]:
                    problems.append(
                        f"column {column.name!r} of {spec.id} uses {source} as {use.value}, "
                        f"but its publish rule is {rule.value}"
                    )
    for extra in sorted(set(derivations) - {c.name for c in spec.columns}):
        problems.append(f"derivation for {extra!r}, which is not a column of {spec.id}")
    return problems


def check_derivations(spec: DatasetSpec, derivations: Mapping[str, Derivation]) -> None:
    problems = derivation_problems(spec, derivations)
    if problems:
        raise UnsafeColumn("; ".join(problems))


def raw_lake_columns() -> frozenset[str]:
    """Names of lake columns that must never appear as they are in an aggregate dataset.

    Every stream column except the ``DIMENSION`` ones (few-valued enums such as ``kind`` or ``zone``).
    """
    return frozenset(
        c.name for name in STREAMS for c in SCHEMAS[name].columns if c.publish is not Publish.DIMENSION
    )
