"""Fixtures: a small three-campaign story in the shared per-backend store, and listeners serving the dashboard."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import httpx
import msgspec
import pytest

from engaged.events.model import Event, MachineEngagement
from engaged.types import EventStore
from tests.eventstores import Services
from tests.sample_events import make_event

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.12026; Pro)"
APPLE = MachineEngagement(kind="apple_mpp", reason="bare Mozilla/5.0 user agent (Apple MPP)")
SCANNER = MachineEngagement(kind="security_scanner", reason="all links within 1 s")
HOUR, DAY = 3600.0, 86400.0


def story(now: float) -> list[Event]:
    """spring (10 minutes ago): ann clicks as a person, bob only through machines, cy bounces after a delay;
    fall (3 days ago): dee opens; winter (10 days ago): eve is only injected."""
    counter = iter(range(1, 1000))

    def event(kind: str, rcpt: str, ago: float, campaign: str = "spring", message: str = "m-1",
              **fields: Any) -> Event:
        made = make_event(kind, next(counter), rcpt=rcpt, campaign=campaign, message_id=message, ts=now - ago)
        if kind in ("open", "initial_open", "click"):
            fields.setdefault("machine_engagement", None)
        return msgspec.structs.replace(made, **fields) if fields else made

    spring = [
        *(event("injection", rcpt, 600 - n) for n, rcpt in enumerate(("ann@x.org", "bob@x.org", "cy@x.org"))),
        *(event("delivery", rcpt, 590 - n) for n, rcpt in enumerate(("ann@x.org", "bob@x.org"))),
        event("delay", "cy@x.org", 585, bounce_class="22", reason="452 4.2.2 mailbox full"),
        event("initial_open", "ann@x.org", 500, user_agent=IPHONE, geo_ip={"country": "DE"}),
        event("open", "ann@x.org", 499, user_agent=IPHONE, geo_ip={"country": "DE"}),
        event("initial_open", "bob@x.org", 480, user_agent="Mozilla/5.0", machine_engagement=APPLE, geo_ip=None),
        event("click", "ann@x.org", 400, user_agent=IPHONE, target_link_name="offer",
              target_link_url="https://shop.example/offer?id=7", geo_ip={"country": "DE"}),
        event("click", "ann@x.org", 390, user_agent=IPHONE, target_link_name="offer",
              target_link_url="https://shop.example/offer?id=7", geo_ip={"country": "DE"}),
        event("click", "bob@x.org", 470, user_agent=OUTLOOK, target_link_name="terms", machine_engagement=SCANNER,
              target_link_url="https://shop.example/terms", geo_ip={"country": "US"}),
        event("bounce", "cy@x.org", 300, bounce_class="10"),
    ]
    fall = [event("injection", "dee@x.org", 3 * DAY, "fall", "m-2"),
            event("delivery", "dee@x.org", 3 * DAY - 5, "fall", "m-2"),
            event("open", "dee@x.org", 3 * DAY - 60, "fall", "m-2", user_agent=OUTLOOK, geo_ip=None)]
    winter = [event("injection", "eve@x.org", 10 * DAY, "winter", "m-3")]
    return [*spring, *fall, *winter]


class OpenDashboard(Protocol):
    async def __call__(self, keys: Sequence[str] = ()) -> httpx.AsyncClient: ...


@pytest.fixture
async def open_dashboard(store: EventStore, start_service: Services) -> AsyncIterator[OpenDashboard]:
    """Stores the story, then starts API listeners (with `keys`, if any) and gives a client for each."""
    await store.append(story(time.time()))
    clients: list[httpx.AsyncClient] = []

    async def open_one(keys: Sequence[str] = ()) -> httpx.AsyncClient:
        service = await start_service(store, keys=keys)
        client = httpx.AsyncClient(base_url=f"http://{service.address}", timeout=10)
        clients.append(client)
        return client

    yield open_one
    for client in clients:
        await client.aclose()
