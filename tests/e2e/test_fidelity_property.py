"""Property: arbitrary spans survive decode -> store -> release -> encode_payloads unchanged.

Whatever OTLP can express (ids, unicode names, nested attributes of every
type, events, links, status, flags, dropped counts, resources and scopes with
schema URLs) comes out of the store's export framing protobuf-equal, each span
exactly once, under its original resource and scope; spans with invalid ids
are the only ones missing, and they are counted.  The components run directly
(no network) so Hypothesis can try many shapes quickly.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from dsl import AttrRef, AttrSource, AttrType
from processor.analysis.attributes import Projection, Projector
from processor.otlp.payload import encode_payloads
from processor.receivers.decode import decode
from processor.store import SpanStore
from tests.support.harness import assert_same_spans

pytestmark = pytest.mark.timeout(120)

PROJECTION = Projection.of([
    AttrRef(AttrSource.SPAN, "http.method"),
    AttrRef(AttrSource.SPAN, "k", AttrType.DOUBLE),
    AttrRef(AttrSource.SPAN, "k", AttrType.INT_ARRAY),
    AttrRef(AttrSource.RESOURCE, "service.name"),
    AttrRef(AttrSource.EVENT, "", AttrType.PRESENT, event="exception"),
    AttrRef(AttrSource.EVENT, "k", AttrType.BOOL, event="exception"),
])

keys = st.one_of(st.sampled_from(["http.method", "k", "service.name", "ü", ""]), st.text(max_size=8))
int64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
uint32 = st.integers(0, 2**32 - 1)

scalars = st.one_of(
    st.text(max_size=12).map(lambda v: AnyValue(string_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
    int64.map(lambda v: AnyValue(int_value=v)),
    st.floats(allow_nan=False).map(lambda v: AnyValue(double_value=v)),
    st.binary(max_size=12).map(lambda v: AnyValue(bytes_value=v)),
    st.just(AnyValue()),  # an empty AnyValue is legal OTLP
)


def _containers(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
    arrays = st.lists(children, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs)))
    kvlists = st.lists(st.tuples(keys, children), max_size=3).map(
        lambda items: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in items])))
    return st.one_of(arrays, kvlists)


any_values = st.recursive(scalars, _containers, max_leaves=6)
attributes = st.lists(st.builds(KeyValue, key=keys, value=any_values), max_size=4)
nonzero_trace = st.integers(1, 2**128 - 1).map(lambda n: n.to_bytes(16, "big"))
nonzero_span = st.integers(1, 2**64 - 1).map(lambda n: n.to_bytes(8, "big"))
trace_state = st.sampled_from(["", "vendor=opaque", "a=1,b=2"])


@st.composite
def spans(draw: st.DrawFn, trace_pool: list[bytes]) -> Span:
    span = Span(
        trace_id=draw(st.sampled_from(trace_pool)), span_id=draw(nonzero_span),
        parent_span_id=draw(st.one_of(st.just(b""), st.just(bytes(8)), nonzero_span)),
        name=draw(st.text(max_size=20)), kind=draw(st.integers(0, 5)), trace_state=draw(trace_state),
        flags=draw(uint32), start_time_unix_nano=draw(uint64), end_time_unix_nano=draw(uint64),
        attributes=draw(attributes), dropped_attributes_count=draw(uint32),
        dropped_events_count=draw(uint32), dropped_links_count=draw(uint32),
        status=Status(code=draw(st.integers(0, 2)), message=draw(st.text(max_size=10))),
    )
    for _ in range(draw(st.integers(0, 2))):
        span.events.add(name=draw(st.sampled_from(["exception", "log", "ünï"])), time_unix_nano=draw(uint64),
                        attributes=draw(attributes), dropped_attributes_count=draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(0, 2))):
        span.links.add(trace_id=draw(nonzero_trace), span_id=draw(nonzero_span), trace_state=draw(trace_state),
                       attributes=draw(attributes), dropped_attributes_count=draw(st.integers(0, 3)),
                       flags=draw(uint32))
    return span


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    trace_pool = draw(st.lists(nonzero_trace, min_size=1, max_size=4, unique=True))
    schema = st.sampled_from(["", "https://opentelemetry.io/schemas/1.21.0"])
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = ResourceSpans(schema_url=draw(schema))
        if draw(st.booleans()):  # sometimes no resource at all
            rs.resource.attributes.extend(draw(attributes))
            rs.resource.dropped_attributes_count = draw(st.integers(0, 3))
        for _ in range(draw(st.integers(1, 3))):
            ss = ScopeSpans(schema_url=draw(schema))
            if draw(st.booleans()):
                ss.scope.name = draw(st.text(max_size=8))
                ss.scope.version = draw(st.sampled_from(["", "1.0"]))
                ss.scope.attributes.extend(draw(attributes))
            ss.spans.extend(draw(st.lists(spans(trace_pool), max_size=4)))
            rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return req


def _valid(span: Span) -> bool:
    return (len(span.trace_id) == 16 and any(span.trace_id) and len(span.span_id) == 8 and any(span.span_id)
            and len(span.parent_span_id) in (0, 8))


async def _through_the_store(data: bytes, max_bytes: int) -> tuple[list[ExportTraceServiceRequest], int]:
    decoded = decode(data)
    store = SpanStore(generation_rows=5)  # several generations per example
    projector = Projector(PROJECTION)

    def projected(spans):  # what analysis does with a released batch: it must cope with any of them
        table = projector.project(spans.table, spans.resources)
        assert table.schema == PROJECTION.schema and table.num_rows == spans.span_count

    await store.open()
    try:
        await store.append(decoded.batch)
        trace_ids = list(decoded.batch.traces)
        # Release in two rounds, so released and still-buffered spans coexist.
        first = await store.release(trace_ids[::2])
        second = await store.release(trace_ids[1::2])
        projected(first)
        projected(second)
        assert store.buffered_spans == 0
    finally:
        await store.close()
    payloads = [p for released in (first, second) for p in encode_payloads(released, max_bytes=max_bytes)]
    for p in payloads:  # only a span bigger than max_bytes on its own may exceed it
        assert p.span_count == 1 or len(p.data) <= max_bytes
    return [ExportTraceServiceRequest.FromString(p.data) for p in payloads], decoded.rejected_spans


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(), max_bytes=st.sampled_from([3 * 1024 * 1024, 300]))
def test_arbitrary_spans_come_out_equal_under_their_resource_and_scope(req, max_bytes):
    out, rejected = asyncio.run(_through_the_store(req.SerializeToString(), max_bytes))
    assert rejected == 0
    assert_same_spans([req], out)
    for exported in out:  # regrouped: each resource once per request, each scope once per resource
        heads = [_head(rs) for rs in exported.resource_spans]
        assert len(heads) == len(set(heads))
        for rs in exported.resource_spans:
            scopes = [_head(ss) for ss in rs.scope_spans]
            assert len(scopes) == len(set(scopes))


def _head(container: ResourceSpans | ScopeSpans) -> bytes:
    """A ResourceSpans/ScopeSpans without its children: what identifies its group."""
    head = type(container)()
    head.CopyFrom(container)
    head.ClearField("scope_spans" if isinstance(head, ResourceSpans) else "spans")
    return head.SerializeToString(deterministic=True)


bad_trace = st.one_of(st.just(bytes(16)), st.binary(max_size=20).filter(lambda b: len(b) != 16))
bad_span = st.one_of(st.just(bytes(8)), st.binary(max_size=10).filter(lambda b: len(b) != 8))
bad_parent = st.binary(min_size=1, max_size=12).filter(lambda b: len(b) != 8)


@st.composite
def requests_with_invalid_ids(draw: st.DrawFn) -> ExportTraceServiceRequest:
    req = draw(requests())
    spans_ = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    for span in spans_:
        which = draw(st.sampled_from(["ok", "ok", "trace", "span", "parent"]))
        if which == "trace":
            span.trace_id = draw(bad_trace)
        elif which == "span":
            span.span_id = draw(bad_span)
        elif which == "parent":
            span.parent_span_id = draw(bad_parent)
    return req


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests_with_invalid_ids())
def test_invalid_ids_are_rejected_one_by_one_and_the_rest_pass_unchanged(req):
    out, rejected = asyncio.run(_through_the_store(req.SerializeToString(), 3 * 1024 * 1024))
    valid = ExportTraceServiceRequest()
    valid.CopyFrom(req)
    invalid = 0
    for rs in valid.resource_spans:
        for ss in rs.scope_spans:
            keep = [s for s in ss.spans if _valid(s)]
            invalid += len(ss.spans) - len(keep)
            del ss.spans[:]
            ss.spans.extend(keep)
    assert rejected == invalid
    assert_same_spans([valid], out)
