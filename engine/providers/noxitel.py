"""Noxitel client: `/sms` with `#var#` contacts, `/dlr`, `/credits`, RCS and WhatsApp.

Numbers go out without the plus (`919887111111`) and come back as strings or,
in `/dlr`, as JSON integers; both become canonical `+919887111111`. One call
carries one message text, so a personalised batch is sent as its `#var#`
template with each contact's `parameters` and Noxitel renders it: the text the
operator sees is the DLT-registered one. `/dlr` is a GET with a JSON body, as
published. Times without a zone (`schedule`, `/dlr` times) are in the service's
"system timezone", which the reference does not name; we read it as India's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import aiohttp
import orjson

from engine.errors import InvalidRequest
from engine.gsm import is_gsm7
from engine.providers.base import (
    Balance,
    Channel,
    DeliveryReport,
    HttpProvider,
    InboundMessage,
    OutboundMessage,
    RcsBatch,
    RcsCapability,
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
from engine.providers.limits import RatePlan, noxitel_plan
from engine.store.states import UNKNOWN
from engine.store.states import MessageStatus as S

if TYPE_CHECKING:
    from engine.settings import Settings

DEFAULT_BASE_URL = "https://dashboard.noxitel.com/api/v2"
#: The service's clock, for times it writes without a zone.
SYSTEM_ZONE = ZoneInfo("Asia/Kolkata")
_MONEY_WORDS = re.compile(r"credit|balance|wallet", re.IGNORECASE)


#: Noxitel words (SMS `dlr.status` or its operator reply, RCS and WhatsApp report statuses), lower-cased.
STATUSES: dict[Channel, dict[str, S | None]] = {
    Channel.SMS: {
        "pending": None,
        "submitted": S.SUBMITTED,
        "sent": S.SENT,
        "handset delivered": S.DELIVERED,
        "delivered": S.DELIVERED,
        "delivrd": S.DELIVERED,
        "undelivered": S.UNDELIVERABLE,
        "undeliv": S.UNDELIVERABLE,
        "failed": S.FAILED,
        "expired": S.EXPIRED,
        "rejected": S.REJECTED,
        "rejectd": S.REJECTED,
        "dlt template not registered": S.REJECTED,
        "dnd": S.REJECTED,
        "ndnc": S.REJECTED,
        "blacklisted": S.REJECTED,
        "invalid number": S.REJECTED,
    },
    Channel.RCS: {
        "pending": None,
        "sent": S.SENT,
        "delivered": S.DELIVERED,
        "read": S.READ,
        "failed": S.FAILED,
        "incompatible": S.UNDELIVERABLE,
    },
    Channel.WHATSAPP: {"sent": S.SENT, "delivered": S.DELIVERED, "read": S.READ, "failed": S.FAILED},
}


def to_noxitel(number: str) -> str:
    return number.removeprefix("+")


def from_noxitel(number: Any) -> str:
    text = str(number).strip()
    return text if text.startswith("+") else "+" + text


def _message_of(response: Response) -> str:
    data = response.data
    text = data.get("message") if isinstance(data, dict) else data
    return str(text or f"HTTP {response.status}")[:500]


def _ids(rows: Any, number_key: str, id_key: str) -> dict[str, str]:
    if not isinstance(rows, list):
        return {}
    return {from_noxitel(r[number_key]): str(r[id_key]) for r in rows if r.get(number_key) and r.get(id_key)}


class NoxitelClient(HttpProvider):
    """One text per call, personalised by Noxitel from a `#var#` template and each contact's `parameters`;
    reports are polled (`/dlr`, `/rcs/dlr` per batch, WhatsApp per message) or pushed to a per-call
    `notifyUrl`; an RCS call may carry its own `smsFallback`."""

    name = "noxitel"
    #: Noxitel states no limit per call, so Pixabits' published SMS cap is used on every channel.
    call_limits: ClassVar[dict[Channel, int]] = {Channel.SMS: 50_000, Channel.RCS: 50_000, Channel.WHATSAPP: 50_000}
    renders_templates = frozenset({Channel.SMS, Channel.RCS})
    one_text_per_call = frozenset({Channel.WHATSAPP})
    takes_notify_url = True
    sms_fallback_per_call = True
    names_rcs_agent = True
    template_variable = re.compile(r"#\w+#")
    polls_reports = True
    reports_per_message = frozenset({Channel.WHATSAPP})
    webhook_paths = ("/webhooks/noxitel", "/webhooks/noxitel/rcs")

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        *,
        rcs_agent_id: int | None = None,
        route_id: int | None = None,
        connect_timeout: float = 5.0,
        total_timeout: float = 60.0,
    ) -> None:
        super().__init__(api_key, base_url, session, connect_timeout=connect_timeout, total_timeout=total_timeout)
        self.rcs_agent_id = rcs_agent_id
        self.route_id = route_id

    @classmethod
    def configured_key(cls, settings: Settings) -> str:
        return settings.noxitel_api_key.get_secret_value()

    @classmethod
    def configured_url(cls, settings: Settings) -> str:
        return settings.noxitel_base_url

    @classmethod
    def rate_plan(cls, settings: Settings) -> RatePlan:
        return noxitel_plan(settings.noxitel_rate)

    @classmethod
    def canonical_status(cls, report: DeliveryReport, provider_fallback: bool = False) -> S | str | None:
        words = STATUSES.get(report.channel, {})
        # The operator's reply says more than Noxitel's own word (`Failed` with `UNDELIV` is a number that
        # cannot take the message, not a failure worth retrying), where it is a word known here.
        detail = (report.detail or "").lower()
        word = detail if detail in words else report.status.lower()
        if word not in words:
            return UNKNOWN
        status = words[word]
        if status is S.UNDELIVERABLE and word == "incompatible" and provider_fallback:
            return S.FALLBACK
        return status

    async def batch_reports(self, channel: Channel, batch_id: str) -> list[DeliveryReport]:
        if channel is Channel.RCS:
            return await self.rcs_reports(batch_id=batch_id)
        if channel is Channel.SMS:
            return await self.sms_reports(batch_id=batch_id)
        return await super().batch_reports(channel, batch_id)

    async def message_report(self, channel: Channel, message_id: str) -> DeliveryReport:
        if channel is Channel.WHATSAPP:
            return await self.whatsapp_report(message_id)
        return await super().message_report(channel, message_id)

    def _is_success(self, response: Response) -> bool:
        # Errors may come as 200 with {"status": "error"} or {"success": false}.
        data = response.data
        if isinstance(data, dict) and (data.get("status") == "error" or data.get("success") is False):
            return False
        return 200 <= response.status < 300

    def _error_for(self, response: Response) -> ProviderError:
        status, message = response.status, _message_of(response)
        if status == 429:
            return RateLimited(self.name, message, status, self.retry_after(response.headers))
        if status == 402 or (status < 300 and _MONEY_WORDS.search(message)):
            return InsufficientCredits(self.name, message, status)
        if status == 401:
            hint = "allow this machine's IP in the Noxitel dashboard"
            return AuthenticationFailed(self.name, f"{message} ({hint})", status)
        if status == 403:
            return AuthenticationFailed(self.name, f"{message} (check NOXITEL_API_KEY)", status)
        if status >= 500:
            return TransientError(self.name, message, status)
        return RequestRejected(self.name, message, status)

    def _submission(self, channel: Channel, data: dict[str, Any], number_key: str, id_key: str) -> Submission:
        return Submission(
            provider=self.name,
            channel=channel,
            accepted=int(data.get("total_contacts", 0)),
            batch_id=data.get("batch_id"),
            message_ids=_ids(data.get("message_id"), number_key, id_key),
            status=data.get("status"),
            cost=data.get("total_cost"),
        )

    # SMS -------------------------------------------------------------------

    async def send_sms(self, batch: SmsBatch) -> Submission:
        self.check_size(Channel.SMS, len(batch.messages))
        message, contacts = _one_text(batch.messages, batch.template, "mobile")
        body: dict[str, Any] = {
            "sender": batch.sender,
            "message": message,
            "contacts": contacts,
            "mode": _mode(batch.unicode, message, batch.messages),
        }
        if self.route_id is not None:
            body["routeId"] = self.route_id
        if batch.dlt_entity_id:
            body["dlt_entity_id"] = batch.dlt_entity_id
        if batch.dlt_template_id:
            body["dlt_template_id"] = batch.dlt_template_id
        if batch.notify_url:
            body["notifyUrl"] = batch.notify_url
        if batch.schedule is not None:
            body["schedule"] = batch.schedule.astimezone(SYSTEM_ZONE).strftime("%Y-%m-%d %H:%M:%S")
        response = await self._call("POST", "/sms", body)
        return self._submission(Channel.SMS, response.data, "mobile", "sms_id")

    async def sms_reports(self, *, batch_id: str | None = None, sms_id: str | None = None) -> list[DeliveryReport]:
        """Delivery reports of a batch or of one message; rows match on (batch_id, mobile)."""
        if (batch_id is None) == (sms_id is None):
            raise InvalidRequest("give exactly one of batch_id or sms_id")
        query = {"batch_id": batch_id} if batch_id else {"sms_id": sms_id}
        data = (await self._call("GET", "/dlr", query)).data
        return [sms_report(row, batch_id, sms_id) for row in data.get("data", [])]

    async def balance(self) -> Balance:
        data = (await self._call("GET", "/credits")).data
        wallet = data.get("wallet") or {}
        routes = data.get("credits") or []
        return Balance(
            provider=self.name,
            amount=float(wallet.get("amount", 0)),
            currency=str(wallet.get("currency", "")),
            credits=float(sum(float(r.get("credits", 0)) for r in routes)) if routes else None,
        )

    # RCS -------------------------------------------------------------------

    def _agent(self, agent_id: int | None) -> int:
        agent = agent_id if agent_id is not None else self.rcs_agent_id
        if agent is None:
            raise InvalidRequest("Noxitel RCS needs an agent id (the campaign's --agent-id)")
        return agent

    async def rcs_capability(self, to: str, agent_id: int | None = None) -> RcsCapability:
        params = {"mobile": to_noxitel(to), "agentId": str(self._agent(agent_id))}
        data = (await self._call("GET", "/rcs/capability", params=params)).data
        return RcsCapability(to=to, enabled=bool(data.get("rcsEnabled")), features=tuple(data.get("features") or ()))

    async def send_rcs(self, batch: RcsBatch) -> Submission:
        self.check_size(Channel.RCS, len(batch.messages))
        content = dict(batch.content)
        contacts: list[dict[str, Any]]
        if batch.kind == "text" and (batch.template or any(m.body for m in batch.messages)):
            content["text"], contacts = _one_text(batch.messages, batch.template, "mobile")
        else:
            contacts = [_contact("mobile", m) for m in batch.messages]
        body: dict[str, Any] = {
            "type": batch.kind,
            "content": content,
            "contacts": contacts,
            "agentId": self._agent(batch.agent_id),
        }
        if batch.fallback is not None:
            fallback: dict[str, Any] = {
                "enabled": True,
                "sender": batch.fallback.sender,
                "message": batch.fallback.message,
            }
            if batch.fallback.route_id is not None:
                fallback["routeId"] = batch.fallback.route_id
            body["smsFallback"] = fallback
        if batch.notify_url:
            body["notifyUrl"] = batch.notify_url
        if batch.traffic_type:
            body["trafficType"] = batch.traffic_type
        response = await self._call("POST", "/rcs/message", body)
        return self._submission(Channel.RCS, response.data, "mobile", "msg_id")

    async def rcs_reports(self, *, batch_id: str | None = None, msg_id: str | None = None) -> list[DeliveryReport]:
        if (batch_id is None) == (msg_id is None):
            raise InvalidRequest("give exactly one of batch_id or msg_id")
        params = {"batch_id": batch_id} if batch_id else {"msg_id": msg_id}
        data = (await self._call("GET", "/rcs/dlr", params=params)).data
        return [
            DeliveryReport(
                provider=self.name,
                channel=Channel.RCS,
                to=from_noxitel(row["mobile"]),
                status=str(row.get("dlr", {}).get("status", "")),
                batch_id=batch_id,
                message_id=row.get("msg_id"),
                occurred_at=parse_datetime(row.get("dlr", {}).get("delivery_time"), SYSTEM_ZONE),
                raw=row,
                cost=stated_cost(row),
            )
            for row in data.get("data", [])
        ]

    # WhatsApp ----------------------------------------------------------------

    async def send_whatsapp(self, batch: WhatsAppBatch) -> Submission:
        self.check_size(Channel.WHATSAPP, len(batch.messages))
        body: dict[str, Any]
        if batch.template is None:
            texts = {m.body for m in batch.messages}
            if len(texts) != 1:
                raise InvalidRequest("Noxitel WhatsApp text takes one message per call; use a template to personalise")
            body = {
                "type": "text",
                "message": texts.pop(),
                "contacts": [{"msisdn": to_noxitel(m.to)} for m in batch.messages],
            }
        else:
            template = batch.template
            body = {
                "type": "template",
                "templateId": template.template_id,
                "contacts": [
                    {
                        "msisdn": to_noxitel(m.to),
                        "parameters": {
                            "header": list(template.header),
                            "body": positional(m.params or {}),
                            "buttons": list(template.buttons),
                        },
                    }
                    for m in batch.messages
                ],
            }
        if batch.phone_id:
            body["phoneId"] = batch.phone_id
        response = await self._call("POST", "/whatsapp/message", body)
        return self._submission(Channel.WHATSAPP, response.data, "msisdn", "msg_id")

    async def whatsapp_report(self, msg_id: str) -> DeliveryReport:
        data = (await self._call("GET", "/whatsapp/report", params={"mode": "message", "id": msg_id})).data
        return self._wa_report(data)

    def _wa_report(self, row: Mapping[str, Any]) -> DeliveryReport:
        return DeliveryReport(
            provider=self.name,
            channel=Channel.WHATSAPP,
            to=from_noxitel(row["msisdn"]),
            status=str(row.get("status", "")),
            message_id=row.get("msg_id"),
            occurred_at=parse_datetime(row.get("timestamp")),
            raw=dict(row),
            cost=stated_cost(row),
        )

    async def whatsapp_window_open(self, to: str, phone_id: str) -> bool:
        """Whether the 24-hour service window is open, i.e. free-form text may be sent."""
        params = {"phoneId": phone_id, "msisdn": to_noxitel(to)}
        return bool((await self._call("GET", "/whatsapp/checkwindow", params=params)).data.get("window_open"))

    # Webhooks ----------------------------------------------------------------

    @classmethod
    def parse_webhook(cls, body: bytes) -> list[WebhookEvent]:
        """SMS `notifyUrl` pushes (a `/dlr` row with `batch_id` and `sms_id`) and RCS events."""
        payload = orjson.loads(body)
        events = payload if isinstance(payload, list) else [payload]
        return [parsed for event in events if (parsed := cls._event(event)) is not None]

    @classmethod
    def _event(cls, event: Any) -> WebhookEvent | None:
        if not isinstance(event, dict):
            return None
        if "dlr" in event and event.get("mobile"):
            return sms_report(event, event.get("batch_id"), event.get("sms_id"))
        name = str(event.get("event", ""))
        at = parse_datetime(event.get("timestamp"))
        if name == "message.received":
            reply = event.get("suggestionResponse") or {}
            message = event.get("message") or {}
            return InboundMessage(
                provider=cls.name,
                channel=Channel.RCS,
                sender=from_noxitel(event.get("from", "")),
                text=str(reply.get("text") or message.get("text") or ""),
                message_id=event.get("msgId"),
                occurred_at=at,
                raw=event,
            )
        number = event.get("mobile") or event.get("from")
        if name.startswith("message.") and event.get("msgId") and number:
            return DeliveryReport(
                provider=cls.name,
                channel=Channel.RCS,
                to=from_noxitel(number),
                status=str(event.get("status") or name.removeprefix("message.")),
                message_id=text_field(event["msgId"], "msgId"),
                occurred_at=at,
                raw=event,
                cost=stated_cost(event),
            )
        return None


def _contact(key: str, message: OutboundMessage) -> dict[str, Any]:
    contact: dict[str, Any] = {key: to_noxitel(message.to)}
    if message.params:
        contact["parameters"] = dict(message.params)
    return contact


def _one_text(messages: Sequence[OutboundMessage], template: str | None, key: str) -> tuple[str, list[dict[str, Any]]]:
    """The call's one message text and its contacts: the `#var#` template with parameters, or a shared text."""
    if template is not None and any(m.params for m in messages):
        return template, [_contact(key, m) for m in messages]
    texts = {m.body for m in messages}
    if len(texts) == 1:
        return texts.pop(), [{key: to_noxitel(m.to)} for m in messages]
    raise InvalidRequest("Noxitel takes one message text per call: give the #var# template and each recipient's params")


def _mode(unicode: bool | None, message: str, messages: Sequence[OutboundMessage]) -> str:
    """`unicode` when every message needs it: the shared text itself, or every recipient's own text.

    Noxitel converts a single message to unicode when it finds it needs to, so a
    few non-GSM names must not turn the whole batch into UCS-2, which would
    double or triple its segments.
    """
    if unicode is not None:
        return "unicode" if unicode else "text"
    if not is_gsm7(message):
        return "unicode"
    if any(m.params for m in messages):
        texts = ("".join(str(v) for v in (m.params or {}).values()) for m in messages)
    else:
        texts = (m.body for m in messages)
    return "unicode" if not any(is_gsm7(t) for t in texts) else "text"


def stated_cost(row: Mapping[str, Any]) -> float | None:
    """The price a report row states (WhatsApp reports do), or None."""
    value = row.get("cost")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sms_report(row: Mapping[str, Any], batch_id: str | None, sms_id: str | None = None) -> DeliveryReport:
    """One row of a `/dlr` answer (polled by batch or by message), or an SMS push, which is such a row, as a
    report."""
    dlr = row.get("dlr") or {}
    if not isinstance(dlr, dict):
        raise ValueError(f"dlr must be an object, not {type(dlr).__name__}")
    return DeliveryReport(
        provider=NoxitelClient.name,
        channel=Channel.SMS,
        to=from_noxitel(row["mobile"]),
        status=str(dlr.get("status", "")),
        detail=text_field(dlr.get("operator_reply"), "dlr.operator_reply"),
        batch_id=text_field(batch_id, "batch_id"),
        message_id=text_field(sms_id, "sms_id"),
        occurred_at=parse_datetime(dlr.get("delivery_time"), SYSTEM_ZONE),
        raw=row,
        cost=stated_cost(row),
    )
