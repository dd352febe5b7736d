"""The suppression list API over a real ApiApp, on both backends; one test drives it with SparkPost's client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engaged.app import ApiApp
from engaged.config import ApiConfig, Config
from engaged.events.store_sqlite import SqliteEventStore
from engaged.prometheus import Metrics
from tests.suppressionstores import SuppressionMaker

BASE = "/api/v1/suppression-list"


@pytest.fixture
async def api(make_suppressions: SuppressionMaker, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An ApiApp (no keys: loopback only) over a fresh suppression list, and a client for it."""
    events = SqliteEventStore(tmp_path / "events.sqlite3")
    suppressions = make_suppressions()
    await events.open()
    await suppressions.open()
    config = Config(data_dir=str(tmp_path / "data"), api=ApiConfig(listen="127.0.0.1:0"))
    service = ApiApp(config, events, metrics=Metrics(), suppressions=suppressions)
    await service.start()
    async with httpx.AsyncClient(base_url=f"http://{service.address}", timeout=30) as client:
        yield client
    await service.stop()
    await suppressions.close()
    await events.close()


async def test_bulk_put_then_get_shows_sparkposts_shape(api: httpx.AsyncClient) -> None:
    reply = await api.put(BASE, json={"recipients": [
        {"recipient": "Alice@Example.com", "type": "non_transactional", "description": "asked to stop"},
        {"recipient": "bob@example.com", "transactional": True, "non_transactional": True},
    ]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"results": {"message": "Suppression List successfully updated"}}
    found = (await api.get(f"{BASE}/alice@example.com")).json()["results"]
    assert len(found) == 1
    [alice] = found
    assert {key: alice[key] for key in ("recipient", "type", "source", "description", "transactional",
                                        "non_transactional")} == {
        "recipient": "alice@example.com", "type": "non_transactional", "source": "Manually Added",
        "description": "asked to stop", "transactional": False, "non_transactional": True}
    assert alice["created"].endswith("+00:00") and alice["created"] == alice["updated"]
    bob = (await api.get(f"{BASE}/BOB@example.com")).json()["results"]
    assert sorted(entry["type"] for entry in bob) == ["non_transactional", "transactional"]


async def test_single_put_delete_and_not_found(api: httpx.AsyncClient) -> None:
    assert (await api.put(f"{BASE}/c@example.com", json={"type": "transactional"})).status_code == 200
    assert (await api.put(f"{BASE}/c@example.com", json={"type": "non_transactional"})).status_code == 200
    reply = await api.request("DELETE", f"{BASE}/c@example.com", json={"type": "transactional"})
    assert reply.status_code == 204
    assert [entry["type"] for entry in (await api.get(f"{BASE}/c@example.com")).json()["results"]] == [
        "non_transactional"]
    assert (await api.delete(f"{BASE}/c@example.com")).status_code == 204
    missing = await api.get(f"{BASE}/c@example.com")
    assert missing.status_code == 404
    assert missing.json() == {"errors": [{"message": "Recipient could not be found", "code": "1600",
                                          "description": "Recipient could not be found"}]}
    assert (await api.delete(f"{BASE}/c@example.com")).status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({}, "recipients"),
    ({"recipients": []}, "recipients"),
    ({"recipients": "a@example.com"}, "recipients"),
    ({"recipients": [{"recipient": "not an address", "type": "transactional"}]}, "recipients[0].recipient"),
    ({"recipients": [{"recipient": "a@example.com"}]}, "recipients[0].type"),
    ({"recipients": [{"recipient": "a@example.com", "type": "marketing"}]}, "recipients[0].type"),
    ({"recipients": [{"recipient": "a@example.com", "type": "transactional", "description": 7}]},
     "recipients[0].description"),
    ({"recipients": [{"recipient": "a@ex ample.com", "type": "transactional"}]}, "recipients[0].recipient"),
    ({"recipients": [{"recipient": "a@example.com\r\nBcc: x@y.z", "type": "transactional"}]},
     "recipients[0].recipient"),
    ({"recipients": [7]}, "recipients[0]"),
])
async def test_bad_bulk_bodies_are_400_and_store_nothing(api: httpx.AsyncClient, body: dict[str, Any],
                                                         param: str) -> None:
    reply = await api.put(BASE, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["errors"][0]["param"] == param
    assert (await api.get(BASE)).json()["total_count"] == 0


async def test_one_bad_entry_refuses_the_whole_bulk_and_names_every_bad_entry(api: httpx.AsyncClient) -> None:
    recipients = [{"recipient": f"r{n}@example.com", "type": "transactional"} for n in range(50)]
    recipients[10]["recipient"] = "r10"
    recipients[40]["type"] = "bulk"
    reply = await api.put(BASE, json={"recipients": recipients})
    assert reply.status_code == 400
    assert [item["param"] for item in reply.json()["errors"]] == ["recipients[10].recipient", "recipients[40].type"]
    assert (await api.get(BASE)).json()["total_count"] == 0


async def test_100000_entries_are_refused_with_the_limit_and_invalid_json_is_400(api: httpx.AsyncClient) -> None:
    recipients = [{"recipient": f"r{n}@example.com", "type": "transactional"} for n in range(100_000)]
    reply = await api.put(BASE, json={"recipients": recipients})
    assert reply.status_code == 400 and "at most 10000 recipients" in reply.json()["errors"][0]["description"]
    small = [{"recipient": f"r{n}@x.io", "type": "transactional"} for n in range(10_001)]
    reply = await api.put(BASE, json={"recipients": small})
    assert reply.status_code == 400 and "at most 10000" in reply.json()["errors"][0]["description"]
    reply = await api.put(BASE, content=b'{"recipients": [', headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["errors"][0]["description"]
    assert (await api.get(BASE)).json()["total_count"] == 0


async def test_search_filters_and_cursor_paging(api: httpx.AsyncClient) -> None:
    recipients = [{"recipient": f"r{n:02}@{'one' if n % 2 else 'two'}.example", "type": "non_transactional",
                   "description": f"entry {n}"} for n in range(25)]
    assert (await api.put(BASE, json={"recipients": recipients})).status_code == 200
    assert (await api.put(f"{BASE}/t@one.example", json={"type": "transactional"})).status_code == 200
    one = (await api.get(BASE, params={"domain": "one.example"})).json()
    assert one["total_count"] == 13
    assert (await api.get(BASE, params={"types": "transactional"})).json()["total_count"] == 1
    assert (await api.get(BASE, params={"description": "ENTRY 2"})).json()["total_count"] == 6  # 2, 20-24
    assert (await api.get(BASE, params={"description": "entry 2", "description_strict": "true"})).json()[
        "total_count"] == 1
    assert (await api.get(BASE, params={"sources": "manually added"})).json()["total_count"] == 26
    seen: list[str] = []
    url: str | None = f"{BASE}?cursor=initial&per_page=7&domain=one.example"
    while url:
        page = (await api.get(url)).json()
        seen.extend(entry["recipient"] for entry in page["results"])
        url = page["links"].get("next")
    assert len(seen) == 13 and len(set(seen)) == 13
    paged = (await api.get(BASE, params={"per_page": 10, "page": 3})).json()
    assert len(paged["results"]) == 6 and paged["links"] == {}


@pytest.mark.parametrize("query", ["types=bulk", "sources=nobody", "per_page=0", "per_page=10001", "cursor=zzz",
                                   "from=yesterday", "sort=sideways", "from=2024-02-01&to=2024-01-01"])
async def test_bad_search_parameters_are_400(api: httpx.AsyncClient, query: str) -> None:
    reply = await api.get(f"{BASE}?{query}")
    assert reply.status_code == 400, reply.text
    assert reply.json()["errors"][0]["param"]


async def test_the_official_sparkpost_client_drives_the_list(api: httpx.AsyncClient) -> None:
    sparkpost = pytest.importorskip("sparkpost")
    from sparkpost.exceptions import SparkPostAPIException

    client = sparkpost.SparkPost("any-key")
    client.suppression_list.base_uri = str(api.base_url).rstrip("/") + "/api/v1"  # the client only speaks https
    sl = client.suppression_list

    def calls() -> list[Any]:
        created = sl.create({"email": "Carol@Example.com", "transactional": False, "non_transactional": True,
                             "description": "from the client"})
        bulk = sl.create([{"recipient": "dave@example.com", "type": "transactional"},
                          {"recipient": "erin@example.com", "type": "non_transactional"}])
        got = sl.get("carol@example.com")
        listed = sl.list(types=["transactional"], limit=10)
        deleted = sl.delete("dave@example.com")
        try:
            sl.get("dave@example.com")
            missing = None
        except SparkPostAPIException as problem:
            missing = problem.status
        try:
            sl.create({"email": "not-an-address", "type": "transactional"})
            refused = None
        except SparkPostAPIException as problem:
            refused = problem.status
        return [created, bulk, got, listed, deleted, missing, refused]

    created, bulk, got, listed, deleted, missing, refused = await asyncio.to_thread(calls)
    assert created == bulk == {"message": "Suppression List successfully updated"}
    assert [(entry["recipient"], entry["type"], entry["description"]) for entry in got] == [
        ("carol@example.com", "non_transactional", "from the client")]
    assert [entry["recipient"] for entry in listed] == ["dave@example.com"]
    assert deleted is True and missing == 404 and refused == 400


async def test_a_body_over_the_size_cap_is_413(api: httpx.AsyncClient) -> None:
    reply = await api.put(BASE, content=b" " * (9 * 1024 * 1024), headers={"content-type": "application/json"})
    assert reply.status_code == 413
