"""Baseline snapshots: a history saved and restored learns on exactly as the one that was never
stopped; a snapshot of another bucket scale or no snapshot at all is refused and costs a cold start."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from processor.localizer import span_metrics
from processor.localizer.history import History, HistoryConfig
from processor.localizer.snapshot import (
    SKETCH_TABLES,
    SnapshotError,
    check,
    copy_snapshot,
    restore,
    save,
    snapshot_path,
)
from tests.support import localizer_synth as synth


def _metrics(n: int, seed: int) -> pa.Table:
    return span_metrics(duckdb.connect(), synth.table(synth.spans(n=n, seed=seed)))


def _tables(history: History) -> dict[str, list[tuple]]:
    return history.with_sketches(lambda c: {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                                            for t in SKETCH_TABLES})


def test_a_restored_history_learns_on_as_the_uninterrupted_one(tmp_path: Path) -> None:
    uninterrupted, first = History(), History()
    for h in (uninterrupted, first):
        h.learn(_metrics(200, seed=1))
    path = tmp_path / "journal.baseline.duckdb"
    save(first, path)
    first.close()
    warm = History()
    assert restore(warm, path) == 200 and warm.traces_seen == 200
    for h in (uninterrupted, warm):
        h.learn(_metrics(100, seed=2))
    assert _tables(warm) == _tables(uninterrupted)
    order = [("service", "ascending"), ("name", "ascending")]
    got, want = (h.baseline().ops.sort_by(order).to_pylist() for h in (warm, uninterrupted))
    assert [(r["service"], r["name"]) for r in got] == [(r["service"], r["name"]) for r in want]
    numeric = [k for k, v in want[0].items() if isinstance(v, float)]
    # equal but for the order DuckDB sums in
    assert [r[k] for r in got for k in numeric] == pytest.approx([r[k] for r in want for k in numeric])


def test_the_snapshot_file_is_written_at_close_and_read_at_start(tmp_path: Path) -> None:
    config = HistoryConfig(snapshot=str(tmp_path / "state" / "journal.baseline.duckdb"))
    learned = History(config)
    learned.learn(_metrics(150, seed=3))
    expected = _tables(learned)
    learned.close()
    again = History(config)
    assert again.traces_seen == 150 and _tables(again) == expected
    again.close()


def test_a_snapshot_of_another_bucket_scale_is_refused_and_the_start_is_cold(tmp_path: Path, caplog) -> None:
    path = tmp_path / "journal.baseline.duckdb"
    coarse = History(HistoryConfig(gamma=1.2))
    coarse.learn(_metrics(50, seed=4))
    save(coarse, path)
    with pytest.raises(SnapshotError, match="gamma 1.2"):
        restore(History(), path)
    with caplog.at_level(logging.WARNING):
        cold = History(HistoryConfig(snapshot=str(path)))
    assert cold.traces_seen == 0 and "starting with a cold baseline" in caplog.text


def test_a_file_that_is_not_a_snapshot_is_an_error_not_a_crash(tmp_path: Path) -> None:
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(SnapshotError, match="not a faulttrace baseline snapshot"):
        check(other)
    (tmp_path / "text").write_text("hello")
    with pytest.raises(SnapshotError, match="not a faulttrace baseline snapshot"):
        check(tmp_path / "text")
    with pytest.raises(SnapshotError, match="no such snapshot"):
        copy_snapshot(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_snapshot_lives_beside_the_journal() -> None:
    assert snapshot_path("/var/lib/ft/journal.duckdb") == Path("/var/lib/ft/journal.baseline.duckdb")


def test_the_rules_healthy_firing_rates_are_kept_with_the_baseline(tmp_path: Path) -> None:
    from processor.analysis.prevalence import HealthyFiring

    config = HistoryConfig(snapshot=str(tmp_path / "journal.baseline.duckdb"))
    history, firing = History(config), HealthyFiring()
    assert history.snapshots is not None
    history.snapshots.attach("healthy_firing", firing)
    history.learn(_metrics(40, seed=5))
    firing.learn([bytes([i]) * 16 for i in range(40)], {bytes([1]) * 16: {"rule.a"}, bytes([2]) * 16: {"rule.b"}})
    history.close()

    again, restored = History(config), HealthyFiring()
    assert again.snapshots is not None
    again.snapshots.attach("healthy_firing", restored)
    assert restored.state() == firing.state() and restored.traces == 40
    assert restored.rate("rule.a") == firing.rate("rule.a") > restored.rate("never.fired")
