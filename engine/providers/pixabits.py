"""Pixabits client: bulk SMS and email, single RCS and WhatsApp, wallet, webhook parsing.

Numbers go out as `+919876543210`. Bulk SMS answers with a batch id only, so
per-recipient ids arrive with the webhooks (matched on the number). DLT ids go
as top-level `dlt_entity_id` / `dlt_template_id` (unpublished; read like
Noxitel's). A 403 that speaks of balance or credits is read as insufficient
credits, since the published table has no 402.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from engine.errors import InvalidRequest
from engine.providers.base import (
    Balance,
    Channel,
    DeliveryReport,
    EmailBatch,
    HttpProvider,
    InboundMessage,
    RcsBatch,
    Response,
    SmsBatch,
    Submission,
    WebhookEvent,
    WhatsAppBatch,
    parse_datetime,
    positional,
    text_field,
)
from engine.providers.errors import (
    AuthenticationFailed,
    InsufficientCredits,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientError,
)
from engine.providers.limits import PIXABITS_PLANS, RatePlan
from engine.store.states import UNKNOWN
from engine.store.states import MessageStatus as S

if TYPE_CHECKING:
    from engine.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.pixabits.ai"
_MONEY_WORDS = re.compile(r"balance|credit|wallet|fund", re.IGNORECASE)
_CHANNEL_OF_EVENT = {"sms": Channel.SMS, "email": Channel.EMAIL, "rcs": Channel.RCS, "wa": Channel.WHATSAPP}


#: Pixabits events; a failure's kind is in the report's detail.
STATUSES: dict[str, S] = {
    "sms.message.delivered": S.DELIVERED,
    "sms.message.failed": S.FAILED,
    "email.delivered": S.DELIVERED,
    "email.opened": S.READ,
    "email.clicked": S.READ,
    "email.bounced": S.FAILED,
    "rcs.message.delivered": S.DELIVERED,
    "rcs.message.read": S.READ,
    "rcs.fallback.triggered": S.FALLBACK,
    "wa.message.delivered": S.DELIVERED,
    "wa.message.read": S.READ,
}
FAILURES: dict[str, S] = {
    "undeliv": S.UNDELIVERABLE,
    "expired": S.EXPIRED,
    "dlt_template_not_registered": S.REJECTED,
    "dnd": S.REJECTED,
    "invalid_number": S.REJECTED,
    "hard": S.UNDELIVERABLE,
}


def _message_of(response: Response) -> str:
    data = response.data
    text = data.get("message") or data.get("code") if isinstance(data, dict) else data
    return str(text or f"HTTP {response.status}")[:500]


class PixabitsClient(HttpProvider):
    """Bulk SMS (50,000 a call) and email (10,000); RCS and WhatsApp one recipient a call. Reports come by
    push only, to the webhook set in the account's dashboard, as does its RCS fallback."""

    name = "pixabits"
    call_limits: ClassVar[dict[Channel, int]] = {
        Channel.SMS: 50_000,
        Channel.EMAIL: 10_000,
        Channel.RCS: 1,
        Channel.WHATSAPP: 1,
    }
    webhook_paths = ("/webhooks/pixabits",)
    #: Its RCS agent and SMS fallback are set in the Pixabits account: a call names neither.
    names_rcs_agent = False
    sms_fallback_per_call = False

    @classmethod
    def configured_key(cls, settings: Settings) -> str:
        return settings.pixabits_api_key.get_secret_value()

    @classmethod
    def configured_url(cls, settings: Settings) -> str:
        return settings.pixabits_base_url

    @classmethod
    def rate_plan(cls, settings: Settings) -> RatePlan:
        return PIXABITS_PLANS[settings.pixabits_plan]

    @classmethod
    def hard_bounce(cls, report: DeliveryReport) -> bool:
        return report.status == "email.bounced" and (report.detail or "").lower() == "hard"

    @classmethod
    def canonical_status(cls, report: DeliveryReport, provider_fallback: bool = False) -> S | str | None:
        status = STATUSES.get(report.status.lower())
        if status is S.FAILED and report.detail:
            return FAILURES.get(report.detail.lower(), S.FAILED)
        return status if status is not None else UNKNOWN

    def _error_for(self, response: Response) -> ProviderError:
        status, message = response.status, _message_of(response)
        if status == 429:
            return RateLimited(self.name, message, status, self.retry_after(response.headers))
        if status == 402 or (status == 403 and _MONEY_WORDS.search(message)):
            return InsufficientCredits(self.name, message, status)
        if status == 401:
            return AuthenticationFailed(self.name, f"{message} (check PIXABITS_API_KEY)", status)
        if status == 403:
            return AuthenticationFailed(self.name, f"{message} (check PIXABITS_API_KEY and PIXABITS_PLAN)", status)
        if status >= 500:
            return TransientError(self.name, message, status)
        return RequestRejected(self.name, message, status)

    async def send_sms(self, batch: SmsBatch) -> Submission:
        self.check_size(Channel.SMS, len(batch.messages))
        extra: dict[str, Any] = {"sender": batch.sender}
        if batch.kind:
            extra["type"] = batch.kind
        if batch.dlt_entity_id:
            extra["dlt_entity_id"] = batch.dlt_entity_id
        if batch.dlt_template_id:
            extra["dlt_template_id"] = batch.dlt_template_id
        if len(batch.messages) == 1:
            message = batch.messages[0]
            response = await self._call("POST", "/v2/sms/send", {"to": message.to, "body": message.body, **extra})
            return self._single(Channel.SMS, message.to, response.data)
        body = {"messages": [{"to": m.to, "body": m.body} for m in batch.messages], **extra}
        response = await self._call("POST", "/v2/sms/bulk", body)
        return self._bulk(Channel.SMS, response.data)

    async def send_email(self, batch: EmailBatch) -> Submission:
        self.check_size(Channel.EMAIL, len(batch.messages))
        if len(batch.messages) == 1:
            m = batch.messages[0]
            single = {"to": m.to, "from": batch.sender, "subject": m.subject, "html": m.body}
            response = await self._call("POST", "/v2/email/send", single)
            return self._single(Channel.EMAIL, m.to, response.data)
        body: dict[str, Any] = {
            "from": batch.sender,
            "messages": [{"to": m.to, "subject": m.subject, "html": m.body} for m in batch.messages],
        }
        response = await self._call("POST", "/v2/email/send/bulk", body)
        return self._bulk(Channel.EMAIL, response.data)

    async def send_rcs(self, batch: RcsBatch) -> Submission:
        """One text message per call; the SMS fallback is an account setting at Pixabits, not a request field."""
        self.check_size(Channel.RCS, len(batch.messages))
        if batch.kind != "text":
            raise InvalidRequest(f"Pixabits RCS {batch.kind} is not supported: only /v1/rcs/send (text) is published")
        if batch.fallback is not None:
            raise InvalidRequest("Pixabits takes no per-request SMS fallback; it is configured in its dashboard")
        message = batch.messages[0]
        body: dict[str, Any] = {"to": message.to, "text": message.body}
        suggestions = batch.content.get("suggestions")
        if suggestions:
            body["suggestions"] = list(suggestions)
        response = await self._call("POST", "/v1/rcs/send", body)
        return self._single(Channel.RCS, message.to, response.data)

    async def send_whatsapp(self, batch: WhatsAppBatch) -> Submission:
        self.check_size(Channel.WHATSAPP, len(batch.messages))
        message = batch.messages[0]
        if batch.template is None:
            body: dict[str, Any] = {"to": message.to, "type": "text", "text": {"body": message.body}}
            response = await self._call("POST", "/v1/wa/messages", body)
        else:
            template = batch.template
            body = {
                "to": message.to,
                "template_id": template.template_id,
                "language": template.language,
                "parameters": {
                    "header": list(template.header),
                    "body": positional(message.params or {}),
                    "buttons": list(template.buttons),
                },
            }
            response = await self._call("POST", "/v1/wa/messages/template", body)
        return self._single(Channel.WHATSAPP, message.to, response.data)

    async def balance(self) -> Balance:
        data = (await self._call("GET", "/v1/billing/wallet")).data
        plan = data.get("plan")
        return Balance(
            provider=self.name,
            amount=float(data.get("balance", 0)),
            currency=str(data.get("currency", "")),
            credits=float(data["credits"]) if data.get("credits") is not None else None,
            plan=plan.get("name") if isinstance(plan, dict) else plan,
        )

    def _single(self, channel: Channel, to: str, data: dict[str, Any]) -> Submission:
        message_id = data.get("message_id")
        return Submission(
            provider=self.name,
            channel=channel,
            accepted=1,
            message_ids={to: message_id} if message_id else {},
            status=data.get("status"),
            cost=data.get("credits_used"),
        )

    def _bulk(self, channel: Channel, data: dict[str, Any]) -> Submission:
        log.info("pixabits accepted %s %s messages as %s", data.get("total"), channel.value, data.get("batch_id"))
        return Submission(
            provider=self.name,
            channel=channel,
            accepted=int(data.get("total", 0)),
            batch_id=data.get("batch_id"),
            status=data.get("status"),
        )

    @classmethod
    def parse_webhook(cls, body: bytes) -> list[WebhookEvent]:
        """One Pixabits event per POST: `{"event", "timestamp", "data": {...}}`; others are skipped."""
        payload = orjson.loads(body)
        events = payload if isinstance(payload, list) else [payload]
        return [parsed for event in events if (parsed := cls._event(event)) is not None]

    @classmethod
    def _event(cls, event: Any) -> WebhookEvent | None:
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            return None
        name = str(event.get("event", ""))
        channel = _CHANNEL_OF_EVENT.get(name.split(".", 1)[0])
        if channel is None:
            return None
        data = event["data"]
        at = parse_datetime(data.get("delivered_at") or event.get("timestamp"))
        if name == "wa.message.received":
            return InboundMessage(
                provider=cls.name,
                channel=channel,
                sender=str(data.get("from", "")),
                text=str(data.get("text") or data.get("body") or ""),
                message_id=text_field(data.get("message_id"), "data.message_id"),
                occurred_at=at,
                raw=event,
            )
        if not data.get("to"):
            return None
        detail = data.get("error") or data.get("bounce_type") or data.get("fallback_channel")
        return DeliveryReport(
            provider=cls.name,
            channel=channel,
            to=str(data["to"]),
            status=name,
            detail=str(detail) if detail else None,
            message_id=text_field(data.get("message_id"), "data.message_id"),
            occurred_at=at,
            raw=event,
        )
