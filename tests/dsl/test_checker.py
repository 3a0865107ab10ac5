"""dsl.checker: names, types, macros, semconv aliases, projection, warnings."""

from __future__ import annotations

from dsl import ir
from dsl.checker import check
from dsl.ir import Ty
from dsl.parser import parse
from dsl.projection import AttrRef, AttrSource, AttrType

HEAD = 'title "t"\n  layer code\n  severity low\n  confidence 0.5\n'


def checked(where: str, prelude: str = "", extra: str = ""):
    text = f"{prelude}\nrule t.r {{\n  {HEAD}  match span e{extra} where {where}\n}}\n"
    f, syntax = parse(text, "t.rules")
    assert syntax == []
    return check([f])


def codes(result) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_a_clean_rule_lowers_to_typed_ir():
    r = checked("e.status = error and e.duration > 250ms")
    assert r.ok and codes(r) == []
    (rule,) = r.rules
    assert rule.meta == ir.RuleMeta("t.r", "t", "code", "low", 0.5)
    assert rule.where == ir.And((
        ir.Compare("=", ir.Intrinsic("e", "status", Ty.STATUS), ir.Const(2, Ty.STATUS)),
        ir.Compare(">", ir.Intrinsic("e", "duration", Ty.DURATION), ir.Const(250_000_000, Ty.DURATION)),
    ))
    assert rule.blame == "e" and rule.message == ("t.r",)


def test_current_semconv_key_also_reads_its_deprecated_name():
    r = checked('e.attr["http.response.status_code"] >= 500')
    node = r.rules[0].where.left
    assert node.refs == (
        AttrRef(AttrSource.SPAN, "http.response.status_code", AttrType.INT),
        AttrRef(AttrSource.SPAN, "http.status_code", AttrType.INT),
    )


def test_deprecated_key_warns_and_still_reads_both():
    r = checked('e.attr["db.system"] = "redis"')
    assert codes(r) == ["W002"] and r.ok
    assert [ref.key for ref in r.rules[0].where.left.refs] == ["db.system.name", "db.system"]


def test_explicit_alternatives_coalesce_in_order():
    r = checked('e.attr["app.a" | "app.b"] = "x"')
    assert [ref.key for ref in r.rules[0].where.left.refs] == ["app.a", "app.b"]


def test_unknown_attribute_type_is_inferred_from_the_literal():
    r = checked('e.attr["app.retries"] > 3 and e.attr["app.mode"] = "x" and e.attr["app.flag"] = true')
    types = [c.left.refs[0].type for c in r.rules[0].where.items]
    assert types == [AttrType.DOUBLE, AttrType.ANY, AttrType.BOOL]  # a string is read as the text of any value


def test_annotation_wins():
    r = checked('e.attr["app.tags"]:string[] contains "x"')
    assert isinstance(r.rules[0].where, ir.ArrayHas)
    assert r.rules[0].where.operand.refs[0].type is AttrType.STRING_ARRAY


def test_event_attribute_and_presence():
    r = checked('e.event["exception"] and e.event["exception"]["exception.type"] = "E"')
    presence, typ = r.rules[0].where.items
    assert presence.refs == (AttrRef(AttrSource.EVENT, "", AttrType.PRESENT, "exception"),)
    assert typ.left.refs == (AttrRef(AttrSource.EVENT, "exception.type", AttrType.STRING, "exception"),)


def test_unknown_key_in_known_namespace_warns_with_suggestion():
    r = checked('e.attr["http.respons.status_code"]:int = 5')
    (d,) = r.diagnostics
    assert d.code == "W001" and d.hints == ("did you mean `http.response.status_code`?",)


def test_own_namespaces_are_not_checked():
    assert codes(checked('e.attr["myco.tenant"] = "a"')) == []


def test_macros_expand_with_span_and_value_arguments():
    r = checked("is_err(e) and over(e.duration, 1s)", prelude="macro is_err(s) = s.status = error\nmacro over(x, t) = x > t")
    assert r.ok and codes(r) == []
    a, b = r.rules[0].where.items
    assert a == ir.Compare("=", ir.Intrinsic("e", "status", Ty.STATUS), ir.Const(2, Ty.STATUS))
    assert b == ir.Compare(">", ir.Intrinsic("e", "duration", Ty.DURATION), ir.Const(1_000_000_000, Ty.DURATION))


def test_consts_and_lists_inline():
    r = checked("e.duration > slow and e.kind in kinds", prelude="const slow = 2s\nlist kinds = [server, client]")
    cmp, member = r.rules[0].where.items
    assert cmp.right == ir.Const(2_000_000_000, Ty.DURATION)
    assert member.items == (ir.Const(2, Ty.KIND), ir.Const(3, Ty.KIND))


def test_quantifiers_and_aggregates_type():
    r = checked("exists(child c of e where c.status = error) and count(span s) > 3 and avg(s.depth for span s) > 1.5 "
                "and max(s.duration for descendant s of e) > 1s")
    ex, cnt, avg, mx = r.rules[0].where.items
    assert ex.ty is Ty.BOOL and ex.rel == ir.Rel("c", "child", "e")
    assert cnt.left.ty is Ty.INT and cnt.left.rel == ir.Rel("s", "span", "e")
    assert avg.left.ty is Ty.DOUBLE
    assert mx.left.ty is Ty.DURATION and mx.left.rel.relation == "descendant"


def test_arithmetic_types():
    r = checked("e.duration - e.self_time > 2 * 100ms and e.self_time / e.duration > 0.5 and e.end - e.start > 1s")
    a, b, c = r.rules[0].where.items
    assert a.left.ty is Ty.DURATION and a.right.ty is Ty.DURATION
    assert b.left.ty is Ty.DOUBLE
    assert c.left.ty is Ty.DURATION


def test_trace_intrinsics():
    r = checked("trace.span_count > 10 and trace.root_service = \"x\"")
    a, b = r.rules[0].where.items
    assert a.left == ir.TraceIntrinsic("e", "span_count", Ty.INT)


def test_all_problems_are_collected():
    r = checked("e.nope > 1 and e.status = nope and zz(e) and e.duration > 1")
    assert codes(r) == ["E011", "E010", "E013", "E020"]
    assert r.rules == []


def test_never_fires_warnings():
    assert codes(checked("e.status = error and e.status = ok")) == ["W004"]
    assert codes(checked("e.depth > 3 and e.depth <= 3")) == ["W004"]
    assert codes(checked("e.duration < 0s")) == ["W004"]
    assert codes(checked("count(child c of e) < 0")) == ["W004"]
    assert codes(checked('not exists(e.attr["app.x"]) and e.attr["app.x"] = "a"')) == ["W004"]
    assert codes(checked("e.depth > 3 and e.depth < 5")) == []
    assert codes(checked("e.status = error or e.status = ok")) == []


def test_warnings_do_not_block_and_errors_do():
    assert checked("e.status = error and e.status = ok").ok
    assert not checked("e.duration > 1").ok


def test_blame_defaults_to_the_first_variable():
    r = checked("c.status = error", extra=", child c of e")
    assert r.rules[0].blame == "e"


def test_definitions_are_shared_across_files():
    lib, _ = parse("macro failed(s) = s.status = error\n", "lib.rules")
    rules, _ = parse(f"rule t.r {{\n  {HEAD} match span e where failed(e)\n}}\n", "r.rules")
    r = check([lib, rules])
    assert r.ok and codes(r) == []


def test_duplicate_ids_across_files():
    a, _ = parse(f"rule t.r {{ {HEAD} match span e }}", "a.rules")
    b, _ = parse(f"rule t.r {{ {HEAD} match span e }}", "b.rules")
    (d,) = check([a, b]).diagnostics
    assert d.code == "E015" and d.span.path == "b.rules" and "a.rules:1:6" in d.hints[0]


def test_macros_are_hygienic():
    r = checked("m(e)", prelude="macro m(s) = s.depth > e.depth")
    assert codes(r) == ["E010"]


def test_reused_variable_names_get_distinct_ir_names():
    # the macro's own `c` must not capture the caller's `c`
    r = checked("has_failing_child(c)", prelude="macro has_failing_child(s) = exists(child c of s where c.status = error)",
                extra=", child c of e")
    (rule,) = r.rules
    assert rule.where.rel == ir.Rel("c_2", "child", "c")


def test_zero_argument_macro_with_trace_aggregate():
    r = checked("noisy()", prelude="macro noisy() = count(span s where s.status = error) > 3 and trace.span_count > 5")
    assert r.ok and r.rules[0].where.items[0].left.rel == ir.Rel("s", "span", "e")


def test_regexes_are_judged_by_re2_when_a_validator_is_given():
    from dsl.api import load_rules  # noqa: F401  (the api wires DuckDB's RE2 in)
    from dsl.checker import _regex_problem

    assert _regex_problem("(?=x)", None) == "`(?=` is not supported by RE2"
    assert _regex_problem(r"(a)\1", None) == "`\\1` is not supported by RE2"
    assert _regex_problem(r"a\++", None) == ""
    assert _regex_problem(r"\p{Greek}", lambda p: "") == ""  # RE2 syntax Python lacks
    assert _regex_problem("x", lambda p: "nope") == "nope"


def test_baseline_intrinsics_type():
    r = checked("e.self_time > 5 * e.baseline_p99 and e.zscore > 3 and e.duration - e.baseline_median > 1s")
    assert r.ok and codes(r) == []
    a, b, c = r.rules[0].where.items
    assert a.right.ty is Ty.DURATION and a.right.right == ir.Intrinsic("e", "baseline_p99", Ty.DURATION)
    assert b.left == ir.Intrinsic("e", "zscore", Ty.DOUBLE)
    assert c.left.ty is Ty.DURATION
    r = checked("e.zscore > 250ms")
    assert not r.ok and codes(r) == ["E020"]
    r = checked("e.baseline_p99 > 3")
    assert not r.ok and codes(r) == ["E020"]
    r = checked("e.zscor > 3")
    assert codes(r) == ["E011"] and any("zscore" in h for h in r.diagnostics[0].hints)
