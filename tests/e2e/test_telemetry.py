"""`faulttrace serve` measures and tells its own verdicts: a real process, real OTel SDK
exporters sending real spans, its /metrics scraped and its log read.

Three traces fail on a refused connection (the built-in rule ``infra.connection_refused``
blames the client span), two are healthy.  The scrape must show every span in and out of
the processor, five traces analysed, three with a root cause, the rule's three findings in
the infrastructure layer, the analysis and verdict latencies, both processes' CPU, memory
and uptime, the build's version; the log one sentence per failed trace (with the configured
trace link) and one incident line grouping the three.  The Grafana dashboard in
examples/grafana names no metric this serve does not expose.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from processor.service.telemetry import version
from tests.support.harness import free_port, wait_until
from tests.support.sdk import grpc_exporter, http_exporter
from tests.test_cli import faulttrace

pytestmark = pytest.mark.timeout(180)

DECISION_WAIT = 0.3
DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "faulttrace-dashboard.json"
URL = "http://jaeger.example:16686/trace/{trace_id}"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def checkout(fail: bool) -> list[ReadableSpan]:
    """A gateway's checkout calling payment: with ``fail``, the connection is refused and the
    checkout fails; else both succeed.  Three spans from a real SDK tracer."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faulttrace-tests")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("validate cart"):
            pass
        with tracer.start_as_current_span("POST /charge", kind=SpanKind.CLIENT,
                                          attributes={"server.address": "payment", "server.port": 8080}) as call:
            if fail:
                call.record_exception(ConnectionRefusedError(111, "Connection refused"))
                call.set_status(StatusCode.ERROR, "[Errno 111] Connection refused")
        if fail:
            root.set_status(StatusCode.ERROR, "payment unavailable")
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp_path = tmp_path_factory.mktemp("serve")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    out = tmp_path / "out.jsonl"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                                             "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"faulttrace": {"decision_wait": f"{int(DECISION_WAIT * 1000)}ms",
                                      "storage": {"path": ":memory:"},
                                      "verdict_log": {"trace_url_template": URL, "summary_interval": "1s"}}},
        "exporters": {"file": {"path": str(out)}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": ["file"]}},
                    "telemetry": {"metrics": {"readers": [{"pull": {"exporter": {"prometheus": {
                        "host": "127.0.0.1", "port": metrics_port}}}}]}}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp_path / "serve.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(faulttrace("serve", "--config", str(path)), stdout=sink, stderr=sink)
    base = f"http://127.0.0.1:{metrics_port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(healthy, timeout=60, what="faulttrace serve to come up")
        yield {"grpc": grpc_port, "http": http_port, "metrics": base, "log": log, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def scrape(base: str) -> Samples:
    text = requests.get(f"{base}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture(scope="module")
def fed(serve: dict[str, object]) -> dict[str, object]:
    """The running serve after three failing and two healthy traces (by gRPC and HTTP), once
    all five are analysed and an incident summary was logged."""
    failing = [checkout(fail=True) for _ in range(3)]
    healthy = [checkout(fail=False) for _ in range(2)]
    by_grpc, by_http = grpc_exporter(int(serve["grpc"])), http_exporter(int(serve["http"]))  # type: ignore[arg-type]
    for i, spans in enumerate(failing + healthy):
        assert (by_grpc if i % 2 else by_http).export(spans) is SpanExportResult.SUCCESS
    by_grpc.shutdown()
    by_http.shutdown()
    base = str(serve["metrics"])
    wait_until(lambda: scrape(base).get(("faulttrace_processor_analyzed_traces_total", ())) == 5,
               timeout=60, what="five traces analysed")
    log = Path(str(serve["log"]))
    wait_until(lambda: "incident:" in log.read_text(), timeout=10, what="an incident summary")
    return {**serve, "failing": failing, "spans": sum(len(t) for t in failing + healthy)}


def test_serve_measures_its_verdicts(fed: dict[str, object]) -> None:
    s = scrape(str(fed["metrics"]))
    spans = fed["spans"]
    labels = {"processor": "faulttrace", "otel_signal": "traces"}
    assert value(s, "faulttrace_processor_incoming_items_total", **labels) == spans
    assert value(s, "faulttrace_processor_outgoing_items_total", **labels) == spans
    assert value(s, "faulttrace_processor_analyzed_traces_total") == 5
    assert value(s, "faulttrace_processor_root_cause_traces_total") == 3
    assert value(s, "faulttrace_processor_findings_total", source="infra.connection_refused", kind="rule",
                 layer="infrastructure") == 3
    assert value(s, "faulttrace_processor_analysis_duration_seconds_count") >= 1
    # Every analysed trace waited at least decision_wait after its last span before it was released.
    assert value(s, "faulttrace_processor_verdict_latency_seconds_count") == 5
    assert value(s, "faulttrace_processor_verdict_latency_seconds_sum") >= 5 * DECISION_WAIT
    assert value(s, "faulttrace_processor_verdict_latency_seconds_bucket", le="+Inf") == 5
    for process in ("faulttrace", "analysis"):
        assert value(s, "faulttrace_process_cpu_seconds_total", process=process) > 0
        assert value(s, "faulttrace_process_memory_rss_bytes", process=process) > 10 * 2**20
        assert value(s, "faulttrace_process_uptime_seconds_total", process=process) > 0
    # the worker is spawned after the receiving process started
    assert (value(s, "faulttrace_process_uptime_seconds_total", process="analysis")
            <= value(s, "faulttrace_process_uptime_seconds_total", process="faulttrace"))
    assert value(s, "faulttrace_analysis_worker_restarts_total") == 0
    builds = [k for k in s if k[0] == "faulttrace_build_info"]
    assert len(builds) == 1 and ("version", version()) in builds[0][1] and s[builds[0]] == 1


def test_serve_tells_each_verdict_and_the_incident(fed: dict[str, object]) -> None:
    text = Path(str(fed["log"])).read_text()
    sentences = [line for line in text.splitlines() if "faulttrace.verdict:" in line]
    assert len(sentences) == 3, text
    for line in sentences:
        assert 'root cause gateway "POST /charge" (infrastructure, confidence ' in line, line
        assert "connection to payment refused" in line, line
        assert 'the user saw gateway "POST /checkout" failed (payment unavailable)' in line, line
        assert "http://jaeger.example:16686/trace/" in line, line
    trace_ids = {line.split("trace ", 1)[1].split(":", 1)[0] for line in sentences}
    assert trace_ids == {format(t[0].context.trace_id, "032x") for t in fed["failing"]}  # type: ignore[attr-defined]
    incidents = [line for line in text.splitlines() if "faulttrace.incidents:" in line]
    assert len(incidents) == 1, text
    assert ("incident: gateway POST /charge → gateway POST /checkout failed: 3 traces in the last 1s "
            "(infrastructure, infra.connection_refused; e.g. http://jaeger.example:16686/trace/") in incidents[0]


def test_the_grafana_dashboard_names_only_what_serve_exposes(fed: dict[str, object]) -> None:
    text = requests.get(f"{fed['metrics']}/metrics", timeout=5).text
    # A labelled metric no label set has touched yet (no refusal, no queue on the file exporter)
    # is exposed by its HELP and TYPE lines only: the series names its type gives count too.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    exposed = {family.name + suffix for family in text_string_to_metric_families(text)
               for suffix in suffixes.get(family.type, ("",))}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    named = set()
    for expr in exprs:
        names = set(re.findall(r"\bfaulttrace_[a-z0-9_]+", expr))
        assert names, f"{expr!r} names no faulttrace metric"
        named |= names
    assert named - exposed == set()
    # and the verdict metrics this change added are all on it
    assert {"faulttrace_processor_analyzed_traces_total", "faulttrace_processor_root_cause_traces_total",
            "faulttrace_processor_findings_total", "faulttrace_processor_verdict_latency_seconds_bucket",
            "faulttrace_processor_analysis_duration_seconds_bucket", "faulttrace_process_cpu_seconds_total",
            "faulttrace_process_memory_rss_bytes", "faulttrace_analysis_worker_restarts_total",
            "faulttrace_build_info", "faulttrace_processor_incoming_items_total",
            "faulttrace_processor_outgoing_items_total", "faulttrace_exporter_enqueue_failed_spans_total"} <= named


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker through /proc (Linux)")
def test_a_killed_worker_is_counted_when_it_is_restarted(fed: dict[str, object]) -> None:
    # runs after the tests above (same serve): their counts are the baseline
    base = str(fed["metrics"])
    before = scrape(base)
    proc: subprocess.Popen[bytes] = fed["proc"]  # type: ignore[assignment]
    # the spawned worker, not multiprocessing's resource tracker beside it
    workers = [p for p in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    killed = time.monotonic()
    # the worker restarts when a batch finds it dead, at most every RESTART_INTERVAL (5 s) after its start
    exporter = grpc_exporter(int(fed["grpc"]))  # type: ignore[arg-type]
    sent = 0

    def restarted() -> bool:
        nonlocal sent
        s = scrape(base)
        if s[("faulttrace_analysis_worker_restarts_total", ())] >= 1:
            return True
        exporter.export(checkout(fail=True))
        sent += 1
        return False

    wait_until(restarted, timeout=60, what="the analysis worker restarted")
    exporter.shutdown()
    after = scrape(base)
    assert value(after, "faulttrace_analysis_worker_restarts_total") == 1
    # the worker reported now is the new one: it started after the kill
    assert value(after, "faulttrace_process_uptime_seconds_total", process="analysis") <= time.monotonic() - killed + 1
    assert value(before, "faulttrace_analysis_worker_restarts_total") == 0
    assert value(after, "faulttrace_processor_incoming_items_total", processor="faulttrace",
                 otel_signal="traces") == fed["spans"] + 3 * sent
