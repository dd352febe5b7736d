"""DKIM: every corpus template tracked, signed and verified through DNS; tampering, key choice, bad keys, relay."""

from __future__ import annotations

import binascii
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engaged.config import DkimConfig, load_config
from engaged.delivery.compose import CopyComposer
from engaged.delivery.dkim import (
    DkimSigner,
    from_domain,
    generate_key,
    read_private_key,
    txt_record,
)
from engaged.errors import ConfigError
from engaged.keys import load_keyring
from engaged.recipient import TrackingPlan
from engaged.spool.record import SpoolRecord
from engaged.testing.dns import DnsServer
from engaged.testing.server import wait_until
from engaged.testing.sink import SinkServer
from tests.conftest import ServerFactory
from tests.helpers import RawSmtp, queued_id, wait_events
from tests.records import recipient_identity, spool_record

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus"
ALGORITHMS = ("rsa", "ed25519")
Verify = Callable[[bytes], bool]


def corpus_files() -> list[object]:
    files = sorted(CORPUS.glob("html/**/*.html")) + sorted(CORPUS.glob("mime/**/*.eml"))
    if not files:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=str(path.relative_to(CORPUS))) for path in files]


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def html_message(html: bytes) -> bytes:
    qp = binascii.b2a_qp(html.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", b"\r\n")
    return (b"From: News <news@mail.example.com>\r\nTo: bob@example.net\r\nSubject: Corpus\r\n"
            b"Date: Tue, 01 Dec 2026 21:00:00 +0000\r\nMessage-ID: <1@mail.example.com>\r\nMIME-Version: 1.0\r\n"
            b'X-MSYS-API: {"campaign_id": "c"}\r\n'
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp)


def corpus_message(path: Path | None) -> bytes:
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"corpus not found at {CORPUS.resolve()}")
        pytest.skip(f"corpus not found at {CORPUS.resolve()}")
    data = crlf(path.read_bytes())
    if path.suffix == ".html":
        return html_message(data)
    end = data.find(b"\r\n\r\n")
    head = b"".join(line + b"\r\n" for line in data[:end].split(b"\r\n") if not line.lower().startswith(b"from:"))
    return b"From: News <news@mail.example.com>\r\n" + head + data[end + 2 :]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("dkim")
    paths = {}
    for algorithm in ALGORITHMS:
        path = directory / f"{algorithm}.key"
        path.write_bytes(generate_key(algorithm))
        paths[algorithm] = path
    return paths


@pytest.fixture(scope="module")
def dns_server(keys: dict[str, Path]) -> Iterator[DnsServer]:
    records: dict[tuple[str, str], list[str]] = {}
    for algorithm, path in keys.items():
        material = read_private_key(str(path))
        assert not isinstance(material, str)
        name, strings = txt_record("example.com", algorithm, material)
        records[(name, "TXT")] = [" ".join(f'"{part}"' for part in strings)]
    server = DnsServer(records).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def verify(dns_server: DnsServer) -> Verify:
    """dkimpy's verifier, looking keys up in the test DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    return lambda message: bool(dkim.verify(message, dnsfunc=txt))


def signer(keys: dict[str, Path], algorithm: str, domain: str = "example.com", name: str = "") -> DkimSigner:
    return DkimSigner.from_config([DkimConfig(domain=domain, selector=algorithm, private_key=str(keys[algorithm]),
                                              name=name)])


@pytest.fixture(scope="module")
def signers(keys: dict[str, Path]) -> dict[str, DkimSigner]:
    return {algorithm: signer(keys, algorithm) for algorithm in ALGORITHMS}


def record(plan: TrackingPlan) -> SpoolRecord:
    return spool_record((recipient_identity("Bob@Example.net"), plan))


TRACKED = TrackingPlan(open_tracking=True, click_tracking=True, tracking_domain="t.example.com")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("path", corpus_files())
def test_every_corpus_template_is_tracked_then_signed_and_verifies(
    path: Path | None, algorithm: str, keys: dict[str, Path], verify: Verify, tmp_path: Path
) -> None:
    message = corpus_message(path)
    copy = CopyComposer(load_keyring(tmp_path), dkim=signer(keys, algorithm))(message, record(TRACKED), 0)
    assert copy.data.startswith(b"DKIM-Signature: v=1; a=" + (b"rsa" if algorithm == "rsa" else b"ed25519"))
    assert not [w for w in copy.warnings if w.startswith("DKIM")]
    assert b"X-MSYS-API" not in copy.data
    assert verify(copy.data)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_byte_changed_after_signing_fails_verification(
    algorithm: str, keys: dict[str, Path], verify: Verify, tmp_path: Path
) -> None:
    message = html_message(b'<html><body><a href="https://example.org/">shop</a></body></html>')
    signed = CopyComposer(load_keyring(tmp_path), dkim=signer(keys, algorithm))(message, record(TRACKED), 0).data
    assert verify(signed)
    body_at = signed.index(b"shop")
    assert not verify(signed[:body_at] + b"S" + signed[body_at + 1 :])
    subject_at = signed.index(b"Subject: Corpus") + len(b"Subject: ")
    assert not verify(signed[:subject_at] + b"c" + signed[subject_at + 1 :])


def test_from_is_oversigned_so_an_added_from_breaks_the_signature(keys: dict[str, Path], verify: Verify) -> None:
    signed = signer(keys, "ed25519").sign(html_message(b"<p>hi</p>")).data
    assert b"h=from : from :" in signed.replace(b"\r\n", b"")
    end = signed.index(b"\r\n\r\n")
    assert not verify(signed[:end] + b"\r\nFrom: evil@attacker.example" + signed[end:])


def test_the_key_is_chosen_by_from_domain_exact_then_parent(keys: dict[str, Path]) -> None:
    dkim_signer = DkimSigner.from_config([
        DkimConfig(domain="example.com", selector="rsa", private_key=str(keys["rsa"])),
        DkimConfig(domain="mail.example.com", selector="ed25519", private_key=str(keys["ed25519"])),
    ])
    for sender, expected in (("a@mail.example.com", "mail.example.com"), ("a@deep.mail.example.com",
                             "mail.example.com"), ("a@other.example.com", "example.com"), ("a@Example.COM",
                             "example.com")):
        signed = dkim_signer.sign(f"From: {sender}\r\n\r\nx\r\n".encode())
        assert signed.domain == expected and not signed.warnings
    unsigned = dkim_signer.sign(b"From: a@example.org\r\n\r\nx\r\n")
    assert unsigned.data == b"From: a@example.org\r\n\r\nx\r\n" and unsigned.domain == "" and not unsigned.warnings


def test_dkim_key_option_names_the_key_and_an_unknown_name_is_a_warning(
    keys: dict[str, Path], verify: Verify, tmp_path: Path
) -> None:
    dkim_signer = DkimSigner.from_config([
        DkimConfig(domain="example.com", selector="rsa", private_key=str(keys["rsa"]), name="brand"),
        DkimConfig(domain="example.com", selector="ed25519", private_key=str(keys["ed25519"])),
    ])
    composer = CopyComposer(load_keyring(tmp_path), dkim=dkim_signer)
    message = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    named = composer(message, record(TrackingPlan(dkim_key="brand")), 0)
    assert b"a=rsa-sha256" in named.data and b"s=rsa;" in named.data and verify(named.data)
    unknown = composer(message, record(TrackingPlan(dkim_key="nope")), 0)
    assert unknown.data == message
    assert unknown.warnings == ("DKIM: dkim_key 'nope' names no configured key; copy sent unsigned",)
    keyless = CopyComposer(load_keyring(tmp_path))  # no [[dkim]] at all: the same warning, not silence
    asked = keyless(message, record(TrackingPlan(dkim_key="brand")), 0)
    assert asked.data == message
    assert asked.warnings == ("DKIM: dkim_key 'brand' names no configured key; copy sent unsigned",)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"From: a@example.com, b@example.com\r\n", "From: has 2 addresses"),
        (b"From: undisclosed-recipients:;\r\n", "From: has 0 addresses"),
        (b"Subject: no from\r\n", "the copy has 0 From: fields"),
        (b"From: a@example.com\r\nFrom: b@example.com\r\n", "the copy has 2 From: fields"),
        (b"From: a@exa mple..com\r\n", "is not a valid domain name"),
    ],
)
def test_a_from_with_several_addresses_or_none_goes_unsigned_with_a_warning(
    header: bytes, reason: str, keys: dict[str, Path]
) -> None:
    message = header + b"\r\nbody\r\n"
    signed = signer(keys, "rsa").sign(message)
    assert signed.data == message
    [warning] = signed.warnings
    assert warning.startswith("DKIM: ") and reason in warning and warning.endswith("copy sent unsigned")


_PIECES = [b"From: ", b"a@example.com", b"\r\n", b"\n", b"\r", b":", b" ", b"\t", b"\xff", b"\x00", b"Subject",
           b"To", b"=?utf-8?q?=FF?=", b"<", b">", b",", b'"', b"(", b")", b"@", b".", b"\r\n\r\n", b"\r\n "]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lead=st.sampled_from([b"", b" x\r\n", b"\t\r\n", b"To: b@example.net\r\n"]),
       pieces=st.lists(st.sampled_from(_PIECES), max_size=40))
def test_signing_never_raises_and_what_it_signs_verifies(
    pieces: list[bytes], lead: bytes, signers: dict[str, DkimSigner], verify: Verify
) -> None:
    message = lead + b"From: a@example.com\r\n" + b"".join(pieces)
    for algorithm in ALGORITHMS:
        signed = signers[algorithm].sign(message)
        assert signed.data == message if not signed.domain else verify(signed.data)
        assert all(warning.startswith("DKIM: ") for warning in signed.warnings)


def test_a_header_block_starting_with_a_folded_line_goes_unsigned_with_a_warning(keys: dict[str, Path]) -> None:
    message = b" leading: x\r\nFrom: a@example.com\r\n\r\nbody\r\n"  # dkimpy's parser raised IndexError
    signed = signer(keys, "rsa").sign(message)
    assert signed.data == message
    assert signed.warnings == ("DKIM: the header block starts with a folded line; copy sent unsigned",)


def test_folded_and_encoded_from_fields_are_read() -> None:
    assert from_domain(b"From: =?utf-8?q?Caf=C3=A9?=\r\n <news@Shop.Example.COM>\r\n\r\n") == "shop.example.com"
    assert from_domain("From: a@bücher.example\r\n\r\n".encode()) == "xn--bcher-kva.example"


def write_config(tmp_path: Path, key_path: str, extra: str = "") -> Path:
    path = tmp_path / "engaged.toml"
    path.write_text(f'[[dkim]]\ndomain = "example.com"\nselector = "s1"\nprivate_key = "{key_path}"\n{extra}')
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        (b"not a key at all", "not a PEM private key nor a base64 Ed25519 seed"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable PEM private key"),
        ("rsa1024", "RSA key of 1024 bits; DKIM keys need at least 2048"),
        ("ec", "neither an RSA nor an Ed25519 key"),
        ("encrypted", "the key is encrypted"),
    ],
)
def test_a_bad_key_stops_config_loading_with_file_key_reason(
    tmp_path: Path, content: bytes | str | None, reason: str
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key_path = tmp_path / "key.pem"
    if isinstance(content, bytes):
        key_path.write_bytes(content)
    elif content is not None:
        private = (rsa.generate_private_key(65537, 1024) if content == "rsa1024"
                   else ec.generate_private_key(ec.SECP256R1()))
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(b"pw") if content == "encrypted"
            else serialization.NoEncryption())
        if content == "encrypted":
            private = rsa.generate_private_key(65537, 2048)
        key_path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   encryption))
    config = write_config(tmp_path, str(key_path))
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), environ={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{config}:dkim[0].private_key: ") and reason in problem


def test_config_refuses_unsignable_headers_duplicate_names_and_bad_domains(tmp_path: Path,
                                                                           keys: dict[str, Path]) -> None:
    key = str(keys["rsa"])
    config = write_config(tmp_path, key, 'headers = ["Subject", "Received"]\n'
                          f'[[dkim]]\ndomain = "example.com"\nselector = "bad selector"\nprivate_key = "{key}"\n'
                          f'[[dkim]]\ndomain = "exa mple.com"\nselector = "s"\nprivate_key = "{key}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), environ={})
    problems = [problem.split(":", 1)[1] for problem in caught.value.problems]
    assert problems == [
        "dkim[0].headers[1]: 'Received' cannot be signed",
        "dkim[0].headers: must include From (RFC 6376 §5.4)",
        "dkim[1].selector: not a DNS label: 'bad selector'",
        "dkim[1].name: 'example.com' is already dkim[0]; give each key a name",
        "dkim[2].domain: not a domain name: 'exa mple.com'",
    ]


def test_check_config_and_serve_stop_on_an_unreadable_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, str(tmp_path / "missing.pem"))
    for command in ("check-config", "serve"):
        done = subprocess.run([sys.executable, "-m", "engaged", command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.startswith(f"{config}:dkim[0].private_key: cannot read {tmp_path / 'missing.pem'}")


def test_keygen_writes_a_key_pair_and_prints_the_txt_record(tmp_path: Path) -> None:
    for algorithm in ALGORITHMS:
        done = subprocess.run([sys.executable, "-m", "engaged", "dkim", "keygen", "--domain", "Example.com",
                               "--selector", algorithm, "--algorithm", algorithm, "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        private = tmp_path / f"example.com.{algorithm}.key"
        assert private.stat().st_mode & 0o777 == 0o600 and (tmp_path / f"example.com.{algorithm}.pub").is_file()
        material = read_private_key(str(private))
        assert not isinstance(material, str)
        name, strings = txt_record("example.com", algorithm, material)
        assert done.stdout == f"{name} IN TXT ( " + " ".join(f'"{s}"' for s in strings) + " )\n"
        assert f"k={algorithm}; p=" in done.stdout and all(len(s) <= 255 for s in strings)
        again = subprocess.run([sys.executable, "-m", "engaged", "dkim", "keygen", "--domain", "example.com",
                                "--selector", algorithm, "--dir", str(tmp_path)], capture_output=True, text=True,
                               timeout=60)
        assert again.returncode != 0 and "exists; not overwriting it" in again.stderr


def test_a_copy_relayed_through_engaged_verifies(
    engaged_server: ServerFactory, keys: dict[str, Path], verify: Verify
) -> None:
    sink = SinkServer().start()
    try:
        server = engaged_server(
            f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\nretry_base = 0.2\n'
            '[smtpapi]\nopen_tracking_enabled = true\nclick_tracking_enabled = true\n'
            f'[[dkim]]\ndomain = "example.com"\nselector = "rsa"\nprivate_key = "{keys["rsa"]}"\n'
        )
        message = (b"From: Shop <shop@news.example.com>\r\nTo: bob@example.net\r\nSubject: Relay\r\n"
                   b'X-MSYS-API: {"campaign_id": "relay"}\r\nContent-Type: text/html\r\n\r\n'
                   b'<html><body><a href="https://example.org/a">a</a>\r\n..dot</body></html>\r\n')
        client = RawSmtp(server.smtp)
        client.transaction(["bob@example.net"])
        client.command("DATA")
        client.send(message + b".\r\n")
        queued_id(client.reply())
        client.close()
        wait_until(sink.received, 15)
        [received] = sink.received()
        assert received.data.startswith(b"DKIM-Signature: ") and b"/f/a/" in received.data
        assert verify(received.data)
    finally:
        sink.stop()


def test_a_copy_dkimpy_cannot_parse_is_relayed_unsigned_with_the_warning_in_its_delivery_event(
    engaged_server: ServerFactory, keys: dict[str, Path]
) -> None:
    sink = SinkServer().start()
    try:
        server = engaged_server(
            f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\nretry_base = 0.2\n'
            f'[[dkim]]\ndomain = "example.com"\nselector = "rsa"\nprivate_key = "{keys["rsa"]}"\n'
        )
        message = b" leading: x\r\nFrom: shop@example.com\r\nTo: bob@example.net\r\nSubject: folded\r\n\r\nbody\r\n"
        client = RawSmtp(server.smtp)
        client.transaction(["bob@example.net"])
        client.command("DATA")
        client.send(message + b".\r\n")
        message_id = queued_id(client.reply())
        client.close()
        [delivery] = [e for e in wait_events(server, message_id, {"delivery"}) if e["type"] == "delivery"]
        assert delivery["warnings"] == ["DKIM: the header block starts with a folded line; copy sent unsigned"]
        [received] = sink.received()
        assert received.data == message
    finally:
        sink.stop()


POLICY = '''require("msys.core")
local mod = {}
function mod:validate_data_spool_each_rcpt(msg, accept, vctx)
  if vctx:get(msys.core.VCTX_MESS, "rcptto_domain") == "policy.example" then
    vctx:set(msys.core.VCTX_MESS, "smtpapi_dkim_key", "brand")
  end
  return msys.core.VALIDATE_CONT
end
msys.registerModule("dkim_policy", mod)
'''


def test_policy_names_the_key_over_x_msys_api_and_each_copy_verifies(
    engaged_server: ServerFactory, keys: dict[str, Path], verify: Verify, tmp_path: Path
) -> None:
    script = tmp_path / "dkim_policy.lua"
    script.write_text(POLICY)
    sink = SinkServer().start()
    try:
        server = engaged_server(
            f'[delivery]\nmode = "relay"\nrelay = "{sink.address}"\nretry_base = 0.2\n'
            f'[policy]\nscripts = ["{script}"]\n'
            f'[[dkim]]\ndomain = "example.com"\nselector = "rsa"\nprivate_key = "{keys["rsa"]}"\n'
            f'[[dkim]]\ndomain = "example.com"\nselector = "ed25519"\nprivate_key = "{keys["ed25519"]}"\n'
            'name = "brand"\n'
        )
        message = (b"From: Shop <shop@news.example.com>\r\nTo: list@example.net\r\nSubject: Keys\r\n"
                   b'X-MSYS-API: {"options": {"dkim_key": "example.com"}}\r\n\r\nbody\r\n')
        client = RawSmtp(server.smtp)
        client.transaction(["bob@header.example", "ann@policy.example"])
        client.command("DATA")
        client.send(message + b".\r\n")
        queued_id(client.reply())
        client.close()
        wait_until(lambda: len(sink.received()) == 2, 15)
        selectors = {}
        for received in sink.received():
            assert verify(received.data) and received.data.count(b"DKIM-Signature:") == 1
            [rcpt] = received.rcpt_tos
            head = received.data.split(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
            selectors[rcpt] = re.findall(rb"[ ;]s=([a-z0-9]+);", head)
        assert selectors == {"bob@header.example": [b"rsa"], "ann@policy.example": [b"ed25519"]}
    finally:
        sink.stop()
