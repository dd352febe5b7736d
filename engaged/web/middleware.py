"""DashboardMiddleware: serves the dashboard's paths on the API listener, with CSP and framing headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engaged.errors import StoreError
from engaged.suppression.model import SuppressionStore
from engaged.types import EventReports
from engaged.web.routes import Dashboard

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
PAGES = frozenset({"/", "/login", "/logout", "/campaign", "/message", "/live", "/suppression", "/suppression/delete"})
PREFIXES = ("/static/", "/ui/")


def is_dashboard_path(path: str) -> bool:
    """True for the paths the dashboard answers; every other path goes on to the API."""
    return path in PAGES or path.startswith(PREFIXES)


class DashboardMiddleware:
    """Placed outside the API's AuthMiddleware: the dashboard applies the same rule itself, with sessions."""

    def __init__(self, app: ASGIApp, store: EventReports, *, keys: Sequence[str], stopping: asyncio.Event,
                 keepalive: float = 15.0, poll: float = 0.25, suppressions: SuppressionStore | None = None) -> None:
        self._api = app
        dashboard = Dashboard(store, keys=tuple(keys), stopping=stopping, keepalive=keepalive, poll=poll,
                              suppressions=suppressions)
        self._dashboard = Starlette(routes=dashboard.routes(), exception_handlers={
            StoreError: dashboard.store_error, HTTPException: dashboard.http_error})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_dashboard_path(scope["path"]):
            await self._api(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self._dashboard(scope, receive, secured)
