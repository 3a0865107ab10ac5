"""processor.worker: analysis in a child process gives the same verdict as in this one."""

from __future__ import annotations

from pathlib import Path

import duckdb

from processor.analyzers import build_analyzer
from processor.config import FaulttraceProcessorConfig
from processor.decode import Projection
from processor.offline import span_table
from processor.store import RELEASED_TABLE, with_row_numbers
from processor.tracefile import read_requests
from processor.worker import ProcessAnalyzer

TRACE = Path(__file__).resolve().parents[1] / "rules" / "tests" / "traces" / "code_exception.json"


def verdict_of(analyzer, table) -> dict:
    conn = duckdb.connect()
    conn.register(RELEASED_TABLE, with_row_numbers(table))
    v = analyzer.analyze(conn, RELEASED_TABLE)
    return {t: [(c.span_id, c.rank, c.rules) for c in tv.candidates] for t, tv in v.traces.items()}


def test_a_worker_process_finds_what_the_analyzer_finds_here():
    config = FaulttraceProcessorConfig(localizer={"enabled": False})
    here = build_analyzer(config)
    worker = ProcessAnalyzer(config)
    try:
        assert worker.projection() == here.projection()
        table = span_table(read_requests(TRACE), Projection.of(worker.projection()))
        expected = verdict_of(here, table)
        assert expected and any("code.deepest_exception" in r for cs in expected.values() for _, _, r in cs)
        assert verdict_of(worker, table) == expected
        assert verdict_of(worker, table) == expected  # the worker keeps serving batch after batch
    finally:
        worker.close()
    assert not worker._process.is_alive()
    # a closed worker no longer analyzes, and says so instead of hanging
    assert verdict_of(worker, table) == {}
