"""Baselines survive restarts: ``faulttrace serve`` with a journal learns from traffic, is stopped
by SIGTERM, starts again warm and learns on: its baseline then counts every trace of both runs, as
an uninterrupted run's would.  ``faulttrace baseline export`` / ``import`` carry it to a second
instance, which starts warm too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_restart import Serve
from tests.support.harness import grpc_export, simple_request, wait_until
from tests.support.otlp_sink import OtlpGrpcSink
from tests.test_cli import faulttrace

pytestmark = pytest.mark.timeout(240)
TRACES = 60


def with_localizer(serve: Serve, journal: Path) -> Serve:
    config = yaml.safe_load(serve.config.read_text())
    config["processors"]["faulttrace"].update(localizer={"enabled": True}, storage={"path": str(journal)})
    serve.config.write_text(yaml.safe_dump(config), encoding="utf-8")
    return serve


def baseline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(faulttrace("baseline", *args), capture_output=True, text=True, timeout=60)


def learned(serve: Serve, tmp_path: Path) -> int:
    """The traces the stopped instance's baseline snapshot learned from (``baseline export``)."""
    done = baseline("export", str(tmp_path / "peek.duckdb"), "--config", str(serve.config))
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split("learned from ", 1)[1].split()[0].replace(",", ""))


def run(serve: Serve, sink: OtlpGrpcSink, first: int, traces: int) -> None:
    """Start, send ``traces`` traces (3 spans each), wait until they are exported, SIGTERM."""
    serve.start()
    expected = sink.span_count + traces * 3
    for start in range(first, first + traces, 20):
        grpc_export(serve.target, simple_request(start, traces=20, spans_per_trace=3, service=f"svc{start % 3}"))
    wait_until(lambda: sink.span_count == expected, 30, "every span to be exported")
    serve.sigterm()


def test_serve_restarts_warm_and_a_new_instance_imports_the_baseline(tmp_path: Path):
    journal = tmp_path / "a" / "journal.duckdb"
    with OtlpGrpcSink() as sink:
        (tmp_path / "a").mkdir()
        serve = with_localizer(Serve(tmp_path / "a", sink.port), journal)
        try:
            run(serve, sink, 1, TRACES)
            assert journal.with_name("journal.baseline.duckdb").is_file()
            assert learned(serve, tmp_path) == TRACES
            run(serve, sink, 1001, 20)
            assert learned(serve, tmp_path) == TRACES + 20       # warm: a cold restart would count 20
        finally:
            serve.close()

        exported = tmp_path / "seed.duckdb"
        done = baseline("export", str(exported), "--config", str(serve.config))
        assert done.returncode == 0, done.stderr
        assert f"learned from {TRACES + 20} traces" in done.stdout

        (tmp_path / "b").mkdir()
        other = with_localizer(Serve(tmp_path / "b", sink.port), tmp_path / "b" / "journal.duckdb")
        done = baseline("import", str(exported), "--config", str(other.config))
        assert done.returncode == 0, done.stderr
        try:
            other.start()
            refused = baseline("import", str(exported), "--config", str(other.config))
            assert refused.returncode == 1 and "is running" in refused.stderr
            other.sigterm()
            run(other, sink, 2001, 20)
            assert learned(other, tmp_path) == TRACES + 40       # a new instance, warm from the start
        finally:
            other.close()

    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database")
    done = baseline("import", str(bogus), "--config", str(other.config))
    assert done.returncode == 1 and "not a faulttrace baseline snapshot" in done.stderr
