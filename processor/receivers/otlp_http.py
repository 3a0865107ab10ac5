"""OTLP/HTTP receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip or zstd.

Status codes follow the OTLP/HTTP specification: 200 with an
``ExportTraceServiceResponse`` (partial success when spans were rejected),
400 malformed, 413 over the body limit (checked after decompression, so a
small gzip or zstd bomb cannot exhaust memory; bodies inflate on a thread of
their own, never on the event loop), 415 unsupported media type or
encoding, 503 with ``Retry-After`` when the store is full.  With ``auth``, a
request without an ``Authorization`` header the authenticator accepts gets
401 before its body is read, with nothing about the expected value.  A body
that does not arrive within ``read_timeout`` gets 408 and the connection is
closed; a client that disconnects mid-body is counted as 499 and logged at
debug level.  Error bodies are ``google.rpc.Status`` in the request's
content type.
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.extensions.factory import ServerAuthenticator
from processor.otlp.compression import zstd
from processor.receivers import status as st
from processor.receivers.config import HttpServerConfig
from processor.receivers.decode import MalformedRequest
from processor.receivers.ingest import Encoding, Ingest, Overloaded
from processor.receivers.tls import listening_line, server_context, warn_tokens_in_clear
from processor.service.httpserver import serve
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)

_MEDIA = {"application/x-protobuf": Encoding.PROTOBUF, "application/json": Encoding.JSON}


CLIENT_CLOSED = "499"  # nginx's code for a client that went away before the response: counted, never sent


class _Refusal(Exception):
    def __init__(self, http_status: int, code: int, message: str, retry_after: float | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after
        self.close = close  # drop the connection after replying (the rest of the body may still trickle in)


class _Disconnected(Exception):
    """The client closed the connection before its body arrived."""


# zstd frames may ask for a window up to 2 GiB; 32 MiB covers every encoder's default (8 MiB at most)
# and zstd --long (128 MiB) bodies are refused rather than allocated for.
_ZSTD_WINDOW_LOG_MAX = 25


def _gzip_member() -> Any:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)


def _zstd_frame() -> Any:
    return zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX})


def _inflate(body: bytes, limit: int) -> bytes:
    """gzip-decompress every member of ``body`` (RFC 1952: a gzip file is a series of
    members, each a whole gzip stream), at most ``limit`` bytes in all; more is a 413,
    garbage (data after a member that is not one too) a 400."""
    try:
        return _decompress(body, limit, _gzip_member, "gzip")
    except zlib.error as err:
        raise _Refusal(400, st.INVALID_ARGUMENT, f"cannot gunzip the body: {err}") from None


def _unzstd(body: bytes, limit: int) -> bytes:
    """zstd-decompress every frame of ``body`` (RFC 8878: frames may follow one another), with
    the same limit and refusals as gzip."""
    try:
        return _decompress(body, limit, _zstd_frame, "zstd")
    except zstd.ZstdError as err:
        raise _Refusal(400, st.INVALID_ARGUMENT, f"cannot decompress the zstd body: {err}") from None


def _decompress(body: bytes, limit: int, new_decompressor: Callable[[], Any], coding: str) -> bytes:
    """Every member (gzip) or frame (zstd) of ``body``, each through a decompressor of the zlib
    interface (``decompress(data, max_length)``, ``eof``, ``unused_data``), at most ``limit``
    bytes in all."""
    pieces: list[bytes] = []
    size = 0
    view = memoryview(body)
    pos = 0
    while True:  # a member per turn; a body has at least one
        decompressor = new_decompressor()
        # Input in growing chunks: what follows a member is copied once more (unused_data),
        # so many tiny members cost little and a large one few calls.
        chunk = 256
        while not decompressor.eof:
            if pos >= len(body):
                raise _Refusal(400, st.INVALID_ARGUMENT, f"{coding} body is truncated")
            piece = decompressor.decompress(view[pos:pos + chunk], limit + 1 - size)
            pos += chunk
            size += len(piece)
            if size > limit:
                raise _Refusal(413, st.RESOURCE_EXHAUSTED, f"decompressed body exceeds {limit} bytes")
            pieces.append(piece)
            chunk = min(chunk * 2, 1 << 20)
        pos = min(pos, len(body)) - len(decompressor.unused_data)
        if pos >= len(body):
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class HttpReceiver:
    transport = "http"

    def __init__(self, component_id: str, config: HttpServerConfig, ingest: Ingest, telemetry: Telemetry,
                 authenticator: ServerAuthenticator | None = None) -> None:
        self.component_id = component_id
        self._config = config
        self._ingest = ingest
        self._telemetry = telemetry
        self._auth = authenticator
        self._runner: web.AppRunner | None = None
        # gzip bodies are inflated here, not on the event loop: 20 MiB of zeros (a bomb at the
        # default limit) takes ~0.2-0.4 s, during which no other request would be answered.  One
        # thread of its own: zlib releases the interpreter lock, so other requests are decoded
        # meanwhile, and concurrent bodies inflate one at a time, so they hold at most one
        # limit's worth of inflated bytes beyond those being decoded.
        self._gunzip: ThreadPoolExecutor | None = None
        self.port = 0

    @property
    def _where(self) -> str:
        return f"receivers.{self.component_id}.protocols.http"

    async def start(self) -> int:
        """Listen; OSError naming the key path and endpoint when the port or the TLS files fail."""
        config = self._config
        ssl_context = server_context(config.tls, f"{self._where}.tls") if config.tls else None
        # Compressed bodies may not exceed the limit either; aiohttp refuses those with 413.
        app = web.Application(client_max_size=config.max_request_body_size)
        app.router.add_route("*", config.traces_url_path, self._handle)
        self._gunzip = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-gunzip")
        try:
            # We decompress ourselves, to enforce the limit on the decompressed size.  aiohttp's
            # keep-alive timer also bounds the wait for a request's headers (see HttpServerConfig).
            self._runner, self.port = await serve(
                app, config.endpoint, ssl_context=ssl_context, auto_decompress=False,
                keepalive_timeout=min(config.read_header_timeout, config.idle_timeout))
        except OSError as err:
            self._gunzip.shutdown(wait=False)
            self._gunzip = None
            raise OSError(f"{self._where}: {err}") from None
        warn_tokens_in_clear(self._where, self._auth, encrypted=ssl_context is not None)
        return self.port

    def describe(self) -> str:
        return listening_line("HTTP", self.component_id, self._config.endpoint, self.port, self._config.tls, self._auth)

    async def stop(self, grace: float) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
            self._runner = None
        if self._gunzip is not None:
            self._gunzip.shutdown(wait=True)
            self._gunzip = None

    async def _handle(self, request: web.Request) -> web.Response:
        encoding = _MEDIA.get(request.content_type, Encoding.PROTOBUF)
        try:
            if self._auth is not None and not self._auth.authenticate(request.headers.get("Authorization")):
                log.debug("%s: refused a request without valid authorization from %s", self._where, request.remote)
                raise _Refusal(401, st.UNAUTHENTICATED, st.UNAUTHENTICATED_MESSAGE)
            if request.method != "POST":
                raise _Refusal(405, st.INVALID_ARGUMENT, f"method {request.method} not allowed; use POST")
            if request.content_type not in _MEDIA:
                raise _Refusal(415, st.INVALID_ARGUMENT,
                               f"unsupported Content-Type {request.content_type!r}; "
                               "use application/x-protobuf or application/json")
            self._ingest.admit()  # short of memory or room: refuse before reading the body
            body = await self._read_body(request)
            result = await self._ingest.submit(body, encoding, self.component_id, "http")
        except _Refusal as err:
            response = self._refuse(err, encoding)
            if err.close:
                await _send_and_close(request, response)
            return response
        except _Disconnected:
            log.debug("%s: client %s disconnected before its body arrived", self._where, request.remote)
            self._telemetry.receiver_requests.labels(self.component_id, "http", CLIENT_CLOSED).inc()
            return web.Response(status=400)  # nobody reads it; aiohttp discards it
        except MalformedRequest as err:
            return self._refuse(_Refusal(400, st.INVALID_ARGUMENT, str(err)), encoding)
        except Overloaded as err:
            return self._refuse(_Refusal(503, st.UNAVAILABLE, str(err), err.retry_after), encoding)
        except Exception:  # component boundary: the server keeps serving
            log.exception("OTLP/HTTP receiver %s: failed to ingest a request", self.component_id)
            return self._refuse(_Refusal(500, st.INTERNAL, "internal error while storing spans"), encoding)
        self._telemetry.receiver_requests.labels(self.component_id, "http", "200").inc()
        response = ExportTraceServiceResponse()
        if result.rejected_spans:
            response.partial_success.rejected_spans = result.rejected_spans
            response.partial_success.error_message = result.error_message
        return _reply(200, response, encoding)

    async def _read_body(self, request: web.Request) -> bytes:
        coding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if coding not in ("gzip", "zstd", "identity", ""):
            raise _Refusal(415, st.INVALID_ARGUMENT, f"unsupported Content-Encoding {coding!r}; use gzip or zstd")
        try:
            async with asyncio.timeout(self._config.read_timeout or None):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refusal(413, st.RESOURCE_EXHAUSTED,
                           f"body exceeds {self._config.max_request_body_size} bytes") from None
        except TimeoutError:
            raise _Refusal(408, st.DEADLINE_EXCEEDED,
                           f"the body did not arrive within read_timeout ({self._config.read_timeout:g}s)",
                           close=True) from None
        except ConnectionError:  # aiohttp: ConnectionResetError("Connection lost")
            raise _Disconnected from None
        if coding in ("gzip", "zstd"):
            assert self._gunzip is not None  # started
            body = await asyncio.get_running_loop().run_in_executor(
                self._gunzip, _inflate if coding == "gzip" else _unzstd, body, self._config.max_request_body_size)
        return body

    def _refuse(self, err: _Refusal, encoding: Encoding) -> web.Response:
        self._telemetry.receiver_requests.labels(self.component_id, "http", str(err.http_status)).inc()
        response = _reply(err.http_status, st.status(err.code, str(err), err.retry_after), encoding)
        if err.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
        if err.http_status == 405:
            response.headers["Allow"] = "POST"
        if err.http_status == 401 and self._auth is not None and self._auth.scheme:
            response.headers["WWW-Authenticate"] = self._auth.scheme
        return response


# Lingering close, as Apache and nginx do it: after the reply, read and discard what the client
# is still sending until it pauses for _LINGER_IDLE or _LINGER_MAX has passed. Closing a socket
# with unread bytes in it sends a reset, and a reset can reach the client before it has read the
# reply, which it then never sees.
_LINGER_IDLE = 0.5
_LINGER_MAX = 2.0


async def _send_and_close(request: web.Request, response: web.Response) -> None:
    """Send ``response`` now, then close the connection: after the handler, aiohttp would keep
    it open up to 10 s more, reading the rest of a body that is being trickled in."""
    await response.prepare(request)
    await response.write_eof()
    transport = request.transport
    if transport is not None and transport.can_write_eof():
        transport.write_eof()  # the reply is complete: FIN now, read what is still in flight
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LINGER_MAX
        try:
            while (left := deadline - loop.time()) > 0:
                async with asyncio.timeout(min(_LINGER_IDLE, left)):
                    if not await request.content.readany():
                        break
        except (TimeoutError, ConnectionError):
            pass
    request.protocol.force_close()


def _reply(http_status: int, message: object, encoding: Encoding) -> web.Response:
    if encoding is Encoding.JSON:
        text = json_format.MessageToJson(message, indent=None)  # type: ignore[arg-type]
        return web.Response(status=http_status, body=text.encode(), content_type="application/json")
    return web.Response(status=http_status, body=message.SerializeToString(),  # type: ignore[attr-defined]
                        content_type="application/x-protobuf")
