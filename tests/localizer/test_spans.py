"""processor.localizer.spans.read_spans: a recorded trace file into the localizer's columns, whatever
its layout or encoding; attributes asked for as strings; unreadable files name file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest

from dsl import AttrRef, AttrSource, AttrType, column_name
from processor.localizer.spans import SCHEMA, read_spans
from processor.otlp.tracefile import TraceFileError, read_requests
from tests.support import localizer_synth as synth

CHECKOUT = Path(__file__).resolve().parents[1] / "data" / "checkout.json"
INTRINSIC = [f.name for f in SCHEMA if f.name != "exception"]


def test_a_synthetic_dataset_reads_back_as_written(tmp_path):
    rows = synth.spans(n=20, seed=4)
    path = tmp_path / "traces.jsonl.gz"
    synth.write_otlp(rows, path)
    got = read_spans(path).sort_by([("trace_id", "ascending"), ("span_id", "ascending")])
    want = synth.table(rows).sort_by([("trace_id", "ascending"), ("span_id", "ascending")])
    assert got.schema == SCHEMA and got.equals(want)


@pytest.mark.parametrize("layout", ["lines", "lines.gz", "snake_case"])
def test_every_layout_of_a_document_gives_the_same_columns(tmp_path, layout):
    doc = json.loads(CHECKOUT.read_text())
    text = json.dumps(doc) + "\n"
    if layout == "snake_case":
        for camel, snake in (("resourceSpans", "resource_spans"), ("startTimeUnixNano", "start_time_unix_nano")):
            text = text.replace(f'"{camel}"', f'"{snake}"')
    path = tmp_path / "t.json"
    path.write_bytes(gzip.compress(text.encode()) if layout.endswith(".gz") else text.encode())
    assert read_spans(path).equals(read_spans(CHECKOUT))  # pretty-printed over many lines


def test_protobuf_gives_the_same_intrinsic_columns(tmp_path):
    path = tmp_path / "t.pb"
    path.write_bytes(read_requests(CHECKOUT)[0].SerializeToString())
    from_protobuf, from_json = read_spans(path), read_spans(CHECKOUT)
    assert from_protobuf.select(INTRINSIC).equals(from_json.select(INTRINSIC))
    assert from_json.column("exception").to_pylist().count(True) == 1
    assert from_protobuf.column("exception").null_count == from_protobuf.num_rows  # decode has no event flag


def test_attributes_come_as_strings_as_duckdb_casts_them(tmp_path):
    attrs = [{"key": "s", "value": {"stringValue": "x"}}, {"key": "i", "value": {"intValue": "7"}},
             {"key": "b", "value": {"boolValue": True}}, {"key": "d", "value": {"doubleValue": 0.5}},
             {"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}]}}}]
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}},
                                    {"key": "host", "value": {"stringValue": "h1"}}]},
        "scopeSpans": [{"spans": [{"traceId": "01" * 16, "spanId": "02" * 8, "name": "a", "attributes": attrs},
                                  {"traceId": "01" * 16, "spanId": "03" * 8, "name": "b"}]}]}]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    refs = [AttrRef(AttrSource.RESOURCE, "host"), *(AttrRef(AttrSource.SPAN, k, AttrType.STRING) for k in "sibdaz"),
            AttrRef(AttrSource.EVENT, "", AttrType.PRESENT, "exception")]  # events: not in a file's columns
    table = read_spans(path, refs)
    assert table.schema == pa.schema([*SCHEMA, *((column_name(r), pa.string()) for r in refs[:-1])])
    assert [table.column(column_name(r)).to_pylist() for r in refs[:-1]] == [
        ["h1", "h1"], ["x", None], ["7", None], ["true", None], ["0.5", None], [None, None], [None, None]]


@pytest.mark.parametrize("second, where", [
    ("{oops", "invalid JSON"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "0102030405060708"}]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0].traceId: 'zz' is not a hex id"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "0102030405060708"}]}]}]}',
     "resourceSpans[0].scopeSpans[0].spans[0].traceId: missing"),
])
def test_a_bad_line_names_file_and_line(tmp_path, second, where):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(json.loads(CHECKOUT.read_text())) + "\n" + second + "\n")
    with pytest.raises(TraceFileError) as info:
        read_spans(path)
    assert str(info.value).startswith(f"{path}:2: not an OTLP/JSON request: {where}")


def test_a_missing_file_is_a_trace_file_error(tmp_path):
    with pytest.raises(TraceFileError, match="cannot read"):
        read_spans(tmp_path / "nope.jsonl.gz")
