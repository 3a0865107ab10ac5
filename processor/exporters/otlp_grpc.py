"""The ``otlp_grpc`` (alias ``otlp``) exporter: OTLP over gRPC, one attempt at a time.

Payloads are already-encoded ``ExportTraceServiceRequest`` bytes, so the call
is a generic unary RPC with an identity request serializer: the bytes go on the
wire as they are, never re-encoded.  This module owns the channel and the
classification of each attempt's result per the OTLP spec; queueing and
retries are :mod:`processor.exporters.retry`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.exporters.base import Exporter
from processor.exporters.config import KeepaliveClientConfig, OtlpExporterConfig, TlsClientConfig
from processor.exporters.retry import Attempt, RetryingSender
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Retryable per the OTLP spec; RESOURCE_EXHAUSTED only when the server sent RetryInfo.
RETRYABLE_CODES = frozenset({
    grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS,
})
# Not retryable, and about the data sent (malformed, unprocessable, too large without RetryInfo), unlike
# UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND or UNIMPLEMENTED, which every part of it would get too.
REFUSAL_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED,
})
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """``https://host:port`` -> (``host:port``, forces TLS), as the collector's configgrpc."""
    for scheme in ("https://", "http://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme):].rstrip("/"), scheme == "https://"
    return endpoint, False


def retry_delay(trailers: grpc.aio.Metadata | None) -> float | None:
    """Seconds from a google.rpc.RetryInfo in the ``grpc-status-details-bin`` trailer, if any."""
    for key, value in trailers or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def classify_error(err: grpc.aio.AioRpcError) -> Attempt:
    code = err.code()
    message = f"gRPC {code.name}: {err.details()}"
    try:
        throttle = retry_delay(err.trailing_metadata())
    except DecodeError:  # a malformed details trailer must not hide the status itself
        log.warning("ignoring malformed %s trailer (%s)", STATUS_DETAILS_KEY, message)
        throttle = None
    if code in RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and throttle is not None):
        return Attempt.retry(message, throttle)
    if code in REFUSAL_CODES:
        return Attempt.refusal(message)
    return Attempt.permanent(message)


def channel_credentials(tls: TlsClientConfig) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca_file), private_key=read(tls.key_file),
        certificate_chain=read(tls.cert_file))


def keepalive_options(keepalive: KeepaliveClientConfig | None) -> list[tuple[str, int]]:
    """grpcio channel arguments for configgrpc's client ``keepalive`` (Go's keepalive.ClientParameters)."""
    if keepalive is None:
        return []
    return [("grpc.keepalive_time_ms", max(1, round(keepalive.time * 1000))),
            ("grpc.keepalive_timeout_ms", max(1, round(keepalive.timeout * 1000))),
            ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_stream)),
            # grpcio otherwise stops pinging after two pings without data in between.
            ("grpc.http2.max_pings_without_data", 0)]


class OtlpGrpcExporter(Exporter):
    def __init__(self, component_id: str, config: OtlpExporterConfig, telemetry: Telemetry) -> None:
        super().__init__(component_id)
        self._config = config
        self._target, self._force_tls = grpc_target(config.endpoint)
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.UnaryUnaryMultiCallable | None = None
        self._sender = RetryingSender(component_id, config.retry_on_failure, config.sending_queue,
                                      telemetry, self._send_once)

    async def start(self) -> None:
        self._channel = self._open_channel()
        self._call = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None,  # identity: payload bytes are the request
            response_deserializer=ExportTraceServiceResponse.FromString)
        await self._sender.start()

    async def export(self, payload: ExportPayload) -> None:
        await self._sender.submit(payload)

    async def shutdown(self, timeout: float) -> None:
        await self._sender.shutdown(timeout)
        if self._channel is not None:
            await self._channel.close()

    def _open_channel(self) -> grpc.aio.Channel:
        retry = self._config.retry_on_failure
        # gRPC reconnects to a down server on its own backoff (up to 120s by default),
        # failing calls fast meanwhile; bound it by ours so a recovered backend is
        # noticed at our retry pace, not minutes later.
        options = [
            ("grpc.initial_reconnect_backoff_ms", max(1, int(retry.initial_interval * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(retry.max_interval * 1000))),
            ("grpc.max_send_message_length", -1),
            *keepalive_options(self._config.keepalive),
        ]
        tls = self._config.tls
        if tls.insecure and not self._force_tls:
            return grpc.aio.insecure_channel(self._target, options=options)
        if tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", tls.server_name_override))
        # tls.insecure_skip_verify is refused by the config: grpcio always verifies.
        return grpc.aio.secure_channel(self._target, channel_credentials(tls), options=options)

    async def _send_once(self, data: bytes) -> Attempt:
        if self._call is None:
            raise RuntimeError(f"exporter {self.component_id}: start() was not called")
        try:
            response: ExportTraceServiceResponse = await self._call(
                data, timeout=self._config.timeout or None, metadata=self._metadata,
                compression=self._compression)
        except grpc.aio.AioRpcError as err:
            return classify_error(err)
        partial = response.partial_success
        if partial.rejected_spans or partial.error_message:
            log.warning("exporter %s: server rejected %d spans: %s", self.component_id,
                        partial.rejected_spans, partial.error_message)
        return Attempt.success(rejected=partial.rejected_spans)
