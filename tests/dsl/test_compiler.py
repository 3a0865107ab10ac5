"""dsl.compiler, end to end over DuckDB: each language feature evaluated on
synthetic traces loaded per the store contract."""

from __future__ import annotations

import time

import duckdb
import pyarrow as pa
import pytest

from dsl import BASELINE_TABLE
from dsl.compiler import SPANS, quote_ident
from tests.support.dsl_spans import Trace, load

HEAD = 'title "t"\n  layer code\n  severity low\n  confidence 0.5\n'


def rule(where: str, *, match: str = "span e", blame: str = "", message: str = "", prelude: str = "", rid: str = "t.r") -> str:
    lines = [prelude, f"rule {rid} {{", HEAD, f"  match {match} where {where}"]
    if blame:
        lines.append(f"  blame {blame}")
    if message:
        lines.append(f"  message {message}")
    return "\n".join(lines + ["}"])


def names(findings, trace: Trace) -> list[str]:
    by_id = {s.span_id: s.name for s in trace.spans}
    return sorted(by_id[f.span_id] for f in findings)


@pytest.fixture
def shop() -> Trace:
    """frontend -> checkout (error) -> {db (error, exception), cache}, plus a retrying client."""
    t = Trace()
    root = t.span("GET /checkout", start=0, end=100, kind="server", service="frontend", status="error",
                  attrs={"http.response.status_code": 500, "http.route": "/checkout"})
    call = t.span("POST checkout", root, start=5, end=95, kind="client", status="error", attrs={"http.status_code": 503})
    svc = t.span("checkout", call, start=10, end=90, kind="server", service="checkout", status="error")
    t.span("SELECT orders", svc, start=20, end=60, kind="client", status="error",
           attrs={"db.system": "postgresql", "db.query.text": "SELECT * FROM orders"},
           events=[("log", {}), ("exception", {"exception.type": "TimeoutError", "exception.message": "pool"}),
                   ("exception", {"exception.type": "Second"})])
    t.span("GET cache", svc, start=50, end=70, kind="client", attrs={"db.system.name": "redis", "app.count": 3})
    return t


def test_attribute_comparisons(rules_from, run, shop):
    rs = rules_from(rule('e.attr["http.response.status_code"] >= 500'))
    assert names(run(rs, shop), shop) == ["GET /checkout", "POST checkout"]  # current + deprecated key


def test_event_attributes_read_the_first_event_of_that_name(rules_from, run, shop):
    rs = rules_from(rule('e.event["exception"]["exception.type"] = "TimeoutError"'))
    assert names(run(rs, shop), shop) == ["SELECT orders"]
    rs = rules_from(rule('e.event["exception"]["exception.type"] = "Second"'))
    assert run(rs, shop) == []
    rs = rules_from(rule('e.event["exception"]'))
    assert names(run(rs, shop), shop) == ["SELECT orders"]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ('e.name =~ "^GET "', ["GET /checkout", "GET cache"]),
        ('e.name !~ "^GET "', ["POST checkout", "SELECT orders", "checkout"]),
        ('e.name =~ "(?i)^select\\\\s"', ["SELECT orders"]),
        ('e.name contains "check"', ["GET /checkout", "POST checkout", "checkout"]),
        ('e.name starts_with "GET"', ["GET /checkout", "GET cache"]),
        ('e.name ends_with "orders"', ["SELECT orders"]),
        ('e.service in ["checkout", "nope"]', ["GET cache", "SELECT orders", "checkout"]),
        ('e.service not in ["checkout"]', ["GET /checkout", "POST checkout"]),
        ("e.kind = server", ["GET /checkout", "checkout"]),
        ("e.kind != client and e.status = error", ["GET /checkout", "checkout"]),
        ("e.duration >= 80ms", ["GET /checkout", "POST checkout", "checkout"]),
        ("e.duration * 2 > 150ms and e.duration / 2 < 44ms", ["checkout"]),
        ("-e.depth < -2", ["GET cache", "SELECT orders"]),
        ("e.depth % 2 = 1", ["POST checkout", "SELECT orders", "GET cache"]),
        ("e.end - e.start = e.duration and e.start + 10ms = e.end", []),
        ("e.is_root", ["GET /checkout"]),
        ("not e.is_root and e.depth = 1", ["POST checkout"]),
    ],
)
def test_operators(rules_from, run, shop, where, expected):
    assert names(run(rules_from(rule(where)), shop), shop) == sorted(expected)


def test_nil_comparisons_are_false_and_not_is_two_valued(rules_from, run, shop):
    total = len(shop.spans)
    eq = run(rules_from(rule('e.attr["app.count"]:int = 3')), shop)
    ne = run(rules_from(rule('e.attr["app.count"]:int != 3')), shop)
    neg = run(rules_from(rule('not (e.attr["app.count"]:int = 3)')), shop)
    has = run(rules_from(rule('exists(e.attr["app.count"]:int)')), shop)
    assert (len(eq), len(ne), len(neg), len(has)) == (1, 0, total - 1, 1)


def test_wrong_typed_value_is_nil(rules_from, run, shop):
    assert run(rules_from(rule('e.attr["app.count"]:string = "3"')), shop) == []
    # an int also fills a double column
    assert len(run(rules_from(rule('e.attr["app.count"] > 2.5')), shop)) == 1


def test_division_by_zero_is_nil_not_an_error(rules_from, run, shop):
    assert run(rules_from(rule("e.duration / (e.depth - e.depth) > 0ms")), shop) == []


def test_regex_is_linear_time_re2(rules_from, run):
    t = Trace()
    t.span("a" * 50_000 + "!")
    rs = rules_from(rule('e.name =~ "(a+)+$"'))  # catastrophic for backtracking engines
    start = time.perf_counter()
    assert run(rs, t) == []
    assert time.perf_counter() - start < 2


def test_string_array_contains(rules_from, run):
    t = Trace()
    t.span("chat", attrs={"gen_ai.response.finish_reasons": ["stop", "length"]})
    t.span("chat2", attrs={"gen_ai.response.finish_reasons": ["stop"]})
    t.span("chat3", attrs={"gen_ai.response.finish_reasons": "length"})  # wrong type: nil
    rs = rules_from(rule('e.attr["gen_ai.response.finish_reasons"] contains "length"'))
    assert names(run(rs, t), t) == ["chat"]


def test_resource_attributes(rules_from, run):
    t = Trace()
    t.span("a", resource={"k8s.pod.name": "web-1"})
    t.span("b", resource={"k8s.pod.name": "web-2"})
    assert names(run(rules_from(rule('e.resource["k8s.pod.name"] = "web-2"')), t), t) == ["b"]


# ---- structure ------------------------------------------------------------------------


def test_deepest_error_is_one_line(rules_from, run, shop):
    rs = rules_from(rule("e.status = error and not exists(child c of e where c.status = error)"))
    assert names(run(rs, shop), shop) == ["SELECT orders"]


@pytest.mark.parametrize(
    ("match", "where", "blame", "expected"),
    [
        ("span e, child c of e", 'c.name = "checkout"', "e", ["POST checkout"]),
        ("span e, parent p of e", 'p.name = "checkout"', "e", ["GET cache", "SELECT orders"]),
        ("span e, descendant d of e", 'd.name = "GET cache"', "e", ["GET /checkout", "POST checkout", "checkout"]),
        ("span e, ancestor a of e", "a.is_root", "e", ["GET cache", "POST checkout", "SELECT orders", "checkout"]),
        ("span e, sibling s of e", 's.name = "GET cache"', "e", ["SELECT orders"]),
        ("span e, child c of e", 'c.name = "checkout"', "c", ["checkout"]),
        ("span e, span f", "e.kind = server and f.kind = client and f.status = error", "f", ["POST checkout", "SELECT orders"]),
    ],
)
def test_relations_in_match(rules_from, run, shop, match, where, blame, expected):
    rs = rules_from(rule(where, match=match, blame=blame))
    assert names(run(rs, shop), shop) == sorted(expected)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("exists(parent p of e where p.kind = server)", ["GET cache", "POST checkout", "SELECT orders"]),
        ("exists(ancestor a of e where a.service = \"frontend\") and e.kind = server", ["checkout"]),
        ("exists(descendant d of e where d.event[\"exception\"])", ["GET /checkout", "POST checkout", "checkout"]),
        ("exists(sibling s of e where s.status = error)", ["GET cache"]),
        ("count(child c of e) = 2", ["checkout"]),
        ("count(descendant d of e) = 4", ["GET /checkout"]),
        ("count(ancestor a of e) = 3", ["GET cache", "SELECT orders"]),
        ("count(span s where s.status = error) = 4 and e.is_root", ["GET /checkout"]),
        ("max(c.duration for child c of e) = 40ms", ["checkout"]),
        ("min(s.duration for span s) = 20ms and e.is_root", ["GET /checkout"]),
        ("sum(c.duration for child c of e where c.kind = client) = 60ms", ["checkout"]),
        ("avg(c.depth for descendant c of e) = 2.25", ["GET /checkout"]),
        ("max(c.name for child c of e) = \"SELECT orders\"", ["checkout"]),
    ],
)
def test_quantifiers_and_aggregates(rules_from, run, shop, where, expected):
    assert names(run(rules_from(rule(where)), shop), shop) == sorted(expected)


def test_retry_storm_counts_identical_siblings(rules_from, run):
    t = Trace()
    root = t.span("handler", start=0, end=100, kind="server")
    for i in range(4):
        t.span("GET /inventory", root, start=i * 10, end=i * 10 + 5, kind="client")
    t.span("GET /prices", root, start=60, end=70, kind="client")
    rs = rules_from(rule("c.kind = client and count(sibling s of c where s.name = c.name) >= 3",
                         match="span p, child c of p", blame="p", message='"{p.name} retried {c.name}"'))
    (f,) = run(rs, t)
    assert f.message == "handler retried GET /inventory"


def test_aggregate_over_no_spans_is_nil(rules_from, run, shop):
    rs = rules_from(rule('max(c.duration for child c of e) < 1s or not exists(child c of e)'))
    assert len(run(rs, shop)) == len(shop.spans)
    rs = rules_from(rule("not (max(c.duration for child c of e) < 1s)"))
    assert names(run(rs, shop), shop) == ["GET cache", "SELECT orders"]


def test_structure_never_crosses_traces(rules_from, run):
    # two traces with identical span ids: relations and aggregates stay per trace
    a, b = Trace(b"\x0a" * 16), Trace(b"\x0b" * 16)
    ra = a.span("root-a", span_id=b"\x01" * 8, status="error")
    a.span("child-a", ra, span_id=b"\x02" * 8)
    rb = b.span("root-b", span_id=b"\x01" * 8)
    b.span("child-b", rb, span_id=b"\x02" * 8, status="error")
    b.span("child-b2", rb, span_id=b"\x03" * 8, status="error")
    rs = rules_from(rule("e.status = error and not exists(child c of e where c.status = error)"))
    assert sorted((f.trace_id[:1], f.span_id[:1]) for f in run(rs, a, b)) == [(b"\x0a", b"\x01"), (b"\x0b", b"\x02"), (b"\x0b", b"\x03")]
    rs = rules_from(rule("e.is_root and count(span s where s.status = error) = 2 and trace.span_count = 3"))
    assert [f.trace_id[:1] for f in run(rs, a, b)] == [b"\x0b"]
    rs = rules_from(rule("e.is_root", match="span e, descendant d of e", message='"{d.name}"'))
    assert sorted(f.message for f in run(rs, a, b)) == ["child-a", "child-b"]  # one finding per blamed span


def test_self_time_subtracts_the_union_of_children(rules_from, run):
    t = Trace()
    p = t.span("parent", start=0, end=100)
    t.span("a", p, start=10, end=30)
    t.span("b", p, start=20, end=40)   # overlaps a: union 10..40
    t.span("c", p, start=35, end=38)   # inside the union
    t.span("d", p, start=90, end=120)  # runs past the parent: clipped to 90..100
    rs = rules_from(rule("e.is_root", message='"{e.self_time}"'))
    (f,) = run(rs, t)
    assert f.message == "60ms"  # 100 - (30 + 10)


def test_depth_and_orphans(rules_from, run):
    t = Trace()
    r = t.span("r")
    c = t.span("c", r)
    t.span("g", c)
    t.span("orphan", parent_id=b"\xff" * 8)
    rs = rules_from(rule("true", message='"{e.name}={e.depth}/{e.is_root}"'))
    assert sorted(f.message for f in run(rs, t)) == ["c=1/false", "g=2/false", "orphan=0/false", "r=0/true"]


def test_depth_at_the_cap_and_in_a_cycle(rules_from, run):
    """A chain of 258 spans: depth counts up to the recursion's cap (256) and is 0 past it, as for
    spans whose parents form a cycle (no root above them) and the spans below such a cycle."""
    t = Trace()
    chain = [t.span("n0")]
    for i in range(1, 258):
        chain.append(t.span(f"n{i}", chain[-1]))
    a = t.span("a", span_id=b"\xa0" * 8, parent_id=b"\xb0" * 8)
    t.span("b", span_id=b"\xb0" * 8, parent_id=a.span_id)
    t.span("below", parent_id=a.span_id)
    rs = rules_from(rule("true", message='"{e.name}={e.depth}"'))
    got = dict(f.message.split("=") for f in run(rs, t))
    assert [got[f"n{i}"] for i in (0, 1, 255, 256, 257)] == ["0", "1", "255", "256", "0"]
    assert (got["a"], got["b"], got["below"]) == ("0", "0", "0")


def test_trace_intrinsics(rules_from, run, shop):
    rs = rules_from(rule("e.is_root", message='"{trace.duration} {trace.root_service} {trace.root_name} {trace.span_count} {trace.error_count}"'))
    (f,) = run(rs, shop)
    assert f.message == "100ms frontend GET /checkout 5 4"


# ---- messages and results ---------------------------------------------------------------


def test_message_renders_every_type(rules_from, run, shop):
    msg = ('"{e.name}|{e.kind}|{e.status}|{e.duration}|{e.is_root}|{e.attr[\'http.response.status_code\']}|'
           '{e.attr[\'app.missing\']}|{e.start}|{count(child c of e)}|{e.duration / 1ms}"')
    rs = rules_from(rule("e.is_root", message=msg))
    (f,) = run(rs, shop)
    assert f.message == "GET /checkout|server|error|100ms|true|500|nil|2023-11-14T22:13:20.000000Z|1|100.0"


def test_duration_rendering(rules_from, run):
    t = Trace()
    for name, end in (("ns", 0.0005), ("us", 0.0015), ("ms", 12.5), ("s", 2500)):
        t.span(name, start=0, end=end)
    rs = rules_from(rule("true", message='"{e.name}={e.duration}"'))
    assert sorted(f.message for f in run(rs, t)) == ["ms=12.5ms", "ns=500ns", "s=2.5s", "us=1.5us"]


def test_findings_carry_metadata_and_rank(rules_from, run, shop):
    text = rule("e.status = error", rid="a.low") + "\n" + rule("e.status = error", rid="b.low")
    text = text.replace("severity low", "severity high", 1)
    findings = run(rules_from(text), shop)
    assert findings[0].rule_id == "a.low" and findings[0].severity == "high" and findings[0].depth == 3
    assert [f.depth for f in findings if f.rule_id == "b.low"] == [3, 2, 1, 0]
    assert all(f.layer == "code" and f.confidence == 0.5 and len(f.trace_id) == 16 for f in findings)


def test_a_view_works_as_the_batch(rules_from, shop):
    rs = rules_from(rule("e.status = error and not exists(child c of e where c.status = error)"))
    conn = duckdb.connect()
    load(conn, [shop], rs.projection, table="raw")
    conn.execute("CREATE VIEW v AS SELECT * FROM raw")
    assert len(rs.evaluate(conn, "v")) == 1


def test_evaluate_cleans_up_and_can_repeat(rules_from, shop):
    rs = rules_from(rule("e.status = error"))
    conn = duckdb.connect()
    load(conn, [shop], rs.projection, table='odd "name"')
    first = rs.evaluate(conn, 'odd "name"')
    assert rs.evaluate(conn, 'odd "name"') == first and len(first) == 4
    tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {'odd "name"'}


def test_quote_ident():
    assert quote_ident("a") == '"a"'
    assert quote_ident('main.x"y') == '"main"."x""y"'
    with pytest.raises(ValueError):
        quote_ident("a..b")


def test_sql_text_holds_no_literal(rules_from):
    rs = rules_from(rule('e.name = "SECRET_LITERAL" and e.duration > 123456ms', message='"MSG_TEXT {e.name}"'))
    (compiled,) = rs.rules
    assert "SECRET_LITERAL" not in compiled.sql and "123456" not in compiled.sql and "MSG_TEXT" not in compiled.sql
    assert "SECRET_LITERAL" in compiled.params and "MSG_TEXT " in compiled.params


def test_macro_variables_do_not_collide_in_sql(rules_from, run, shop):
    rs = rules_from(rule("has_failing_child(c)", match="span e, child c of e", blame="c",
                         prelude="macro has_failing_child(s) = exists(child c of s where c.status = error)"))
    assert names(run(rs, shop), shop) == ["POST checkout", "checkout"]


def test_arithmetic_overflow_is_nil(rules_from, run):
    t = Trace()
    t.span("big", attrs={"app.n": 2**62})
    t.span("small", attrs={"app.n": 2})
    rs = rules_from(rule('e.attr["app.n"]:int * 4 > 1 or e.attr["app.n"]:int * 4 < 1'))
    assert names(run(rs, t), t) == ["small"]


def test_wide_chains_stay_cheap_for_duckdb(rules_from, run):
    # DuckDB's optimizer pairs up the conjuncts of a WHERE clause and the `and` items
    # of an `or`: 2,000 of them once took 10-20 s (and 2.6 GB) to validate
    ands = " and ".join(f'e.name != "n{i}"' for i in range(3_000))
    ors = " or ".join(f'(e.depth = {i} and e.name != "n{i}")' for i in range(3_000))
    rs = rules_from(rule(f"({ands}) and ({ors})"))
    assert "coalesce((coalesce(" in rs.rules[0].sql
    t = Trace()
    root = t.span("n1")
    kept = t.span("kept", root)
    t.span("n2", kept)
    assert names(run(rs, t), t) == ["kept"]


def test_a_failing_rule_does_not_cost_the_others(rules_from, shop):
    from dsl.api import RuleRuntimeError

    rs = rules_from(rule("e.is_root", rid="t.a") + "\n" + rule("e.is_root", rid="t.b"))
    broken = rs.rules[0].__class__(rs.rules[0].id, rs.rules[0].meta, "SELECT error('boom')", (), rs.rules[0].needs)
    rs = rs.__class__((broken, rs.rules[1]), rs.warnings, rs.projection, rs.needs)
    conn = duckdb.connect()
    load(conn, [shop], rs.projection)
    errors: list[RuleRuntimeError] = []
    findings = rs.evaluate(conn, "batch", on_error=errors.append)
    assert [f.rule_id for f in findings] == ["t.b"]
    assert [e.rule_id for e in errors] == ["t.a"] and "boom" in str(errors[0])


# ---- baseline intrinsics ------------------------------------------------------------------


def _baseline_run(ruleset, *traces, baseline=None):
    conn = duckdb.connect()
    try:
        load(conn, traces, ruleset.projection)
        if baseline is not None:
            conn.register(BASELINE_TABLE, pa.table({
                "service": [b[0] for b in baseline], "name": [b[1] for b in baseline],
                "p99_self_ns": [b[2] for b in baseline], "median_self_ns": [float(b[3]) for b in baseline],
                "mad_self_ns": [float(b[4]) for b in baseline]}))
        return ruleset.evaluate(conn, "batch")
    finally:
        conn.close()


def _slow_trace() -> Trace:
    t = Trace()
    r = t.span("GET /", start=0, end=200, service="front")
    t.span("query", r, start=10, end=190, service="db")   # self 180ms
    t.span("lookup", r, start=0, end=5, service="cache")   # self 5ms, no baseline
    return t


MSNS = 1_000_000
BASE = [("db", "query", 20 * MSNS, 10 * MSNS, 2 * MSNS), ("front", "GET /", 100 * MSNS, 30 * MSNS, 5 * MSNS)]


def test_baseline_intrinsics_read_the_registered_baseline(rules_from):
    t = _slow_trace()
    rs = rules_from(rule("e.self_time > 5 * e.baseline_p99",
                         message='"{e.name} {e.baseline_p99} {e.baseline_median} {e.zscore}"'))
    (f,) = _baseline_run(rs, t, baseline=BASE)
    assert f.message.startswith("query 20ms 10ms 57.33")  # (180 - 10) / (1.4826 * 2)
    rs = rules_from(rule("e.zscore > 3", message='"{e.name}"'))
    # query: (180 - 10) / (1.4826 * 2) ~ 57; GET /: self 15ms, (15 - 30) / (1.4826 * 5) < 0
    assert [f.message for f in _baseline_run(rs, t, baseline=BASE)] == ["query"]
    rs = rules_from(rule("not exists(e.zscore)", message='"{e.name}"'))
    assert [f.message for f in _baseline_run(rs, t, baseline=BASE)] == ["lookup"]  # no baseline: nil


def test_baseline_intrinsics_are_nil_without_a_baseline_table(rules_from):
    t = _slow_trace()
    rs = rules_from(rule("e.self_time > 5 * e.baseline_p99 or e.zscore > 3"))
    assert _baseline_run(rs, t) == []
    rs = rules_from(rule("true", message='"{e.name} {e.baseline_p99} {e.zscore}"'))
    assert sorted(f.message for f in _baseline_run(rs, t)) == ["GET / nil nil", "lookup nil nil", "query nil nil"]


def test_the_span_table_holds_only_the_trace_and_baseline_values_read(rules_from):
    # each trace value is an aggregate and each baseline value a column to copy: a rule set
    # reading one of each gets those, and says the same as with all of them there
    rs = rules_from(rule("e.self_time > 5 * e.baseline_p99 and trace.error_count = 0",
                         message='"{e.name} {e.baseline_p99}"'))
    conn = duckdb.connect()
    try:
        load(conn, [_slow_trace()], rs.projection)
        conn.register(BASELINE_TABLE, pa.table({
            "service": [b[0] for b in BASE], "name": [b[1] for b in BASE], "p99_self_ns": [b[2] for b in BASE],
            "median_self_ns": [float(b[3]) for b in BASE], "mad_self_ns": [float(b[4]) for b in BASE]}))
        for stmt in rs.prepare_statements(conn, "batch"):
            conn.execute(stmt)
        derived = {c for (c,) in conn.execute(f"SELECT name FROM pragma_table_info('{SPANS}')").fetchall()
                   if c.startswith(("_t_", "_b_"))}
        assert derived == {"_t_error_count", "_b_p99"}
    finally:
        conn.close()
    assert [f.message for f in _baseline_run(rs, _slow_trace(), baseline=BASE)] == ["query 20ms"]
    rs = rules_from(rule("trace.span_count = 3 and exists(e.baseline_median)", message='"{e.name}"'))
    assert _baseline_run(rs, _slow_trace()) == []  # nil without a baseline, as with all values there


def test_zscore_is_nil_when_the_mad_is_zero(rules_from):
    rs = rules_from(rule("exists(e.baseline_median) and not exists(e.zscore)", message='"{e.name}"'))
    base = [("db", "query", 20 * MSNS, 10 * MSNS, 0)]
    assert [f.message for f in _baseline_run(rs, _slow_trace(), baseline=base)] == ["query"]
