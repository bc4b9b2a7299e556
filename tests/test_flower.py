"""Flower on the project's Celery app: it runs as the compose file starts it, and shows each campaign task by
its name with ids for arguments, to logged-in users only.

Flower is started as the `flower` service of docker/compose.yml runs it (its
command and FLOWER_* settings), pointed at this run's Redis prefix and the
session's workers; a small campaign then goes through those workers and
Flower's HTTP API must report each of its batches.
"""

from __future__ import annotations

import ast
import base64
import inspect
import json
import socket
import subprocess
import sys
import threading
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.campaigns.lifecycle import start, status
from engine.store import models
from tests.fixtures.campaigns import plan_campaign
from tests.fixtures.celery import Workers
from tests.fixtures.polling import eventually
from tests.fixtures.sandbox import Sandbox
from tests.test_compose import command, environment, run_health_check, services

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


def test_flower_shows_each_batch_of_a_campaign_by_name_with_its_id(
    watching: Flower, workers: Workers, sandbox: Sandbox, tmp_path: Path
) -> None:
    flower = watching
    campaign_id = plan_campaign(
        workers.engine, tmp_path, 20, first=FIRST_NUMBER, name="Asha", start=False, spread=False, batch_size=5
    )
    with workers.engine.connect() as connection:
        batch_ids = set(
            connection.execute(
                select(models.Batch.__table__.c.id).where(models.Batch.__table__.c.campaign_id == campaign_id)
            ).scalars()
        )
    assert len(batch_ids) == 4
    start(workers.engine, campaign_id)
    workers.run("campaign.start_campaign", campaign_id)

    def sent() -> list[dict[str, Any]]:
        return [
            task
            for task in tasks(flower, "campaign.send_batch")
            if task["state"] == "SUCCESS" and ids(task)[:1] and ids(task)[0] in batch_ids
        ]

    shown = eventually(
        sent, lambda found: {ids(task)[0] for task in found} == batch_ids, "Flower to show every batch sent", timeout=30
    )
    assert status(workers.engine, campaign_id).batches == {"submitted": 4}
    for task in shown:
        assert task["name"] == "campaign.send_batch"
        assert len(ids(task)) == 1 and isinstance(ids(task)[0], int), task["args"]
        assert ast.literal_eval(task["kwargs"]) == {}
        assert ast.literal_eval(task["result"]) == "submitted"
        assert task["worker"] in worker_names(workers)

    starts = [task for task in tasks(flower, "campaign.start_campaign") if ids(task) == (campaign_id,)]
    assert [(task["state"], ast.literal_eval(task["result"])) for task in starts] == [("SUCCESS", 4)]


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
    assert set(ast.literal_eval(polls[0]["result"])) >= {"polled", "reports", "expired"}

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
            assert hints.get(parameter.name) is int and parameter.name.endswith("_id"), (
                f"{name} takes {parameter.name}: {hints.get(parameter.name)}"
            )


def test_flower_shows_nothing_without_its_login(flower: Flower) -> None:
    assert flower.status("/api/tasks") == 401
    assert flower.status("/api/workers") == 401
    assert flower.status("/tasks") == 401


def test_the_compose_health_check_passes_on_a_running_flower(flower: Flower) -> None:
    port = int(flower.url.rsplit(":", 1)[1])
    assert run_health_check(services()["flower"], port) == 0
