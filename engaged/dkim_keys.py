"""DKIM private keys: read and checked while the configuration loads (`load_config`), written by `engaged dkim keygen`.

A leaf of engaged (it imports nothing from the package), so `config.py` can check `[[dkim]]` entries, with
`file:dkim[n].private_key: reason`, before anything binds; `delivery/dkim.py` signs with what it reads.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import dkim
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

if TYPE_CHECKING:
    from engaged.config import DkimConfig

__all__ = ["DEFAULT_SIGNED_HEADERS", "MIN_RSA_BITS", "NEVER_SIGNED", "KeyMaterial", "entry_problems", "generate_key",
           "is_domain", "read_private_key", "txt_record"]

MIN_RSA_BITS: Final = 2048
MAX_KEY_FILE_BYTES: Final = 64 * 1024

DEFAULT_SIGNED_HEADERS: Final = (
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "in-reply-to", "references",
    "mime-version", "content-type", "content-transfer-encoding", "list-id", "list-unsubscribe",
    "list-unsubscribe-post", "feedback-id",
)
"""RFC 6376 §5.4.1's list, less the Resent-* and List-* fields mail from us never carries, plus the fields
that tracking and bulk mail depend on. Each field is signed as often as it occurs; From once more (oversigned),
so no From can be added after signing."""

NEVER_SIGNED: Final = frozenset({"return-path", "received", "comments", "keywords", "dkim-signature"})
"""Fields a relay adds or changes in transit (dkimpy refuses to sign the first four)."""

_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


class KeyMaterial(msgspec.Struct, frozen=True):
    """A private key as dkimpy takes it, its algorithm, and the public key for the DNS record (`p=`)."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes  # PEM (RSA) or base64 of the 32-byte seed (Ed25519)
    public: bytes  # base64: SubjectPublicKeyInfo DER (RSA) or the raw 32-byte key (Ed25519)

    def rsa_key(self) -> rsa.RSAPrivateKey | None:
        """The RSA key as OpenSSL holds it (None for Ed25519)."""
        if self.algorithm != b"rsa-sha256":
            return None
        key = serialization.load_pem_private_key(self.private, password=None)
        return key if isinstance(key, rsa.RSAPrivateKey) else None


def read_private_key(path: str) -> KeyMaterial | str:
    """The key in a PEM file (RSA ≥ 2048 bits or Ed25519; PKCS#1, PKCS#8 or dknewkey's base64 seed); else why not."""
    try:
        file = Path(path)
        if file.stat().st_size > MAX_KEY_FILE_BYTES:
            return f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key"
        data = file.read_bytes()
    except OSError as error:
        return f"cannot read {path}: {error.strerror or error}"
    if b"-----BEGIN" not in data:
        return _seed_key(path, data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return f"{path}: the key is encrypted; store it without a passphrase (mode 0600)"
    except (ValueError, UnsupportedAlgorithm) as error:
        return f"{path}: not a readable PEM private key ({error})"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            return f"{path}: RSA key of {key.key_size} bits; DKIM keys need at least {MIN_RSA_BITS}"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return _checked(path, KeyMaterial(b"rsa-sha256", pem, base64.b64encode(public)))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return _ed25519(path, seed)
    return f"{path}: neither an RSA nor an Ed25519 key; DKIM signs with those only"


def _seed_key(path: str, data: bytes) -> KeyMaterial | str:
    """dknewkey's Ed25519 format: the base64 of the 32-byte seed, alone in the file."""
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        return f"{path}: not a PEM private key nor a base64 Ed25519 seed"
    return _ed25519(path, seed)


def _ed25519(path: str, seed: bytes) -> KeyMaterial | str:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _checked(path, KeyMaterial(b"ed25519-sha256", base64.b64encode(seed), base64.b64encode(public)))


def _checked(path: str, material: KeyMaterial) -> KeyMaterial | str:
    """Sign and verify one small message with the key, so a key dkimpy cannot use is refused at startup."""
    message = b"From: a@example.com\r\nSubject: check\r\n\r\nbody\r\n"
    try:
        header = dkim.sign(message, b"check", b"example.com", material.private,
                           signature_algorithm=material.algorithm, include_headers=[b"from"])
        record = b"v=DKIM1; k=" + material.algorithm.split(b"-")[0] + b"; p=" + material.public
        good = dkim.verify(header + message, dnsfunc=lambda _name, timeout=5: record)
    except dkim.DKIMException as error:
        return f"{path}: dkimpy cannot sign with this key ({error})"
    return material if good else f"{path}: the key does not verify its own signature"


def entry_problems(entries: Sequence[DkimConfig]) -> list[tuple[str, str]]:
    """(key path, reason) for every bad `[[dkim]]` entry; reads each private key."""
    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        prefix = f"dkim[{index}]"
        if not is_domain(entry.domain):
            problems.append((f"{prefix}.domain", f"not a domain name: {entry.domain!r}"))
        if not entry.selector or not all(_LABEL.fullmatch(label) for label in entry.selector.split(".")):
            problems.append((f"{prefix}.selector", f"not a DNS label: {entry.selector!r}"))
        for position, field in enumerate(entry.headers):
            if not _HEADER_NAME.fullmatch(field) or field.lower() in NEVER_SIGNED:
                problems.append((f"{prefix}.headers[{position}]", f"{field!r} cannot be signed"))
        if entry.headers and "from" not in (field.lower() for field in entry.headers):
            problems.append((f"{prefix}.headers", "must include From (RFC 6376 §5.4)"))
        name = entry.name or entry.domain.lower()
        if name in names:
            problems.append((f"{prefix}.name", f"{name!r} is already dkim[{names[name]}]; give each key a name"))
        names.setdefault(name, index)
        material = read_private_key(entry.private_key)
        if isinstance(material, str):
            problems.append((f"{prefix}.private_key", material))
    return problems


def is_domain(value: str) -> bool:
    """Whether `value` is a syntactically valid DNS name (labels of letters, digits, `_` and `-`)."""
    labels = value.rstrip(".").split(".")
    return 0 < len(value) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def txt_record(domain: str, selector: str, material: KeyMaterial) -> tuple[str, list[str]]:
    """The DNS name and the TXT record's character-strings (each at most 255 bytes) that publish the key."""
    kind = material.algorithm.split(b"-")[0].decode("ascii")
    text = f"v=DKIM1; k={kind}; p={material.public.decode('ascii')}"
    return f"{selector}._domainkey.{domain.rstrip('.')}.", [text[i : i + 255] for i in range(0, len(text), 255)]


def generate_key(algorithm: str, bits: int = MIN_RSA_BITS) -> bytes:
    """A new private key as PKCS#8 PEM: `rsa` (of `bits` bits) or `ed25519`."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA DKIM keys need at least {MIN_RSA_BITS} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}; use rsa or ed25519")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
