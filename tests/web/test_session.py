"""Session tokens signed with the API keys, the loopback rule, and where a login may return to."""

from __future__ import annotations

from starlette.requests import Request

from engaged.web.session import Access, SessionKeys, safe_next


def request(client: str, cookie: str = "") -> Request:
    headers = [(b"cookie", f"engaged_session={cookie}".encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (client, 5000),
                    "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 8081)})


def test_a_token_verifies_until_it_expires() -> None:
    now = [1_000_000.0]
    keys = SessionKeys(["alpha", "beta"], lifetime=60, clock=lambda: now[0])
    token = keys.issue(1)
    assert keys.verify(token)
    assert "alpha" not in token and "beta" not in token
    now[0] += 61
    assert not keys.verify(token)


def test_a_tampered_or_malformed_token_is_refused() -> None:
    keys = SessionKeys(["alpha"])
    expiry, nonce, mac = keys.issue(0).split(".")
    assert not keys.verify(f"{int(expiry) + 1000}.{nonce}.{mac}")
    assert not keys.verify(f"{expiry}.other.{mac}")
    assert not keys.verify(f"{expiry}.{nonce}.{mac[:-2]}AA")
    for bad in ("", "a.b", "x.y.z", "1.2.3.4", None):
        assert not keys.verify(bad)


def test_removing_a_key_ends_the_sessions_it_opened() -> None:
    token = SessionKeys(["alpha", "beta"]).issue(0)
    assert SessionKeys(["beta", "alpha"]).verify(token)
    assert not SessionKeys(["beta"]).verify(token)


def test_only_an_exact_key_matches() -> None:
    keys = SessionKeys(["alpha", "beta"])
    assert (keys.match("beta"), keys.match(" alpha "), keys.match("alph"), keys.match("")) == (1, 0, None, None)


def test_without_keys_only_loopback_clients_are_allowed() -> None:
    keys = SessionKeys([])
    assert not keys.required
    assert keys.access(request("127.0.0.1")) is Access.ALLOWED
    assert keys.access(request("::1")) is Access.ALLOWED
    assert keys.access(request("192.0.2.7")) is Access.FORBIDDEN


def test_with_keys_even_loopback_needs_a_session() -> None:
    keys = SessionKeys(["alpha"])
    assert keys.access(request("127.0.0.1")) is Access.LOGIN
    assert keys.access(request("192.0.2.7", keys.issue(0))) is Access.ALLOWED


def test_a_login_returns_only_to_a_local_path() -> None:
    assert safe_next("/campaign?id=a") == "/campaign?id=a"
    for bad in (None, "", "//evil.example", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        assert safe_next(bad) == "/"
