"""`campaign web`: signed pushes applied to their messages, opt-out replies and hard bounces suppressed."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from engine.campaigns.lifecycle import status
from engine.store.db import open_database
from tests.fixtures.cli import EXAMPLE, SEND, SEND_PIXABITS, campaign
from tests.fixtures.polling import eventually
from tests.fixtures.sandbox import WEBHOOK_SECRET, Sandbox, read_banner, settled_counts

pytestmark = pytest.mark.cli_env(CAMPAIGN_WEBHOOK_SECRET=WEBHOOK_SECRET)


@pytest.fixture
def receiver(env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "web", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        yield read_banner(process)
    finally:
        process.terminate()
        process.wait(10)


def post(url: str, body: dict[str, object], secret: str = WEBHOOK_SECRET) -> int:
    return post_reading(url, body, secret)[0]


def post_reading(
    url: str, body: dict[str, object], secret: str = WEBHOOK_SECRET, gzipped: bool = False
) -> tuple[int, object]:
    """POST a signed body (signed as it is, then gzipped if asked); the answer's status and its JSON (None
    when it is not JSON)."""
    raw = orjson.dumps(body)
    headers = {"X-Signature": hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()}
    if gzipped:
        raw, headers["Content-Encoding"] = gzip.compress(raw), "gzip"
    request = urllib.request.Request(url, data=raw, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    try:
        return status, orjson.loads(answer)
    except orjson.JSONDecodeError:
        return status, None


def test_the_receiver_refuses_to_start_without_a_secret(env: dict[str, str]) -> None:
    done = campaign({k: v for k, v in env.items() if k != "CAMPAIGN_WEBHOOK_SECRET"}, "web", "--port", "0")
    assert done.returncode == 1 and "set CAMPAIGN_WEBHOOK_SECRET" in done.stderr


@pytest.mark.cli_env(CAMPAIGN_WEBHOOK_SECRET="change-me")
def test_the_receiver_refuses_to_start_with_a_secret_that_could_be_guessed(env: dict[str, str]) -> None:
    done = campaign(env, "web", "--port", "0")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: CAMPAIGN_WEBHOOK_SECRET has 9 characters; use at least 32 "
        "(for one: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    ]


def test_noxitel_pushes_settle_the_campaign(
    env: dict[str, str], sandbox: Sandbox, receiver: str, tmp_path: Path
) -> None:
    sent = campaign(
        {**env, "CAMPAIGN_PUBLIC_URL": receiver},
        "send",
        str(EXAMPLE),
        *SEND,
        "--rejects",
        str(tmp_path / "r.csv"),
        "--yes",
        "--json",
    )
    campaign_id = orjson.loads(sent.stdout.strip().splitlines()[-1])["campaign_id"]
    assert sandbox.last_body("POST /api/v2/sms")["notifyUrl"] == receiver + "/webhooks/noxitel"
    sandbox.advance_clock(5)
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    counts = eventually(  # the sandbox pushes, the receiver applies
        lambda: status(engine, campaign_id).counts, lambda now: not now.get("submitted"), "the pushes", 30, every=0.1
    )
    with engine.connect() as connection:
        numbers = [row[0] for row in connection.exec_driver_sql("SELECT address FROM messages")]
    engine.dispose()
    assert counts == settled_counts(numbers)


def test_pixabits_pushes_are_kept_answered_then_applied_until_every_recipient_is_final(
    env: dict[str, str], sandbox: Sandbox, receiver: str, tmp_path: Path
) -> None:
    sandbox.configure(webhook_url=receiver + "/webhooks/pixabits")
    sent = campaign(
        env,
        "send",
        str(EXAMPLE),
        *SEND_PIXABITS,
        "--rejects",
        str(tmp_path / "r.csv"),
        "--yes",
        "--json",
    )
    campaign_id = orjson.loads(sent.stdout.strip().splitlines()[-1])["campaign_id"]
    sandbox.advance_clock(5)
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    counts = eventually(  # the sandbox pushes, the receiver keeps, then applies
        lambda: status(engine, campaign_id).counts, lambda now: not now.get("submitted"), "the pushes", 30, every=0.1
    )
    with engine.connect() as connection:
        numbers = [row[0] for row in connection.exec_driver_sql("SELECT address FROM messages")]
        kept = connection.exec_driver_sql("SELECT count(*), count(message_id) FROM delivery_events").one()
    engine.dispose()
    assert counts == settled_counts(numbers)
    assert tuple(kept) == (len(numbers), len(numbers))  # each push kept once, each matched to its message


def test_a_forged_report_is_refused_and_nothing_is_kept(env: dict[str, str], receiver: str) -> None:
    body = {"event": "sms.message.delivered", "data": {"message_id": "m1", "to": "+919876543210"}}
    assert post(receiver + "/webhooks/pixabits", body, secret="forged") == 401
    assert (
        post(
            receiver + "/webhooks/noxitel",
            {"batch_id": "b1", "mobile": "919876543210", "dlr": {"status": "Handset Delivered"}},
            secret="",
        )
        == 401
    )
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM delivery_events").scalar_one() == 0
    engine.dispose()


def test_a_signed_but_malformed_event_is_a_400_naming_the_problem_and_nothing_is_kept(
    env: dict[str, str], receiver: str
) -> None:
    """Signed bodies whose fields have the wrong shape used to be a 500 and a traceback."""
    malformed = [
        ("/webhooks/noxitel", {"batch_id": "b1", "mobile": "919876543210", "dlr": ["Handset Delivered"]}, "dlr must"),
        ("/webhooks/noxitel", {"mobile": "919876543210", "dlr": {"status": "DELIVRD"}, "sms_id": ["s1"]}, "sms_id"),
        (
            "/webhooks/pixabits",
            {"event": "sms.message.delivered", "data": {"message_id": ["m1"], "to": "+919876543210"}},
            "data.message_id",
        ),
        ("/webhooks/noxitel", {"batch_id": "b1", "dlr": {"status": "DELIVRD"}, "sms_id": "s1"}, None),
    ]
    for path, body, named in malformed:
        status, answer = post_reading(receiver + path, body)
        if named is None:  # not a report the receiver knows: taken and skipped, as before
            assert (status, answer) == (200, {"received": 0})
            continue
        assert status == 400 and named in answer["error"], (path, body, answer)
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM delivery_events").scalar_one() == 0
    engine.dispose()


@pytest.mark.cli_env(
    CAMPAIGN_WEBHOOK_SECRET=WEBHOOK_SECRET, CAMPAIGN_WEBHOOK_MAX_KB="64", CAMPAIGN_WEBHOOK_READ_SECONDS="1"
)
def test_a_stranger_cannot_make_the_receiver_hold_large_compressed_or_slow_bodies(
    env: dict[str, str], receiver: str
) -> None:
    """The receiver read up to 16 MiB, inflated gzip and waited for ever before checking a signature. Now a
    compressed body is a 415, one over CAMPAIGN_WEBHOOK_MAX_KB a 413 (by its length, before it is read),
    and a body not sent within CAMPAIGN_WEBHOOK_READ_SECONDS a 408; nothing of them is kept."""
    url = receiver + "/webhooks/pixabits"
    event = {"event": "sms.message.delivered", "data": {"message_id": "m1", "to": "+919876543210"}}
    large = {"event": "sms.message.delivered", "data": {"to": "+919876543210", "padding": "x" * 100_000}}

    assert post_reading(url, event, gzipped=True)[0] == 415
    assert post(url, large) == 413
    host, port = urllib.parse.urlsplit(receiver).hostname, urllib.parse.urlsplit(receiver).port
    with socket.create_connection((host, port), timeout=30) as slow:
        slow.sendall(b"POST /webhooks/pixabits HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        answer = slow.recv(200)  # the receiver answers when its read time is up; the client never finishes
    assert answer.startswith(b"HTTP/1.1 408"), answer
    with socket.create_connection((host, port), timeout=30) as slow:
        slow.sendall(b"POST /webhooks/pixabits HTTP/1.1\r\nHost: x\r\n")  # headers that never end
        assert slow.recv(200) == b""  # closed when the read time is up, rather than held for ever
    assert post(url, event) == 200  # a proper push is still taken
    engine = open_database(env["CAMPAIGN_DATABASE_URL"])
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM delivery_events").scalar_one() == 1
    engine.dispose()


def test_stop_replies_and_hard_bounces_are_suppressed(env: dict[str, str], receiver: str) -> None:
    pixabits, rcs = receiver + "/webhooks/pixabits", receiver + "/webhooks/noxitel/rcs"
    assert (
        post(
            pixabits,
            {"event": "wa.message.received", "data": {"message_id": "w1", "from": "+919876543210", "text": "STOP"}},
        )
        == 200
    )
    assert (
        post(
            pixabits,
            {"event": "wa.message.received", "data": {"message_id": "w2", "from": "+919876543211", "text": "Thanks!"}},
        )
        == 200
    )
    assert (
        post(
            rcs,
            {
                "event": "message.received",
                "agentId": "42",
                "msgId": "m1",
                "from": "919876543212",
                "message": {"type": "text", "text": "Unsubscribe"},
            },
        )
        == 200
    )
    assert (
        post(
            pixabits,
            {"event": "email.bounced", "data": {"message_id": "e1", "to": "gone@example.com", "bounce_type": "hard"}},
        )
        == 200
    )
    assert (
        post(
            pixabits,
            {"event": "wa.message.received", "data": {"message_id": "w3", "from": "+919876543213", "text": "STOP"}},
            secret="forged",
        )
        == 401
    )
    listed = orjson.loads(campaign(env, "suppress", "list", "--json").stdout)
    assert sorted((r["address"], r["reason"]) for r in listed) == [
        ("+919876543210", "opt-out reply"),
        ("+919876543212", "opt-out reply"),
        ("gone@example.com", "hard bounce"),
    ]
