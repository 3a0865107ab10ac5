"""The file exporter: OTLP/JSON lines, plain or gzipped, read back with request_from_json."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from processor.exporters.config import FileExporterConfig
from processor.exporters.factory import build_exporter
from processor.model import ExportPayload
from processor.otlp.otlpjson import request_from_json
from processor.service.telemetry import Telemetry
from tests.support.exporters import make_request, metric, payload_of

CID = "file/out"


def write(path: Path, compression: str, payloads: list[ExportPayload], telemetry: Telemetry) -> None:
    exp = build_exporter(CID, FileExporterConfig(path=str(path), compression=compression), telemetry)

    async def main() -> None:
        await exp.start()
        await asyncio.gather(*(exp.export(p) for p in payloads))  # concurrent exports keep whole lines
        await exp.shutdown(5)

    asyncio.run(main())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_lines_round_trip(tmp_path: Path, telemetry: Telemetry, compression: str) -> None:
    path = tmp_path / "out" / "traces.jsonl"
    requests = [make_request(first_trace=i * 10, traces=2, service=f"svc{i}") for i in range(1, 6)]
    write(path, compression, [payload_of(r) for r in requests], telemetry)
    opener = gzip.open if compression == "gzip" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert [request_from_json(line) for line in lines] == requests
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 20


def test_ids_are_hex_and_enums_integers(tmp_path: Path, telemetry: Telemetry) -> None:
    path = tmp_path / "traces.jsonl"
    write(path, "none", [payload_of(make_request(first_trace=255))], telemetry)
    span = json.loads(path.read_text())["resourceSpans"][0]["scopeSpans"][0]["spans"][1]
    assert span["traceId"] == f"{255:032x}"
    assert span["parentSpanId"] == f"{255 * 1000 + 1:016x}"
    assert span["kind"] == 2


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_appends_across_runs(tmp_path: Path, telemetry: Telemetry, compression: str) -> None:
    path = tmp_path / "traces.jsonl"
    write(path, compression, [payload_of(make_request(first_trace=1))], telemetry)
    write(path, compression, [payload_of(make_request(first_trace=2))], telemetry)
    opener = gzip.open if compression == "gzip" else open
    with opener(path, "rt", encoding="utf-8") as f:
        assert len(f.read().splitlines()) == 2


def test_undecodable_payload_counts_failed(tmp_path: Path, telemetry: Telemetry) -> None:
    path = tmp_path / "traces.jsonl"
    settled: list[int] = []
    bad = ExportPayload(b"\xff\xff\xff", 4, on_settled=lambda: settled.append(4))
    write(path, "none", [bad, payload_of(make_request())], telemetry)
    assert len(path.read_text().splitlines()) == 1
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 4
    assert settled == [4]  # done with for good: a durable store may forget it
