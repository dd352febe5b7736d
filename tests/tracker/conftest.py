"""Tracker fixtures: a real TrackerService on port 0 and a journal loader in the test's loop, links, a memory store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

from engaged.config import Config, EngagementTrackerConfig
from engaged.errors import StoreError
from engaged.events.ids import EventIdGenerator
from engaged.events.model import ClickEvent, Event, InitialOpenEvent, LinkUnsubscribeEvent, OpenEvent, decode_event
from engaged.events.query import Row
from engaged.events.store_sqlite import SqliteEventStore
from engaged.keys import Keyring, load_keyring
from engaged.recipient import RecipientIdentity, TrackingPlan
from engaged.tokens import RecipientLinks
from engaged.tracker.loader import JournalLoader
from engaged.tracker.service import TrackerService
from engaged.types import EventQuery, EventStore

BROWSER_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.0.0 Safari/537.36")
HOUR = 3600
TrackEvent = OpenEvent | InitialOpenEvent | ClickEvent | LinkUnsubscribeEvent


def link_data(tracking_domain: str, **changes: Any) -> tuple[RecipientIdentity, TrackingPlan]:
    """One recipient's identity and plan, injected an hour ago, links expiring in a day.

    `changes` override identity or plan fields; `expires` (epoch seconds) sets the plan's link expiry.
    """
    now = int(time.time())
    identity: dict[str, Any] = {
        "message_id": "000443ee14578172be22",
        "transmission_id": "65832150921904138",
        "rcpt_to": "alice@example.com",
        "raw_rcpt_to": "Alice@Example.com",
        "campaign_id": "spring_sale",
        "customer_id": "42",
        "tags": ("promo", "newsletter"),
        "metadata": {"user_id": "123", "plan": "gold"},
        "injection_time": now - HOUR,
        "sending_ip": "192.0.2.10",
    }
    plan: dict[str, Any] = {"tracking_domain": tracking_domain}
    expires = changes.pop("expires", now + 24 * HOUR)
    for name, value in changes.items():
        (plan if name in TrackingPlan.__struct_fields__ else identity)[name] = value
    plan["link_expiry"] = expires - int(identity["injection_time"])
    return RecipientIdentity(**identity), TrackingPlan(**plan)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """wait_until for code running on this loop: poll without blocking it, under a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)
    return value


def build_mmdb(path: Path) -> Path:
    """A tiny City database: 203.0.113.0/24 is Columbia, MD, US; 2001:db8::/32 is only France."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["203.0.113.0/24"]), {
        "country": {"iso_code": "US", "names": {"en": "United States"}},
        "subdivisions": [{"iso_code": "MD", "names": {"en": "Maryland"}}],
        "city": {"names": {"en": "Columbia"}},
        "location": {"latitude": MmdbF64(39.1749), "longitude": MmdbF64(-76.8375)},
        "postal": {"code": "21044"},
    })
    writer.insert_network(IPSet(["2001:db8::/32"]), {"country": {"iso_code": "FR"}})
    writer.to_db_file(str(path))
    return path


@dataclass
class RunningTracker:
    """A started TrackerService and its journal loader, with the store, keys and an HTTP client."""

    service: TrackerService
    loader: JournalLoader
    store: EventStore
    keyring: Keyring
    data_dir: Path
    client: httpx.AsyncClient

    @property
    def base(self) -> str:
        return f"{self.service.scheme}://{self.service.address}"

    async def flush(self) -> int:
        """Store everything the worker journaled so far; returns how many events that took."""
        await self.service.journal.settled()
        return await self.loader.load_available()

    def links(self, **changes: Any) -> RecipientLinks:
        """A recipient's link minter pointing at this tracker."""
        return RecipientLinks(self.keyring, *link_data(self.service.address, **changes))

    async def events(self, message_id: str | None = None) -> list[TrackEvent]:
        """Everything journaled so far, loaded into the store, oldest first (engagement events only)."""
        await self.flush()
        query = EventQuery(message_ids=(message_id,) if message_id else (), limit=100_000)
        events: list[TrackEvent] = []
        for stored in await self.store.query(query):
            if not isinstance(stored.event, OpenEvent | InitialOpenEvent | ClickEvent | LinkUnsubscribeEvent):
                raise AssertionError(f"the tracker stored a {type(stored.event).__name__}")
            events.append(stored.event)
        return events

    async def get(self, url: str, **headers: str) -> httpx.Response:
        return await self.client.get(url, headers={"user-agent": BROWSER_UA, **headers})


class TrackerFactory(Protocol):
    async def __call__(self, *, store: EventStore | None = None, keyring: Keyring | None = None,
                       data_dir: Path | None = None, verify: Any = True, **tracker: Any) -> RunningTracker: ...


@pytest.fixture
async def start_tracker(tmp_path: Path) -> AsyncIterator[TrackerFactory]:
    """Start trackers (SQLite store in tmp_path unless given) with [engagement_tracker] options; stopped after."""
    running: list[tuple[RunningTracker, bool]] = []

    async def factory(*, store: EventStore | None = None, keyring: Keyring | None = None,
                      data_dir: Path | None = None, verify: Any = True, **tracker: Any) -> RunningTracker:
        data = data_dir or tmp_path / f"tracker{len(running)}"
        owned = store is None
        if store is None:
            store = SqliteEventStore(data / "events.sqlite3")
            await store.open()
        tracker.setdefault("listen", "127.0.0.1:0")
        config = Config(data_dir=str(data), engagement_tracker=EngagementTrackerConfig(**tracker))
        keys = keyring or load_keyring(data)
        service = TrackerService(config, keys, ids=EventIdGenerator())
        await service.start()
        loader = JournalLoader(config.data_path, store)
        loader.start()
        client = httpx.AsyncClient(follow_redirects=False, timeout=10, verify=verify)
        handle = RunningTracker(service, loader, store, keys, data, client)
        running.append((handle, owned))
        return handle

    yield factory
    for handle, owned in reversed(running):
        await handle.client.aclose()
        await handle.service.stop()
        await handle.loader.stop()
        if owned:
            await handle.store.close()


@pytest.fixture
async def tracker(start_tracker: TrackerFactory) -> RunningTracker:
    """A tracker with default options."""
    return await start_tracker()


@dataclass
class MemoryStore:
    """An EventSink in a dict, idempotent by event_id like the real stores; the first `failures` appends raise."""

    failures: int = 0
    events: dict[str, Event] = field(default_factory=dict)
    appends: int = 0

    async def append(self, events: Sequence[Event]) -> None:
        self.appends += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the store is down")
        for event in events:
            self.events.setdefault(event.event_id, event)

    async def append_rows(self, rows: Sequence[Row]) -> None:
        """What the journal loader stores: each row's body is the event as journaled."""
        await self.append([decode_event(row[-1]) for row in rows])

