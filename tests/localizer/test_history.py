"""The learning baseline: sketch quantiles, decay by traffic volume, bounded size."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
import synth

from processor.localizer import Baseline, span_metrics
from processor.localizer.history import History, HistoryConfig


def _metrics(n: int, seed: int, faults: synth.Faults | None = None) -> pa.Table:
    return span_metrics(duckdb.connect(), synth.table(synth.spans(n=n, faults=faults, seed=seed)))


def _op(base: Baseline, service: str, name: str) -> dict:
    return next(r for r in base.ops.to_pylist() if (r["service"], r["name"]) == (service, name))


def test_sketch_quantiles_match_exact_ones_within_the_bucket_width() -> None:
    history = History()
    metrics = _metrics(300, seed=1)
    history.learn(metrics)
    exact = Baseline.learn(duckdb.connect(), metrics)
    for service, name in [("db", "SELECT"), ("frontend", "GET /"), ("checkout", "PlaceOrder")]:
        got, want = _op(history.baseline(), service, name), _op(exact, service, name)
        for col in ("self_med", "self_p99", "dur_med", "dur_p99"):
            assert float(got[col]) == pytest.approx(float(want[col]), rel=0.06), col
    shapes = {(r["service"], r["name"], r["sig"]): r["share"] for r in history.baseline().shapes.to_pylist()}
    assert shapes[("checkout", "PlaceOrder", "checkout:cart/GetCart|checkout:payment/Charge|checkout:shipping/Quote")] \
        == pytest.approx(1.0)


def test_operations_seen_too_rarely_are_not_judged() -> None:
    history = History(HistoryConfig(min_count=50))
    history.learn(_metrics(30, seed=2))       # ads: 30 spans, db: 60 (called twice per trace)
    judged = {(r["service"], r["name"]) for r in history.baseline().ops.to_pylist()}
    assert ("db", "SELECT") in judged and ("ads", "GetAds") not in judged
    history.learn(_metrics(30, seed=3))
    assert ("ads", "GetAds") in {(r["service"], r["name"]) for r in history.baseline().ops.to_pylist()}


def test_old_traffic_decays_so_a_lasting_change_is_learned() -> None:
    history = History(HistoryConfig(half_life=100))
    history.learn(_metrics(200, seed=4))
    before = float(_op(history.baseline(), "db", "SELECT")["self_med"])
    for seed in range(5, 10):
        history.learn(_metrics(100, seed=seed, faults=synth.Faults(slow={"db": 5.0})))
    after = float(_op(history.baseline(), "db", "SELECT")["self_med"])
    assert before < 1e6 < 4e6 < after


def test_suspicious_traces_are_learned_only_a_little() -> None:
    history = History()
    history.learn(_metrics(200, seed=4))
    slow = _metrics(100, seed=11, faults=synth.Faults(slow={"db": 5.0}))
    history.learn(slow, dict.fromkeys(slow.column("trace_id").to_pylist(), 0.01))
    assert float(_op(history.baseline(), "db", "SELECT")["self_p99"]) < 1e6


def test_memory_is_bounded() -> None:
    history = History(HistoryConfig(max_ops=5, max_shapes=1))
    for seed in range(3):
        history.learn(_metrics(50, seed=seed))
    size = history.size()
    assert size["lz_ops"] == 5 and size["lz_shapes"] <= 5
    assert size["lz_hist"] <= 5 * 2 * 60
