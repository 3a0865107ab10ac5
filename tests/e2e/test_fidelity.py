"""End to end: real OTLP clients -> faulttrace -> otlp_grpc exporter -> a real OTLP sink.

The collector testbed's correctness validator is the model: every span the
clients sent arrives exactly once, protobuf-equal to what was sent, under the
same resource and scope (with their schema URLs).
"""

from __future__ import annotations

import gzip
import json
import time

import grpc
import pytest
import requests
from opentelemetry import context, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from tests.support.harness import (
    assert_same_spans,
    config_dict,
    grpc_export,
    grpc_exporter,
    kv,
    otlp_json,
    sid,
    span_count,
    tid,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def faulttrace(grpc_sink, pipeline_factory):
    return pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}))


# --- the real opentelemetry-sdk exporters ------------------------------------------


def _emit_sdk_spans(provider: TracerProvider) -> None:
    """Spans exercising everything the SDK can express."""
    tracer = provider.get_tracer("fidelity.tests", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0",
                                 attributes={"scope.attr": "s", "scope.n": 7})
    other = provider.get_tracer("other.scope")
    remote = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331,
                         is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("vendor", "opaque"), ("rojo", "00f067aa0ba902b7")]))
    link_ctx = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("l", "1")]))
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("GET /checkout", context=parent_ctx, kind=SpanKind.SERVER, attributes={
        "http.request.method": "GET", "http.response.status_code": 503, "sampled": True, "ratio": 0.25,
        "tags": ["a", "ü", "日本"], "ints": [1, -2, 2**62], "floats": [0.5, -1e300], "bools": [True, False],
    }, links=[Link(link_ctx, {"link.kind": "follows", "n": 3})]) as root:
        root.add_event("cache miss", {"key": "user:42", "size": 1024})
        root.add_event("retry")
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.system", "postgresql")
            child.set_status(StatusCode.ERROR, "connection reset by peer")
            try:
                raise ValueError("boom")
            except ValueError as err:
                child.record_exception(err)
        with other.start_as_current_span("publish", kind=SpanKind.PRODUCER) as producer:
            producer.set_status(StatusCode.OK)
        root.set_status(StatusCode.ERROR, "upstream failed")
    # A second, unrelated trace with a local root.
    with tracer.start_as_current_span("background job", context=context.Context(), kind=SpanKind.CONSUMER):
        pass


def _sdk_roundtrip(sink, exporter) -> None:
    memory = InMemorySpanExporter()
    resource = Resource({"service.name": "checkout", "service.version": "2.0", "deployment.environment": "test",
                         "host.cores": 2}, schema_url="https://opentelemetry.io/schemas/1.20.0")
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _emit_sdk_spans(provider)
    provider.shutdown()
    sent = [encode_spans(memory.get_finished_spans())]
    n = span_count(sent)
    assert n == 4
    sink.wait_for_spans(n)
    assert_same_spans(sent, sink.requests)
    # Nothing else trickles in afterwards (no duplicates).
    assert sink.span_count == n


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.NoCompression])
def test_sdk_grpc_exporter_spans_arrive_identical(faulttrace, grpc_sink, compression):
    exporter = GrpcSpanExporter(endpoint=faulttrace.grpc_target, insecure=True, compression=compression,
                                timeout=5)
    _sdk_roundtrip(grpc_sink, exporter)


@pytest.mark.parametrize("compression", [HttpCompression.Gzip, HttpCompression.NoCompression])
def test_sdk_http_exporter_spans_arrive_identical(faulttrace, grpc_sink, compression):
    exporter = HttpSpanExporter(endpoint=faulttrace.http_url, compression=compression, timeout=5)
    _sdk_roundtrip(grpc_sink, exporter)


# --- hand-built requests: every field OTLP has -------------------------------------

EVERY_TYPE = {
    "str": "value", "empty": "", "unicode": "résumé ✓ 日本語 🚀", "bool": True, "false": False,
    "int": -(2**63), "max": 2**63 - 1, "double": 3.141592653589793, "neg": -0.0, "inf": float("inf"),
    "bytes": b"\x00\xff\x10binary", "array": ["x", 1, 2.5, False, b"\x01", ["nested"]],
    "kvlist": {"inner": {"deep": [1, 2, {"k": "v"}]}, "flag": True}, "empty_array": [], "empty_kvlist": {},
}


def rich_request(seed: int = 1) -> ExportTraceServiceRequest:
    """Two resources (one without attributes), several scopes, spans using every field."""
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add(schema_url=f"https://opentelemetry.io/schemas/1.{20 + r}.0")
        if r == 0:
            rs.resource.attributes.extend([kv("service.name", "frontend"), kv("host.name", "h1"),
                                           *(kv(f"res.{k}", v) for k, v in EVERY_TYPE.items())])
            rs.resource.dropped_attributes_count = 4
        for s in range(2):
            ss = rs.scope_spans.add(schema_url=f"https://example.com/scope/{s}" if s else "")
            ss.scope.name = f"lib.{r}.{s}"
            ss.scope.version = f"{s}.0.1"
            ss.scope.attributes.extend([kv("scope.key", s), kv("scope.list", ["a", "b"])])
            ss.scope.dropped_attributes_count = s
            for i in range(3):
                n = seed * 10_000 + r * 100 + s * 10 + i
                span = ss.spans.add(
                    trace_id=tid(seed * 100 + i), span_id=sid(n), name=f"span {n} – ünïcode",
                    kind=i % 6, start_time_unix_nano=1_700_000_000_000_000_000 + n,
                    end_time_unix_nano=1_700_000_000_500_000_000 + n, trace_state=f"vendor=v{n},other=x",
                    flags=0x301 if i else 0x1, dropped_attributes_count=i, dropped_events_count=i + 1,
                    dropped_links_count=i + 2)
                if i:
                    span.parent_span_id = sid(seed * 10_000 + r * 100 + s * 10)
                span.attributes.extend(kv(k, v) for k, v in EVERY_TYPE.items())
                ev = span.events.add(time_unix_nano=1_700_000_000_100_000_000, name="exception",
                                     dropped_attributes_count=2)
                ev.attributes.extend([kv("exception.type", "ValueError"), kv("exception.message", "bad ✗"),
                                      kv("exception.stacktrace", "Traceback...\n  line 1"), kv("n", [1, 2])])
                span.events.add(time_unix_nano=1_700_000_000_200_000_000, name="no attributes")
                link = span.links.add(trace_id=tid(999_000 + n), span_id=sid(77), trace_state="k=v",
                                      dropped_attributes_count=1, flags=0x101)
                link.attributes.extend([kv("link.reason", "batch"), kv("bytes", b"\x00")])
                span.links.add(trace_id=tid(999_999), span_id=sid(78))
                span.status.CopyFrom(Status(code=i % 3, message=f"status message {i}" if i % 3 == 2 else ""))
    return req


def test_rich_request_over_grpc_with_gzip(faulttrace, grpc_sink):
    req = rich_request(1)
    response = grpc_export(faulttrace.grpc_target, req, compression=grpc.Compression.Gzip)
    assert response == ExportTraceServiceResponse()
    grpc_sink.wait_for_spans(12)
    assert_same_spans([req], grpc_sink.requests)


@pytest.mark.parametrize("gzipped", [False, True])
def test_rich_request_over_http_protobuf(faulttrace, grpc_sink, gzipped):
    req = rich_request(2)
    body = req.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    reply = requests.post(faulttrace.http_url, data=body, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.content
    assert reply.headers["Content-Type"].startswith("application/x-protobuf")
    assert ExportTraceServiceResponse.FromString(reply.content) == ExportTraceServiceResponse()
    grpc_sink.wait_for_spans(12)
    assert_same_spans([req], grpc_sink.requests)


@pytest.mark.parametrize("gzipped", [False, True])
def test_rich_request_over_http_json(faulttrace, grpc_sink, gzipped):
    req = rich_request(3)
    doc = otlp_json(req)
    first = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert len(first["traceId"]) == 32 and all(c in "0123456789abcdef" for c in first["traceId"])
    assert isinstance(first["kind"], int)
    # Receivers must ignore fields they do not know.
    doc["someFutureField"] = {"x": 1}
    first["notYetInTheProto"] = 42
    body = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    reply = requests.post(faulttrace.http_url, data=body, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.content
    assert reply.headers["Content-Type"].startswith("application/json")
    assert json.loads(reply.content) == {}
    grpc_sink.wait_for_spans(12)
    assert_same_spans([req], grpc_sink.requests)


def test_json_enum_names_are_accepted(faulttrace, grpc_sink):
    req = rich_request(4)
    doc = otlp_json(req)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][2]
    span["kind"] = "SPAN_KIND_SERVER"
    span["status"]["code"] = "STATUS_CODE_ERROR"
    reply = requests.post(faulttrace.http_url, json=doc, timeout=10)
    assert reply.status_code == 200, reply.content
    expected = ExportTraceServiceRequest()
    expected.CopyFrom(req)
    target = expected.resource_spans[0].scope_spans[0].spans[2]
    target.kind = Span.SPAN_KIND_SERVER
    target.status.code = Status.STATUS_CODE_ERROR
    grpc_sink.wait_for_spans(12)
    assert_same_spans([expected], grpc_sink.requests)


def test_many_requests_both_transports_every_span_exactly_once(faulttrace, grpc_sink):
    """Interleaved requests sharing resources/scopes across traces: regrouped, none lost or doubled."""
    sent = []
    for seed in range(5, 11):
        req = rich_request(seed)
        sent.append(req)
        if seed % 2:
            grpc_export(faulttrace.grpc_target, req)
        else:
            reply = requests.post(faulttrace.http_url, data=req.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert reply.status_code == 200
    grpc_sink.wait_for_spans(span_count(sent))
    assert_same_spans(sent, grpc_sink.requests)
    # Regrouping: in each exported request a resource and, within it, a scope appears once.
    for exported in grpc_sink.requests:
        heads = [(rs.resource.SerializeToString(deterministic=True), rs.schema_url) for rs in exported.resource_spans]
        assert len(heads) == len(set(heads))
        for rs in exported.resource_spans:
            scopes = [(ss.scope.SerializeToString(deterministic=True), ss.schema_url) for ss in rs.scope_spans]
            assert len(scopes) == len(set(scopes))


def test_exported_spans_wait_for_decision_wait(grpc_sink, pipeline_factory):
    """A trace is held until decision_wait after its last span, then released whole."""
    running = pipeline_factory(config_dict({"otlp_grpc": grpc_exporter(grpc_sink.port)}, decision_wait=0.6))
    req = rich_request(12)
    t0 = time.monotonic()
    grpc_export(running.grpc_target, req)
    grpc_sink.wait_for_spans(12)
    assert time.monotonic() - t0 >= 0.55
    assert_same_spans([req], grpc_sink.requests)


def test_the_validator_itself_catches_loss_duplication_alteration_and_regrouping():
    req = rich_request(20)
    assert_same_spans([req], [req])
    lost = ExportTraceServiceRequest()
    lost.CopyFrom(req)
    del lost.resource_spans[0].scope_spans[0].spans[0]
    doubled = ExportTraceServiceRequest()
    doubled.CopyFrom(req)
    doubled.resource_spans[1].scope_spans[1].spans.add().CopyFrom(req.resource_spans[1].scope_spans[1].spans[0])
    altered = ExportTraceServiceRequest()
    altered.CopyFrom(req)
    altered.resource_spans[0].scope_spans[1].spans[2].links[0].flags = 0
    moved = ExportTraceServiceRequest()
    moved.CopyFrom(req)
    moved.resource_spans[0].scope_spans[0].schema_url = "https://elsewhere"
    for bad in (lost, doubled, altered, moved):
        with pytest.raises(AssertionError):
            assert_same_spans([req], [bad])


def test_late_spans_pass_straight_through(faulttrace, grpc_sink):
    """A span arriving after its trace was released is exported on its own, promptly and unchanged."""
    early = rich_request(30)
    grpc_export(faulttrace.grpc_target, early)
    grpc_sink.wait_for_spans(12)
    late = ExportTraceServiceRequest()
    late.CopyFrom(early)
    for rs in late.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.span_id = sid(int.from_bytes(span.span_id, "big") + 500_000)
    grpc_export(faulttrace.grpc_target, late)
    grpc_sink.wait_for_spans(24)
    assert_same_spans([early, late], grpc_sink.requests)
    assert faulttrace.metric("faulttrace_processor_late_spans_total") == 12
    assert faulttrace.metric("faulttrace_processor_released_traces_total", reason="late") >= 3
