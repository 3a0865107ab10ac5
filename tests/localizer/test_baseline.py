"""A baseline beside a window's metrics: registered once for the steps of a batch that nest."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from processor.localizer import Baseline, span_metrics
from tests.support import localizer_synth as synth


def _names(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}


def test_a_beside_within_another_for_the_same_window_keeps_the_outer_registrations() -> None:
    conn = duckdb.connect()
    metrics = span_metrics(conn, synth.table(synth.spans(n=20, seed=1)))
    base = Baseline.learn(conn, metrics)
    extra = pa.table({"pod": pa.array(["p"], pa.string())})
    with base.beside(conn, metrics):
        with base.beside(conn, metrics, lz_extra=extra):
            assert {"m", "base_ops", "base_shapes", "lz_extra"} <= _names(conn)
        # the inner block took only its own table with it
        assert {"m", "base_ops", "base_shapes"} <= _names(conn) and "lz_extra" not in _names(conn)
        assert conn.execute("SELECT count(*) FROM m").fetchall()[0][0] == metrics.num_rows
    assert not {"m", "base_ops", "base_shapes"} & _names(conn)


def test_a_beside_for_other_metrics_registers_its_own_and_leaves_none_behind() -> None:
    conn = duckdb.connect()
    metrics = span_metrics(conn, synth.table(synth.spans(n=20, seed=1)))
    other = metrics.slice(0, 5)
    base = Baseline.learn(conn, metrics)
    with base.beside(conn, metrics):
        with base.beside(conn, other):
            assert conn.execute("SELECT count(*) FROM m").fetchall()[0][0] == 5
    assert "m" not in _names(conn)
    with pytest.raises(duckdb.Error):
        conn.execute("SELECT count(*) FROM m")
