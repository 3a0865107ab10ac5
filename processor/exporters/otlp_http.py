"""The ``otlp_http`` (alias ``otlphttp``) exporter: OTLP/HTTP with protobuf bodies.

Each attempt POSTs the already-encoded request bytes (gzip or zstd when configured)
to ``traces_endpoint`` or ``endpoint`` + ``/v1/traces``.  This module owns the
aiohttp session and the classification of each response per the OTLP/HTTP
spec (429, 502, 503, 504 and connection failures are retryable, honouring
``Retry-After``); queueing and retries are :mod:`processor.exporters.retry`'s.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import ssl
import time
from collections.abc import Mapping

import aiohttp
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.exporters.base import Exporter
from processor.exporters.config import OtlpHttpExporterConfig, TlsClientConfig
from processor.exporters.retry import Attempt, RetryingSender
from processor.model import ExportPayload
from processor.otlp.compression import zstd
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# Not retryable, and about the body sent (bad data, too large, unprocessable), unlike 401, 403, 404 or 415.
REFUSAL_STATUSES = frozenset({400, 413, 422, 500})
PROTOBUF = "application/x-protobuf"
# Bodies above this are compressed in a worker thread: zlib and zstd release the GIL, the loop stays responsive.
_THREAD_COMPRESS_BYTES = 64 * 1024
# Fast levels: on a LAN the exporter's CPU matters more than the last bytes (zstd 1 still beats gzip 9).
_COMPRESSORS = {"gzip": lambda data: gzip.compress(data, compresslevel=1),
                "zstd": lambda data: zstd.compress(data, level=1)}


def traces_url(config: OtlpHttpExporterConfig) -> str:
    """``traces_endpoint`` as given, else ``endpoint`` + ``/v1/traces`` (as the collector composes it)."""
    if config.traces_endpoint:
        return config.traces_endpoint
    base = config.endpoint  # a URL with its scheme (OtlpHttpExporterConfig checks)
    return base + ("v1/traces" if base.endswith("/") else "/v1/traces")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date -> seconds to wait (None if absent or invalid)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def ssl_context(tls: TlsClientConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Attempt:
    """An Attempt for a non-2xx response."""
    message = f"HTTP {status}: {_status_message(body)}"
    if status in RETRYABLE_STATUSES:
        return Attempt.retry(message, parse_retry_after(headers.get("Retry-After")))
    if status in REFUSAL_STATUSES:
        return Attempt.refusal(message)
    return Attempt.permanent(message)


def _status_message(body: bytes) -> str:
    """The google.rpc.Status message the OTLP spec puts in error bodies, else the raw text."""
    try:
        status = status_pb2.Status.FromString(body)
        if status.message:
            return status.message
    except DecodeError:
        pass
    return body[:200].decode("utf-8", "replace") or "(empty body)"


class OtlpHttpExporter(Exporter):
    def __init__(self, component_id: str, config: OtlpHttpExporterConfig, telemetry: Telemetry) -> None:
        super().__init__(component_id)
        self._config = config
        self._url = traces_url(config)
        self._compress = _COMPRESSORS.get(config.compression)
        self._headers = {**config.headers, "Content-Type": PROTOBUF}
        if self._compress is not None:
            self._headers["Content-Encoding"] = config.compression
        self._ssl: ssl.SSLContext | None = None
        # The name the server's certificate is checked against (and sent as SNI), if not the URL's host.
        self._server_name = config.tls.server_name_override or None
        self._session: aiohttp.ClientSession | None = None
        self._sender = RetryingSender(component_id, config.retry_on_failure, config.sending_queue,
                                      telemetry, self._send_once)

    async def start(self) -> None:
        if self._url.startswith("https://"):
            self._ssl = ssl_context(self._config.tls)
        timeout = aiohttp.ClientTimeout(total=self._config.timeout or None)
        self._session = aiohttp.ClientSession(timeout=timeout)
        await self._sender.start()

    async def export(self, payload: ExportPayload) -> None:
        await self._sender.submit(payload)

    async def shutdown(self, timeout: float) -> None:
        await self._sender.shutdown(timeout)
        if self._session is not None:
            await self._session.close()

    async def _send_once(self, data: bytes) -> Attempt:
        if self._session is None:
            raise RuntimeError(f"exporter {self.component_id}: start() was not called")
        body = await self._encode(data)
        try:
            async with self._session.post(self._url, data=body, headers=self._headers,
                                          ssl=self._ssl if self._ssl is not None else True,
                                          server_hostname=self._server_name) as resp:
                payload = await resp.read()
                if resp.status // 100 != 2:
                    return classify_response(resp.status, resp.headers, payload)
        except (aiohttp.ClientError, TimeoutError) as err:
            # The server may never have seen the request: retryable, as the spec says.
            return Attempt.retry(f"POST {self._url}: {type(err).__name__}: {err}")
        return Attempt.success(rejected=self._rejected(payload, resp.content_type))

    async def _encode(self, data: bytes) -> bytes:
        if self._compress is None:
            return data
        if len(data) < _THREAD_COMPRESS_BYTES:
            return self._compress(data)
        return await asyncio.to_thread(self._compress, data)

    def _rejected(self, body: bytes, content_type: str) -> int:
        if not body or content_type != PROTOBUF:
            return 0
        try:
            partial = ExportTraceServiceResponse.FromString(body).partial_success
        except DecodeError:
            log.warning("exporter %s: undecodable success response from %s", self.component_id, self._url)
            return 0
        if partial.rejected_spans or partial.error_message:
            log.warning("exporter %s: server rejected %d spans: %s", self.component_id,
                        partial.rejected_spans, partial.error_message)
        return partial.rejected_spans
