"""Webhooks API: GET/POST/PUT/DELETE /api/v1/webhooks (SparkPost's shape) plus dead letters and their replay."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engaged.api.params import BadRequest, error, integer, json
from engaged.api.search import zone_of
from engaged.events.model import EVENT_TYPES
from engaged.events.samples import envelope_documentation, sample
from engaged.sinks.guard import Networks, check_target
from engaged.sinks.signing import batch_body, batch_id, new_secret
from engaged.sinks.webhooks import ValidationAnswer, send_test_batch
from engaged.types import BatchStatus, DeadLetter, WebhookRecord, WebhookRegistry, WebhookRow
from engaged.webhook_rules import problems_of

_UNSET: Any = msgspec.UNSET
_T = TypeVar("_T")
_STATUS_WINDOW = 1000
"""Batches looked at for last_successful and last_failure."""


class WebhookInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A POST or PUT body; fields left out keep their current (or default) values."""

    name: str | msgspec.UnsetType = _UNSET
    target: str | msgspec.UnsetType = _UNSET
    events: list[str] | msgspec.UnsetType = _UNSET
    auth_type: str | msgspec.UnsetType = _UNSET
    auth_token: str | msgspec.UnsetType = _UNSET
    auth_credentials: dict[str, str] | msgspec.UnsetType = _UNSET
    auth_request_details: dict[str, Any] | msgspec.UnsetType = _UNSET
    custom_headers: dict[str, str] | msgspec.UnsetType = _UNSET
    exception_subaccounts: list[int | str] | msgspec.UnsetType = _UNSET
    active: bool | msgspec.UnsetType = _UNSET
    allow_private_targets: bool | msgspec.UnsetType = _UNSET
    batch_size: int | msgspec.UnsetType = _UNSET
    batch_age: float | msgspec.UnsetType = _UNSET
    timeout: float | msgspec.UnsetType = _UNSET
    retry_base: float | msgspec.UnsetType = _UNSET
    retry_max_age: float | msgspec.UnsetType = _UNSET


class ReplayInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST …/dead-letters/replay: the letters to resend (all dead ones when left out)."""

    ids: list[int] | None = None


def _when(epoch: float | None, zone: tzinfo = UTC) -> str | None:
    """SparkPost's `last_successful`/`last_failure` form: `2014-08-01 16:09:15` (in `zone`, default UTC)."""
    return None if epoch is None else datetime.fromtimestamp(epoch, zone).strftime("%Y-%m-%d %H:%M:%S")


def _links(webhook_id: str) -> list[dict[str, Any]]:
    base = f"/api/v1/webhooks/{webhook_id}"
    return [{"href": base, "rel": "urn.msys.webhooks.webhook", "method": ["GET", "PUT"]},
            {"href": f"{base}/validate", "rel": "urn.msys.webhooks.validate", "method": ["POST"]},
            {"href": f"{base}/batch-status", "rel": "urn.msys.webhooks.batches", "method": ["GET"]}]


def _view(row: WebhookRow, statuses: list[BatchStatus], *, secrets: bool, zone: tzinfo = UTC) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.structs.asdict(row.record)
    state = row.state
    data["exception_subaccounts"] = list(row.record.exception_subaccounts)
    data["last_successful"] = _when(max((item.ts for item in statuses if item.ok), default=None), zone)
    data["last_failure"] = _when(max((item.failed_at for item in statuses if item.failed_at), default=None), zone)
    data["links"] = _links(row.record.id)
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
        data["auth_request_details"] = {key: value for key, value in row.record.auth_request_details.items()
                                        if key != "body"}
    return data


def _letter_view(letter: DeadLetter) -> dict[str, Any]:
    return msgspec.structs.asdict(letter)


class WebhooksApi:
    """CRUD over the webhook table; `[[webhooks]]` entries are listed but read-only (edit the config)."""

    def __init__(self, store: WebhookRegistry, changed: Callable[[], None], networks: Networks = ()) -> None:
        self._store = store
        self._changed = changed
        self._networks = networks

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/webhooks/events/documentation", self.documentation, methods=["GET"]),
            Route("/api/v1/webhooks/events/samples", self.samples, methods=["GET"]),
            Route("/api/v1/webhooks", self.list, methods=["GET"]),
            Route("/api/v1/webhooks", self.create, methods=["POST"]),
            Route("/api/v1/webhooks/{id}", self.read, methods=["GET"]),
            Route("/api/v1/webhooks/{id}", self.update, methods=["PUT"]),
            Route("/api/v1/webhooks/{id}", self.delete, methods=["DELETE"]),
            Route("/api/v1/webhooks/{id}/validate", self.validate, methods=["POST"]),
            Route("/api/v1/webhooks/{id}/batch-status", self.batch_status, methods=["GET"]),
            Route("/api/v1/webhooks/{id}/dead-letters", self.dead_letters, methods=["GET"]),
            Route("/api/v1/webhooks/{id}/dead-letters/replay", self.replay, methods=["POST"]),
        ]

    async def list(self, request: Request) -> Response:
        try:
            zone = zone_of(request.query_params)  # SparkPost's: the zone of last_successful and last_failure
        except BadRequest as bad:
            return bad.answer()
        rows = await self._store.webhooks()
        return json({"results": [_view(row, await self._store.batch_statuses(row.record.id, _STATUS_WINDOW),
                                       secrets=False, zone=zone) for row in rows]})

    async def read(self, request: Request) -> Response:
        try:
            zone = zone_of(request.query_params)
        except BadRequest as bad:
            return bad.answer()
        row = await self._store.webhook(request.path_params["id"])
        if row is None:
            return error(404, "webhook not found")
        statuses = await self._store.batch_statuses(row.record.id, _STATUS_WINDOW)
        return json({"results": _view(row, statuses, secrets=True, zone=zone)})

    async def validate(self, request: Request) -> Response:
        """Send SparkPost's validation batch `[{"msys":{}}]` to the target; report what it answered."""
        row = await self._store.webhook(request.path_params["id"])
        if row is None:
            return error(404, "webhook not found")
        answer = await send_test_batch(row.record, row.secret, networks=self._networks)
        if answer.ok:
            return json({"results": {"msg": "Test POST to endpoint succeeded", "response": _answer_view(answer)}})
        return _test_failed(answer)

    async def batch_status(self, request: Request) -> Response:
        """SparkPost's batch status: the latest outcome of each recent batch, newest first."""
        webhook_id = request.path_params["id"]
        if await self._store.webhook(webhook_id) is None:
            return error(404, "webhook not found")
        try:
            limit = integer(request.query_params, "limit", 1000, 1, 1000)
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        results = []
        for item in await self._store.batch_statuses(webhook_id, limit):
            entry: dict[str, Any] = {"batch_id": item.batch_id,
                                     "ts": datetime.fromtimestamp(item.ts, UTC).isoformat(timespec="milliseconds")
                                     .replace("+00:00", "Z"),
                                     "attempts": item.attempts, "response_code": item.response_code or "0",
                                     "latency": item.latency}
            if not item.ok:
                entry["failure_code"] = item.response_code or "0"
            results.append(entry)
        return json({"results": results})

    async def documentation(self, request: Request) -> Response:
        """What each envelope, event type and field of a webhook batch means."""
        return json({"results": envelope_documentation()})

    async def samples(self, request: Request) -> Response:
        """A sample batch entry per requested type (default: every type engaged produces)."""
        try:
            types = _sample_types(request)
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        return Response(b'{"results":' + batch_body([sample(name) for name in types]) + b"}",
                        media_type="application/json")

    async def create(self, request: Request) -> Response:
        given = await _decode(request, WebhookInput)
        if isinstance(given, Response):
            return given
        if given.name is _UNSET or given.target is _UNSET:
            missing = "name" if given.name is _UNSET else "target"
            return error(422, f"Missing required field '{missing}'", missing, code="1400")
        base = WebhookRecord(id=str(uuid.uuid4()), name="", target="", created=time.time())
        record = _merged(base, given)
        refusal = await _refusal(record, self._networks)
        if refusal is not None:
            return refusal
        secret = new_secret()
        answer = await send_test_batch(record, secret, networks=self._networks)  # SparkPost: no 2xx, no webhook
        if not answer.ok:
            return _test_failed(answer)
        await self._store.put_webhook(record, secret)
        self._changed()
        return json({"results": {"id": record.id, "name": record.name, "signing_secret": secret,
                                 "links": _links(record.id)[:1]}})

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
        refusal = await _refusal(record, self._networks)
        if refusal is not None:
            return refusal
        if record.target != row.record.target:  # SparkPost tests a changed target before applying anything
            answer = await send_test_batch(record, row.secret, networks=self._networks)
            if not answer.ok:
                return _test_failed(answer)
        await self._store.put_webhook(record, row.secret)
        self._changed()
        return json({"results": {"id": record.id, "name": record.name, "links": _links(record.id)[1:2]}})

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


def _answer_view(answer: ValidationAnswer) -> dict[str, Any]:
    return {"status": answer.status, "headers": answer.headers, "body": answer.body}


def _test_failed(answer: ValidationAnswer) -> Response:
    """400 `Test POST to endpoint failed` (or SparkPost's `POST to webhook tokens URL failed`), with what the
    target or the token URL answered, or why it did not."""
    detail = answer.error or f"the target answered HTTP {answer.status}"
    token = answer.stage == "token"  # SparkPost's wording when the OAuth 2.0 token request failed
    body = {"errors": [{"message": "POST to webhook tokens URL failed" if token else "Test POST to endpoint failed",
                        "code": "1200", "description": detail, "param": "auth_request_details" if token else "target",
                        "response": _answer_view(answer)}]}
    return json(body, 400)


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
               if getattr(given, name) is not _UNSET}
    if "events" in changes:
        changes["events"] = tuple(changes["events"])
    if "exception_subaccounts" in changes:
        changes["exception_subaccounts"] = tuple(str(value) for value in changes["exception_subaccounts"])
    return msgspec.structs.replace(record, **changes)


async def _refusal(record: WebhookRecord, networks: Networks) -> Response | None:
    problems = problems_of(record)
    if problems:
        field, reason = problems[0]
        return error(422, f"{field} {reason}", field)
    problem = await check_target(record.target, record.allow_private_targets, networks=networks)
    if problem is None and record.auth_type == "oauth2":
        problem = await check_target(str(record.auth_request_details["url"]), record.allow_private_targets,
                                     networks=networks)
        return error(400, f"auth_request_details.url: {problem}", "auth_request_details") if problem else None
    return error(400, problem, "target") if problem is not None else None


def _sample_types(request: Request) -> list[str]:
    requested = [name.strip() for name in request.query_params.get("events", "").split(",") if name.strip()]
    unknown = [name for name in requested if name not in EVENT_TYPES]
    if unknown:
        raise BadRequest("events", f"engaged has no sample of {', '.join(unknown)}: it produces "
                                   f"{', '.join(EVENT_TYPES)}")
    return requested or list(EVENT_TYPES)
