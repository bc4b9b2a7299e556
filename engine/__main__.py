"""`python -m engine` is the `campaign` command."""

from engine.cli import app

app(prog_name="campaign")
