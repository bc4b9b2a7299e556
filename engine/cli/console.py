"""Where commands print: results to stdout, progress and errors to stderr, both as rich consoles.

Kept apart from `engine.cli.app`, which imports every command module to register it,
so that a command module can be imported on its own.
"""

from __future__ import annotations

import typer
from rich.console import Console

# Soft wrap: a long error or path stays one line when piped, where the width defaults to 80.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
