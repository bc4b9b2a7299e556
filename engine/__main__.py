"""`python -m engine` is the `campaign` command."""

from engine.cli import run

run()
