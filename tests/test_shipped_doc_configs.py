"""The configuration files the documentation tells users to use ship in configs/ and load with their typed
configs, and the links into benchmarks/README.md (where the measured results live) land on a section.

Training configs (configs/*.yaml) are loaded by tests/train/test_shipped_configs.py; here: every `configs/...`
path named in README.md, docs/*.md and benchmarks/README.md exists, the gateway and monitoring files validate
with their pydantic models, a YAML block a guide shows as the content of a shipped file is that file's
content, and each benchmark script has its place in benchmarks/README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from radiolens.gateway.config import GatewayConfig
from radiolens.monitor.config import MonitorConfig, load_monitor_config

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), BENCHMARKS_README]
CONFIG_PATH = re.compile(r"configs/[\w./-]+\.ya?ml")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _named_configs() -> list[tuple[str, str]]:
    return sorted({(path.relative_to(ROOT).as_posix(), m.group(0))
                   for path in DOCS for m in CONFIG_PATH.finditer(path.read_text(encoding="utf-8"))})


NAMED = _named_configs()


def test_the_docs_name_shipped_configs():
    named = {config for _, config in NAMED}
    # the training configs, the trust configs and the two service configs are all referred to
    assert {"configs/pneumoniamnist.yaml", "configs/nih_binary.yaml", "configs/kermany64.yaml",
            "configs/gateway/gateway.yaml", "configs/monitor/monitor.yaml"} <= named


@pytest.mark.parametrize(("doc", "config"), NAMED, ids=[f"{d}:{c}" for d, c in NAMED])
def test_every_config_the_docs_name_exists(doc, config):
    assert (ROOT / config).is_file(), f"{doc} names {config}, which configs/ does not ship"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "gateway").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_gateway_config_validates(path):
    cfg = GatewayConfig.load(path)
    # the example returns results to a named PACS: the peer it names must be addressable
    assert cfg.destination.kind != "peer" or cfg.peers[cfg.destination.peer].addressable


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "monitor").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_monitor_config_validates(path):
    assert isinstance(load_monitor_config(path), MonitorConfig)


def test_shipped_monitor_config_spells_out_the_defaults():
    """Its header says the values are the defaults; that stays true when a default changes."""
    shipped = yaml.safe_load((ROOT / "configs" / "monitor" / "monitor.yaml").read_text())
    assert set(shipped) == {"gate", "drift"}
    assert set(shipped["gate"]) == set(MonitorConfig.model_fields["gate"].annotation.model_fields)
    assert set(shipped["drift"]) == set(MonitorConfig.model_fields["drift"].annotation.model_fields)
    assert load_monitor_config(ROOT / "configs" / "monitor" / "monitor.yaml") == MonitorConfig()


def _yaml_blocks_of_shipped_files() -> list[tuple[str, str, str]]:
    """(where, shipped file, block text) for each ```yaml block whose lead-in (the 3 lines before it) names a
    shipped configs/ file."""
    found = []
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```yaml":
                end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
                named = CONFIG_PATH.findall("\n".join(lines[max(0, i - 3):i]))
                if named:
                    found.append((f"{path.relative_to(ROOT)}:{i + 1}", named[-1], "\n".join(lines[i + 1:end])))
                i = end
            i += 1
    return found


BLOCKS = _yaml_blocks_of_shipped_files()


def test_a_guide_shows_a_shipped_config():
    assert any(config == "configs/gateway/gateway.yaml" for _, config, _ in BLOCKS)


@pytest.mark.parametrize(("where", "config", "block"), BLOCKS, ids=[w for w, _, _ in BLOCKS])
def test_yaml_shown_in_a_guide_is_the_shipped_file(where, config, block):
    assert yaml.safe_load(block) == yaml.safe_load((ROOT / config).read_text()), (
        f"{where}: the YAML shown differs from {config}")


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = heading.strip().lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_links_into_benchmarks_readme_land_on_a_section():
    anchors = {_slug(line) for line in BENCHMARKS_README.read_text().splitlines() if line.startswith("#")}
    checked = 0
    for path in DOCS:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path.resolve()
            if resolved != BENCHMARKS_README.resolve() or not anchor:
                continue
            checked += 1
            assert anchor in anchors, f"{path.relative_to(ROOT)}: #{anchor} is no heading of benchmarks/README.md"
    assert checked >= 10


def test_relative_links_of_the_benchmarks_readme_exist():
    for target in LINK.findall(BENCHMARKS_README.read_text()):
        file = target.partition("#")[0]
        if file and not re.match(r"https?:", file):
            assert (BENCHMARKS_README.parent / file).exists(), f"benchmarks/README.md links to missing {file}"


def test_every_benchmark_script_has_its_place_in_benchmarks_readme():
    text = BENCHMARKS_README.read_text()
    scripts = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py")) if not p.name.startswith("_")]
    missing = [name for name in scripts if f"benchmarks/{name}" not in text]
    assert not missing, f"benchmarks/README.md does not describe {missing}"
