"""Fault trees: syntax, checker diagnostics, cut sets, BDD probabilities,
importance, three-valued evaluation over batches, and ``check --explain``."""

from __future__ import annotations

import io
import itertools
import math
from pathlib import Path

import duckdb
import pytest

from dsl import check_paths, ir
from dsl.api import cli_explain_tree
from dsl.faulttree import (
    FALSE,
    TRUE,
    UNKNOWN,
    Bdd,
    TreePlan,
    cut_set_text,
    kleene,
    minimal_cut_sets,
    never_fires,
    rare_event,
)
from tests.support.dsl_spans import Trace, load

RULES = '''
macro failed(s) = s.status = error
rule t.pool { title "pool" layer infrastructure severity high confidence 0.8
  match span e where failed(e) and e.attr["error.type"] = "pool" }
rule t.timeout { title "timeout" layer infrastructure severity high confidence 0.5
  match span c where c.kind = client and failed(c) and c.attr["error.type"] = "timeout" }
rule t.slow { title "slow" layer data severity medium confidence 0.6
  match span q where q.duration > 1s }
rule t.retry { title "retry" layer infrastructure severity medium confidence 0.5
  match span p where count(child c of p where c.kind = client) >= 3 }
'''

TREE = RULES + '''
house canary = span s where s.resource["deployment.environment.name"] = "canary"
basic pool = rule t.pool prior 0.1
basic timeout = rule t.timeout prior 0.2
event deps = atleast 2 of {timeout, t.retry, t.slow}
tree demo.failure {
  title "Demo fails"
  layer infrastructure
  top span r where r.is_root and r.status = error
  cause pool or deps or (canary and t.slow)
}
'''


def ev(x: str) -> ir.FtEvent:
    return ir.FtEvent(x)


def g(op: str, *items: ir.FtNode, k: int = 0) -> ir.FtGate:
    return ir.FtGate(op, tuple(items), k)


def sets(node: ir.FtNode) -> set[tuple[str, ...]]:
    return {cut_set_text(cs) for cs in minimal_cut_sets(node)[0]}


# ---- cut sets, BDD, probability ------------------------------------------------------------


def test_mocus_minimal_cut_sets_with_absorption_and_atleast():
    a, b, c, d = map(ev, "abcd")
    node = g("or", a, g("and", a, b), g("atleast", b, c, d, k=2))
    assert sets(node) == {("a",), ("b", "c"), ("b", "d"), ("c", "d")}


def test_not_is_pushed_down_by_de_morgan():
    a, b, c = map(ev, "abc")
    assert sets(g("and", a, g("not", g("or", b, c)))) == {("a", "not b", "not c")}
    assert sets(g("not", g("atleast", a, b, c, k=2))) == {("not a", "not b"), ("not a", "not c"), ("not b", "not c")}
    assert sets(g("and", a, g("not", a))) == set()


def _brute(node: ir.FtNode, p: dict[str, float]) -> float:
    names = sorted(p)
    total = 0.0
    for bits in itertools.product([False, True], repeat=len(names)):
        state = {n: TRUE if v else FALSE for n, v in zip(names, bits)}
        if kleene(node, state) == TRUE:
            total += math.prod(p[n] if v else 1 - p[n] for n, v in zip(names, bits))
    return total


@pytest.mark.parametrize("node", [
    g("or", ev("a"), g("and", ev("b"), ev("c"))),
    g("atleast", ev("a"), ev("b"), ev("c"), ev("d"), k=3),
    g("and", g("or", ev("a"), ev("b")), g("not", g("and", ev("b"), ev("c"))), g("or", ev("c"), ev("d"))),
])
def test_bdd_probability_is_exact(node):
    p = {"a": 0.1, "b": 0.35, "c": 0.5, "d": 0.9}
    bdd = Bdd(sorted(p))
    assert bdd.probability(bdd.build(node), p) == pytest.approx(_brute(node, p))


def test_wide_gates_are_analysed_in_loops_not_recursion():
    # a gate's inputs and a diagram's variables once each cost a level of recursion
    events = [ev(f"b{i}") for i in range(3_000)]
    wide_or, wide_and = g("or", *events), g("and", *events[:1_500])
    assert not never_fires(wide_or)
    bdd = Bdd([e.name for e in events])
    assert bdd.probability(bdd.build(wide_and), dict.fromkeys(bdd.order, 0.5)) == pytest.approx(0.5 ** 1_500)
    (cut_set,), truncated = minimal_cut_sets(wide_and)
    assert len(cut_set) == 1_500 and not truncated


def test_rare_event_approximation_is_the_sum_of_cut_sets():
    node = g("or", ev("a"), g("and", ev("b"), ev("c")))
    cs, _ = minimal_cut_sets(node)
    assert rare_event(cs, {"a": 0.01, "b": 0.1, "c": 0.2}) == pytest.approx(0.01 + 0.02)


def test_kleene_three_valued():
    node = g("or", ev("a"), g("and", ev("b"), ev("c")))
    assert kleene(node, {"a": UNKNOWN, "b": TRUE, "c": TRUE}) == TRUE
    assert kleene(node, {"a": UNKNOWN, "b": FALSE, "c": TRUE}) == UNKNOWN
    assert kleene(node, {"a": FALSE, "b": FALSE, "c": UNKNOWN}) == FALSE
    assert kleene(g("not", ev("a")), {"a": UNKNOWN}) == UNKNOWN


def _plan(rules_from, text: str = TREE) -> TreePlan:
    plan = rules_from(text).tree("demo.failure")
    assert plan is not None
    return plan


def test_importance_from_priors(rules_from):
    plan = _plan(rules_from)
    imp = {i.event: i for i in plan.importance()}
    # pool alone is a cut set: its Birnbaum importance is P(top | pool) - P(top | not pool) = 1 - P(rest)
    rest = plan.probability({**plan.priors(), "pool": 0.0})
    assert imp["pool"].birnbaum == pytest.approx(1 - rest)
    assert imp["pool"].fussell_vesely == pytest.approx((plan.top_probability() - rest) / plan.top_probability())
    assert imp["pool"].rule == "t.pool" and imp["pool"].prior == 0.1
    assert plan.exact and set(plan.variables) == {"pool", "timeout", "t.retry", "t.slow", "canary"}


def test_verdict_confidence_is_the_probability_given_evidence(rules_from):
    plan = _plan(rules_from)
    state = {"pool": UNKNOWN, "timeout": TRUE, "t.retry": TRUE, "t.slow": FALSE, "canary": FALSE}
    v = plan.verdict(state)
    assert v.state == TRUE and v.cut_sets == (("t.retry", "timeout"),)
    # fired rules count at their confidence, unknown ones at their prior
    assert v.confidence == pytest.approx(1 - (1 - 0.1) * (1 - 0.5 * 0.5))
    assert v.unknown == ("pool",)


# ---- checker ------------------------------------------------------------------------


def _codes(tmp_path: Path, text: str) -> list[tuple[str, int]]:
    path = tmp_path / "t.rules"
    path.write_text(text)
    return [(d.code, d.span.line) for d in check_paths([path])]


def test_checker_reports_tree_errors_with_hints(tmp_path):
    text = RULES + '''basic pool = rule t.pol prior 1.5
event a = b
event b = a
tree x.y {
  title "t"
  top rule t.nope
  cause poool or (t.slow and t.slow) or atleast 4 of {t.slow, t.retry} or a
}
tree x.y { title "again" top rule t.slow cause t.slow }
event pool = t.slow
'''
    path = tmp_path / "t.rules"
    path.write_text(text)
    diags = check_paths([path])
    got = {(d.code, d.message) for d in diags}
    assert ("E060", "unknown rule `t.pol`") in got
    assert ("E066", "prior 1.5 is not a probability") in got
    assert ("E060", "unknown rule `t.nope`") in got
    assert ("E060", "unknown event `poool`") in got
    assert ("E064", "`t.slow` appears twice under one `and` gate") in got
    assert ("E063", "`atleast 4 of` needs 1 <= k <= 2 (the number of events listed)") in got
    assert any(c == "E061" and "cycle" in m for c, m in got)
    assert ("E062", "duplicate tree id `x.y`") in got
    assert ("E062", "event `pool` is already defined") in got
    poool = next(d for d in diags if "poool" in d.message)
    assert "did you mean `pool`?" in poool.hints


def test_checker_requires_title_top_and_cause(tmp_path):
    codes = _codes(tmp_path, RULES + 'tree x.y { layer data }\n')
    assert [c for c, _ in codes] == ["E030", "E065", "E065"]


def test_never_fires_and_never_matters_warnings(tmp_path):
    text = RULES + '''house off = false
tree x.y {
  title "t"
  top rule t.slow
  cause t.pool or (t.pool and t.retry) or (off and t.timeout) or (t.slow and not t.slow)
}
tree x.dead { title "dead" top rule t.slow cause off and t.pool }
'''
    path = tmp_path / "t.rules"
    path.write_text(text)
    diags = check_paths([path])
    assert not any(d.is_error for d in diags)
    w010 = [d for d in diags if d.code == "W010"]
    w011 = [d for d in diags if d.code == "W011"]
    assert len(w010) == 3  # (off and t.timeout), (t.slow and not t.slow), tree x.dead
    assert any("tree `x.dead` can never fire" in d.message for d in w010)
    assert [d.message for d in w011] == ["this gate never matters to tree `x.y`"]  # (t.pool and t.retry)


def test_unused_events_warn(tmp_path):
    codes = _codes(tmp_path, RULES + 'event spare = t.slow\nbasic b = rule t.slow\nhouse h = true\n')
    assert [c for c, _ in codes] == ["W003", "W003", "W003"]


def test_new_words_are_not_reserved(rules_from):
    rs = rules_from('''macro basic(top) = top.name = "tree"
rule t.words { title "t" layer code severity low confidence 0.5
  match span house where basic(house) and exists(child cause of house) }
''')
    assert rs.ids == ("t.words",)


# ---- runtime -------------------------------------------------------------------------------


def _failed_root(trace: Trace, **kw):
    return trace.span("checkout", status="error", end=100, **kw)


def test_fires_with_the_cut_set_and_blames_its_spans(rules_from):
    rs = rules_from(TREE)
    t = Trace()
    root = _failed_root(t)
    db = t.span("db", root, status="error", attrs={"error.type": "pool"})
    conn = duckdb.connect()
    load(conn, [t], rs.projection)
    out = rs.evaluate_all(conn, "batch")
    (tree,) = out.trees
    assert tree.fired and tree.tree_id == "demo.failure" and tree.cut_sets == (("pool",),)
    assert tree.spans == ((db.span_id, ("pool",), "t.pool"),)
    assert tree.top_spans == (root.span_id,)
    # t.timeout reads error.type: known on the failed db span (it is not a client), so no unknowns
    assert tree.confidence == pytest.approx(0.8)


def test_missing_attribute_makes_a_rule_unknown(rules_from):
    rs = rules_from(TREE)
    t = Trace()
    root = _failed_root(t)
    t.span("call", root, kind="client", status="error")  # no error.type: pool and timeout undetermined
    conn = duckdb.connect()
    load(conn, [t], rs.projection)
    (tree,) = rs.evaluate_all(conn, "batch").trees
    assert not tree.fired and set(tree.unknown) == {"pool", "timeout"}
    # P(pool or (timeout and (retry or slow))) with retry, slow known false = P(pool)
    assert tree.confidence == pytest.approx(0.1)


def test_a_broken_trace_makes_every_silent_rule_unknown(rules_from):
    rs = rules_from(TREE)
    t = Trace()
    root = _failed_root(t)
    t.span("orphan", root, parent_id=b"\x09" * 8)  # its parent never arrived
    conn = duckdb.connect()
    load(conn, [t], rs.projection)
    (tree,) = rs.evaluate_all(conn, "batch").trees
    assert not tree.fired and set(tree.unknown) == {"pool", "timeout", "t.retry", "t.slow"}
    p = rs.tree("demo.failure").priors()
    assert tree.confidence == pytest.approx(rs.tree("demo.failure").probability({**p, "canary": 0.0}))


def test_house_event_switches_a_branch_and_no_top_no_verdict(rules_from):
    rs = rules_from(TREE)
    canary, plain, healthy = Trace(), Trace(), Trace()
    for t, env in ((canary, "canary"), (plain, "prod")):
        root = _failed_root(t, resource={"deployment.environment.name": env})
        t.span("slow", root, end=2000, resource={"deployment.environment.name": env})
    healthy.span("fine", end=5)
    conn = duckdb.connect()
    load(conn, [canary, plain, healthy], rs.projection)
    trees = {o.trace_id: o for o in rs.evaluate_all(conn, "batch").trees}
    assert trees[canary.trace_id].fired and trees[canary.trace_id].cut_sets == (("canary", "t.slow"),)
    assert plain.trace_id not in trees or not trees[plain.trace_id].fired
    assert healthy.trace_id not in trees  # no top event: the tree does not apply


def test_select_trees_keeps_only_what_the_trees_need(rules_from):
    rs = rules_from(TREE).select_trees(["demo.failure"])
    assert set(rs.ids) == {"t.pool", "t.timeout", "t.retry", "t.slow"}
    assert {c.id for c in rs.conditions} == {"__top.demo.failure", "__house.canary"}
    assert rules_from(TREE).select(["t.pool"]).trees == ()


def test_check_explain_prints_tree_cut_sets_and_importance(tmp_path):
    path = tmp_path / "t.rules"
    path.write_text(TREE)
    out = io.StringIO()
    assert cli_explain_tree([path], "demo.failure", out) == 0
    text = out.getvalue()
    assert "tree demo.failure: Demo fails" in text
    assert "top: span r where r.is_root and r.status = error" in text
    assert "├─ pool  (rule t.pool; prior 0.1, weight 0.8)" in text
    assert "minimal cut sets: 5" in text and "{pool}" in text and "{canary, t.slow}" in text
    assert "Birnbaum  Fussell-Vesely" in text
    out = io.StringIO()
    assert cli_explain_tree([path], "demo.failur", out) == 1
    assert "did you mean `demo.failure`?" in out.getvalue()


def test_event_cycles_are_reported_once_per_group_even_when_a_file_holds_very_many(tmp_path):
    # 30 events that all name each other hold astronomically many simple cycles: the
    # checker reports the group once (strongly connected components), at once
    names = [f"e{i}" for i in range(30)]
    events = "".join(f"event {n} = {' or '.join(m for m in names if m != n)}\n" for n in names)
    text = RULES + events + "event self = self or t.slow\n" + 'tree x.y { title "t" top rule t.slow cause e0 or self }\n'
    path = tmp_path / "t.rules"
    path.write_text(text)
    cycles = [d for d in check_paths([path]) if d.code == "E061"]
    assert [d.message for d in cycles] == ["events form a cycle: e0 -> e1 -> e0", "events form a cycle: self -> self"]
    # each points at the reference that closes its cycle
    lines = text.splitlines()
    for d in cycles:
        name = d.message.split()[-1]
        assert lines[d.span.line - 1][d.span.col - 1:].startswith(name)
