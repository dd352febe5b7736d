"""Dashboard routes: the pages (campaigns, campaign, message lookup, live feed, login) and their JSON and SSE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engaged.api.params import BadRequest, event_query
from engaged.events.model import EVENT_TYPES
from engaged.sinks.stream import follow
from engaged.suppression.address import normalise
from engaged.suppression.model import SOURCES, TYPES, SuppressionSearch, SuppressionStore
from engaged.types import EventQuery, EventReports, wait_for_append
from engaged.web.feed import format_time, view_of
from engaged.web.queries import SORTS, DashboardQueries, sort_rows
from engaged.web.session import (
    Access,
    SessionKeys,
    clear_session,
    csrf_token,
    is_same_origin_post,
    safe_next,
    set_csrf,
    set_session,
)
from engaged.web.timerange import RANGES, BadRange, TimeRange, parse_range

HERE = Path(__file__).resolve().parent
FEED_SIZE = 100
CAMPAIGN_FEED_SIZE = 50
TICK_GAP = 0.5
_FORM_LIMIT = 8192
_encoder = msgspec.json.Encoder()
_FILTERS = ("campaigns", "recipients", "message_ids", "transmissions")


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(content), status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _number(value: int) -> str:
    return f"{value:,}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


class Dashboard:
    """Every dashboard route over one event store, behind the API's access rule (keys → session cookie)."""

    def __init__(self, store: EventReports, *, keys: tuple[str, ...] | list[str], stopping: asyncio.Event,
                 keepalive: float = 15.0, poll: float = 0.25, clock: Callable[[], float] = time.time,
                 suppressions: SuppressionStore | None = None) -> None:
        self._store = store
        self._suppressions = suppressions
        self._queries = DashboardQueries(store)
        self._sessions = SessionKeys(keys)
        self._stopping = stopping
        self._keepalive = keepalive
        self._poll = poll
        self._clock = clock
        self._templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self._templates.filters.update(number=_number, percent=_percent, when=format_time, query=urlencode)
        self._templates.globals.update(ranges=RANGES, event_types=EVENT_TYPES)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.campaigns, methods=["GET"]),
            Route("/campaign", self.campaign, methods=["GET"]),
            Route("/message", self.message, methods=["GET"]),
            Route("/live", self.live, methods=["GET"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/suppression", self.suppression, methods=["GET"]),
            Route("/suppression/delete", self.suppression_delete, methods=["POST"]),
            Route("/ui/campaigns.json", self.campaigns_json, methods=["GET"]),
            Route("/ui/campaign.json", self.campaign_json, methods=["GET"]),
            Route("/ui/stream", self.stream, methods=["GET"]),
            Route("/ui/ticks", self.ticks, methods=["GET"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- rendering and access ------------------------------------------------------------------------------

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """A rendered template (autoescaped) with the CSRF token its forms need."""
        token, fresh = csrf_token(request)
        html = self._templates.get_template(template).render(
            path=request.url.path, login=self._sessions.required, csrf=token, **context)
        response = HTMLResponse(html, status, headers={"Cache-Control": "no-store"})
        if fresh:
            set_csrf(response, request, token)
        return response

    def _error(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/ui/"):
            return _json({"errors": [{"message": message}]}, status)
        return self.page(request, "error.html", status, title=f"Error {status}", message=message)

    def _denied(self, request: Request) -> Response | None:
        access = self._sessions.access(request)
        if access is Access.ALLOWED:
            return None
        if access is Access.FORBIDDEN:
            return self._error(request, 403, "No [api] keys are configured, so only loopback clients are served.")
        if request.url.path.startswith("/ui/"):
            return _json({"errors": [{"message": "Unauthorized."}]}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), 303)

    async def store_error(self, request: Request, exc: Exception) -> Response:
        return self._error(request, 503, "The event store is unavailable.")

    async def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return self._error(request, status, str(exc.detail) if isinstance(exc, HTTPException) else "Internal error.")

    def _range(self, request: Request) -> TimeRange:
        try:
            return parse_range(request.query_params, self._clock())
        except BadRange as bad:
            raise HTTPException(400, bad.message) from None

    # -- campaigns -----------------------------------------------------------------------------------------

    def _sort(self, request: Request) -> tuple[str, bool]:
        key = request.query_params.get("sort", "last_activity")
        key = key if key in SORTS else "last_activity"
        return key, request.query_params.get("dir", "desc" if key != "campaign" else "asc") != "asc"

    async def campaigns(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        span = self._range(request)
        key, descending = self._sort(request)
        rows = sort_rows(await self._queries.campaigns(span), key, descending)
        return self.page(request, "campaigns.html", title="Campaigns", rows=rows, span=span, sort=key,
                         descending=descending)

    async def campaigns_json(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        key, descending = self._sort(request)
        rows = sort_rows(await self._queries.campaigns(self._range(request)), key, descending)
        return _json({"rows": rows})

    async def campaign(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.query_params.get("id")
        if name is None:
            return RedirectResponse("/", 303)
        span = self._range(request)
        now = self._clock()
        queries = self._queries
        summary, series, links, bounces, (clients, devices), countries = await asyncio.gather(
            queries.campaigns(span, name), queries.series(name, span, now), queries.top_links(name, span),
            queries.bounce_classes(name, span), queries.agents(name, span), queries.countries(name, span))
        recent = await queries.recent(EventQuery(campaigns=(name,)), CAMPAIGN_FEED_SIZE)
        buckets = [(start, series.opens_human[n], series.opens_machine[n], series.clicks_human[n],
                    series.clicks_machine[n]) for n, start in enumerate(series.start)]
        return self.page(request, "campaign.html", title=f"Campaign {name}", name=name, span=span,
                         row=summary[0] if summary else None, series=series,
                         buckets=[bucket for bucket in buckets if any(bucket[1:])], links=links, bounces=bounces,
                         clients=clients, devices=devices, countries=countries,
                         events=[view_of(item) for item in recent],
                         after=recent[0].seq if recent else await self._store.head())

    async def campaign_json(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.query_params.get("id", "")
        span = self._range(request)
        summary, series = await asyncio.gather(self._queries.campaigns(span, name),
                                               self._queries.series(name, span, self._clock()))
        return _json({"summary": summary[0] if summary else None, "series": series})

    # -- message lookup and live feed ----------------------------------------------------------------------

    async def message(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        term = request.query_params.get("q", "").strip()
        timelines, truncated = await self._queries.lookup(term) if term else ([], False)
        views = [(line, [view_of(item) for item in line.events]) for line in timelines]
        return self.page(request, "message.html", title="Message lookup", term=term, timelines=views,
                         truncated=truncated)

    async def live(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        params = _filters(request)
        try:
            query = event_query(params)
        except BadRequest as bad:
            return self._error(request, 400, bad.message)
        recent = await self._queries.recent(query, FEED_SIZE)
        filters = {name: params.get(name, "") for name in _FILTERS}
        chosen = set(query.types)
        stream_params = [(name, value) for name, value in [("events", ",".join(query.types)), *filters.items()]
                         if value]
        return self.page(request, "live.html", title="Live feed", events=[view_of(item) for item in recent],
                         filters=filters, chosen=chosen, stream=urlencode(stream_params),
                         after=recent[0].seq if recent else await self._store.head())

    async def stream(self, request: Request) -> Response:
        """The API's live stream (same filters, same frames) behind the dashboard's session."""
        if (denied := self._denied(request)) is not None:
            return denied
        params = _filters(request)
        try:
            query = event_query(params)
            resume = request.headers.get("last-event-id") or request.query_params.get("last_event_id", "")
            if resume and not resume.strip().isdigit():
                raise BadRequest("last_event_id", "last_event_id must be the id of an event this stream sent")
            after = int(resume) if resume else await self._store.head()
        except BadRequest as bad:
            return self._error(request, 400, bad.message)
        frames = follow(self._store, query, after, self._stopping, keepalive=self._keepalive, poll=self._poll)
        return StreamingResponse(frames, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def ticks(self, request: Request) -> Response:
        """SSE `tick` (data: the store's head seq) at most every TICK_GAP s while events are stored."""
        if (denied := self._denied(request)) is not None:
            return denied
        return StreamingResponse(self._ticks(await self._store.head()), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _ticks(self, last: int) -> AsyncIterator[bytes]:
        sent = time.monotonic()
        yield b"retry: 1000\n\n"
        while not self._stopping.is_set():
            version = self._store.appends.version
            head = await self._store.head()
            if head != last:
                last, sent = head, time.monotonic()
                yield b"event: tick\ndata: %d\n\n" % head
                await self._wait(None, TICK_GAP)
                continue
            if time.monotonic() - sent >= self._keepalive:
                sent = time.monotonic()
                yield b": keepalive\n\n"
            await self._wait(version, self._poll)

    async def _wait(self, version: int | None, timeout: float) -> None:
        await wait_for_append(self._store, version, self._stopping, timeout)

    # -- suppression list ----------------------------------------------------------------------------------

    async def suppression(self, request: Request) -> Response:
        """Search the suppression list by recipient or domain, source and type; 100 a page, newest first."""
        if (denied := self._denied(request)) is not None:
            return denied
        if self._suppressions is None:
            return self._error(request, 404, "There is no suppression list here.")
        params = request.query_params
        term, source, kind = params.get("q", "").strip(), params.get("source", ""), params.get("type", "")
        search = SuppressionSearch(sources=(source,) if source in SOURCES else (),
                                   types=(kind,) if kind in TYPES else ())
        problem = ""
        if "@" in term:
            address = normalise(term)
            if address is None:
                problem = "That is not an email address."
            search = msgspec.structs.replace(search, recipients=(address or term.lower(),))
        elif term:
            search = msgspec.structs.replace(search, domain=term.lower())
        page = max(1, int(params["page"])) if params.get("page", "").isdigit() else 1
        entries = await self._suppressions.search(msgspec.structs.replace(search, limit=_SUPPRESSION_PAGE,
                                                                          offset=(page - 1) * _SUPPRESSION_PAGE))
        total = await self._suppressions.count(search, 1_000_000)
        kept = [(name, value) for name, value in (("q", term), ("source", source), ("type", kind)) if value]
        following = [*kept, ("page", str(page + 1))] if len(entries) == _SUPPRESSION_PAGE else []
        return self.page(request, "suppression.html", title="Suppression list", entries=entries, total=total,
                         term=term, source=source, kind=kind, sources=SOURCES, types=TYPES, problem=problem,
                         back=urlencode([*kept, ("page", str(page))]), next=following)

    async def suppression_delete(self, request: Request) -> Response:
        """Remove one entry (a same-origin form with the CSRF token), then back to the search."""
        if (denied := self._denied(request)) is not None:
            return denied
        form = await _form(request)
        if not is_same_origin_post(request, form.get("csrf", "")):
            return self._error(request, 403, "The form expired or came from another site.")
        if self._suppressions is None:
            return self._error(request, 404, "There is no suppression list here.")
        address = normalise(form.get("recipient", ""))
        kind = form.get("type", "")
        if address is None or kind not in TYPES:
            return self._error(request, 400, "Name a recipient and a type to delete.")
        await self._suppressions.delete(address, [kind])
        back = urlencode(parse_qsl(form.get("back", "")))
        return RedirectResponse("/suppression" + (f"?{back}" if back else ""), 303)

    # -- login ---------------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if not self._sessions.required:
            denied = self._denied(request)
            return denied if denied is not None else RedirectResponse("/", 303)
        target = safe_next(request.query_params.get("next"))
        if request.method == "GET":
            if self._sessions.access(request) is Access.ALLOWED:
                return RedirectResponse(target, 303)
            return self.page(request, "login.html", title="Sign in", target=target, failure="")
        form = await _form(request)
        target = safe_next(form.get("next"))
        if not is_same_origin_post(request, form.get("csrf", "")):
            return self.page(request, "login.html", 403, title="Sign in", target=target,
                             failure="The form expired or came from another site; please sign in again.")
        index = self._sessions.match(form.get("key", ""))
        if index is None:
            return self.page(request, "login.html", 401, title="Sign in", target=target,
                             failure="That is not one of the configured [api] keys.")
        response = RedirectResponse(target, 303)
        set_session(response, request, self._sessions.issue(index))
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        if not is_same_origin_post(request, form.get("csrf", "")):
            return self._error(request, 403, "The form expired or came from another site.")
        response = RedirectResponse("/login" if self._sessions.required else "/", 303)
        clear_session(response, request)
        return response


_SUPPRESSION_PAGE = 100


def _filters(request: Request) -> dict[str, str]:
    """The API's filter parameters, with repeated ones (checkboxes) joined into its comma lists."""
    params = request.query_params
    return {name: ",".join(value for value in params.getlist(name) if value)
            for name in ("events", *_FILTERS, "from", "to") if name in params}


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (at most 8 KiB; a larger one is refused with 413)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_LIMIT:
            raise HTTPException(413, "The form is too large.")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
