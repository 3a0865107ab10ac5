"""OTLP/HTTP receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip.

Status codes follow the OTLP/HTTP specification: 200 with an
``ExportTraceServiceResponse`` (partial success when spans were rejected),
400 malformed, 413 over the body limit (checked after decompression, so a
small gzip bomb cannot exhaust memory), 415 unsupported media type or
encoding, 503 with ``Retry-After`` when the store is full.  Error bodies are
``google.rpc.Status`` in the request's content type.
"""

from __future__ import annotations

import logging
import math
import zlib

from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.receivers import status as st
from processor.receivers.config import HttpServerConfig
from processor.receivers.decode import MalformedRequest
from processor.receivers.ingest import Encoding, Ingest, Overloaded
from processor.service.httpserver import serve
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)

_MEDIA = {"application/x-protobuf": Encoding.PROTOBUF, "application/json": Encoding.JSON}


class _Refusal(Exception):
    def __init__(self, http_status: int, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retry_after = retry_after


def _inflate(body: bytes, limit: int) -> bytes:
    """gzip-decompress every member of ``body`` (RFC 1952: a gzip file is a series of
    members, each a whole gzip stream), at most ``limit`` bytes in all; more is a 413,
    garbage (data after a member that is not one too) a 400."""
    pieces: list[bytes] = []
    size = 0
    view = memoryview(body)
    pos = 0
    try:
        while True:  # a member per turn; a body has at least one
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            # Input in growing chunks: what follows a member is copied once more (unused_data),
            # so many tiny members cost little and a large one few calls.
            chunk = 256
            while not inflater.eof:
                if pos >= len(body):
                    raise _Refusal(400, st.INVALID_ARGUMENT, "gzip body is truncated")
                piece = inflater.decompress(view[pos:pos + chunk], limit + 1 - size)
                pos += chunk
                size += len(piece)
                if size > limit:
                    raise _Refusal(413, st.RESOURCE_EXHAUSTED, f"decompressed body exceeds {limit} bytes")
                pieces.append(piece)
                chunk = min(chunk * 2, 1 << 20)
            pos = min(pos, len(body)) - len(inflater.unused_data)
            if pos >= len(body):
                return pieces[0] if len(pieces) == 1 else b"".join(pieces)
    except zlib.error as err:
        raise _Refusal(400, st.INVALID_ARGUMENT, f"cannot gunzip the body: {err}") from None


class HttpReceiver:
    transport = "http"

    def __init__(self, component_id: str, config: HttpServerConfig, ingest: Ingest, telemetry: Telemetry) -> None:
        self.component_id = component_id
        self._config = config
        self._ingest = ingest
        self._telemetry = telemetry
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        # Compressed bodies may not exceed the limit either; aiohttp refuses those with 413.
        app = web.Application(client_max_size=self._config.max_request_body_size)
        app.router.add_route("*", self._config.traces_url_path, self._handle)
        # We decompress ourselves, to enforce the limit on the decompressed size.
        self._runner, self.port = await serve(app, self._config.endpoint, auto_decompress=False)
        log.info("OTLP/HTTP receiver %s listening on %s:%d", self.component_id,
                 self._config.endpoint.rsplit(":", 1)[0], self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        encoding = _MEDIA.get(request.content_type, Encoding.PROTOBUF)
        try:
            if request.method != "POST":
                raise _Refusal(405, st.INVALID_ARGUMENT, f"method {request.method} not allowed; use POST")
            if request.content_type not in _MEDIA:
                raise _Refusal(415, st.INVALID_ARGUMENT,
                               f"unsupported Content-Type {request.content_type!r}; "
                               "use application/x-protobuf or application/json")
            body = await self._read_body(request)
            result = await self._ingest.submit(body, encoding, self.component_id, "http")
        except _Refusal as err:
            return self._refuse(err, encoding)
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
        if coding not in ("gzip", "identity", ""):
            raise _Refusal(415, st.INVALID_ARGUMENT, f"unsupported Content-Encoding {coding!r}; use gzip")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refusal(413, st.RESOURCE_EXHAUSTED,
                           f"body exceeds {self._config.max_request_body_size} bytes") from None
        if coding == "gzip":
            body = _inflate(body, self._config.max_request_body_size)
        return body

    def _refuse(self, err: _Refusal, encoding: Encoding) -> web.Response:
        self._telemetry.receiver_requests.labels(self.component_id, "http", str(err.http_status)).inc()
        response = _reply(err.http_status, st.status(err.code, str(err), err.retry_after), encoding)
        if err.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
        if err.http_status == 405:
            response.headers["Allow"] = "POST"
        return response


def _reply(http_status: int, message: object, encoding: Encoding) -> web.Response:
    if encoding is Encoding.JSON:
        text = json_format.MessageToJson(message, indent=None)  # type: ignore[arg-type]
        return web.Response(status=http_status, body=text.encode(), content_type="application/json")
    return web.Response(status=http_status, body=message.SerializeToString(),  # type: ignore[attr-defined]
                        content_type="application/x-protobuf")
