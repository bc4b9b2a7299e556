"""The provider interface and the canonical, provider-neutral types it speaks.

Nothing outside `engine.providers` knows a provider's URL or JSON shape: the
rest of the engine builds the batches below, hands them to a `Provider`, and
gets back a `Submission` (whatever ids the provider gave) or one of the errors
of `engine.providers.errors`. Addresses are canonical everywhere outside this
package: E.164 with a leading `+` for phones, the address itself for email;
each client converts to its provider's own format on the way out and back.

`HttpProvider` owns the mechanics every client shares: one pooled
`aiohttp.ClientSession`, explicit timeouts, orjson bodies, and the one place
where a failure is sorted into "never left", "sent but unanswered" and "the
provider answered with an error".
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import aiohttp
import orjson

from engine.errors import BatchTooLarge, InvalidRequest
from engine.providers.errors import OutcomeUnknown, ProviderError, TransientError
from engine.providers.limits import PER_RECIPIENT_BATCH, RatePlan

if TYPE_CHECKING:
    from engine.settings import Settings
    from engine.store.states import MessageStatus

log = logging.getLogger(__name__)

#: What stands in a provider's answer where it echoed the API key.
SCRUBBED_KEY = b"[api key]"
#: Keys at least this long are scrubbed from answers.
MIN_SCRUBBED_KEY = 12


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    RCS = "rcs"
    WHATSAPP = "whatsapp"

    @property
    def label(self) -> str:
        """The channel as people write it in a sentence."""
        return {"sms": "SMS", "rcs": "RCS", "whatsapp": "WhatsApp"}.get(self.value, self.value)


class OutboundMessage(NamedTuple):
    """One recipient of a batch.

    `body` is the text this recipient receives (HTML for email). `params` are the
    recipient's `#var#` values, for providers that personalise a template
    themselves (Noxitel); a provider that takes one text per message uses `body`.
    A named tuple, because a million of them are built per campaign and a
    frozen dataclass costs several times more to construct.
    """

    to: str
    body: str = ""
    params: Mapping[str, str] | None = None
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class SmsBatch:
    """SMS to many recipients from one sender, optionally tied to an India DLT template.

    `template` is the `#var#` text the messages were rendered from; a provider
    that renders server side sends it with each recipient's `params`, so the
    DLT-registered text reaches the operator unchanged. `unicode=None` lets the
    client decide from the text.
    """

    sender: str
    messages: Sequence[OutboundMessage]
    template: str | None = None
    dlt_entity_id: str | None = None
    dlt_template_id: str | None = None
    unicode: bool | None = None
    notify_url: str | None = None
    schedule: datetime | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class EmailBatch:
    """Email to many recipients; each message carries its own subject and HTML `body`."""

    sender: str
    messages: Sequence[OutboundMessage]


@dataclass(frozen=True, slots=True)
class SmsFallback:
    """The SMS a provider should send itself when a device cannot take RCS."""

    sender: str
    message: str
    route_id: int | None = None


@dataclass(frozen=True, slots=True)
class RcsBatch:
    """RCS to one or more recipients.

    `kind` is `text`, `rich_card` or `carousel`; `content` is the provider-neutral
    content for the kind (for text: {"text", "suggestions"}; rich cards and
    carousels in Noxitel's published shape, which both providers' cards follow).
    """

    messages: Sequence[OutboundMessage]
    agent_id: int | None = None
    kind: str = "text"
    content: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None
    fallback: SmsFallback | None = None
    notify_url: str | None = None
    traffic_type: str | None = None


@dataclass(frozen=True, slots=True)
class WhatsAppTemplate:
    """A pre-approved WhatsApp template; per-recipient body values go in `OutboundMessage.params`
    under keys "1", "2", ... in order."""

    template_id: str
    language: str = "en"
    header: Sequence[Mapping[str, Any]] = ()
    buttons: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True, slots=True)
class WhatsAppBatch:
    """WhatsApp text (each message's `body`) or a template (`template` set)."""

    messages: Sequence[OutboundMessage]
    template: WhatsAppTemplate | None = None
    phone_id: str | None = None


@dataclass(frozen=True, slots=True)
class Submission:
    """What a provider returned for an accepted request.

    `message_ids` maps each canonical address to the provider's id for it, where
    the provider gives per-recipient ids (Noxitel always; Pixabits on single
    sends); bulk calls that only return a batch id leave it empty and delivery
    reports are matched by (provider, address) instead.
    """

    provider: str
    channel: Channel
    accepted: int
    batch_id: str | None = None
    message_ids: Mapping[str, str] = field(default_factory=dict)
    status: str | None = None
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One status report for one message, with the keys needed to match it.

    `status` is the provider's own word (for example `Handset Delivered`,
    `sms.message.delivered`, `incompatible`); mapping it to a canonical status is
    the delivery-report layer's job, so no information is lost here. `detail`
    carries the secondary word (Noxitel's operator reply, a bounce type).
    """

    provider: str
    channel: Channel
    to: str
    status: str
    detail: str | None = None
    batch_id: str | None = None
    message_id: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    #: The price the report states for the message, where the provider reports one.
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A reply from a recipient (WhatsApp or RCS), used for opt-outs."""

    provider: str
    channel: Channel
    sender: str
    text: str
    message_id: str | None = None
    occurred_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


WebhookEvent = DeliveryReport | InboundMessage


@dataclass(frozen=True, slots=True)
class CampaignCalls:
    """What every call of a campaign carries beside its recipients, as typed when planning: its sender, its RCS
    agent, and whether an RCS campaign has an SMS fallback text. `Provider.call_problems` holds it against
    what the provider takes."""

    channel: Channel
    sender: str | None = None
    agent_id: str | None = None
    sms_fallback: bool = False


#: An SMS sender id operators take: up to 11 letters and digits, or a number of up to 15 digits.
SMS_SENDER = re.compile(r"[A-Za-z0-9]{1,11}|\+?[0-9]{1,15}")
#: An email from-address: one `@`, a dotted domain, no spaces or angle brackets (no display name).
EMAIL_SENDER = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
#: An RCS agent id as `RcsBatch.agent_id` carries it: a whole number that a JSON body holds (below 2**63).
AGENT_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class RcsCapability:
    to: str
    enabled: bool
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Balance:
    """Money and credits left on the account; `credits` is None where the provider reports only money."""

    provider: str
    amount: float
    currency: str
    credits: float | None = None
    plan: str | None = None


def positional(params: Mapping[str, str]) -> list[str]:
    """WhatsApp template body values are positional; params keyed "1", "2", ... keep that order."""
    return [params[k] for k in sorted(params, key=lambda k: (int(k), "") if k.isdigit() else (1 << 30, k))]


def parse_datetime(value: Any, zone: tzinfo = UTC) -> datetime | None:
    """Read the providers' timestamps: ISO 8601 (`2026-03-21T10:05:00Z`) or `YYYY-MM-DD HH:MM:SS`.

    A time written without a zone is in `zone` (the provider's own clock); the
    result is always aware, so times of both providers compare.
    """
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def text_field(value: Any, name: str) -> str | None:
    """A field of a provider's event that must be text (an id, a reply): a number is read as its text,
    anything else (a list, an object) makes the event unreadable, with the field named."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{name} must be text, not {type(value).__name__}")


def decode_json(body: bytes) -> Any:
    """Parse a provider's JSON body; an unparseable one is returned as its text for the error message."""
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace")


class _SentFlag:
    """Per-request trace context, set when aiohttp is about to write the request.

    aiohttp signals "headers sent" just before the first bytes go out, so a
    failure after it may or may not have reached the provider: counting it as
    sent errs on the side of never sending twice.
    """

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


async def _on_headers_sent(
    session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    flag = ctx.trace_request_ctx
    if isinstance(flag, _SentFlag):
        flag.sent = True


def _trace_config() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_on_headers_sent)
    return trace


def new_session(connect_timeout: float = 5.0, total_timeout: float = 60.0, limit: int = 100) -> aiohttp.ClientSession:
    """A pooled session for provider clients; one per process (or event loop) is enough for all of them."""
    # Idle connections are dropped before a provider would close them, so a reused
    # connection is rarely a stale one (which would turn into a false "outcome unknown").
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, keepalive_timeout=10),
        timeout=aiohttp.ClientTimeout(total=total_timeout, sock_connect=connect_timeout, connect=connect_timeout),
        trace_configs=[_trace_config()],
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    data: Any


class Provider(abc.ABC):
    """What the engine needs from a provider. Unsupported operations raise `InvalidRequest`.

    Where providers differ, the difference is declared here, as a class fact
    each client sets, and the engine reads the fact, never the provider's name.
    The facts are class-level, so the engine can read them for a stored batch
    (by `client_class(name)`) without an HTTP client.
    """

    name: ClassVar[str]
    #: Largest number of recipients one call may carry, per channel; a channel absent is not offered.
    call_limits: ClassVar[Mapping[Channel, int]]
    #: Channels on which the provider renders the `#var#` template itself from each recipient's `params`.
    renders_templates: ClassVar[frozenset[Channel]] = frozenset()
    #: Channels on which one call carries one text for every recipient (no per-recipient text).
    one_text_per_call: ClassVar[frozenset[Channel]] = frozenset()
    #: Whether a call may name where its delivery reports are pushed (`notifyUrl`).
    takes_notify_url: ClassVar[bool] = False
    #: Whether an RCS call may ask for the provider's own SMS fallback (`smsFallback`). Where it cannot
    #: (different texts in one batch), or the engine is set to route it, the engine sends the SMS itself; a
    #: provider without it keeps its fallback in the account's own settings, and the engine leaves it there.
    sms_fallback_per_call: ClassVar[bool] = False
    #: Whether delivery reports are fetched (`batch_reports`, `message_report`) rather than only pushed.
    polls_reports: ClassVar[bool] = False
    #: Channels whose reports are asked message by message rather than per batch.
    reports_per_message: ClassVar[frozenset[Channel]] = frozenset()
    #: Paths of the webhook receiver that take this provider's pushes; the first is where it is told to push.
    webhook_paths: ClassVar[tuple[str, ...]] = ()
    #: Whether an RCS call names the campaign's agent (`--agent-id`, a number: `RcsBatch.agent_id`); where it
    #: does not, the provider sends from the agent set in its account, and a campaign names none.
    names_rcs_agent: ClassVar[bool] = False
    #: What the provider reads as a variable of its own in a call's text on the channels it renders
    #: (`renders_templates`): such text meant as text would make it refuse the call for want of a value.
    template_variable: ClassVar[re.Pattern[str] | None] = None

    # Facts of the account, read from the settings ------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def configured_key(cls, settings: Settings) -> str:
        """The account's API key."""

    @classmethod
    @abc.abstractmethod
    def configured_url(cls, settings: Settings) -> str:
        """The configured base URL (`sandbox` for the embedded sandbox)."""

    @classmethod
    @abc.abstractmethod
    def rate_plan(cls, settings: Settings) -> RatePlan:
        """The account's request rate, burst and daily quota."""

    @classmethod
    @abc.abstractmethod
    def from_settings(
        cls, settings: Settings, session: aiohttp.ClientSession | None = None, base_url: str | None = None
    ) -> Provider:
        """A client configured from settings (`base_url` overrides the configured one)."""

    # Facts of what the provider says ------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def canonical_status(cls, report: DeliveryReport, provider_fallback: bool = False) -> MessageStatus | str | None:
        """The engine's status for one of this provider's reports: None when it says nothing new (pending),
        `UNKNOWN` when the word is new. `provider_fallback`: the report's RCS batch asked the provider for its
        own SMS fallback, so a device that cannot take RCS means `fallback`, not undeliverable."""

    @classmethod
    @abc.abstractmethod
    def parse_webhook(cls, body: bytes) -> list[WebhookEvent]:
        """Turn one pushed webhook body into canonical events; unknown event types are skipped."""

    @classmethod
    def hard_bounce(cls, report: DeliveryReport) -> bool:
        """Whether the report says the address can never receive (an email hard bounce): it is suppressed."""
        return False

    @classmethod
    def agent_id_problem(cls, agent_id: str) -> str | None:
        """Why `agent_id` cannot be this provider's RCS agent, or None when it can."""
        if not cls.names_rcs_agent:
            return (
                f"{cls.name} RCS takes no --agent-id: it sends from the agent set in the {cls.name} account "
                "(leave the option out)"
            )
        if not AGENT_ID.fullmatch(agent_id.strip()):
            return f"{cls.name} RCS agent ids are numbers; {agent_id!r} is not one"
        return None

    @classmethod
    def call_problems(cls, calls: CampaignCalls) -> list[str]:
        """Why this provider would refuse the calls of such a campaign, each in one line (none: it takes them).

        Each is carried by every call, and the send path converts it or passes it on as it is, so the planner
        refuses it before anything is stored rather than let the first batch fail on it.
        """
        problems: list[str] = []
        if calls.channel is Channel.RCS:
            problems += cls._rcs_problems(calls)
        elif calls.sms_fallback:
            problems.append(f"only RCS has an SMS --fallback-message; {calls.channel.label} campaigns send none")
        if calls.channel is Channel.SMS:
            problems += cls._sender_problems(calls.sender, "an SMS campaign needs a --sender (the registered header)")
        if calls.channel is Channel.EMAIL:
            if not calls.sender:
                problems.append("an email campaign needs a --sender (the from-address)")
            elif not EMAIL_SENDER.fullmatch(calls.sender):  # it goes as given
                problems.append(f"the email --sender {calls.sender!r} is not an email address (like news@acme.in)")
        return problems

    @classmethod
    def text_problem(cls, channel: Channel, text: str) -> str | None:
        """Why text sent as written on `channel` (the literal parts of a template) would be refused, or None."""
        variable = cls.template_variable.search(text) if cls.template_variable is not None else None
        if variable is None or channel not in cls.renders_templates:
            return None
        word = variable.group()
        return (
            f"{cls.name} reads {word} as a placeholder of its own and would refuse the message for want of its "
            f"value: write it apart (such as {word[:-1]} #) or name a column"
        )

    @classmethod
    def _rcs_problems(cls, calls: CampaignCalls) -> list[str]:
        """The agent an RCS call names, and the sender of the SMS fallback where a call carries it."""
        problems: list[str] = []
        if calls.agent_id is not None:
            problem = cls.agent_id_problem(calls.agent_id)
            problems += [problem] if problem else []
        elif cls.names_rcs_agent:
            problems.append(f"{cls.name} RCS needs an --agent-id (the number of the RCS agent it sends from)")
        if calls.sms_fallback and not cls.sms_fallback_per_call:
            problems.append(
                f"{cls.name} RCS takes no --fallback-message: its SMS fallback is set in the {cls.name} account"
            )
        elif calls.sms_fallback:
            problems += cls._sender_problems(calls.sender, "an RCS campaign with a --fallback-message needs a --sender")
        return problems

    @classmethod
    def _sender_problems(cls, sender: str | None, missing: str) -> list[str]:
        """An SMS sender id: given, and of a shape operators take."""
        if not sender or not sender.strip():
            return [missing]
        if not SMS_SENDER.fullmatch(sender.strip()):
            return [
                f"the sender {sender!r} is not an SMS sender id: up to 11 letters and digits, or a number of up "
                "to 15 digits"
            ]
        return []

    @classmethod
    def max_batch(cls, channel: Channel) -> int:
        """Largest number of recipients one call may carry on this channel (0: channel not offered)."""
        return cls.call_limits.get(channel, 0)

    @classmethod
    def batch_limit(cls, channel: Channel) -> int:
        """Recipients per batch, the unit of work one task sends: a whole call where calls take many
        recipients; for one-recipient endpoints, enough calls that a campaign is a handful of tasks."""
        limit = cls.max_batch(channel)
        return limit if limit > 1 else PER_RECIPIENT_BATCH

    def check_size(self, channel: Channel, count: int) -> None:
        """Refuse an empty or over-size batch before any request is made."""
        limit = self.max_batch(channel)
        if limit == 0:
            raise InvalidRequest(f"{self.name} does not offer {channel.value}")
        if count == 0:
            raise InvalidRequest(f"empty {channel.value} batch for {self.name}")
        if count > limit:
            raise BatchTooLarge(f"{count:,} {channel.value} recipients in one {self.name} call; the limit is {limit:,}")

    @abc.abstractmethod
    async def send_sms(self, batch: SmsBatch) -> Submission: ...

    @abc.abstractmethod
    async def send_rcs(self, batch: RcsBatch) -> Submission: ...

    @abc.abstractmethod
    async def send_whatsapp(self, batch: WhatsAppBatch) -> Submission: ...

    async def send_email(self, batch: EmailBatch) -> Submission:
        raise InvalidRequest(f"{self.name} does not offer email")

    async def rcs_capability(self, to: str, agent_id: int | None = None) -> RcsCapability:
        raise InvalidRequest(f"{self.name} has no RCS capability check")

    async def batch_reports(self, channel: Channel, batch_id: str) -> list[DeliveryReport]:
        """The reports of one provider batch (where `polls_reports`)."""
        raise InvalidRequest(f"{self.name} reports by push only")

    async def message_report(self, channel: Channel, message_id: str) -> DeliveryReport:
        """The report of one message (on the channels of `reports_per_message`)."""
        raise InvalidRequest(f"{self.name} has no per-message reports on {channel.value}")

    @abc.abstractmethod
    async def balance(self) -> Balance: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class HttpProvider(Provider):
    """Shared HTTP plumbing: auth header, orjson, timeouts and failure classification."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        connect_timeout: float = 5.0,
        total_timeout: float = 60.0,
    ) -> None:
        self._auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        #: A provider (or a proxy) that echoes the request's headers in its answer would put the key into
        #: every error logged or stored; answers are scrubbed of it as they are read. Short keys (the
        #: sandbox's default `sandbox`) are words, not secrets, and are left alone.
        self._key = api_key.encode() if len(api_key) >= MIN_SCRUBBED_KEY else None
        self.base_url = base_url.rstrip("/")
        self._own_session = session is None
        self._session = session or new_session(connect_timeout, total_timeout)

    @classmethod
    def from_settings(
        cls, settings: Settings, session: aiohttp.ClientSession | None = None, base_url: str | None = None
    ) -> HttpProvider:
        return cls(
            cls.configured_key(settings),
            base_url or cls.configured_url(settings),
            session,
            connect_timeout=settings.http_connect_timeout,
            total_timeout=settings.http_total_timeout,
        )

    async def aclose(self) -> None:
        if self._own_session and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> HttpProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @abc.abstractmethod
    def _error_for(self, response: Response) -> ProviderError:
        """Map a non-success answer to the error class that says what to do next."""

    def _is_success(self, response: Response) -> bool:
        return 200 <= response.status < 300

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Response:
        """Send one request and return the decoded answer, or raise the right `ProviderError`.

        A failure before the request headers reached the socket (refused, DNS,
        connect timeout) is `TransientError`; after that, a timeout or a dropped
        connection is `OutcomeUnknown`, because the provider may already have acted.
        """
        url = self.base_url + path
        data = orjson.dumps(body) if body is not None else None
        flag = _SentFlag()
        failure = None
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers=self._auth,
                trace_request_ctx=flag,
                allow_redirects=False,
            ) as http:
                raw = await http.read()
                if self._key is not None and self._key in raw:
                    raw = raw.replace(self._key, SCRUBBED_KEY)
                response = Response(http.status, dict(http.headers), decode_json(raw))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        if failure is not None:
            # Raised outside the handler so that no aiohttp exception is chained to ours:
            # those carry the request headers, and with them the API key.
            log.warning("%s %s %s failed (%s, sent=%s)", self.name, method, path, failure, flag.sent)
            if flag.sent:
                raise OutcomeUnknown(self.name, f"no answer to {method} {path} after sending it ({failure})")
            raise TransientError(self.name, f"{method} {path} could not be sent ({failure})")
        log.debug("%s %s %s -> %s", self.name, method, path, response.status)
        if not self._is_success(response):
            raise self._error_for(response)
        if not isinstance(response.data, dict | list):
            # A success status with a body we cannot read: the provider probably acted.
            raise OutcomeUnknown(self.name, f"unreadable {response.status} answer to {method} {path}", response.status)
        return response

    @staticmethod
    def retry_after(headers: Mapping[str, str], default: float = 1.0) -> float:
        """Seconds from a `Retry-After` header (delta-seconds; an HTTP date is read as the default)."""
        value = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return max(0.0, float(value)) if value is not None else default
        except ValueError:
            return default
