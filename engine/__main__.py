"""`python -m engine` is the `campaign` command."""

from engine.cli.app import run

run()
