"""The columnar plan (``dsl.columnar``) finds what the rules' own statements
find: the benchmark's rule set and rules of every shape, over a synthetic
batch, evaluated both ways (``RuleSet.columnar`` on and off)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb

from dsl import RuleSet, ir, load_rules
from dsl.api import RuleRuntimeError, _validate
from processor.tools.bench import bench_rule_text
from tests.dsl.bench_rules import build_batch

SPANS = 6_000


def _load(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "r.rules"
    path.write_text(text, encoding="utf-8")
    return load_rules([path])


def _both_ways(ruleset: RuleSet) -> tuple[list, list]:
    conn = duckdb.connect()
    try:
        build_batch(conn, ruleset, SPANS)
        return ruleset.evaluate(conn, "batch"), dataclasses.replace(ruleset, columnar=False).evaluate(conn, "batch")
    finally:
        conn.close()


def test_the_bench_rules_find_the_same(tmp_path):
    ruleset = _load(tmp_path, bench_rule_text(300))
    plan = ruleset._columnar
    assert plan.rest == ()  # every bench rule is local
    assert len(plan.conditions) < len(plan.rules)  # rules written alike share a bit
    assert sum(len(m) for s in plan.scans for m in s.masks) == len(plan.conditions) > 63  # more than one mask
    columnar, statements = _both_ways(ruleset)
    assert len({f.rule_id for f in columnar}) > 100
    assert columnar == statements


RULE = 'rule t.r{i} {{\n  title "t"\n  layer code\n  severity {sev}\n  confidence 0.{c}\n  match {match}\n  message "{msg}"\n}}\n'
SHAPES = [
    # (match, message, runs columnar)
    ("span c where count(sibling s of c where s.name = c.name) > 1", "{c.name}", True),
    ("span c where exists(ancestor a of c where a.service != c.service and a.kind = server)", "{c.service}", True),
    ("span c where exists(span s where s.name = c.name and s.duration > c.duration * 50)", "", True),
    ("span c where exists(parent p of c where p.status = error)", "{c.duration}", True),
    ("span c where exists(preceding sibling p of c where p.end > c.start - 1ms)", "{c.start}", True),
    ("span c where min(d.duration for child d of c) > 5ms", "{min(d.duration for child d of c)}", True),
    ("span c where c.kind = server and count(child d of c) = 0", "{count(descendant d of c)} below", True),
    ("span c where avg(d.duration for descendant d of c where d.status = error) > 1ms", "{c.self_time}", True),
    ("span c where sum(s.duration for span s where s.kind = client) > 40ms and c.is_root", "{trace.duration}", True),
    ("span c where c.depth = 2 and not exists(child d of c where d.status = error)", "{c.kind} {c.status}", True),
    ('span c where c.attr["http.response.status_code"] >= 500 or c.name =~ "^GET"', "{c.attr['http.response.status_code']}", True),
    ("span c where trace.error_count > 2 and c.status = error", "{trace.root_name}", True),
    # grouping stays a correlated subquery, inside the scan
    ("span c where count(child d of c by d.name) > 1", "", True),
    # not columnar: a quantifier inside a quantifier, two variables (and explains, below)
    ("span c where exists(child d of c where exists(child e of d where e.status = error))", "", False),
    ("span c, child d of c where d.status = error and d.duration > c.duration / 2", "{d.name}", False),
]


def test_rules_of_every_shape_find_the_same(tmp_path):
    text = "\n".join(RULE.format(i=i, sev=("low", "high")[i % 2], c=i % 9 + 1, match=m, msg=msg)
                     for i, (m, msg, _) in enumerate(SHAPES))
    text += ("rule t.explains {\n  title \"t\"\n  layer code\n  severity high\n  confidence 0.9\n"
             "  match span c where c.status = error and exists(child d of c where d.status = error)\n"
             "  explains d\n  message \"x\"\n}\n")
    ruleset = _load(tmp_path, text)
    rest = {r.id for r in ruleset._columnar.rest}
    assert rest == {f"t.r{i}" for i, (_, _, local) in enumerate(SHAPES) if not local} | {"t.explains"}
    columnar, statements = _both_ways(ruleset)
    fired = {f.rule_id for f in columnar}
    assert len(fired) >= len(SHAPES) - 3, sorted(set(ruleset.ids) - fired)  # the batch exercises them
    assert columnar == statements


def test_a_failing_scan_costs_only_the_failing_rule(tmp_path):
    """A condition that fails in DuckDB fails its scan: the plan's rules then run as
    statements, and only the failing one loses its findings (reported to ``on_error``)."""
    ruleset = _load(tmp_path, bench_rule_text(20))
    conn = duckdb.connect()
    try:
        build_batch(conn, ruleset, SPANS)
        whole = ruleset.evaluate(conn, "batch")
        bad = next(r for r in ruleset.rules if any(f.rule_id == r.id for f in whole))
        source = ruleset.checked[bad.id]
        # an invalid pattern only DuckDB rejects, at run time; the rule's own statement fails too
        where = ir.Regex(ir.Intrinsic(source.bindings[0].var, "name", ir.Ty.STRING), "(", False)
        checked = {**ruleset.checked, bad.id: dataclasses.replace(source, where=where)}
        rules = tuple(dataclasses.replace(r, sql="SELECT error('boom')", params=()) if r is bad else r
                      for r in ruleset.rules)
        broken = dataclasses.replace(ruleset, rules=rules, checked=checked)
        errors: list[RuleRuntimeError] = []
        found = broken.evaluate(conn, "batch", on_error=errors.append)
    finally:
        conn.close()
    assert [e.rule_id for e in errors] == [bad.id]
    assert found == [f for f in whole if f.rule_id != bad.id]


def test_one_rule(tmp_path):
    columnar, statements = _both_ways(_load(tmp_path, bench_rule_text(1)))
    assert columnar == statements


def test_validation_runs_the_scans_and_names_a_rejected_rule(tmp_path):
    """``load_rules`` validates the plan's scans, not a statement per rule; a scan DuckDB
    rejects sends its rules to their own statements, and E050 names the one at fault."""
    ruleset = _load(tmp_path, bench_rule_text(130))
    assert _validate(ruleset) == []
    bad = ruleset.rules[7]
    source = ruleset.checked[bad.id]
    where = ir.Regex(ir.Intrinsic(source.bindings[0].var, "name", ir.Ty.STRING), "(", False)
    checked = {**ruleset.checked, bad.id: dataclasses.replace(source, where=where)}
    rules = tuple(dataclasses.replace(r, sql="SELECT error('boom')", params=()) if r is bad else r for r in ruleset.rules)
    diags = _validate(dataclasses.replace(ruleset, rules=rules, checked=checked))
    assert [(d.code, d.span) for d in diags] == [("E050", source.span)]
    assert bad.id in diags[0].message


def test_a_grouped_scan_leaves_out_the_rows_no_aggregate_counts():
    from dsl.compiler import scan_statement

    source = ("__ft_spans AS v", "v._parent", "_row")
    counted = scan_statement([["coalesce(g0._s0, FALSE)"]], {0: (source, [(0, "bool_or((v.status_code = $1))"),
                                                                          (1, "count_if((v.kind = $2))")])})
    assert "FROM __ft_spans AS v WHERE ((v.status_code = $1)) OR ((v.kind = $2)) GROUP BY" in counted
    assert counted.endswith("SELECT * FROM __scan WHERE m0 <> 0")  # only the rows where a condition holds
    # count(*) counts every row: its group keeps them all
    every = scan_statement([["g0._s0 > 1"]], {0: (source, [(0, "bool_or((v.status_code = $1))"), (1, "count(*)")])})
    assert "FROM __ft_spans AS v GROUP BY" in every


def test_closure_quantifiers_walk_from_the_spans_they_count(tmp_path):
    """A quantifier over descendants or ancestors counting the spans that meet its condition is
    computed from a walk up (or down) from those spans, not the prepared ``ANCESTORS`` table, which
    the batch then does without: the same counts on a chain past the recursion's cap and on a
    parent cycle (whose spans repeat as their own ancestors up to the cap) as the rules' own
    statements over the table."""
    from dsl.compiler import ANCESTORS
    from tests.support.dsl_spans import Trace, load

    t = Trace()
    chain = [t.span("n0", status="error")]
    for i in range(1, 260):
        chain.append(t.span(f"n{i}", chain[-1], status="error" if i % 50 == 0 else "unset"))
    a = t.span("a", span_id=b"\xa0" * 8, parent_id=b"\xb0" * 8, status="error")
    t.span("b", span_id=b"\xb0" * 8, parent_id=a.span_id)
    t.span("below", parent_id=a.span_id, status="error")
    t.span("alone")
    shapes = [
        "count(descendant d of c where d.status = error) > 0",
        "exists(descendant d of c where d.status = error)",
        "count(ancestor a of c where a.status = error) > 1",
        "not exists(ancestor a of c where a.status = error)",
    ]
    text = "\n".join(RULE.format(i=i, sev="low", c=5, match=f"span c where {m}", msg="{c.name}")
                     for i, m in enumerate(shapes))
    ruleset = _load(tmp_path, text)
    assert ruleset._columnar.rest == ()
    assert all(ANCESTORS not in s.sql for s in ruleset._columnar.scans)
    conn = duckdb.connect()
    try:
        load(conn, [t], ruleset.projection)
        columnar = ruleset.evaluate(conn, "batch")
        statements = dataclasses.replace(ruleset, columnar=False).evaluate(conn, "batch")
        built = ruleset.prepare_statements(conn, "batch")
        # a scan that fails: its rules run as their own statements, over the table built then
        bad = ruleset.rules[0]
        source = ruleset.checked[bad.id]
        where = ir.Regex(ir.Intrinsic(source.bindings[0].var, "name", ir.Ty.STRING), "(", False)
        broken = dataclasses.replace(
            ruleset, rules=(dataclasses.replace(bad, sql="SELECT error('boom')", params=()), *ruleset.rules[1:]),
            checked={**ruleset.checked, bad.id: dataclasses.replace(source, where=where)})
        errors: list[RuleRuntimeError] = []
        found = broken.evaluate(conn, "batch", on_error=errors.append)
    finally:
        conn.close()
    assert {f.rule_id for f in columnar} == set(ruleset.ids)
    assert columnar == statements
    assert not any(ANCESTORS in s for s in built)  # no statement of the plan reads the table
    assert [e.rule_id for e in errors] == [bad.id]
    assert found == [f for f in columnar if f.rule_id != bad.id]
