"""processor.tools.ruletest.read_trace: a fixture case's trace read once, as requests for the
analysis and as the ``dsl.fixtures.FixtureSpan`` values ``compare`` matches against."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dsl.fixtures import FixtureError
from processor.tools.ruletest import read_trace

OTLP = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000001", "name": "root", "kind": 2,
             "startTimeUnixNano": "1000", "endTimeUnixNano": "2000", "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
             "attributes": [
                 {"key": "i", "value": {"intValue": "42"}}, {"key": "d", "value": {"doubleValue": 0.5}},
                 {"key": "b", "value": {"boolValue": True}},
                 {"key": "a", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"stringValue": "y"}]}}}]},
            {"traceId": "AQIDBAUGBwgJCgsMDQ4PEA==", "spanId": "AAAAAAAAAAI=", "parentSpanId": "0000000000000001",
             "name": "child", "kind": "SPAN_KIND_CLIENT", "startTimeUnixNano": 1100, "endTimeUnixNano": 1900,
             "events": [{"name": "exception", "attributes": [{"key": "exception.type", "value": {"stringValue": "E"}}]}]},
        ]}],
    }]
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_otlp_json_spans(tmp_path):
    _, spans = read_trace(write(tmp_path, "t.json", json.dumps(OTLP)))
    root, child = spans
    assert root.trace_id == bytes(range(1, 17)) and child.trace_id == root.trace_id  # hex and base64 ids
    assert (root.name, root.service, root.kind, root.status_code, root.status_message) == ("root", "web", 2, 2, "boom")
    assert root.attributes == {"i": 42, "d": 0.5, "b": True, "a": ["x", "y"]}
    assert child.parent_span_id == root.span_id and child.kind == 3 and child.start_ns == 1100
    assert child.events == (("exception", {"exception.type": "E"}),)


def test_otlp_json_lines_and_gzip(tmp_path):
    line = json.dumps(OTLP)
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(gzip.compress((line + "\n" + line + "\n").encode()))
    assert len(read_trace(p)[1]) == 4


def test_otlp_errors_name_the_file(tmp_path):
    with pytest.raises(FixtureError, match="bad.json"):
        read_trace(write(tmp_path, "bad.json", "{not json"))
    with pytest.raises(FixtureError, match="malformed"):
        read_trace(write(tmp_path, "m.json", '{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "x"}]}]}]}'))


# --- one reading for the analysis and the comparison ---------------------------------------


def test_the_spans_compared_are_the_spans_analysed(tmp_path):
    requests, spans = read_trace(write(tmp_path, "t.json", json.dumps(OTLP)))
    analysed = [s for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.trace_id, s.span_id, s.name, s.kind) for s in analysed] == \
        [(s.trace_id, s.span_id, s.name, s.kind) for s in spans]


def test_a_protobuf_trace_gives_the_same_spans(tmp_path):
    requests, spans = read_trace(write(tmp_path, "t.json", json.dumps(OTLP)))
    p = tmp_path / "t.pb"
    p.write_bytes(requests[0].SerializeToString())
    assert read_trace(p) == (requests, spans)


def test_legacy_instrumentation_library_spans_are_read(tmp_path):
    legacy = json.loads(json.dumps(OTLP))
    rs = legacy["resourceSpans"][0]
    rs["instrumentationLibrarySpans"] = [{"instrumentationLibrary": {"name": "lib"}, **rs.pop("scopeSpans")[0]}]
    requests, spans = read_trace(write(tmp_path, "legacy.json", json.dumps(legacy)))
    assert [s.name for s in spans] == ["root", "child"]
    assert requests[0].resource_spans[0].scope_spans[0].scope.name == "lib"


def test_a_trace_that_is_not_json_names_file_and_line(tmp_path):
    line = json.dumps(OTLP)
    with pytest.raises(FixtureError) as info:
        read_trace(write(tmp_path, "t.jsonl", f"{line}\n{{oops\n"))
    assert str(info.value).startswith(f"{tmp_path / 't.jsonl'}:2: ")
