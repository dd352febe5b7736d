"""MetricsListener: a node without the api role answers GET /metrics and nothing else."""

from __future__ import annotations

import httpx

from engaged.bus.exposition import MetricsListener


async def test_metrics_are_served_and_every_other_path_is_404() -> None:
    listener = MetricsListener("127.0.0.1:0", lambda: b"engaged_bus_held_events 0.0\n", "text/plain; version=0.0.4")
    await listener.start()
    try:
        async with httpx.AsyncClient() as client:
            metrics = await client.get(f"http://{listener.address}/metrics")
            other = await client.get(f"http://{listener.address}/api/v1/events/message")
        assert metrics.status_code == 200 and metrics.text == "engaged_bus_held_events 0.0\n"
        assert metrics.headers["content-type"].startswith("text/plain")
        assert other.status_code == 404
    finally:
        await listener.stop()
