"""Each recipient's final copy: X-MSYS-API removed, then engagement tracking applied per its plan."""

from __future__ import annotations

import logging

import msgspec

from engaged.keys import Keyring
from engaged.rewrite.mime import RewriteOptions, rewrite_message
from engaged.smtpapi.header import strip_header
from engaged.spool.record import SpoolRecord
from engaged.tokens import LinkData, RecipientLinks, UntrackableLink

log = logging.getLogger("engaged.delivery")


class Copy(msgspec.Struct, frozen=True):
    """One recipient's bytes and what happened while building them."""

    data: bytes
    links_tracked: int = 0
    pixels: int = 0
    warnings: tuple[str, ...] = ()


class _TolerantLinks:
    """A LinkMinter that leaves a link untracked (and says so) when it cannot be tracked."""

    def __init__(self, links: RecipientLinks) -> None:
        self._links = links
        self.warnings: list[str] = []

    def click_url(self, target_url: str, link_name: str, sublink: str | None, unsubscribe: bool) -> str:
        try:
            return self._links.click_url(target_url, link_name, sublink, unsubscribe)
        except UntrackableLink as error:
            self.warnings.append(f"link left untracked: {error}")
            return target_url

    def open_url(self, initial: bool) -> str:
        return self._links.open_url(initial)


class CopyComposer:
    """Builds recipient copies; holds the signing keys, nothing else."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    def __call__(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        data = strip_header(body)
        recipient = record.recipients[index]
        plan = recipient.plan
        if not (plan.open_tracking or plan.click_tracking):
            return Copy(data)
        links = _TolerantLinks(RecipientLinks(self._keyring, LinkData(
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
        )))
        options = RewriteOptions(open_tracking=plan.open_tracking, click_tracking=plan.click_tracking,
                                 initial_open=plan.initial_open)
        result = rewrite_message(data, links, options)
        warnings = (*result.warnings, *links.warnings)
        if warnings:
            log.warning("message %s recipient %d: %s", record.message_id, index, "; ".join(warnings))
        return Copy(result.data, result.links_tracked, result.pixels, warnings)
