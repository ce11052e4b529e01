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
    "settings": 1,
    "io": 2,
    "data": 3,
    "models": 4,
    "train": 5, "evaluate": 5, "explain": 5,
    "monitor": 6,
    "pipeline": 7,
    "predict": 8,
    "serve": 9,
    "_cli": 10,
    "cli": 11,
}
ROOT = Path(radiolens.__file__).parent


def _top(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    return rel[0].removesuffix(".py")


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "radiolens":
                out += [(node.lineno, a.name) for a in node.names]
            elif node.module.startswith("radiolens."):
                out.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("radiolens.")]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
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
            if name not in LAYERS or LAYERS[name] >= LAYERS[top]:
                bad.append(f"{path.relative_to(ROOT)}:{line} {top} (layer {LAYERS[top]}) imports {name} "
                           f"(layer {LAYERS.get(name, '?')})")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    tree = ast.parse("def f():\n    from radiolens.serve.app import create_app\n")
    assert _imported(tree) == [(2, "serve")] and LAYERS["serve"] > LAYERS["io"]
