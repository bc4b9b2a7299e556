"""Shared fixtures, loaded for every test under tests/."""

pytest_plugins = [
    "tests.fixtures.sandbox",
    "tests.fixtures.services",
    "tests.fixtures.databases",
    "tests.fixtures.celery",
    "tests.fixtures.cli",
    "tests.fixtures.clock",
]
