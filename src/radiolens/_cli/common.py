"""Shared CLI plumbing: expected errors become one line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from radiolens.errors import RadiolensError, missing_extra

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2


def friendly_errors(func: F) -> F:
    """Expected errors -> one line and exit 2. A command that reaches for PyTorch (or another train-only package)
    in an installation without it (``radiolens[serve]``) is one of them: it says which extra to install."""
    command = "radiolens " + func.__name__.removesuffix("_cmd").replace("_", " ")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RadiolensError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ImportError as exc:
            missing = missing_extra(exc, command)
            if missing is None:
                raise
            typer.echo(f"error: {missing}", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]


#: Fixed value sets of CLI options. Declared as ``Literal[...]`` annotations, Click refuses any other value while
#: parsing, before a command's body runs (so before any model, image or manifest is read), with a one-line usage
#: error and exit 2. They repeat library constants on purpose (importing those would pull torch into every CLI
#: start); tests/test_cli_choices.py checks that each still equals its library counterpart.
TASKS = ("binary", "multiclass", "multilabel")
LOSSES = ("auto", "bce", "ce", "focal")
SCHEDULERS = ("cosine", "plateau", "none")
STRATEGIES = ("auto", "ddp")
MANIFEST_KINDS = ("imagefolder", "kermany", "nih", "medmnist")
EXPORT_FORMATS = ("onnx",)
EXPORTERS = ("dynamo", "legacy")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
BACKENDS = ("torch", "torchscript", "onnx")
SERVE_BACKENDS = ("torch", "onnx")
ENGINES = ("local", "ray")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
ROLES = ("clinician", "auditor", "admin")
AUDIT_FORMATS = ("jsonl", "csv")
PIXEL_TEXT_POLICIES = ("refuse", "mask", "off")
TEXT_DETECTOR_USES = ("auto", "all", "off")


def operating_point_option(value: str | None) -> str | None:
    """Click callback for ``--operating-point``: a malformed rule is a usage error at parse time (exit 2), not a
    failure after the model has been trained or every image scored."""
    if value is None:
        return None
    from radiolens.models.operating_point import OperatingPointError, parse_operating_point

    try:
        parse_operating_point(value)
    except OperatingPointError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value.strip()


def tidy_typer_help() -> None:
    """Plain help placeholders: no ``<bool>`` type on flags, ``FILES...`` rather than ``{files}...`` in usage.

    Typer 0.2x prints every parameter's Python type (``<bool>`` even on ``--help``) and wraps required
    arguments in braces; neither tells a user anything. Typer has no setting for this, so the two methods
    are wrapped here; on Typer versions without them (older or newer internals) nothing changes.
    """
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - very old typer
        return
    if getattr(TyperOption, "_radiolens_tidy", False):
        return
    option_type = getattr(TyperOption, "display_type_rich", None)
    if option_type is not None:
        def _option_type(self, ctx):
            return None if getattr(self, "is_flag", False) else option_type(self, ctx)

        TyperOption.display_type_rich = _option_type
    argument_type = getattr(TyperArgument, "display_type_rich", None)
    if argument_type is not None:
        def _argument_type(self, ctx):
            return None if self.nargs != 1 else argument_type(self, ctx)  # the name column says "..."

        TyperArgument.display_type_rich = _argument_type
    if hasattr(TyperArgument, "_usage_display_name"):
        def _usage_name(self) -> str:
            name = self.metavar or (self.name or "").upper()
            if self.nargs != 1 and not name.endswith("..."):
                name += "..."
            return name if self.required else f"[{name}]"

        TyperArgument._usage_display_name = _usage_name
    TyperOption._radiolens_tidy = True
