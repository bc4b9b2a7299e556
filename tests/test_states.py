"""States are spelled once, in engine/store/states.py: no module compares, filters or assigns a bare state word.

The scan reads the source with `ast`, so it sees only exact string constants
in the places a state is used: an operand of a comparison, an element of the
container an `in` / `not in` tests, an argument of SQL `.in_()` / `.not_in()`,
the value of a `state=` / `status=` keyword or of a `"state"` / `"status"`
key in a dict literal, and a tuple, list or set literal made of state words
only (a group of states spelled in place). A state word inside a sentence,
a docstring, a provider's own vocabulary mapped to a status (a dict key), or
an output label is none of these. The migrations (frozen history) and the
sandbox (the providers' words) are not scanned.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import TypeGuard

from engine.store.states import BatchKind, BatchState, CampaignState, MessageStatus, ScheduleState

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("engine", "workers", "schedules")
SKIPPED = (ROOT / "engine" / "store" / "migrations", ROOT / "engine" / "sandbox")
STATES_MODULE = ROOT / "engine" / "store" / "states.py"
WORDS = frozenset(
    member.value for enum in (CampaignState, ScheduleState, BatchState, BatchKind, MessageStatus) for member in enum
)
SQL_MEMBERSHIP = frozenset({"in_", "not_in", "notin_"})
STATE_NAMES = frozenset({"state", "status"})


def _is_word(node: ast.AST) -> TypeGuard[ast.Constant]:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in WORDS


def _elements(node: ast.AST) -> list[ast.expr]:
    """The node itself, or the elements of a tuple, list or set literal (a container of states)."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return list(node.elts)
    return [node] if isinstance(node, ast.expr) else []


def _uses(tree: ast.AST) -> Iterator[ast.Constant]:
    """The state-word constants of `tree` in a place where a state is compared, filtered or assigned."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
                if isinstance(op, ast.Eq | ast.NotEq):
                    sides = [left, right]
                elif isinstance(op, ast.In | ast.NotIn):
                    sides = [right]  # a word left of `in` is a key looked up: `"fallback" in summary`
                else:
                    continue
                for side in sides:
                    for element in _elements(side):
                        if _is_word(element):
                            yield element
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in SQL_MEMBERSHIP:
                for argument in node.args:
                    for element in _elements(argument):
                        if _is_word(element):
                            yield element
            for keyword in node.keywords:
                if keyword.arg in STATE_NAMES:
                    for element in _elements(keyword.value):
                        if _is_word(element):
                            yield element
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in STATE_NAMES and _is_word(value):
                    yield value
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            words = [element for element in node.elts if _is_word(element)]
            if len(words) >= 2 and len(words) == len(node.elts):
                yield from words


def bare_states(paths: list[Path], root: Path = ROOT) -> list[str]:
    """`path:line: 'word'` (relative to `root`) for every bare state word in a state position, each once."""
    found: dict[tuple[Path, int, int], str] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for constant in _uses(tree):
            found[(path, constant.lineno, constant.col_offset)] = constant.value
    return [f"{p.relative_to(root)}:{line}: {word!r}" for (p, line, _), word in sorted(found.items())]


def scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == STATES_MODULE or any(path.is_relative_to(skipped) for skipped in SKIPPED):
                continue
            files.append(path)
    return files


def test_no_bare_state_strings() -> None:
    found = bare_states(scanned_files())
    assert not found, "state words spelled outside engine/store/states.py (use the enum or a named group):\n" + (
        "\n".join(found)
    )


def test_the_scan_sees_every_kind_of_use(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        '"""A docstring may say planned, or "failed"."""\n'
        'if batch.state == "planned": pass\n'  # 2
        'if status in ("sent", "delivered"): pass\n'  # 3 (twice)
        'query.where(M.c.status.in_(["queued"]))\n'  # 4
        'update(B).values(state="settled")\n'  # 5
        'row = {"status": "ambiguous"}\n'  # 6
        'GROUP = ("running", "paused")\n'  # 7 (twice)
        'if "cancelled" != campaign.state: pass\n'  # 8
        'log.info("the batch failed")\n'
        'WORDS = {"delivered": 1, "sent": 2}\n'
        'label = "failed"\n'
        'app.command("send")\n'
        'if name in ("sms", "email"): pass\n'
        'PAIR = ("sent",)\n'
        'if "fallback" in summary: pass\n'
        'if a < "read": pass\n',
        encoding="utf-8",
    )
    lines = [entry.split(":")[1] for entry in bare_states([source], tmp_path)]
    assert lines == ["2", "3", "3", "4", "5", "6", "7", "7", "8"]


def test_states_module_is_what_the_models_use() -> None:
    from engine.store import models

    assert models.CampaignState is CampaignState
    assert models.MessageStatus is MessageStatus
    assert models.BatchState is BatchState
