"""`campaign demo`: a whole campaign on a new machine, with no account, no server and no setup.

It is `campaign send` on fixed inputs: example contacts shipped inside the
package (so it works from any install and any directory), the README's message
with its shipped DLT template, the embedded provider sandbox, local mode and a
SQLite database of its own. It reads none of the user's settings: a real key,
a production URL or a broker in the environment must never turn a demo into a
real campaign, and a demo must never land in the user's real database.
"""

from __future__ import annotations

import math
import os
import shlex
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from engine.cli.console import console
from engine.cli.plan import plan_campaign, print_summary
from engine.cli.run import run_campaign
from engine.errors import CampaignError
from engine.planning.options import PlanOptions
from engine.planning.planner import save_plan
from engine.providers import PROVIDERS, names_where
from engine.settings import Settings
from engine.store.db import database

#: Shipped in config/examples/ (the `engine.config.examples` package): valid Indian mobiles written the
#: ways people write them, enough rows that sending takes several batches.
CONTACTS_FILE = "demo_contacts.csv"
#: The README's example text, which the shipped DLT registry (config/dlt_templates.csv) holds a template for.
MESSAGE = "Hi #name#, your order #order# has shipped and will reach you by Friday. -ACME"
SENDER = "ACMEIN"
DLT_TEMPLATE_ID = "1207161234567890123"
#: The contacts are split into this many batches (a real campaign this small would be one provider call),
#: so the progress bar has steps and the batch machinery shows.
BATCHES = 20


#: The demo's provider by default: one whose reports are fetched, so it shows delivery with nothing pushed.
DEFAULT_PROVIDER = names_where(lambda client: client.polls_reports)[0]


class DemoSettings(Settings):
    """Only what the demo passes in, over the defaults: the embedded sandbox for both providers with its
    own keys, no broker (local mode), no public URL; nothing from the environment or a `.env` file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _provider(value: str) -> str:
    if value not in PROVIDERS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(repr(name) for name in sorted(PROVIDERS))}.")
    return value


def demo(
    provider: Annotated[
        str,
        typer.Option(
            parser=_provider, metavar=f"[{'|'.join(sorted(PROVIDERS))}]", help="Which provider's API the sandbox plays."
        ),
    ] = DEFAULT_PROVIDER,
    contacts: Annotated[
        int | None, typer.Option(min=1, help="Send to the first N example contacts (default: all of them).")
    ] = None,
    keep: Annotated[
        bool, typer.Option(help="Keep the demo database, in ~/.cache/campaign-engine/demo.db, to look at it later.")
    ] = False,
    database_file: Annotated[
        Path | None, typer.Option("--database", help="Keep the demo database in this SQLite file (implies --keep).")
    ] = None,
) -> None:
    """Run a whole example campaign on the embedded provider sandbox: no account, no server, no settings."""
    with tempfile.TemporaryDirectory(prefix="campaign-demo-") as scratch:
        rows = _example_rows(contacts)
        kept = _kept_database(database_file, keep)
        path = kept or Path(scratch) / "demo.db"
        settings = DemoSettings(database_url=f"sqlite:///{path}")
        where = "kept" if kept else "temporary: removed when the demo ends; --keep keeps it"
        console.print(
            f"campaign demo: {len(rows) - 1:,} example contacts shipped with the engine, by SMS through the "
            f"embedded {provider} sandbox\n"
            "no account, no server, none of your settings: nothing leaves this machine\n"
            f"database: {path} ({where})",
            highlight=False,
            markup=False,
        )
        # A copy, because the planner writes the rejects file beside the contacts: never inside the installed package.
        contacts_file = Path(scratch) / CONTACTS_FILE
        contacts_file.write_text("".join(rows), encoding="utf-8")
        options = PlanOptions(
            contacts=contacts_file,
            provider=provider,
            message=MESSAGE,
            sender=SENDER,
            dlt_template_id=DLT_TEMPLATE_ID,
            batch_size=math.ceil((len(rows) - 1) / BATCHES),
        )
        with database(settings.database_url) as engine:
            result = plan_campaign(settings, engine, options)
            print_summary(result.summary)
            campaign_id = save_plan(engine, result)
            run_campaign(engine, settings, campaign_id, json_output=False, wait=False)
    if kept:
        _print_follow_ups(settings.database_url, campaign_id)


def _kept_database(database_file: Path | None, keep: bool) -> Path | None:
    """Where the database outlives the demo, if it should: the file asked for, or one in the user's cache
    folder, which the demo creates (a folder the user named must exist already, as for any database)."""
    if database_file is not None:
        return database_file.expanduser().resolve()
    if not keep:
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "campaign-engine"
    base.mkdir(parents=True, exist_ok=True)
    return base / "demo.db"


def _example_rows(count: int | None) -> list[str]:
    """The header and the first `count` rows of the shipped contacts, read as package data so that an
    installed wheel finds them as well as a checkout does."""
    resource = files("engine.config.examples") / CONTACTS_FILE
    lines = resource.read_text(encoding="utf-8").splitlines(keepends=True)
    available = len(lines) - 1
    if count is not None and count > available:
        raise CampaignError(f"the demo ships {available:,} contacts: --contacts takes 1 to {available:,}")
    return lines[: (count or available) + 1]


def _print_follow_ups(database_url: str, campaign_id: int) -> None:
    env = f"CAMPAIGN_DATABASE_URL={shlex.quote(database_url)}"
    console.print(
        "\nthe demo database is kept; look at the campaign as at any other:\n"
        f"  {env} campaign status {campaign_id}\n"
        f"  {env} campaign report {campaign_id} --out results.csv\n"
        f"  {env} campaign list",
        highlight=False,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Attach `campaign demo` to the `campaign` app."""
    app.command("demo")(demo)
