"""The `campaign` command.

Every command runs through `Commands`, which turns the engine's own errors
(`CampaignError`) into one red line and exit status 1, so a marketer never sees
a traceback for a bad file or a wrong setting; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from engine.cli.console import VisibleFormatter, fail
from engine.errors import CampaignError


class Commands(TyperGroup):
    """The command group of `campaign`: an engine error in any command, or its group's, is one line."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context, which it does not export
        try:
            return super().invoke(ctx)
        except CampaignError as exc:
            raise fail(str(exc)) from None


app = typer.Typer(
    cls=Commands,
    name="campaign",
    help="Plan, send and track bulk SMS, email, RCS and WhatsApp campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")] = False,
) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(VisibleFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])


def run() -> None:
    """Entry point of the `campaign` script and of `python -m engine`."""
    app(prog_name="campaign")


def _register_commands() -> None:
    """Each command group lives in its own module and adds itself to `app`."""
    from engine.cli import demo, plan, sandbox, schedule, send, web

    for module in (plan, send, schedule, sandbox, web, demo):
        module.register(app)


_register_commands()
