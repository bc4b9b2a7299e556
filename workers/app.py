"""The Celery app: Redis broker, one queue per provider, and settings that make a lost task harmless.

Run a worker with `celery -A workers.app worker -Q send.pixabits,send.noxitel,plan,dlr,default`
and beat with `celery -A workers.app beat`. Its schedule is in `schedules/`, whose tasks module (in the
app's `include`, which beat imports before it reads the schedule) gives the app its `beat_schedule`.

The database holds the work and the broker only rings the bell, so the broker
settings aim at "delivered at least once, acted on at most once":
`acks_late` with `reject_on_worker_lost` puts a task back if its worker dies,
prefetch 1 keeps one worker from sitting on tasks others could run, and the
visibility timeout (after which Redis hands an unacknowledged task out again)
is far longer than any task may run. A duplicate delivery is harmless because
every task claims its batch in the database first.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Queue

from engine.providers import PROVIDERS
from engine.settings import Settings, get_settings

SEND_QUEUES = tuple(f"send.{name}" for name in PROVIDERS)  # send_queue(name) of each provider
QUEUES = (*SEND_QUEUES, "plan", "dlr", "default")
#: The queue of each task that does not go to `default` (send tasks go to their provider's `send_queue`). The
#: schedule scanner may plan a recurring campaign: heavy, like `campaign.start_campaign`.
ROUTES = {
    "campaign.start_campaign": {"queue": "plan"},
    "campaign.poll_dlr": {"queue": "dlr"},
    "campaign.scan_schedules": {"queue": "plan"},
    "campaign.check_wallets": {"queue": "default"},
}
#: A task is killed after this long; the visibility timeout is well beyond it.
TASK_TIME_LIMIT = 30 * 60
VISIBILITY_TIMEOUT = 4 * TASK_TIME_LIMIT


def send_queue(provider: str) -> str:
    return f"send.{provider}"


def make_app(settings: Settings) -> Celery:
    app = Celery("campaign", include=["workers.tasks", "schedules.tasks"])
    broker = settings.broker_url or "redis://127.0.0.1:6379/0"
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT, "global_keyprefix": settings.broker_prefix}
    app.conf.update(
        broker_url=broker,
        result_backend=broker,
        broker_transport_options=transport,
        result_backend_transport_options={"global_keyprefix": settings.broker_prefix},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 60,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="default",
        task_routes=ROUTES,
        result_expires=24 * 3600,
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(get_settings())
