"""`faulttrace serve` stopped by SIGTERM or killed with SIGKILL, then started again: no
acknowledged span is lost, and few delivered spans are sent again.

Real processes: `faulttrace serve` runs as a subprocess on its journal (the
embedded default, in the test's state directory, or a file given here), a
real OTLP/gRPC sink runs in this process and goes down and comes back on the
same port.  A span is *acknowledged* once the receiver answered its request
OK; *lost* if acknowledged and never received by the sink; *re-sent* if a
restarted process sends it again after the first one delivered it.

``pytest -s tests/e2e/test_restart.py`` prints each scenario's figures (lines
starting ``restart:``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
import requests
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.store import FORGET_DELAY
from tests.support.harness import EXPORT_METHOD, FAST_RETRY, free_port, simple_request, wait_until
from tests.support.otlp_sink import OtlpGrpcSink
from tests.test_cli import faulttrace

pytestmark = pytest.mark.timeout(300)  # two process starts and a drain, on a busy machine

TRACES_PER_REQUEST = 100
SPANS_PER_TRACE = 4
REQUESTS = 50  # 20,000 spans a scenario
# A span delivered this long before a kill -9 has left the journal: the store deletes delivered
# spans FORGET_DELAY after their payload is settled; the second of slack covers the sink's answer
# reaching the exporter and the delete itself (12 ms here) on a busy machine.
FORGET_WINDOW = FORGET_DELAY + 1.0

Key = tuple[bytes, bytes]


def keys(requests_: Iterable[ExportTraceServiceRequest]) -> Counter[Key]:
    return Counter((span.trace_id, span.span_id) for r in requests_ for rs in r.resource_spans
                   for ss in rs.scope_spans for span in ss.spans)


def request(n: int) -> ExportTraceServiceRequest:
    """The ``n``-th request of a scenario: its own traces, so every span key is unique."""
    return simple_request(1 + n * TRACES_PER_REQUEST, traces=TRACES_PER_REQUEST, spans_per_trace=SPANS_PER_TRACE,
                          service=f"svc{n % 3}")


class Serve:
    """`faulttrace serve` as a subprocess on fixed ports, its log in a file."""

    def __init__(self, tmp_path: Path, sink_port: int, storage: dict[str, Any] | None = None) -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        processor: dict[str, Any] = {"decision_wait": "500ms", "builtin_rules": False, "localizer": {"enabled": False}}
        if storage is not None:
            processor["storage"] = storage
        config = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"}}}},
            "processors": {"faulttrace": processor},
            "exporters": {"otlp_grpc": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True},
                                        "retry_on_failure": FAST_RETRY, "timeout": "2s"}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                                 "exporters": ["otlp_grpc"]}},
                        "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}},
                        "shutdown_timeout": "3s"},
        }
        self.config = tmp_path / "config.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._log_dir = tmp_path
        self._runs = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self._runs += 1
        self.log = self._log_dir / f"serve-{self._runs}.log"
        with open(self.log, "wb") as log:  # a file, not a pipe nobody reads while it runs
            self.proc = subprocess.Popen(faulttrace("serve", "--config", str(self.config)), stdout=log, stderr=log)
        wait_until(self._healthy, timeout=60, what="faulttrace serve to come up")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def health(self) -> dict[str, Any]:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5).json()

    def metric(self, name: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def recovered(self) -> int:
        """Spans the last start recovered from the journal (it logs them)."""
        for line in self.log.read_text().splitlines():
            if "recovered" in line and "buffered spans" in line:
                return int(line.split("recovered ", 1)[1].split()[0])
        return 0

    def drained(self) -> bool:
        """Nothing buffered, nothing queued for export, nothing sent for a moment."""
        sent = self.metric("faulttrace_exporter_sent_spans_total")
        if self.health()["buffered_spans"] or self.metric("faulttrace_exporter_queue_size"):
            return False
        time.sleep(0.3)
        return self.metric("faulttrace_exporter_sent_spans_total") == sent

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class Sender:
    """Sends ``request(0)``, ``request(1)``, … on one channel; remembers what was acknowledged."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._call = self._channel.unary_unary(EXPORT_METHOD)
        self.acknowledged: list[ExportTraceServiceRequest] = []
        self._lock = threading.Lock()

    def send(self, n: int) -> None:
        req = request(n)
        self._call(req.SerializeToString(), timeout=30)
        with self._lock:
            self.acknowledged.append(req)

    def send_all(self, count: int = REQUESTS, pause: float = 0.0) -> Counter[Key]:
        for n in range(count):
            self.send(n)
            time.sleep(pause)
        return self.keys()

    def send_until_refused(self) -> None:
        """Send until the server stops answering (it was killed)."""
        n = 0
        try:
            while n < 100 * REQUESTS:
                self.send(n)
                n += 1
        except grpc.RpcError:
            pass

    def keys(self) -> Counter[Key]:
        with self._lock:
            return keys(self.acknowledged)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def sink():
    with OtlpGrpcSink() as sink:
        yield sink


@pytest.fixture
def serve_factory(tmp_path, sink):
    started: list[Serve] = []

    def make(storage: dict[str, Any] | None = None) -> Serve:
        serve = Serve(tmp_path, sink.port, storage)
        started.append(serve)
        return serve

    yield make
    for serve in started:
        serve.close()


def restart_and_deliver(serve: Serve, sink: OtlpGrpcSink, acknowledged: Counter[Key]) -> dict[str, int]:
    """Start again with the sink up; wait until everything recovered is delivered.
    Returns the figures: acknowledged, lost (never reached the sink), re-sent by the restart."""
    before = len(sink.requests)
    serve.start()
    try:  # the figures are reported either way
        wait_until(lambda: not (acknowledged.keys() - keys(sink.requests).keys()), timeout=60,
                   what="every acknowledged span to reach the sink")
    except AssertionError:
        pass
    wait_until(serve.drained, timeout=30, what="the restarted faulttrace to drain")
    resent = keys(sink.requests[:before]).keys() & keys(sink.requests[before:]).keys()
    figures = {"acknowledged": sum(acknowledged.values()), "recovered": serve.recovered(),
               "lost": len(acknowledged.keys() - keys(sink.requests).keys()), "re-sent": len(resent)}
    serve.sigterm()
    return figures


def journal_rows(path: Path) -> int:
    with duckdb.connect(str(path)) as conn:
        return conn.execute("SELECT count(*) FROM spans").fetchone()[0]


def report(scenario: str, figures: dict[str, Any]) -> None:
    print(f"restart: {scenario}: {json.dumps(figures)}")


def test_sigterm_with_the_backend_down_loses_nothing_on_the_default_journal(serve_factory, sink, state_home):
    sink.stop()  # the backend is down
    serve = serve_factory()  # no storage key: the embedded default
    serve.start()
    sender = Sender(serve.target)
    acknowledged = sender.send_all()
    wait_until(lambda: serve.metric("faulttrace_exporter_retries_total") >= 2, timeout=30, what="the exporter to retry")
    serve.sigterm()  # the shutdown timeout runs out with nothing delivered
    journal = Path(state_home) / "faulttrace" / "journal.duckdb"
    journaled = journal_rows(journal) if journal.exists() else 0
    sink.restart()
    figures = restart_and_deliver(serve, sink, acknowledged)
    sender.close()
    report("SIGTERM, backend down", figures)
    assert journaled == sum(acknowledged.values())
    assert figures["lost"] == 0 and figures["re-sent"] == 0
    assert keys(sink.requests) == acknowledged  # each exactly once
    assert journal_rows(journal) == 0


def test_kill_9_during_ingest_loses_nothing_acknowledged(serve_factory, sink, tmp_path):
    serve = serve_factory({"path": str(tmp_path / "journal.duckdb")})
    serve.start()
    sender = Sender(serve.target)
    sending = threading.Thread(target=sender.send_until_refused)
    sending.start()
    wait_until(lambda: sink.span_count >= 10_000, timeout=60, what="traffic to flow through")
    time.sleep(1.0)  # some spans delivered and forgotten, some just delivered, released, buffered
    serve.kill()
    sending.join(30)
    acknowledged = sender.keys()
    figures = restart_and_deliver(serve, sink, acknowledged)
    sender.close()
    report("kill -9 during ingest", figures)
    assert figures["lost"] == 0


def test_kill_9_during_export_with_the_backend_down_loses_nothing(serve_factory, sink, tmp_path):
    sink.stop()
    serve = serve_factory({"path": str(tmp_path / "journal.duckdb")})
    serve.start()
    sender = Sender(serve.target)
    acknowledged = sender.send_all()
    wait_until(lambda: serve.health()["buffered_spans"] == 0, timeout=30, what="every trace released")
    wait_until(lambda: serve.metric("faulttrace_exporter_retries_total") >= 2, timeout=30, what="the exporter to retry")
    serve.kill()  # the exporter holds every span and cannot deliver
    sink.restart()
    figures = restart_and_deliver(serve, sink, acknowledged)
    sender.close()
    report("kill -9 during export, backend down", figures)
    assert figures["lost"] == 0
    assert keys(sink.requests) == acknowledged  # nothing had been delivered: each exactly once


@pytest.mark.parametrize("after", [0.0, FORGET_WINDOW + 0.1], ids=["at-once", "a-moment-later"])
def test_kill_9_after_delivery_resends_only_the_last_moments_deliveries(serve_factory, sink, tmp_path, after):
    serve = serve_factory({"path": str(tmp_path / "journal.duckdb")})
    serve.start()
    sender = Sender(serve.target)
    acknowledged = sender.send_all(pause=0.05)  # traffic over a few seconds, as a client sends it
    total = sum(acknowledged.values())
    sink.wait_for_spans(total, timeout=60)
    time.sleep(after)  # at once: the worst moment after delivery
    serve.kill()
    killed = time.monotonic()
    # Only spans whose payload was delivered within FORGET_WINDOW of the kill may still be journaled.
    bound = sum(sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(r.raw).resource_spans
                    for ss in rs.scope_spans)
                for r in sink.received if r.failed_with is None and killed - r.at <= FORGET_WINDOW)
    figures = restart_and_deliver(serve, sink, acknowledged)
    sender.close()
    report(f"kill -9 {after:.1f}s after delivery", {**figures, "bound": bound})
    assert figures["lost"] == 0
    assert figures["re-sent"] == figures["recovered"] <= bound


def test_a_clean_stop_after_delivery_resends_nothing(serve_factory, sink, tmp_path):
    journal = tmp_path / "journal.duckdb"
    serve = serve_factory({"path": str(journal)})
    serve.start()
    sender = Sender(serve.target)
    acknowledged = sender.send_all(pause=0.05)
    sink.wait_for_spans(sum(acknowledged.values()), timeout=60)
    serve.sigterm()
    assert journal_rows(journal) == 0
    figures = restart_and_deliver(serve, sink, acknowledged)
    sender.close()
    report("SIGTERM after delivery", figures)
    assert figures["lost"] == 0 and figures["re-sent"] == 0 and figures["recovered"] == 0


def test_a_second_process_on_the_same_journal_is_refused_naming_the_file_and_key(serve_factory, state_home):
    first = serve_factory()
    first.start()
    second = Serve(Path(state_home), 1)  # the default journal too, other ports
    done = subprocess.run(faulttrace("serve", "--config", str(second.config)), capture_output=True, text=True,
                          timeout=60)
    journal = Path(state_home) / "faulttrace" / "journal.duckdb"
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1, done.stderr
    assert f"the journal {journal} is in use by another process (PID {first.proc.pid})" in done.stderr
    assert "processors.faulttrace.storage.path" in done.stderr
    first.sigterm()
