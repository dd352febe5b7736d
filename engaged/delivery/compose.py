"""Each recipient's final copy: X-MSYS-API removed, then engagement tracking applied per its plan."""

from __future__ import annotations

import logging

import msgspec

from engaged.delivery.unsubscribe import ReturnHeaders
from engaged.headers import HeaderBlock
from engaged.rewrite.mime import RewriteOptions, rewrite_message
from engaged.smtpapi.header import FIELD_NAME
from engaged.spool.record import SpoolRecord
from engaged.tokens import RecipientLinks, SigningKeys

log = logging.getLogger("engaged.delivery")


class Copy(msgspec.Struct, frozen=True):
    """One recipient's bytes and what building them warned about (a part left untracked, …)."""

    data: bytes
    warnings: tuple[str, ...] = ()
    mail_from: str | None = None  # the envelope sender for this copy (a VERP return path); None: the record's


class CopyComposer:
    """Builds recipient copies; holds the signing keys, nothing else."""

    def __init__(self, keyring: SigningKeys, returns: ReturnHeaders | None = None) -> None:
        self._keyring = keyring
        self._returns = returns if returns is not None and returns.active else None

    def __call__(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        recipient = record.recipients[index]
        block = HeaderBlock(body)
        if recipient.headers is not None:
            block = HeaderBlock(recipient.headers + body[block.body_start :])
        data = block.without(FIELD_NAME)
        plan = recipient.plan
        warnings: tuple[str, ...] = ()
        if plan.tracks:
            links = RecipientLinks(self._keyring, recipient.identity, plan)
            options = RewriteOptions(open_tracking=plan.open_tracking, click_tracking=plan.click_tracking,
                                     initial_open=plan.initial_open)
            result = rewrite_message(data, links, options)
            if result.warnings:
                log.warning("message %s recipient %d: %s", record.message_id, index, "; ".join(result.warnings))
            data, warnings = result.data, result.warnings
        if self._returns is None:
            return Copy(data, warnings)
        data, mail_from = self._returns(data, recipient.identity, plan, record.mail_from)
        return Copy(data, warnings, mail_from)
