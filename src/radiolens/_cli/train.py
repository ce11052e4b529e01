"""CLI commands of the train layer (kept out of cli.py so each layer's commands live beside each other)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
