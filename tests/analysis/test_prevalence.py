"""processor.analysis.prevalence: each source's firing rate on traces without a failure, and the
posterior it turns a finding's confidence into; through the real rules and DuckDB batches."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dsl import load_rules, no_parent_sql, root_key_sql
from processor.analysis.attributes import Projection, span_table
from processor.analysis.build import seed_healthy
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.prevalence import MIN_OBSERVATIONS, PRIOR_RATE, HealthyFiring, Outcomes, fired, outcomes
from processor.analysis.protocols import RELEASED_TABLE, with_row_numbers
from processor.analysis.rules import RuleAnalyzer
from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, TraceVerdict
from processor.config import FaulttraceProcessorConfig
from processor.localizer.baseline import min_observations, range_observations
from processor.otlp.tracefile import read_requests
from tests.support.harness import sid, tid

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "rules" / "tests" / "traces"
HANDLED = TRACES / "healthy_429_retried.json"      # a 429 retried into a success: the root is fine
FAILED = TRACES / "code_exception.json"            # the root ends in error
SLOW_QUERY = TRACES / "data_slow_query.json"       # a rule fires, the root is fine


def batch(conn: duckdb.DuckDBPyConnection, *files: Path, projection: frozenset = frozenset()) -> str:
    requests = [r for f in files for r in read_requests(f)]
    conn.register(RELEASED_TABLE, with_row_numbers(span_table(requests, Projection.of(projection))))
    return RELEASED_TABLE


def trace_ids(path: Path) -> set[bytes]:
    return {s.trace_id for r in read_requests(path) for rs in r.resource_spans for ss in rs.scope_spans
            for s in ss.spans}


def test_a_handled_error_is_no_failure_and_an_erroring_root_is():
    conn = duckdb.connect()
    seen = outcomes(conn, batch(conn, HANDLED, FAILED))
    assert seen.traces == trace_ids(HANDLED) | trace_ids(FAILED)
    assert seen.failed == trace_ids(FAILED)
    assert seen.healthy == trace_ids(HANDLED)


def test_a_root_slower_than_its_baseline_has_been_is_a_failure():
    conn = duckdb.connect()
    table = batch(conn, HANDLED)
    service, name, dur = conn.execute(
        f"SELECT service, name, end_ns - start_ns FROM {table} WHERE octet_length(parent_span_id) = 0 "
        "OR parent_span_id IS NULL").fetchall()[0]
    def durations(top: float, n: int = MIN_OBSERVATIONS) -> pa.Table:
        return pa.table({"service": [service], "name": [name], "n": [n], "dur_p99": [top / 10], "dur_max": [top]})
    assert outcomes(conn, table, durations(dur - 1)).failed == trace_ids(HANDLED)
    # beyond the p99 but within the longest seen: 1% of healthy roots, no failure
    assert outcomes(conn, table, durations(dur)).failed == frozenset()
    # a longest duration learned from too few spans is not trusted to call the root slow
    assert outcomes(conn, table, durations(dur - 1, MIN_OBSERVATIONS - 1)).failed == frozenset()


def test_a_trace_without_its_root_or_with_a_root_lacking_a_value_is_judged_by_the_whole_root_key():
    # outcomes reads the root among the spans that name no parent, and only the rest (a fragment
    # whose root has not arrived, a root whose status is NULL) with the whole key (root_key_sql):
    # the same roots as that key over every trace
    conn = duckdb.connect()
    table = batch(conn, HANDLED, FAILED)
    conn.register("failed_ids", pa.table({"trace_id": pa.array(sorted(trace_ids(FAILED)), pa.binary())}))
    root, failed = no_parent_sql("parent_span_id"), "trace_id IN (SELECT trace_id FROM failed_ids)"
    # the failed trace loses its root span (its error child heads the fragment); the handled one's
    # root status becomes NULL
    conn.execute(f"""CREATE TABLE cut AS SELECT * REPLACE (CASE WHEN {root} THEN NULL ELSE status_code END
                                                           AS status_code)
                     FROM {table} WHERE NOT ({root} AND {failed})""")
    key = root_key_sql("s", no_parent=no_parent_sql("s.parent_span_id"), parent_found="p.span_id IS NOT NULL")
    expected = conn.execute(f"""
        SELECT s.trace_id, arg_min(s.status_code, {key}) FROM cut s
        LEFT JOIN cut p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
        GROUP BY s.trace_id""").fetchall()
    seen = outcomes(conn, "cut")
    assert seen.traces == trace_ids(HANDLED) | trace_ids(FAILED)
    assert seen.failed == {t for t, status in expected if status == 2} == trace_ids(FAILED)


def test_the_count_a_slow_root_needs_is_where_healthy_roots_fail_at_most_the_ceiling():
    # a normal duration passes the largest of n with probability 1 / (n + 1)
    assert 1 / (MIN_OBSERVATIONS + 1) <= PRIOR_RATE < 1 / MIN_OBSERVATIONS
    assert MIN_OBSERVATIONS == range_observations(0.01) == 99 and range_observations(0.05) == 19
    assert min_observations(0.99, 0.5) == 69  # 0.99 ** 69 < 0.5 <= 0.99 ** 68
    assert 0.99 ** 69 < 0.5 <= 0.99 ** 68
    assert min_observations(0.99, 0.95) == 299
    with pytest.raises(ValueError):
        min_observations(1.0, 0.5)


def test_an_unmeasured_source_is_taken_at_the_ceiling_and_keeps_its_confidence():
    h = HealthyFiring()
    assert h.rate("never.seen") == pytest.approx(PRIOR_RATE)
    assert h.posterior(0.7, "never.seen") == pytest.approx(0.7)


def test_a_source_firing_on_a_fifth_of_healthy_traces_says_little_and_a_quiet_one_keeps_its_word():
    h = HealthyFiring()
    ids = [tid(i) for i in range(1000)]
    h.learn(ids, {t: {"noisy"} for t in ids[:200]} | {t: {"quiet"} for t in ids[200:201]})
    assert h.rate("noisy") == pytest.approx(201 / 1100)
    noisy = h.posterior(0.6, "noisy")
    odds = 0.6 / 0.4 * PRIOR_RATE / (201 / 1100)
    assert noisy == pytest.approx(odds / (1 + odds))
    assert noisy < 0.1
    # fires less often than the ceiling: the stated confidence stands (never raised)
    assert h.posterior(0.6, "quiet") == pytest.approx(0.6)
    assert h.posterior(1.0, "noisy") == 1.0 and h.posterior(0.0, "noisy") == 0.0


def test_learning_decays_by_traffic_volume():
    h = HealthyFiring(half_life=100)
    h.learn([tid(i) for i in range(100)], {tid(i): {"s"} for i in range(100)})
    assert h.traces == pytest.approx(100) and h.fired["s"] == pytest.approx(100)
    h.learn([tid(i) for i in range(100, 200)], {})
    assert h.traces == pytest.approx(150) and h.fired["s"] == pytest.approx(50)
    h.learn([], {tid(1): {"s"}})  # no healthy trace: nothing counted, nothing decayed
    assert h.traces == pytest.approx(150)


def test_weighing_leaves_failed_traces_and_weighs_the_localizer_by_its_primary_source():
    h = HealthyFiring()
    ids = [tid(100 + i) for i in range(100)]
    h.learn(ids, {t: {"localizer.errors"} for t in ids[:50]})
    local = (Evidence("localizer.errors", "error", 0.6, 1.8, "", "localizer"),
             Evidence("localizer.attribution", "shared", 0.6, 1.8, "", "localizer"))
    rule = Evidence("r.quiet", "fired", 0.8, 3.2, "code")
    verdict = BatchVerdict({t: TraceVerdict(t, sid(1), (Candidate(sid(2), "s", "op", 1, 0, 1, (rule, *local)),))
                            for t in (tid(1), tid(2))})
    weighed = h.weigh(verdict, Outcomes(frozenset({tid(1), tid(2)}), frozenset({tid(2)})))
    healthy = weighed.traces[tid(1)].candidates[0].evidence
    assert healthy[0].confidence == 0.8  # a rule never seen on healthy traffic
    # the attribution is weighed as the error origin it qualifies, though it was never counted itself
    assert healthy[1].confidence == healthy[2].confidence == pytest.approx(h.posterior(0.6, "localizer.errors"), abs=1e-6)
    assert healthy[1].confidence < 0.1
    assert [e.score for e in healthy] == [e.score for e in (rule, *local)]  # the ranking weight stays
    assert weighed.traces[tid(2)] == verdict.traces[tid(2)]  # the failure is observed: untouched


def test_through_the_combined_analyzer_a_rule_that_fires_on_healthy_traffic_loses_its_confidence():
    rules = load_rules([ROOT / "rules"])
    refs = RuleAnalyzer(rules).projection()
    conn = duckdb.connect()
    plain = CombinedAnalyzer([RuleAnalyzer(rules)]).analyze(conn, batch(conn, SLOW_QUERY, FAILED, projection=refs))
    sources = fired([plain])
    (slow,) = trace_ids(SLOW_QUERY)
    (failing,) = trace_ids(FAILED)
    assert sources[slow] and sources[failing], "both fixtures fire rules"

    h = HealthyFiring()
    noisy = [tid(1000 + i) for i in range(300)]
    h.learn(noisy, {t: sources[slow] | sources[failing] for t in noisy})
    conn = duckdb.connect()
    weighed = CombinedAnalyzer([RuleAnalyzer(rules)], healthy=h).analyze(
        conn, batch(conn, SLOW_QUERY, FAILED, projection=refs))
    assert weighed.traces[slow].top.confidence < plain.traces[slow].top.confidence / 2
    assert weighed.traces[failing].top.confidence == plain.traces[failing].top.confidence
    assert [c.span_id for c in weighed.traces[slow].candidates] == [c.span_id for c in plain.traces[slow].candidates]
    # and the batch's healthy trace was learned, the failing one not
    assert h.traces == pytest.approx(301, rel=0.01)


def test_seeding_counts_what_the_configured_analysis_fires_on_the_baseline_file():
    config = FaulttraceProcessorConfig(localizer={"baseline": str(SLOW_QUERY)}, analysis_process=False)
    rules = load_rules([ROOT / "rules"])
    conn = duckdb.connect()
    table = batch(conn, SLOW_QUERY, projection=RuleAnalyzer(rules).projection())
    expected = fired([CombinedAnalyzer([RuleAnalyzer(rules)]).analyze(conn, table)])
    h = HealthyFiring()
    seed_healthy(config, rules, h)
    assert h.traces == 1
    (slow,) = trace_ids(SLOW_QUERY)
    assert expected[slow] <= set(h.fired)


def test_the_floor_goes_on_the_verdicts_of_traces_that_did_not_fail():
    rules = load_rules([ROOT / "rules"])
    conn = duckdb.connect()
    table = batch(conn, FAILED, SLOW_QUERY, projection=RuleAnalyzer(rules).projection())
    v = CombinedAnalyzer([RuleAnalyzer(rules)], min_confidence=0.4).analyze(conn, table)
    (failing,), (slow,) = trace_ids(FAILED), trace_ids(SLOW_QUERY)
    assert v.traces[slow].min_confidence == 0.4
    assert v.traces[failing].min_confidence == 0.0  # the caller saw the failure: every candidate is written
