"""processor.settlement: a payload's spans leave the journal once every exporter is done with that payload."""

from __future__ import annotations

import dataclasses
import random

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.model import ReleasedSpans
from processor.otlp.payload import encode_payloads
from processor.settlement import Settlement, with_keys
from processor.store import released_from_rows
from tests.support.harness import kv, sid, tid


def test_done_comes_once_when_every_exporter_has_settled_the_payload():
    done: list[str] = []
    s = Settlement(lambda: done.append("done"))
    first = s.expect()
    first()
    assert done == []                  # not sealed: another exporter may still get the payload
    second = s.expect()
    s.seal()
    first()                            # settling twice counts once
    assert done == []                  # the second exporter still holds it
    second()
    assert done == ["done"]
    second()
    assert done == ["done"]


def test_a_payload_no_exporter_holds_is_settled_when_sealed():
    done: list[str] = []
    Settlement(lambda: done.append("done")).seal()
    assert done == ["done"]


def released(n: int, groups: int, seed: int, chunked: bool) -> ReleasedSpans:
    """``n`` spans of 40 traces spread at random over ``groups`` (resource, scope) pairs."""
    rng = random.Random(seed)
    resources = {r: ResourceSpans(resource={"attributes": [kv("service.name", f"s{r}")]}).SerializeToString()
                 for r in range(groups)}
    scopes = {s: ScopeSpans(scope={"name": f"scope{s}"}).SerializeToString() for s in range(groups)}
    pairs = [rng.randrange(groups) for _ in range(n)]
    traces = [tid(rng.randrange(40)) for _ in range(n)]
    raw = [Span(trace_id=t, span_id=sid(i + 1), name="x" * rng.randrange(50, 400)).SerializeToString()
             for i, t in enumerate(traces)]
    span_ids = [sid(i + 1) for i in range(n)]
    spans = released_from_rows(trace_ids=traces, span_ids=span_ids, parent_span_ids=[None] * n, raw=raw,
                               resource_ids=pairs, scope_ids=pairs, resources=resources, scopes=scopes,
                               trace_count=40)
    # The store's table has every column, in two chunks when it released from two generations.
    return spans if not chunked else dataclasses.replace(
        spans, table=pa.Table.from_batches(spans.table.to_batches(max_chunksize=max(1, n // 2))))


@pytest.mark.parametrize(("n", "groups", "max_bytes"), [(1, 1, 3 << 20), (300, 1, 4000), (500, 7, 5000),
                                                        (800, 3, 3 << 20), (200, 5, 300)])
@pytest.mark.parametrize("chunked", [True, False])
def test_each_payloads_keys_are_the_spans_it_carries(n, groups, max_bytes, chunked):
    spans = released(n, groups, seed=n + groups, chunked=chunked)
    seen = 0
    for payload, keys in with_keys(spans, encode_payloads(spans, max_bytes=max_bytes)):
        request = ExportTraceServiceRequest.FromString(payload.data)
        carried = sorted((span.trace_id, span.span_id) for rs in request.resource_spans
                         for ss in rs.scope_spans for span in ss.spans)
        assert sorted(zip(keys.column("trace_id").to_pylist(), keys.column("span_id").to_pylist())) == carried
        seen += len(carried)
    assert seen == n
