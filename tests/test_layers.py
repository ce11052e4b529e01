"""The pipeline's one-way data flow, checked on the source: a package only imports packages below it.

Written as an AST walk (no import-linter dependency) because the rule is one table; every ``import`` and
``from ... import`` of ``radiolens.*`` anywhere in a module counts, including the lazy ones inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import radiolens

#: Lower number = lower layer. Packages on one level must not import each other either.
LAYERS = {
    "__init__": 0, "errors": 0,
    "settings": 1, "progress": 1,
    "io": 2,
    "data": 3,
    "models": 4,
    "evaluate": 5,
    # a training job ends in an evaluated bundle, and triage / subgroup audits score with the evaluator's
    # operating points and figures: both sit above evaluate
    "train": 6, "explain": 6,
    "monitor": 7,
    # the one prediction path: every driver above it (predict, serve, and those to come) calls it
    "pipeline": 8,
    # drivers over the pipeline: batch scoring, and the in-process Python API (radiolens.load_model)
    "predict": 9, "python_api": 9,
    "serve": 10,
    "gateway": 11,
    "_cli": 12,
    "cli": 13,
}
ROOT = Path(radiolens.__file__).parent
#: The package's own ``__init__`` is level 0 (every module may read ``__version__``) but re-exports the Python
#: API and the record types (``radiolens.load_model``): only these, imported on first use (PEP 562), so that
#: ``import radiolens`` loads nothing above it (``tests/test_python_api.py`` checks that torch stays out).
INIT_REEXPORTS = {"python_api", "pipeline"}


def _top(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imported(tree: ast.AST, package: str = "radiolens") -> list[tuple[int, str]]:
    """(line, part of ``package``) for every import of ``<package>.<part>``, lazy ones included; a relative
    import is "<relative>" (only checked for the top level)."""
    depth = package.count(".") + 1
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == package:
                out += [(node.lineno, a.name) for a in node.names]
            elif node.module.startswith(package + "."):
                out.append((node.lineno, node.module.split(".")[depth]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[depth]) for a in node.names if a.name.startswith(package + ".")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and package == "radiolens":
            out.append((node.lineno, "<relative>"))
    return out


def test_every_package_is_in_the_layer_table():
    tops = {_top(p) for p in ROOT.rglob("*.py")}
    assert tops <= set(LAYERS), f"add to LAYERS: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_a_higher_or_sibling_layer():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        top = _top(path)
        for line, name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            if name == "<relative>":
                bad.append(f"{path.relative_to(ROOT)}:{line} relative import (use radiolens.<package>)")
                continue
            if name == top or name == "__version__":
                continue
            if path == ROOT / "__init__.py" and name in INIT_REEXPORTS:
                continue
            if name not in LAYERS or LAYERS[name] >= LAYERS[top]:
                bad.append(f"{path.relative_to(ROOT)}:{line} {top} (layer {LAYERS[top]}) imports {name} "
                           f"(layer {LAYERS.get(name, '?')})")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    tree = ast.parse("def f():\n    from radiolens.serve.http.app import create_app\n")
    assert _imported(tree) == [(2, "serve")] and LAYERS["serve"] > LAYERS["io"]


#: Inside ``serve``, the same rule one level down. ``config`` (the settings) and ``params`` (bounded ids and
#: times, used by the store, the service and the routers alike) sit below the three sub-packages.
SERVE_LAYERS = {
    "config": 0, "params": 0,
    "store": 1,  # database, tables, migrations, audit chain, API keys, state folder, DICOM spool
    "runtime": 2,  # the service's life cycle, ingest, inference, hooks, pool, metrics, monitoring
    "http": 3,  # app, routers, schemas, middleware, viewer, server
}
SERVE = ROOT / "serve"


def _serve_part(path: Path) -> str:
    return path.relative_to(SERVE).parts[0].removesuffix(".py")


def _serve_imported(tree: ast.AST) -> list[tuple[int, str]]:
    return _imported(tree, "radiolens.serve")


def _serve_violations(part: str, tree: ast.AST) -> list[tuple[int, str]]:
    return [(line, name) for line, name in _serve_imported(tree)
            if name != part and (name not in SERVE_LAYERS or SERVE_LAYERS[name] >= SERVE_LAYERS[part])]


def test_every_serve_module_is_in_the_serve_table():
    parts = {_serve_part(p) for p in SERVE.rglob("*.py")} - {"__init__"}
    assert parts <= set(SERVE_LAYERS), f"add to SERVE_LAYERS: {sorted(parts - set(SERVE_LAYERS))}"


def test_store_runtime_http_import_only_downwards():
    """``store`` imports neither ``runtime`` nor ``http``; ``runtime`` does not import ``http``."""
    bad = []
    for path in sorted(SERVE.rglob("*.py")):
        if path == SERVE / "__init__.py":
            continue  # the package's front door, checked below
        part = _serve_part(path)
        for line, name in _serve_violations(part, ast.parse(path.read_text(encoding="utf-8"))):
            bad.append(f"serve/{path.relative_to(SERVE)}:{line} {part} (level {SERVE_LAYERS[part]}) imports "
                       f"serve.{name} (level {SERVE_LAYERS.get(name, '?')})")
    assert not bad, "\n".join(bad)


def test_the_serve_check_sees_a_violation():
    tree = ast.parse("def f():\n    from radiolens.serve.http.app import create_app\n"
                     "from radiolens.serve import service\nimport radiolens.serve.store.db\n")
    assert _serve_imported(tree) == [(3, "service"), (4, "store"), (2, "http")]
    assert _serve_violations("store", tree) == [(3, "service"), (2, "http")]
    assert _serve_violations("runtime", tree) == [(3, "service"), (2, "http")]  # "service" is no part name
    assert _serve_violations("http", tree) == [(3, "service")]


def test_serve_init_modules_stay_minimal():
    """``import radiolens.serve`` (or one sub-package) loads the settings and nothing else: the CLI's db/users/audit
    commands import ``serve.store`` without FastAPI, torch or a model."""
    init = ast.parse((SERVE / "__init__.py").read_text(encoding="utf-8"))
    assert [n.module for n in init.body if isinstance(n, (ast.Import, ast.ImportFrom))] == ["radiolens.serve.config"]
    assert {name for _, name in _serve_imported(init)} == {"config", "http"}  # create_app: a lazy import
    assert {type(n) for n in init.body} <= {ast.Expr, ast.ImportFrom, ast.Assign, ast.FunctionDef}
    for sub in ("store", "runtime", "http"):
        body = ast.parse((SERVE / sub / "__init__.py").read_text(encoding="utf-8")).body
        assert len(body) == 1 and isinstance(body[0], ast.Expr), f"serve/{sub}/__init__.py holds a docstring only"


def test_the_package_init_reexports_lazily():
    """``radiolens/__init__.py`` imports nothing of radiolens when it runs (only for type checkers), and what it
    re-exports on first use comes from the modules the layer rule allows it."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    eager = [n.lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)
             and any(name.startswith("radiolens") for name in
                     ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]))]
    assert not eager, f"radiolens/__init__.py imports radiolens modules eagerly at lines {eager}"
    assert {module.split(".")[1] for module in radiolens._EXPORTS.values()} <= INIT_REEXPORTS
