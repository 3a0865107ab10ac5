"""processor.receivers.decode: request -> SpanBatch columns, attribute projection, id validation."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from dsl import AttrRef, AttrSource, AttrType, column_name
from processor.analysis.attributes import Projection, Projector
from processor.otlp.wire import length_delimited
from processor.receivers.decode import MalformedRequest, decode, group_id, parse_protobuf
from tests.support.harness import kv, sid, tid

S, R, E = AttrSource.SPAN, AttrSource.RESOURCE, AttrSource.EVENT


def projected(request, refs):
    """The decoded batch with ``refs`` projected, as analysis sees it at release."""
    batch = decode(request).batch
    batch.table = Projector(Projection.of(refs)).project(batch.table, batch.resources)
    return batch


def one_span_request(span: Span, resource_attrs: dict | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(kv(k, v) for k, v in (resource_attrs or {"service.name": "api"}).items())
    rs.scope_spans.add().spans.append(span)
    return req


def valid_span(**fields) -> Span:
    return Span(**{"trace_id": tid(1), "span_id": sid(1), "name": "op", **fields})


def project(ref: AttrRef, span: Span, resource_attrs: dict | None = None):
    """The value ``ref``'s column gets for ``span``."""
    batch = projected(one_span_request(span, resource_attrs), [ref])
    return batch.table.column(column_name(ref)).to_pylist()[0]


def with_attrs(**attrs) -> Span:
    span = valid_span()
    span.attributes.extend(kv(k.replace("_", "."), v) for k, v in attrs.items())
    return span


# --- intrinsic columns -------------------------------------------------------------


def test_intrinsic_columns():
    span = valid_span(parent_span_id=sid(9), kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=10,
                      end_time_unix_nano=25)
    span.status.code, span.status.message = 2, "broken"
    root = Span(trace_id=tid(1), span_id=sid(2), name="root", parent_span_id=bytes(8))
    req = one_span_request(span)
    req.resource_spans[0].scope_spans[0].spans.append(root)
    decoded = decode(req)
    rows = decoded.batch.table.to_pylist()
    assert rows[0] | {"raw": None, "resource_id": None, "scope_id": None} == {
        "trace_id": tid(1), "span_id": sid(1), "parent_span_id": sid(9), "service": "api", "name": "op",
        "kind": 3, "start_ns": 10, "end_ns": 25, "status_code": 2, "status_message": "broken",
        "raw": None, "resource_id": None, "scope_id": None}
    assert rows[1]["parent_span_id"] is None  # an all-zero parent means root
    assert Span.FromString(rows[0]["raw"]) == span
    assert decoded.batch.traces == {tid(1): 2}
    assert decoded.rejected_spans == 0 and decoded.error_message == ""


def test_times_beyond_int64_are_clamped_in_the_column_but_kept_in_the_bytes():
    span = valid_span(start_time_unix_nano=2**64 - 1, end_time_unix_nano=2**63)
    row = decode(one_span_request(span)).batch.table.to_pylist()[0]
    assert row["start_ns"] == row["end_ns"] == 2**63 - 1
    assert Span.FromString(row["raw"]).start_time_unix_nano == 2**64 - 1


def test_service_name_missing_is_empty():
    assert decode(one_span_request(valid_span(), {"host": "h"})).batch.table.column(
        "service").to_pylist() == [""]


def test_resource_and_scope_heads_are_grouped_and_stable():
    req = ExportTraceServiceRequest()
    for n in range(3):
        rs = req.resource_spans.add(schema_url="https://s/1")
        rs.resource.attributes.append(kv("service.name", "same" if n < 2 else "other"))
        ss = rs.scope_spans.add(schema_url="https://scope")
        ss.scope.name = "lib"
        ss.spans.append(Span(trace_id=tid(n + 1), span_id=sid(n + 1)))
    batch = decode(req).batch
    rids = batch.table.column("resource_id").to_pylist()
    assert rids[0] == rids[1] != rids[2]
    assert len(batch.resources) == 2 and len(batch.scopes) == 1
    head = ResourceSpans.FromString(batch.resources[rids[0]])
    assert head.schema_url == "https://s/1" and head.resource.attributes[0].value.string_value == "same"
    assert not head.scope_spans
    scope = ScopeSpans.FromString(next(iter(batch.scopes.values())))
    assert scope.scope.name == "lib" and scope.schema_url == "https://scope" and not scope.spans
    assert group_id(batch.resources[rids[0]]) == rids[0]


def test_malformed_protobuf_raises_malformed_request():
    with pytest.raises(MalformedRequest, match="cannot decode"):
        parse_protobuf(b"\x0a\x05abc")


# --- invalid ids ----------------------------------------------------------------------


@pytest.mark.parametrize("fields, problem", [
    ({"trace_id": tid(1)[:8]}, "trace_id must be 16 bytes, got 8"),
    ({"trace_id": b""}, "trace_id must be 16 bytes, got 0"),
    ({"trace_id": bytes(16)}, "trace_id is all zeroes"),
    ({"span_id": sid(1) + b"\x00"}, "span_id must be 8 bytes, got 9"),
    ({"span_id": bytes(8)}, "span_id is all zeroes"),
    ({"parent_span_id": b"\x01" * 4}, "parent_span_id must be empty or 8 bytes, got 4"),
])
def test_invalid_ids_are_rejected_individually(fields, problem):
    bad = Span(**{"trace_id": tid(1), "span_id": sid(2), **fields})
    req = one_span_request(valid_span())
    req.resource_spans[0].scope_spans[0].spans.append(bad)
    decoded = decode(req)
    assert decoded.rejected_spans == 1
    assert decoded.error_message == f"1 span(s) rejected: {problem}"
    assert decoded.batch.span_count == 1
    assert decoded.batch.table.column("span_id").to_pylist() == [sid(1)]


def test_error_message_names_the_first_problem_and_counts_all():
    req = one_span_request(Span(trace_id=bytes(16), span_id=sid(1)))
    req.resource_spans[0].scope_spans[0].spans.append(Span(trace_id=tid(1), span_id=b""))
    decoded = decode(req)
    assert decoded.rejected_spans == 2 and decoded.batch.span_count == 0
    assert decoded.error_message == "2 span(s) rejected: trace_id is all zeroes"
    assert decoded.batch.traces == {}


# --- projection ---------------------------------------------------------------------


@pytest.mark.parametrize("kind, value, expected", [
    (AttrType.STRING, "GET", "GET"),
    (AttrType.STRING, 5, None),                 # wrong type -> nil
    (AttrType.INT, 503, 503),
    (AttrType.INT, "503", None),
    (AttrType.INT, 5.0, None),
    (AttrType.DOUBLE, 0.25, 0.25),
    (AttrType.DOUBLE, 7, 7.0),                  # INT fills a DOUBLE column
    (AttrType.DOUBLE, True, None),
    (AttrType.BOOL, True, True),
    (AttrType.BOOL, False, False),
    (AttrType.BOOL, 1, None),
    (AttrType.STRING_ARRAY, ["a", "ü"], ["a", "ü"]),
    (AttrType.STRING_ARRAY, ["a", 1], None),    # a mixed array is nil as a whole
    (AttrType.STRING_ARRAY, "a", None),
    (AttrType.STRING_ARRAY, [], []),
    (AttrType.INT_ARRAY, [1, -2, 2**62], [1, -2, 2**62]),
    (AttrType.INT_ARRAY, [1.5], None),
    (AttrType.DOUBLE_ARRAY, [1.5, 2], [1.5, 2.0]),
    (AttrType.DOUBLE_ARRAY, ["x"], None),
    (AttrType.STRING, {"nested": "kv"}, None),
    (AttrType.STRING, b"bytes", None),
])
def test_span_attribute_projection_types(kind, value, expected):
    ref = AttrRef(S, "http.attr", kind)
    assert project(ref, with_attrs(http_attr=value)) == expected


def test_absent_attribute_is_nil_even_if_its_key_occurs_elsewhere_in_the_span():
    ref = AttrRef(S, "http.method")
    span = valid_span(name="http.method")  # the key's bytes are present, the attribute is not
    span.attributes.append(kv("other", "http.method"))
    assert project(ref, span) is None


def test_one_key_in_several_typed_columns():
    refs = [AttrRef(S, "n", AttrType.INT), AttrRef(S, "n", AttrType.DOUBLE), AttrRef(S, "n", AttrType.STRING)]
    batch = projected(one_span_request(with_attrs(n=3)), refs)
    assert [batch.table.column(column_name(r)).to_pylist()[0] for r in refs] == [3, 3.0, None]


def test_resource_attributes_are_projected_for_every_span_of_the_resource():
    ref = AttrRef(R, "deployment.environment")
    req = ExportTraceServiceRequest()
    for n, env in enumerate(["prod", 42]):
        rs = req.resource_spans.add()
        rs.resource.attributes.append(kv("deployment.environment", env))
        ss = rs.scope_spans.add()
        ss.spans.extend(Span(trace_id=tid(1), span_id=sid(10 * n + k)) for k in (1, 2))
    batch = projected(req, [ref])
    assert batch.table.column(column_name(ref)).to_pylist() == ["prod", "prod", None, None]


def test_span_attribute_does_not_leak_into_resource_column_and_vice_versa():
    span_ref, res_ref = AttrRef(S, "k"), AttrRef(R, "k")
    span = with_attrs(k="from-span")
    batch = projected(one_span_request(span, {"k": "from-resource"}), [span_ref, res_ref])
    assert batch.table.column(column_name(span_ref)).to_pylist() == ["from-span"]
    assert batch.table.column(column_name(res_ref)).to_pylist() == ["from-resource"]


def _span_with_events(*events: tuple[str, dict]) -> Span:
    span = valid_span()
    for name, attrs in events:
        span.events.add(name=name, attributes=[kv(k, v) for k, v in attrs.items()])
    return span


def test_event_present():
    ref = AttrRef(E, "", AttrType.PRESENT, event="exception")
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.append(_span_with_events(("log", {}), ("exception", {})))
    ss.spans.append(_span_with_events(("log", {})))
    no_events = Span(trace_id=tid(1), span_id=sid(3))
    ss.spans.append(no_events)
    batch = projected(req, [ref])
    assert batch.table.column(column_name(ref)).to_pylist() == [True, False, False]  # never NULL


def test_event_attribute_comes_from_the_first_event_of_that_name():
    ref = AttrRef(E, "exception.type", event="exception")
    span = _span_with_events(("log", {"exception.type": "not me"}), ("exception", {"exception.type": "first"}),
                             ("exception", {"exception.type": "second"}))
    assert project(ref, span) == "first"
    # The first event lacks the key: nil, not the second event's value.
    span = _span_with_events(("exception", {}), ("exception", {"exception.type": "second"}))
    assert project(ref, span) is None
    # Wrong type in the first event: nil too.
    assert project(ref, _span_with_events(("exception", {"exception.type": 3}))) is None
    assert project(ref, valid_span()) is None


def test_event_int_into_double_and_present_together():
    refs = [AttrRef(E, "", AttrType.PRESENT, event="retry"), AttrRef(E, "attempt", AttrType.DOUBLE, event="retry")]
    batch = projected(one_span_request(_span_with_events(("retry", {"attempt": 2}))), refs)
    assert [batch.table.column(column_name(r)).to_pylist()[0] for r in refs] == [True, 2.0]


def test_projection_schema_orders_intrinsics_projections_storage():
    refs = [AttrRef(S, "b"), AttrRef(R, "a", AttrType.INT)]
    projection = Projection.of(refs + refs)  # duplicates collapse
    names = [name for name, _ in projection.columns_sql()]
    assert names[:2] == ["trace_id", "span_id"]
    assert names[-3:] == ["resource_id", "scope_id", "raw"]
    assert len(names) == 10 + 2 + 3
    assert projection.schema.names == names


# --- everything re-emitted parses as what it claims ------------------------------------


def _frame(*, resource: bytes | None = None, scope: bytes | None = None, spans: tuple[bytes, ...] = ()) -> bytes:
    """A request of one resource and one scope, from their bytes (nothing checks them here)."""
    scope_spans = (length_delimited(1, scope) if scope is not None else b"") + b"".join(
        length_delimited(2, s) for s in spans)
    body = (length_delimited(1, resource) if resource is not None else b"") + length_delimited(2, scope_spans)
    return length_delimited(1, body)


def _nested(depth: int) -> bytes:
    """An encoded AnyValue of arrays ``depth`` deep (encoded by hand: the protobuf encoder has its own limit)."""
    raw = AnyValue(string_value="x").SerializeToString()
    for _ in range(depth):
        raw = length_delimited(5, length_delimited(1, raw))  # AnyValue.array_value, ArrayValue.values
    return raw


def test_a_scope_that_is_not_an_instrumentation_scope_refuses_the_request():
    # The measured case: 0a LEN 12 LEN [0a 03 ff ff ff 12 LEN <valid span>].
    data = _frame(scope=b"\xff\xff\xff", spans=(valid_span().SerializeToString(),))
    assert data[0] == 0x0A and data[2] == 0x12 and data[4:10] == b"\x0a\x03\xff\xff\xff\x12"
    with pytest.raises(MalformedRequest, match=r"resource_spans\[0\]\.scope_spans\[0\]\.scope is not a valid "
                                               r"InstrumentationScope"):
        decode(data)


def test_a_resource_that_is_not_a_resource_refuses_the_request():
    with pytest.raises(MalformedRequest, match=r"resource_spans\[0\]\.resource is not a valid Resource"):
        decode(_frame(resource=b"\x0a\x02\x0a", spans=(valid_span().SerializeToString(),)))


@pytest.mark.parametrize("bad", [
    b"\x0a\x05abc",  # truncated
    length_delimited(9, length_delimited(1, b"\xc3\x28")),  # an attribute key that is not UTF-8
    length_delimited(9, length_delimited(1, b"k") + length_delimited(2, length_delimited(
        6, length_delimited(1, length_delimited(1, b"inner") + length_delimited(2, length_delimited(
            1, b"\xff"))))))  # a string deep in a kvlist value that is not UTF-8
], ids=["truncated", "key-not-utf8", "nested-string-not-utf8"])
def test_a_span_that_does_not_parse_refuses_the_request_naming_it(bad):
    good = valid_span().SerializeToString()
    with pytest.raises(MalformedRequest, match=r"resource_spans\[0\]\.scope_spans\[0\]\.spans\[1\] is not a valid "
                                               r"Span"):
        decode(_frame(spans=(good, bad, good)))


def test_nesting_is_checked_at_the_depth_a_downstream_parses_it():
    # Protobuf parsers (upb, C++) refuse more than 100 levels counted from the request: an
    # attribute value that parses inside a lone span can be too deep inside a request.
    def span(depth: int) -> bytes:
        return valid_span().SerializeToString() + length_delimited(
            9, length_delimited(1, b"k") + length_delimited(2, _nested(depth)))

    deep = span(48)
    Span.FromString(deep)  # fine alone
    with pytest.raises(MalformedRequest, match=r"spans\[0\] is nested too deeply"):
        decode(_frame(spans=(deep,)))
    assert decode(_frame(spans=(span(45),))).batch.span_count == 1
    with pytest.raises(MalformedRequest, match=r"spans\[0\] is not a valid Span"):
        decode(_frame(spans=(span(10_000),)))


def test_unknown_fields_are_kept_as_they_came():
    unknown = length_delimited(100, b"future") + bytes([0x98, 0x06, 0x01])  # field 100 bytes, field 99 varint
    span = valid_span().SerializeToString() + unknown
    resource = Resource(attributes=[kv("service.name", "api")]).SerializeToString() + unknown
    scope = InstrumentationScope(name="lib").SerializeToString() + unknown
    batch = decode(_frame(resource=resource, scope=scope, spans=(span,))).batch
    assert batch.table.column("raw").to_pylist() == [span]
    assert batch.table.column("service").to_pylist() == ["api"]
    assert list(batch.resources.values()) == [length_delimited(1, resource)]
    assert list(batch.scopes.values()) == [length_delimited(1, scope)]


@pytest.mark.parametrize("link, problem", [
    ({"trace_id": b"\x01" * 3, "span_id": sid(1)}, "links[0].trace_id must be empty or 16 bytes, got 3"),
    ({"trace_id": tid(5), "span_id": b"\x01" * 9}, "links[0].span_id must be empty or 8 bytes, got 9"),
])
def test_spans_with_invalid_link_ids_are_rejected_individually(link, problem):
    bad = valid_span(span_id=sid(2))
    bad.links.add(**link)
    ok = valid_span()
    ok.links.add(trace_id=tid(5), span_id=sid(6))
    ok.links.add()  # empty ids: what a collector takes
    req = one_span_request(ok)
    req.resource_spans[0].scope_spans[0].spans.append(bad)
    decoded = decode(req)
    assert decoded.rejected_spans == 1 and decoded.error_message == f"1 span(s) rejected: {problem}"
    assert decoded.batch.table.column("span_id").to_pylist() == [sid(1)]


def test_a_bad_link_is_found_in_any_group():
    # Whether a request has links at all is read once from all its spans' bytes (decode._any_links):
    # a link in the last group of the last resource counts as much as one in the first.
    bad = valid_span(span_id=sid(3))
    bad.links.add(trace_id=b"\x01" * 3)
    req = one_span_request(valid_span())
    rs = req.resource_spans.add()
    rs.scope_spans.add().spans.append(valid_span(span_id=sid(2)))
    rs.scope_spans.add().spans.extend([valid_span(span_id=sid(4)), bad])
    decoded = decode(req)
    assert decoded.rejected_spans == 1
    assert decoded.error_message == "1 span(s) rejected: links[0].trace_id must be empty or 16 bytes, got 3"
    assert decoded.batch.table.column("span_id").to_pylist() == [sid(1), sid(2), sid(4)]


def test_spans_without_status_read_unset():
    with_status = valid_span(span_id=sid(2))
    with_status.status.code = 1
    req = one_span_request(valid_span())
    req.resource_spans[0].scope_spans[0].spans.append(with_status)
    table = decode(req).batch.table
    assert table.column("status_code").to_pylist() == [0, 1]
    assert table.column("status_message").to_pylist() == ["", ""]


@pytest.mark.parametrize("value", [-1, 6, 255, 256, 2**31 - 1, -(2**31)])
def test_kind_and_status_code_are_open_enums(value):
    # Any int32 is a valid enum value on the wire; the columns read those they cannot hold as 0.
    span = valid_span(kind=value)
    span.status.code = value
    row = decode(one_span_request(span)).batch.table.to_pylist()[0]
    fits = value if 0 <= value <= 255 else 0
    assert (row["kind"], row["status_code"]) == (fits, fits)
    assert Span.FromString(row["raw"]) == span


def test_column_wise_decoding_equals_span_by_span():
    # Requests without links or invalid ids are decoded a column at a time (list comprehensions,
    # one Arrow call per column); the span-by-span decoding, kept for the others, is the reference.
    from itertools import chain

    from processor.receivers import decode as decoding

    req = one_span_request(valid_span(parent_span_id=sid(9), kind=-1, start_time_unix_nano=2**64 - 1,
                                      end_time_unix_nano=2**63 - 1))
    spans = req.resource_spans[0].scope_spans[0].spans
    spans.append(valid_span(span_id=sid(2), parent_span_id=bytes(8), kind=256, name="é"))
    spans.append(valid_span(span_id=sid(3), trace_id=tid(2), kind=3))
    spans[1].status.code, spans[1].status.message = 2, "broken"
    spans[2].status.SetInParent()
    req.resource_spans.add().scope_spans.add()  # no resource, an empty group
    other = req.resource_spans.add()
    other.schema_url = "https://schema"
    other.resource.attributes.extend([kv("service.name", "db")])
    other.scope_spans.add(scope=InstrumentationScope(name="s")).spans.append(valid_span(span_id=sid(4)))
    for statuses in (True, False):
        if not statuses:
            for span in spans:
                span.ClearField("status")
        data = req.SerializeToString()
        whole, frames = ExportTraceServiceRequest.FromString(data), parse_protobuf(data)
        groups = [list(ss.spans) for rs in frames.resource_spans for ss in rs.scope_spans]
        assert len(list(chain.from_iterable(groups))) == 4
        fast, reference = decoding._decode(whole, frames), decoding._decode_span_by_span(whole, frames, groups, False)
        assert fast.batch.table.equals(reference.batch.table)
        assert fast.batch.table.column("status_code").to_pylist() == ([0, 2, 0, 0] if statuses else [0] * 4)
        assert (fast.batch.resources, fast.batch.scopes, fast.batch.traces) == (
            reference.batch.resources, reference.batch.scopes, reference.batch.traces)


def test_requests_of_any_size_have_their_ids_checked_alike():
    # decode checks the ids' lengths against offsets kept for the largest request yet (grown
    # past it on demand): a larger request, then a smaller one with one id too long.
    for n, bad in ((1500, None), (3000, None), (700, 699)):
        req = ExportTraceServiceRequest()
        spans = req.resource_spans.add().scope_spans.add().spans
        spans.extend(valid_span(span_id=(k + 1).to_bytes(8, "big")) for k in range(n))
        if bad is not None:
            spans[bad].trace_id = tid(1) + b"\x00"
        decoded = decode(req)
        assert decoded.batch.span_count == n - (bad is not None)
        assert decoded.rejected_spans == (bad is not None)


def test_empty_statuses_read_unset_and_a_single_error_is_read():
    # OTel SDKs send an empty status for unset: with every status empty none is read.
    spans = [valid_span(span_id=sid(k)) for k in (1, 2, 3)]
    for span in spans:
        span.status.SetInParent()
    req = one_span_request(spans[0])
    req.resource_spans[0].scope_spans[0].spans.extend(spans[1:])
    assert decode(req).batch.table.column("status_code").to_pylist() == [0, 0, 0]
    req.resource_spans[0].scope_spans[0].spans[2].status.message = "late"
    table = decode(req).batch.table
    assert table.column("status_code").to_pylist() == [0, 0, 0]
    assert table.column("status_message").to_pylist() == ["", "", "late"]
