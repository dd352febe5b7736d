"""Metrics API: GET /api/v1/metrics/deliverability and /deliverability/campaign with SparkPost's metric names."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engaged.api.params import BadRequest, error, json, listed, moment
from engaged.events.query import METRICS
from engaged.types import EventQuery, EventStore


class MetricsApi:
    """Deliverability counts aggregated in the store (one SQL statement per request)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def routes(self) -> list[Route]:
        return [Route("/api/v1/metrics/deliverability", self.deliverability, methods=["GET"]),
                Route("/api/v1/metrics/deliverability/campaign", self.by_campaign, methods=["GET"])]

    async def deliverability(self, request: Request) -> Response:
        """`{"results": [{metric: count, …}]}` over every matching event."""
        return await self._answer(request, by_campaign=False)

    async def by_campaign(self, request: Request) -> Response:
        """`{"results": [{"campaign_id": …, metric: count, …}, …]}`, one entry per campaign."""
        return await self._answer(request, by_campaign=True)

    async def _answer(self, request: Request, *, by_campaign: bool) -> Response:
        params = request.query_params
        try:
            names = listed(params, "metrics") or tuple(METRICS)
            unknown = [name for name in names if name not in METRICS]
            if unknown:
                raise BadRequest("metrics", f"unknown metrics: {', '.join(unknown)}")
            since, until = moment(params, "from"), moment(params, "to")
            if since is not None and until is not None and since >= until:
                raise BadRequest("from", "from must be before to")
        except BadRequest as bad:
            return error(400, bad.message, bad.param)
        query = EventQuery(campaigns=listed(params, "campaigns"), since=since, until=until)
        rows = await self._store.aggregate(query, by_campaign=by_campaign)
        results = []
        for row in rows:
            counts = {name: row.counts[name] for name in names}
            results.append({"campaign_id": row.campaign_id, **counts} if by_campaign else counts)
        return json({"results": results})
