"""processor.analysis.rules: rule findings grouped into ranked candidates per trace, and the trace root.

Traces are built as OTLP requests and run through the real decode and rule
evaluation (``processor.tools.offline``, ``RuleAnalyzer``); the ranking itself is
also checked on hand-made findings so that score ties are exact.
"""

from __future__ import annotations

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dsl import Finding, RuleSet, load_rules
from processor.analysis.attributes import Projection
from processor.analysis.combined import CombinedAnalyzer
from processor.analysis.rules import RuleAnalyzer, verdicts
from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, TraceVerdict
from processor.tools.offline import analyze, span_table
from tests.support.harness import kv, sid, tid

T0 = 1_700_000_000_000_000_000
MS = 1_000_000

# Rules keyed on test-only marker attributes, so each test decides exactly which span fires which rule.
# Scores (confidence x severity): a = 0.9 x 2 = 1.8, b = 0.5 x 4 = 2.0, c = 0.3 x 5 = 1.5,
# d = 0.6 x 3 = 1.8 (ties with a), e = 0.4 x 5 = 2.0 (ties with b).
RULES = """
rule t.a { title "a" layer code severity low confidence 0.9
  match span s where s.attr["t.a"] = true  message "a on {s.name}" }
rule t.b { title "b" layer data severity high confidence 0.5
  match span s where s.attr["t.b"] = true  message "b on {s.name}" }
rule t.c { title "c" layer config severity critical confidence 0.3
  match span s where s.attr["t.c"] = true  message "c on {s.name}" }
rule t.d { title "d" layer infrastructure severity medium confidence 0.6
  match span s where s.attr["t.d"] = true  message "d on {s.name}" }
rule t.e { title "e" layer semantic severity critical confidence 0.4
  match span s where s.attr["t.e"] = true  message "e on {s.name}" }
rule t.deepest_error { title "deepest error" layer code severity high confidence 0.8
  match span s where s.status = error and not exists(child c of s where c.status = error)
  message "{s.service}/{s.name}" }
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    path = tmp_path_factory.mktemp("rules") / "t.rules"
    path.write_text(RULES)
    return load_rules([path])


def span(trace: int, n: int, parent: int | None, name: str, start_ms: int = 0, end_ms: int = 100,
         error: bool = False, **marks: bool) -> Span:
    """A span of trace ``trace`` with id ``n``; ``marks`` set the ``t.<rule>`` attributes."""
    s = Span(trace_id=tid(trace), span_id=sid(n), name=name, kind=Span.SPAN_KIND_INTERNAL,
             start_time_unix_nano=T0 + start_ms * MS, end_time_unix_nano=T0 + end_ms * MS)
    if parent is not None:
        s.parent_span_id = sid(parent)
    if error:
        s.status.code = 2
    s.attributes.extend(kv(f"t.{k}", v) for k, v in marks.items())
    return s


def request(*groups: tuple[str, list[Span]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for service, spans in groups:
        rs = req.resource_spans.add()
        rs.resource.attributes.append(kv("service.name", service))
        rs.scope_spans.add().spans.extend(spans)
    return req


def verdict_of(rules: RuleSet, *groups: tuple[str, list[Span]]) -> BatchVerdict:
    return analyze([request(*groups)], rules).verdict


def ranked(v: TraceVerdict) -> list[tuple[int, bytes, tuple[str, ...]]]:
    return [(c.rank, c.span_id, c.rules) for c in v.candidates]


# --- ranking --------------------------------------------------------------------------


def test_candidates_rank_by_confidence_times_severity_not_by_depth(rules):
    # root (depth 0) -> s2 (1) -> s3 (2) -> s4 (3); the highest score is at depth 1.
    v = verdict_of(rules, ("svc", [
        span(1, 1, None, "root", c=True),
        span(1, 2, 1, "mid", b=True),
        span(1, 3, 2, "lower"),
        span(1, 4, 3, "deepest", a=True),
    ])).traces[tid(1)]
    assert ranked(v) == [(1, sid(2), ("t.b",)), (2, sid(4), ("t.a",)), (3, sid(1), ("t.c",))]
    assert [c.depth for c in v.candidates] == [1, 3, 0]
    assert [c.score for c in v.candidates] == pytest.approx([2.0, 1.8, 1.5])
    assert [c.layer for c in v.candidates] == ["data", "code", "config"]
    assert v.top is v.candidates[0]
    assert [c.name for c in v.candidates] == ["mid", "deepest", "root"]
    assert {c.service for c in v.candidates} == {"svc"}


def test_equal_scores_put_the_deeper_span_first(rules):
    # The same rule on three spans: deepest first, whatever the span ids or the order sent.
    v = verdict_of(rules, ("svc", [
        span(1, 5, 1, "depth1", b=True),
        span(1, 1, None, "root", b=True),
        span(1, 9, 5, "depth2", b=True),
    ])).traces[tid(1)]
    assert ranked(v) == [(1, sid(9), ("t.b",)), (2, sid(5), ("t.b",)), (3, sid(1), ("t.b",))]


def test_equal_scores_from_different_rules_put_the_deeper_span_first(rules):
    # t.b (0.5 x high) and t.e (0.4 x critical) both score exactly 2.0.
    v = verdict_of(rules, ("svc", [
        span(1, 1, None, "root", b=True),
        span(1, 2, 1, "child", e=True),
    ])).traces[tid(1)]
    assert ranked(v) == [(1, sid(2), ("t.e",)), (2, sid(1), ("t.b",))]


def test_scores_equal_in_decimal_are_a_tie_despite_float_rounding(rules):
    # 0.9 x low(2) and 0.6 x medium(3) are both 1.8, but 0.6 * 3 == 1.7999999999999998 in binary
    # floating point: the tie must still go to the deeper span.
    v = verdict_of(rules, ("svc", [
        span(1, 1, None, "root", a=True),
        span(1, 2, 1, "child", d=True),
    ])).traces[tid(1)]
    assert ranked(v) == [(1, sid(2), ("t.d",)), (2, sid(1), ("t.a",))]


def test_a_span_blamed_by_two_rules_is_one_candidate_with_both(rules):
    v = verdict_of(rules, ("svc", [
        span(1, 1, None, "root", c=True),
        span(1, 2, 1, "both", a=True, b=True),
    ])).traces[tid(1)]
    assert len(v.candidates) == 2
    both = v.candidates[0]
    assert both.span_id == sid(2) and both.rank == 1
    assert both.rules == ("t.b", "t.a")  # strongest evidence first
    assert [e.source for e in both.evidence] == ["t.b", "t.a"]
    assert [e.message for e in both.evidence] == ["b on both", "a on both"]
    # Calibrated: the support of its most confident rule (0.9, odds 9) against the root's (c: 0.3, odds 3/7),
    # as exclusive explanations of the trace: 9 / (1 + 9 + 3/7).
    assert both.confidence == pytest.approx(9 / (1 + 9 + 3 / 7), abs=1e-6)
    assert v.candidates[1].confidence == pytest.approx((3 / 7) / (1 + 9 + 3 / 7), abs=1e-6)
    # the layer its evidence is most confident of (a: 0.9), not that of the highest severity (b: 0.5)
    assert both.layer == "code"
    assert both.score == pytest.approx(2.0)
    assert v.candidates[1].span_id == sid(1) and v.candidates[1].rank == 2


def test_ranking_on_hand_made_findings():
    """``verdicts`` over a table and findings built by hand: exact scores, exact ties."""
    conn = duckdb.connect()
    try:
        table = span_table([request(("svc", [span(1, 1, None, "root"), span(1, 2, 1, "a"), span(1, 3, 2, "b")]))],
                           Projection.of(frozenset()))
        conn.register("batch", table)

        def finding(span_n: int, rule: str, severity: str, confidence: float, depth: int) -> Finding:
            return Finding(tid(1), sid(span_n), rule, "code", severity, confidence, f"{rule}!", depth)

        v = verdicts(conn, "batch", [
            finding(1, "r.root", "critical", 0.8, 0),   # 4.0
            finding(2, "r.mid", "critical", 0.8, 1),    # 4.0: a tie, deeper
            finding(3, "r.low", "info", 1.0, 2),        # 1.0
            finding(3, "r.deep", "critical", 0.9, 2),   # 4.5: the same span, stronger
        ]).traces[tid(1)]
    finally:
        conn.close()
    assert ranked(v) == [(1, sid(3), ("r.deep", "r.low")), (2, sid(2), ("r.mid",)), (3, sid(1), ("r.root",))]
    assert v.root_span_id == sid(1)
    assert [(c.name, c.start_ns, c.end_ns) for c in v.candidates][0] == ("b", T0, T0 + 100 * MS)


# --- the trace root -----------------------------------------------------------------


def test_root_is_the_parentless_span_even_when_a_child_starts_earlier(rules):
    # Clock skew: the child starts before its parent; the root is still the parentless span.
    v = verdict_of(rules, ("svc", [
        span(1, 2, 1, "child", start_ms=0, a=True),
        span(1, 1, None, "root", start_ms=50),
    ])).traces[tid(1)]
    assert v.root_span_id == sid(1)


def test_broken_trace_root_is_the_earliest_parentless_span(rules):
    # Spans 10 and 20 name parents that never arrived: both are parentless here; 20 starts first.
    # Span 11 (clock skew) starts before both, yet it has its parent: it is not the root.
    v = verdict_of(rules, ("svc", [
        span(1, 10, 99, "late orphan", start_ms=30),
        span(1, 11, 10, "its child", start_ms=5, a=True),
        span(1, 20, 98, "early orphan", start_ms=10),
        span(1, 21, 20, "other child", start_ms=60),
    ])).traces[tid(1)]
    assert v.root_span_id == sid(20)
    assert v.candidates[0].span_id == sid(11)


def test_a_root_naming_no_parent_wins_over_an_earlier_fragment_and_rules_see_the_same_root(tmp_path):
    # Clock skew: the orphan (its parent lost) starts before the root.  The verdict's root and the
    # rules' trace.root_name are one definition (dsl.root_key_sql).
    path = tmp_path / "root.rules"
    path.write_text('rule t.root { title "root" layer code severity low confidence 0.5\n'
                    '  match span s where s.status = error  message "{trace.root_name}" }')
    v = verdict_of(load_rules([path]), ("svc", [
        span(1, 5, 99, "orphan", start_ms=0, error=True),
        span(1, 1, None, "root", start_ms=20),
    ])).traces[tid(1)]
    assert v.root_span_id == sid(1)
    assert v.candidates[0].evidence[0].message == "root"


def test_blamed_root_is_also_the_root(rules):
    v = verdict_of(rules, ("svc", [span(1, 1, None, "root", b=True), span(1, 2, 1, "child")])).traces[tid(1)]
    assert v.root_span_id == sid(1) == v.candidates[0].span_id


# --- batches ---------------------------------------------------------------------------


def test_traces_in_one_batch_do_not_mix(rules):
    """Two traces reuse the same span ids; structure, facts and roots stay within each trace."""
    trace_1 = [span(1, 1, None, "front", error=True), span(1, 2, 1, "call", error=True),
               span(1, 3, 2, "db", error=True)]
    # In trace 2 span 2 fails but its child 3 does not: 2 is the deepest error there.  Were trace 1's
    # failing span 3 taken as a child of trace 2's span 2, nothing would fire in trace 2.
    trace_2 = [span(2, 1, None, "home", start_ms=5), span(2, 2, 1, "fetch", start_ms=2, error=True),
               span(2, 3, 2, "cache", start_ms=1)]
    trace_3 = [span(3, 1, None, "healthy")]
    batch = verdict_of(rules, ("alpha", trace_1), ("beta", trace_2 + trace_3))
    assert set(batch.traces) == {tid(1), tid(2)}  # the healthy trace has no verdict
    one, two = batch.traces[tid(1)], batch.traces[tid(2)]
    assert [(c.span_id, c.service, c.name, c.depth) for c in one.candidates] == [(sid(3), "alpha", "db", 2)]
    assert [(c.span_id, c.service, c.name, c.depth) for c in two.candidates] == [(sid(2), "beta", "fetch", 1)]
    assert one.candidates[0].evidence[0].message == "alpha/db"
    assert two.candidates[0].evidence[0].message == "beta/fetch"
    assert one.trace_id == tid(1) and two.trace_id == tid(2)
    assert one.root_span_id == two.root_span_id == sid(1)
    assert (one.candidates[0].start_ns, two.candidates[0].start_ns) == (T0, T0 + 2 * MS)


def test_rule_analyzer_over_a_registered_table(rules):
    """The pipeline's path (``RuleAnalyzer`` under ``CombinedAnalyzer``, which calibrates)
    equals the offline verdict."""
    req = request(("svc", [span(1, 1, None, "root", c=True), span(1, 2, 1, "x", b=True)]),
                  ("other", [span(2, 1, None, "fine")]))
    analyzer = CombinedAnalyzer([RuleAnalyzer(rules)])
    assert analyzer.projection() == rules.projection
    assert {r.key for r in analyzer.projection()} >= {"t.a", "t.b", "t.c"}
    conn = duckdb.connect()
    try:
        conn.register("released", span_table([req], Projection.of(analyzer.projection())))
        got = analyzer.analyze(conn, "released")
        # The temp tables of evaluation are gone; the analyzer can run again on the same connection.
        assert analyzer.analyze(conn, "released") == got
    finally:
        conn.close()
    assert got == analyze([req], rules).verdict
    assert ranked(got.traces[tid(1)]) == [(1, sid(2), ("t.b",)), (2, sid(1), ("t.c",))]


def test_no_findings_is_an_empty_verdict(rules):
    req = request(("svc", [span(1, 1, None, "root"), span(1, 2, 1, "child")]))
    conn = duckdb.connect()
    try:
        conn.register("released", span_table([req], Projection.of(rules.projection)))
        assert RuleAnalyzer(rules).analyze(conn, "released") == BatchVerdict()
    finally:
        conn.close()


def test_candidate_properties_follow_the_strongest_evidence():
    c = Candidate(sid(1), "s", "n", 2, 0, 1, (Evidence("r.x", "m", 0.4, 2.0, "semantic"),
                                              Evidence("r.y", "m", 0.9, 1.8, "code"),
                                              Evidence("r.x", "again", 0.3, 0.3, "semantic")))
    # the layer is the one its evidence is most confident of (r.y: 0.9 against r.x: 0.4 at best)
    assert (c.score, c.confidence, c.layer, c.rules) == (2.0, 0.9, "code", ("r.x", "r.y"))


# --- causes and symptoms ----------------------------------------------------------------


def _hand_made(findings: list[Finding], trees=()) -> BatchVerdict:
    conn = duckdb.connect()
    try:
        spans = [span(1, n, None if n == 1 else 1, f"s{n}") for n in range(1, 6)]
        conn.register("batch", span_table([request(("svc", spans))], Projection.of(frozenset())))
        return verdicts(conn, "batch", findings, trees)
    finally:
        conn.close()


def _finding(n: int, confidence: float, explains: tuple[int, ...] = ()) -> Finding:
    return Finding(tid(1), sid(n), f"r.{n}", "code", "high", confidence, f"on {n}", 1,
                   explains=tuple(sid(e) for e in explains))


def test_a_span_a_finding_explains_is_a_symptom_not_a_candidate():
    v = _hand_made([_finding(2, 0.3, explains=(3,)), _finding(3, 0.9)])
    assert ranked(v.traces[tid(1)]) == [(1, sid(2), ("r.2",))]
    (symptom,) = v.symptoms[tid(1)]
    assert (symptom.span_id, symptom.caused_by, symptom.explained) == (sid(3), sid(2), True)
    assert symptom.reason == "rule r.2: on 2"


def test_an_explained_span_nothing_blames_is_still_a_symptom():
    v = _hand_made([_finding(2, 0.3, explains=(4,))])
    assert ranked(v.traces[tid(1)]) == [(1, sid(2), ("r.2",))]
    assert [(s.span_id, s.caused_by) for s in v.symptoms[tid(1)]] == [(sid(4), sid(2))]


def test_a_chain_of_explanations_keeps_its_head():
    v = _hand_made([_finding(2, 0.2, explains=(3,)), _finding(3, 0.5, explains=(4,)), _finding(4, 0.9)])
    assert [c.span_id for c in v.traces[tid(1)].candidates] == [sid(2)]
    assert {(s.span_id, s.caused_by) for s in v.symptoms[tid(1)]} == {(sid(3), sid(2)), (sid(4), sid(3))}


def test_explanations_in_a_circle_keep_the_best_ranked_candidate():
    v = _hand_made([_finding(2, 0.4, explains=(3,)), _finding(3, 0.9, explains=(2,)), _finding(5, 0.1)])
    assert [c.span_id for c in v.traces[tid(1)].candidates] == [sid(3), sid(5)]
    assert [(s.span_id, s.caused_by) for s in v.symptoms[tid(1)]] == [(sid(2), sid(3))]


def test_a_fired_tree_makes_its_top_spans_symptoms_of_its_best_cause():
    from dsl import TreeOutcome
    tree = TreeOutcome(tid(1), "t.tree", "Tree", "", "high", True, 0.7, (("a",), ("b",)),
                       ((sid(2), ("a",), "r.2"), (sid(3), ("b",), "r.3")), (), (sid(4), sid(3)))
    v = _hand_made([_finding(2, 0.3), _finding(3, 0.2), _finding(4, 0.9)], [tree])
    # the tree's evidence lifts both causes to its score; the top span (4) leaves the ranking
    assert [c.span_id for c in v.traces[tid(1)].candidates] == [sid(2), sid(3)]
    (symptom,) = v.symptoms[tid(1)]  # a cause that is also a top span stays a cause
    assert (symptom.span_id, symptom.caused_by) == (sid(4), sid(2))
    assert symptom.reason == "fault tree t.tree fired: cut set {a} explains its top event"


def test_a_tree_that_did_not_fire_explains_nothing():
    from dsl import TreeOutcome
    tree = TreeOutcome(tid(1), "t.tree", "Tree", "", "high", False, 0.3, (("a",),), (), ("a",), (sid(4),))
    v = _hand_made([_finding(2, 0.3), _finding(4, 0.9)], [tree])
    assert [c.span_id for c in v.traces[tid(1)].candidates] == [sid(4), sid(2)]
    assert v.symptoms == {}
