"""Suppression list API (SparkPost's): bulk and single upsert, retrieve, delete, and search with cursor paging."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engaged.api.params import BadRequest, error, integer, json, listed, moment
from engaged.suppression.address import normalise
from engaged.suppression.model import (
    MANUAL,
    TYPES,
    SuppressionEntry,
    SuppressionSearch,
    SuppressionStore,
    SuppressionType,
    source_named,
)

MAX_ENTRIES = 10_000
"""Entries per bulk PUT (SparkPost's limit per request); larger lists are refused, nothing stored."""
MAX_BODY = 8 * 1024 * 1024
MAX_DESCRIPTION = 1024
PER_PAGE = 1000
MAX_PER_PAGE = 10_000
TOTAL_COUNT_CAP = 1_000_000
_MAX_REPORTED = 20
_UPDATED = {"results": {"message": "Suppression List successfully updated"}}


class _Body(Exception):
    def __init__(self, status: int, items: list[dict[str, str]]) -> None:
        super().__init__(status)
        self.status = status
        self.items = items


def _refuse(message: str, param: str | None = None) -> _Body:
    item = {"message": "invalid params", "code": "1200", "description": message}
    return _Body(400, [item] if param is None else [{**item, "param": param}])


def iso(epoch: float) -> str:
    """SparkPost's entry times: `2017-10-01T12:00:00+00:00`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def view(entry: SuppressionEntry) -> dict[str, Any]:
    """An entry as SparkPost shows it (with the deprecated booleans)."""
    return {"recipient": entry.recipient, "type": entry.type, "source": entry.source,
            "description": entry.description, "created": iso(entry.created), "updated": iso(entry.updated),
            "transactional": entry.type == "transactional", "non_transactional": entry.type == "non_transactional"}


def _types_of(item: Mapping[str, Any], where: str) -> list[SuppressionType]:
    """`type`, or the deprecated `transactional` / `non_transactional` booleans (one entry per true one)."""
    kind = item.get("type")
    if kind is not None:
        if kind not in TYPES:
            raise _refuse(f"{where}type must be one of: transactional, non_transactional", f"{where}type")
        return [kind]
    legacy = [name for name in TYPES if name in item]
    for name in legacy:
        if not isinstance(item[name], bool):
            raise _refuse(f"{where}{name} must be true or false", f"{where}{name}")
    chosen = [name for name in legacy if item[name]]
    if not chosen:
        raise _refuse(f"{where}type is required (transactional or non_transactional)", f"{where}type")
    return chosen


def _description_of(item: Mapping[str, Any], where: str) -> str:
    description = item.get("description", "")
    if description is None:
        return ""
    if not isinstance(description, str):
        raise _refuse(f"{where}description must be a string", f"{where}description")
    if len(description) > MAX_DESCRIPTION:
        raise _refuse(f"{where}description is longer than {MAX_DESCRIPTION} characters", f"{where}description")
    return description


def parse_entries(item: Any, where: str, recipient: str | None, now: float) -> list[SuppressionEntry]:
    """The entries one JSON object asks for (`recipient` given by the path for a single PUT)."""
    if not isinstance(item, dict):
        raise _refuse(f"{where.rstrip('.') or 'body'} must be a JSON object", where.rstrip(".") or None)
    if recipient is None:
        given = item.get("recipient", item.get("email"))
        if not isinstance(given, str):
            raise _refuse(f"{where}recipient is required", f"{where}recipient")
        recipient = given
    address = normalise(recipient)
    if address is None:
        raise _refuse(f"{where}recipient is not a valid email address: {recipient[:100]!r}", f"{where}recipient")
    description = _description_of(item, where)
    return [SuppressionEntry(recipient=address, type=kind, source=MANUAL, description=description, created=now,
                             updated=now) for kind in _types_of(item, where)]


async def _read_json(request: Request) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _Body(413, [{"message": "invalid data format/type/length", "code": "1300",
                              "description": f"request body is larger than {MAX_BODY} bytes"}])
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _Body(413, [{"message": "invalid data format/type/length", "code": "1300",
                              "description": f"request body is larger than {MAX_BODY} bytes"}])
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data.strip():
        return None
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as problem:
        raise _refuse(f"request body is not valid JSON: {problem}") from None


def encode_cursor(entry: SuppressionEntry) -> str:
    raw = msgspec.json.encode([entry.updated, entry.recipient, entry.type])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[float, str, str]:
    try:
        updated, recipient, kind = msgspec.json.decode(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)),
                                                       type=tuple[float, str, str])
    except (ValueError, binascii.Error, msgspec.DecodeError):
        raise BadRequest("cursor", "cursor is not one this API issued (start with cursor=initial)") from None
    return updated, recipient, kind


def _listed(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A list parameter given comma-separated, repeated (`types=a&types=b`), or both."""
    getlist = getattr(params, "getlist", None)
    values = getlist(name) if getlist is not None else [params.get(name, "")]
    return tuple(item for value in values for item in listed({name: value}, name))


def search_of(params: Mapping[str, str]) -> SuppressionSearch:
    """SparkPost's search parameters: from, to, domain, sources, types, description(_strict), sort."""
    types = _listed(params, "types")
    unknown = [name for name in types if name not in TYPES]
    if unknown:
        raise BadRequest("types", f"unknown types: {', '.join(unknown)} (known: {', '.join(TYPES)})")
    sources = []
    for name in _listed(params, "sources"):
        source = source_named(name)
        if source is None:
            raise BadRequest("sources", f"unknown source: {name}")
        sources.append(source)
    since, until = moment(params, "from"), moment(params, "to")
    if since is not None and until is not None and since >= until:
        raise BadRequest("from", "from must be before to")
    sort = params.get("sort", "desc").strip().lower() or "desc"
    if sort not in ("asc", "desc"):
        raise BadRequest("sort", "sort must be asc or desc")
    strict = params.get("description_strict", "false").strip().lower()
    if strict not in ("true", "false", "1", "0", ""):
        raise BadRequest("description_strict", "description_strict must be true or false")
    return SuppressionSearch(types=types, sources=tuple(sources), domain=params.get("domain", "").strip(),
                             description=params.get("description", ""), description_strict=strict in ("true", "1"),
                             since=since, until=until, ascending=sort == "asc")


class SuppressionApi:
    """The routes of /api/v1/suppression-list over one SuppressionStore; `changed` hears of every write."""

    def __init__(self, store: SuppressionStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def routes(self) -> list[Route]:
        return [Route("/api/v1/suppression-list", self.bulk, methods=["PUT"]),
                Route("/api/v1/suppression-list", self.search, methods=["GET"]),
                Route("/api/v1/suppression-list/{recipient}", self.put_one, methods=["PUT"]),
                Route("/api/v1/suppression-list/{recipient}", self.get_one, methods=["GET"]),
                Route("/api/v1/suppression-list/{recipient}", self.delete_one, methods=["DELETE"])]

    async def bulk(self, request: Request) -> Response:
        """`{"recipients": [{recipient, type, description}, …]}`: all stored, or none when any is bad."""
        try:
            body = await _read_json(request)
            if not isinstance(body, dict) or not isinstance(body.get("recipients"), list):
                raise _refuse("body must be {\"recipients\": [...]}", "recipients")
            items: list[Any] = body["recipients"]
            if not items:
                raise _refuse("recipients must not be empty", "recipients")
            if len(items) > MAX_ENTRIES:
                raise _refuse(f"at most {MAX_ENTRIES} recipients per request ({len(items)} given); "
                              "send the list in several requests", "recipients")
            entries = self._parse_all(items)
        except _Body as bad:
            return json({"errors": bad.items}, bad.status)
        await self._store.upsert(entries)
        return json(_UPDATED)

    def _parse_all(self, items: Sequence[Any]) -> list[SuppressionEntry]:
        now = self._clock()
        entries: dict[tuple[str, str], SuppressionEntry] = {}
        problems: list[dict[str, str]] = []
        for index, item in enumerate(items):
            try:
                for entry in parse_entries(item, f"recipients[{index}].", None, now):
                    entries[(entry.recipient, entry.type)] = entry  # the last mention of a pair wins
            except _Body as bad:
                problems.extend(bad.items)
        if problems:
            shown = problems[:_MAX_REPORTED]
            if len(problems) > _MAX_REPORTED:
                shown.append({"message": f"… and {len(problems) - _MAX_REPORTED} more invalid entries"})
            raise _Body(400, shown)
        return list(entries.values())

    async def put_one(self, request: Request) -> Response:
        try:
            body = await _read_json(request)
            entries = parse_entries(body, "", request.path_params["recipient"], self._clock())
        except _Body as bad:
            return json({"errors": bad.items}, bad.status)
        await self._store.upsert(entries)
        return json(_UPDATED)

    async def get_one(self, request: Request) -> Response:
        address = normalise(request.path_params["recipient"])
        if address is None:
            return error(400, "recipient is not a valid email address", "recipient")
        try:
            search = msgspec.structs.replace(search_of(request.query_params), recipients=(address,))
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        found = await self._store.search(search)
        if not found:
            return error(404, "Recipient could not be found", message="Recipient could not be found")
        return json({"results": [view(entry) for entry in found]})

    async def delete_one(self, request: Request) -> Response:
        address = normalise(request.path_params["recipient"])
        if address is None:
            return error(400, "recipient is not a valid email address", "recipient")
        try:
            body = await _read_json(request)
        except _Body as bad:
            return json({"errors": bad.items}, bad.status)
        types: Sequence[str] = TYPES
        if isinstance(body, dict) and body.get("type") is not None:
            if body["type"] not in TYPES:
                return error(400, "type must be one of: transactional, non_transactional", "type")
            types = (body["type"],)
        elif body is not None and not isinstance(body, dict):
            return error(400, "body must be a JSON object", None)
        if not await self._store.delete(address, types):
            return error(404, "Recipient could not be found", message="Recipient could not be found")
        return Response(status_code=204)

    async def search(self, request: Request) -> Response:
        """`{"results": [...], "links": {"next": …}, "total_count": n}`; `cursor=initial` starts keyset paging."""
        params = request.query_params
        try:
            search = search_of(params)
            per_page = integer(params, "per_page", 0, 1, MAX_PER_PAGE) or integer(
                params, "limit", PER_PAGE, 1, MAX_PER_PAGE)
            cursor = params.get("cursor", "").strip()
            page = integer(params, "page", 1, 1, 1_000_000)
            after = decode_cursor(cursor) if cursor and cursor != "initial" else None
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        offset = 0 if cursor else (page - 1) * per_page
        page_search = msgspec.structs.replace(search, after=after, offset=offset, limit=per_page)
        found = await self._store.search(page_search)
        total = await self._store.count(search, TOTAL_COUNT_CAP)
        links: dict[str, str] = {}
        if len(found) == per_page:
            rest = [(key, value) for key, value in params.multi_items() if key not in ("cursor", "page")]
            following = [("cursor", encode_cursor(found[-1]))] if cursor else [("page", str(page + 1))]
            links["next"] = f"{request.url.path}?{urlencode([*rest, *following])}"
        return json({"results": [view(entry) for entry in found], "links": links, "total_count": total})
