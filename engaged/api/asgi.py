"""The API listener's ASGI app: explicit route lists, auth middleware, JSON errors, Prometheus /metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engaged.api.auth import AuthMiddleware
from engaged.api.events import EventsApi
from engaged.api.metrics import MetricsApi
from engaged.api.params import error
from engaged.api.suppression import SuppressionApi
from engaged.api.webhooks import WebhooksApi
from engaged.errors import StoreError
from engaged.prometheus import CONTENT_TYPE, Metrics
from engaged.sinks.guard import Networks
from engaged.suppression.model import SuppressionStore
from engaged.types import EventStore

log = logging.getLogger("engaged")


class NoSniffMiddleware:
    """Adds `X-Content-Type-Options: nosniff`: browsers must take JSON and SSE answers for what they say they are."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self._app(scope, receive, with_header if scope["type"] == "http" else send)


def build_app(store: EventStore, metrics: Metrics, *, keys: Sequence[str], stopping: asyncio.Event,
              networks: Networks = (),
              webhooks_changed: Callable[[], None], outer: Sequence[Middleware] = (), keepalive: float = 15.0,
              poll: float = 0.25, suppressions: SuppressionStore | None = None,
              clock: Callable[[], float] = time.time) -> Starlette:
    """Every route of the API listener behind AuthMiddleware; `outer` middlewares (the dashboard, mounted by
    app.py) see requests before the access rule."""

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return error(status, str(detail), code="1101" if status == 404 else None)

    async def store_error(request: Request, exc: Exception) -> Response:
        log.error("api: %s %s: %s", request.method, request.url.path, exc)
        return error(503, "the event store is unavailable")

    routes = [
        *EventsApi(store, metrics, stopping, keepalive=keepalive, poll=poll, clock=clock).routes(),
        *MetricsApi(store).routes(),
        *WebhooksApi(store, webhooks_changed, networks).routes(),
        Route("/metrics", prometheus, methods=["GET"]),
        *(SuppressionApi(suppressions).routes() if suppressions is not None else []),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(NoSniffMiddleware), *outer, Middleware(AuthMiddleware, keys=keys)],
        exception_handlers={HTTPException: http_error, StoreError: store_error},
    )
