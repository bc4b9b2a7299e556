"""A contact file and a message become a campaign: checked, costed and cut into provider-sized batches.

Planning is where money is protected: every recipient is known, every message
rendered and checked against its DLT template, the cost is summed from the
price table and held against the provider balance and the caller's cap, all
before anything is sent. The result is either a refusal that says why, with
the figures, or a `Plan` that `save_plan` writes in one transaction (campaign,
batches, one message row per recipient) for the sender to work through.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, insert, select, text, update

from engine import clock, gsm
from engine.csvsafe import Target
from engine.errors import CampaignError
from engine.planning.contacts import (
    DUPLICATE,
    MAX_FILE_BYTES,
    REJECTED,
    SUPPRESSED,
    ContactFile,
    Contacts,
    address_column,
    read_addresses,
    read_contacts,
)
from engine.planning.dlt import VAR_MAX, VAR_MAX_LIMIT, DltTemplate
from engine.planning.pricing import PriceTable
from engine.planning.render import Encoded, Rendered, Template, encode
from engine.planning.summary import DayShare, Encodings, FallbackCost, PlanSummary, Preview
from engine.providers import CLIENTS, PROVIDERS
from engine.providers.base import Balance, CampaignCalls, Channel
from engine.redact import mask_address
from engine.settings import MAX_SMS_PARTS
from engine.store import models
from engine.store.db import bulk_insert
from engine.store.states import BatchState, CampaignState
from engine.windows import SendWindow, describe_timing, local_text

log = logging.getLogger(__name__)

CHANNELS = ("sms", "email", "rcs", "whatsapp")

#: Our bound on one request body: neither provider publishes one, and common
#: API gateways accept 10 MiB; batches are cut before either limit is reached.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
NO_DLT = "{:,} India-bound SMS have no DLT template: operators will block them (give --dlt-template-id)"
#: Rows saved at once above which PostgreSQL's statistics are refreshed right away.
ANALYZE_AFTER = 10_000
#: JSON around one recipient in a bulk body (keys, quotes, separators).
RECIPIENT_OVERHEAD_BYTES = 48
#: Recipients whose messages a plan shows (`--preview N` shows another number).
PREVIEWS = 3

Progress = Callable[[str, float], None]


class PlanRefused(CampaignError):
    """The campaign must not be sent as asked; the message carries the figures."""


CONTROLS_REMOVED = "{:,} messages had control characters in their values; they were removed"
BIDI_FOUND = (
    "{:,} messages hold a right-to-left or left-to-right override, which can show a link or a name in another "
    "order than it is (a phishing trick): check the file and the text"
)
TOO_MANY_PARTS = "message would take {:,} SMS parts; the most is {} (CAMPAIGN_MAX_SMS_PARTS)"
#: The texts of a campaign that may hold placeholders, as messages name them.
TEXTS = ("message", "subject", "fallback message")


@dataclass(frozen=True)
class PlanRequest:
    """What the marketer asked for (the `campaign plan` options)."""

    contacts: Path
    channel: str
    provider: str
    message: str
    sender: str | None = None
    subject: str | None = None
    agent_id: str | None = None
    fallback_message: str | None = None
    dlt_template: DltTemplate | None = None
    to_column: str | None = None
    smart_encoding: bool = False
    max_cost: float | None = None
    spread: bool = True
    batch_size: int | None = None
    dlt_var_max: int = VAR_MAX
    rejects: Path | None = None
    name: str | None = None
    #: The hours it may send in (`--window`); None: the default for its kind of message.
    window: SendWindow | None = None
    #: Replace an existing rejects file (`--force`) rather than refuse it (`--rejects`) or write beside it.
    force: bool = False
    #: Refuse, rather than warn about, text that looks like a placeholder gone wrong (`--strict`).
    strict: bool = False


@dataclass(frozen=True)
class PlanContext:
    """What the plan is checked against: the account, the rules and the lists."""

    prices: PriceTable
    region: str = "IN"
    require_dlt: bool = False
    suppressed: pa.Array | None = None
    balance: Balance | None = None
    daily_quota: int | None = None
    plan_name: str | None = None
    #: The hours promotional SMS to Indian numbers are kept to unless the request gives its own.
    promotional_window: SendWindow | None = None
    #: The largest contact file read (`CAMPAIGN_MAX_FILE_MB`).
    max_file_bytes: int = MAX_FILE_BYTES
    #: The most SMS parts one message may take (`CAMPAIGN_MAX_SMS_PARTS`).
    max_sms_parts: int = MAX_SMS_PARTS


@dataclass
class Plan:
    request: PlanRequest
    contacts: Contacts
    rows: np.ndarray
    bodies: pa.Array
    subjects: pa.Array | None
    fallbacks: pa.Array | None
    encoded: Encoded
    costs: np.ndarray
    currency: str
    batch_of: np.ndarray
    batch_days: np.ndarray
    #: Set by `build_plan` once the plan's parts are known.
    summary: PlanSummary = field(init=False)
    window: SendWindow | None = None

    @property
    def addresses(self) -> pa.Array:
        return self.contacts.addresses.take(pa.array(self.rows))

    def previews(self, count: int = PREVIEWS) -> list[Preview]:
        """The first `count` recipients' messages as they will go, every part, addresses masked."""
        shown = slice(0, max(count, 0))
        parts = [self.bodies[shown].to_pylist()]
        for extra in (self.subjects, self.fallbacks):
            parts.append(extra[shown].to_pylist() if extra is not None else [None] * len(parts[0]))
        sms = self.request.channel == Channel.SMS.value
        return [
            Preview(
                line=int(self.contacts.file.lines[row]),
                to=mask_address(address),
                text=text,
                subject=subject,
                fallback=fallback,
                segments=int(self.encoded.segments[i]) if sms else None,
                encoding=("ucs2" if self.encoded.ucs2[i] else "gsm7") if sms else None,
            )
            for i, (row, address, text, subject, fallback) in enumerate(
                zip(self.rows[shown], self.addresses[shown].to_pylist(), *parts, strict=True)
            )
        ]


def _noop(stage: str, fraction: float) -> None:
    return None


def _batch_limit(request: PlanRequest) -> int:
    """Recipients per provider call for this request; refuses what the provider or channel cannot do,
    and options out of range."""
    channel, provider = request.channel, request.provider
    if channel not in CHANNELS:
        raise PlanRefused(f"unknown channel {channel!r}; choose one of {', '.join(CHANNELS)}")
    client = CLIENTS.get(provider)
    if client is None:
        raise PlanRefused(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if not client.max_batch(Channel(channel)):
        raise PlanRefused(f"{provider} does not offer {channel}")
    limit = client.batch_limit(Channel(channel))
    if channel == "email" and not request.subject:
        raise PlanRefused("an email campaign needs a --subject")
    problems = client.call_problems(
        CampaignCalls(Channel(channel), request.sender, request.agent_id, bool(request.fallback_message))
    )
    if problems:
        raise PlanRefused("; ".join(problems))
    if not 1 <= request.dlt_var_max <= VAR_MAX_LIMIT:
        raise PlanRefused(f"--dlt-var-max must be between 1 and {VAR_MAX_LIMIT} characters")
    if request.batch_size is None:
        return limit
    if request.batch_size < 1:
        raise PlanRefused("--batch-size must be at least 1")
    return min(limit, request.batch_size)


@dataclass
class _Texts:
    """The rendered texts of the candidate rows, and why each row cannot be sent (None if it can)."""

    bodies: Rendered
    subjects: Rendered | None
    fallbacks: Rendered | None
    reason: np.ndarray
    replaced: int
    cleaned: int = 0
    bidi: int = 0

    @property
    def sms(self) -> Rendered:
        """What goes out as SMS: the message itself, or an RCS campaign's fallback."""
        return self.bodies if self.fallbacks is None else self.fallbacks


def _render(request: PlanRequest, file: ContactFile, rows: np.ndarray, templates: dict[str, Template]) -> _Texts:
    """Render message, subject and fallback for `rows` (their columns were checked before reading the rows)."""
    message, subject, fallback = templates["message"], templates.get("subject"), templates.get(TEXTS[2])
    table = file.table.take(pa.array(rows))
    bodies = message.render(table)
    reason = bodies.reason
    subjects = subject.render(table) if subject else None
    fallbacks = fallback.render(table) if fallback else None
    for extra in (subjects, fallbacks):
        if extra is not None:
            reason = np.where(pd.isna(reason), extra.reason, reason)
    cleaned, bidi = _acting_characters([r for r in (bodies, subjects, fallbacks) if r is not None])
    replaced = 0
    if request.smart_encoding and fallbacks is not None:
        fallbacks, replaced = fallbacks.replace_lookalikes()
    elif request.smart_encoding and request.channel == Channel.SMS.value:
        bodies, replaced = bodies.replace_lookalikes()
    return _Texts(bodies, subjects, fallbacks, reason, replaced, cleaned, bidi)


def _acting_characters(texts: list[Rendered]) -> tuple[int, int]:
    """How many messages had control codes in their values (rendering removed them), and how many hold a
    bidirectional override."""
    cleaned = np.zeros(texts[0].rows, dtype=bool)
    bidi = cleaned.copy()
    for rendered in texts:
        if rendered.cleaned is not None:
            cleaned |= rendered.cleaned
        bidi |= rendered.with_bidi_overrides()
    return int(cleaned.sum()), int(bidi.sum())


def _text_warnings(texts: _Texts) -> list[str]:
    warnings = []
    if texts.cleaned:
        warnings.append(CONTROLS_REMOVED.format(texts.cleaned))
    if texts.bidi:
        warnings.append(BIDI_FOUND.format(texts.bidi))
    return warnings


def _refuse_long_sms(texts: pa.Array, reason: np.ndarray, most: int) -> np.ndarray:
    """Rows whose SMS would need more than `most` parts are refused (operators drop longer ones). Only the
    texts long enough to possibly need that many are counted: a part holds at least 66 units and a character
    at most two, so `2 x characters <= most x 66` cannot be too long."""
    long_ones = pc.greater(pc.utf8_length(texts), most * 33).to_numpy(zero_copy_only=False)
    maybe = np.flatnonzero(long_ones & pd.isna(reason))
    if not len(maybe):
        return reason
    parts = encode(texts.take(pa.array(maybe))).segments
    over = parts > most
    reason = reason.copy()
    reason[maybe[over]] = [TOO_MANY_PARTS.format(n, most) for n in parts[over]]
    return reason


def rejects_target(request: PlanRequest) -> Target:
    """Where the rejected rows go: `--rejects` (refused if it exists), else beside the contacts, under a fresh
    name if that one is taken; `--force` replaces either. Never the contact file itself."""
    beside = request.contacts.with_name(request.contacts.stem + ".rejects.csv")
    return Target.asked(request.rejects, beside, request.force, source=request.contacts)


def _written(request: PlanRequest) -> dict[str, str]:
    """The texts of the campaign that are templates, by what they are."""
    given = dict(zip(TEXTS, (request.message, request.subject, request.fallback_message), strict=True))
    return {what: text for what, text in given.items() if text}


def _preflight(request: PlanRequest) -> tuple[int, Target]:
    """What is refused before the file is read: the provider's rules (what each of its calls will carry),
    the rejects file, the texts' characters. Returns the batch limit and where the rejects go."""
    limit = _batch_limit(request)
    rejects = rejects_target(request)
    rejects.check()
    for what, written in _written(request).items():
        Template(written, ()).check_characters(what)
    return limit, rejects


def _templates(request: PlanRequest, headers: dict[str, str], warnings: list[str]) -> dict[str, Template]:
    """The texts parsed against the file's columns, by what they are. A placeholder without a column is
    refused; text that looks like a placeholder gone wrong is a warning, or with `--strict` a refusal."""
    templates = {what: Template.parse(text, headers) for what, text in _written(request).items()}
    channel = Channel(request.channel)
    lookalikes: list[str] = []
    for what, template in templates.items():
        template.check_columns(headers, what)
        lookalikes += template.lookalikes(headers, what, html=channel is Channel.EMAIL and what == "message")
    if lookalikes and request.strict:
        raise PlanRefused(f"{'; '.join(lookalikes)} (--strict)")
    warnings += lookalikes
    _check_provider_texts(request, templates)
    return templates


def _check_provider_texts(request: PlanRequest, templates: dict[str, Template]) -> None:
    """Refuse texts the provider would refuse in every call: text it reads as its own placeholder, and
    placeholders where one text goes to every contact."""
    client, channel = CLIENTS[request.provider], Channel(request.channel)
    for what, template in templates.items():
        sent_as = Channel.SMS if what == TEXTS[2] else channel  # the fallback goes as SMS
        problem = next(filter(None, (client.text_problem(sent_as, text) for text in template.literals)), None)
        if problem:
            raise PlanRefused(f"{problem} (in the {what})")
    if channel in client.one_text_per_call and templates["message"].placeholders:
        # Its free-form text is one `message` for every contact: nothing would carry each one's values.
        raise PlanRefused(
            f"{request.provider} sends one {channel.label} text to every contact: use a message without #placeholders#"
        )


def build_plan(request: PlanRequest, context: PlanContext, progress: Progress = _noop) -> Plan:
    """Read, validate, render, check, cost and batch; refuse with a reason rather than plan something unsafe."""
    channel, provider = request.channel, request.provider
    limit, rejects = _preflight(request)

    progress("reading", 0.0)
    file = read_contacts(request.contacts, context.max_file_bytes)
    address_column(file.headers, channel, request.to_column)
    warnings = [*file.warnings]
    templates = _templates(request, file.headers, warnings)

    progress("checking addresses", 0.25)
    contacts = read_addresses(file, channel=channel, region=context.region, to_column=request.to_column)

    progress("rendering", 0.45)
    candidates = np.flatnonzero(contacts.ok)
    texts = _render(request, file, candidates, templates)
    reason = texts.reason

    warnings += _text_warnings(texts)
    sender = request.sender
    progress("checking DLT templates", 0.6)
    if channel == "sms" or (channel == "rcs" and texts.fallbacks is not None):
        india = pc.starts_with(contacts.addresses.take(pa.array(candidates)), "+91").to_numpy(zero_copy_only=False)
        india &= pd.isna(reason)
        if india.any():
            sms_template = templates.get(TEXTS[2]) or templates["message"]
            reason = _check_dlt(request, context, texts.sms.texts, india, reason, sms_template, warnings)
            if request.dlt_template is not None:
                # The header matched case-insensitively; operators expect it as registered.
                sender = request.dlt_template.header

    if channel == "sms" or texts.fallbacks is not None:
        reason = _refuse_long_sms(texts.sms.texts, reason, context.max_sms_parts)

    full_reason = np.full(len(contacts.outcome), None, dtype=object)
    full_reason[candidates] = reason
    contacts.reject(~pd.isna(full_reason), full_reason)
    # Only now, so that a copy refused above does not shut out a later copy that can be sent.
    contacts.drop_duplicates()
    contacts.suppress(context.suppressed)
    keep = contacts.ok[candidates]
    rows = candidates[keep]
    if (channel == "sms" or texts.fallbacks is not None) and request.dlt_template is None:
        # Counted now, after duplicates and suppressions are gone: these are the messages that would go.
        bound = int(pc.sum(pc.starts_with(contacts.addresses.take(pa.array(rows)), "+91")).as_py() or 0)
        if bound:
            warnings.append(NO_DLT.format(bound))
    bodies = texts.bodies.filter(keep)
    subjects = texts.subjects.filter(keep) if texts.subjects is not None else None
    fallbacks = texts.fallbacks.filter(keep) if texts.fallbacks is not None else None

    # Written even when empty, so the file named in the summary never shows an earlier run's rejects.
    rejects_file = contacts.write_rejects(rejects)
    if rejects_file != rejects.path:
        warnings.append(f"{rejects.path} already exists (--force replaces it): the rejects went to {rejects_file}")
    if len(rows) == 0:
        raise PlanRefused(
            f"no valid rows: all {file.rows:,} rows of {request.contacts} were refused; see {rejects_file}"
        )

    progress("counting segments", 0.7)
    if channel == "sms":
        encoded = encode(bodies)
    else:
        encoded = Encoded(np.zeros(len(rows), dtype=bool), np.ones(len(rows), dtype=np.int64))
    costs, currency = context.prices.costs(provider, channel, encoded.ucs2, encoded.segments)
    total_cost = float(costs.sum())

    progress("cutting batches", 0.8)
    days = _days(len(rows), context, request, provider)
    # Each recipient costs its text, its address and the JSON around them.
    payload = pc.binary_length(bodies.texts).to_numpy(zero_copy_only=False).astype(np.int64)
    payload += RECIPIENT_OVERHEAD_BYTES + 16
    if fallbacks is not None:
        payload += pc.binary_length(fallbacks.texts).to_numpy(zero_copy_only=False)
    batch_of = cut_batches(payload, days, limit, MAX_REQUEST_BYTES)
    batch_days = days[np.r_[0, np.flatnonzero(np.diff(batch_of)) + 1]]

    plan = Plan(
        request,
        contacts,
        rows,
        bodies.texts,
        subjects.texts if subjects is not None else None,
        fallbacks.texts if fallbacks is not None else None,
        encoded,
        costs,
        currency,
        batch_of,
        batch_days,
    )
    plan.window, why = _window(plan, context, warnings)
    plan.summary = _summary(
        plan,
        context,
        sender=sender,
        total_cost=total_cost,
        replaced=texts.replaced,
        rejects_file=rejects_file,
        warnings=warnings,
        why=why,
        fallback=_fallback_cost(fallbacks, context, provider),
    )
    check_funds(plan, context.balance)
    log.info(
        "planned %s: %d rows, %d messages in %d batches, estimated %.2f %s",
        request.contacts.name,
        file.rows,
        len(rows),
        plan.summary.batches,
        total_cost,
        currency,
    )
    progress("planned", 1.0)
    return plan


def _check_dlt(
    request: PlanRequest,
    context: PlanContext,
    texts: pa.Array,
    india: np.ndarray,
    reason: np.ndarray,
    template: Template,
    warnings: list[str],
) -> np.ndarray:
    dlt = request.dlt_template
    if dlt is None:
        if context.require_dlt:
            raise PlanRefused(f"{NO_DLT.format(int(india.sum()))}; CAMPAIGN_REQUIRE_DLT is set")
        return reason
    dlt.validate()
    dlt.check_sender(request.sender)
    skeleton = template.skeleton()
    if request.smart_encoding:
        # The rendered texts are checked after the same replacement.
        skeleton = gsm.replace_lookalikes(skeleton)
    dlt.check_static_text(skeleton, request.dlt_var_max)
    indices = np.flatnonzero(india)
    ok, why = dlt.match(texts.take(pa.array(indices)), request.dlt_var_max)
    reason = reason.copy()
    reason[indices[~ok]] = why[~ok]
    return reason


def _window(plan: Plan, context: PlanContext, warnings: list[str]) -> tuple[SendWindow | None, str | None]:
    """The hours the campaign may send in: the request's own, else the default for its kind of message (and why).

    Only a DLT template registered as promotional says what kind of message an
    SMS is: such a campaign to Indian numbers keeps to the regulated hours.
    Service and transactional messages (OTPs, orders) may go at any hour, and
    without a template the kind is not known, so no window is assumed.
    """
    request = plan.request
    category = (request.dlt_template.category or "") if request.dlt_template else ""
    regulated = None
    if context.promotional_window and category.strip().lower().startswith("promo"):
        sms = request.channel == Channel.SMS.value or plan.fallbacks is not None
        if sms and pc.any(pc.starts_with(plan.addresses, "+91")).as_py():
            regulated = context.promotional_window
    if request.window is None:
        return regulated, "promotional SMS to India" if regulated else None
    if regulated is not None and not request.window.within(regulated):
        warnings.append(
            f"promotional SMS may reach Indian numbers only {regulated}: the window {request.window} goes outside it"
        )
    return request.window, None


def _days(count: int, context: PlanContext, request: PlanRequest, provider: str) -> np.ndarray:
    """Which day (0 = the first) each message goes out on, under the account's daily message quota."""
    quota = context.daily_quota
    if not quota or count <= quota:
        return np.zeros(count, dtype=np.int64)
    needed = -(-count // quota)
    if not request.spread:
        raise PlanRefused(
            f"{count:,} messages exceed the daily quota of {quota:,} of the {provider} "
            f"{context.plan_name or ''} plan; without --no-spread they are sent over {needed} days".replace("  ", " ")
        )
    return np.arange(count, dtype=np.int64) // quota


def cut_batches(payload: np.ndarray, days: np.ndarray, limit: int, max_bytes: int) -> np.ndarray:
    """Batch number of each message: consecutive runs of at most `limit` messages and `max_bytes`
    of payload, never spanning two days. The loop runs once per batch, not per message."""
    count = len(payload)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if limit == 1:
        return np.arange(count, dtype=np.int64)
    cumulative = np.cumsum(payload)
    day_ends = np.r_[np.flatnonzero(np.diff(days)) + 1, count]
    starts = []
    start = 0
    while start < count:
        day_end = day_ends[np.searchsorted(day_ends, start, side="right")]
        base = cumulative[start - 1] if start else 0
        by_bytes = int(np.searchsorted(cumulative, base + max_bytes, side="right"))
        end = min(start + limit, int(day_end), max(by_bytes, start + 1))
        starts.append(start)
        start = end
    sizes = np.diff(np.r_[starts, count])
    return np.repeat(np.arange(len(starts), dtype=np.int64), sizes)


def _summary(
    plan: Plan,
    context: PlanContext,
    *,
    sender: str | None,
    total_cost: float,
    replaced: int,
    rejects_file: Path,
    warnings: list[str],
    why: str | None,
    fallback: FallbackCost | None,
) -> PlanSummary:
    """The plan's figures, each read once from its parts; timed from now."""
    contacts, request = plan.contacts, plan.request
    batch_sizes = np.bincount(plan.batch_of)
    days = _day_shares(plan, batch_sizes)
    return PlanSummary(
        file=str(request.contacts),
        encoding=contacts.file.encoding,
        delimiter=contacts.file.delimiter,
        address_column=contacts.file.headers[contacts.address_key],
        channel=request.channel,
        provider=request.provider,
        sender=sender,
        rows=contacts.file.rows,
        valid=len(plan.rows),
        rejected=contacts.count(REJECTED),
        rejected_by_reason=contacts.rejected_by_reason(),
        duplicates=contacts.count(DUPLICATE),
        suppressed=contacts.count(SUPPRESSED),
        messages=len(plan.rows),
        segments=int(plan.encoded.segments.sum()),
        encodings=Encodings.of(plan.encoded) if request.channel == Channel.SMS.value else Encodings(),
        smart_encoding_replacements=replaced,
        batches=len(batch_sizes),
        largest_batch=int(batch_sizes.max()),
        days=days,
        estimated_cost=round(total_cost, 4),
        currency=plan.currency,
        dlt_template_id=request.dlt_template.template_id if request.dlt_template else None,
        rejects_file=str(rejects_file),
        previews=plan.previews(),
        warnings=warnings,
        timing=describe_timing(plan.window, why, clock.now(), len(days)),
        prices=context.prices.describe(request.provider, request.channel),
        fallback=fallback,
    )


def _day_shares(plan: Plan, batch_sizes: np.ndarray) -> list[DayShare]:
    """Messages and batches of each sending day, the first day first."""
    day_counts = np.bincount(plan.batch_days, weights=batch_sizes).astype(np.int64)
    batches_per_day = np.bincount(plan.batch_days)
    return [
        DayShare(day=day + 1, messages=int(n), batches=int(b))
        for day, (n, b) in enumerate(zip(day_counts, batches_per_day, strict=True))
    ]


def _fallback_cost(fallbacks: Rendered | None, context: PlanContext, provider: str) -> FallbackCost | None:
    """What the SMS fallback of an RCS campaign would cost at most, every recipient's sent; None without one."""
    if fallbacks is None:
        return None
    encoded = encode(fallbacks)
    costs, _ = context.prices.costs(provider, "sms", encoded.ucs2, encoded.segments)
    return FallbackCost(
        segments=int(encoded.segments.sum()),
        encodings=Encodings.of(encoded),
        max_cost=round(float(costs.sum()), 4),
    )


def check_funds(plan: Plan, balance: Balance | None) -> None:
    """Refuse a plan that costs more than the cap or than the provider account holds, with both figures.

    The balance is compared in money when the wallet's currency is the price
    table's; otherwise in credits, read as one credit per SMS segment or per
    message of another channel (Noxitel bills SMS in route credits).
    """
    total, currency = float(plan.summary.estimated_cost), plan.currency
    cap = plan.request.max_cost
    if cap is not None and total > cap:
        raise PlanRefused(f"estimated cost {total:,.2f} {currency} is over --max-cost {cap:,.2f} {currency}")
    if balance is None:
        return
    plan.summary.balance = balance
    provider = plan.request.provider
    if balance.currency.upper() == currency:
        if total > balance.amount:
            raise PlanRefused(
                f"estimated cost {total:,.2f} {currency} is more than the {provider} balance "
                f"{balance.amount:,.2f} {balance.currency}"
            )
        return
    if balance.credits is not None:
        needed = int(plan.encoded.segments.sum())
        if needed > balance.credits:
            raise PlanRefused(
                f"the campaign needs {needed:,} credits and the {provider} account has {balance.credits:,.0f}"
            )
        return
    plan.summary.warnings.append(
        f"the {provider} balance is in {balance.currency} and prices in {currency}: balance not checked"
    )


def _campaign_name(given: str | None, contacts: Path) -> str:
    """The name given (refused when too long to keep), or the file's name and the time."""
    if given:
        return models.bounded(given, models.CAMPAIGNS.c.name, "campaign name") or given
    return default_name(contacts, local_text(clock.now(), "UTC"))


def default_name(contacts: Path, when: str) -> str:
    """A campaign's name when none is given: the contact file's name and `when` (a time with its zone),
    shortened to fit."""
    stamp = f" {when}"
    return contacts.stem[: models.NAME_CHARS - len(stamp)] + stamp


def save_plan(engine: Engine, plan: Plan, name: str | None = None) -> int:
    """Write the campaign, its batches and one message row per recipient in one transaction."""
    request, summary = plan.request, plan.summary
    batch_sizes = np.bincount(plan.batch_of)
    batch_segments = np.bincount(plan.batch_of, weights=plan.encoded.segments).astype(np.int64)
    # Summed prices carry binary noise (59.9999999999996); money is stored to the micro-unit.
    batch_costs = np.round(np.bincount(plan.batch_of, weights=plan.costs), 6)
    batches = len(batch_sizes)
    encoding = None
    if request.channel == Channel.SMS.value:
        encoding = pc.if_else(pa.array(plan.encoded.ucs2), "ucs2", "gsm7")
    with engine.begin() as connection:
        campaign_id = connection.execute(
            insert(models.Campaign)
            .values(
                name=_campaign_name(name or request.name, request.contacts),
                channel=request.channel,
                provider=request.provider,
                sender=summary.sender,
                state=CampaignState.DRAFT.value,
                message_template=request.message,
                subject=request.subject,
                fallback_template=request.fallback_message,
                agent_id=request.agent_id,
                dlt_template_id=request.dlt_template.template_id if request.dlt_template else None,
                dlt_entity_id=request.dlt_template.entity_id if request.dlt_template else None,
                contacts_file=str(request.contacts),
                rejects_file=summary.rejects_file,
                total_messages=len(plan.rows),
                total_segments=summary.segments,
                estimated_cost=summary.estimated_cost,
                currency=plan.currency,
                **(plan.window.columns() if plan.window else {}),
            )
            .returning(models.Campaign.id)
        ).scalar_one()
        bulk_insert(
            connection,
            "batches",
            {
                "campaign_id": np.full(batches, campaign_id),
                "seq": np.arange(batches),
                "channel": [request.channel] * batches,
                "provider": [request.provider] * batches,
                "size": batch_sizes,
                "segments": batch_segments,
                "estimated_cost": batch_costs,
                "send_day": plan.batch_days,
                "state": [BatchState.PLANNED.value] * batches,
                "attempts": np.zeros(batches, dtype=np.int64),
            },
        )
        ids = (
            connection.execute(
                select(models.Batch.id).where(models.Batch.campaign_id == campaign_id).order_by(models.Batch.seq)
            )
            .scalars()
            .all()
        )
        count = len(plan.rows)
        columns: dict[str, Any] = {
            "campaign_id": np.full(count, campaign_id, dtype=np.int64),
            "batch_id": np.asarray(ids, dtype=np.int64)[plan.batch_of],
            "line": plan.contacts.file.lines[plan.rows],
            "address": plan.addresses,
            "body": plan.bodies,
            "segments": plan.encoded.segments,
        }
        if encoding is not None:
            columns["encoding"] = encoding
        if plan.subjects is not None:
            columns["subject"] = plan.subjects
        if plan.fallbacks is not None:
            columns["fallback_body"] = plan.fallbacks
        bulk_insert(connection, "messages", columns)
        summary.campaign_id = campaign_id
        connection.execute(
            update(models.Campaign)
            .where(models.Campaign.id == campaign_id)
            .values(summary=orjson.dumps(summary.as_json()).decode())
        )
    if engine.dialect.name == "postgresql" and len(plan.rows) >= ANALYZE_AFTER:
        # Fresh statistics, so that sending plans its per-batch statements on them
        # rather than on the empty table autovacuum last saw.
        with engine.begin() as connection:
            connection.execute(text("ANALYZE messages"))
    return campaign_id
