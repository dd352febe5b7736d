"""Signing in to the dashboard with an API key: redirects, refusals, the session cookie, CSRF and logout."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from engaged.events.store_sqlite import SqliteEventStore
from engaged.web.session import CSRF_COOKIE, SESSION_COOKIE
from tests.eventstores import StoreMaker
from tests.web.conftest import OpenDashboard
from tests.web.markup import Page

KEYS = ("k-one", "k-two")


@pytest.fixture
def make_store(tmp_path: Path) -> StoreMaker:
    path = tmp_path / "events.sqlite3"
    return lambda: SqliteEventStore(path)


async def login_form(client: httpx.AsyncClient, path: str = "/login") -> dict[str, str]:
    """The hidden fields of the login form (its CSRF cookie is now in the client's jar)."""
    page = await client.get(path)
    assert page.status_code == 200
    return {attrs["name"]: attrs["value"] for tag, attrs in Page(page.text).elements
            if tag == "input" and attrs.get("type") == "hidden"}


def set_cookies(response: httpx.Response) -> dict[str, str]:
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


async def test_with_keys_pages_redirect_to_the_login_form_and_data_answers_401(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    home = await client.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/login?next=%2F"
    deep = await client.get("/campaign", params={"id": "spring", "range": "1h"})
    assert deep.headers["location"] == "/login?next=%2Fcampaign%3Fid%3Dspring%26range%3D1h"
    for path in ("/ui/campaigns.json", "/ui/campaign.json?id=spring", "/ui/stream", "/ui/ticks"):
        assert (await client.get(path)).status_code == 401, path
    assert (await client.get("/api/v1/metrics/deliverability")).status_code == 401
    assert (await client.get("/static/dashboard.css")).status_code == 200
    fields = await login_form(client)
    assert fields["next"] == "/" and fields["csrf"] == client.cookies[CSRF_COOKIE]


async def test_a_wrong_key_is_refused_and_sets_no_session(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    fields = await login_form(client)
    refused = await client.post("/login", data={**fields, "key": "k-three"})
    assert refused.status_code == 401 and "not one of the configured" in refused.text
    assert SESSION_COOKIE not in set_cookies(refused)
    assert (await client.get("/")).status_code == 303


async def test_the_right_key_sets_an_httponly_strict_session_cookie_that_grants_access(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    fields = await login_form(client, "/login?next=/campaign%3Fid%3Dspring")
    accepted = await client.post("/login", data={**fields, "key": "k-two"})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/campaign?id=spring"
    cookie = set_cookies(accepted)[SESSION_COOKIE]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http on loopback: see docs/dashboard.md
    assert "k-two" not in cookie
    assert (await client.get("/campaign", params={"id": "spring"})).status_code == 200
    assert (await client.get("/ui/campaigns.json")).status_code == 200
    assert (await client.get("/login")).headers["location"] == "/"


async def test_behind_an_https_proxy_both_cookies_are_secure(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    https = {"X-Forwarded-Proto": "https"}
    page = await client.get("/login", headers=https)
    assert "Secure" in set_cookies(page)[CSRF_COOKIE]
    fields = {attrs["name"]: attrs["value"] for tag, attrs in Page(page.text).elements
              if tag == "input" and attrs.get("type") == "hidden"}
    client.cookies.set(CSRF_COOKIE, fields["csrf"])  # the jar keeps a Secure cookie from plain-http requests
    accepted = await client.post("/login", data={**fields, "key": "k-one"}, headers=https)
    assert accepted.status_code == 303 and "Secure" in set_cookies(accepted)[SESSION_COOKIE]


async def test_a_login_post_without_its_token_or_from_another_site_is_refused(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    fields = await login_form(client)
    assert (await client.post("/login", data={"key": "k-one", "next": "/"})).status_code == 403
    assert (await client.post("/login", data={**fields, "csrf": "x" * 43, "key": "k-one"})).status_code == 403
    foreign = await client.post("/login", data={**fields, "key": "k-one"},
                                headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and SESSION_COOKIE not in set_cookies(foreign)
    cross = await client.post("/login", data={**fields, "key": "k-one"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    escape = await client.post("/login", data={**fields, "key": "k-one", "next": "//evil.example/x"})
    assert escape.status_code == 303 and escape.headers["location"] == "/"


async def test_logout_clears_the_session_cookie(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    fields = await login_form(client)
    await client.post("/login", data={**fields, "key": "k-one"})
    home = await client.get("/")
    assert home.status_code == 200
    [logout] = [attrs["value"] for tag, attrs in Page(home.text).elements
                if tag == "input" and attrs.get("name") == "csrf"]
    assert (await client.post("/logout", data={"csrf": "wrong" * 9})).status_code == 403
    out = await client.post("/logout", data={"csrf": logout})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert 'engaged_session=""' in set_cookies(out)[SESSION_COOKIE]
    assert (await client.get("/")).status_code == 303


async def test_an_api_key_in_the_authorization_header_also_opens_the_dashboard(
        open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard(KEYS)
    assert (await client.get("/", headers={"Authorization": "Bearer k-two"})).status_code == 200
    assert (await client.get("/ui/campaigns.json", headers={"Authorization": "k-one"})).status_code == 200
    assert (await client.get("/", headers={"Authorization": "k-nine"})).status_code == 303


async def test_without_keys_loopback_clients_need_no_login(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    home = await client.get("/")
    assert home.status_code == 200 and "Sign out" not in home.text
    assert (await client.get("/login")).headers["location"] == "/"
