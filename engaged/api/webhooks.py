"""Webhooks API: GET/POST/PUT/DELETE /api/v1/webhooks (SparkPost's shape) plus dead letters and their replay."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engaged.api.params import error, json
from engaged.sinks.dispatch import problems_of
from engaged.sinks.guard import check_target
from engaged.sinks.signing import batch_id, new_secret
from engaged.types import DeadLetter, EventStore, WebhookRecord, WebhookRow

_UNSET: Any = msgspec.UNSET
_T = TypeVar("_T")


class WebhookInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A POST or PUT body; fields left out keep their current (or default) values."""

    name: str | msgspec.UnsetType = _UNSET
    target: str | msgspec.UnsetType = _UNSET
    events: list[str] | msgspec.UnsetType = _UNSET
    auth_type: str | msgspec.UnsetType = _UNSET
    auth_token: str | msgspec.UnsetType = _UNSET
    auth_credentials: dict[str, str] | msgspec.UnsetType = _UNSET
    allow_private_targets: bool | msgspec.UnsetType = _UNSET
    batch_size: int | msgspec.UnsetType = _UNSET
    batch_age: float | msgspec.UnsetType = _UNSET
    timeout: float | msgspec.UnsetType = _UNSET
    retry_base: float | msgspec.UnsetType = _UNSET
    retry_max_age: float | msgspec.UnsetType = _UNSET
    active: bool | msgspec.UnsetType = _UNSET  # SparkPost sends it; every stored webhook is active


class ReplayInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST …/dead-letters/replay: the letters to resend (all dead ones when left out)."""

    ids: list[int] | None = None


def _view(row: WebhookRow, *, secrets: bool) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.structs.asdict(row.record)
    state = row.state
    data["active"] = True
    data["delivery"] = {
        "cursor": state.cursor,
        "batch_in_flight": batch_id(row.record.id, state.cursor, state.pending_last)
        if state.pending_last > state.cursor else None,
        "attempts": state.attempts,
        "next_attempt": state.next_attempt or None,
        "last_error": state.last_error or None,
    }
    if secrets:
        data["signing_secret"] = row.secret
    else:
        del data["auth_token"], data["auth_credentials"]
    return data


def _letter_view(letter: DeadLetter) -> dict[str, Any]:
    return msgspec.structs.asdict(letter)


class WebhooksApi:
    """CRUD over the webhook table; `[[webhooks]]` entries are listed but read-only (edit the config)."""

    def __init__(self, store: EventStore, changed: Callable[[], None]) -> None:
        self._store = store
        self._changed = changed

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/webhooks", self.list, methods=["GET"]),
            Route("/api/v1/webhooks", self.create, methods=["POST"]),
            Route("/api/v1/webhooks/{id}", self.read, methods=["GET"]),
            Route("/api/v1/webhooks/{id}", self.update, methods=["PUT"]),
            Route("/api/v1/webhooks/{id}", self.delete, methods=["DELETE"]),
            Route("/api/v1/webhooks/{id}/dead-letters", self.dead_letters, methods=["GET"]),
            Route("/api/v1/webhooks/{id}/dead-letters/replay", self.replay, methods=["POST"]),
        ]

    async def list(self, request: Request) -> Response:
        return json({"results": [_view(row, secrets=False) for row in await self._store.webhooks()]})

    async def read(self, request: Request) -> Response:
        row = await self._store.webhook(request.path_params["id"])
        if row is None:
            return error(404, "webhook not found")
        return json({"results": _view(row, secrets=True)})

    async def create(self, request: Request) -> Response:
        given = await _decode(request, WebhookInput)
        if isinstance(given, Response):
            return given
        if given.name is _UNSET or given.target is _UNSET:
            missing = "name" if given.name is _UNSET else "target"
            return error(422, f"Missing required field '{missing}'", missing, code="1400")
        base = WebhookRecord(id=str(uuid.uuid4()), name="", target="", created=time.time())
        record = _merged(base, given)
        refusal = await _refusal(record)
        if refusal is not None:
            return refusal
        secret = new_secret()
        await self._store.put_webhook(record, secret)
        self._changed()
        return json({"results": {"id": record.id, "name": record.name, "signing_secret": secret}})

    async def update(self, request: Request) -> Response:
        row = await self._store.webhook(request.path_params["id"])
        if row is None:
            return error(404, "webhook not found")
        if row.record.source == "config":
            return error(409, "this webhook is defined in [[webhooks]] of the configuration file; edit it there")
        given = await _decode(request, WebhookInput)
        if isinstance(given, Response):
            return given
        record = _merged(row.record, given)
        refusal = await _refusal(record)
        if refusal is not None:
            return refusal
        await self._store.put_webhook(record, row.secret)
        self._changed()
        return json({"results": {"id": record.id, "name": record.name}})

    async def delete(self, request: Request) -> Response:
        row = await self._store.webhook(request.path_params["id"])
        if row is None:
            return error(404, "webhook not found")
        if row.record.source == "config":
            return error(409, "this webhook is defined in [[webhooks]] of the configuration file; remove it there")
        await self._store.delete_webhook(row.record.id)
        self._changed()
        return Response(status_code=204)

    async def dead_letters(self, request: Request) -> Response:
        webhook_id = request.path_params["id"]
        if await self._store.webhook(webhook_id) is None:
            return error(404, "webhook not found")
        return json({"results": [_letter_view(letter) for letter in await self._store.dead_letters(webhook_id)]})

    async def replay(self, request: Request) -> Response:
        webhook_id = request.path_params["id"]
        if await self._store.webhook(webhook_id) is None:
            return error(404, "webhook not found")
        given = await _decode(request, ReplayInput, empty_ok=True)
        if isinstance(given, Response):
            return given
        queued = await self._store.queue_dead_letters(webhook_id, given.ids)
        self._changed()
        return json({"results": {"queued": queued}})


async def _decode(request: Request, kind: type[_T], *, empty_ok: bool = False) -> _T | Response:
    body = await request.body()
    if not body.strip() and empty_ok:
        body = b"{}"
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as problem:
        return error(422, f"invalid request body: {problem}")
    except msgspec.DecodeError:
        return error(422, "the request body must be a JSON object")


def _merged(record: WebhookRecord, given: WebhookInput) -> WebhookRecord:
    changes = {name: getattr(given, name) for name in WebhookInput.__struct_fields__
               if name != "active" and getattr(given, name) is not _UNSET}
    if "events" in changes:
        changes["events"] = tuple(changes["events"])
    return msgspec.structs.replace(record, **changes)


async def _refusal(record: WebhookRecord) -> Response | None:
    problems = problems_of(record)
    if problems:
        field, reason = problems[0]
        return error(422, f"{field} {reason}", field)
    problem = await check_target(record.target, record.allow_private_targets)
    return error(400, problem, "target") if problem is not None else None
