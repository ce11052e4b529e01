"""``-h`` is ``--help`` on every command and subcommand, and shell completion completes command names and
option choices (the Click completion protocol that ``radiolens --install-completion`` wires into a shell)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from radiolens.cli import app

runner = CliRunner()


def _commands(group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if hasattr(cmd, "commands"):
            out += _commands(cmd, (*prefix, name))
    return out


ALL = _commands(typer.main.get_command(app))


def test_every_command_is_reachable():
    assert len(ALL) > 20 and ("train",) in ALL and ("db", "backup") in ALL


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_dash_h_is_help_everywhere(path):
    short = runner.invoke(app, [*path, "-h"])
    long = runner.invoke(app, [*path, "--help"])
    assert short.exit_code == 0 and long.exit_code == 0, short.output
    assert short.output == long.output and "Usage:" in short.output


def _complete(words: str, cword: int) -> list[str]:
    result = runner.invoke(app, [], prog_name="radiolens",
                           env={"_RADIOLENS_COMPLETE": "complete_bash", "COMP_WORDS": words,
                                "COMP_CWORD": str(cword)})
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_completion_of_commands_and_choices():
    assert "train" in _complete("radiolens tr", 1) and "predict" not in _complete("radiolens tr", 1)
    assert {"evaluate", "explain", "export"} <= set(_complete("radiolens e", 1))
    # an enum option completes to its choices
    assert set(_complete("radiolens serve --log-level ", 3)) >= {"debug", "info", "warning"}


def test_completion_install_is_offered():
    out = runner.invoke(app, ["--help"]).output
    assert "--install-completion" in out and "--show-completion" in out
