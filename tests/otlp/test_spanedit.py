"""processor.otlp.spanedit: appended attributes/events, untouched spans byte-identical."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.otlp.spanedit import Annotation, SpanEvent, any_value, append_to_spans
from tests.support.harness import kv, sid, tid


def original(n: int) -> bytes:
    span = Span(trace_id=tid(1), span_id=sid(n), name=f"op{n}", start_time_unix_nano=5, end_time_unix_nano=9)
    span.attributes.extend([kv("http.method", "GET"), kv("list", [1, 2])])
    span.events.add(name="existing", time_unix_nano=6, attributes=[kv("k", "v")])
    span.links.add(trace_id=tid(2), span_id=sid(3))
    span.status.code = 2
    return span.SerializeToString()


def test_untouched_spans_are_the_same_bytes_objects():
    raw = [original(n) for n in range(1, 5)]
    out = append_to_spans(raw, {2: Annotation(attributes={"x": 1})})
    assert out is not raw and len(out) == 4
    for i in (0, 1, 3):
        assert out[i] is raw[i]
    assert raw[2] == original(3)  # the input list and bytes are not modified


def test_annotated_span_keeps_its_bytes_as_prefix_and_parses_with_the_additions():
    raw = [original(1)]
    note = Annotation(
        attributes={"faulttrace.root_cause": True, "faulttrace.score": 0.93, "faulttrace.rank": 1,
                    "faulttrace.rule": "db-timeout ✓", "faulttrace.path": ["api", "db"],
                    "faulttrace.ints": [1, 2], "faulttrace.flags": [True, False], "faulttrace.ratios": [0.5]},
        events=[SpanEvent("faulttrace.finding", 7, {"rule": "db-timeout", "cut_set": ["a", "b"]}),
                SpanEvent("faulttrace.bare", 8)])
    out = append_to_spans(raw, {0: note})[0]
    assert out.startswith(raw[0]) and len(out) > len(raw[0])
    span = Span.FromString(out)  # the standard parser
    before = Span.FromString(raw[0])
    assert list(span.attributes)[:2] == list(before.attributes)
    added = {a.key: a.value for a in span.attributes[2:]}
    assert added == {
        "faulttrace.root_cause": AnyValue(bool_value=True), "faulttrace.score": AnyValue(double_value=0.93),
        "faulttrace.rank": AnyValue(int_value=1), "faulttrace.rule": AnyValue(string_value="db-timeout ✓"),
        "faulttrace.path": any_value(["api", "db"]), "faulttrace.ints": any_value([1, 2]),
        "faulttrace.flags": any_value([True, False]), "faulttrace.ratios": any_value([0.5]),
    }
    assert added["faulttrace.path"] == AnyValue(array_value=ArrayValue(values=[
        AnyValue(string_value="api"), AnyValue(string_value="db")]))
    assert [e.name for e in span.events] == ["existing", "faulttrace.finding", "faulttrace.bare"]
    finding = span.events[1]
    assert finding.time_unix_nano == 7
    assert {a.key: a.value for a in finding.attributes} == {"rule": any_value("db-timeout"),
                                                            "cut_set": any_value(["a", "b"])}
    # Everything else is untouched.
    for field in ("trace_id", "span_id", "name", "start_time_unix_nano", "end_time_unix_nano", "links", "status"):
        assert getattr(span, field) == getattr(before, field)


def test_appending_equals_adding_with_the_protobuf_api():
    raw = original(1)
    note = Annotation(attributes={"a": "b", "n": 3}, events=[SpanEvent("e", 1, {"x": 2.5})])
    expected = Span.FromString(raw)
    expected.attributes.extend([kv("a", "b"), kv("n", 3)])
    expected.events.add(name="e", time_unix_nano=1, attributes=[kv("x", 2.5)])
    assert Span.FromString(append_to_spans([raw], {0: note})[0]) == expected


def test_pre_encoded_edits_and_repeated_annotation():
    raw = [original(1)]
    once = append_to_spans(raw, {0: Annotation(attributes={"first": 1}).encode()})
    twice = append_to_spans(once, {0: Annotation(attributes={"second": 2})})
    assert twice[0].startswith(once[0]) and once[0].startswith(raw[0])
    assert [a.key for a in Span.FromString(twice[0]).attributes][-2:] == ["first", "second"]


def test_empty_annotation_changes_nothing():
    raw = [original(1)]
    assert append_to_spans(raw, {0: Annotation()})[0] == raw[0]


def test_any_value_types():
    assert any_value(True) == AnyValue(bool_value=True)  # bool before int
    assert any_value(0) == AnyValue(int_value=0)
    assert any_value(1.0) == AnyValue(double_value=1.0)
    assert any_value("s") == AnyValue(string_value="s")
    assert any_value((1, 2)) == AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1),
                                                                       AnyValue(int_value=2)]))
    with pytest.raises(TypeError):
        any_value(object())  # type: ignore[arg-type]
