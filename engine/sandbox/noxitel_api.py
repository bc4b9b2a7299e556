"""Noxitel as the sandbox plays it, served under `/api/v2`.

Shapes follow the published reference field for field (numbers without `+`,
errors as `{"success": false, "status", "message"}`, `/dlr` as a GET with a
JSON body). Where the reference is silent the sandbox takes these readings:
50,000 contacts per call, a 400 for a request holding an SMS of more parts
than `max_sms_parts` (each contact's text, or the RCS `smsFallback`), each
text encoded on its own unless `mode` is `unicode`, `notifyUrl` SMS pushes as
one `/dlr` row plus `batch_id` and `sms_id`, and a WhatsApp campaign id taken
from an optional `campaignId` on `/whatsapp/message`.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from engine.gsm import MULTI, SINGLE, Encoding, is_gsm7, length_in_units, segments
from engine.sandbox.http import ACCOUNT, PUSHER, STATE, Reject, accept, json_response, read_json
from engine.sandbox.outcomes import fate, fraction, rcs_capable, whatsapp_window_open
from engine.sandbox.state import Account, SandboxState, Send

PROVIDER = "noxitel"
#: A country code and a number, no plus: a bare 10-digit national number is refused.
MOBILE = re.compile(r"^[1-9]\d{10,14}$")
MOBILES = re.compile(r"(?:[1-9]\d{10,14}\n)*[1-9]\d{10,14}")
#: The service's clock: `schedule` is read and report times are written in it.
SYSTEM_ZONE = ZoneInfo("Asia/Kolkata")
DLT_ID = re.compile(r"^\d{1,19}$")
VAR = re.compile(r"#(\w+)#")
URL = re.compile(r"^https?://\S+$")
SMS_MODES = {"text", "flash", "unicode"}
RCS_TYPES = {"text", "media", "rich_card", "carousel", "template"}
TRAFFIC_TYPES = {"TRANSACTION", "PROMOTION", "AUTHENTICATION"}
WA_TYPES = {"text", "image", "video", "audio", "document", "reaction", "reply", "location", "template"}
WA_PRICE = 0.05
WA_PRICES = [
    {
        "country": "India",
        "zone": "Zone 2",
        "prefix": "+91",
        "price": {
            "marketing": 0.0492,
            "utility": 0.0147,
            "authentication": 0.0147,
            "authenticationInt": 0.0147,
            "service": 0,
        },
    },
]


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"success": False, "status": status, "message": message}


def _bad(message: str) -> dict[str, Any]:
    return error_body(400, message)


def _fail(message: str, status: int = 400) -> Reject:
    return Reject(status, error_body(status, message))


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _fail("Request body must be a JSON object")
    return body


def stamp(epoch: float) -> str:
    """Noxitel writes times as `YYYY-MM-DD HH:MM:SS` on the service's clock."""
    return datetime.fromtimestamp(epoch, SYSTEM_ZONE).strftime("%Y-%m-%d %H:%M:%S")


def iso_millis(epoch: float) -> str:
    """WhatsApp reports write ISO 8601 with milliseconds and a Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _mobile(value: Any, where: str) -> str:
    mobile = str(value) if isinstance(value, int | str) else ""
    if not MOBILE.match(mobile):
        raise _fail(f"Invalid mobile number at {where}: use the international format without +, like 919887111111")
    return mobile


def _charge(state: SandboxState, account: Account, credits: float, body: dict[str, Any] | None = None) -> None:
    """Spend credits for an accepted request, or refuse it whole with 402 (in `body`'s shape if given)."""
    if credits > account.credits + 1e-9:
        raise Reject(402, body or error_body(402, "Insufficient credits"))
    account.credits -= credits


def _notify_url(body: dict[str, Any]) -> str | None:
    url = body.get("notifyUrl")
    if url is not None and not (isinstance(url, str) and URL.match(url)):
        raise _fail("notifyUrl must be an http(s) URL")
    return url


def _schedule(body: dict[str, Any], now: float) -> float:
    """When the messages leave: now, or the `schedule` time (`YYYY-MM-DD HH:MM:SS`)."""
    value = body.get("schedule")
    if value is None:
        return now
    try:
        return max(now, datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SYSTEM_ZONE).timestamp())
    except (TypeError, ValueError):
        raise _fail("schedule must be formatted YYYY-MM-DD HH:MM:SS") from None


def _contacts(
    body: dict[str, Any], key: str, limit: int, needed: set[str], scalar_params: bool = True
) -> tuple[list[str], list[dict[str, Any]]]:
    """Validated numbers of a `contacts` array, with each contact's parameters.

    Validation runs over the whole array at once (one regex pass over the joined
    numbers); only a failing array is walked again to name the first bad entry.
    """
    if body.get("contactGroup") is not None and body.get("contacts") is None:
        raise _fail(f"Contact group {body['contactGroup']} not found", 404)
    contacts = body.get("contacts")
    if not isinstance(contacts, list) or not contacts:
        raise _fail("contacts is required: an array of {" + key + ", parameters?}")
    if len(contacts) > limit:
        raise _fail(f"Too many contacts: at most {limit} per request, got {len(contacts)}")
    try:
        numbers = [str(c[key]) if type(c[key]) in (str, int) else "" for c in contacts]
        parameters = [c.get("parameters") or {} for c in contacts]
    except (TypeError, KeyError, AttributeError):
        numbers, parameters = [], []
    if not numbers or not MOBILES.fullmatch("\n".join(numbers)):
        for i, contact in enumerate(contacts):
            if not isinstance(contact, dict):
                raise _fail(f"contacts[{i}] must be an object")
            _mobile(contact.get(key), f"contacts[{i}].{key}")
    for i, params in enumerate(parameters):
        if type(params) is not dict:
            raise _fail(f"contacts[{i}].parameters must be an object")
        if needed and not needed.issubset(params):
            raise _fail(f"Missing parameter '{sorted(needed.difference(params))[0]}' for contacts[{i}]")
        if scalar_params and params and not all(type(v) in (str, int, float) for v in params.values()):
            raise _fail(f"contacts[{i}].parameters values must be text or numbers")
    if len(set(numbers)) != len(numbers):
        raise _fail("The same mobile number appears more than once in contacts")
    return numbers, parameters


def _render(message: str, params: dict[str, Any]) -> str:
    """One contact's text: each `#var#` of the message replaced by its parameter."""
    return VAR.sub(lambda m: str(params[m.group(1)]), message)


def _sms_parts(message: str, mode: str, parameters: list[dict[str, Any]]) -> list[int]:
    """Segments each contact's text takes, rendered from the `#var#` message, all in one encoding (UCS-2 if
    any text needs it), as the request is billed.

    Lengths are added up instead of rendering 50,000 strings; a rare text with
    GSM-7 extension characters or characters beyond the BMP is rendered for real.
    """
    occurrences = Counter(VAR.findall(message))
    static = VAR.sub("", message)
    values = [str(p[name]) for p in parameters for name in occurrences]
    joined = "".join(values)
    encoding: Encoding = "ucs2" if mode == "unicode" or not is_gsm7(static + joined) else "gsm7"
    if not occurrences:
        return [segments(message, encoding)] * len(parameters)
    if length_in_units(static + joined, encoding) != len(static) + len(joined):
        return [segments(_render(message, p), encoding) for p in parameters]
    weights = list(occurrences.values())
    lengths = [len(v) for v in values]
    base, k = len(static), len(weights)
    if k == 1:
        units = [base + weights[0] * n for n in lengths]
    else:
        units = [
            base + sum(n * w for n, w in zip(lengths[i : i + k], weights, strict=True))
            for i in range(0, len(lengths), k)
        ]
    single, multi = SINGLE[encoding], MULTI[encoding]
    return [1 if u <= single else -(-u // multi) for u in units]


def _refuse_long_sms(message: str, mode: str, parameters: list[dict[str, Any]], parts: list[int], most: int) -> None:
    """A 400 naming the first contact whose SMS takes more than `most` parts. `parts` may count a GSM-7
    text as UCS-2 (billing's one encoding), so a text over the limit there is counted again on its own."""
    encoding: Encoding | None = "ucs2" if mode == "unicode" else None
    for i, counted in enumerate(parts):
        if counted > most:
            own = segments(_render(message, parameters[i]), encoding)
            if own > most:
                raise _fail(f"Message too long for contacts[{i}]: {own} SMS parts; at most {most} are allowed")


def _store(request: web.Request, channel: str, numbers: list[str], prefix: str, when: float, **extra: Any) -> Send:
    state: SandboxState = request.app[STATE]
    send = state.record(
        Send(
            state.new_token(prefix), PROVIDER, channel, request[ACCOUNT].key, ["+" + n for n in numbers], when, **extra
        )
    )
    send.batch_id = send.token
    state.by_batch[send.batch_id] = send
    request.app[PUSHER].schedule(send)
    accept(request, send.addresses)
    return send


def _own_message(request: web.Request, message_id: str, channel: str) -> tuple[Send, int] | None:
    """The message with this id, if the caller's account sent it on this channel (others' are not found)."""
    found = request.app[STATE].find_message(message_id)
    if found is None:
        return None
    send = found[0]
    return found if (send.provider, send.channel, send.key) == (PROVIDER, channel, request[ACCOUNT].key) else None


def _check_dlt(body: dict[str, Any]) -> None:
    for name in ("dlt_entity_id", "dlt_template_id"):
        value = body.get(name)
        if value is not None and not (isinstance(value, str | int) and DLT_ID.match(str(value))):
            raise _fail(f"{name} must be a numeric DLT id")


async def sms(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    if not isinstance(body.get("sender"), str) or not body["sender"].strip():
        raise _fail("sender is required")
    message = body.get("message")
    if body.get("templateId") is not None and message is None:
        raise _fail(f"Template {body['templateId']} not found", 404)
    if not isinstance(message, str) or not message.strip():
        raise _fail("message is required")
    mode = body.get("mode", "text")
    if mode not in SMS_MODES:
        raise _fail("mode must be text, flash or unicode")
    _check_dlt(body)
    notify = _notify_url(body)
    when = _schedule(body, state.clock.time())
    numbers, parameters = _contacts(body, "mobile", state.config.max_sms_per_call, set(VAR.findall(message)))
    parts = _sms_parts(message, mode, parameters)
    _refuse_long_sms(message, mode, parameters, parts, state.config.max_sms_parts)
    _charge(state, request[ACCOUNT], float(sum(parts)))
    india = any(n.startswith("91") for n in numbers)
    send = _store(
        request,
        "sms",
        numbers,
        "samsms_",
        when,
        notify_url=notify,
        dlt_missing=india and not body.get("dlt_template_id"),
    )
    send.meta["sender"] = body["sender"]
    return json_response(
        {
            "status": "success",
            "message": "SMS Submitted successfully",
            "batch_id": send.batch_id,
            "total_contacts": len(numbers),
            "message_id": [{"mobile": n, "sms_id": i} for n, i in zip(numbers, send.message_ids(), strict=True)],
        }
    )


def sms_dlr_row(state: SandboxState, send: Send, index: int) -> dict[str, Any]:
    fate_word, operator, settled_at = sms_fate(state, send, index)
    return {
        "sms_shoot_id": f"user_{send.token}{index:x}",
        "mobile": int(send.addresses[index][1:]),
        "sender_id": send.meta.get("sender", ""),
        "sent": stamp(send.accepted_at),
        "dlr": {
            "status": fate_word,
            "operator_reply": operator,
            "delivery_time": stamp(settled_at) if settled_at else None,
        },
    }


SMS_WORDS = {
    "delivered": ("Handset Delivered", "DELIVRD"),
    "failed": ("Undelivered", "UNDELIV"),
    "expired": ("Expired", "EXPIRED"),
    "rejected": ("DLT Template Not Registered", "REJECTD"),
}


def sms_fate(state: SandboxState, send: Send, index: int) -> tuple[str, str | None, float | None]:
    """Status word, operator reply and settle time of one SMS (pending until the delay has passed)."""
    settled_at = send.accepted_at + state.config.dlr_delay
    if state.clock.time() < settled_at:
        return "Pending", None, None
    status, operator = SMS_WORDS[sms_fate_key(state, send, index)]
    return status, operator, settled_at


def sms_fate_key(state: SandboxState, send: Send, index: int) -> str:
    if send.dlt_missing and send.addresses[index].startswith("+91"):
        return "rejected"
    return fate(state.config, send.addresses[index][1:])


def _report_rows(
    request: web.Request, channel: str, batch_id: str | None, id_name: str, message_id: str | None, row: Any
) -> web.Response:
    """A delivery report page: every message of one of the caller's batches, or one message by its id."""
    state: SandboxState = request.app[STATE]
    if batch_id:
        send = state.by_batch.get(batch_id)
        if send is None or send.channel != channel or send.key != request[ACCOUNT].key:
            raise _fail("No records found for this batch_id", 404)
        rows = [row(state, send, i) for i in range(len(send.addresses))]
    elif message_id:
        found = _own_message(request, message_id, channel)
        if found is None:
            raise _fail(f"No records found for this {id_name}", 404)
        rows = [row(state, *found)]
    else:
        raise _fail(f"batch_id or {id_name} is required")
    return json_response({"status": "success", "data": rows})


async def dlr(request: web.Request) -> web.Response:
    """A GET with a JSON body, as published (query parameters are read too)."""
    body = _object(await read_json(request, _bad))
    batch_id = body.get("batch_id") or request.query.get("batch_id")
    sms_id = body.get("sms_id") or request.query.get("sms_id")
    return _report_rows(request, "sms", batch_id, "sms_id", sms_id, sms_dlr_row)


async def credits(request: web.Request) -> web.Response:
    account: Account = request[ACCOUNT]
    return json_response(
        {
            "status": "success",
            "billing_mode": "credits",
            "wallet": {"amount": f"{account.credits / 100:.2f}", "currency": "USD"},
            "credits": [{"route": "Standard", "credits": int(account.credits)}],
        }
    )


def _agent_id(value: Any, required: bool) -> int | None:
    if value is None and not required:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _fail("agentId must be an integer") from None


async def rcs_capability(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    mobile = _mobile(request.query.get("mobile"), "mobile")
    _agent_id(request.query.get("agentId"), required=True)
    enabled = rcs_capable(state.config, mobile)
    features = ["RICHCARD_STANDALONE", "RICHCARD_CAROUSEL", "ACTION_OPEN_URL"] if enabled else []
    return json_response({"status": "success", "mobile": mobile, "rcsEnabled": enabled, "features": features})


def _rcs_content(body: dict[str, Any]) -> None:
    kind = body.get("type")
    if kind not in RCS_TYPES:
        raise _fail("type must be one of " + ", ".join(sorted(RCS_TYPES)))
    content = body.get("content")
    if content is None and body.get("templateId") is not None:
        raise _fail(f"Template {body['templateId']} not found", 404)
    if not isinstance(content, dict):
        raise _fail("content is required")
    if kind == "text" and not (isinstance(content.get("text"), str) and content["text"].strip()):
        raise _fail("content.text is required for type text")
    if kind == "rich_card" and not isinstance(content.get("card"), dict):
        raise _fail("content.card is required for type rich_card")
    if kind == "carousel":
        cards = content.get("cards")
        if not isinstance(cards, list) or not 1 <= len(cards) <= 10:
            raise _fail("content.cards must hold 1 to 10 cards for type carousel")


def _fallback(body: dict[str, Any], most: int) -> dict[str, Any] | None:
    fallback = body.get("smsFallback")
    if fallback is None:
        return None
    if not isinstance(fallback, dict):
        raise _fail("smsFallback must be an object {enabled, routeId, sender, message}")
    if not fallback.get("enabled"):
        return None
    for name in ("sender", "message"):
        if not isinstance(fallback.get(name), str) or not fallback[name].strip():
            raise _fail(f"smsFallback.{name} is required when smsFallback is enabled")
    parts = segments(fallback["message"])
    if parts > most:
        raise _fail(f"smsFallback.message too long: {parts} SMS parts; at most {most} are allowed")
    return fallback


async def rcs_message(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    _rcs_content(body)
    agent = _agent_id(body.get("agentId"), required=False)
    traffic = body.get("trafficType")
    if traffic is not None and traffic not in TRAFFIC_TYPES:
        raise _fail("trafficType must be one of " + ", ".join(sorted(TRAFFIC_TYPES)))
    fallback = _fallback(body, state.config.max_sms_parts)
    notify = _notify_url(body)
    when = _schedule(body, state.clock.time())
    text = body["content"].get("text", "") if body["type"] == "text" else ""
    numbers, _ = _contacts(body, "mobile", state.config.max_sms_per_call, set(VAR.findall(text)))
    _charge(state, request[ACCOUNT], float(len(numbers)))
    send = _store(request, "rcs", numbers, "rcs_", when, notify_url=notify, fallback=fallback is not None)
    send.meta["agent_id"] = agent
    if fallback is not None:
        fell_back = [a for a in send.addresses if not rcs_capable(state.config, a[1:])]
        if fell_back:
            stats = state.endpoint("SMS-FALLBACK /api/v2/rcs/message")
            stats.messages += len(fell_back)
            stats.recipients.update(fell_back)
    return json_response(
        {
            "status": "success",
            "message": "RCS submitted successfully",
            "batch_id": send.batch_id,
            "total_contacts": len(numbers),
            "message_id": [{"mobile": n, "msg_id": i} for n, i in zip(numbers, send.message_ids(), strict=True)],
        }
    )


def rcs_status(state: SandboxState, send: Send, index: int) -> tuple[str, float | None]:
    """RCS word (`pending|sent|failed|delivered|read|incompatible`) and when it was reached."""
    settled_at = send.accepted_at + state.config.dlr_delay
    if state.clock.time() < send.accepted_at:
        return "pending", None
    digits = send.addresses[index][1:]
    if not rcs_capable(state.config, digits):
        return "incompatible", send.accepted_at
    if state.clock.time() < settled_at:
        return "sent", None
    return ("delivered" if fate(state.config, digits) == "delivered" else "failed"), settled_at


def rcs_dlr_row(state: SandboxState, send: Send, index: int) -> dict[str, Any]:
    status, at = rcs_status(state, send, index)
    return {
        "msg_id": send.message_id(index),
        "mobile": send.addresses[index][1:],
        "agentId": send.meta.get("agent_id"),
        "sent": stamp(send.accepted_at),
        "dlr": {"status": status, "delivery_time": stamp(at) if at else None},
    }


async def rcs_dlr(request: web.Request) -> web.Response:
    query = request.query
    return _report_rows(request, "rcs", query.get("batch_id"), "msg_id", query.get("msg_id"), rcs_dlr_row)


def _wa_check(body: dict[str, Any]) -> str:
    kind = body.get("type", "text")
    if kind not in WA_TYPES:
        raise _fail("type must be one of " + ", ".join(sorted(WA_TYPES)))
    if kind == "text" and not (isinstance(body.get("message"), str) and body["message"].strip()):
        raise _fail("message is required when type is text")
    if kind == "template" and not body.get("templateId"):
        raise _fail("templateId is required when type is template")
    if kind == "template":
        for i, contact in enumerate(body.get("contacts") or []):
            template_body = (contact.get("parameters") or {}).get("body", []) if isinstance(contact, dict) else None
            if not isinstance(template_body, list):
                raise _fail(f"contacts[{i}].parameters.body must be an array")
    if kind in {"image", "video", "audio", "document"} and not (
        isinstance(body.get("media"), dict) and body["media"].get("url")
    ):
        raise _fail(f"media.url is required when type is {kind}")
    if kind == "location" and not isinstance(body.get("location"), dict):
        raise _fail("location is required when type is location")
    if kind in {"reply", "reaction"} and not body.get("replyToMessageId"):
        raise _fail(f"replyToMessageId is required when type is {kind}")
    return str(kind)


async def whatsapp_message(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    _wa_check(body)
    numbers, _ = _contacts(body, "msisdn", state.config.max_sms_per_call, set(), scalar_params=False)
    _charge(
        state,
        request[ACCOUNT],
        float(len(numbers)),
        {"status": "error", "message": "You don't have enough credits to send this campaign."},
    )
    campaign = str(body["campaignId"]) if body.get("campaignId") is not None else None
    send = _store(request, "whatsapp", numbers, "wa_", state.clock.time(), campaign=campaign)
    send.meta["phone_id"] = str(body.get("phoneId") or "1234567890")
    return json_response(
        {
            "status": "success",
            "message": "Messages Sent Successfully",
            "total_cost": round(WA_PRICE * len(numbers), 4),
            "total_contacts": len(numbers),
            "message_id": [{"msisdn": n, "msg_id": i} for n, i in zip(numbers, send.message_ids(), strict=True)],
        }
    )


def whatsapp_row(state: SandboxState, send: Send, index: int) -> dict[str, Any]:
    if state.clock.time() < send.accepted_at + state.config.dlr_delay:
        status = "sent"
    else:
        status = "delivered" if fate(state.config, send.addresses[index][1:]) == "delivered" else "failed"
    return {
        "msg_id": send.message_id(index),
        "msisdn": send.addresses[index][1:],
        "phone_id": send.meta.get("phone_id"),
        "direction": "outgoing",
        "timestamp": iso_millis(send.accepted_at),
        "cost": WA_PRICE,
        "status": status,
    }


async def whatsapp_report(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    mode, ident = request.query.get("mode"), request.query.get("id")
    if mode not in {"message", "campaign"} or not ident:
        raise _fail("mode (message|campaign) and id are required")
    key = request[ACCOUNT].key
    if mode == "message":
        found = _own_message(request, ident, "whatsapp")
        if found is None:
            raise _fail("Message not found", 404)
        return json_response(whatsapp_row(state, *found))
    sends = [s for s in state.by_campaign.get(ident, []) if s.key == key and s.channel == "whatsapp"]
    if not sends:
        raise _fail("Campaign not found", 404)
    rows = [whatsapp_row(state, s, i) for s in sends for i in range(len(s.addresses))]
    return json_response({"status": "success", "data": rows})


async def whatsapp_checkwindow(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    if not request.query.get("phoneId"):
        raise _fail("phoneId is required")
    mobile = _mobile(request.query.get("msisdn"), "msisdn")
    if whatsapp_window_open(state.config, mobile):
        expires = datetime.fromtimestamp(state.clock.time() + 12 * 3600, UTC).replace(microsecond=0)
        return json_response(
            {"status": "success", "window_open": True, "expires_at": expires.isoformat().replace("+00:00", "Z")}
        )
    return json_response({"status": "success", "window_open": False})


async def whatsapp_prices(request: web.Request) -> web.Response:
    return json_response(WA_PRICES)


async def rcs_agent_save(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    for name in ("agentName", "displayName", "brandName"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            raise _fail(f"{name} is required")
    if " " in body["agentName"]:
        raise _fail("agentName must not contain spaces")
    agent_id = _agent_id(body.get("agentId"), required=False) or len(state.agents) + 1
    state.agents[agent_id] = {
        **state.agents.get(agent_id, {}),
        **body,
        "agentId": agent_id,
        "status": state.agents.get(agent_id, {}).get("status", "DRAFT"),
    }
    return json_response({"status": "success", "message": "Agent saved as draft", "agentId": agent_id})


def _known_agent(state: SandboxState, value: Any) -> int:
    agent_id = _agent_id(value, required=True)
    assert agent_id is not None
    if agent_id not in state.agents:
        raise _fail(f"Agent {agent_id} not found", 404)
    return agent_id


async def rcs_agent_submit(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    agent_id = _known_agent(state, _object(await read_json(request, _bad)).get("agentId"))
    state.agents[agent_id]["status"] = "SUBMITTED"
    return json_response({"status": "success", "message": "Agent submitted for review", "agentId": agent_id})


async def rcs_agent_launch(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    agent_id = _known_agent(state, body.get("agentId"))
    carriers = body.get("carriers")
    if not isinstance(carriers, list) or not carriers:
        raise _fail("carriers is required: an array of carrier ids")
    state.agents[agent_id]["status"] = "LAUNCH_REQUESTED"
    state.agents[agent_id]["carriers"] = carriers
    return json_response({"status": "success", "message": "Launch requested", "agentId": agent_id})


async def rcs_agent_get(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    agent_id = _known_agent(state, request.match_info["id"])
    return json_response({"status": "success", "data": state.agents[agent_id]})


async def rcs_agents(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    return json_response({"status": "success", "data": list(state.agents.values())})


async def rcs_testdevice(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    agent_id = _agent_id(body.get("agentId"), required=True)
    phone = body.get("phoneNumber")
    if not isinstance(phone, str) or not re.match(r"^\+[1-9]\d{9,14}$", phone):
        raise _fail("phoneNumber must be an E.164 number like +919887979736")
    assert agent_id is not None
    devices = state.test_devices.setdefault(agent_id, set())
    if request.method == "DELETE":
        if phone not in devices:
            raise _fail("Test device not found", 404)
        devices.discard(phone)
        return json_response({"status": "success", "message": "Test device removed"})
    devices.add(phone)
    return json_response({"status": "success", "message": "Test device added"})


async def rcs_testdevices(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    agent_id = _agent_id(request.query.get("agentId"), required=True)
    assert agent_id is not None
    devices = sorted(state.test_devices.get(agent_id, set()))
    return json_response({"status": "success", "data": [{"agentId": agent_id, "phoneNumber": d} for d in devices]})


async def rcs_conversation(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    agent_id = _agent_id(request.query.get("agentId"), required=True)
    mobile = _mobile(request.query.get("mobile"), "mobile")
    if not whatsapp_window_open(state.config, mobile):
        return json_response({"status": "success", "active": False})
    started = state.clock.time() - 3600
    conversation = f"{int(fraction(state.config.seed, f'conv{agent_id}', mobile) * 2**63):x}"
    return json_response(
        {
            "status": "success",
            "conversationId": conversation,
            "active": True,
            "startedAt": stamp(started),
            "expiresAt": stamp(started + 24 * 3600),
            "direction": "P2A",
        }
    )


async def otp_send(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    mobile = _mobile(body.get("mobile"), "mobile")
    if not isinstance(body.get("channel"), int):
        raise _fail("channel is required: the OTP channel id")
    _charge(state, request[ACCOUNT], 1.0)
    reference = state.new_token("").upper()[:10]
    state.otps[reference] = f"{int(fraction(state.config.seed, 'otp', reference) * 1_000_000):06d}"
    accept(request, ["+" + mobile])
    return json_response({"status": "success", "reference": reference})


async def otp_verify(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    reference, otp = request.query.get("reference"), request.query.get("otp")
    if not reference or not otp:
        raise _fail("reference and otp are required")
    if state.otps.get(reference) == otp.zfill(6):
        del state.otps[reference]
        return json_response({"status": "success", "matched": "yes"})
    return json_response({"status": "error", "matched": "no", "message": "OTP does not match or has expired"})


def routes(prefix: str = "/api/v2") -> list[web.RouteDef]:
    return [
        web.post(f"{prefix}/sms", sms),
        web.get(f"{prefix}/dlr", dlr),
        web.get(f"{prefix}/credits", credits),
        web.get(f"{prefix}/rcs/capability", rcs_capability),
        web.post(f"{prefix}/rcs/message", rcs_message),
        web.get(f"{prefix}/rcs/dlr", rcs_dlr),
        web.post(f"{prefix}/rcs/agent", rcs_agent_save),
        web.post(f"{prefix}/rcs/agent/submit", rcs_agent_submit),
        web.post(f"{prefix}/rcs/agent/launch", rcs_agent_launch),
        web.get(f"{prefix}/rcs/agent/{{id}}", rcs_agent_get),
        web.get(f"{prefix}/rcs/agents", rcs_agents),
        web.post(f"{prefix}/rcs/testdevice", rcs_testdevice),
        web.delete(f"{prefix}/rcs/testdevice", rcs_testdevice),
        web.get(f"{prefix}/rcs/testdevices", rcs_testdevices),
        web.get(f"{prefix}/rcs/conversation", rcs_conversation),
        web.post(f"{prefix}/whatsapp/message", whatsapp_message),
        web.get(f"{prefix}/whatsapp/report", whatsapp_report),
        web.get(f"{prefix}/whatsapp/checkwindow", whatsapp_checkwindow),
        web.get(f"{prefix}/whatsapp/prices", whatsapp_prices),
        web.post(f"{prefix}/otp", otp_send),
        web.get(f"{prefix}/otp/verify", otp_verify),
    ]
