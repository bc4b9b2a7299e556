"""The house plan holds: each package imports only itself and the packages before it, and no import runs in a
circle.

The order follows the data: the shared base, what is kept, who sends, CSV to
plan, batches out, news back, a campaign's life, then who runs it. Every
import counts, also one inside a function: a late import hides an arrow, it
does not remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("engine", "workers", "schedules")

#: The layers, first to last; a module may import its own layer and those before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "engine.errors",
            "engine.settings",
            "engine.clock",
            "engine.windows",
            "engine.gsm",
            "engine.controls",
            "engine.redact",
            "engine.csvsafe",
            "engine.serve",
        ),
    ),
    ("store", ("engine.store",)),
    ("providers", ("engine.providers",)),
    ("sandbox", ("engine.sandbox",)),
    ("accounts", ("engine.accounts",)),
    ("planning", ("engine.planning",)),
    ("sending", ("engine.sending",)),
    ("reports", ("engine.reports",)),
    ("campaigns", ("engine.campaigns",)),
    ("web", ("engine.web",)),
    ("local", ("engine.local",)),
    ("workers", ("workers",)),
    ("schedules", ("schedules",)),
    ("cli", ("engine.cli", "engine.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for source in SOURCES:
        for path in sorted((ROOT / source).rglob("*.py")):
            if "migrations" not in path.parts or path.name == "env.py":
                found[module_name(path)] = path
    return found


def imported(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The project modules `path` imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], base]).strip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in known:
                    yield candidate
                elif base in known:
                    yield base


def layer_of(module: str) -> int:
    """The layer of the longest prefix that holds `module` (`engine` itself, the empty package, is base)."""
    if module == "engine":
        return 0
    held = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    if not held:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py and the README")
    return max(held)[1]


GRAPH = {name: set(imported(path, name, set(modules()))) - {name} for name, path in modules().items()}


def test_every_module_has_a_layer() -> None:
    for module in GRAPH:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_its_layer_and_those_before(module: str) -> None:
    mine = layer_of(module)
    later = sorted(f"{target} ({LAYERS[layer_of(target)][0]})" for target in GRAPH[module] if layer_of(target) > mine)
    assert not later, f"{module} ({LAYERS[mine][0]}) imports a later layer: {', '.join(later)}"


def test_no_import_runs_in_a_circle() -> None:
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(circle) for circle in circles)


def test_the_checks_see_a_wrong_arrow(tmp_path: Path) -> None:
    """The walker finds an import inside a function, and the layer rule refuses a store module importing sending."""
    source = tmp_path / "late.py"
    source.write_text("def f():\n    from engine.sending import dispatch\n")
    found = set(imported(source, "engine.store.late", set(GRAPH)))
    assert found == {"engine.sending.dispatch"}
    assert layer_of("engine.sending.dispatch") > layer_of("engine.store.late")
