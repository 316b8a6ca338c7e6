"""`/metrics`, `/livez` and `/readyz` over HTTP. Neither probe calls Kafka or Iterable."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumer.status import Status


def make_app(
    registry: CollectorRegistry,
    status: Status,
    liveness_timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def livez(request: web.Request) -> web.Response:
        if status.live(clock(), liveness_timeout):
            return web.json_response({"live": True})
        reason = "failed" if status.failure() is not None else "poll loop stalled"
        return web.json_response({"live": False, "reason": reason}, status=503)

    async def readyz(request: web.Request) -> web.Response:
        ready, reasons = status.ready()
        return web.json_response({"ready": ready, "reasons": reasons}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:  # noqa: S104 - probes must be reachable from the kubelet
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
