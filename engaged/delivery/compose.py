"""Each recipient's final copy: X-MSYS-API and accepted peers' headers removed, tracking applied, DKIM-signed."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable, Sequence

import msgspec

from engaged.delivery.dkim import DkimSigner
from engaged.delivery.unsubscribe import ReturnHeaders
from engaged.headers import HeaderBlock
from engaged.rewrite.html import HtmlPlans
from engaged.rewrite.mime import RewriteOptions, rewrite_message
from engaged.smtpapi.header import FIELD_NAME
from engaged.smtpapi.peers import strip_peer_headers
from engaged.spool.record import SpoolRecord
from engaged.tokens import RecipientLinks, SigningKeys

log = logging.getLogger("engaged.delivery")


class Copy(msgspec.Struct, frozen=True):
    """One recipient's bytes and what building them warned about (a part left untracked, …)."""

    data: bytes
    warnings: tuple[str, ...] = ()
    mail_from: str | None = None  # the envelope sender for this copy (a VERP return path); None: the record's


class CopyComposer:
    """Builds recipient copies; holds the link-signing keys, the DKIM signer and what was read of recent HTML parts."""

    def __init__(self, keyring: SigningKeys, returns: ReturnHeaders | None = None, *, dkim: DkimSigner | None = None,
                 peer_headers: Callable[[str], Sequence[str]] = lambda _listener: ()) -> None:
        self._keyring = keyring
        self._returns = returns if returns is not None and returns.active else None
        self._dkim = dkim or DkimSigner(())
        self._peer_headers = peer_headers  # listener -> the vendors whose headers it accepts (and so removes)
        self._plans = HtmlPlans()  # a message's copies (and messages with the same HTML) read it once
        _return_large_blocks()

    def __call__(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        """The copy for recipient `index`, signed last: nothing may change its bytes after DKIM."""
        copy = self._compose(body, record, index)
        key_name = record.recipients[index].plan.dkim_key
        if not self._dkim and not key_name:  # no keys, none asked for: nothing to sign or to warn about
            return copy
        signed = self._dkim.sign(copy.data, key_name)
        if signed.warnings:
            log.warning("message %s recipient %d: %s", record.message_id, index, "; ".join(signed.warnings))
        return msgspec.structs.replace(copy, data=signed.data, warnings=copy.warnings + signed.warnings)

    def _compose(self, body: bytes, record: SpoolRecord, index: int) -> Copy:
        recipient = record.recipients[index]
        block = HeaderBlock(body)
        if recipient.headers is not None:
            block = HeaderBlock(b"".join((recipient.headers, memoryview(body)[block.body_start :])))  # one copy
        data = strip_peer_headers(block.without(FIELD_NAME), self._peer_headers(record.listener))
        if record.cc_field:
            data = _replace_field(data, b"cc", record.cc_field)
        if record.drop_bcc or recipient.bcc_field:
            data = _replace_field(data, b"bcc", recipient.bcc_field)
        plan = recipient.plan
        warnings: tuple[str, ...] = ()
        if plan.tracks or plan.inline_css:
            # An archive copy carries the links of the copy it replicates (tokens are deterministic).
            links = RecipientLinks(self._keyring, recipient.replica_of or recipient.identity, plan)
            options = RewriteOptions(open_tracking=plan.open_tracking, click_tracking=plan.click_tracking,
                                     initial_open=plan.initial_open, inline_css=plan.inline_css)
            result = rewrite_message(data, links, options, links.amp(), plans=self._plans)
            if result.warnings:
                log.warning("message %s recipient %d: %s", record.message_id, index, "; ".join(result.warnings))
            data, warnings = result.data, result.warnings
        if self._returns is None:
            return Copy(data, warnings)
        data, mail_from = self._returns(data, recipient.identity, plan, record.mail_from)
        return Copy(data, warnings, mail_from)


def _replace_field(data: bytes, name: bytes, line: bytes) -> bytes:
    """`data` with its fields `name` removed and `line` (a whole field, or nothing) put on top of the header block."""
    return line + HeaderBlock(data).without(name)


def release_memory() -> None:
    """Hand free heap memory back to the operating system (glibc's `malloc_trim`; elsewhere nothing).

    Called on a thread (ctypes releases the GIL) after a large copy is built and again after it is sent.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _return_large_blocks() -> None:
    """Make glibc map every block of LARGE_BLOCK or more on its own, so freeing it gives it back at once.

    By default the threshold grows to 32 MiB as large blocks are freed, and blocks below it stay in the
    allocator's arenas (a thread's arena keeps up to 64 MiB at its top even through `malloc_trim`): after
    four 25 MB copies, 556 MB stayed with the process. Process-wide; set once per process that composes.
    """
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK)


LARGE_BLOCK = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim.argtypes, libc.mallopt.argtypes = [ctypes.c_size_t], [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return None
    return libc
