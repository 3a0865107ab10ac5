"""The debug exporter: one line per trace (and per span when detailed) on faulttrace.debug."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.exporters.config import DebugExporterConfig
from processor.exporters.factory import build_exporter
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry
from tests.support.exporters import make_request, metric, payload_of

CID = "debug"


def print_payloads(payloads: list[ExportPayload], telemetry: Telemetry, verbosity: str = "basic") -> None:
    exp = build_exporter(CID, DebugExporterConfig(verbosity=verbosity), telemetry)

    async def main() -> None:
        await exp.start()
        for p in payloads:
            await exp.export(p)
        await exp.shutdown(1)

    asyncio.run(main())


def debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "faulttrace.debug"]


def test_one_line_per_trace(caplog: pytest.LogCaptureFixture, telemetry: Telemetry) -> None:
    req = make_request(first_trace=1, traces=2, spans_per_trace=3)
    req.resource_spans.append(make_request(first_trace=1, traces=1, service="payments").resource_spans[0])
    caplog.set_level("INFO", logger="faulttrace.debug")
    print_payloads([payload_of(req)], telemetry)
    assert debug_lines(caplog) == [
        f"trace {1:032x}: 5 spans, services: checkout, payments",
        f"trace {2:032x}: 3 spans, services: checkout",
    ]
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 8


def test_verdict_from_root_span(caplog: pytest.LogCaptureFixture, telemetry: Telemetry) -> None:
    req = make_request(first_trace=7, spans_per_trace=2)
    root = req.resource_spans[0].scope_spans[0].spans[0]
    root.attributes.extend([
        KeyValue(key="rca.verdict.service", value=AnyValue(string_value="payments")),
        KeyValue(key="rca.verdict.rule", value=AnyValue(string_value="db_pool_exhausted")),
        KeyValue(key="http.route", value=AnyValue(string_value="/pay")),
    ])
    caplog.set_level("INFO", logger="faulttrace.debug")
    print_payloads([payload_of(req)], telemetry)
    assert debug_lines(caplog) == [
        f"trace {7:032x}: 2 spans, services: checkout; verdict: rule=db_pool_exhausted service=payments"]


def test_detailed_adds_a_line_per_span(caplog: pytest.LogCaptureFixture, telemetry: Telemetry) -> None:
    req = make_request(first_trace=3, spans_per_trace=2)
    span = req.resource_spans[0].scope_spans[0].spans[1]
    span.status.code = 2
    span.status.message = "boom"
    caplog.set_level("INFO", logger="faulttrace.debug")
    print_payloads([payload_of(req)], telemetry, verbosity="detailed")
    lines = debug_lines(caplog)
    assert len(lines) == 3
    assert lines[1] == f"  span {3001:016x} 'op0' service=checkout duration=2.500ms status=UNSET"
    assert lines[2] == f"  span {3002:016x} 'op1' service=checkout duration=2.500ms status=ERROR (boom)"


def test_prints_to_stderr_without_logging_configured() -> None:
    # A fresh interpreter: no handlers anywhere, as when the app has not configured logging.
    code = (
        "import asyncio\n"
        "from processor.exporters.config import DebugExporterConfig\n"
        "from processor.exporters.debug import DebugExporter\n"
        "from processor.model import ExportPayload\n"
        "from processor.service.telemetry import Telemetry\n"
        "from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest\n"
        "req = ExportTraceServiceRequest()\n"
        "req.resource_spans.add().scope_spans.add().spans.add(trace_id=b'\\x01' * 16, span_id=b'\\x02' * 8)\n"
        "async def main():\n"
        "    exp = DebugExporter('debug', DebugExporterConfig(), Telemetry())\n"
        "    await exp.start()\n"
        "    await exp.export(ExportPayload(req.SerializeToString(), 1, 1))\n"
        "    await exp.shutdown(1)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == f"trace {'01' * 16}: 1 spans, services: unknown_service"


def test_an_undecodable_payload_is_counted_failed_settled_and_the_next_printed(
        caplog: pytest.LogCaptureFixture, telemetry: Telemetry) -> None:
    settled: list[int] = []
    bad = ExportPayload(b"\xff\xff\xff", 4, on_settled=lambda: settled.append(4))
    with caplog.at_level("INFO"):
        print_payloads([bad, payload_of(make_request())], telemetry)
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 4
    assert settled == [4]
    assert "exporter debug: dropping 4 spans: cannot print them" in caplog.text
    assert debug_lines(caplog)  # the good payload after it still printed
