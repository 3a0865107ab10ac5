"""The ``health_check`` extension: an HTTP endpoint a load balancer or an orchestrator probes.

As the collector's healthcheckextension: ``GET <path>`` on ``endpoint``
answers 200 with ``{"status": "Server available", …}`` once the whole
pipeline has started, and 503 with ``Server not available`` before that and
from the moment a shutdown begins (so a load balancer stops sending while
buffered traces are exported).  ``response_body`` replaces the bodies.
"""

from __future__ import annotations

import json
import logging
import time

from aiohttp import web

from processor.extensions.config import HealthCheckConfig
from processor.service.httpserver import serve

log = logging.getLogger(__name__)


class HealthCheck:
    """Serves the pipeline's readiness; the pipeline calls ``set_ready`` when it has started and stops."""

    def __init__(self, component_id: str, config: HealthCheckConfig) -> None:
        self.component_id = component_id
        self._config = config
        self._runner: web.AppRunner | None = None
        self._ready = False
        self._since = time.time()
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self._config.path, self._health)
        try:
            self._runner, self.port = await serve(app, self._config.endpoint)
        except OSError as err:
            raise OSError(f"extensions.{self.component_id}: {err}") from None
        host = self._config.endpoint.rsplit(":", 1)[0]
        log.info("health check on http://%s:%d%s", host, self.port, self._config.path)

    async def shutdown(self) -> None:
        self._ready = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready, self._since = ready, time.time()

    async def _health(self, request: web.Request) -> web.Response:
        bodies = self._config.response_body
        if bodies is not None:
            text = bodies.healthy if self._ready else bodies.unhealthy
            return web.Response(status=200 if self._ready else 503, text=text)
        body = {"status": "Server available" if self._ready else "Server not available",
                "upSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._since))}
        return web.Response(status=200 if self._ready else 503, text=json.dumps(body),
                            content_type="application/json")
