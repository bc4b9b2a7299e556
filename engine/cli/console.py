"""Where commands print: results to stdout, progress and errors to stderr, both as rich consoles.

Every string a command prints may hold text from a contact file, an option or
the database (a campaign's name, a header, a reason), so the consoles take
strings as plain text: no rich markup (`[/x]` in a name is printed, not
parsed), no `:emoji:` codes, and control codes and bidirectional overrides
shown as escapes (`engine.controls.visible`), never obeyed. The few styled
words of the commands' own (`error:`, `warning:`) go through `styled`, which
keeps the text beside them plain too.

Kept apart from `engine.cli.app`, which imports every command module to register it,
so that a command module can be imported on its own.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from rich.console import Console
from rich.style import Style
from rich.text import Text

from engine.controls import visible


class PlainConsole(Console):
    """A rich console for which a string is always text, shown safely."""

    def __init__(self, **options: Any) -> None:
        # Soft wrap: a long error or path stays one line when piped, where the width defaults to 80.
        super().__init__(markup=False, emoji=False, soft_wrap=True, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        options.update(markup=False, emoji=False)  # also when a caller asks for them
        return super().render_str(visible(text), **options)


console = PlainConsole()
err_console = PlainConsole(stderr=True)


class VisibleFormatter(logging.Formatter):
    """Log lines on the terminal show control codes as escapes too: a logged file name or provider answer
    must not drive the terminal either."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def styled(style: str | Style, label: str, text: str = "", one_line: bool = True) -> Text:
    """`label` in `style`, then `text` as plain text (for the commands' own `error:`, `warning:`); `one_line`
    shows a line break in `text` as `\\n`, so that a name or a value cannot start a line of its own (a fake
    `error:`)."""
    shown = visible(text)
    if one_line:
        shown = shown.replace("\n", "\\n")
    return Text.assemble((visible(label), style), " " if text else "", shown)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one clear error line and return the exit to raise."""
    err_console.print(styled("bold red", "error:", message), highlight=False)
    return typer.Exit(code)


def warn(message: str, label: str = "warning:") -> None:
    """Print one warning line to stderr."""
    err_console.print(styled("bold yellow", label, message), highlight=False)
