"""Batches in which no span has some attribute the rules read, or no span an error status:
the prepare step leaves an empty column out (``compiler.with_nulls``), and rules that cannot
fire in such a batch do not run (``dsl.absence``).  What they find is what they find in the
same batch with one more span that has the attribute, with a value that matches nothing, and
what every rule finds when nothing is known of the batch."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from dsl import ir
from dsl.absence import Absent, can_fire
from dsl.compiler import SPANS, with_nulls
from dsl.projection import AttrRef, AttrSource, column_name
from tests.support.dsl_spans import Trace, load

RULE = 'rule t.{id} {{\n  title "t"\n  layer code\n  severity high\n  confidence 0.9\n  match {match}\n{extra}  message "{msg}"\n}}\n'
SHAPES = {
    # cannot fire without app.store: the rule is left out
    "db": ('span s where s.attr["app.store"] = "redis" and s.status = error', "{s.name}"),
    "db_len": ('span s where len(s.attr["app.store"]) > 3', ""),
    # can: `not` of a test of nil holds, `or` has another way, the message reads the nil
    "not_db": ('span s where not (s.attr["app.store"] = "redis") and s.status = error', "{s.attr['app.store']}"),
    "either": ('span s where s.attr["app.store"] = "redis" or s.name = "b"', "{s.attr['app.store']} {s.name}"),
    "unset": ('span s where not exists(s.attr["app.store"]) and s.kind = client', ""),
    # two variables and a quantifier (statements of their own, not the columnar scan)
    "child": ('span s, child c of s where c.status = error and not (c.attr["app.store"] = "redis")', "{c.name}"),
    "child_db": ('span s, child c of s where c.attr["app.store"] = "redis"', "{c.name}"),
    "exists": ('span s where exists(child c of s where c.attr["app.store"] = "redis")', ""),
    "events": ('span s,\n  event e of s where e.name = "exception"', "{e.name}"),
    "explains": ('span s where s.status = error and exists(child c of s where c.status = error '
                 'and not (c.attr["app.store"] = "mysql"))', ""),
}

EXTRA = (99).to_bytes(16, "big")


def _text() -> str:
    out = []
    for rid, (match, msg) in SHAPES.items():
        extra = "  explains c\n" if rid == "explains" else ""
        out.append(RULE.format(id=rid, match=match, msg=msg, extra=extra))
    return "\n".join(out)


def _traces(with_attribute: bool) -> list[Trace]:
    traces = []
    for i in range(6):
        t = Trace((i + 1).to_bytes(16, "big"))
        root = t.span("a" if i % 2 else "b", kind="server")
        c1 = t.span("q", root, start=1, end=4, kind="client", status="error" if i % 3 == 0 else "unset")
        t.span("x", c1, start=2, end=3, status="error" if i % 2 == 0 else "unset")
        root.status = "error" if i % 3 == 0 else "unset"
        traces.append(t)
    if with_attribute:
        # one more trace, whose span has the attribute with a value no rule tests for
        t = Trace(EXTRA)
        t.span("z", attrs={"app.store": "postgresql"}, kind="internal")
        traces.append(t)
    return traces


def test_an_absent_attribute_finds_what_a_present_one_that_matches_nothing_finds(rules_from, run):
    ruleset = rules_from(_text())
    absent = run(ruleset, *_traces(False))
    present = run(ruleset, *_traces(True))
    assert absent == [f for f in present if f.trace_id != EXTRA]  # the added trace's findings are its own
    fired = {f.rule_id for f in absent}
    assert {"t.not_db", "t.either", "t.unset", "t.child", "t.explains"} <= fired  # the batch exercises them
    assert any(f.message == "nil" for f in absent if f.rule_id == "t.not_db")  # the message read the nil
    assert any(f.explains for f in absent if f.rule_id == "t.explains")
    # the rules left out are those that cannot fire; the prepare step copied no column of NULLs
    (store,) = (column_name(r) for r in ruleset.projection if r.key == "app.store")
    conn = duckdb.connect()
    try:
        load(conn, _traces(False), ruleset.projection)
        assert ruleset._absent(conn, "batch", None).columns == {store}  # a span without events has an empty list, not NULL
        copy = [s for s in ruleset.prepare_statements(conn, "batch") if s.startswith(f"CREATE OR REPLACE TEMP TABLE {SPANS} ")]
        assert len(copy) == 1 and store not in copy[0]
    finally:
        conn.close()
    plan = ruleset._batch_plan(Absent(frozenset({store})))
    ran = {r.id for r in plan.columnar.rules + plan.columnar.rest}
    assert ran == {r.id for r in ruleset.rules} - {"t.db", "t.db_len", "t.child_db", "t.exists"}


def test_what_a_caller_knows_of_an_arrow_batch_stands_for_the_count(rules_from):
    # the worker knows an Arrow batch's columns, empty columns (null counts) and errors
    # (``known_batch``): the rule set takes them instead of asking DuckDB, and finds the same,
    # with the batch's ``_row`` numbers or without (then it copies the batch first)
    from dsl import KnownBatch, known_batch, known_of

    ruleset = rules_from(_text())
    errors = set()
    for traces in (_traces(False), _traces(True), [t for i, t in enumerate(_traces(False)) if i in (1, 5)]):
        conn = duckdb.connect()
        try:
            load(conn, traces, ruleset.projection)
            counted, found = ruleset._absent(conn, "batch", None), ruleset.evaluate(conn, "batch")
            arrow = conn.sql("SELECT * FROM batch").to_arrow_table()
            conn.execute("DROP TABLE batch")
            for registered in (arrow, arrow.append_column("_row", pa.array(range(arrow.num_rows), pa.int64()))):
                conn.register("batch", registered)
                with known_batch("batch", registered) as known:
                    assert known_of("batch") is known and known_of("other") is None
                    assert ruleset._absent(conn, "batch", known) == counted
                    assert ruleset.evaluate(conn, "batch") == found
                conn.unregister("batch")
                assert known_of("batch") is None
            errors.add(counted.errors)
        finally:
            conn.close()
    assert errors == {True, False}  # batches with errors and without
    known = KnownBatch.of("t", pa.table({"a": [None, 1], "b": pa.nulls(2, pa.int64()), "status_code": [1, None]}))
    assert (known.empty, known.errors, known.columns) == ({"b"}, False, {"a", "b", "status_code"})
    assert KnownBatch.of("t", pa.table({"status_code": pa.array([], pa.int32())})).errors is False


def test_a_batch_whose_event_lists_are_null_has_no_events(rules_from, run):
    ruleset = rules_from(RULE.format(id="ev", match='span s,\n  event e of s where e.name = "exception"',
                                     msg="{e.name}", extra=""))
    t = Trace()
    t.span("a", events=[("exception", {})])
    assert [f.message for f in run(ruleset, t)] == ["exception"]
    conn = duckdb.connect()
    try:
        load(conn, [t], ruleset.projection)
        (events,) = (column_name(r) for r in ruleset.projection)
        conn.execute(f"UPDATE batch SET {events} = NULL")
        assert ruleset.evaluate(conn, "batch") == []
        assert ruleset._absent(conn, "batch", None).columns == {events}
    finally:
        conn.close()


def test_can_fire_is_false_only_when_the_condition_cannot_hold(rules_from):
    ruleset = rules_from(_text())
    columns = {column_name(r) for r in ruleset.projection}
    cannot = {rid for rid, rule in ruleset.checked.items() if not can_fire(rule, Absent(frozenset(columns)))}
    assert cannot == {"t.db", "t.db_len", "t.child_db", "t.exists", "t.events"}
    assert all(can_fire(rule, Absent()) for rule in ruleset.checked.values())
    # a test of an absent value against nil never holds either; true holds
    attr = ir.AttrValue("s", (AttrRef(AttrSource.SPAN, "app.store"),), ir.Ty.STRING)
    rule = ruleset.checked["t.db"]
    assert not can_fire(rule.__class__(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__},
                                          "where": ir.InList(attr, (), False)}), Absent())
    assert can_fire(rule.__class__(**{**{f: getattr(rule, f) for f in rule.__dataclass_fields__},
                                      "where": ir.Const(True, ir.Ty.BOOL)}), Absent(frozenset(columns), errors=False))


def test_with_nulls_replaces_references_to_absent_columns_only():
    sql = "SELECT v0.a_s_x_1, f.v0__a_s_x_1, v1.a_s_y_2, v0.a_s_x_10 FROM t AS v0"
    assert with_nulls(sql, {"a_s_x_1": "BIGINT"}) == (
        "SELECT CAST(NULL AS BIGINT), f.v0__a_s_x_1, v1.a_s_y_2, v0.a_s_x_10 FROM t AS v0")
    assert with_nulls(sql, {}) == sql


def test_a_batch_without_errors_runs_only_the_rules_that_need_none(rules_from, monkeypatch):
    text = "\n".join(RULE.format(id=rid, match=match, msg="", extra="") for rid, match in {
        "err": "span s where s.status = error and s.kind = client",
        "err_in": "span s where s.status in [error, ok]",
        "err_only_in": "span s where s.status in [error] and s.kind = client",
        "err_child": "span s, child c of s where error = c.status",
        "not_err": "span s where not (s.status = error) and s.kind = client",
        "ok": "span s where s.status != error and s.name = \"x\"",
        "quant": "span s where count(child c of s where c.status = error) = 0 and s.kind = server",
    }.items())
    ruleset = rules_from(text)
    healthy = [Trace((i + 1).to_bytes(16, "big")) for i in range(4)]
    for t in healthy:
        root = t.span("a", kind="server")
        t.span("x", t.span("q", root, start=1, end=4, kind="client"), start=2, end=3)
    conn = duckdb.connect()
    try:
        load(conn, healthy, ruleset.projection)
        assert ruleset._absent(conn, "batch", None) == Absent(errors=False)
        found = ruleset.evaluate(conn, "batch")
        monkeypatch.setattr(type(ruleset), "_absent", lambda self, conn, table, known: Absent())  # nothing known
        assert found == ruleset.evaluate(conn, "batch")
    finally:
        conn.close()
    assert {f.rule_id for f in found} == {"t.not_err", "t.ok", "t.quant"}
    plan = ruleset._batch_plan(Absent(errors=False))
    assert {r.id for r in plan.columnar.rules + plan.columnar.rest} == {"t.err_in", "t.not_err", "t.ok", "t.quant"}


def test_the_span_table_holds_the_columns_the_batch_statements_read(rules_from):
    ruleset = rules_from("\n".join(RULE.format(id=rid, match=match, msg=msg, extra="") for rid, match, msg in [
        ("err", 'span s where s.status = error and s.attr["app.a"] = "x"', "{s.status_message}"),
        ("b", 'span s where s.attr["app.b"] = "y"', "{s.name}"),
    ]))
    t = Trace()
    t.span("n", attrs={"app.a": "x", "app.b": "y"})
    (a,) = (column_name(r) for r in ruleset.projection if r.key == "app.a")
    (b,) = (column_name(r) for r in ruleset.projection if r.key == "app.b")
    conn = duckdb.connect()
    try:
        load(conn, [t], ruleset.projection)
        (copy,) = (s for s in ruleset.prepare_statements(conn, "batch") if s.startswith(f"CREATE OR REPLACE TEMP TABLE {SPANS} "))
        # app.a and the status message are read by a rule that cannot fire without errors
        assert f"t.{b}" in copy and f"t.{a}" not in copy and "status_message" not in copy
        assert [(f.rule_id, f.message) for f in ruleset.evaluate(conn, "batch")] == [("t.b", "n")]
    finally:
        conn.close()


def test_a_rule_set_keeps_the_batch_plans_used_last(rules_from):
    from dsl.api import _BATCH_PLANS

    ruleset = rules_from(_text())
    seen = [Absent(frozenset({f"c{i}"})) for i in range(_BATCH_PLANS + 1)]
    first = ruleset._batch_plan(seen[0])
    for absent in seen[1:_BATCH_PLANS]:
        ruleset._batch_plan(absent)
    assert ruleset._batch_plan(seen[0]) is first  # kept, and now the last used
    ruleset._batch_plan(seen[_BATCH_PLANS])  # one too many: the least recently used goes
    assert seen[1] not in ruleset._batch_plans and ruleset._batch_plan(seen[0]) is first
