"""OTLP/JSON encoding: hex ids, integer enums, lowerCamelCase; lossless round trips; the document
walk reads what the messages hold."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from processor.otlp.otlpjson import (
    MAX_JSON_DEPTH,
    SPAN_KINDS,
    OtlpJsonError,
    any_value,
    attribute_values,
    enum,
    parse_json,
    request_from_json,
    request_to_json,
    span_id,
    spans,
)

# From opentelemetry-proto examples/trace.json (ids in upper case, as there).
SPEC_EXAMPLE = """{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name",
"value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0",
"attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
"parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":"1544712660000000000",
"endTimeUnixNano":"1544712661000000000","kind":2,"attributes":[{"key":"my.span.attr",
"value":{"stringValue":"some value"}}]}]}]}]}"""


def rich_request() -> ExportTraceServiceRequest:
    """Every field kind a span can carry."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.21.0")
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
    rs.resource.dropped_attributes_count = 1
    ss = rs.scope_spans.add(schema_url="https://scope/schema")
    ss.scope.name, ss.scope.version = "lib", "1.2"
    span = ss.spans.add(trace_id=bytes(range(16)), span_id=bytes(range(8, 16)), parent_span_id=b"\xff" * 8,
                        trace_state="k=v", flags=0x101, name="GET /pay", kind=3,
                        start_time_unix_nano=2**63 - 1, end_time_unix_nano=2**63 - 1,
                        dropped_attributes_count=2, dropped_events_count=3, dropped_links_count=4)
    span.attributes.extend([
        KeyValue(key="s", value=AnyValue(string_value="ü")),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="i", value=AnyValue(int_value=-(2**63))),
        KeyValue(key="d", value=AnyValue(double_value=1.5)),
        KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\x01")),
        KeyValue(key="arr", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
        KeyValue(key="kv", value=AnyValue(kvlist_value=KeyValueList(
            values=[KeyValue(key="x", value=AnyValue(string_value="y"))]))),
    ])
    event = span.events.add(time_unix_nano=5, name="exception", dropped_attributes_count=1)
    event.attributes.add(key="exception.type", value=AnyValue(string_value="E"))
    span.links.add(trace_id=b"\x0a" * 16, span_id=b"\x0b" * 8, trace_state="a=b", flags=1)
    span.status.code, span.status.message = 2, "boom"
    return req


def test_rich_request_round_trips() -> None:
    req = rich_request()
    assert request_from_json(request_to_json(req)) == req


def test_encoding_follows_otlp_json() -> None:
    doc = json.loads(request_to_json(rich_request()))
    rs = doc["resourceSpans"][0]
    span = rs["scopeSpans"][0]["spans"][0]
    assert rs["schemaUrl"] == "https://opentelemetry.io/schemas/1.21.0"
    assert span["traceId"] == bytes(range(16)).hex()
    assert span["spanId"] == bytes(range(8, 16)).hex()
    assert span["parentSpanId"] == "ff" * 8
    assert span["links"][0] == {"traceId": "0a" * 16, "spanId": "0b" * 8, "traceState": "a=b", "flags": 1}
    assert span["kind"] == 3 and span["status"]["code"] == 2
    assert span["startTimeUnixNano"] == str(2**63 - 1)
    assert {"key": "bytes", "value": {"bytesValue": "AAE="}} in span["attributes"]  # only ids are hex


def test_spec_example_parses() -> None:
    req = request_from_json(SPEC_EXAMPLE)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.parent_span_id.hex() == "eee19b7ec3c1b173"
    assert span.kind == 2 and span.start_time_unix_nano == 1544712660000000000


def test_accepts_enum_names_snake_case_keys_unknown_fields_and_bytes() -> None:
    text = json.dumps({"resourceSpans": [{"futureField": 1, "scopeSpans": [{"spans": [{
        "trace_id": "01" * 16, "spanId": "02" * 8, "kind": "SPAN_KIND_CLIENT",
        "status": {"code": "STATUS_CODE_ERROR", "unknown": True}, "newThing": {"a": 1}}]}]}]})
    span = request_from_json(text.encode()).resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == b"\x01" * 16 and span.span_id == b"\x02" * 8
    assert span.kind == 3 and span.status.code == 2


def test_dict_input_is_not_mutated() -> None:
    doc = json.loads(SPEC_EXAMPLE)
    before = json.dumps(doc)
    request_from_json(doc)
    assert json.dumps(doc) == before


@pytest.mark.parametrize("text, message", [
    ("{", "invalid JSON"),
    ("[]", "JSON object"),
    ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}',
     r"resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId: 'xyz' is not a hex id"),
    ('{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":5}]}]}]}', "name"),
])
def test_malformed_input_raises_with_context(text: str, message: str) -> None:
    with pytest.raises(OtlpJsonError, match=message):
        request_from_json(text)


@pytest.mark.parametrize("text", [
    '{"resourceSpans":' + "[" * 10_000 + "]" * 10_000 + "}",
    '{"a":' * 10_000 + "1" + "}" * 10_000,
    "[" * 10_000,  # never closed: no parser may follow it down either
    '{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":'
    + '{"arrayValue":{"values":[' * 200 + '{"intValue":"1"}' + "]}}" * 200 + "}]}]}]}]}",
], ids=["lists", "objects", "unclosed", "any-values"])
def test_json_nested_too_deep_is_refused_before_it_is_parsed(text: str) -> None:
    with pytest.raises(OtlpJsonError, match=f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels"):
        request_from_json(text)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


# Strings full of what a depth count must not take for structure: brackets, quotes, escapes.
_tricky_text = st.text(alphabet='[]{}"\\ab\n', max_size=6)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _tricky_text),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(_tricky_text, children, max_size=3)),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(value=_json_values, wrappers=st.lists(st.sampled_from(["list", "object"]), min_size=MAX_JSON_DEPTH - 12,
                                             max_size=MAX_JSON_DEPTH + 4))
def test_the_depth_limit_counts_exactly_the_nesting_json_reads(value: object, wrappers: list[str]) -> None:
    for kind in wrappers:
        value = [value] if kind == "list" else {"[\\\"{": value}
    doc = {"k": value}
    text = json.dumps(doc)
    if _depth(doc) <= MAX_JSON_DEPTH:
        assert parse_json(text) == doc
    else:
        with pytest.raises(OtlpJsonError, match="nested deeper"):
            parse_json(text)


@settings(max_examples=60, deadline=None)
@given(trace_id=st.binary(min_size=16, max_size=16), span_id=st.binary(min_size=8, max_size=8),
       parent=st.binary(max_size=8), name=st.text(), kind=st.integers(0, 5),
       attrs=st.dictionaries(st.text(max_size=10), st.integers(-(2**63), 2**63 - 1), max_size=4))
def test_arbitrary_spans_round_trip(trace_id: bytes, span_id: bytes, parent: bytes, name: str, kind: int,
                                    attrs: dict[str, int]) -> None:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind)
    span.attributes.extend(KeyValue(key=k, value=AnyValue(int_value=v)) for k, v in attrs.items())
    assert request_from_json(request_to_json(req)) == req


# --- the document walk (``spans``): the same reading as the messages ------------------------


def _spans_of(doc: dict) -> list:
    return [({k: any_value(v) for k, v in resource.items()}, intrinsics) for resource, _, intrinsics in spans(doc)]


def test_spans_read_what_request_from_json_reads() -> None:
    req = rich_request()
    [(resource, span, intrinsics)] = list(spans(json.loads(request_to_json(req))))
    message = req.resource_spans[0].scope_spans[0].spans[0]
    assert intrinsics == (message.trace_id, message.span_id, message.parent_span_id, "checkout", message.name,
                          message.kind, message.start_time_unix_nano, message.end_time_unix_nano,
                          message.status.code, message.status.message)
    assert any_value(resource["service.name"]) == "checkout"
    assert attribute_values(span["attributes"]) == {
        "s": "ü", "b": True, "i": -(2**63), "d": 1.5, "bytes": b"\x00\x01", "arr": [1], "kv": {"x": "y"}}


def test_spans_and_requests_accept_the_same_variants() -> None:
    """snake_case keys, enum names and numeric strings, base64 ids, the legacy scope key."""
    camel = json.loads(SPEC_EXAMPLE)
    variant = {"resource_spans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"string_value": "my.service"}}]},
        "instrumentationLibrarySpans": [{"instrumentationLibrary": {"name": "my.library"}, "spans": [{
            "trace_id": base64.b64encode(bytes.fromhex("5B8EFFF798038103D269B633813FC60C")).decode(),
            "span_id": "EEE19B7EC3C1B174",
            "parent_span_id": base64.b64encode(bytes.fromhex("EEE19B7EC3C1B173")).decode(),
            "name": "I'm a server span", "start_time_unix_nano": "1544712660000000000",
            "end_time_unix_nano": 1544712661000000000, "kind": "SPAN_KIND_SERVER", "status": {"code": "0"}}]}]}]}
    assert _spans_of(variant) == _spans_of(camel)
    expected = request_from_json(SPEC_EXAMPLE)
    expected.resource_spans[0].scope_spans[0].spans[0].ClearField("attributes")
    expected.resource_spans[0].scope_spans[0].spans[0].status.SetInParent()
    expected.resource_spans[0].scope_spans[0].scope.Clear()
    expected.resource_spans[0].scope_spans[0].scope.name = "my.library"
    assert request_from_json(variant) == expected


@pytest.mark.parametrize("value, expected", [(2, 2), ("2", 2), ("SPAN_KIND_SERVER", 2), ("SPAN_KIND_FUTURE", 0),
                                             (None, 0)])
def test_enums_read_as_json_format_reads_them(value, expected) -> None:
    assert enum(value, SPAN_KINDS) == expected
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "01" * 16, "spanId": "02" * 8, "kind": value}]}]}]}
    assert request_from_json(doc).resource_spans[0].scope_spans[0].spans[0].kind == expected


@pytest.mark.parametrize("value", ["xyz", "zz", "AAE=", 5])
def test_an_id_neither_hex_nor_base64_of_an_id_is_refused(value) -> None:
    with pytest.raises(OtlpJsonError, match="is not a hex id"):
        span_id(value, "traceId")


@pytest.mark.parametrize("span, message", [
    ({"spanId": "02" * 8}, r"^resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId: missing$"),
    ({"traceId": "01" * 16, "spanId": "xyz"}, r"spans\[0\]\.spanId: 'xyz' is not a hex id"),
    ({"traceId": "01" * 16, "spanId": "02" * 8, "startTimeUnixNano": "soon"}, r"spans\[0\]: malformed span: "),
    (5, r"spans\[0\]: expected an object, not int"),
])
def test_a_malformed_span_says_where(span, message) -> None:
    with pytest.raises(OtlpJsonError, match=message):
        list(spans({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))


def test_any_value_kinds_in_both_spellings() -> None:
    assert [any_value(v) for v in ({"stringValue": "a"}, {"string_value": "a"}, {"intValue": "7"}, {"int_value": 7},
                                    {"boolValue": False}, {"doubleValue": 2}, {"bytesValue": "AAE="},
                                    {"arrayValue": {"values": [{"intValue": "1"}]}},
                                    {"kvlist_value": {"values": [{"key": "k", "value": {"boolValue": True}}]}},
                                    {}, None, {"stringValue": None})] == \
        ["a", "a", 7, 7, False, 2.0, b"\x00\x01", [1], {"k": True}, None, None, None]
