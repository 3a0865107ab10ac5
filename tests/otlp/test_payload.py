"""processor.otlp.payload: released spans framed as ExportTraceServiceRequests, regrouped, split at max_bytes;
refused payloads cut in halves."""

from __future__ import annotations

import dataclasses

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.model import ExportPayload, ReleasedSpans
from processor.otlp.payload import encode_payloads, span_ids, split_payload
from processor.receivers.decode import group_id
from processor.store import released_from_rows
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
    return released_from_rows(
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


def test_span_bytes_are_forwarded_verbatim_and_edits_override_them():
    spans = released(ROWS[:2])
    req = ExportTraceServiceRequest.FromString(next(encode_payloads(spans)).data)
    assert sorted(s.SerializeToString() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans) \
        == sorted(spans.raw)
    extra = kv("annotated", True).SerializeToString()
    annotated = [r + b"\x4a" + bytes([len(extra)]) + extra for r in spans.raw]  # field 9, appended
    req = ExportTraceServiceRequest.FromString(next(encode_payloads(spans, dict(enumerate(annotated)))).data)
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


# --- cutting a refused payload in halves ------------------------------------------------------


def _layout(p: ExportPayload) -> list[tuple[str, str, int]]:
    """(service, scope, span number) of each span, in order."""
    req = ExportTraceServiceRequest.FromString(p.data)
    return [(rs.resource.attributes[0].value.string_value, ss.scope.name, s.span_id[-1])
            for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _halves_until_single_spans(p: ExportPayload) -> list[ExportPayload]:
    halves = split_payload(p)
    if not halves:
        return [p]
    assert [h.on_settled for h in halves] == [None, None] and sum(h.span_count for h in halves) == p.span_count
    return [leaf for h in halves for leaf in _halves_until_single_spans(h)]


def test_a_payload_is_cut_between_resources_then_scopes_then_spans():
    whole = dataclasses.replace(next(encode_payloads(released(ROWS))), on_settled=lambda: None)
    by_resource = split_payload(whole)
    assert [sorted({svc for svc, _, _ in _layout(h)}) for h in by_resource] == [["api"], ["db"]]
    by_scope = split_payload(by_resource[0])  # api: scopes http (3 spans) and grpc (1)
    assert [sorted({scope for _, scope, _ in _layout(h)}) for h in by_scope] == [["http"], ["grpc"]]
    by_span = split_payload(by_scope[0])
    assert [[n for _, _, n in _layout(h)] for h in by_span] == [[1], [4, 6]]
    assert split_payload(by_span[0]) == []  # one span: nothing left to cut


def test_halves_carry_the_heads_and_span_bytes_unchanged():
    spans = released(ROWS)
    whole = next(encode_payloads(spans))
    leaves = _halves_until_single_spans(whole)
    assert len(leaves) == 7
    assert_same_spans([ExportTraceServiceRequest.FromString(whole.data)],
                      [ExportTraceServiceRequest.FromString(p.data) for p in leaves])
    for leaf in leaves:  # each is framed like any payload: the stored heads, the span's bytes
        alone = next(encode_payloads(_only(spans, span_ids(leaf)[0])))
        assert (leaf.data, leaf.span_count) == (alone.data, alone.span_count)


def _only(spans: ReleasedSpans, ids: tuple[bytes, bytes] | None) -> ReleasedSpans:
    assert ids is not None
    i = list(zip(spans.trace_ids, spans.span_ids)).index(ids)
    return released_from_rows([spans.trace_ids[i]], [spans.span_ids[i]], [None], [spans.raw[i]],
                              [spans.resource_ids[i]], [spans.scope_ids[i]], spans.resources, spans.scopes, 1)


def test_what_is_not_a_framed_request_is_not_cut():
    assert split_payload(ExportPayload(b"\xff\xff", 2)) == []
    two = next(encode_payloads(released(ROWS[:2])))
    assert split_payload(dataclasses.replace(two, span_count=3)) == []  # the count does not match: not ours
    assert span_ids(ExportPayload(b"\xff", 1)) == []


def test_max_spans_caps_every_payload_across_groups():
    # processors.batch.send_batch_max_size: no payload carries more spans, whatever their groups.
    rows = [("api" if n % 3 else "db", "http" if n % 2 else "sql", n // 4, n) for n in range(1, 101)]
    spans = released(rows)
    payloads = list(encode_payloads(spans, max_spans=7))
    assert [p.span_count for p in payloads] == [7] * 14 + [2]
    requests = [ExportTraceServiceRequest.FromString(p.data) for p in payloads]
    assert_same_spans([expected_request(rows)], requests)
    assert [len([s for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]) for r in requests] \
        == [p.span_count for p in payloads]


def test_long_spans_edits_and_a_chunked_column_are_framed_byte_for_byte():
    # Framing gathers the rows' bytes as views into the released column (and the edits') and
    # prefixes each from a table of keys and lengths below 2**14; a longer span's prefix is built.
    import pyarrow as pa

    from processor.otlp.wire import varint

    spans = released(ROWS, name_size=20_000)
    spans = dataclasses.replace(spans, table=pa.concat_tables([spans.table.slice(0, 3), spans.table.slice(3)]))
    short = Span(trace_id=tid(9), span_id=sid(9), name="edited").SerializeToString()
    edits = {1: short, 4: short + b"\x4a\x00"}
    payloads = list(encode_payloads(spans, edits, max_bytes=45_000))
    assert len(payloads) > 1 and sum(p.span_count for p in payloads) == 7
    assert all(len(p.data) <= 45_000 for p in payloads)
    framed = [rs for p in payloads for rs in ExportTraceServiceRequest.FromString(p.data).resource_spans]
    got = sorted(s.SerializeToString() for rs in framed for ss in rs.scope_spans for s in ss.spans)
    assert got == sorted(edits.get(row, raw) for row, raw in enumerate(spans.raw))
    first = spans.raw[0]  # row 0 frames first, after its key and its length (3 bytes: past the table)
    assert b"\x12" + varint(len(first)) + first in payloads[0].data and len(varint(len(first))) == 3
