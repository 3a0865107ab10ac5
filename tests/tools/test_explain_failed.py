"""``faulttrace explain --failed``: only the traces given a root cause, after a summary line that
counts every trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.cli import main
from tests.support.harness import kv, otlp_json

MS = 1_000_000


def _span(trace: int, n: int, parent: int, name: str, *, error: str = "", attrs: dict | None = None) -> Span:
    s = Span(trace_id=bytes([trace]) * 16, span_id=bytes([trace, n]) * 4, name=name, kind=2 if not parent else 3,
             start_time_unix_nano=10**9 + n * MS, end_time_unix_nano=10**9 + (20 - n) * MS)
    if parent:
        s.parent_span_id = bytes([trace, parent]) * 4
    for k, v in (attrs or {}).items():
        s.attributes.append(kv(k, v))
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
        s.status.message = error
        event = s.events.add(name="exception", time_unix_nano=s.end_time_unix_nano)
        event.attributes.append(kv("exception.type", "OperationalError"))
        event.attributes.append(kv("exception.message", error))
    return s


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """Three orders whose database refuses the connection, two carts whose upstream answers 503,
    five healthy orders.  Both failures are the platform's: the layer is infrastructure."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "orders"))
    spans = rs.scope_spans.add().spans
    for t in (*range(1, 4), *range(6, 11)):
        fail = t <= 3
        spans.append(_span(t, 1, 0, "POST /orders", error="could not save the order" if fail else ""))
        spans.append(_span(t, 2, 1, "INSERT orders", error="connection refused" if fail else "",
                           attrs={"db.system.name": "postgresql", "server.address": "db"}))
    gateway = req.resource_spans.add()
    gateway.resource.attributes.append(kv("service.name", "gateway"))
    spans = gateway.scope_spans.add().spans
    for t in (4, 5):
        spans.append(_span(t, 1, 0, "GET /cart", error="upstream failed", attrs={"http.response.status_code": 502}))
        call = _span(t, 2, 1, "GET", attrs={"http.response.status_code": 503, "server.address": "cart"})
        call.status.code = Status.STATUS_CODE_ERROR
        spans.append(call)
    path = tmp_path / "traces.json"
    path.write_text(json.dumps(otlp_json(req)), encoding="utf-8")
    return path


def test_failed_shows_only_traces_with_a_root_cause(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--failed", str(traces)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == ("10 traces, 5 with a root cause (infrastructure 5); most often orders: INSERT orders "
                        "(3 traces); only those are shown (--failed)")
    shown = {ln.split()[1].rstrip(":") for ln in lines if ln.startswith("trace ")}
    assert shown == {(bytes([t]) * 16).hex() for t in (1, 2, 3, 4, 5)}


def test_without_failed_every_trace_is_shown_after_the_summary(traces: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(traces)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("10 traces, 5 with a root cause (infrastructure 5)")
    assert sum(ln.startswith("trace ") for ln in lines) == 10


def test_failed_json_keeps_only_those_traces(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--failed", "--format", "json", str(traces)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["traces"]) == 5 and all(t["root_causes"] for t in doc["traces"])


def test_the_rules_alone_put_a_refused_connection_and_an_upstream_503_in_infrastructure(
        traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the exception a refused connection raises also fires the generic deepest-exception rule (code);
    # the specific rule must carry the layer without the localizer's vote
    assert main(["explain", "--no-localizer", "--failed", str(traces)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("10 traces, 5 with a root cause (infrastructure 5)")
