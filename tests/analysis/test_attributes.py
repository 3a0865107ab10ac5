"""processor.analysis.attributes: attribute columns decoded from stored spans at release.

tests/receivers/test_decode.py covers what the receivers keep of a request;
here: projecting a table as the store releases it (value types, nil-safety,
events, resources) and the value cache.
"""

from __future__ import annotations

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import processor.analysis.attributes as project_module
from dsl import AttrRef, AttrSource, AttrType, column_name
from processor.analysis.attributes import Projection, Projector
from processor.receivers.decode import decode
from processor.store import STORE_SCHEMA
from tests.support.harness import kv, sid, tid

S, R, E = AttrSource.SPAN, AttrSource.RESOURCE, AttrSource.EVENT


def request(resources: list[tuple[str, list[dict]]]) -> ExportTraceServiceRequest:
    """One ResourceSpans per (zone, spans' attributes)."""
    req = ExportTraceServiceRequest()
    n = 0
    for zone, spans in resources:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend([kv("service.name", "api"), kv("cloud.zone", zone)])
        ss = rs.scope_spans.add()
        for attrs in spans:
            n += 1
            span = ss.spans.add(trace_id=tid(n), span_id=sid(n), name=f"op{n}")
            span.attributes.extend(kv(k, v) for k, v in attrs.items())
    return req


def stored(req: ExportTraceServiceRequest) -> tuple[pa.Table, dict[int, bytes]]:
    batch = decode(req).batch
    assert batch.table.schema == STORE_SCHEMA  # no attribute columns until release
    return batch.table, batch.resources


def column(table: pa.Table, ref: AttrRef) -> list:
    return table.column(column_name(ref)).to_pylist()


def test_a_released_table_gets_the_projected_columns_in_schema_order():
    refs = [AttrRef(S, "http.route"), AttrRef(R, "cloud.zone"), AttrRef(S, "http.response.status_code", AttrType.INT)]
    table, resources = stored(request([("a", [{"http.route": "/x", "http.response.status_code": 200}, {}]),
                                       ("b", [{"http.route": "/y"}])]))
    projection = Projection.of(refs)
    out = Projector(projection).project(table, resources)
    assert out.schema == projection.schema
    assert column(out, refs[0]) == ["/x", None, "/y"]
    assert column(out, refs[1]) == ["a", "a", "b"]
    assert column(out, refs[2]) == [200, None, None]
    assert out.column("raw") == table.column("raw")  # the span bytes are untouched


def test_resource_values_follow_each_row_whatever_the_row_order():
    ref = AttrRef(R, "cloud.zone")
    table, resources = stored(request([("a", [{}, {}]), ("b", [{}]), ("c", [{}])]))
    shuffled = table.take([3, 0, 2, 1])  # released rows come from several generations
    assert column(Projector(Projection.of([ref])).project(shuffled, resources), ref) == ["c", "a", "b", "a"]


def test_a_resource_key_no_resource_has_is_a_column_of_typed_nulls():
    # Made as nulls, not taken row by row; beside a key some resources have, taken as before.
    absent = [AttrRef(R, "k8s.pod.name"), AttrRef(R, "k8s.container.restart_count", AttrType.INT)]
    present = AttrRef(R, "cloud.zone")
    projection = Projection.of([*absent, present])
    table, resources = stored(request([("a", [{}, {}]), ("b", [{}])]))
    out = Projector(projection).project(table.take([2, 0, 1]), resources)
    assert out.schema == projection.schema
    for ref in absent:
        assert column(out, ref) == [None, None, None]
    assert column(out, present) == ["b", "a", "a"]


def test_one_encoding_converts_per_column_type_and_the_cache_keeps_them_apart():
    as_int, as_double, as_string = (AttrRef(S, "n", t) for t in (AttrType.INT, AttrType.DOUBLE, AttrType.STRING))
    projector = Projector(Projection.of([as_int, as_double, as_string]))
    for _ in range(2):  # the second batch is served from the cache
        table, resources = stored(request([("a", [{"n": 3}, {"n": "3"}, {"n": 3}])]))
        out = projector.project(table, resources)
        assert column(out, as_int) == [3, None, 3]
        assert column(out, as_double) == [3.0, None, 3.0]
        assert column(out, as_string) == [None, "3", None]


def test_a_full_cache_is_emptied_not_grown_and_values_stay_right(monkeypatch):
    monkeypatch.setattr(project_module, "CACHED_VALUES", 4)
    ref = AttrRef(S, "url.path")
    projector = Projector(Projection.of([ref]))
    paths = [f"/item/{i % 7}" for i in range(40)]
    table, resources = stored(request([("a", [{"url.path": p} for p in paths])]))
    assert column(projector.project(table, resources), ref) == paths
    assert all(len(cache) <= 4 for cache in projector._caches.values())


def test_event_columns_from_the_span_bytes():
    present, kind = AttrRef(E, "", AttrType.PRESENT, event="exception"), AttrRef(E, "exception.type", event="exception")
    req = request([("a", [{}, {}])])
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].events.add(name="exception", attributes=[kv("exception.type", "KeyError")])
    table, resources = stored(req)
    out = Projector(Projection.of([present, kind])).project(table, resources)
    assert column(out, present) == [True, False]
    assert column(out, kind) == ["KeyError", None]


def test_no_projection_leaves_the_table_as_it_is():
    table, resources = stored(request([("a", [{"k": "v"}])]))
    assert Projector(Projection.of(())).project(table, resources) is table
    assert Span.FromString(table.column("raw")[0].as_py()).attributes[0] == kv("k", "v")


def test_every_attribute_in_long_form_with_high_cardinality_keys_as_presence():
    from processor.analysis.attributes import ALL_ATTRIBUTES, KeyCardinality, LongForm

    spans = [{"db.rows": i % 3, "route": "/x" if i % 2 else "/y", "request.id": f"id-{i}",
              "tags": ["a", "b"], "ok": True} for i in range(KeyCardinality.MIN_SEEN + 8)]
    spans[-1]["request.id"] = ""   # the empty value says something whatever the key
    table, resources = stored(request([("a", spans)]))
    # at release the column is left empty: the analyzer decodes the span bytes it needs
    assert column(Projector(Projection.of([ALL_ATTRIBUTES])).project(table, resources), ALL_ATTRIBUTES) == [
        None] * len(spans)
    long_form = LongForm()
    long = long_form.table(table.select(["trace_id", "span_id", "service", "name", "raw"])).to_pylist()
    first = {(r["key"], r["type"], r["sval"], r["nval"]) for r in long if r["span_id"] == sid(1)}
    assert first == {("db.rows", "int", None, 0.0), ("route", "string", "/y", None),
                     ("request.id", "string", "id-0", None), ("tags", "string[]", "a", None),
                     ("tags", "string[]", "b", None), ("ok", "bool", "true", None)}
    high = long_form.cardinality.high
    assert "request.id" in high and "route" not in high
    ids = [r["sval"] for r in long if r["key"] == "request.id"]
    assert ids[-2] is None and ids[-1] == ""   # learned to be ids: present, value not kept
