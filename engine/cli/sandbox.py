"""`campaign sandbox`: the provider sandbox as its own service (the command is the sandbox's own)."""

from __future__ import annotations

import typer

from engine.sandbox.command import sandbox


def register(app: typer.Typer) -> None:
    app.command()(sandbox)
