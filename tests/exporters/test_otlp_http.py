"""The otlp_http exporter against a real HTTP sink."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
from typing import Any

import pytest
from pydantic import ValidationError

from processor.exporters.config import OtlpHttpExporterConfig
from processor.exporters.factory import build_exporter
from processor.exporters.otlp_http import OtlpHttpExporter, parse_retry_after, traces_url
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry
from tests.support.exporters import FAST_RETRY, make_request, metric, payload_of
from tests.support.otlp_sink import OtlpHttpSink

CID = "otlphttp/backend"


def exporter(sink: OtlpHttpSink, telemetry: Telemetry, **overrides: Any) -> OtlpHttpExporter:
    config = {"endpoint": f"http://127.0.0.1:{sink.port}", "timeout": 2,
              "retry_on_failure": FAST_RETRY, **overrides}
    built = build_exporter(CID, OtlpHttpExporterConfig(**config), telemetry)
    assert isinstance(built, OtlpHttpExporter)
    return built


def run(exp: OtlpHttpExporter, payloads: list[ExportPayload]) -> None:
    async def main() -> None:
        await exp.start()
        for p in payloads:
            await exp.export(p)
        await exp.shutdown(10)

    asyncio.run(main())


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_posts_protobuf_to_v1_traces(http_sink: OtlpHttpSink, telemetry: Telemetry, compression: str) -> None:
    payload = payload_of(make_request(traces=3))
    run(exporter(http_sink, telemetry, compression=compression), [payload])
    (received,) = http_sink.received
    assert received.raw == payload.data  # the sink decompresses; the bytes are the payload's
    assert received.headers["content-type"] == "application/x-protobuf"
    assert received.headers.get("content-encoding") == (None if compression == "none" else compression)
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 6


def test_traces_endpoint_overrides_the_composed_url(http_sink: OtlpHttpSink, telemetry: Telemetry) -> None:
    exp = exporter(http_sink, telemetry, endpoint="http://127.0.0.1:1", traces_endpoint=http_sink.url)
    run(exp, [payload_of(make_request())])
    assert len(http_sink.spans()) == 2


def test_headers_arrive(http_sink: OtlpHttpSink, telemetry: Telemetry) -> None:
    run(exporter(http_sink, telemetry, headers={"X-Tenant": "acme"}), [payload_of(make_request())])
    assert http_sink.received[0].headers["x-tenant"] == "acme"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(http_sink: OtlpHttpSink, telemetry: Telemetry, status: int) -> None:
    http_sink.fail_next(2, status)
    run(exporter(http_sink, telemetry), [payload_of(make_request())])
    assert [r.failed_with for r in http_sink.received] == [status, status, None]
    assert len(http_sink.spans()) == 2
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 2


@pytest.mark.parametrize("status", [401, 403, 404, 415])
def test_other_statuses_are_permanent(http_sink: OtlpHttpSink, telemetry: Telemetry, status: int) -> None:
    http_sink.fail_next(1, status)
    run(exporter(http_sink, telemetry), [payload_of(make_request())])
    assert len(http_sink.received) == 1
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 2


@pytest.mark.parametrize("status", [400, 413, 422, 500])
def test_refused_data_is_not_retried_but_sent_in_parts(http_sink: OtlpHttpSink, telemetry: Telemetry,
                                                       status: int) -> None:
    http_sink.fail_next(1, status)
    run(exporter(http_sink, telemetry), [payload_of(make_request())])
    assert [r.failed_with for r in http_sink.received] == [status, None, None]  # two halves of one span each
    assert len(http_sink.spans()) == 2
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 0


def test_only_the_span_the_downstream_refuses_alone_is_dropped(http_sink: OtlpHttpSink,
                                                              telemetry: Telemetry) -> None:
    req = make_request(first_trace=1, traces=4, spans_per_trace=2)
    req.resource_spans[0].scope_spans[0].spans[5].name = "poison"
    http_sink.refuse_containing(b"poison")
    settled: list[int] = []
    run(exporter(http_sink, telemetry, compression="gzip"),
        [dataclasses.replace(payload_of(req), on_settled=lambda: settled.append(1))])
    assert sorted(s.name for s in http_sink.spans()) == ["op0"] * 4 + ["op1"] * 3
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 1
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 7
    assert settled == [1]


def test_retry_after_seconds_is_honoured(http_sink: OtlpHttpSink, telemetry: Telemetry) -> None:
    http_sink.fail_next(1, 503, retry_after=1)  # whole seconds: the header's smallest unit
    run(exporter(http_sink, telemetry), [payload_of(make_request())])
    first, second = http_sink.received
    assert second.at - first.at >= 1.0


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backend_down_for_a_while_then_up_loses_nothing(http_sink: OtlpHttpSink, telemetry: Telemetry) -> None:
    payloads = [payload_of(make_request(first_trace=i * 10, traces=5)) for i in range(1, 11)]
    exp = exporter(http_sink, telemetry, sending_queue={"num_consumers": 3})

    async def main() -> None:
        await exp.start()
        http_sink.stop()
        for p in payloads:
            await exp.export(p)
        await asyncio.sleep(0.4)  # connection refused meanwhile: retried
        http_sink.restart()
        await http_sink.wait_for_spans_async(100)
        await exp.shutdown(5)

    asyncio.run(main())
    ids = [span.span_id for span in http_sink.spans()]
    assert len(ids) == len(set(ids)) == 100
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) > 0
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 100


def test_traces_url_composition() -> None:
    def url(**kw: Any) -> str:
        return traces_url(OtlpHttpExporterConfig(**kw))

    assert url(endpoint="http://c:4318") == "http://c:4318/v1/traces"
    assert url(endpoint="http://c:4318/") == "http://c:4318/v1/traces"
    assert url(endpoint="https://c/otlp") == "https://c/otlp/v1/traces"
    assert url(endpoint="http://c:4318", traces_endpoint="http://d/traces") == "http://d/traces"


@pytest.mark.parametrize("kw", [{"endpoint": "c:4318"}, {"endpoint": "c:4318", "tls": {"insecure": True}},
                                {"endpoint": "http://c:4318", "traces_endpoint": "d/traces"}, {"endpoint": ""}])
def test_an_endpoint_that_is_not_a_url_is_refused_rather_than_guessed(kw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OtlpHttpExporterConfig(**kw)


@pytest.mark.parametrize("codec", ["snappy", "zlib", "deflate", "lz4"])
def test_the_collectors_other_codecs_are_refused_saying_what_to_use(codec: str) -> None:
    with pytest.raises(ValidationError) as err:
        OtlpHttpExporterConfig(endpoint="http://backend:4318", compression=codec)
    assert f"supported by the collector, not by faulttrace: '{codec}'; use gzip or zstd" in str(err.value)


def test_a_large_payload_is_zstd_compressed_off_the_loop_and_arrives_whole(http_sink: OtlpHttpSink,
                                                                             telemetry: Telemetry) -> None:
    payload = payload_of(make_request(traces=1000))
    assert len(payload.data) > 64 * 1024  # compressed on a worker thread
    run(exporter(http_sink, telemetry, compression="zstd"), [payload])
    assert http_sink.received[0].raw == payload.data
