"""User commands of the interpolation engines (`frames`, `interpolate`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the engine commands to the `infiniteflow` CLI."""
