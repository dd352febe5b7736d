"""Event data is never markup (T-5): hostile metadata, user agents and link names; CSP and framing headers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import msgspec
import pytest

from engaged.events.model import Event
from engaged.events.store_sqlite import SqliteEventStore
from engaged.types import EventStore
from engaged.web.middleware import CONTENT_SECURITY_POLICY
from tests.eventstores import StoreMaker
from tests.sample_events import make_event
from tests.web.conftest import OpenDashboard
from tests.web.markup import Page

WEB = Path(__file__).resolve().parents[2] / "engaged" / "web"
CAMPAIGN = "<script>alert('campaign')</script>"
HOSTILE = {
    "rcpt_meta": {"note": "<script>alert('meta')</script>", "<img src=x onerror=alert(9)>": "key"},
    "user_agent": "<script>alert('ua')</script><img src=x onerror=alert(1)>",
    "target_link_name": "<b onmouseover=alert(2)>name</b>",
    "target_link_url": "https://x.example/?q=<script>alert(3)</script>",
}


@pytest.fixture
def make_store(tmp_path: Path) -> StoreMaker:
    path = tmp_path / "events.sqlite3"
    return lambda: SqliteEventStore(path)


def hostile(now: float) -> list[Event]:
    made = [make_event(kind, 900 + n, campaign=CAMPAIGN, message_id="evil-1", rcpt="mallory@x.org", ts=now - 60 + n)
            for n, kind in enumerate(("injection", "delivery", "open", "click", "bounce"))]
    return [msgspec.structs.replace(made[0], subject="<script>alert('subject')</script>"),
            made[1], msgspec.structs.replace(made[2], user_agent=HOSTILE["user_agent"], rcpt_meta=HOSTILE["rcpt_meta"]),
            msgspec.structs.replace(made[3], **HOSTILE), msgspec.structs.replace(made[4], reason="<i>bad</i>")]


def assert_inert(html: str, path: str) -> None:
    page = Page(html)
    scripts = [attrs for tag, attrs in page.elements if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/static/") for attrs in scripts), path
    assert not [tag for tag, _ in page.elements if tag in ("img", "b", "i")], path
    assert not [name for _, attrs in page.elements for name in attrs if name.startswith("on")], path
    assert "<script>alert" not in html and "&lt;script&gt;alert(" in html, path


async def test_markup_in_metadata_user_agents_links_and_subjects_is_shown_as_text(
        store: EventStore, open_dashboard: OpenDashboard) -> None:
    await store.append(hostile(time.time()))
    client = await open_dashboard()
    for path, params in [("/", {}), ("/campaign", {"id": CAMPAIGN}), ("/message", {"q": "evil-1"}),
                         ("/live", {}), ("/live", {"campaigns": CAMPAIGN})]:
        response = await client.get(path, params=params)
        assert response.status_code == 200, path
        assert_inert(response.text, path)
    timeline = Page((await client.get("/message", params={"q": "evil-1"})).text).text
    assert "<script>alert('meta')</script>" in timeline  # shown, as text
    assert "<b onmouseover=alert(2)>name</b> → https://x.example/?q=<script>alert(3)</script>" in timeline
    rows = (await client.get("/ui/campaigns.json", params={"range": "1h"})).json()["rows"]
    assert CAMPAIGN in [row["campaign_id"] for row in rows]


async def test_every_dashboard_answer_carries_the_csp_and_framing_headers(open_dashboard: OpenDashboard) -> None:
    client = await open_dashboard()
    for path in ("/", "/campaign?id=spring", "/message?q=m-1", "/live", "/ui/campaigns.json",
                 "/static/dashboard.js", "/static/vendor/uPlot.iife.min.js", "/live?events=bogus"):
        response = await client.get(path)
        headers = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer", path
        assert headers["x-content-type-options"] == "nosniff", path
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert (await client.get("/")).headers["cache-control"] == "no-store"


def test_the_templates_hold_no_inline_script_style_or_handler_and_the_script_never_writes_markup() -> None:
    for template in (WEB / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=|javascript:|\|\s*safe\b|autoescape\s+false", text), \
            template.name
    script = (WEB / "static" / "dashboard.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", script)
    assert (WEB / "static" / "vendor" / "uPlot.LICENSE").read_text().startswith("The MIT License")
