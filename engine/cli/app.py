"""The `campaign` command.

`run` turns the engine's own errors (`CampaignError`) into one red line and exit
status 1, so a marketer never sees a traceback for a bad file or a wrong
setting; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from engine.cli.console import fail
from engine.errors import CampaignError

app = typer.Typer(
    name="campaign",
    help="Plan, send and track bulk SMS, email, RCS and WhatsApp campaigns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run() -> None:
    """Entry point of the `campaign` script and of `python -m engine`."""
    try:
        app(prog_name="campaign")
    except CampaignError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None


def _register_commands() -> None:
    """Each command group lives in its own module and adds itself to `app`."""
    from engine.cli import demo, plan, sandbox, schedule, send, web

    for module in (plan, send, schedule, sandbox, web, demo):
        module.register(app)


_register_commands()
