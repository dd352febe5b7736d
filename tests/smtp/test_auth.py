"""AUTH: password hashes, PLAIN/LOGIN over STARTTLS, loopback exception, customer_id from the account."""

from __future__ import annotations

import smtplib
import ssl
import warnings
from pathlib import Path

import pytest
import trustme

from engaged.smtp.auth import hash_password, verify_password
from engaged.smtp.listener import auth_requires_tls
from tests.conftest import ServerFactory
from tests.helpers import queued_id, wait_events

MESSAGE = b"Subject: auth\r\n\r\nhello\r\n"


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("s3cret", iterations=1000)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert verify_password(b"s3cret", stored)
    assert not verify_password(b"s3creT", stored)
    assert not verify_password(b"s3cret", "garbage")


def _users(tmp_path: Path) -> str:
    return (f'[[smtp.users]]\nname = "app"\npassword_hash = "{hash_password("pw", iterations=1000)}"\n'
            'customer_id = "42"\n')


def test_authenticated_user_injects_with_its_customer_id(engaged_server: ServerFactory, tmp_path: Path) -> None:
    server = engaged_server('[smtp]\nrelay_networks = []\n' + _users(tmp_path))
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
        assert refused.value.smtp_code == 530
        client.login("app", "pw")
        client.mail("a@example.org")
        client.rcpt("b@example.com")
        code, text = client.data(MESSAGE)
    assert code == 250
    message_id = queued_id("250 " + text.decode())
    [injection] = [e for e in wait_events(server, message_id, {"injection"}) if e["type"] == "injection"]
    assert injection["customer_id"] == "42"


def test_wrong_password_is_refused(engaged_server: ServerFactory, tmp_path: Path) -> None:
    server = engaged_server(_users(tmp_path))
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("app", "nope")
        assert info.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("nobody", "pw")


def _tls_files(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca, cert_path, key_path


def test_starttls_then_auth_works_and_tls_12_is_the_floor(engaged_server: ServerFactory, tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    server = engaged_server(f'[smtp]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n' + _users(tmp_path))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=context)
        client.ehlo()
        assert client.has_extn("auth")
        client.login("app", "pw")
        client.sendmail("a@example.org", ["b@example.com"], MESSAGE)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is the point: it must be refused
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP(*server.smtp) as client:
        client.ehlo()
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            client.starttls(context=old)


@pytest.mark.parametrize(
    ("ip", "needs_tls"),
    [("127.0.0.1", False), ("::1", False), ("127.3.4.5", False), ("192.0.2.7", True), ("2001:db8::1", True),
     ("", True), ("garbage", True)],
)
def test_auth_needs_tls_except_from_loopback(ip: str, needs_tls: bool) -> None:
    assert auth_requires_tls(ip) is needs_tls


def test_password_guessing_locks_the_address_out_for_a_while() -> None:
    from engaged.config import SmtpUser
    from engaged.smtp.auth import UserAuthenticator

    now = [1000.0]
    auth = UserAuthenticator([SmtpUser(name="app", password_hash=hash_password("pw", iterations=1000))],
                             max_failures=3, max_user_failures=3, window=60.0, clock=lambda: now[0])
    guesser, other = "192.0.2.9", "192.0.2.10"
    assert all(auth.check(guesser, b"app", b"guess") is None for _ in range(3))
    assert auth.check(guesser, b"app", b"pw") is None  # locked out, even with the right password
    assert auth.check(other, b"app", b"pw") is not None  # other addresses are not affected
    now[0] += 61
    assert auth.check(guesser, b"app", b"pw") is not None
