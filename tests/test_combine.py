"""processor.combine: merging rule and localizer verdicts over one batch."""

from __future__ import annotations

from harness import sid, tid
from processor.analysis import BatchVerdict, Candidate, Evidence, TraceVerdict
from processor.annotator import annotations
from processor.combine import STATISTICAL_WEIGHT, merge, on_rule_scale


def cand(n: int, *evidence: Evidence, depth: int = 1, rank: int = 0) -> Candidate:
    return Candidate(sid(n), "svc", f"op{n}", depth, 10, 20, evidence, rank)


def rule(source: str, confidence: float, severity_weight: float) -> Evidence:
    return Evidence(source, f"{source} fired", confidence, confidence * severity_weight, "code")


def stat(source: str, confidence: float, raw_score: float = 40.0) -> Evidence:
    return Evidence(source, f"{source} deviates", confidence, raw_score, "")


def test_statistical_scores_move_onto_the_rule_scale_and_are_marked():
    v = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(2, stat("localizer.latency", 0.5)),))}))
    (e,) = v.traces[tid(1)].candidates[0].evidence
    assert e.score == 0.5 * STATISTICAL_WEIGHT and e.kind == "localizer"


def test_a_span_blamed_by_both_is_one_candidate_and_ranking_is_redone():
    rules = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (
        cand(3, rule("code.x", 0.8, 4), depth=3, rank=1), cand(2, rule("code.weak", 0.3, 2), rank=2)))})
    local = on_rule_scale(BatchVerdict({tid(1): TraceVerdict(tid(1), None, (
        cand(2, stat("localizer.errors", 0.9), rank=1), cand(4, stat("localizer.latency", 0.2), rank=2)))},
        symptoms={tid(1): (sid(1), sid(2), sid(5))}, services=(("svc", 1.5),)))
    merged = merge([rules, local])
    v = merged.traces[tid(1)]
    assert [c.span_id for c in v.candidates] == [sid(3), sid(2), sid(4)]  # 3.2 > 2.7 > 0.6
    assert [c.rank for c in v.candidates] == [1, 2, 3]
    assert [e.source for e in v.candidates[1].evidence] == ["code.weak", "localizer.errors"]
    assert v.root_span_id == sid(1)
    assert merged.symptoms[tid(1)] == (sid(1), sid(5))  # a blamed span is never a symptom
    assert merged.services == (("svc", 1.5),)


def test_symptoms_are_annotated_and_the_root_keeps_its_verdict():
    v = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (cand(3, rule("code.x", 0.8, 4), rank=1),))},
                     symptoms={tid(1): (sid(1), sid(2))})
    adds = annotations(v)
    assert adds[(tid(1), sid(2))].attributes == {"rca.symptom": True}
    root = adds[(tid(1), sid(1))].attributes
    assert root["rca.symptom"] is True and root["rca.verdict.span_id"] == sid(3).hex()
    assert "rca.symptom" not in adds[(tid(1), sid(3))].attributes
