"""Data flows one way (STYLE.md): ``ingest -> store <- api``, ``store <- publish``; ``corridorhub`` wires.

* ``store/`` imports none of ``ingest``, ``api``, ``publish``, ``corridorhub``;
* ``ingest/``, ``api/``, ``publish/`` never import each other, nor ``corridorhub``;
* nobody imports ``corridorhub`` except ``corridorhub`` itself and the tests.

Every ``.py`` file under those packages is parsed (never imported) and each ``import x``,
``from x import y`` and relative ``from . import y`` is resolved to the top-level package it names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("store", "ingest", "api", "publish", "corridorhub")

FORBIDDEN: dict[str, frozenset[str]] = {
    "store": frozenset({"ingest", "api", "publish", "corridorhub"}),
    "ingest": frozenset({"api", "publish", "corridorhub"}),
    "api": frozenset({"ingest", "publish", "corridorhub"}),
    "publish": frozenset({"ingest", "api", "corridorhub"}),
    "corridorhub": frozenset(),
}


@dataclass(frozen=True)
class WrongArrow:
    path: str
    line: int
    importer: str
    imported: str
    statement: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} -> {self.imported}  ({self.statement})"


def module_name(path: Path, root: Path) -> str:
    """``ingest/session.py`` -> ``ingest.session``; ``ingest/__init__.py`` -> ``ingest``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, *, is_package: bool) -> list[tuple[int, str, str]]:
    """(line, absolute module name, statement text) for every import in ``source``."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            names = ", ".join(a.name for a in node.names)
            text = f"from {'.' * node.level}{node.module or ''} import {names}"
            if not node.level:
                found.append((node.lineno, node.module or "", text))
                continue
            base = package.split(".") if package else []
            base = base[: max(len(base) - (node.level - 1), 0)]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module]), text))
            else:  # ``from .. import x``: each name is a module of the package climbed to
                found += [(node.lineno, ".".join([*base, a.name]), text) for a in node.names]
    return sorted(found)


def wrong_arrows(source: str, path: str, module: str, *, is_package: bool = False) -> list[WrongArrow]:
    importer = module.split(".")[0]
    forbidden = FORBIDDEN.get(importer, frozenset())
    out: list[WrongArrow] = []
    for line, target, text in imported_modules(source, module, is_package=is_package):
        imported = target.split(".")[0]
        if imported in forbidden:
            out.append(WrongArrow(path, line, importer, imported, text))
    return out


def package_files() -> list[Path]:
    files: list[Path] = []
    for package in PACKAGES:
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def test_imports_follow_the_one_way_data_flow() -> None:
    files = package_files()
    assert len(files) > 10, f"expected the packages {PACKAGES} under {ROOT}"
    wrong: list[WrongArrow] = []
    for path in files:
        wrong += wrong_arrows(
            path.read_text(encoding="utf-8"),
            str(path.relative_to(ROOT)),
            module_name(path, ROOT),
            is_package=path.name == "__init__.py",
        )
    assert not wrong, "imports against the one-way data flow (STYLE.md):\n" + "\n".join(map(str, wrong))


NOT_SOURCE = frozenset({"corridorhub", "tests", "build", "dist", "data", "node_modules"})


def test_nothing_outside_the_composition_root_and_tests_imports_corridorhub() -> None:
    """Top-level scripts and packages other than the five (e.g. a future ``tools/``) count too."""
    wrong: list[WrongArrow] = []
    for path in sorted([*ROOT.glob("*.py"), *ROOT.glob("*/**/*.py")]):
        relative = path.relative_to(ROOT)
        top = relative.parts[0]
        if top in NOT_SOURCE or top.startswith(".") or top.endswith(".egg-info"):
            continue
        module = module_name(path, ROOT)
        for line, target, text in imported_modules(
            path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
        ):
            if target.split(".")[0] == "corridorhub":
                wrong.append(WrongArrow(str(relative), line, top, "corridorhub", text))
    assert not wrong, "only tests may import corridorhub:\n" + "\n".join(map(str, wrong))


def test_the_checker_catches_every_kind_of_wrong_arrow() -> None:
    source = "\n".join(
        [
            "import os",
            "import ingest.session",  # 2: absolute import
            "from api import app",  # 3: from-import
            "from corridorhub.config import load_settings",  # 4: the composition root
            "from store.schema import STREAMS",  # fine: store is the base layer
            "def later():",
            "    import publish.export as export",  # 7: nested, aliased
            "    from . import lake",  # fine: store.lake
            "from .. import ingest",  # 9: relative, resolves to the top level
        ]
    )
    wrong = wrong_arrows(source, "store/example.py", "store.example")
    assert [(w.line, w.imported) for w in wrong] == [
        (2, "ingest"),
        (3, "api"),
        (4, "corridorhub"),
        (7, "publish"),
        (9, "ingest"),
    ]
    assert "store/example.py:3: store -> api  (from api import app)" in map(str, wrong)


def test_the_checker_resolves_relative_imports_between_siblings() -> None:
    # Inside ingest/, ``from ..api import x`` climbs out of ingest into api: a wrong arrow.
    wrong = wrong_arrows("from ..api import routes\nfrom . import decode\n", "ingest/x.py", "ingest.x")
    assert [(w.line, w.imported) for w in wrong] == [(1, "api")]
    # In a package's __init__, ``from . import x`` is the package itself.
    assert wrong_arrows("from . import session\n", "ingest/__init__.py", "ingest", is_package=True) == []
    # Sibling layers must not reach each other, nor the composition root.
    assert [w.imported for w in wrong_arrows("import publish\n", "api/a.py", "api.a")] == ["publish"]
    assert [w.imported for w in wrong_arrows("import corridorhub\n", "publish/p.py", "publish.p")] == [
        "corridorhub"
    ]
    # The composition root may import everything.
    assert wrong_arrows("import ingest, api, publish, store\n", "corridorhub/c.py", "corridorhub.c") == []
