"""Metrics API: SparkPost's /api/v1/metrics endpoints (summary, group-bys, time series, reasons, lists)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engaged.api.filters import FILTER_FIELDS, SCHEMA, InvalidFilters, parse_query_filters
from engaged.api.params import BadRequest, integer, json
from engaged.api.search import parse_moment_in, zone_of
from engaged.events.dialect import Dialect
from engaged.events.metrics import (
    ADD_ON_METRICS,
    BOUNCE_CATEGORY_IDS,
    BOUNCE_CLASSES,
    GROUPS,
    METRIC_NAMES,
)
from engaged.types import EventQuery, EventReports, FieldFilter

_FILTERS = FILTER_FIELDS
"""SparkPost's simple metrics filters and the event field each selects (exact values)."""
_REFUSED = {
    "subject_campaigns": "subject campaigns are a SparkPost Deliverability Add-On feature engaged does not have",
}
_COMMON = frozenset({"from", "to", "timezone", "delimiter", "metrics", "precision", "limit", "order_by", *_FILTERS,
                     *_REFUSED, "query_filters"})
_PRECISIONS = {"1min": 60, "5min": 300, "15min": 900, "hour": 3600, "12hr": 43200, "day": 86400, "week": 604800}
_UTC_PRECISIONS = ("day", "week", "month")
_MAX_BUCKETS = 10000
_SEP = "\x1f"
_LISTS: dict[str, str] = {
    "campaigns": "campaign_id", "domains": "recipient_domain", "ip-pools": "ip_pool", "sending-ips": "sending_ip",
    "sending-domains": "sending_domain", "templates": "template_id", "mailbox-providers": "mailbox_provider",
    "mailbox-provider-regions": "mailbox_provider_region",
}
"""`/api/v1/metrics/<list>`: the event field whose distinct values are listed (SparkPost's `results.<list>`)."""


def _joined(*fields: str) -> Callable[[Dialect], str]:
    return lambda d: f" || '{_SEP}' || ".join(f"COALESCE({d.field(name)}, '')" for name in fields)


_REASONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    # path: (types, group fields, allowed metrics, default metrics)
    "bounce-reason": (("bounce", "out_of_band"), ("reason", "bounce_class"),
                      ("count_bounce", "count_inband_bounce", "count_outofband_bounce", "count_admin_bounce"),
                      ("count_bounce", "count_inband_bounce", "count_outofband_bounce")),
    "bounce-reason/domain": (("bounce", "out_of_band"), ("reason", "bounce_class", "recipient_domain"),
                             ("count_bounce", "count_inband_bounce", "count_outofband_bounce", "count_admin_bounce"),
                             ("count_bounce", "count_inband_bounce", "count_outofband_bounce")),
    "bounce-classification": (("bounce", "out_of_band"), ("bounce_class",),
                              ("count_bounce", "count_inband_bounce", "count_outofband_bounce", "count_admin_bounce"),
                              ("count_bounce", "count_inband_bounce", "count_outofband_bounce")),
    "rejection-reason": (("policy_rejection", "generation_rejection", "generation_failure"), ("reason", "type"),
                         ("count_rejected",), ("count_rejected",)),
    "rejection-reason/domain": (("policy_rejection", "generation_rejection", "generation_failure"),
                                ("reason", "type", "recipient_domain"), ("count_rejected",), ("count_rejected",)),
    "delay-reason": (("delay",), ("reason",), ("count_delayed", "count_delayed_first"),
                     ("count_delayed", "count_delayed_first")),
    "delay-reason/domain": (("delay",), ("reason", "recipient_domain"), ("count_delayed", "count_delayed_first"),
                            ("count_delayed", "count_delayed_first")),
    "link-name": (("click",), ("target_link_name",), ("count_clicked", "count_raw_clicked"),
                  ("count_clicked", "count_raw_clicked")),
}
"""Reason endpoints: the event types they count, the fields they group by, and their metrics."""
_REJECTION_TYPES = {"policy_rejection": (1, "Policy Rejection"), "generation_rejection": (2, "Generation Rejection"),
                    "generation_failure": (3, "Generation Failure")}


def _split(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    delimiter = params.get("delimiter", ",") or ","
    return tuple(item.strip() for item in params.get(name, "").split(delimiter) if item.strip())


class MetricsApi:
    """Every SparkPost metrics endpoint, each one SQL statement over the store (grouped in the database)."""

    def __init__(self, store: EventReports) -> None:
        self._store = store

    def routes(self) -> list[Route]:
        base = "/api/v1/metrics"
        routes = [Route(f"{base}/", self.root, methods=["GET"]), Route(base, self.root, methods=["GET"]),
                  Route(f"{base}/deliverability", self.summary, methods=["GET"]),
                  Route(f"{base}/deliverability/time-series", self.time_series, methods=["GET"]),
                  Route(f"{base}/deliverability/query-filters-schema", self.schema, methods=["GET"])]
        routes += [Route(f"{base}/deliverability/{name}", self._grouped(name), methods=["GET"]) for name in GROUPS]
        routes += [Route(f"{base}/deliverability/{name}", self._reasons(name), methods=["GET"]) for name in _REASONS]
        routes.append(Route(f"{base}/deliverability/attempt", self.attempt, methods=["GET"]))
        routes += [Route(f"{base}/{name}", self._list(name), methods=["GET"]) for name in _LISTS]
        return routes

    async def root(self, request: Request) -> Response:
        """SparkPost's discoverability links."""
        names = ["deliverability", *_LISTS]
        return json({"results": {}, "links": [{"href": f"/api/v1/metrics/{name}", "rel": name, "method": "GET"}
                                              for name in names]})

    async def schema(self, request: Request) -> Response:
        """The JSON Schema `query_filters` must follow."""
        return json({"results": SCHEMA})

    async def summary(self, request: Request) -> Response:
        """`{"results": [{metric: count, …}]}` over every matching event."""
        try:
            query, names, _ = self._parse(request.query_params, set())
        except BadRequest as bad:
            return bad.answer()
        (row,) = await self._store.aggregate(query, names=names)
        return json({"results": [row.counts], "links": [
            {"href": "/api/v1/metrics/deliverability", "rel": "deliverability", "method": "GET"}]})

    def _grouped(self, name: str) -> Callable[[Request], Any]:
        key, group = GROUPS[name]

        async def answer(request: Request) -> Response:
            try:
                query, names, params = self._parse(request.query_params, {"limit", "order_by"})
                limit = integer(params, "limit", 1000, 1, 10000)
                order_by = params.get("order_by", "").strip() or None
                if order_by is not None and order_by not in names:
                    raise BadRequest("order_by", "order_by must name one of the requested metrics")
            except BadRequest as bad:
                return bad.answer()
            rows = await self._store.aggregate(query, by_campaign=name == "campaign",
                                               group=None if name == "campaign" else group, names=names,
                                               order_by=order_by, limit=limit)
            return json({"results": [{key: row.campaign_id, **row.counts} for row in rows]})

        return answer

    async def time_series(self, request: Request) -> Response:
        """`{"results": [{"ts": …, metric: count, …}]}`, one entry per `precision` step from `from` to `to`."""
        try:
            query, names, params = self._parse(request.query_params, set(), rounded=False)
            precision = params.get("precision", "").strip() or "hour"
            if precision not in (*_PRECISIONS, "month"):
                raise BadRequest("precision", f"precision must be one of {', '.join([*_PRECISIONS, 'month'])}")
            if query.since is None:
                raise BadRequest("from", "from is required for a time series")
            zone = UTC if precision in _UTC_PRECISIONS else zone_of(params)
            until = query.until if query.until is not None else _now()
            steps = _steps(query.since, until, precision, zone)
        except BadRequest as bad:
            return bad.answer()
        if precision == "month":
            def group(d: Dialect) -> str:
                return d.month
            label = {start: datetime.fromtimestamp(start, UTC).strftime("%Y-%m") for start in steps}
        else:
            width = _PRECISIONS[precision]
            offset = _offset(zone, query.since) + (3 * 86400 if precision == "week" else 0)  # weeks start Monday

            def group(d: Dialect) -> str:
                return d.bucket.format(offset=offset, width=width)
            label = {start: str(math.floor((start + offset) / width)) for start in steps}
        rows = {row.campaign_id: row.counts for row in await self._store.aggregate(
            msgspec_replace(query, since=steps[0], until=until), group=group, names=names, limit=_MAX_BUCKETS)}
        zero = dict.fromkeys(names, 0)
        results = [{**rows.get(label[start], zero), "ts": datetime.fromtimestamp(start, zone).isoformat()}
                   for start in steps]
        return json({"results": results})

    def _reasons(self, name: str) -> Callable[[Request], Any]:
        types, fields, allowed, default = _REASONS[name]

        async def answer(request: Request) -> Response:
            try:
                query, names, params = self._parse(request.query_params, {"limit"}, allowed=allowed,
                                                   default=default)
                limit = integer(params, "limit", 1000, 1, 10000)
            except BadRequest as bad:
                return bad.answer()
            query = msgspec_replace(query, types=types)
            rows = await self._store.aggregate(query, group=_joined(*fields), names=names,
                                               order_by=names[0], limit=limit)
            return json({"results": [_reason_row(fields, row.campaign_id.split(_SEP), row.counts)
                                     for row in rows]})

        return answer

    async def attempt(self, request: Request) -> Response:
        """Deliveries by attempt number: "1", "2" and "3+" (SparkPost's buckets)."""
        try:
            query, _, _ = self._parse(request.query_params, set(), allowed=("count_delivered",),
                                      default=("count_delivered",))
        except BadRequest as bad:
            return bad.answer()

        def group(d: Dialect) -> str:
            retries = f"CAST(NULLIF({d.field('num_retries')}, '') AS INTEGER)"
            return f"CASE WHEN {retries} >= 2 THEN '3+' ELSE CAST({retries} + 1 AS TEXT) END"

        rows = await self._store.aggregate(msgspec_replace(query, types=("delivery",)), group=group,
                                           names=["count_delivered"])
        return json({"results": [{"attempt": row.campaign_id, "count_delivered": row.counts["count_delivered"]}
                                 for row in rows if row.campaign_id]})

    def _list(self, name: str) -> Callable[[Request], Any]:
        field = _LISTS[name]

        async def answer(request: Request) -> Response:
            params = request.query_params
            try:
                _refuse_unknown(params, {"from", "to", "timezone", "match", "limit"})
                zone = zone_of(params)
                since, until = parse_moment_in(params, "from", zone), parse_moment_in(params, "to", zone)
                limit = integer(params, "limit", 1000, 1, 10000)
            except BadRequest as bad:
                return bad.answer()
            match = params.get("match", "").strip()
            fields = (FieldFilter(field, (match,), keyword=True),) if match else ()
            query = EventQuery(since=since, until=until, fields=fields)
            rows = await self._store.aggregate(query, group=lambda d: d.field(field), names=["count_targeted"],
                                               limit=limit + 1)
            values = [row.campaign_id for row in rows if row.campaign_id][:limit]
            return json({"results": {name: values}})

        return answer

    def _parse(self, params: Mapping[str, str], extra: set[str], *, rounded: bool = True,
               allowed: tuple[str, ...] | None = None,
               default: tuple[str, ...] | None = None) -> tuple[EventQuery, list[str], Mapping[str, str]]:
        _refuse_unknown(params, _COMMON | extra)
        advanced = params.get("query_filters", "").strip()
        for name, reason in _REFUSED.items():
            if params.get(name) and not advanced:  # SparkPost ignores the simple filters beside query_filters
                raise BadRequest(name, reason)
        names = list(_split(params, "metrics")) or list(default or METRIC_NAMES)
        refused = [name for name in names if name in ADD_ON_METRICS]
        if refused:
            raise BadRequest("metrics", f"{', '.join(refused)}: SparkPost Deliverability Add-On metrics (seed and "
                                        "panel mailboxes) that engaged has no data for")
        unknown = [name for name in names if name not in (allowed or METRIC_NAMES)]
        if unknown:
            raise BadRequest("metrics", f"unknown metrics: {', '.join(unknown)} (known: "
                                        f"{', '.join(allowed or METRIC_NAMES)})")
        zone = zone_of(params)
        since, until = parse_moment_in(params, "from", zone), parse_moment_in(params, "to", zone)
        precision = params.get("precision", "").strip()
        if rounded and precision:
            if precision not in ("1min", "5min", "15min", "hour", "day"):
                raise BadRequest("precision", "precision must be 1min, 5min, 15min, hour or day")
            width = _PRECISIONS[precision]
            if since is not None:
                since = math.floor(since / width) * width
            if until is not None:
                until = math.ceil(until / width) * width
        if since is not None and until is not None and since >= until:
            raise BadRequest("from", "from must be before to")
        if advanced:
            try:
                groups = parse_query_filters(advanced)
            except InvalidFilters as invalid:
                raise BadRequest("query_filters", f"query_filters does not follow the schema "
                                                  f"(/api/v1/metrics/deliverability/query-filters-schema): {invalid}",
                                 invalid.errors) from None
            return EventQuery(since=since, until=until, groups=groups), names, params
        fields = tuple(FieldFilter(field, values) for name, field in _FILTERS.items()
                       if (values := _split(params, name)))
        return EventQuery(since=since, until=until, fields=fields), names, params


def msgspec_replace(query: EventQuery, **changes: Any) -> EventQuery:
    replaced: EventQuery = msgspec.structs.replace(query, **changes)
    return replaced


def _refuse_unknown(params: Mapping[str, str], known: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadRequest(unknown[0], f"Unsupported parameter '{unknown[0]}' (supported: {', '.join(sorted(known))})")


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _offset(zone: tzinfo, at: float) -> int:
    delta = datetime.fromtimestamp(at, zone).utcoffset() or timedelta(0)
    return int(delta.total_seconds())


def _steps(since: float, until: float, precision: str, zone: tzinfo) -> list[float]:
    """The start of every `precision` step from the one holding `since` up to `until` (at most _MAX_BUCKETS)."""
    starts: list[float] = []
    if precision == "month":
        day = datetime.fromtimestamp(since, UTC)
        month = datetime(day.year, day.month, 1, tzinfo=UTC)
        while month.timestamp() < until and len(starts) <= _MAX_BUCKETS:
            starts.append(month.timestamp())
            month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    else:
        width = _PRECISIONS[precision]
        offset = _offset(zone, since) + (3 * 86400 if precision == "week" else 0)
        step = math.floor((since + offset) / width) * width - offset
        while step < until and len(starts) <= _MAX_BUCKETS:
            starts.append(float(step))
            step += width
    if len(starts) > _MAX_BUCKETS:
        raise BadRequest("precision", f"more than {_MAX_BUCKETS} steps between from and to; choose a coarser precision")
    if not starts:
        raise BadRequest("from", "from must be before to")
    return starts


def _reason_row(fields: tuple[str, ...], values: list[str], counts: dict[str, int]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for field, value in zip(fields, values, strict=False):
        if field == "bounce_class":
            name, description, category = BOUNCE_CLASSES.get(value, BOUNCE_CLASSES["1"])
            row.update(bounce_class_name=name, bounce_class_description=description,
                       bounce_category_id=BOUNCE_CATEGORY_IDS[category], bounce_category_name=category,
                       classification_id=int(value) if value.isdigit() else 1)
        elif field == "type":
            category_id, kind = _REJECTION_TYPES.get(value, (1, "Policy Rejection"))
            row.update(rejection_category_id=category_id, rejection_type=kind)
        elif field == "recipient_domain":
            row["domain"] = value
        elif field == "target_link_name":
            row["link_name"] = value
        else:
            row[field] = value
    return {**row, **counts}
