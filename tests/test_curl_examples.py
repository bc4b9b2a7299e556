"""The published curl examples, run with real curl against the sandbox, get answers of the published shapes.

Each example is the reference's own command line with the host and key
replaced (and, where one example uses another's id, the sandbox's id). Shapes
are compared field for field and type for type with the reference's example
answers; ids and values are the sandbox's own.
"""

from __future__ import annotations

import subprocess
from typing import Any

import orjson
import pytest

from tests.fixtures.sandbox import Sandbox

NOXITEL_SMS = {
    "campaignId": 1,
    "routeId": 1,
    "sender": "NOXITEL",
    "mode": "text",
    "message": "Hi #name#, your OTP is #otp#",
    "contacts": [{"mobile": "919887111111", "parameters": {"name": "Sam", "otp": "847291"}}],
    "notifyUrl": "https://yourapp.com/webhook/sms",
    "dlt_entity_id": "1234567890",
    "dlt_template_id": "1234567890",
}
NOXITEL_WA_TEMPLATE = {
    "phoneId": "1234567890",
    "type": "template",
    "templateId": "welcome_template",
    "contacts": [
        {
            "msisdn": "919887111111",
            "parameters": {
                "header": [{"type": "text", "value": "Hello!"}],
                "body": ["Sam", "Special Offer"],
                "buttons": [{"index": 0, "url": "https://brand.com/offer"}],
            },
        }
    ],
}
NOXITEL_RCS = {
    "agentId": 3,
    "type": "text",
    "content": {
        "text": "Hi #name#, your OTP is #otp#",
        "suggestions": [
            {"type": "reply", "text": "Confirm"},
            {"type": "url", "text": "Learn more", "url": "https://example.com"},
        ],
    },
    "contacts": [{"mobile": "919887111111", "parameters": {"name": "Sam", "otp": "1234"}}],
    "notifyUrl": "https://yourapp.com/webhook/rcs",
    "trafficType": "TRANSACTION",
}

# The reference's example answers.
PIXABITS_SMS_ANSWER = {"message_id": "msg_abc123", "status": "queued", "credits_used": 0.15}
PIXABITS_WA_ANSWER = {"message_id": "wamid_abc", "status": "sent"}
NOXITEL_SMS_ANSWER = {
    "status": "success",
    "message": "SMS Submitted successfully",
    "batch_id": "samsms_eink1rilz6ucphk",
    "total_contacts": 1,
    "message_id": [{"mobile": "919887111111", "sms_id": "1ef4d949"}],
}
NOXITEL_DLR_ANSWER = {
    "status": "success",
    "data": [
        {
            "sms_shoot_id": "user_6q0za64m0ql0vu7",
            "mobile": 918058111111,
            "sender_id": "NOXITEL",
            "sent": "2026-05-01 10:05:30",
            "dlr": {"status": "Handset Delivered", "operator_reply": "DELIVRD", "delivery_time": "2026-05-01 10:05:42"},
        }
    ],
}
NOXITEL_CREDITS_ANSWER = {
    "status": "success",
    "billing_mode": "credits",
    "wallet": {"amount": "120.00", "currency": "USD"},
    "credits": [{"route": "Standard", "credits": 3946684}],
}
NOXITEL_WA_ANSWER = {
    "status": "success",
    "message": "Messages Sent Successfully",
    "total_cost": 0.05,
    "total_contacts": 1,
    "message_id": [{"msisdn": "919887111111", "msg_id": "msg_abc123"}],
}
NOXITEL_WA_REPORT = {
    "msg_id": "1f020deb",
    "msisdn": "919887111111",
    "phone_id": "12345678909812",
    "direction": "outgoing",
    "timestamp": "2026-05-01T07:35:29.000Z",
    "cost": 0.05,
    "status": "delivered",
}
NOXITEL_WINDOW_OPEN = {"status": "success", "window_open": True, "expires_at": "2026-05-02T10:00:00Z"}
NOXITEL_WINDOW_CLOSED = {"status": "success", "window_open": False}
NOXITEL_PRICES = [
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
    }
]
NOXITEL_RCS_ANSWER = {
    "status": "success",
    "message": "RCS submitted successfully",
    "batch_id": "rcs_k8a9s2lmnp4xvqr",
    "total_contacts": 1,
    "message_id": [{"mobile": "919887111111", "msg_id": "1f134cd4"}],
}
NOXITEL_CAPABILITY = {
    "status": "success",
    "mobile": "919887111111",
    "rcsEnabled": True,
    "features": ["RICHCARD_STANDALONE", "RICHCARD_CAROUSEL", "ACTION_OPEN_URL"],
}
NOXITEL_CONVERSATION_ACTIVE = {
    "status": "success",
    "conversationId": "1f1328bb",
    "active": True,
    "startedAt": "2026-05-01 14:11:53",
    "expiresAt": "2026-05-02 14:11:53",
    "direction": "P2A",
}
NOXITEL_RCS_DLR = {
    "status": "success",
    "data": [
        {
            "msg_id": "1f134cd4",
            "mobile": "919887111111",
            "agentId": 42,
            "sent": "2026-05-01 14:11:53",
            "dlr": {"status": "delivered", "delivery_time": "2026-05-01 14:12:01"},
        }
    ],
}
NOXITEL_OTP = {"status": "success", "reference": "036BZDUHIX"}
NOXITEL_OTP_MATCHED = {"status": "success", "matched": "yes"}
NOXITEL_OTP_WRONG = {"status": "error", "matched": "no", "message": "OTP does not match or has expired"}
NOXITEL_ERROR = {"success": False, "status": 403, "message": "API Key Missing"}


def shape(value: Any) -> Any:
    """Field names and JSON types, recursively (numbers are one type: 0 and 0.05 both are numbers)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def curl(*args: str) -> tuple[int, Any]:
    done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), orjson.loads(body)


def auth(key: str) -> list[str]:
    return ["-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json"]


@pytest.fixture
def key(sandbox: Sandbox) -> str:
    return sandbox.account()


def test_pixabits_curl_examples(sandbox: Sandbox, key: str) -> None:
    for body in (
        '{"to":"+919876543210","body":"Hello from Pixabits!","sender":"PIXABT"}',
        '{"to":"+919876543210","body":"Your OTP is 482901","sender":"PIXABT"}',
    ):
        status, answer = curl("-X", "POST", f"{sandbox.pixabits_url}/v2/sms/send", *auth(key), "-d", body)
        assert (status, shape(answer)) == (200, shape(PIXABITS_SMS_ANSWER))
    status, answer = curl(
        "-X",
        "POST",
        f"{sandbox.pixabits_url}/v1/wa/messages",
        *auth(key),
        "-d",
        '{"to":"+919876543210","type":"text","text":{"body":"Hello!"}}',
    )
    assert (status, shape(answer)) == (200, shape(PIXABITS_WA_ANSWER))


def test_noxitel_sms_dlr_and_credits_curl_examples(sandbox: Sandbox, key: str) -> None:
    api = sandbox.noxitel_url
    status, sent = curl("-X", "POST", f"{api}/sms", *auth(key), "-d", orjson.dumps(NOXITEL_SMS).decode())
    assert (status, shape(sent)) == (200, shape(NOXITEL_SMS_ANSWER))
    sandbox.advance_clock(5)
    status, by_batch = curl("-X", "GET", f"{api}/dlr", *auth(key), "-d", f'{{"batch_id": "{sent["batch_id"]}"}}')
    assert (status, shape(by_batch)) == (200, shape(NOXITEL_DLR_ANSWER))
    sms_id = sent["message_id"][0]["sms_id"]
    status, by_id = curl("-X", "GET", f"{api}/dlr", *auth(key), "-d", f'{{"sms_id": "{sms_id}"}}')
    assert (status, shape(by_id)) == (200, shape(NOXITEL_DLR_ANSWER))
    status, credits = curl("-X", "GET", f"{api}/credits", *auth(key))
    assert (status, shape(credits)) == (200, shape(NOXITEL_CREDITS_ANSWER))
    status, error = curl("-X", "GET", f"{api}/credits", "-H", "Content-Type: application/json")
    assert (status, error) == (403, NOXITEL_ERROR)


def test_noxitel_whatsapp_curl_examples(sandbox: Sandbox, key: str) -> None:
    api = sandbox.noxitel_url
    status, sent = curl(
        "-X", "POST", f"{api}/whatsapp/message", *auth(key), "-d", orjson.dumps(NOXITEL_WA_TEMPLATE).decode()
    )
    assert (status, shape(sent)) == (200, shape(NOXITEL_WA_ANSWER))
    msg_id = sent["message_id"][0]["msg_id"]
    status, report = curl(f"{api}/whatsapp/report?mode=message&id={msg_id}", "-H", f"Authorization: Bearer {key}")
    assert (status, shape(report)) == (200, shape(NOXITEL_WA_REPORT))
    status, window = curl(
        f"{api}/whatsapp/checkwindow?phoneId=1234567890&msisdn=919887111111", "-H", f"Authorization: Bearer {key}"
    )
    assert status == 200
    assert shape(window) in (shape(NOXITEL_WINDOW_OPEN), shape(NOXITEL_WINDOW_CLOSED))
    status, prices = curl("-X", "GET", f"{api}/whatsapp/prices", "-H", f"Authorization: Bearer {key}")
    assert (status, shape(prices)) == (200, shape(NOXITEL_PRICES))


def test_noxitel_rcs_curl_examples(sandbox: Sandbox, key: str) -> None:
    api = sandbox.noxitel_url
    bearer = ["-H", f"Authorization: Bearer {key}"]
    status, sent = curl("-X", "POST", f"{api}/rcs/message", *auth(key), "-d", orjson.dumps(NOXITEL_RCS).decode())
    assert (status, shape(sent)) == (200, shape(NOXITEL_RCS_ANSWER))
    status, capability = curl("-X", "GET", f"{api}/rcs/capability?mobile=919887111111&agentId=42", *bearer)
    assert status == 200 and set(capability) == set(NOXITEL_CAPABILITY)
    assert shape(capability)["rcsEnabled"] == "bool"
    status, conversation = curl("-X", "GET", f"{api}/rcs/conversation?agentId=42&mobile=919887111111", *bearer)
    assert status == 200 and conversation["status"] == "success"
    if conversation["active"]:
        assert shape(conversation) == shape(NOXITEL_CONVERSATION_ACTIVE)
    sandbox.advance_clock(5)
    status, by_batch = curl("-X", "GET", f"{api}/rcs/dlr?batch_id={sent['batch_id']}", *bearer)
    assert (status, shape(by_batch)) == (200, shape(NOXITEL_RCS_DLR))
    status, by_msg = curl("-X", "GET", f"{api}/rcs/dlr?msg_id={sent['message_id'][0]['msg_id']}", *bearer)
    assert status == 200 and by_msg["data"][0]["msg_id"] == sent["message_id"][0]["msg_id"]


def test_noxitel_rcs_agent_and_test_device_curl_examples(sandbox: Sandbox, key: str) -> None:
    rcs = sandbox.noxitel_url + "/rcs"
    status, created = curl(
        "-X",
        "POST",
        f"{rcs}/agent",
        *auth(key),
        "-d",
        '{"agentName":"support_bot","displayName":"Noxitel Support","brandName":"Noxitel"}',
    )
    assert status == 200 and created["status"] == "success"
    agent = created["agentId"]
    status, submitted = curl("-X", "POST", f"{rcs}/agent/submit", *auth(key), "-d", f'{{"agentId": {agent}}}')
    assert (status, submitted["status"]) == (200, "success")
    status, launched = curl(
        "-X",
        "POST",
        f"{rcs}/agent/launch",
        *auth(key),
        "-d",
        f'{{"agentId":{agent},"carriers":["airtel-india","reliance-jio-india"]}}',
    )
    assert (status, launched["status"]) == (200, "success")
    status, listed = curl(f"{rcs}/agents", *auth(key))
    assert status == 200 and [a["agentName"] for a in listed["data"]] == ["support_bot"]
    device = f'{{"agentId":{agent},"phoneNumber":"+919887979736"}}'
    assert curl("-X", "POST", f"{rcs}/testdevice", *auth(key), "-d", device)[0] == 200
    status, devices = curl("-X", "GET", f"{rcs}/testdevices?agentId={agent}", *auth(key))
    assert [d["phoneNumber"] for d in devices["data"]] == ["+919887979736"]
    assert curl("-X", "DELETE", f"{rcs}/testdevice", *auth(key), "-d", device)[0] == 200
    assert curl("-X", "GET", f"{rcs}/testdevices?agentId={agent}", *auth(key))[1]["data"] == []


def test_noxitel_otp_curl_examples(sandbox: Sandbox, key: str) -> None:
    api = sandbox.noxitel_url
    status, sent = curl("-X", "POST", f"{api}/otp", *auth(key), "-d", '{"channel": 27, "mobile": "919887111111"}')
    assert (status, shape(sent)) == (200, shape(NOXITEL_OTP))
    code = sandbox.admin(f"otp/{sent['reference']}")["otp"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    verify = [
        "-G",
        f"{api}/otp/verify",
        "-H",
        f"Authorization: Bearer {key}",
        "--data-urlencode",
        f"reference={sent['reference']}",
        "--data-urlencode",
    ]
    status, answer = curl(*verify, f"otp={wrong}")
    assert (status, shape(answer)) == (200, shape(NOXITEL_OTP_WRONG))
    status, answer = curl(*verify, f"otp={code}")
    assert (status, answer) == (200, NOXITEL_OTP_MATCHED)
