"""The `campaign` command.

Every command runs through `Commands`, which turns the engine's own errors
(`CampaignError`) into one red line and exit status 1, so a marketer never sees
a traceback for a bad file or a wrong setting; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from engine.cli.console import VisibleFormatter, fail, warn
from engine.errors import CampaignError
from engine.settings import get_settings


class Commands(TyperGroup):
    """The command group of `campaign`: an engine error in any command, or its group's, is one line."""

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context, which it does not export
        unmade = None
        try:
            unmade = _unmade_default_database()
            return super().invoke(ctx)
        except CampaignError as exc:
            raise fail(str(exc)) from None
        finally:
            if unmade is not None and unmade.exists():
                warn(f"a new campaign database at {unmade} (CAMPAIGN_DATABASE_URL chooses another)", label="note:")


def _unmade_default_database() -> Path | None:
    """The default SQLite file, when no setting chose the database and it does not exist yet (None also when the
    settings are wrong: the command says so, or shows its help)."""
    try:
        settings = get_settings()
    except CampaignError:
        return None
    if "database_url" in settings.model_fields_set:
        return None
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    return None if path.exists() else path


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
