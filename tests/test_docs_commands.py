"""Every `radiolens ...` command written in README.md, docs/*.md and benchmarks/README.md is checked against the
real CLI parser, so the documentation cannot drift from the commands.

What is checked, and how far:

- Shell code blocks (```bash / sh / console, and unlabelled blocks): each command line (continuations joined,
  ``# comments``, env assignments, pipes and redirections handled by ``shlex``) is parsed with Click's own parser,
  ``make_context`` on the resolved (sub)command with resilient parsing off: every subcommand and option must
  exist, choices and numbers must be valid, required options present, option callbacks run. This is a
  **parse-only** check: the commands need models, manifests and images that the docs name as examples, so they
  are not executed. The one parse error accepted is a path option's "does not exist" (the example file).
- Usage synopses in blocks (``radiolens deid IN... OUT [--shift-dates]``) and inline code spans in prose
  (`` `radiolens predict` ``, `` `radiolens export ... --split val` ``, `` `radiolens monitor status|report` ``)
  are fragments: for them the subcommand path and every option name must exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from radiolens.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console", "zsh"}
FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
INLINE = re.compile(r"`(radiolens(?: [^`]*)?)`")
COMMAND_ENDS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "<", "&"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _doc_commands() -> list[tuple[str, str, str]]:
    """(``file:line``, command text, kind) for every radiolens command: kind "block" or "fragment"."""
    found = []
    for path in DOCS:
        in_block, lang, buf, start = False, "", "", 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fence = FENCE.match(line)
            if fence:
                in_block, lang = (not in_block), fence.group(1).lower()
                continue
            where = f"{path.relative_to(ROOT)}:{number}"
            if in_block:
                if lang not in SHELL_BLOCKS:
                    continue
                if not buf:
                    start = number
                if line.rstrip().endswith("\\"):
                    buf += line.rstrip()[:-1] + " "
                    continue
                text, buf = buf + line, ""
                for cmd in _shell_commands(text):
                    synopsis = any(t.startswith("[") or t.endswith("...") or t.endswith("]") for t in cmd)
                    found.append((f"{path.relative_to(ROOT)}:{start}", shlex.join(cmd),
                                  "fragment" if synopsis else "block"))
            else:
                for m in INLINE.finditer(line):
                    found.append((where, m.group(1), "fragment"))
    return found


def _shell_commands(text: str) -> list[list[str]]:
    """The radiolens invocations on one (joined) shell line, as argument lists without the program name."""
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in an output block: not a command
        return []
    out, current = [], []
    for tok in [*tokens, ";"]:
        if tok in COMMAND_ENDS:
            while current and ENV_ASSIGNMENT.match(current[0]):
                current.pop(0)
            if current and current[0] == "radiolens":
                out.append(current[1:])
            current = []
        else:
            current.append(tok)
    return out


COMMANDS = _doc_commands()


def _root_command():
    return typer.main.get_command(app)


def _resolve(tokens: list[str]):
    """Walk subcommand names from the top: (command, its name path, the remaining tokens)."""
    cmd, names, rest = _root_command(), [], list(tokens)
    while _is_group(cmd) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(typer.Context(cmd), rest[0])
        if sub is None:
            raise AssertionError(f"no command 'radiolens {' '.join([*names, rest[0]])}'; "
                                 f"'radiolens {' '.join(names)}' has: {', '.join(sorted(cmd.list_commands(None)))}")
        cmd, names, rest = sub, [*names, rest[0]], rest[1:]
    return cmd, names, rest


def _is_group(cmd) -> bool:
    # duck-typed: Typer ships its own copy of Click, whose classes are not the installed click's
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}


def _fragment_commands(tokens: list[str]) -> list[tuple[object, list[str]]]:
    """The command(s) a fragment names: subcommand names are followed down from the top, ``a|b`` meaning
    either; the walk stops at the first option or once a command (not a group) is reached."""
    found, todo = [], [(_root_command(), [], list(tokens))]
    while todo:
        cmd, path, rest = todo.pop()
        if not _is_group(cmd) or not rest or rest[0].startswith("-") or rest[0] == "...":
            found.append((cmd, path))
            continue
        for name in rest[0].split("|"):
            sub = cmd.get_command(typer.Context(cmd), name)
            assert sub is not None, (f"no command 'radiolens {' '.join([*path, name])}'; 'radiolens "
                                     f"{' '.join(path)}' has: {', '.join(sorted(cmd.list_commands(None)))}")
            todo.append((sub, [*path, name], rest[1:]))
    return found


def test_the_docs_hold_commands_to_check():
    kinds = [k for _, _, k in COMMANDS]
    assert kinds.count("block") >= 40 and kinds.count("fragment") >= 40, len(COMMANDS)


@pytest.mark.parametrize(("where", "command", "kind"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_documented_command_matches_the_cli(where, command, kind):
    _check(where, command, kind)


@pytest.mark.parametrize(("command", "kind"), [
    ("export --model m.pt --manifest val.csv --out m.onnx", "block"),  # the option docs/serve.md once used
    ("quantize --model m.onnx --calibration c.csv --out q.onnx --method mse", "block"),  # not a choice
    ("split m.csv --out s.csv -l label --folds many", "block"),  # not a number
    ("train --out o", "block"),  # a required option left out
    ("monitor baseline --model m.pt --manifest m.csv", "block"),  # --out left out
    ("users add --role admin", "block"),  # no such subcommand
    ("radiolens monitor status|reprt", "fragment"),
    ("radiolens audit export --since 2026-01-01 --to 2026-02-01", "fragment"),
    ("preview FILE... --out DIR [--window-centre C]", "fragment"),
])
def test_the_check_catches_drift(command, kind):
    """The checker itself: each of these wrong commands must be reported."""
    with pytest.raises(AssertionError):
        _check("example", command, kind)


def _check(where: str, command: str, kind: str) -> None:
    if kind == "fragment":
        tokens = command.split()
        tokens = tokens[1:] if tokens[:1] == ["radiolens"] else tokens
        for cmd, path in _fragment_commands(tokens):
            options = {t.strip("[]").split("=")[0] for t in tokens if t.strip("[").startswith("-")}
            unknown = sorted(o for o in options if o not in _option_names(cmd) | {"--help"})
            assert not unknown, f"{where}: 'radiolens {' '.join(path)}' has no option {', '.join(unknown)}"
        return
    cmd, names, rest = _resolve(shlex.split(command))
    try:
        cmd.make_context(f"radiolens {' '.join(names)}", rest, resilient_parsing=False)
    except Exception as exc:  # Click's UsageError family, from Typer's own copy of Click
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        if isinstance(exc, typer.BadParameter) and "does not exist" in message:
            return  # an example file named by the docs: parse-only check
        raise AssertionError(f"{where}: 'radiolens {command}': {message}") from None
