"""CLI commands of the monitor area (kept out of cli.py so each area's commands live beside each other)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
