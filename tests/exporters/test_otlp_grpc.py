"""The otlp_grpc exporter against a real gRPC sink."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc
import pytest

from processor.exporters.config import OtlpExporterConfig
from processor.exporters.factory import build_exporter
from processor.exporters.otlp_grpc import OtlpGrpcExporter, classify_error, grpc_target
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry
from tests.support.exporters import FAST_RETRY, make_request, metric, payload_of
from tests.support.otlp_sink import ByteCountingProxy, OtlpGrpcSink, retry_info_status

CID = "otlp/backend"


def exporter(port: int, telemetry: Telemetry, **overrides: Any) -> OtlpGrpcExporter:
    config = {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, "timeout": 2,
              "retry_on_failure": FAST_RETRY, **overrides}
    built = build_exporter(CID, OtlpExporterConfig(**config), telemetry)
    assert isinstance(built, OtlpGrpcExporter)
    return built


def run(exp: OtlpGrpcExporter, payloads: list[ExportPayload],
        between: Callable[[], Awaitable[None]] | None = None, shutdown_timeout: float = 10) -> None:
    """Start, export everything, optionally do something, then shut down (draining)."""
    async def main() -> None:
        await exp.start()
        for p in payloads:
            await exp.export(p)
        if between is not None:
            await between()
        await exp.shutdown(shutdown_timeout)

    asyncio.run(main())


def span_ids(sink: OtlpGrpcSink) -> list[bytes]:
    return [span.span_id for span in sink.spans()]


def test_sends_the_payload_bytes_as_they_are(grpc_sink: OtlpGrpcSink, telemetry: Telemetry) -> None:
    payloads = [payload_of(make_request(first_trace=i * 10, traces=3)) for i in range(1, 4)]
    run(exporter(grpc_sink.port, telemetry), payloads)
    assert sorted(r.raw for r in grpc_sink.received) == sorted(p.data for p in payloads)
    assert len(grpc_sink.spans()) == 18
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 18


def test_unavailable_is_retried_and_every_span_arrives_once(grpc_sink: OtlpGrpcSink,
                                                            telemetry: Telemetry) -> None:
    grpc_sink.fail_next(3, grpc.StatusCode.UNAVAILABLE)
    payloads = [payload_of(make_request(first_trace=i * 10, traces=2)) for i in range(1, 6)]
    run(exporter(grpc_sink.port, telemetry), payloads)
    ids = span_ids(grpc_sink)
    assert len(ids) == len(set(ids)) == 20
    assert len(grpc_sink.received) == 8
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 3
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 0


def test_retry_info_delay_is_honoured(grpc_sink: OtlpGrpcSink, telemetry: Telemetry) -> None:
    grpc_sink.fail_next(1, grpc.StatusCode.UNAVAILABLE, retry_after=0.3)
    run(exporter(grpc_sink.port, telemetry), [payload_of(make_request())])
    first, second = grpc_sink.received
    assert second.at - first.at >= 0.3
    assert len(grpc_sink.spans()) == 2


def test_resource_exhausted_is_retried_only_with_retry_info(grpc_sink: OtlpGrpcSink,
                                                            telemetry: Telemetry) -> None:
    grpc_sink.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.05)
    grpc_sink.fail_next(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    exp = exporter(grpc_sink.port, telemetry, sending_queue={"enabled": False})
    run(exp, [payload_of(make_request(first_trace=1)), payload_of(make_request(first_trace=2))])
    # The first payload was throttled, then refused without RetryInfo: not retried, but sent
    # in two parts (what is too large for a server goes through in smaller ones), which it took.
    assert [r.failed_with for r in grpc_sink.received] == [
        grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED, None, None, None]
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 1
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 0
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                                  grpc.StatusCode.UNIMPLEMENTED])
def test_non_retryable_status_is_not_retried(grpc_sink: OtlpGrpcSink, telemetry: Telemetry,
                                              code: grpc.StatusCode) -> None:
    grpc_sink.fail_next(1, code)
    run(exporter(grpc_sink.port, telemetry), [payload_of(make_request())])
    assert len(grpc_sink.received) == 1
    assert grpc_sink.spans() == []
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 2


def test_only_the_span_the_downstream_refuses_alone_is_dropped(grpc_sink: OtlpGrpcSink, telemetry: Telemetry,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    req = make_request(first_trace=1, traces=3, spans_per_trace=3)
    req.MergeFrom(make_request(first_trace=10, traces=2, spans_per_trace=2, service="payments"))
    poison = req.resource_spans[1].scope_spans[0].spans[2]
    poison.name = "poison"
    grpc_sink.refuse_containing(b"poison")
    settled: list[int] = []
    payload = dataclasses.replace(payload_of(req), on_settled=lambda: settled.append(1))
    run(exporter(grpc_sink.port, telemetry), [payload])
    good = sorted(s.SerializeToString() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans
                  if s.name != "poison")
    assert sorted(s.SerializeToString() for s in grpc_sink.spans()) == good
    assert grpc_sink.spans().count(poison) == 0
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 1
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 12
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert settled == [1]
    # Each span reached the sink's parser at most once on its own; the refused one is logged once.
    dropped = [r.getMessage() for r in caplog.records if "refused on their own" in r.getMessage()]
    assert dropped == [f"exporter {CID}: dropping 1 of 13 spans the downstream refused on their own: "
                       f"trace {poison.trace_id.hex()} span {poison.span_id.hex()}: gRPC INVALID_ARGUMENT: "
                       f"the request holds b'poison', which this sink refuses"]


def test_backend_down_for_a_while_then_up_loses_nothing(grpc_sink: OtlpGrpcSink,
                                                        telemetry: Telemetry) -> None:
    payloads = [payload_of(make_request(first_trace=i * 10, traces=5)) for i in range(1, 21)]
    exp = exporter(grpc_sink.port, telemetry, sending_queue={"num_consumers": 4, "queue_size": 50})

    async def main() -> None:
        await exp.start()
        await exp.export(payloads[0])
        # Stop only once the first payload is acknowledged: a request the sink recorded but
        # could not answer is retried, and would (rightly) arrive twice.
        while metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) < 10:
            await asyncio.sleep(0.01)
        grpc_sink.stop()
        for p in payloads[1:]:
            await exp.export(p)
        await asyncio.sleep(0.5)  # down: every attempt fails, consumers keep retrying
        grpc_sink.restart()
        await grpc_sink.wait_for_spans_async(200, timeout=10)
        await exp.shutdown(5)

    asyncio.run(main())
    ids = span_ids(grpc_sink)
    assert len(ids) == len(set(ids)) == 200
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) > 0
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 200


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_compression_on_the_wire(grpc_sink: OtlpGrpcSink, telemetry: Telemetry, compression: str) -> None:
    # Highly compressible spans: the bytes crossing the proxy show whether gzip was applied.
    payload = payload_of(make_request(traces=20, filler="abc" * 1000))
    proxy = ByteCountingProxy(grpc_sink.port)
    try:
        run(exporter(proxy.port, telemetry, compression=compression), [payload])
    finally:
        proxy.close()
    assert grpc_sink.received[0].raw == payload.data
    if compression == "gzip":
        assert proxy.upstream_bytes < len(payload.data) / 10
    else:
        assert proxy.upstream_bytes > len(payload.data)


def test_headers_arrive_as_lowercase_metadata(grpc_sink: OtlpGrpcSink, telemetry: Telemetry) -> None:
    exp = exporter(grpc_sink.port, telemetry, headers={"X-Tenant": "acme", "authorization": "Bearer t"})
    run(exp, [payload_of(make_request())])
    headers = grpc_sink.received[0].headers
    assert headers["x-tenant"] == "acme"
    assert headers["authorization"] == "Bearer t"


def test_http_scheme_prefix_is_accepted(grpc_sink: OtlpGrpcSink, telemetry: Telemetry) -> None:
    run(exporter(grpc_sink.port, telemetry, endpoint=f"http://127.0.0.1:{grpc_sink.port}"),
        [payload_of(make_request())])
    assert len(grpc_sink.spans()) == 2


def test_grpc_target_strips_schemes() -> None:
    assert grpc_target("collector:4317") == ("collector:4317", False)
    assert grpc_target("http://collector:4317") == ("collector:4317", False)
    assert grpc_target("https://collector:4317/") == ("collector:4317", True)


def test_per_attempt_timeout_is_retryable(telemetry: Telemetry) -> None:
    # A server that never answers: each attempt hits the deadline, retries stop at max_elapsed_time.
    started = time.monotonic()
    slow = _HangingServer()
    try:
        exp = exporter(slow.port, telemetry, timeout=0.1,
                       retry_on_failure={**FAST_RETRY, "max_elapsed_time": 0.5})
        run(exp, [payload_of(make_request())])
    finally:
        slow.stop()
    assert time.monotonic() - started < 5
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) >= 1
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 2


class _HangingServer:
    """A gRPC server whose Export handler sleeps past every client deadline."""

    def __init__(self) -> None:
        def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
            time.sleep(0.3)
            return b""

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(hang)})
        self._server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def stop(self) -> None:
        self._server.stop(None).wait()


def rpc_error(code: grpc.StatusCode, details_trailer: bytes | None = None) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata()
    if details_trailer is not None:
        trailers.add("grpc-status-details-bin", details_trailer)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details="test")


@pytest.mark.parametrize("code, retryable", [
    (grpc.StatusCode.CANCELLED, True), (grpc.StatusCode.DEADLINE_EXCEEDED, True),
    (grpc.StatusCode.ABORTED, True), (grpc.StatusCode.OUT_OF_RANGE, True),
    (grpc.StatusCode.UNAVAILABLE, True), (grpc.StatusCode.DATA_LOSS, True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, False), (grpc.StatusCode.INVALID_ARGUMENT, False),
    (grpc.StatusCode.UNAUTHENTICATED, False), (grpc.StatusCode.UNIMPLEMENTED, False),
    (grpc.StatusCode.INTERNAL, False), (grpc.StatusCode.UNKNOWN, False),
])
def test_retryable_codes_follow_the_otlp_spec(code: grpc.StatusCode, retryable: bool) -> None:
    attempt = classify_error(rpc_error(code))
    assert (attempt.ok, attempt.retryable, attempt.throttle) == (False, retryable, None)


@pytest.mark.parametrize("code, refused", [
    (grpc.StatusCode.INVALID_ARGUMENT, True), (grpc.StatusCode.INTERNAL, True), (grpc.StatusCode.UNKNOWN, True),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, True), (grpc.StatusCode.FAILED_PRECONDITION, True),
    (grpc.StatusCode.UNAUTHENTICATED, False), (grpc.StatusCode.PERMISSION_DENIED, False),
    (grpc.StatusCode.UNIMPLEMENTED, False), (grpc.StatusCode.NOT_FOUND, False), (grpc.StatusCode.UNAVAILABLE, False),
])
def test_refusals_of_the_data_are_told_from_other_errors(code: grpc.StatusCode, refused: bool) -> None:
    assert classify_error(rpc_error(code)).refused is refused


def test_retry_info_is_read_from_the_status_details_trailer() -> None:
    details = retry_info_status(8, "slow down", 1.25)
    attempt = classify_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, details))
    assert attempt.retryable and attempt.throttle == 1.25
    garbled = classify_error(rpc_error(grpc.StatusCode.UNAVAILABLE, b"\xff\xff"))
    assert garbled.retryable and garbled.throttle is None


def test_zstd_is_refused_for_grpc_saying_what_to_do_instead() -> None:
    with pytest.raises(ValueError) as err:
        OtlpExporterConfig(endpoint="backend:4317", compression="zstd")
    assert "grpcio compresses with gzip only" in str(err.value) and "otlp_http" in str(err.value)


def test_keepalive_maps_to_grpcio_channel_arguments_and_delivers(grpc_sink: OtlpGrpcSink,
                                                                  telemetry: Telemetry) -> None:
    from processor.exporters.otlp_grpc import keepalive_options

    keepalive = {"time": "10s", "timeout": "2s", "permit_without_stream": True}
    config = OtlpExporterConfig(endpoint="backend:4317", keepalive=keepalive)
    assert dict(keepalive_options(config.keepalive)) == {
        "grpc.keepalive_time_ms": 10_000, "grpc.keepalive_timeout_ms": 2_000,
        "grpc.keepalive_permit_without_calls": 1, "grpc.http2.max_pings_without_data": 0}
    assert keepalive_options(None) == []
    run(exporter(grpc_sink.port, telemetry, keepalive=keepalive), [payload_of(make_request())])
    assert len(grpc_sink.spans()) == 2
