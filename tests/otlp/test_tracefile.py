"""processor.otlp.tracefile: recorded traces as OTLP/JSON (one document or JSON lines), gzip, protobuf;
unreadable files are a TraceFileError naming the file and, for JSON, the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.otlp.otlpjson import OtlpJsonError
from processor.otlp.tracefile import TraceFileError, read_requests, read_trace_file
from tests.support.harness import from_otlp_json, otlp_json, simple_request, span_count

CHECKOUT = Path(__file__).resolve().parents[1] / "data" / "checkout.json"


@pytest.fixture(scope="module")
def checkout() -> ExportTraceServiceRequest:
    """tests/data/checkout.json parsed independently of faulttrace."""
    return from_otlp_json(json.loads(CHECKOUT.read_text()))


def line(req: ExportTraceServiceRequest) -> str:
    return json.dumps(otlp_json(req), separators=(",", ":"))


def test_single_document_spread_over_lines(checkout):
    assert CHECKOUT.read_text().count("\n") > 50  # really pretty-printed
    assert read_requests(CHECKOUT) == [checkout]
    assert span_count([checkout]) == 6


def test_single_document_on_one_line(tmp_path, checkout):
    path = tmp_path / "one.json"
    path.write_text(line(checkout))
    assert read_requests(str(path)) == [checkout]  # a str path works too


def test_json_lines_one_request_per_line(tmp_path, checkout):
    other = simple_request(7, traces=2)
    path = tmp_path / "export.jsonl"
    path.write_text(f"{line(checkout)}\n\n{line(other)}\r\n{line(checkout)}\n")
    assert read_requests(path) == [checkout, other, checkout]


@pytest.mark.parametrize("layout", ["document", "lines"])
def test_gzip(tmp_path, checkout, layout):
    other = simple_request(3)
    text = CHECKOUT.read_text() if layout == "document" else f"{line(checkout)}\n{line(other)}\n"
    path = tmp_path / "traces.json.gz"
    path.write_bytes(gzip.compress(text.encode()))
    assert read_requests(path) == ([checkout] if layout == "document" else [checkout, other])


@pytest.mark.parametrize("compressed", [False, True])
def test_protobuf(tmp_path, checkout, compressed):
    data = checkout.SerializeToString()
    path = tmp_path / "traces.pb"
    path.write_bytes(gzip.compress(data) if compressed else data)
    got = read_requests(path)
    assert got == [checkout]
    assert got[0].SerializeToString() == data


def test_ids_are_hex_not_base64(checkout):
    span = read_requests(CHECKOUT)[0].resource_spans[1].scope_spans[0].spans[1]
    assert span.span_id == bytes.fromhex("a000000000000004")
    assert span.parent_span_id == bytes.fromhex("a000000000000003")
    assert span.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")


# --- bad files ---------------------------------------------------------------------------


def error_of(path: Path) -> str:
    with pytest.raises(TraceFileError) as info:
        read_requests(path)
    return str(info.value)


def test_bad_json_line_names_file_and_line(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_text(f"{line(checkout)}\n{line(checkout)}\n{{\"resourceSpans\": [\n{line(checkout)}\n")
    assert error_of(path).startswith(f"{path}:3: ")


def test_line_numbers_count_leading_blank_lines(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_text(f"\n\n{line(checkout)}\nnot json\n")
    assert error_of(path).startswith(f"{path}:4: ")


def test_valid_json_but_not_otlp_names_the_line(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_text(f'{line(checkout)}\n{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"spanId": "zz"}}]}}]}}]}}\n')
    message = error_of(path)
    assert message.startswith(f"{path}:2: ")
    assert "spanId" in message and "hex" in message


def test_broken_pretty_document_names_the_line_of_the_error(tmp_path):
    text = CHECKOUT.read_text().splitlines()
    broken_at = 12
    text[broken_at - 1] = text[broken_at - 1] + ' "oops" '
    path = tmp_path / "broken.json"
    path.write_text("\n".join(text) + "\n")
    assert error_of(path).startswith(f"{path}:{broken_at}: ")


def test_bad_gzip_is_a_trace_file_error(tmp_path, checkout):
    data = gzip.compress(line(checkout).encode())
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(data[: len(data) // 2])
    assert error_of(truncated).startswith(f"{truncated}: bad gzip data")
    corrupt = tmp_path / "corrupt.gz"  # a damaged deflate stream (zlib.error, not OSError)
    corrupt.write_bytes(data[:10] + bytes(b ^ 0xFF for b in data[10:30]) + data[30:])
    assert error_of(corrupt).startswith(f"{corrupt}: bad gzip data")


def test_neither_json_nor_protobuf(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a trace\n")
    assert error_of(path).startswith(f"{path}: neither OTLP/JSON nor OTLP protobuf")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    message = error_of(path)
    assert message.startswith(f"{path}: cannot read") and "No such file" in message


# --- the shared reader: any reading of the documents, errors named alike ---------------------


def test_parse_gives_each_document_to_the_reader(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_text(f"\n{line(checkout)}\n{line(simple_request(7))}\n")
    trace = read_trace_file(path)
    assert trace.request is None
    assert trace.parse(lambda doc: len(doc["resourceSpans"])) == [len(checkout.resource_spans), 1]
    assert read_trace_file(CHECKOUT).parse(lambda doc: sorted(doc)) == [["resourceSpans"]]


def test_what_the_reader_raises_names_file_and_line(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_text(f"{line(checkout)}\n\n{line(checkout)}\n")

    seen = []

    def refuse_second(doc):
        seen.append(doc)
        if len(seen) == 2:
            raise OtlpJsonError("resourceSpans[0]: wrong")

    with pytest.raises(TraceFileError) as info:
        read_trace_file(path).parse(refuse_second)
    assert str(info.value) == f"{path}:3: not an OTLP/JSON request: resourceSpans[0]: wrong"


def test_protobuf_is_parsed_up_front(tmp_path, checkout):
    path = tmp_path / "traces.pb"
    path.write_bytes(checkout.SerializeToString())
    assert read_trace_file(path).request == checkout


def test_a_document_after_blank_lines_is_named_by_its_first_line(tmp_path):
    path = tmp_path / "padded.json"
    path.write_text("\n\n" + CHECKOUT.read_text().replace('"a000000000000004"', '"nothex"'))
    assert error_of(path).startswith(f"{path}:3: ")


def test_bytes_that_are_not_utf8_name_their_line(tmp_path, checkout):
    path = tmp_path / "export.jsonl"
    path.write_bytes(f"{line(checkout)}\n".encode() + b'{"resourceSpans": ["\xff"]}\n')
    message = error_of(path)
    assert message.startswith(f"{path}:2: not an OTLP/JSON request: invalid JSON: ") and "utf-8" in message
