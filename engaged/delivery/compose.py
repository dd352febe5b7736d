"""Each recipient's final copy: X-MSYS-API removed, then engagement tracking applied per its plan."""

from __future__ import annotations

import logging

import msgspec

from engaged.rewrite.mime import RewriteOptions, rewrite_message
from engaged.smtpapi.header import strip_header
from engaged.spool.record import SpoolRecord
from engaged.tokens import LinkData, RecipientLinks, SigningKeys

log = logging.getLogger("engaged.delivery")


class Copy(msgspec.Struct, frozen=True):
    """One recipient's bytes and what happened while building them."""

    data: bytes
    links_tracked: int = 0
    pixels: int = 0
    warnings: tuple[str, ...] = ()


class CopyComposer:
    """Builds recipient copies; holds the signing keys, nothing else."""

    def __init__(self, keyring: SigningKeys) -> None:
        self._keyring = keyring

    def __call__(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        recipient = record.recipients[index]
        if recipient.headers is not None:
            end = body.find(b"\r\n\r\n")
            body = recipient.headers + (body[end + 4 :] if end >= 0 else b"")
        data = strip_header(body)
        plan = recipient.plan
        if not (plan.open_tracking or plan.click_tracking):
            return Copy(data)
        links = RecipientLinks(self._keyring, LinkData(
            message_id=record.message_id,
            transmission_id=record.transmission_id,
            rcpt_to=recipient.rcpt_to.lower(),
            raw_rcpt_to=recipient.rcpt_to,
            campaign_id=plan.campaign_id,
            customer_id=plan.customer_id,
            tags=tuple(plan.tags),
            metadata=plan.metadata or None,
            open_scheme=plan.open_scheme,
            click_scheme=plan.click_scheme,
            tracking_domain=plan.tracking_domain,
            expires=int(record.received_at) + plan.link_expiry,
            include_metadata_in_clicks=plan.include_metadata_in_clicks,
            max_metadata_len=plan.max_metadata_len,
            injection_time=int(record.received_at),
        ))
        options = RewriteOptions(open_tracking=plan.open_tracking, click_tracking=plan.click_tracking,
                                 initial_open=plan.initial_open)
        result = rewrite_message(data, links, options)
        if result.warnings:
            log.warning("message %s recipient %d: %s", record.message_id, index, "; ".join(result.warnings))
        return Copy(result.data, result.links_tracked, result.pixels, result.warnings)
