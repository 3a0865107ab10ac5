"""Operator endpoints: Prometheus ``/metrics`` and ``/healthz`` on one HTTP server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from aiohttp import web

from processor.service.httpserver import serve
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)


class AdminServer:
    def __init__(self, endpoint: str, telemetry: Telemetry, health: Callable[[], dict[str, object]]) -> None:
        self._endpoint = endpoint
        self._telemetry = telemetry
        self._health = health
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        try:
            self._runner, self.port = await serve(app, self._endpoint)
        except OSError as err:
            raise OSError(f"service.telemetry.metrics: {err}") from None
        log.info("metrics on http://%s:%d/metrics", self._endpoint.rsplit(":", 1)[0], self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._telemetry.render(), headers={"Content-Type": Telemetry.content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        body = self._health()
        return web.Response(status=200 if body.get("status") == "ok" else 503, text=json.dumps(body),
                            content_type="application/json")
