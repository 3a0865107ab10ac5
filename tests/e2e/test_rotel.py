"""faulttrace between two real third-party collectors: OTel SDK -> rotel -> faulttrace serve -> rotel -> sink.

rotel (the ``rotel`` package on PyPI: a collector written in Rust, shipped as a
binary in a wheel) receives the SDK's spans and forwards them, gzip-compressed,
to a ``faulttrace serve`` process; faulttrace exports, gzip-compressed, to a
second rotel, which exports to an OTLP/gRPC sink in this process.  Both hops
into and out of faulttrace run over gRPC and over HTTP.  The same SDK spans
are also exported straight to a reference sink; what arrives through the
chain must equal them span for span (with resource and scope) once the
``rca.*`` attributes and events faulttrace added are taken away, and those
must be there: the failing trace's cause carries ``rca.root_cause = true``
as a boolean (what a ``tail_sampling`` policy after faulttrace matches).

Skipped, saying why, where rotel is not installed (its wheels are for x86_64
Linux) or its binary does not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from processor.tools.bench import rotel_binary
from tests.support.harness import free_port, span_count, wait_until
from tests.support.otlp_sink import OtlpGrpcSink
from tests.support.sdk import export
from tests.support.sdk import grpc_exporter as sdk_grpc_exporter

pytestmark = pytest.mark.timeout(180)

TRACES, FAILING_EVERY = 12, 3


def _rotel_binary() -> Path:
    binary, why = rotel_binary()
    if binary is None:
        pytest.skip(why)
    return binary


@contextmanager
def _rotel(binary: Path, tmp: Path, name: str, exporter_endpoint: str, protocol: str) -> Iterator[tuple[int, int]]:
    """A rotel process receiving OTLP on two free ports (gRPC, HTTP), exporting to ``exporter_endpoint``."""
    grpc_port, http_port = free_port(), free_port()
    log = tmp / f"{name}.log"
    process = subprocess.Popen(
        [str(binary), "start",
         "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}", "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
         "--exporter", "otlp", "--otlp-exporter-endpoint", exporter_endpoint,
         "--otlp-exporter-protocol", protocol, "--otlp-exporter-compression", "gzip",
         "--traces-batch-timeout", "100ms",
         "--pid-file", str(tmp / f"{name}.pid"), "--log-file", str(log)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "info"})
    try:
        wait_until(lambda: _listening(grpc_port) and _listening(http_port) or process.poll() is not None,
                   timeout=20, what=f"rotel {name} to listen")
        if process.poll() is not None:
            pytest.fail(f"rotel {name} exited {process.returncode}: {log.read_text()[-2000:]}")
        yield grpc_port, http_port
    finally:
        _stop(process, 10)


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """Terminate ``process``; killed if it is still running after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def _faulttrace(tmp: Path, downstream: str, protocol: str) -> Iterator[tuple[int, int]]:
    """``faulttrace serve`` with its defaults for analysis (rules, trees, localizer), exporting to ``downstream``."""
    grpc_port, http_port, health_port = free_port(), free_port(), free_port()
    exporter = "otlp_grpc" if protocol == "grpc" else "otlp_http"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                                             "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"faulttrace": {"decision_wait": "1s", "storage": {"path": str(tmp / "journal.duckdb")}}},
        "exporters": {exporter: {"endpoint": downstream, "compression": "gzip",
                                 **({"tls": {"insecure": True}} if protocol == "grpc" else {})}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "service": {"extensions": ["health_check"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": [exporter]}},
                    "telemetry": {"metrics": {"address": ""}}},
    }
    path = tmp / "faulttrace.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / "faulttrace.log"
    process = subprocess.Popen([sys.executable, "-m", "processor.cli", "serve", "--config", str(path)],
                               stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=tmp,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        wait_until(lambda: _ready(health_port) or process.poll() is not None, timeout=60,
                   what="faulttrace serve to be ready")
        if process.poll() is not None:
            pytest.fail(f"faulttrace serve exited {process.returncode}: {log.read_text()[-2000:]}")
        yield grpc_port, http_port
    finally:
        _stop(process, 30)


def _ready(port: int) -> bool:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"http://127.0.0.1:{port}/", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _sdk_spans() -> list[ReadableSpan]:
    """A shop's traces over two services from real SDK tracers: every third one fails at its deepest call
    (the card gateway), and the error propagates up to the user's request."""
    memory = InMemorySpanExporter()
    tracers = {}
    providers = []
    for service in ("frontend", "checkout"):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "k8s.pod.name": f"{service}-0"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        providers.append(provider)
        tracers[service] = provider.get_tracer("shop.instrumentation", "1.0.0")
    frontend, checkout = tracers["frontend"], tracers["checkout"]
    for i in range(TRACES):
        failing = i % FAILING_EVERY == 0
        with frontend.start_as_current_span("POST /checkout", kind=SpanKind.SERVER,
                                            attributes={"http.request.method": "POST", "n": i}) as root:
            with frontend.start_as_current_span("POST", kind=SpanKind.CLIENT) as call:
                with checkout.start_as_current_span("POST /charge", kind=SpanKind.SERVER) as server:
                    with checkout.start_as_current_span("charge card", kind=SpanKind.CLIENT,
                                                        attributes={"server.address": "gateway"}) as charge:
                        time.sleep(0.002)
                        if failing:
                            charge.record_exception(RuntimeError("card gateway answered 503"))
                            charge.set_status(Status(StatusCode.ERROR, "503"))
                    if failing:
                        server.set_status(Status(StatusCode.ERROR))
                if failing:
                    call.set_status(Status(StatusCode.ERROR))
            with frontend.start_as_current_span("render", kind=SpanKind.INTERNAL):
                pass
            if failing:
                root.set_status(Status(StatusCode.ERROR))
    for provider in providers:
        provider.shutdown()
    return list(memory.get_finished_spans())


def _strip_rca(span: Span) -> Span:
    stripped = Span()
    stripped.CopyFrom(span)
    del stripped.attributes[:]
    stripped.attributes.extend(a for a in span.attributes if not a.key.startswith("rca."))
    del stripped.events[:]
    stripped.events.extend(e for e in span.events if not e.name.startswith("rca."))
    return stripped


def _placed(requests: list, strip: bool) -> Counter:
    out: Counter = Counter()
    for req in requests:
        for rs in req.resource_spans:
            resource = rs.resource.SerializeToString(deterministic=True)
            for ss in rs.scope_spans:
                scope = ss.scope.SerializeToString(deterministic=True)
                for span in ss.spans:
                    body = (_strip_rca(span) if strip else span).SerializeToString(deterministic=True)
                    out[(resource, rs.schema_url, scope, ss.schema_url, body)] += 1
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_cross_two_rotel_collectors_unchanged_but_for_rca(tmp_path: Path, protocol: str):
    binary = _rotel_binary()
    spans = _sdk_spans()
    with OtlpGrpcSink() as reference, OtlpGrpcSink() as sink:
        export(sdk_grpc_exporter(reference.port), spans)
        reference.wait_for_spans(len(spans))
        with _rotel(binary, tmp_path, "downstream", f"http://127.0.0.1:{sink.port}", "grpc") as (down_grpc, down_http):
            # otlp_http's endpoint is a base URL, /v1/traces is added (as in the collector)
            into_downstream = f"127.0.0.1:{down_grpc}" if protocol == "grpc" else f"http://127.0.0.1:{down_http}"
            with _faulttrace(tmp_path, into_downstream, protocol) as (ft_grpc, ft_http):
                into_faulttrace = f"http://127.0.0.1:{ft_grpc if protocol == 'grpc' else ft_http}"
                with _rotel(binary, tmp_path, "upstream", into_faulttrace, protocol) as (up_grpc, _):
                    export(sdk_grpc_exporter(up_grpc), spans)
                    sink.wait_for_spans(len(spans), timeout=60)
                    time.sleep(0.5)  # anything sent twice would arrive now

        received = sink.requests
        assert span_count(received) == len(spans)
        assert _placed(received, strip=True) == _placed(reference.requests, strip=False)

        annotated = [s for s in sink.spans() if any(a.key.startswith("rca.") for a in s.attributes)]
        assert annotated, "faulttrace annotated nothing"
        causes = [s for s in sink.spans()
                  if any(a.key == "rca.root_cause" and a.value.WhichOneof("value") == "bool_value"
                         and a.value.bool_value for a in s.attributes)]
        failing_traces = {s.trace_id for s in sink.spans() if s.status.code == s.status.STATUS_CODE_ERROR}
        assert {s.trace_id for s in causes} == failing_traces
        # The cause is the call that raised, not the server span that only passed the error on.
        assert {s.name for s in causes} == {"charge card"}
        assert any(e.name == "rca.finding" for s in causes for e in s.events)
