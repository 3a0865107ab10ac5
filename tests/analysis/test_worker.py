"""processor.analysis.worker: analysis in a child process gives the same verdict as in this one.

Both get the batch as the store releases it (span bytes, no attribute
columns) and project the attributes their analyzer reads themselves.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from processor.analysis.build import analysis_projection, build_analyzer
from processor.analysis.runner import LocalAnalysis
from processor.analysis.worker import ProcessAnalysis
from processor.config import FaulttraceProcessorConfig
from processor.otlp.tracefile import read_requests
from processor.receivers.decode import decode
from processor.store import STORE_SCHEMA

TRACE = Path(__file__).resolve().parents[2] / "rules" / "tests" / "traces" / "code_exception.json"


def released_batch() -> tuple[pa.Table, dict[int, bytes]]:
    """The spans of TRACE as the store would release them."""
    tables, resources = [], {}
    for request in read_requests(TRACE):
        batch = decode(request).batch
        tables.append(batch.table)
        resources.update(batch.resources)
    table = pa.concat_tables(tables)
    assert table.schema == STORE_SCHEMA
    return table, resources


def verdict_of(analysis, table, resources) -> dict:
    v = asyncio.run(analysis.analyze(table, resources))
    return {t: [(c.span_id, c.rank, c.rules) for c in tv.candidates] for t, tv in v.traces.items()}


@pytest.mark.slow  # starts an analysis worker process
def test_a_worker_process_finds_what_the_analyzer_finds_here():
    config = FaulttraceProcessorConfig(localizer={"enabled": False})
    analyzer = build_analyzer(config)
    here = LocalAnalysis(analyzer, analysis_projection(config, analyzer))
    worker = ProcessAnalysis(config)
    table, resources = released_batch()
    try:
        assert worker.projection() == here.projection() == analyzer.projection()
        expected = verdict_of(here, table, resources)
        # the deepest-exception rule reads event attributes: projected from the span bytes
        assert expected and any("code.deepest_exception" in r for cs in expected.values() for _, _, r in cs)
        assert verdict_of(worker, table, resources) == expected
        assert verdict_of(worker, table, resources) == expected  # batch after batch
    finally:
        worker.close()
        here.close()
    assert not worker._process.is_alive()
    # a closed worker no longer analyzes, and says so instead of hanging
    assert worker.analyze_now(table, resources).traces == {}


@pytest.fixture
def worker() -> Iterator[tuple[ProcessAnalysis, pa.Table, dict[int, bytes], dict]]:
    """A worker process (rules only), the released batch, and the verdict it gives; closed after."""
    analysis = ProcessAnalysis(FaulttraceProcessorConfig(localizer={"enabled": False}))
    table, resources = released_batch()
    try:
        expected = verdict_of(analysis, table, resources)
        assert expected
        yield analysis, table, resources, expected
    finally:
        analysis.close()
    assert not analysis._process.is_alive() and analysis._process.exitcode == 0  # closed, not killed


@pytest.mark.slow  # starts an analysis worker process
def test_ctrl_c_at_a_terminal_leaves_the_worker_to_the_pipelines_shutdown(worker):
    # Ctrl-C signals the terminal's whole process group: the worker must keep analysing what the
    # stopping pipeline still drains through it, and leave when closed
    analysis, table, resources, expected = worker
    os.kill(analysis.pid, signal.SIGINT)
    analysis._process.join(1)
    assert analysis._process.is_alive()
    assert verdict_of(analysis, table, resources) == expected


def test_a_failing_analysis_costs_the_batch_its_verdict_not_the_pipeline():
    class Broken:
        def projection(self):
            return frozenset()

        def analyze(self, conn, table):
            raise RuntimeError("boom")

        def close(self):
            pass

    table, resources = released_batch()
    analysis = LocalAnalysis(Broken(), analysis_projection(FaulttraceProcessorConfig(), Broken()))
    assert verdict_of(analysis, table, resources) == {}


@pytest.mark.slow  # starts an analysis worker process
def test_a_dead_worker_is_replaced_for_the_next_batch(worker):
    analysis, table, resources, expected = worker
    first = analysis._process
    first.kill()
    first.join(5)
    # too soon after the last start: no new worker yet (an hour, so a slow machine cannot pass it)
    analysis.RESTART_INTERVAL = 3600.0
    assert verdict_of(analysis, table, resources) == {}
    analysis.RESTART_INTERVAL = 0.0
    assert verdict_of(analysis, table, resources) == expected  # a new worker took over
    assert analysis._process is not first and analysis._process.is_alive()


def test_analysis_that_cannot_run_costs_the_spans_nothing(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    # a failure outside the analyzer (here its DuckDB connection cannot be made) used to escape
    # to the release loop after the chunk had left the store: its spans were never exported
    from processor.analysis import runner
    from tests.support import harness as h
    from tests.support.otlp_sink import OtlpGrpcSink

    def cannot_connect(storage):
        raise RuntimeError("cannot connect the analysis DuckDB")

    monkeypatch.setattr(runner, "analysis_connection", cannot_connect)
    sink = OtlpGrpcSink()
    run = h.start_pipeline(h.config_dict({"otlp": h.grpc_exporter(sink.port)},
                                         processor={"analysis_process": False, "builtin_rules": True}))
    try:
        h.grpc_export(run.grpc_target, h.simple_request(1, traces=2, spans_per_trace=3))
        got = sink.wait_for_spans(6, timeout=30)
        assert len(got) == 6
        h.wait_until(lambda: "analysis could not run on a batch" in caplog.text, what="the failure logged")
    finally:
        run.stop()
        sink.stop()
