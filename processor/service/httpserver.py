"""Starting an aiohttp application on a ``host:port`` endpoint (port 0: any free port), over TLS when given
an ``ssl.SSLContext``."""

from __future__ import annotations

import os
import ssl
from typing import Any

from aiohttp import web


async def serve(app: web.Application, endpoint: str, ssl_context: ssl.SSLContext | None = None,
                **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start ``app`` listening on ``endpoint``; returns its runner (for cleanup) and the bound port.

    A port that cannot be bound is an OSError saying ``cannot listen on <endpoint>: <reason>``.
    """
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    host, port = endpoint.rsplit(":", 1)
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise OSError(f"cannot listen on {endpoint}: {reason}") from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
