"""The dashboard's suppression page: search by recipient, domain, source and type; delete with a form post."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from engaged.suppression.model import BOUNCE_RULE, SuppressionEntry, SuppressionSearch, SuppressionStore
from engaged.types import EventStore
from engaged.web.queries import DashboardQueries
from engaged.web.timerange import parse_range
from tests.sample_events import make_event
from tests.suppressionstores import SuppressionMaker


@pytest.fixture
async def dashboard(make_suppressions: SuppressionMaker,
                    tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, SuppressionStore]]:
    events = SqliteEventStore(tmp_path / "events.sqlite3")
    suppressions = make_suppressions()
    await events.open()
    await suppressions.open()
    await suppressions.upsert([
        SuppressionEntry(recipient="ann@one.example", type="non_transactional", description="<b>asked</b>",
                         created=1, updated=1),
        SuppressionEntry(recipient="bob@two.example", type="transactional", source=BOUNCE_RULE, created=2, updated=2),
    ])
    config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(listen="127.0.0.1:0"))
    service = ApiApp(config, events, metrics=Metrics(), suppressions=suppressions)
    await service.start()
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=30) as client:
        yield client, suppressions
    await service.stop()
    await suppressions.close()
    await events.close()


async def test_search_shows_matching_entries_escaped(dashboard: tuple[httpx.AsyncClient, SuppressionStore]) -> None:
    client, _ = dashboard
    page = await client.get("/suppression")
    assert page.status_code == 200 and "ann@one.example" in page.text and "bob@two.example" in page.text
    assert "&lt;b&gt;asked&lt;/b&gt;" in page.text and "<b>asked</b>" not in page.text
    by_domain = await client.get("/suppression", params={"q": "two.example"})
    assert "bob@two.example" in by_domain.text and "ann@one.example" not in by_domain.text
    by_source = await client.get("/suppression", params={"source": "Bounce Rule"})
    assert "bob@two.example" in by_source.text and "ann@one.example" not in by_source.text
    by_recipient = await client.get("/suppression", params={"q": "ANN@one.example", "type": "non_transactional"})
    assert "ann@one.example" in by_recipient.text and "bob@two.example" not in by_recipient.text


async def test_delete_removes_the_entry_and_needs_the_forms_token(
        dashboard: tuple[httpx.AsyncClient, SuppressionStore]) -> None:
    client, suppressions = dashboard
    page = await client.get("/suppression", params={"q": "ann@one.example"})
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf": token.group(1), "recipient": "ann@one.example", "type": "non_transactional", "back": "q=x"}
    forged = await client.post("/suppression/delete", data={**form, "csrf": "x" * 43})
    assert forged.status_code == 403
    reply = await client.post("/suppression/delete", data=form)
    assert reply.status_code == 303 and reply.headers["location"] == "/suppression?q=x"
    assert [entry.recipient for entry in await suppressions.search(SuppressionSearch())] == ["bob@two.example"]


async def test_campaign_rows_carry_unsubscribe_and_complaint_rates(store: EventStore) -> None:
    events = [make_event(kind, n, rcpt=f"r{n}@x.org") for n, kind in enumerate(
        ["delivery", "delivery", "delivery", "delivery", "link_unsubscribe", "list_unsubscribe", "spam_complaint"])]
    await store.append(events)
    [row] = await DashboardQueries(store).campaigns(parse_range({"range": "all"}, time.time()))
    assert (row.delivered, row.unsubscribes, row.complaints) == (4, 2, 1)
    assert row.unsubscribe_rate == 0.5 and row.complaint_rate == 0.25
