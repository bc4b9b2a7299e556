"""The common design the send benchmark compares against: one Celery task and one HTTP request per message.

Each task reads its message row, posts one `/v2/sms/send`, and writes the
provider's id back: what a first version of a bulk sender usually looks like.
Run by `bench_send`: `celery -A tests.benchmarks.per_message worker`.
"""

from __future__ import annotations

import os
import urllib.request

import orjson
from celery import Celery
from sqlalchemy import create_engine, text

app = Celery("per_message", broker=os.environ.get("CAMPAIGN_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_transport_options={"global_keyprefix": os.environ.get("CAMPAIGN_BROKER_PREFIX", "bench:")},
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
)
_engine = None


def engine():  # type: ignore[no-untyped-def]
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ["CAMPAIGN_DATABASE_URL"])
    return _engine


@app.task(name="bench.send_one")
def send_one(message_id: int) -> None:
    with engine().begin() as connection:
        address, body = connection.execute(
            text("SELECT address, body FROM messages WHERE id = :id"), {"id": message_id}
        ).one()
        request = urllib.request.Request(
            os.environ["PIXABITS_BASE_URL"] + "/v2/sms/send",
            data=orjson.dumps({"to": address, "body": body, "sender": "ACMEIN"}),
            headers={"Authorization": f"Bearer {os.environ['PIXABITS_API_KEY']}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = orjson.loads(response.read())
        connection.execute(
            text("UPDATE messages SET status = 'submitted', provider_message_id = :pid WHERE id = :id"),
            {"pid": answer["message_id"], "id": message_id},
        )
