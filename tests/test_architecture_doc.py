"""docs/architecture.md is the map of the package: its layer tables must be the ones tests/test_layers.py enforces,
and every module or object it names in code spans must exist, so the map cannot drift from the code."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from tests.test_layers import LAYERS, SERVE_LAYERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|")


def _tables() -> tuple[dict[str, int], dict[str, int]]:
    """(top-level table, serve table) as {name: level}, read from the doc's two level tables."""
    tables: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            if current is None:
                current = {}
                tables.append(current)
            for name in re.findall(r"`([^`]+)`", m.group(2)):
                current[name.strip("/").removeprefix("serve/")] = int(m.group(1))
        elif not line.startswith("|"):
            current = None
    assert len(tables) >= 2, "docs/architecture.md lost one of its level tables"
    return tables[0], tables[1]


def test_the_documented_layers_are_the_enforced_ones():
    top, serve = _tables()
    enforced = {k: v for k, v in LAYERS.items() if k != "__init__"}
    assert top == enforced
    assert serve == {k: v for k, v in SERVE_LAYERS.items() if k != "__init__"}


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_named_module_and_object_exists():
    text = DOC.read_text(encoding="utf-8")
    names = set()
    for span in re.findall(r"`([^`\s]+)`", text):
        span = span.removesuffix("()").split("(")[0]
        if re.fullmatch(r"(radiolens\.)?[a-z_]+(\.[A-Za-z_][A-Za-z0-9_]*)+", span) and not span.startswith("app."):
            names.add(span if span.startswith("radiolens.") else f"radiolens.{span}")
    missing = sorted(n for n in names if not _resolves(n))
    assert len(names) > 12
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"
    for path in re.findall(r"`((?:tests|src)/[\w/.]+\.py|[a-z_]+/[a-z_]+\.py)`", text):
        candidates = [DOC.parents[1] / path, DOC.parents[1] / "src" / "radiolens" / path]
        assert any(c.exists() for c in candidates), path
