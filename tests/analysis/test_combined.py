"""processor.analysis.combined: merging rule and localizer verdicts over one batch."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from processor.analysis.calibration import compete, support
from processor.analysis.combined import STATISTICAL_WEIGHT, CombinedAnalyzer, merge, on_rule_scale, repeated_calls
from processor.analysis.verdict import (
    BatchVerdict,
    Candidate,
    Evidence,
    ServiceRank,
    Symptom,
    TraceVerdict,
    rank_candidates,
)
from processor.annotator import annotations
from tests.support.harness import sid, tid


def cand(n: int, *evidence: Evidence, depth: int = 1, rank: int = 0) -> Candidate:
    return Candidate(sid(n), "svc", f"op{n}", depth, 10, 20, evidence, rank)


def rule(source: str, confidence: float, severity_weight: float) -> Evidence:
    return Evidence(source, f"{source} fired", confidence, confidence * severity_weight, source.split(".")[0]
                    .replace("infra", "infrastructure"))


def stat(source: str, confidence: float, raw_score: float = 40.0, layer: str = "") -> Evidence:
    return Evidence(source, f"{source} deviates", confidence, raw_score, layer, kind="localizer")


def test_statistical_scores_move_onto_the_rule_scale_and_are_marked():
    v = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(2, stat("localizer.latency", 0.5)),))}))
    (e,) = v.traces[tid(1)].candidates[0].evidence
    assert e.score == 0.5 * STATISTICAL_WEIGHT and e.kind == "localizer"


def test_a_span_blamed_by_both_is_one_candidate_and_ranking_is_redone():
    rules = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(3, rule("code.x", 0.8, 4), depth=3, rank=1), cand(2, rule("code.weak", 0.3, 2), rank=2)))})
    local = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), None, (
        cand(2, stat("localizer.errors", 0.9), rank=1), cand(4, stat("localizer.latency", 0.2), rank=2)))},
        symptoms={tid(1): (Symptom(sid(1), sid(2)), Symptom(sid(2), sid(4)), Symptom(sid(5), sid(2)))}, services=(ServiceRank("svc", 1.5, 1.0),)))
    merged = merge([rules, local])
    v = merged.traces[tid(1)]
    assert [c.span_id for c in v.candidates] == [sid(3), sid(2), sid(4)]  # 3.2 > 2.7 > 0.6
    assert [c.rank for c in v.candidates] == [1, 2, 3]
    assert [e.source for e in v.candidates[1].evidence] == ["code.weak", "localizer.errors"]
    # the localizer's evidence outscores the rule's but names no layer: the rule's layer stands
    assert v.candidates[1].layer == "code" and v.candidates[2].layer == ""
    assert v.root_span_id == sid(1)
    # a blamed span is never a symptom: inherited is weaker than being blamed
    assert merged.symptoms[tid(1)] == (Symptom(sid(1), sid(2)), Symptom(sid(5), sid(2)))
    assert merged.services == (ServiceRank("svc", 1.5, 1.0),)


def test_symptoms_are_annotated_and_the_root_keeps_its_verdict():
    v = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(3, rule("code.x", 0.8, 4), rank=1),))},
                     symptoms={tid(1): (Symptom(sid(1), sid(3)), Symptom(sid(2)))})
    adds = annotations(v)
    assert adds[(tid(1), sid(2))].attributes == {"rca.symptom": True}
    assert adds[(tid(1), sid(1))].attributes["rca.caused_by"] == sid(3).hex()
    root = adds[(tid(1), sid(1))].attributes
    assert root["rca.symptom"] is True and root["rca.verdict.span_id"] == sid(3).hex()
    assert "rca.symptom" not in adds[(tid(1), sid(3))].attributes


def test_an_explained_candidate_leaves_the_ranking_and_points_at_its_cause():
    # the parser's exception is blamed by the localizer; a rule says the truncated chat explains it
    rules = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(2, rule("semantic.truncated", 0.7, 3)),))},
                         symptoms={tid(1): (Symptom(sid(4), sid(2), "truncated output", explained=True),)})
    local = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(4, stat("localizer.errors", 0.95)),))}, symptoms={tid(1): (Symptom(sid(1), sid(4)),)}))
    merged = merge([rules, local])
    assert [c.span_id for c in merged.traces[tid(1)].candidates] == [sid(2)]
    # the root inherited the parser's error, which the chat explains: it names the chat, one link away
    assert {s.span_id: s.caused_by for s in merged.symptoms[tid(1)]} == {sid(4): sid(2), sid(1): sid(2)}
    adds = annotations(merged)
    assert adds[(tid(1), sid(4))].attributes == {"rca.symptom": True, "rca.caused_by": sid(2).hex()}
    assert adds[(tid(1), sid(2))].attributes["rca.root_cause"] is True


def test_an_explanation_whose_cause_blames_nothing_leaves_the_trace_its_candidate():
    local = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(4, stat("localizer.errors", 0.9)),))},
                         symptoms={tid(1): (Symptom(sid(4), sid(7), explained=True),)})
    merged = merge([local])
    assert [c.span_id for c in merged.traces[tid(1)].candidates] == [sid(4)]
    assert tid(1) not in merged.symptoms


def _trace(*candidates: Candidate) -> BatchVerdict:
    return BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), candidates)})


def _confidences(v: BatchVerdict) -> dict[bytes, float]:
    return {c.span_id: c.confidence for c in v.traces[tid(1)].candidates}


def test_a_lone_candidate_keeps_its_support_and_rivals_share_it():
    lone = merge([_trace(cand(2, rule("code.x", 0.8, 4)))])
    assert _confidences(lone) == {sid(2): pytest.approx(0.8)}
    # a near tie: two spans each with 0.8 -> odds 4 each -> 4 / (1 + 4 + 4)
    tie = merge([_trace(cand(2, rule("code.x", 0.8, 4)), cand(3, rule("code.y", 0.8, 4)))])
    assert _confidences(tie) == {sid(2): pytest.approx(4 / 9), sid(3): pytest.approx(4 / 9)}
    # a clear winner: the rival has little support (odds 0.25) and takes little away
    clear = merge([_trace(cand(2, rule("code.x", 0.8, 4)), cand(3, rule("code.y", 0.2, 4)))])
    assert _confidences(clear)[sid(2)] == pytest.approx(4 / 5.25)
    assert _confidences(clear)[sid(2)] > _confidences(tie)[sid(2)]


def test_confidences_are_probabilities_of_exclusive_explanations():
    for supports in ([1.0], [1.0, 1.0], [0.0, 0.5], [0.99, 0.9, 0.3, 0.01]):
        ps = compete(supports)
        assert all(0.0 <= p <= 1.0 for p in ps) and sum(ps) <= 1.0
        assert ps == sorted(ps, reverse=True) or supports != sorted(supports, reverse=True)


def test_independent_families_combine_by_noisy_or_and_a_family_counts_once():
    rules = _trace(cand(2, rule("code.x", 0.6, 4), rule("code.y", 0.5, 4)))
    local = on_rule_scale(_trace(cand(2, stat("localizer.latency", 0.5), stat("localizer.window", 0.4))))
    (both,) = merge([rules, local]).traces[tid(1)].candidates
    assert support(both) == pytest.approx(1 - 0.4 * 0.5) == both.confidence
    # a fault tree built from the span's rules adds nothing beyond them; alone, it counts
    tree = Evidence("tree.t", "fired", 0.95, 4.0, "code", kind="fault_tree")
    assert support(cand(2, rule("code.x", 0.6, 4), tree)) == pytest.approx(0.6)
    assert support(cand(2, tree)) == pytest.approx(0.95)


def test_a_severe_rule_still_outranks_a_weak_deviation_and_confidence_follows_evidence():
    rules = _trace(cand(2, rule("code.severe", 0.7, 5)))
    local = on_rule_scale(_trace(cand(3, stat("localizer.latency", 0.3))))
    v = merge([rules, local]).traces[tid(1)]
    assert [c.span_id for c in v.candidates] == [sid(2), sid(3)]
    assert v.candidates[0].confidence > v.candidates[1].confidence > 0


def test_annotations_carry_the_calibrated_confidence():
    v = merge([_trace(cand(3, rule("code.x", 0.8, 4)), cand(4, rule("code.y", 0.8, 4)))])
    adds = annotations(v)
    top = v.traces[tid(1)].top
    assert adds[(tid(1), top.span_id)].attributes["rca.confidence"] == round(4 / 9, 4)
    assert adds[(tid(1), sid(1))].attributes["rca.verdict.confidence"] == round(4 / 9, 4)
    # the evidence keeps its own confidence: what the rule said
    assert all(e.attributes["rca.confidence"] == 0.8 for e in adds[(tid(1), top.span_id)].events)


def test_one_analyzers_verdict_keeps_its_order_and_still_settles_its_symptoms():
    # the localizer alone: its own ranking stands (a weaker candidate first), explained spans leave
    alone = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(3, stat("localizer.silent", 0.4)), cand(5, stat("localizer.latency", 0.6)),
        cand(4, stat("localizer.errors", 0.9))))},
        symptoms={tid(1): (Symptom(sid(4), sid(3), "lift", explained=True), Symptom(sid(1), sid(4)))}))
    v = merge([alone], rerank=False)
    assert [(c.span_id, c.rank) for c in v.traces[tid(1)].candidates] == [(sid(3), 1), (sid(5), 2)]
    assert {s.span_id: s.caused_by for s in v.symptoms[tid(1)]} == {sid(4): sid(3), sid(1): sid(3)}


def test_a_generic_rule_does_not_overrule_the_layer_the_rest_of_the_evidence_agrees_on():
    # any exception is "code" to a catch-all rule; a specific rule and the span's conventions
    # (the localizer, one voter however many of its sources fire) say the pool ran dry
    c = cand(2, rule("code.any_exception", 0.8, 4), rule("infra.pool_exhausted", 0.6, 3),
             stat("localizer.errors", 0.9, layer="infrastructure"), stat("localizer.latency", 0.9, layer="infrastructure"))
    assert c.layer == "infrastructure"
    # the localizer's sources count once: against a more confident rule it does not win by number
    c = cand(2, rule("code.a", 0.95, 4), stat("localizer.errors", 0.9, layer="data"),
             stat("localizer.latency", 0.9, layer="data"), stat("localizer.silent", 0.9, layer="data"))
    assert c.layer == "code"
    # nor do the rules: two generic ones reading the same exception are one reading, which a
    # specific rule and the conventions outweigh (a flag variant never seen before: config)
    c = cand(2, rule("code.deepest_exception", 0.9, 4), rule("code.key_error", 0.85, 3),
             rule("config.failing_flag_variant", 0.4, 2), stat("localizer.silent", 0.9, layer="config"))
    assert c.layer == "config"


def test_on_equal_evidence_the_corroborated_candidate_ranks_first():
    # the same rule on two retried calls; the statistics corroborate only the shallower one
    rules = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(2, rule("infra.rate_limited", 0.75, 4), depth=3), cand(3, rule("infra.rate_limited", 0.75, 4), depth=2)))})
    local = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(3, stat("localizer.silent", 0.97), depth=2),))}))
    v = merge([rules, local]).traces[tid(1)]
    assert [c.span_id for c in v.candidates] == [sid(3), sid(2)]
    assert v.candidates[0].confidence > v.candidates[1].confidence


def test_in_a_trace_that_did_not_fail_an_error_or_a_delay_the_window_confirms_carries_the_localizer():
    from processor.analysis.combined import trace_local

    def piece(source: str, confidence: float, failure: str) -> Evidence:
        return Evidence(source, f"{source} says so", confidence, 40.0, "", "localizer", failure=failure)

    def verdict(t: int) -> TraceVerdict:
        return TraceVerdict(tid(t), sid(1), (
            cand(2, piece("localizer.errors", 0.5, "error"), piece("localizer.silent", 0.7, ""),
                 piece("localizer.window", 0.8, "")),
            cand(3, piece("localizer.latency", 0.9, ""), piece("localizer.attribution", 0.9, ""),
                 rule("code.x", 0.6, 4)),
            # within the baseline's range, the window's support more likely than not: the localizer
            # says "delay" (localizer.blame._delay)
            cand(4, piece("localizer.latency", 0.6, "delay"), piece("localizer.window", 0.9, "")),
            # a window support of 0.25 (0.6 and 0.25 combined: 0.7): a healthy window's fluctuation
            cand(5, piece("localizer.latency", 0.6, ""), piece("localizer.window", 0.7, "")),
            # slower than anything the baseline holds
            cand(6, piece("localizer.latency", 0.8, "delay"), piece("localizer.window", 0.85, ""))))

    v = BatchVerdict({tid(1): verdict(1), tid(2): verdict(2)})
    local = trace_local(v, failed=frozenset({tid(1)}))
    assert local.traces[tid(1)] == v.traces[tid(1)]               # it failed: everything counts
    error, alone, supported, weak, beyond = local.traces[tid(2)].candidates
    assert [e.confidence for e in error.evidence] == [0.5, 0.5, 0.5]    # a qualifier and the window fall to it
    assert [e.confidence for e in alone.evidence] == [0.0, 0.0, 0.6]    # slow within the baseline's range: the rule
    assert [e.confidence for e in supported.evidence] == [0.6, 0.6]     # the window gates the delay, adds nothing
    assert [e.confidence for e in weak.evidence] == [0.0, 0.0]
    assert [e.confidence for e in beyond.evidence] == [0.8, 0.8]        # never seen: counts on its own
    assert [e.score for e in error.evidence] == [e.score for e in v.traces[tid(2)].candidates[0].evidence]
    assert support(error) == 0.5 and support(alone) == 0.6 and support(supported) == 0.6


def test_an_error_counts_where_nothing_failed_only_as_far_as_its_operations_baseline_says_errors_are_rare():
    import pyarrow as pa

    from processor.analysis.combined import trace_local
    from processor.localizer.baseline import min_observations, unexcluded_error_rate

    assert unexcluded_error_rate(0, 0.0) == 1.0
    assert unexcluded_error_rate(min_observations(0.99, 0.5), 0.0) <= 0.01 < unexcluded_error_rate(68, 0.0)
    assert unexcluded_error_rate(10_000, 0.05) == 0.05

    def error_at(n: int) -> Candidate:
        return Candidate(sid(n), "svc", f"op{n}", 1, 10, 20,
                         (Evidence("localizer.errors", "error origin", 0.85, 40.0, "", "localizer", failure="error"),))

    v = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (error_at(2), error_at(3), error_at(4)))})
    ops = pa.table({"service": ["svc", "svc"], "name": ["op2", "op3"], "n": [10_000, 20], "err_rate": [0.0, 0.0]})
    well_known, thin, never_seen = trace_local(v, frozenset(), ops).traces[tid(1)].candidates
    assert well_known.confidence == pytest.approx(0.85, abs=1e-3)
    assert thin.confidence == pytest.approx(0.85 * 0.5 ** (1 / 20), abs=1e-6)   # 1 - 3.4%
    assert never_seen.confidence == 0.0
    # where the trace failed, or no baseline was learned, the error stands as found
    assert trace_local(v, frozenset({tid(1)}), ops).traces[tid(1)] == v.traces[tid(1)]
    assert [c.confidence for c in trace_local(v, frozenset(), None).traces[tid(1)].candidates] == [0.85] * 3


def _attempts_table(parents: list[int]) -> pa.Table:
    """One trace: its root (span 1, OK) and a client span per entry of ``parents`` (spans 2, 3, …,
    one operation of one service, each failed), called from the span numbered there."""
    n = len(parents)
    return pa.table({
        "trace_id": [tid(1)] * (n + 1), "span_id": [sid(i) for i in range(1, n + 2)],
        "parent_span_id": [None, *(sid(p) for p in parents)], "service": ["front"] + ["svc"] * n,
        "name": ["GET /"] + ["POST"] * n, "status_code": [0] + [2] * n,
        "start_ns": [0, *range(10, 10 * n + 1, 10)], "end_ns": [100, *range(15, 10 * n + 6, 10)]})


class _Fixed:
    """An analyzer that blames each client span of the trace with the same rule (a retried call's
    attempts, each refused)."""

    def __init__(self, spans: int) -> None:
        self.spans = spans

    def projection(self) -> frozenset:
        return frozenset()

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        candidates = tuple(Candidate(sid(i), "svc", "POST", 2, 10 * i, 10 * i + 5,
                                     (rule("infra.connection_refused", 0.8, 4),)) for i in range(2, self.spans + 2))
        return BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), rank_candidates(candidates))})

    def close(self) -> None:
        pass


def _written(parents: list[int]) -> tuple[float, ...]:
    conn = duckdb.connect()
    try:
        conn.register("batch", _attempts_table(parents))
        v = CombinedAnalyzer([_Fixed(len(parents))], min_confidence=0.7).analyze(conn, "batch").traces[tid(1)]
    finally:
        conn.close()
    return tuple(c.confidence for c in v.written)


def test_the_attempts_of_one_retried_call_are_one_explanation_not_rivals():
    # a caller survived three refused attempts of one call: each attempt is the cause (had the callee
    # answered, none would have failed); as rivals they split 0.8 three ways (4 / 13 each), below
    # the floor of a trace that did not fail, and the more retries the less sure the verdict
    assert _written([1, 1, 1]) == pytest.approx((0.8, 0.8, 0.8))
    assert _written([1] * 6) == pytest.approx((0.8,) * 6) and _written([1, 1]) == pytest.approx((0.8, 0.8))
    # the same operation called from different parents: different calls, still rivals
    assert _written([1, 2, 3]) == ()
    conn = duckdb.connect()
    try:
        conn.register("batch", _attempts_table([1, 1, 2]))
        calls = repeated_calls(conn, "batch", [_Fixed(3).analyze(conn, "batch")])
    finally:
        conn.close()
    assert calls == {tid(1): {sid(2): (sid(1), "svc", "POST"), sid(3): (sid(1), "svc", "POST"),
                              sid(4): (sid(2), "svc", "POST")}}


def test_in_a_trace_that_did_not_fail_the_layer_is_read_from_the_stated_confidences():
    from processor.analysis.combined import trace_local
    from processor.analysis.prevalence import HealthyFiring, Outcomes

    # a retried call's attempt: a generic rule reads the exception as code, the conventions read a
    # refused connection (infrastructure) with more confidence than the rule
    refused = cand(2, rule("code.deepest_exception", 0.8, 4),
                   Evidence("localizer.errors", "error", 0.95, 2.85, "infrastructure", "localizer", failure="error"),
                   Evidence("localizer.window", "window", 0.9, 2.7, "infrastructure", "localizer"))
    assert refused.layer == "infrastructure"
    v = _trace(refused)
    healthy = HealthyFiring()
    healthy.learn([tid(n) for n in range(10, 110)], {tid(n): {"localizer.errors"} for n in range(10, 40)})
    # the caller survived: its errors' operation has failed before, and the localizer's errors fire
    # on 30% of healthy traces: less sure the span caused anything ...
    ops = pa.table({"service": ["svc"], "name": ["op2"], "n": [20.0], "err_rate": [0.05]})
    weighed = healthy.weigh(trace_local(v, frozenset(), ops), Outcomes(frozenset({tid(1)}), frozenset()))
    (c,) = merge([weighed]).traces[tid(1)].candidates
    assert max(e.confidence for e in c.evidence if e.kind == "localizer") < 0.8
    # ... not about where its fault would be: the layer is the one the same evidence gives unweighed
    assert c.layer == "infrastructure"
    assert [e.stated for e in c.evidence] == [None, 0.95, 0.9]
