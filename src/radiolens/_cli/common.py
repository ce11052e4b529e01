"""Shared CLI plumbing: expected errors become one line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from radiolens.errors import RadiolensError

F = TypeVar("F", bound=Callable)

EXIT_BAD_INPUT = 2


def friendly_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RadiolensError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]
