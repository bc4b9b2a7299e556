"""Flower on the project's Celery app: it runs as the compose file starts it, and shows each campaign task by
its name with ids for arguments, to logged-in users only, and a line an operator can read as its result.

Flower is started as the `flower` service of docker/compose.yml runs it (its
command and FLOWER_* settings), pointed at this run's Redis prefix and the
session's workers; a small campaign then goes through those workers and
Flower's HTTP API must report each of its batches with its campaign, and say
what went to which provider in how long, or why nothing went. Housekeeping
tasks must say whether they found anything to do.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import re
import socket
import subprocess
import sys
import threading
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update

from engine import clock
from engine.campaigns.lifecycle import pause, start, status
from engine.campaigns.schedules import schedule_campaign
from engine.store import models
from tests.fixtures.campaigns import plan_campaign
from tests.fixtures.celery import Workers
from tests.fixtures.polling import eventually
from tests.fixtures.sandbox import Sandbox
from tests.test_compose import command, environment, run_health_check, services
from workers.summaries import masked, send_line

#: Numbers no other test of the session messages.
FIRST_NUMBER = 9_100_000_000


@dataclass
class Flower:
    url: str
    auth: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def get(self, path: str, authenticated: bool = True) -> Any:
        request = urllib.request.Request(self.url + path)
        if authenticated:
            request.add_header("Authorization", "Basic " + base64.b64encode(self.auth.encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self, path: str) -> int:
        """The HTTP status of an anonymous GET."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


def worker_names(workers: Workers) -> set[str]:
    """The node names the session's workers go by (`-n w1@%h`)."""
    return {f"{worker.name}@{socket.gethostname()}" for worker in workers.processes}


@pytest.fixture(scope="module")
def flower(workers: Workers) -> Iterator[Flower]:
    """The compose file's Flower, on a free loopback port, watching the session's workers."""
    service = services()["flower"]
    args = command(service)
    assert args[:4] == ["celery", "-A", "workers.app", "flower"]
    options = [arg for arg in args[4:] if not arg.startswith(("--port", "--address"))]
    settings = {name: value for name, value in environment(service).items() if name.startswith("FLOWER_")}
    env = {name: value for name, value in workers.env.items() if not name.startswith("FLOWER_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "flower", *options, "--port=0", "--address=127.0.0.1"],
        env={**env, **settings},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:  # Flower logs to stderr; keep reading so it never blocks on a full pipe
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "Visit me at " in line:
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not listening.wait(30):
            raise RuntimeError("flower did not start:\n" + "".join(lines[-30:]))
        url = next(line for line in lines if "Visit me at " in line).split("Visit me at ", 1)[1].strip().rstrip("/")
        yield Flower(url, settings["FLOWER_BASIC_AUTH"], process, lines)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def watching(flower: Flower, workers: Workers) -> Flower:
    """Flower once it receives the workers' events (their heartbeats): from then on it misses no task."""
    expected = worker_names(workers)
    eventually(
        lambda: flower.get("/api/workers?status=true"),
        lambda alive: all(alive.get(name) for name in expected),
        "Flower to see the workers' heartbeats",
    )
    return flower


def campaign_task_functions() -> dict[str, Callable[..., Any]]:
    """Every task the workers register (the app's `include` modules loaded, as a worker does), by name."""
    from workers.app import app

    app.loader.import_default_modules()
    return {name: task.run for name, task in app.tasks.items() if name.startswith("campaign.")}


def tasks(flower: Flower, name: str) -> list[dict[str, Any]]:
    return list(flower.get(f"/api/tasks?taskname={name}&limit=1000").values())


def ids(task: dict[str, Any]) -> tuple[Any, ...]:
    """A task's arguments as Flower shows them (the repr the client sent), read back as Python values."""
    return tuple(ast.literal_eval(task["args"]))


def keywords(task: dict[str, Any]) -> dict[str, Any]:
    """A task's keyword arguments as Flower shows them."""
    return dict(ast.literal_eval(task["kwargs"]))


def result(task: dict[str, Any]) -> Any:
    """A task's result as Flower shows it, read back."""
    return ast.literal_eval(task["result"])


def batches_of(workers: Workers, campaign_id: int) -> set[int]:
    table = models.Batch.__table__
    with workers.engine.connect() as connection:
        return set(connection.execute(select(table.c.id).where(table.c.campaign_id == campaign_id)).scalars())


def test_flower_shows_each_batch_with_its_campaign_and_a_line_of_what_went(
    watching: Flower, workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    flower = watching
    campaign_id = plan_campaign(
        workers.engine, tmp_path, 20, first=FIRST_NUMBER, name="Asha", start=False, spread=False, batch_size=5
    )
    batch_ids = batches_of(workers, campaign_id)
    assert len(batch_ids) == 4
    start(workers.engine, campaign_id)
    assert workers.run("campaign.start_campaign", campaign_id) == f"campaign {campaign_id}: queued 4 batches"

    def sent() -> list[dict[str, Any]]:
        return [
            task
            for task in tasks(flower, "campaign.send_batch")
            if task["state"] == "SUCCESS" and keywords(task).get("campaign_id") == campaign_id
        ]

    shown = eventually(
        sent,
        lambda found: {keywords(task)["batch_id"] for task in found} == batch_ids,
        "Flower to show every batch sent",
        timeout=30,
    )
    assert status(workers.engine, campaign_id).batches == {"submitted": 4}
    for task in shown:
        batch_id = keywords(task)["batch_id"]
        assert task["name"] == "campaign.send_batch"
        assert ids(task) == () and keywords(task) == {"campaign_id": campaign_id, "batch_id": batch_id}
        line = f"campaign {campaign_id} batch {batch_id}: 5 SMS to noxitel submitted in "
        assert re.fullmatch(re.escape(line) + r"(\d+\.\d s|\d+ ms)", result(task)), result(task)
        assert task["worker"] in worker_names(workers)

    searched = flower.get(f"/api/tasks?search=kwargs:campaign_id={campaign_id}")  # as the README suggests
    assert {task["uuid"] for task in shown} <= set(searched)
    assert {keywords(task)["campaign_id"] for task in searched.values()} == {campaign_id}
    starts = [task for task in tasks(flower, "campaign.start_campaign") if ids(task) == (campaign_id,)]
    assert [(task["state"], result(task)) for task in starts] == [
        ("SUCCESS", f"campaign {campaign_id}: queued 4 batches")
    ]


def test_a_batch_of_a_paused_campaign_says_why_nothing_went(
    watching: Flower, workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    campaign_id = plan_campaign(workers.engine, tmp_path, 5, first=FIRST_NUMBER + 100, name="Asha", spread=False)
    (batch_id,) = batches_of(workers, campaign_id)
    pause(workers.engine, campaign_id, "paused for Flower")
    arguments = {"campaign_id": campaign_id, "batch_id": batch_id}
    answer = workers.app.send_task("campaign.send_batch", kwargs=arguments, queue="send.noxitel")
    line = f"campaign {campaign_id} batch {batch_id}: skipped, nothing sent — campaign paused: paused for Flower"
    assert answer.get(timeout=60) == line
    shown = eventually(
        lambda: [task for task in tasks(watching, "campaign.send_batch") if task["uuid"] == answer.id],
        lambda found: bool(found) and found[0]["state"] == "SUCCESS",
        "Flower to show the skipped batch",
    )
    assert keywords(shown[0]) == arguments and result(shown[0]) == line


def test_the_schedule_scan_says_whether_it_started_anything(
    watching: Flower, workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    idle = workers.run("campaign.scan_schedules")
    counts = [idle[name] for name in ("started", "woken", "planned", "refused", "rung")]
    assert next(iter(idle)) == "summary" and (idle["summary"] == "nothing due") == (counts == [0] * 5), idle

    campaign_id = plan_campaign(
        workers.engine, tmp_path, 5, first=FIRST_NUMBER + 200, name="Asha", start=False, spread=False
    )
    schedule_campaign(workers.engine, campaign_id, clock.now() + timedelta(hours=1), "Asia/Kolkata")
    with workers.engine.begin() as connection:  # the hour has passed
        table = models.Campaign.__table__
        connection.execute(
            update(table).where(table.c.id == campaign_id).values(scheduled_at=clock.now() - timedelta(seconds=1))
        )
    answer = workers.app.send_task("campaign.scan_schedules")
    summary = answer.get(timeout=60)["summary"]
    assert f"started campaign {campaign_id}" in summary and "queued " in summary, summary
    shown = eventually(
        lambda: [task for task in tasks(watching, "campaign.scan_schedules") if task["uuid"] == answer.id],
        lambda found: bool(found) and found[0]["state"] == "SUCCESS",
        "Flower to show the scan",
    )
    assert result(shown[0])["summary"] == summary
    workers.wait_for(lambda: status(workers.engine, campaign_id).batches == {"submitted": 1}, what="the batch sent")


def test_the_sweep_says_whether_it_recovered_anything(workers: Workers) -> None:
    swept = workers.run("campaign.sweep")
    idle = swept["ambiguous"] == swept["resumed"] == swept["rung"] == 0
    assert next(iter(swept)) == "summary" and (swept["summary"] == "nothing to recover") == idle, swept


def test_a_line_says_what_went_before_a_batch_stopped_and_why(workers: Workers, tmp_path: Path) -> None:
    """The line of a batch put back halfway (a per-recipient batch when its campaign paused), and of a refused one."""
    campaign_id = plan_campaign(workers.engine, tmp_path, 10, first=FIRST_NUMBER + 300, name="Asha", spread=False)
    (batch_id,) = batches_of(workers, campaign_id)
    messages = models.Message.__table__
    with workers.engine.begin() as connection:
        first_four = select(messages.c.id).where(messages.c.batch_id == batch_id).order_by(messages.c.id).limit(4)
        connection.execute(update(messages).where(messages.c.id.in_(first_four)).values(status="submitted"))
    pause(workers.engine, campaign_id, "paused: noxitel HTTP 402: no credits left for 919876543210")
    head = f"campaign {campaign_id} batch {batch_id}: 10 SMS to noxitel"
    assert send_line(workers.engine, batch_id, "planned", 3.14) == (
        f"{head} put back in 3.1 s (6 planned, 4 submitted) — campaign paused: noxitel HTTP 402: no credits left "
        "for 91******3210"
    )
    batches = models.Batch.__table__
    with workers.engine.begin() as connection:
        connection.execute(update(messages).where(messages.c.batch_id == batch_id).values(status="rejected"))
        connection.execute(update(batches).where(batches.c.id == batch_id).values(state="failed", error="HTTP 400"))
        connection.execute(
            update(models.Campaign.__table__)
            .values(state="running")
            .where(models.Campaign.__table__.c.id == campaign_id)
        )
    assert send_line(workers.engine, batch_id, "failed", 0.04) == f"{head} failed in 40 ms (10 rejected) — HTTP 400"


def test_a_send_line_without_its_database_still_says_what_the_send_did() -> None:
    unreachable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    line = send_line(unreachable, 345, "submitted", 0.8)
    assert line == "batch 345: submitted in 0.8 s (no detail: OperationalError)"


def test_a_line_masks_numbers_and_addresses_and_stays_short() -> None:
    line = masked("noxitel HTTP 400: invalid contact 919876543210 (jane.doe@example.com)\n" + "x" * 300)
    assert "919876543210" not in line and "91******3210" in line and "j***@example.com" in line
    assert "\n" not in line and len(line) <= 160


def test_flower_shows_the_report_poll_and_every_campaign_task_the_workers_run(
    watching: Flower, workers: Workers
) -> None:
    flower = watching
    before = {task["uuid"] for task in tasks(flower, "campaign.poll_dlr")}
    workers.run("campaign.poll_dlr")
    polls = eventually(
        lambda: [
            task
            for task in tasks(flower, "campaign.poll_dlr")
            if task["uuid"] not in before and task["state"] == "SUCCESS"
        ],
        bool,
        "Flower to show the report poll",
    )
    assert ids(polls[0]) == ()
    shown = result(polls[0])
    assert next(iter(shown)) == "summary" and set(shown) >= {"polled", "reports", "expired"}
    done = any(shown[name] for name in ("polled", "reports", "expired", "pushed", "fallbacks"))
    assert (shown["summary"] == "nothing due") != done, shown

    campaign_tasks = set(campaign_task_functions())
    assert {"campaign.send_batch", "campaign.start_campaign", "campaign.poll_dlr", "campaign.sweep"} <= campaign_tasks
    registered = eventually(
        lambda: flower.get("/api/workers?refresh=1"),
        lambda found: worker_names(workers) <= set(found),
        "Flower to inspect the workers",
    )
    for name in worker_names(workers):
        assert campaign_tasks <= set(registered[name]["registered"]), name
        assert {queue["name"] for queue in registered[name]["active_queues"]} >= {"send.pixabits", "send.noxitel"}


def test_every_campaign_task_takes_ids_only() -> None:
    """What Flower shows of a task is its arguments: ids, never numbers, message text or keys."""
    found = campaign_task_functions()
    assert {"campaign.send_batch", "campaign.start_campaign"} <= set(found)
    for name, function in found.items():
        signature = inspect.signature(function)
        hints = typing.get_type_hints(function)
        for parameter in signature.parameters.values():
            assert hints.get(parameter.name) in (int, int | None) and parameter.name.endswith("_id"), (
                f"{name} takes {parameter.name}: {hints.get(parameter.name)}"
            )


def test_flower_shows_nothing_without_its_login(flower: Flower) -> None:
    assert flower.status("/api/tasks") == 401
    assert flower.status("/api/workers") == 401
    assert flower.status("/tasks") == 401


def test_the_compose_health_check_passes_on_a_running_flower(flower: Flower) -> None:
    port = int(flower.url.rsplit(":", 1)[1])
    assert run_health_check(services()["flower"], port) == 0
