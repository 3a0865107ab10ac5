"""The ``faulttrace`` command as a user runs it: a real subprocess, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.harness import assert_same_spans, free_port, from_otlp_json, grpc_export, simple_request, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]  # the real `faulttrace` command in a subprocess

GOOD = {
    "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:4317"}}}},
    "exporters": {"debug": {}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
}


def faulttrace(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("faulttrace")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "processor.cli", *args]


def write_yaml(tmp_path: Path, doc: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_validate_accepts_a_good_file(tmp_path):
    path = write_yaml(tmp_path, GOOD)
    done = subprocess.run(faulttrace("validate", "--config", str(path)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout and "receivers: otlp" in done.stdout and "exporters: debug" in done.stdout


def test_validate_rejects_a_bad_file_naming_the_key(tmp_path):
    bad = json.loads(json.dumps(GOOD))
    bad["exporters"] = {"otlp_grpc": {"endpoint": "x:1", "tls": {"insecur": True}}}
    bad["service"]["pipelines"]["traces"]["exporters"] = ["otlp_grpc"]
    path = write_yaml(tmp_path, bad)
    done = subprocess.run(faulttrace("validate", "--config", str(path)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "exporters.otlp_grpc.tls.insecur: unknown key" in done.stderr
    assert done.stdout == ""


def test_validate_requires_config_and_serve_refuses_a_bad_one(tmp_path):
    done = subprocess.run(faulttrace("validate"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--config" in done.stderr
    done = subprocess.run(faulttrace("serve", "--config", str(tmp_path / "nope.yaml")), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "cannot read" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_exports_buffered_traces_on_signal(tmp_path, sig):
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    out = tmp_path / "out" / "traces.jsonl"
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                                             "http": {"endpoint": f"127.0.0.1:{http_port}"}}}},
        "processors": {"faulttrace": {"decision_wait": "10m", "builtin_rules": False}},  # nothing completes on its own
        "exporters": {"file": {"path": str(out)}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": ["file"]}},
                    "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
                    "shutdown_timeout": "10s"},
    }
    path = write_yaml(tmp_path, config)
    proc = subprocess.Popen(faulttrace("serve", "--config", str(path)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(healthy, timeout=30, what="faulttrace serve to come up")
        sent = [simple_request(1, traces=3, spans_per_trace=3), simple_request(10, traces=2, service="web")]
        grpc_export(f"127.0.0.1:{grpc_port}", sent[0])
        reply = requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=sent[1].SerializeToString(),
                              headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert reply.status_code == 200
        health = requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=5).json()
        assert health["buffered_spans"] == 13 and health["buffered_traces"] == 5
        assert not out.exists() or out.read_text() == ""  # still buffered
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "shutting down" in stderr
    received = [from_otlp_json(json.loads(line)) for line in out.read_text(encoding="utf-8").splitlines()]
    assert_same_spans(sent, received)


def serve_config(grpc: dict, http: dict) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", **grpc},
                                             "http": {"endpoint": "127.0.0.1:0", **http}}}},
        "processors": {"faulttrace": {"builtin_rules": False, "localizer": {"enabled": False}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": ["debug"]}},
                    "telemetry": {"metrics": {"address": "127.0.0.1:0"}}},
    }


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_serve_on_a_port_in_use_fails_with_one_line(tmp_path, protocol):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = {"endpoint": f"127.0.0.1:{port}"}
        path = write_yaml(tmp_path, serve_config(endpoint if protocol == "grpc" else {},
                                                 endpoint if protocol == "http" else {}))
        done = subprocess.run(faulttrace("serve", "--config", str(path)), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 1
    assert done.stderr == (f"error: receivers.otlp.protocols.{protocol}: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use\n")


def test_serve_with_a_key_that_is_not_a_key_fails_with_one_line(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n", encoding="utf-8")
    key.write_text("not a key\n", encoding="utf-8")
    path = write_yaml(tmp_path, serve_config({}, {"tls": {"cert_file": str(cert), "key_file": str(key)}}))
    done = subprocess.run(faulttrace("serve", "--config", str(path)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: receivers.otlp.protocols.http.tls: cannot load cert_file {cert} "
                                  f"with key_file {key}: not PEM")


def test_validate_names_a_missing_certificate_by_its_key_path(tmp_path):
    path = write_yaml(tmp_path, serve_config({"tls": {"cert_file": str(tmp_path / "nope.pem"),
                                                      "key_file": str(tmp_path / "nope.key")}}, {}))
    done = subprocess.run(faulttrace("validate", "--config", str(path)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert f"receivers.otlp.protocols.grpc.tls.cert_file: no such file: {tmp_path / 'nope.pem'}" in done.stderr
    assert f"receivers.otlp.protocols.grpc.tls.key_file: no such file: {tmp_path / 'nope.key'}" in done.stderr


def test_serve_on_a_journal_it_cannot_open_fails_with_one_line_and_exit_1(tmp_path):
    # Like a port in use: a failure to start (exit 1), not an invalid configuration (exit 2).
    journal = tmp_path / "journal.duckdb"
    journal.write_bytes(b"not a DuckDB database" * 1000)
    config = serve_config({}, {})
    config["processors"]["faulttrace"]["storage"] = {"path": str(journal)}
    done = subprocess.run(faulttrace("serve", "--config", str(write_yaml(tmp_path, config))), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot open the journal {journal} (processors.faulttrace.storage.path)")


def test_serve_without_a_file_takes_port_flags_set_and_the_sdks_variables(tmp_path):
    # No config: the embedded defaults moved off 4317/4318/8888 (a local collector has them), a key
    # set as with otelcol --set, and the exporter named by the OpenTelemetry SDK's variables.
    from tests.support.otlp_sink import OtlpGrpcSink

    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    with OtlpGrpcSink() as sink:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
               "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme"}
        proc = subprocess.Popen(faulttrace("serve", "--grpc-port", str(grpc_port), "--http-port", str(http_port),
                                           "--metrics-port", str(metrics_port),
                                           "--set", "processors.faulttrace.decision_wait=100ms",
                                           "--set", "processors.faulttrace.storage.path=\":memory:\"",  # YAML: quoted
                                           "--set", "processors.faulttrace.analysis_process=false"),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def healthy() -> bool:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    return requests.get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=1).status_code == 200
                except requests.ConnectionError:
                    return False

            wait_until(healthy, timeout=30, what="faulttrace serve to come up")
            sent = simple_request(1, traces=2)
            grpc_export(f"127.0.0.1:{grpc_port}", sent)
            reply = requests.post(f"http://127.0.0.1:{http_port}/v1/traces", data=simple_request(5).SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}, timeout=10)
            assert reply.status_code == 200
            sink.wait_for_spans(6, timeout=20)  # decision_wait 100ms, not the default 5s
            assert {r.headers.get("x-tenant") for r in sink.received} == {"acme"}
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr


def test_validate_with_set_names_the_assignment(tmp_path):
    path = write_yaml(tmp_path, GOOD)
    done = subprocess.run(faulttrace("validate", "--config", str(path), "--set", "exporters.debug.verbosity=loud"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "exporters.debug.verbosity: Input should be 'basic', 'normal' or 'detailed'" in done.stderr
    done = subprocess.run(faulttrace("validate", "--config", str(path), "--set",
                                     "receivers.otlp.protocols.grpc.keepalive={server_parameters: {time: 10s}}"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
