"""A provider is named in its own places only: its client module, the sandbox that plays it, and its settings.

Everything else reads the class facts of `engine.providers.base.Provider`
(through `client_class(name)`), so adding a provider is one client module, its
prices and its settings. The check reads code, not prose: identifiers and
string constants, leaving docstrings and comments to describe the providers.
"""

from __future__ import annotations

import ast
from pathlib import Path

from engine.providers import CLIENTS, PROVIDERS, client_class
from engine.providers.base import Channel
from tests.test_layers import ROOT, modules

#: Where a provider may be named: its clients and their registry, the sandbox, its settings and accounts.
ALLOWED = ("engine/providers/", "engine/sandbox/", "engine/settings.py", "engine/accounts.py")
#: Migrations are frozen history: they say what the schema was when they were written.
HISTORY = "engine/store/migrations/"


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def mentions(path: Path) -> list[str]:
    """Each place in the code of `path` that names a provider: `line: what`."""
    tree = ast.parse(path.read_text(), str(path))
    prose = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value.lower()
        elif isinstance(node, ast.Name):
            text = node.id.lower()
        elif isinstance(node, ast.Attribute):
            text = node.attr.lower()
        elif isinstance(node, ast.alias):
            text = node.name.lower()
        else:
            continue
        if any(name in text for name in PROVIDERS):
            found.append(f"{getattr(node, 'lineno', '?')}: {text[:60]!r}")
    return found


def test_no_module_outside_the_providers_places_names_a_provider() -> None:
    named = {}
    for path in modules().values():
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(ALLOWED) or where.startswith(HISTORY):
            continue
        if places := mentions(path):
            named[where] = places
    assert not named, f"provider named outside {ALLOWED}: {named}"


def test_the_check_sees_a_name_in_code_and_not_in_prose(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(f'"""Talks to {PROVIDERS[0]}."""\nif provider == "{PROVIDERS[1]}":\n    pass\n')
    assert mentions(source) == [f"2: {PROVIDERS[1]!r}"]


def test_every_provider_declares_what_the_engine_reads() -> None:
    """Each client says what it offers on every channel, and where its pushes are received."""
    for name, client in CLIENTS.items():
        assert client_class(name) is client and client.name == name
        assert any(client.max_batch(channel) for channel in Channel), name
        assert all(client.batch_limit(channel) >= client.max_batch(channel) for channel in client.call_limits), name
        assert client.webhook_paths, f"{name} has no webhook path"
        assert client.reports_per_message <= set(client.call_limits), name
        assert client.renders_templates <= set(client.call_limits), name
