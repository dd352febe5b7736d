"""DKIM signing of each recipient's copy (⑥ delivery), after every rewrite and header change: RFC 6376, RFC 8463.

Keys come from `[[dkim]]` and are read once at startup (`read_private_key` is what `load_config` checks them with,
so a bad key stops `serve` and `check-config` with `file:dkim[n].private_key: reason`). A copy is signed with the
key its plan names (`options.dkim_key`, or the `smtpapi_dkim_key` policy variable), else the key of its `From:`
domain, exact first, then each parent domain. A copy whose key cannot be chosen or whose signing fails goes out
unsigned, with a warning; signing never raises.
"""

from __future__ import annotations

import base64
import email.utils
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dkim
import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from engaged.dkim_keys import (
    DEFAULT_SIGNED_HEADERS,
    MIN_RSA_BITS,
    KeyMaterial,
    entry_problems,
    generate_key,
    is_domain,
    read_private_key,
    txt_record,
)
from engaged.errors import ConfigError
from engaged.headers import HeaderBlock, unfold

if TYPE_CHECKING:
    from engaged.config import DkimConfig

__all__ = [
    "DEFAULT_SIGNED_HEADERS",
    "MIN_RSA_BITS",
    "DkimKey",
    "DkimSigner",
    "KeyMaterial",
    "Signed",
    "from_domain",
    "generate_key",
    "read_private_key",
    "txt_record",
]

_FIELD = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:", re.MULTILINE)


class _OpenSslDkim(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer (canonicalisation, field selection, folding) with the RSA operation done by OpenSSL.

    dkimpy computes RSA with Python integers: about 11 ms of CPU per signature for a 2048-bit key, holding
    the GIL; OpenSSL takes well under one. The steps are dkimpy's own `gen_header` for rsa-sha256, and every
    signature is checked by dkimpy's verifier in the tests.
    """

    def __init__(self, message: bytes, key: rsa.RSAPrivateKey) -> None:
        super().__init__(message)
        self._rsa = key

    def gen_header(self, fields: list[tuple[bytes, bytes]], include_headers: Any, canon_policy: Any,
                   header_name: bytes, pk: Any, standardize: bool = False) -> bytes:
        value = dkim.fold(b"; ".join(b"=".join(field) for field in fields), namelen=len(header_name),
                          linesep=b"\r\n")
        value = dkim.RE_BTAG.sub(b"\\1", value)
        hasher = self.hasher()
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(hasher, canon_policy, headers, include_headers,
                                                (header_name, b" " + value), dict(fields))
        signature = self._rsa.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        at = next(i for i, field in enumerate(fields) if field[0] == b"b")
        fields[at] = (b"b", base64.b64encode(signature))
        value = b"; ".join(b"=".join(field) for field in fields) + self.linesep
        return bytes(dkim.fold(value, namelen=len(header_name), linesep=self.linesep))


class DkimKey(msgspec.Struct, frozen=True, kw_only=True):
    """One configured signing key."""

    name: str  # what options.dkim_key names it by; the domain unless [[dkim]] name says otherwise
    domain: str
    selector: str
    material: KeyMaterial
    headers: tuple[str, ...]


class Signed(msgspec.Struct, frozen=True):
    """The copy to send (signed, or as it came) and why it was not signed, if it was not."""

    data: bytes
    domain: str = ""
    warnings: tuple[str, ...] = ()


class DkimSigner:
    """Signs copies with the configured keys; immutable after construction, safe across threads."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self._by_name = {key.name: key for key in keys}
        self._rsa = {key.name: rsa_key for key in keys if (rsa_key := key.material.rsa_key()) is not None}
        self._by_domain: dict[str, DkimKey] = {}
        for key in keys:
            self._by_domain.setdefault(key.domain, key)

    @classmethod
    def from_config(cls, entries: Sequence[DkimConfig]) -> DkimSigner:
        """Read every `[[dkim]]` key; raises ConfigError (`dkim[n].key: reason`) for one that does not load."""
        problems = entry_problems(entries)
        if problems:
            raise ConfigError([f"{key}: {reason}" for key, reason in problems])
        keys = []
        for entry in entries:
            material = read_private_key(entry.private_key)
            if isinstance(material, str):  # changed since the check above
                raise ConfigError([f"dkim.private_key: {material}"])
            domain = entry.domain.lower().rstrip(".")
            keys.append(DkimKey(name=entry.name or domain, domain=domain, selector=entry.selector,
                                material=material, headers=tuple(h.lower() for h in entry.headers)
                                or DEFAULT_SIGNED_HEADERS))
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def choose(self, message: bytes, key_name: str = "") -> DkimKey | str | None:
        """The key for this copy; a warning when none can be chosen; None when no key covers its From domain."""
        if key_name:
            named = self._by_name.get(key_name)
            return named or f"DKIM: dkim_key {key_name!r} names no configured key; copy sent unsigned"
        domain = from_domain(message)
        if domain is None or domain.startswith("DKIM:"):
            return domain
        labels = domain.split(".")
        for start in range(len(labels)):
            key = self._by_domain.get(".".join(labels[start:]))
            if key is not None:
                return key
        return None

    def sign(self, message: bytes, key_name: str = "") -> Signed:
        """`message` with a DKIM-Signature field first, or as it came with the reason it was not signed."""
        if not self._by_name and not key_name:
            return Signed(message)
        key = self.choose(message, key_name)
        if key is None:
            return Signed(message)
        if isinstance(key, str):
            return Signed(message, warnings=(key,))
        if message[:1] in (b" ", b"\t"):  # dkimpy's parser raises IndexError on a first line that is a continuation
            return Signed(message, warnings=("DKIM: the header block starts with a folded line; copy sent unsigned",))
        rsa_key = self._rsa.get(key.name)
        try:
            signer = dkim.DKIM(message) if rsa_key is None else _OpenSslDkim(message, rsa_key)
            header = signer.sign(key.selector.encode("ascii"), key.domain.encode("ascii"), key.material.private,
                                 signature_algorithm=key.material.algorithm,
                                 include_headers=_signed_fields(message, key.headers))
        except dkim.DKIMException as error:
            return Signed(message, warnings=(f"DKIM: signing failed ({error}); copy sent unsigned",))
        return Signed(header + message, key.domain)


def _signed_fields(message: bytes, wanted: tuple[str, ...]) -> list[bytes]:
    """Each wanted field as often as the header block has it; From once more (an absent From is oversigned too)."""
    end = message.find(b"\r\n\r\n")
    head = message if end < 0 else message[: end + 2]
    counts: dict[bytes, int] = {}
    for found in _FIELD.finditer(head):
        name = found.group(1).lower()
        counts[name] = counts.get(name, 0) + 1
    fields: list[bytes] = []
    for name in dict.fromkeys(wanted):
        raw = name.encode("ascii")
        fields.extend([raw] * (counts.get(raw, 0) + (1 if raw == b"from" else 0)))
    return fields


def from_domain(message: bytes) -> str | None:
    """The domain of the one address in the one `From:` field (ASCII, lower case); a `DKIM:` warning otherwise."""
    values = HeaderBlock(message).values(b"from")
    if len(values) != 1:
        return f"DKIM: the copy has {len(values)} From: fields; copy sent unsigned"
    text = unfold(values[0]).decode("utf-8", "surrogateescape")
    addresses = [address for _name, address in email.utils.getaddresses([text]) if address]
    if len(addresses) != 1:
        return f"DKIM: From: has {len(addresses)} addresses; copy sent unsigned"
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return f"DKIM: From: domain {domain!r} is not a valid domain name; copy sent unsigned"
    if not is_domain(ascii_domain):
        return f"DKIM: From: domain {domain!r} is not a valid domain name; copy sent unsigned"
    return ascii_domain


