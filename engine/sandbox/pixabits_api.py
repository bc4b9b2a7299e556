"""Pixabits as the sandbox plays it, served at the root (`/v2/sms/bulk`, `/v1/rcs/send`, ...).

Shapes follow the published reference field for field. Where it is silent the
sandbox takes these readings: 422 bodies list the
offending fields (an SMS of more parts than `max_sms_parts` among them),
bulk email takes `{"from", "messages": [{"to", "subject",
"html"}]}`, running out of money is a 403 that says so, and RCS falls back to
SMS by itself when the account's dashboard says so (`pixabits_rcs_fallback`),
announcing it with `rcs.fallback.triggered`.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from engine.gsm import segments
from engine.sandbox.http import ACCOUNT, PUSHER, STATE, Reject, accept, json_response, read_json
from engine.sandbox.outcomes import rcs_capable
from engine.sandbox.state import Account, SandboxState, Send

PROVIDER = "pixabits"
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DLT_ID = re.compile(r"^\d{1,19}$")
PRICE = {"sms": 0.15, "email": 0.02, "rcs": 0.25, "whatsapp": 0.40}
WA_TYPES = {"text", "image", "video", "document", "location"}
SMS_TYPES = {"otp", "transactional", "promotional"}

_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def error_body(status: int, message: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "code": _CODES.get(status, "ERROR"), "message": message}
    if errors:
        body["errors"] = errors
    return body


def _invalid(errors: list[dict[str, str]]) -> Reject:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Reject(422, error_body(422, f"{first['field']}: {first['message']}{more}", errors[:100]))


def _bad(message: str) -> dict[str, Any]:
    return error_body(400, message)


def _check_phone(errors: list[dict[str, str]], where: str, value: Any) -> None:
    if not isinstance(value, str) or not E164.match(value):
        errors.append({"field": where, "message": "must be an E.164 number like +919876543210"})


def _check_text(errors: list[dict[str, str]], where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        errors.append({"field": where, "message": "is required"})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Reject(400, _bad("Request body must be a JSON object"))
    return body


def _sms_parts(errors: list[dict[str, str]], where: str, text: Any, most: int) -> int:
    """The parts `text` takes (1 for a missing one, refused elsewhere); more than `most` is an error."""
    if not isinstance(text, str):
        return 1
    parts = segments(text)
    if parts > most:
        errors.append({"field": where, "message": f"takes {parts} SMS parts; at most {most} are allowed"})
    return parts


def _check_sender(errors: list[dict[str, str]], body: dict[str, Any]) -> None:
    if "sender" in body and not (isinstance(body["sender"], str) and body["sender"].strip()):
        errors.append({"field": "sender", "message": "must be a sender id"})


def _check_dlt(errors: list[dict[str, str]], body: dict[str, Any]) -> None:
    for name in ("dlt_entity_id", "dlt_template_id"):
        value = body.get(name)
        if value is not None and not (isinstance(value, str) and DLT_ID.match(value)):
            errors.append({"field": name, "message": "must be a numeric DLT id"})


def charge(state: SandboxState, account: Account, count: int, cost: float) -> None:
    """Spend the daily quota and the wallet for an accepted request, or refuse it whole."""
    room = account.daily_room(state.today())
    if room is not None and count > room:
        raise Reject(
            429,
            error_body(
                429, f"Daily limit of {account.plan.daily_messages} messages reached for the {account.plan.name} plan"
            ),
            {"Retry-After": str(int(state.seconds_to_midnight()))},
        )
    if cost > account.credits + 1e-9:
        left = f"{account.credits:.2f} credits left, {cost:.2f} needed"
        raise Reject(403, error_body(403, f"Insufficient wallet balance: {left}"))
    account.credits -= cost
    account.daily_used += count


def _store(request: web.Request, channel: str, addresses: list[str], prefix: str, **extra: Any) -> Send:
    state: SandboxState = request.app[STATE]
    account: Account = request[ACCOUNT]
    send = state.record(
        Send(state.new_token(prefix), PROVIDER, channel, account.key, addresses, state.clock.time(), **extra)
    )
    request.app[PUSHER].schedule(send)
    accept(request, addresses)
    return send


def _india_without_dlt(body: dict[str, Any], numbers: list[str]) -> bool:
    return not body.get("dlt_template_id") and any(n.startswith("+91") for n in numbers)


async def sms_send(request: web.Request) -> web.Response:
    body = _object(await read_json(request, _bad))
    errors: list[dict[str, str]] = []
    _check_phone(errors, "to", body.get("to"))
    _check_text(errors, "body", body.get("body"))
    parts = _sms_parts(errors, "body", body.get("body"), request.app[STATE].config.max_sms_parts)
    _check_sender(errors, body)
    if body.get("type", "transactional") not in SMS_TYPES:
        errors.append({"field": "type", "message": f"must be one of {', '.join(sorted(SMS_TYPES))}"})
    _check_dlt(errors, body)
    if errors:
        raise _invalid(errors)
    cost = PRICE["sms"] * parts
    charge(request.app[STATE], request[ACCOUNT], 1, cost)
    send = _store(request, "sms", [body["to"]], "msg_", dlt_missing=_india_without_dlt(body, [body["to"]]))
    return json_response({"message_id": send.message_id(0), "status": "queued", "credits_used": round(cost, 4)})


async def sms_bulk(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid([{"field": "messages", "message": "must be a non-empty array"}])
    limit = state.config.max_sms_per_call
    if len(messages) > limit:
        raise _invalid([{"field": "messages", "message": f"at most {limit} messages per call, got {len(messages)}"}])
    errors: list[dict[str, str]] = []
    _check_sender(errors, body)
    _check_dlt(errors, body)
    numbers: list[str] = []
    total_segments = 0
    most = state.config.max_sms_parts
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append({"field": f"messages[{i}]", "message": "must be an object"})
            continue
        to, text = message.get("to"), message.get("body")
        _check_phone(errors, f"messages[{i}].to", to)
        _check_text(errors, f"messages[{i}].body", text)
        if isinstance(to, str) and isinstance(text, str):
            numbers.append(to)
            total_segments += _sms_parts(errors, f"messages[{i}].body", text, most)
    if not errors and len(set(numbers)) != len(numbers):
        errors.append({"field": "messages", "message": "the same number appears more than once in one batch"})
    if errors:
        raise _invalid(errors)
    charge(state, request[ACCOUNT], len(numbers), PRICE["sms"] * total_segments)
    send = _store(request, "sms", numbers, "msg_", dlt_missing=_india_without_dlt(body, numbers))
    send.batch_id = "batch_" + send.token.removeprefix("msg_")
    state.by_batch[send.batch_id] = send
    return json_response({"batch_id": send.batch_id, "total": len(numbers), "status": "processing"})


async def email_send(request: web.Request) -> web.Response:
    body = _object(await read_json(request, _bad))
    errors = _email_errors(body, "")
    if not isinstance(body.get("from"), str) or not EMAIL.match(body["from"]):
        errors.append({"field": "from", "message": "must be an email address"})
    if errors:
        raise _invalid(errors)
    charge(request.app[STATE], request[ACCOUNT], 1, PRICE["email"])
    send = _store(request, "email", [body["to"].lower()], "email_")
    return json_response({"message_id": send.message_id(0), "status": "queued"})


def _email_errors(message: dict[str, Any], where: str) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    to = message.get("to")
    if not isinstance(to, str) or not EMAIL.match(to):
        errors.append({"field": f"{where}to", "message": "must be an email address"})
    _check_text(errors, f"{where}subject", message.get("subject"))
    _check_text(errors, f"{where}html", message.get("html"))
    return errors


async def email_bulk(request: web.Request) -> web.Response:
    state: SandboxState = request.app[STATE]
    body = _object(await read_json(request, _bad))
    messages = body.get("messages")
    errors: list[dict[str, str]] = []
    sender = body.get("from")
    if not isinstance(sender, str) or not EMAIL.match(sender):
        errors.append({"field": "from", "message": "must be an email address"})
    if not isinstance(messages, list) or not messages:
        errors.append({"field": "messages", "message": "must be a non-empty array"})
        raise _invalid(errors)
    limit = state.config.max_email_per_call
    if len(messages) > limit:
        raise _invalid([{"field": "messages", "message": f"at most {limit} recipients per call, got {len(messages)}"}])
    for i, message in enumerate(messages):
        errors.extend(_email_errors(message if isinstance(message, dict) else {}, f"messages[{i}]."))
    if errors:
        raise _invalid(errors)
    addresses = [m["to"].lower() for m in messages]
    if len(set(addresses)) != len(addresses):
        raise _invalid([{"field": "messages", "message": "the same address appears more than once in one batch"}])
    charge(state, request[ACCOUNT], len(addresses), PRICE["email"] * len(addresses))
    send = _store(request, "email", addresses, "email_")
    send.batch_id = "batch_" + send.token.removeprefix("email_")
    state.by_batch[send.batch_id] = send
    return json_response({"batch_id": send.batch_id, "total": len(addresses), "status": "processing"})


async def rcs_send(request: web.Request) -> web.Response:
    body = _object(await read_json(request, _bad))
    errors: list[dict[str, str]] = []
    _check_phone(errors, "to", body.get("to"))
    _check_text(errors, "text", body.get("text"))
    suggestions = body.get("suggestions")
    if suggestions is not None and not isinstance(suggestions, list):
        errors.append({"field": "suggestions", "message": "must be an array"})
    if errors:
        raise _invalid(errors)
    charge(request.app[STATE], request[ACCOUNT], 1, PRICE["rcs"])
    state: SandboxState = request.app[STATE]
    send = _store(request, "rcs", [body["to"]], "rcs_", fallback=state.config.pixabits_rcs_fallback)
    if send.fallback and not rcs_capable(state.config, body["to"][1:]):
        stats = state.endpoint("SMS-FALLBACK /v1/rcs/send")
        stats.messages += 1
        stats.recipients[body["to"]] += 1
    return json_response({"message_id": send.message_id(0), "status": "queued"})


async def wa_message(request: web.Request) -> web.Response:
    body = _object(await read_json(request, _bad))
    errors: list[dict[str, str]] = []
    _check_phone(errors, "to", body.get("to"))
    kind = body.get("type", "text")
    if kind not in WA_TYPES:
        errors.append({"field": "type", "message": f"must be one of {', '.join(sorted(WA_TYPES))}"})
    elif kind == "text":
        text = body.get("text")
        _check_text(errors, "text.body", text.get("body") if isinstance(text, dict) else None)
    elif not isinstance(body.get(kind), dict):
        errors.append({"field": kind, "message": "is required for this type"})
    if errors:
        raise _invalid(errors)
    charge(request.app[STATE], request[ACCOUNT], 1, PRICE["whatsapp"])
    send = _store(request, "whatsapp", [body["to"]], "wamid_")
    return json_response({"message_id": send.message_id(0), "status": "sent"})


async def wa_template(request: web.Request) -> web.Response:
    """Template body (unpublished): `{"to", "template_id", "language", "parameters": {header, body, buttons}}`."""
    body = _object(await read_json(request, _bad))
    errors: list[dict[str, str]] = []
    _check_phone(errors, "to", body.get("to"))
    _check_text(errors, "template_id", body.get("template_id"))
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict) or not isinstance(parameters.get("body", []), list):
        errors.append({"field": "parameters", "message": "must be an object with a body array"})
    if errors:
        raise _invalid(errors)
    charge(request.app[STATE], request[ACCOUNT], 1, PRICE["whatsapp"])
    send = _store(request, "whatsapp", [body["to"]], "wamid_")
    return json_response({"message_id": send.message_id(0), "status": "sent"})


async def wallet(request: web.Request) -> web.Response:
    """Shape unpublished; read as balance, currency, credits and plan details."""
    account: Account = request[ACCOUNT]
    plan = account.plan
    return json_response(
        {
            "balance": round(account.credits, 2),
            "currency": "INR",
            "credits": round(account.credits, 4),
            "plan": {
                "name": plan.name,
                "requests_per_second": plan.rate,
                "burst": plan.burst,
                "daily_limit": plan.daily_messages,
            },
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v2/sms/send", sms_send),
        web.post("/v2/sms/bulk", sms_bulk),
        web.post("/v2/email/send", email_send),
        web.post("/v2/email/send/bulk", email_bulk),
        web.post("/v1/rcs/send", rcs_send),
        web.post("/v1/wa/messages", wa_message),
        web.post("/v1/wa/messages/template", wa_template),
        web.get("/v1/billing/wallet", wallet),
    ]
