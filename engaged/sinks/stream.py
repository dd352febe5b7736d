"""Live stream: follows the event store by seq and yields Server-Sent Events frames (resumable by id)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from engaged.events.model import event_type
from engaged.events.wire import api_json
from engaged.types import EventQuery, EventReader, StoredEvent, wait_for_append

_PAGE = 500


def frame(stored: StoredEvent) -> bytes:
    """One SSE message: `id` is the seq (for Last-Event-ID), `event` the type, `data` the event as the Events API
    answers it (ISO-8601 timestamp)."""
    return (b"id: %d\nevent: %s\ndata: " % (stored.seq, event_type(stored.event).encode())
            + api_json(stored.event) + b"\n\n")


async def follow(store: EventReader, query: EventQuery, after: int, stopping: asyncio.Event, *,
                 keepalive: float = 15.0, poll: float = 0.25) -> AsyncIterator[bytes]:
    """Frames for every matching event with seq > `after`, live, until `stopping` is set.

    Local appends wake the follower at once; appends by other processes are seen within `poll`
    seconds. A comment line goes out when nothing was sent for `keepalive` seconds.
    """
    cursor = after
    sent = time.monotonic()
    yield b"retry: 1000\n\n"
    while not stopping.is_set():
        version = store.appends.version
        page = await store.query(msgspec.structs.replace(query, after_seq=cursor, limit=_PAGE))
        if page:
            cursor = page[-1].seq
            sent = time.monotonic()
            yield b"".join(frame(item) for item in page)
            continue
        idle = time.monotonic() - sent
        if idle >= keepalive:
            sent = time.monotonic()
            yield b": keepalive\n\n"
            idle = 0.0
        await wait_for_append(store, version, stopping, min(poll, keepalive - idle))

