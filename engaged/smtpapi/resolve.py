"""Precedence, pure: policy context > X-MSYS-API > listener override > [smtpapi] > built-in default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engaged.config import EngagementTrackerConfig, SmtpapiSettings
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.smtpapi.header import MAX_CAMPAIGN_BYTES, MAX_TAGS, HeaderError, XMsysApi, parse_flag

CONTEXT_KEYS = (
    "smtpapi_campaign_id",
    "smtpapi_click_tracking",
    "smtpapi_click_tracking_scheme",
    "smtpapi_metadata",
    "smtpapi_open_tracking",
    "smtpapi_open_tracking_scheme",
    "smtpapi_tags",
    "smtpapi_tracking_domain",
    "smtpapi_tracking_link_expiry",
    "mo_customer_id",
    "smtpapi_dkim_key",
)


class PlanError(msgspec.Struct, frozen=True):
    """A context variable or header value made the plan impossible: the text after `550 5.6.0 `."""

    reason: str


def resolve_recipient(
    settings: SmtpapiSettings,
    tracker: EngagementTrackerConfig,
    header: XMsysApi | None,
    context: Mapping[str, str],
    base: RecipientIdentity,
) -> tuple[RecipientIdentity, TrackingPlan] | PlanError:
    """One recipient's identity (campaign, metadata, tags, customer, …) and TrackingPlan.

    `settings` is [smtpapi] with the listener's overrides already applied; `context` holds the policy
    context variables (message context over connection context, strings as Momentum keeps them);
    `base` is the recipient's identity from the envelope, whose `customer_id` (from SMTP AUTH) a
    `mo_customer_id` context variable overrides. An empty context value counts as unset.
    """
    head = header or XMsysApi()
    ctx = {key: value for key, value in context.items() if key in CONTEXT_KEYS and value != ""}
    problems: list[str] = []

    open_tracking = _flag(ctx, "smtpapi_open_tracking", head.open_tracking, settings.open_tracking_enabled, problems)
    click_tracking = _flag(
        ctx, "smtpapi_click_tracking", head.click_tracking, settings.click_tracking_enabled, problems
    )
    open_scheme = _scheme(ctx, "smtpapi_open_tracking_scheme", settings.open_tracking_scheme, problems)
    click_scheme = _scheme(ctx, "smtpapi_click_tracking_scheme", settings.click_tracking_scheme, problems)
    domain = ctx.get("smtpapi_tracking_domain", settings.tracking_domain)
    expiry = settings.tracking_link_expiry
    if "smtpapi_tracking_link_expiry" in ctx:
        try:
            expiry = int(ctx["smtpapi_tracking_link_expiry"])
        except ValueError:
            problems.append("smtpapi_tracking_link_expiry context must be an integer number of seconds")
    campaign = ctx.get("smtpapi_campaign_id", head.campaign_id or "")
    if len(campaign.encode("utf-8")) > MAX_CAMPAIGN_BYTES:
        problems.append("smtpapi_campaign_id context is limited to 64 bytes")
    metadata = head.metadata or {}
    if "smtpapi_metadata" in ctx:
        parsed = _json(ctx["smtpapi_metadata"])
        if isinstance(parsed, dict):
            metadata = parsed
        else:
            problems.append("smtpapi_metadata context must be of type 'json object'")
    tags = head.tags or []
    if "smtpapi_tags" in ctx:
        parsed = _json(ctx["smtpapi_tags"])
        if isinstance(parsed, list) and all(isinstance(tag, str) for tag in parsed):
            tags = parsed[:MAX_TAGS]
        else:
            problems.append("smtpapi_tags context must be of type 'json array' of strings")
    if problems:
        return PlanError(problems[0])
    identity = msgspec.structs.replace(
        base,
        campaign_id=campaign,
        metadata=metadata,
        tags=tuple(tags),
        customer_id=ctx.get("mo_customer_id", base.customer_id),
        transactional=bool(head.transactional),
        sandbox=bool(head.sandbox),
        ip_pool=head.ip_pool or "",
    )
    plan = TrackingPlan(
        open_tracking=open_tracking,
        click_tracking=click_tracking,
        initial_open=settings.initial_open_enabled,
        open_scheme=open_scheme,
        click_scheme=click_scheme,
        tracking_domain=domain,
        link_expiry=expiry,
        include_metadata_in_clicks=tracker.click_tracking_include_metadata,
        max_metadata_len=tracker.max_metadata_len,
        dkim_key=ctx.get("smtpapi_dkim_key", head.dkim_key or ""),
        inline_css=bool(head.inline_css),
    )
    return identity, plan


def _flag(ctx: Mapping[str, str], key: str, header: bool | None, config: bool, problems: list[str]) -> bool:
    if key in ctx:
        parsed = parse_flag(ctx[key])
        if isinstance(parsed, bool):
            return parsed
        problems.append(f"{key} context must be one of 1, 0, true, false")
        return False
    return config if header is None else header


def _scheme(ctx: Mapping[str, str], key: str, config: str, problems: list[str]) -> str:
    value = ctx.get(key, config).strip().lower()
    if value not in ("http", "https"):
        problems.append(f"{key} context must be http or https")
    return value


def _json(text: str) -> Any:
    try:
        return msgspec.json.decode(text.encode("utf-8", "surrogateescape"))
    except (msgspec.DecodeError, UnicodeEncodeError):
        return _INVALID


_INVALID = HeaderError("invalid")
