"""Signed return paths (VERP) and X-MSFBL values: which message and recipient a reply is about.

A return path is `b-<tag>@<bounce domain>`, `<tag>` the base32 (lower case: some MTAs fold local
parts) of key id, message id, a hash of the recipient and an HMAC; 39 characters, within the 64 a
local part may have. An unsubscribe mailto is the same with `u-`. X-MSFBL is SparkPost's feedback
loop header: `<signature>|<base64 JSON {"r": recipient, "m": message id}>`, carried back inside ARF
reports. Both verify with the tracked links' keyring, so a forged address or header matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Literal

import msgspec

from engaged.tokens import SigningKeys

Purpose = Literal["b", "u"]
_TAG = 8
_RCPT_HASH = 4
_MESSAGE_ID_HEX = 20


class VerpMatch(msgspec.Struct, frozen=True):
    """What a signed return path or mailto names: the message, and the recipient by hash."""

    purpose: Purpose
    message_id: str
    recipient_hash: bytes

    def names(self, rcpt_to: str) -> bool:
        """Whether `rcpt_to` is the recipient this address was made for."""
        return hmac.compare_digest(recipient_hash(rcpt_to), self.recipient_hash)


def recipient_hash(rcpt_to: str) -> bytes:
    return hashlib.sha256(rcpt_to.lower().encode("utf-8", "surrogateescape")).digest()[:_RCPT_HASH]


def _mac(key: bytes, purpose: str, body: bytes, size: int = _TAG) -> bytes:
    return hmac.digest(key, b"engaged-verp\x00" + purpose.encode() + b"\x00" + body, "sha256")[:size]


def local_part(keys: SigningKeys, purpose: Purpose, message_id: str, rcpt_to: str) -> str:
    """`b-…` or `u-…` for this message and recipient, signed with the current key."""
    key_id = keys.current_id
    key = keys.key(key_id)
    if key is None:
        raise ValueError(f"current key {key_id} is missing from the keyring")
    body = bytes([key_id]) + bytes.fromhex(message_id) + recipient_hash(rcpt_to)
    raw = body + _mac(key, purpose, body)
    return f"{purpose}-" + base64.b32encode(raw).decode().rstrip("=").lower()


def address(keys: SigningKeys, purpose: Purpose, message_id: str, rcpt_to: str, domain: str) -> str:
    return f"{local_part(keys, purpose, message_id, rcpt_to)}@{domain}"


def match(keys: SigningKeys, recipient: str, domains: tuple[str, ...]) -> VerpMatch | None:
    """The message and recipient a return path or mailto names; None when it is not ours or not genuine."""
    local, at, domain = recipient.strip().strip("<>").rpartition("@")
    if not at or domain.lower() not in domains or local[:2].lower() not in ("b-", "u-"):
        return None
    purpose: Purpose = "b" if local[0].lower() == "b" else "u"
    text = local[2:].upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 1 + _MESSAGE_ID_HEX // 2 + _RCPT_HASH + _TAG:
        return None
    body, tag = raw[:-_TAG], raw[-_TAG:]
    key = keys.key(body[0])
    if key is None or not hmac.compare_digest(_mac(key, purpose, body), tag):
        return None
    return VerpMatch(purpose, body[1:1 + _MESSAGE_ID_HEX // 2].hex(), body[1 + _MESSAGE_ID_HEX // 2:])


class _Feedback(msgspec.Struct, frozen=True):
    r: str
    m: str
    k: int = 0


def msfbl(keys: SigningKeys, message_id: str, rcpt_to: str) -> str:
    """The X-MSFBL value for one recipient's copy."""
    key_id = keys.current_id
    key = keys.key(key_id)
    if key is None:
        raise ValueError(f"current key {key_id} is missing from the keyring")
    data = base64.b64encode(msgspec.json.encode(_Feedback(r=rcpt_to.lower(), m=message_id, k=key_id))).decode()
    signature = base64.b64encode(_mac(key, "fbl", data.encode(), 16)).decode()
    return f"{signature}|{data}"


def read_msfbl(keys: SigningKeys, value: str) -> tuple[str, str] | None:
    """(message id, recipient) from a genuine X-MSFBL value, else None."""
    signature, bar, data = "".join(value.split()).partition("|")
    if not bar:
        return None
    try:
        feedback = msgspec.json.decode(base64.b64decode(data, validate=True), type=_Feedback)
        tag = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    key = keys.key(feedback.k)
    if key is None or not hmac.compare_digest(_mac(key, "fbl", data.encode(), 16), tag):
        return None
    return feedback.m, feedback.r
