"""Events API: GET /api/v1/events/message (SparkPost filters, cursor paging) and /api/v1/events/stream (SSE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from engaged.api.params import BadRequest, decode_cursor, encode_cursor, error, integer
from engaged.api.search import search_query
from engaged.events.model import EVENT_TYPES
from engaged.events.samples import documentation, sample
from engaged.events.wire import api_json
from engaged.prometheus import Metrics
from engaged.sinks.stream import follow
from engaged.types import EventReader

PER_PAGE = 1000
MAX_PER_PAGE = 10000
INITIAL_CURSOR = "initial"
"""SparkPost's documented first-page cursor (also the default)."""
TOTAL_COUNT_CAP = 100_000
"""total_count is exact up to this many matches; larger results report this number (counting is bounded)."""


class EventsApi:
    """The message-events search and the live stream over one event store."""

    def __init__(self, store: EventReader, metrics: Metrics, stopping: asyncio.Event, *,
                 keepalive: float = 15.0, poll: float = 0.25, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._stopping = stopping
        self._keepalive = keepalive
        self._poll = poll

    def routes(self) -> list[Route]:
        return [Route("/api/v1/events/message", self.message, methods=["GET"]),
                Route("/api/v1/events/message/documentation", self.documentation, methods=["GET"]),
                Route("/api/v1/events/samples", self.samples, methods=["GET"]),
                Route("/api/v1/events/stream", self.stream, methods=["GET"])]

    async def documentation(self, request: Request) -> Response:
        """`{"results": [{field: {"description", "sampleValue"}, …}, …]}`, one entry per event type."""
        return Response(msgspec.json.encode({"results": [documentation(name) for name in EVENT_TYPES]}),
                        media_type="application/json")

    async def samples(self, request: Request) -> Response:
        """`{"results": [event…]}`: a sample of each type in `events` (default: every type engaged produces)."""
        requested = [name.strip() for name in request.query_params.get("events", "").split(",") if name.strip()]
        unknown = [name for name in requested if name not in EVENT_TYPES]
        if unknown:
            return error(400, f"engaged has no sample of {', '.join(unknown)}: it produces {', '.join(EVENT_TYPES)}",
                         "events")
        events = [sample(name) for name in requested or EVENT_TYPES]
        return Response(b'{"results":[' + b",".join(api_json(event) for event in events) + b"]}",
                        media_type="application/json")

    async def message(self, request: Request) -> Response:
        """`{"results": [event…], "total_count": n, "links": [{"href", "rel"}…]}`, newest first, paged by cursor."""
        params = request.query_params
        try:
            query = search_query(params, now=self._clock())
            per_page = integer(params, "per_page", PER_PAGE, 1, MAX_PER_PAGE)
            cursor = params.get("cursor", "").strip()
            before = 0 if cursor in ("", INITIAL_CURSOR) else decode_cursor(cursor)
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        page_query = msgspec.structs.replace(query, before_seq=before, newest_first=True, limit=per_page + 1)
        page, total = await asyncio.gather(self._store.query(page_query),
                                           self._store.count(query, TOTAL_COUNT_CAP))
        rest = [(key, value) for key, value in params.multi_items() if key != "cursor"]
        links = [{"href": _link(request.url.path, rest, INITIAL_CURSOR), "rel": "first"}]
        if len(page) > per_page:
            page = page[:per_page]
            links.append({"href": _link(request.url.path, rest, encode_cursor(page[-1].seq)), "rel": "next"})
        body = (b'{"results":[' + b",".join(api_json(item.event) for item in page)
                + b'],"total_count":' + str(total).encode() + b',"links":' + msgspec.json.encode(links) + b"}")
        return Response(body, media_type="application/json")

    async def stream(self, request: Request) -> Response:
        """Server-Sent Events from after Last-Event-ID (header or `last_event_id`), else from now on."""
        params = request.query_params
        try:
            query = search_query(params, now=None, extra=frozenset({"last_event_id"}))
            resume = request.headers.get("last-event-id") or params.get("last_event_id", "")
            after = _seq(resume) if resume else await self._store.head()
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        frames = follow(self._store, query, after, self._stopping, keepalive=self._keepalive, poll=self._poll)
        return StreamingResponse(self._counted(frames), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _counted(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        self._metrics.stream_clients.inc()
        try:
            async for chunk in frames:
                yield chunk
        finally:
            self._metrics.stream_clients.dec()


def _link(path: str, params: Sequence[tuple[str, str]], cursor: str) -> str:
    return f"{path}?{urlencode([*params, ('cursor', cursor)])}"


def _seq(value: str) -> int:
    try:
        seq = int(value.strip())
    except ValueError:
        raise BadRequest("last_event_id", "Last-Event-ID must be the id of an event this stream sent") from None
    if seq < 0:
        raise BadRequest("last_event_id", "Last-Event-ID must not be negative")
    return seq
