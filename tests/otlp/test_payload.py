"""processor.otlp.payload: released spans framed as ExportTraceServiceRequests, regrouped, split at max_bytes."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.model import ReleasedSpans
from processor.otlp.payload import encode_payloads
from processor.receivers.decode import group_id
from tests.support.harness import assert_same_spans, kv, sid, tid


def resource_head(service: str) -> bytes:
    rs = ResourceSpans(schema_url="https://schemas/1")
    rs.resource.attributes.append(kv("service.name", service))
    return rs.SerializeToString()


def scope_head(name: str) -> bytes:
    ss = ScopeSpans(schema_url=f"https://scope/{name}")
    ss.scope.name = name
    return ss.SerializeToString()


def released(rows: list[tuple[str, str, int, int]], name_size: int = 0) -> ReleasedSpans:
    """rows: (service, scope, trace n, span n), in the (interleaved) order the store returned them."""
    resources = {group_id(resource_head(r)): resource_head(r) for r, _, _, _ in rows}
    scopes = {group_id(scope_head(s)): scope_head(s) for _, s, _, _ in rows}
    raw = [Span(trace_id=tid(t), span_id=sid(n), name=f"{r}/{s}/{n}" + "x" * name_size).SerializeToString()
           for r, s, t, n in rows]
    return ReleasedSpans(
        trace_ids=[tid(t) for _, _, t, _ in rows], span_ids=[sid(n) for _, _, _, n in rows],
        parent_span_ids=[None for _ in rows], raw=raw,
        resource_ids=[group_id(resource_head(r)) for r, _, _, _ in rows],
        scope_ids=[group_id(scope_head(s)) for _, s, _, _ in rows],
        resources=resources, scopes=scopes, trace_count=len({t for _, _, t, _ in rows}))


def expected_request(rows: list[tuple[str, str, int, int]], name_size: int = 0) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r, s, t, n in rows:
        rs = ResourceSpans.FromString(resource_head(r))
        ss = ScopeSpans.FromString(scope_head(s))
        ss.spans.add(trace_id=tid(t), span_id=sid(n), name=f"{r}/{s}/{n}" + "x" * name_size)
        rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return req


ROWS = [("api", "http", 1, 1), ("db", "sql", 1, 2), ("api", "grpc", 2, 3), ("api", "http", 2, 4),
        ("db", "sql", 3, 5), ("api", "http", 3, 6), ("db", "http", 3, 7)]


def test_spans_are_regrouped_under_their_resource_and_scope():
    payloads = list(encode_payloads(released(ROWS)))
    assert len(payloads) == 1
    p = payloads[0]
    assert p.span_count == 7 and p.trace_count == 3
    req = ExportTraceServiceRequest.FromString(p.data)
    assert_same_spans([expected_request(ROWS)], [req])
    layout = sorted((rs.resource.attributes[0].value.string_value,
                     sorted((ss.scope.name, len(ss.spans)) for ss in rs.scope_spans)) for rs in req.resource_spans)
    assert layout == [("api", [("grpc", 1), ("http", 3)]), ("db", [("http", 1), ("sql", 2)])]
    for rs in req.resource_spans:
        assert rs.schema_url == "https://schemas/1"
        for ss in rs.scope_spans:
            assert ss.schema_url == f"https://scope/{ss.scope.name}"


def test_span_bytes_are_forwarded_verbatim_and_raw_overrides_them():
    spans = released(ROWS[:2])
    req = ExportTraceServiceRequest.FromString(next(encode_payloads(spans)).data)
    assert sorted(s.SerializeToString() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans) \
        == sorted(spans.raw)
    extra = kv("annotated", True).SerializeToString()
    annotated = [r + b"\x4a" + bytes([len(extra)]) + extra for r in spans.raw]  # field 9, appended
    req = ExportTraceServiceRequest.FromString(next(encode_payloads(spans, annotated)).data)
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                assert s.attributes[-1] == kv("annotated", True)


def test_nothing_released_means_no_payload():
    assert list(encode_payloads(released([]))) == []


def test_large_releases_are_split_at_max_bytes():
    rows = [("api" if n % 3 else "db", "http" if n % 2 else "sql", n // 4, n) for n in range(1, 201)]
    spans = released(rows, name_size=100)
    max_bytes = 3000
    payloads = list(encode_payloads(spans, max_bytes=max_bytes))
    assert len(payloads) > 5
    assert sum(p.span_count for p in payloads) == 200
    for p in payloads:
        assert len(p.data) <= max_bytes
    requests = [ExportTraceServiceRequest.FromString(p.data) for p in payloads]
    assert_same_spans([expected_request(rows, name_size=100)], requests)
    for p, req in zip(payloads, requests):
        ids = {s.trace_id for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
        assert p.trace_count == len(ids)


def test_a_span_larger_than_max_bytes_travels_alone():
    rows = [("api", "http", 1, 1), ("api", "http", 1, 2), ("api", "http", 1, 3)]
    spans = released(rows, name_size=5000)
    payloads = list(encode_payloads(spans, max_bytes=1000))
    assert [p.span_count for p in payloads] == [1, 1, 1]
    assert_same_spans([expected_request(rows, name_size=5000)],
                      [ExportTraceServiceRequest.FromString(p.data) for p in payloads])
