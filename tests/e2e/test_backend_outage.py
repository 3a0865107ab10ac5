"""A downstream that is down for a while, then back on the same port: nothing lost, nothing doubled.

While the sink is not listening the exporter's attempts never reach it, so
every span must arrive exactly once after it comes back.  When the sink is up
but refuses (UNAVAILABLE / 503 with a retry hint), a payload is resent only as
often as it was refused: each span is accepted exactly once, and seen at most
once per refusal before that.
"""

from __future__ import annotations

import time
from collections import Counter

import duckdb
import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.harness import (
    FAST_RETRY,
    assert_same_spans,
    config_dict,
    flatten,
    grpc_export,
    grpc_exporter,
    simple_request,
    span_count,
    wait_until,
)
from tests.support.otlp_sink import OtlpGrpcSink, OtlpHttpSink

pytestmark = pytest.mark.timeout(60)


def _send_traffic(running, first: int) -> list:
    """Six requests over both transports; returns what was sent."""
    sent = []
    for i in range(6):
        req = simple_request(first + i * 10, traces=3, spans_per_trace=3, service=f"svc{i % 2}")
        sent.append(req)
        if i % 2:
            grpc_export(running.grpc_target, req)
        else:
            reply = requests.post(running.http_url, data=req.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert reply.status_code == 200
    return sent


def _http_exporter(port: int) -> dict:
    return {"endpoint": f"http://127.0.0.1:{port}", "retry_on_failure": FAST_RETRY, "timeout": "2s"}


@pytest.mark.parametrize("kind", ["otlp_grpc", "otlp_http"])
def test_backend_down_then_up_on_the_same_port_delivers_everything_once(pipeline_factory, kind):
    sink = OtlpGrpcSink() if kind == "otlp_grpc" else OtlpHttpSink()
    port = sink.port
    sink.stop()  # nothing listens on `port` now
    exporter = grpc_exporter(port) if kind == "otlp_grpc" else _http_exporter(port)
    running = pipeline_factory(config_dict({kind: exporter}))
    try:
        sent = _send_traffic(running, first=1)
        total = span_count(sent)
        # The traces are released and the exporter keeps failing against the closed port.  Both
        # waited for: the first payload's retries (50 ms apart) can outpace the release of the
        # last request's traces (0.2 s after it) on a loaded machine.
        wait_until(lambda: running.metric("faulttrace_exporter_retries_total", exporter=kind) >= 3
                   and running.pipeline.store.buffered_spans == 0,
                   what="the exporter to retry with every span released")
        time.sleep(0.5)  # down "for a while": several more failed attempts
        assert running.metric("faulttrace_exporter_sent_spans_total", exporter=kind) == 0
        sink.restart()
        assert sink.port == port
        sink.wait_for_spans(total, timeout=15)
        wait_until(lambda: running.metric("faulttrace_exporter_sent_spans_total", exporter=kind) == total,
                   what="sent spans counted")
        time.sleep(0.3)  # a duplicate would arrive by now
        assert_same_spans(sent, sink.requests)
        assert running.metric("faulttrace_exporter_send_failed_spans_total", exporter=kind) == 0
    finally:
        sink.stop()


@pytest.mark.parametrize("kind", ["otlp_grpc", "otlp_http"])
def test_refusing_backend_gets_each_span_once_plus_one_try_per_refusal(pipeline_factory, kind):
    sink = OtlpGrpcSink() if kind == "otlp_grpc" else OtlpHttpSink()
    refusals = 3 if kind == "otlp_grpc" else 2  # HTTP honours Retry-After: 1s each
    if kind == "otlp_grpc":
        sink.fail_next(refusals, grpc.StatusCode.UNAVAILABLE, retry_after=0.1)
        exporter = grpc_exporter(sink.port)
    else:
        sink.fail_next(refusals, 503, retry_after=1)
        exporter = _http_exporter(sink.port)
    with sink:
        running = pipeline_factory(config_dict({kind: exporter}))
        sent = _send_traffic(running, first=100)
        total = span_count(sent)
        sink.wait_for_spans(total, timeout=20)
        time.sleep(0.3)
        assert_same_spans(sent, sink.requests)
        received = sink.received
        failed = [r for r in received if r.failed_with is not None]
        assert len(failed) == refusals
        # Every refused payload was resent, byte for byte the same spans, and accepted later.
        accepted = Counter(flatten(sink.requests))
        seen = Counter(flatten(ExportTraceServiceRequest.FromString(r.raw) for r in received))
        for placed, n in seen.items():
            assert accepted[placed] == 1
            assert n <= 1 + refusals
        assert sum(seen.values()) - total == sum(span_count([ExportTraceServiceRequest.FromString(r.raw)])
                                                 for r in failed)
        assert running.metric("faulttrace_exporter_retries_total", exporter=kind) == refusals
        assert running.metric("faulttrace_exporter_send_failed_spans_total", exporter=kind) == 0
        if kind == "otlp_http":  # Retry-After: 1 was honoured before the resend
            first_fail = failed[0]
            resend = next(r for r in received if r.at > first_fail.at and r.raw == first_fail.raw)
            assert resend.at - first_fail.at >= 0.9


def test_a_durable_store_keeps_undelivered_spans_across_a_restart(pipeline_factory, tmp_path):
    """Spans released while the backend is down and still undelivered at shutdown stay in the
    journal; the next start delivers them. Delivered spans leave the journal."""
    journal = str(tmp_path / "spans.duckdb")
    sink = OtlpGrpcSink()
    port = sink.port
    sink.stop()  # the backend is down
    config = config_dict({"otlp_grpc": grpc_exporter(port)}, shutdown_timeout=1.0,
                         processor={"storage": {"path": journal}})
    running = pipeline_factory(config)
    sent = _send_traffic(running, first=300)
    total = span_count(sent)
    wait_until(lambda: running.pipeline.store.buffered_spans == 0, what="every trace released")
    wait_until(lambda: running.metric("faulttrace_exporter_retries_total", exporter="otlp_grpc") >= 3,
               what="the exporter to retry")  # only the exporter holds the spans now, and cannot deliver
    running.stop()  # the shutdown timeout runs out with every payload undelivered
    assert running.metric("faulttrace_exporter_sent_spans_total", exporter="otlp_grpc") == 0

    sink.restart()
    try:
        again = pipeline_factory(config)
        assert again.pipeline.store.buffered_spans == total  # recovered from the journal
        sink.wait_for_spans(total, timeout=15)
        time.sleep(0.3)  # a duplicate would arrive by now
        assert_same_spans(sent, sink.requests)
        again.stop()
    finally:
        sink.stop()
    with duckdb.connect(journal) as conn:  # delivered: nothing left to send again
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (0,)
