"""Service ranking on synthetic windows whose root cause is known."""

from __future__ import annotations

import duckdb
import pytest

from processor.localizer import Baseline, localize_window, span_metrics
from processor.localizer.evidence import wilson_lower
from tests.support import localizer_synth as synth


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    conn = duckdb.connect()
    return Baseline.learn(conn, span_metrics(conn, synth.table(synth.spans(n=100, seed=0))))


def _top(faults: synth.Faults, baseline: Baseline, sources: tuple[str, ...] | None = None) -> list[str]:
    window = synth.table(synth.spans(faults=faults, seed=7))
    ranked = localize_window(window, baseline) if sources is None else localize_window(window, baseline, sources)
    return [r.service for r in ranked]


def test_slow_leaf_under_waiting_parents(baseline: Baseline) -> None:
    # every ancestor of db's spans is slower too, but only by waiting
    assert _top(synth.Faults(slow={"db": 3.0}), baseline)[0] == "db"


def test_slow_node_shared_by_many_callers(baseline: Baseline) -> None:
    assert _top(synth.Faults(net={"cart": 5.0}), baseline)[0] == "cart"
    assert _top(synth.Faults(net={"db": 3.0}), baseline)[0] == "db"


def test_caller_slow_on_all_its_calls_is_blamed_not_its_callees(baseline: Baseline) -> None:
    assert _top(synth.Faults(slow={"checkout": 5.0}), baseline)[0] == "checkout"


def test_error_propagating_up_three_levels_blames_its_origin(baseline: Baseline) -> None:
    # db -> payment -> checkout -> frontend all error; db is the origin
    assert _top(synth.Faults(error={"db"}), baseline)[0] == "db"


def test_error_origin_needs_the_errors_source(baseline: Baseline) -> None:
    assert _top(synth.Faults(error={"db"}), baseline, ("latency", "explain_away", "shape"))[0] != "db"


def test_tree_cut_short_after_a_call_blames_the_callee(baseline: Baseline) -> None:
    # latency is normal; only the shape (no calls after catalog's) shows it
    assert _top(synth.Faults(cut={"catalog"}), baseline, ("shape",))[0] == "catalog"


def test_normal_window_blames_nobody_strongly(baseline: Baseline) -> None:
    window = synth.table(synth.spans(seed=11))
    assert all(r.score < 0.3 for r in localize_window(window, baseline))


def test_without_baseline_the_window_is_its_own_reference() -> None:
    ranked = localize_window(synth.table(synth.spans(seed=3)))
    assert {r.service for r in ranked} >= {"frontend", "cart", "db"}


def test_wilson_lower_bound_is_cautious_on_small_samples() -> None:
    assert wilson_lower(3, 3) < wilson_lower(300, 300)
    assert wilson_lower(0, 10) == 0.0
    assert wilson_lower(0, 0) == 0.0


def test_trace_verdicts_blame_the_slow_span_in_each_trace(baseline: Baseline) -> None:
    from processor.localizer import rank_services
    from processor.localizer.blame import blame_traces

    conn = duckdb.connect()
    metrics = span_metrics(conn, synth.table(synth.spans(faults=synth.Faults(slow={"payment": 5.0}), seed=7)))
    ranking = rank_services(conn, metrics, baseline)
    verdict = blame_traces(conn, metrics, baseline, ranking, 3)
    assert len(verdict.traces) >= 50
    tops = [v.top for v in verdict.traces.values()]
    assert all(t is not None and t.rank == 1 and t.service == "payment" for t in tops)
    assert all(v.root_span_id is not None for v in verdict.traces.values())
