"""dsl.fixtures: loading fixture YAML, comparing findings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dsl import Finding
from dsl.fixtures import (
    ExpectedFinding,
    FixtureCase,
    FixtureError,
    FixtureSpan,
    HealthyCeiling,
    SpanMatcher,
    compare,
    find_fixture_files,
    load_fixture_file,
)

# Two spans as ``faulttrace test`` reads them from a trace (tests/tools/test_fixture_traces.py).
TRACE_ID = bytes(range(1, 17))
ROOT_SPAN = FixtureSpan(TRACE_ID, bytes.fromhex("0000000000000001"), None, "root", "web", 2, 1000, 2000, 2, "boom")
CHILD_SPAN = FixtureSpan(TRACE_ID, bytes.fromhex("0000000000000002"), ROOT_SPAN.span_id, "child", "web", 3, 1100, 1900, 0)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_fixture_file_loads_typed_cases(tmp_path):
    p = write(tmp_path, "x.test.yaml", """
rule_files: [a.rules]
tests:
  - name: fires
    trace: t.json
    rules: [r.one]
    expect:
      - rule: r.one
        span: {name: root, service: web}
        message: boom
      - {rule: r.one, span: child}
      - {rule: r.one, span: {id: "0000000000000002"}}
  - trace: t.json
    expect: []
""")
    f = load_fixture_file(p)
    assert f.rule_files == (tmp_path / "a.rules",)
    first, second = f.cases
    assert first.rules == ("r.one",) and first.trace == tmp_path / "t.json"
    assert first.expect[0] == ExpectedFinding("r.one", SpanMatcher(name="root", service="web"), "boom")
    assert first.expect[1].span == SpanMatcher(name="child") and first.expect[2].span.span_id == "0000000000000002"
    assert second.name == "test 2" and second.expect == ()
    assert find_fixture_files([tmp_path]) == [p]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a mapping"),
        ("rule_files: [a.rules]\ntests: []\n", "tests: expected a non-empty list"),
        ("tests: [{trace: t.json, expect: []}]\n", "rule_files: name at least one"),
        ("rule_files: [a]\ntests: [{trace: t.json}]\n", r"tests\[0\].expect"),
        ("rule_files: [a]\ntests: [{trace: t.json, expect: [{rule: x, span: {nme: y}}]}]\n", r"expect\[0\].span"),
        ("rule_files: [a]\ntests: [{trace: t.json, expect: [], extra: 1}]\n", "unknown key"),
        ("rule_files: [a]\ntest: []\n", "unknown key"),
    ],
)
def test_fixture_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(FixtureError, match=message):
        load_fixture_file(write(tmp_path, "x.test.yaml", text))


def _finding(rule: str, span_id: bytes, message: str = "m") -> Finding:
    return Finding(b"t" * 16, span_id, rule, "code", "high", 0.5, message)


def test_compare_passes_and_ignores_rules_not_under_test(tmp_path):
    spans = [ROOT_SPAN, CHILD_SPAN]
    case = FixtureCase("c", Path("t.json"), (ExpectedFinding("r.one", SpanMatcher(name="child"), "oo"),), ("r.one",))
    result = compare(case, spans, [_finding("r.one", spans[1].span_id, "boom"), _finding("r.other", spans[0].span_id)])
    assert result.ok and result.diff() == ""


def test_compare_reports_a_readable_diff(tmp_path):
    spans = [ROOT_SPAN, CHILD_SPAN]
    expect = (ExpectedFinding("r.one", SpanMatcher(name="child")), ExpectedFinding("r.two", SpanMatcher(name="root"), "needle"))
    case = FixtureCase("the case", Path("t.json"), expect)
    result = compare(case, spans, [_finding("r.one", spans[0].span_id, "wrong span"), _finding("r.two", spans[0].span_id, "hay")])
    assert not result.ok
    assert result.diff() == (
        "FAIL the case (t.json)\n"
        "  - expected r.one on span name='child'\n"
        "  + unexpected r.one on span id=0000000000000001 name='root' service='web': 'wrong span'\n"
        "  ~ r.two on span id=0000000000000001 name='root' service='web': message 'hay' does not contain 'needle'"
    )


def test_empty_expectation_means_must_not_fire(tmp_path):
    spans = [ROOT_SPAN, CHILD_SPAN]
    case = FixtureCase("neg", Path("t.json"), ())
    assert not compare(case, spans, [_finding("r.any", spans[0].span_id)]).ok
    assert compare(case, spans, []).ok


def test_explains_expects_exactly_the_spans_a_finding_explains(tmp_path):
    p = write(tmp_path, "x.test.yaml", """
rule_files: [a.rules]
tests:
  - trace: t.json
    expect:
      - {rule: r.one, span: child, explains: [root]}
      - {rule: r.two, span: child, explains: []}
      - {rule: r.three, span: child}
""")
    one, two, three = load_fixture_file(p).cases[0].expect
    assert one.explains == (SpanMatcher(name="root"),) and two.explains == () and three.explains is None
    spans = [ROOT_SPAN, CHILD_SPAN]
    explaining = Finding(b"t" * 16, CHILD_SPAN.span_id, "r.one", "code", "high", 0.5, "m", explains=(ROOT_SPAN.span_id,))
    case = FixtureCase("c", Path("t.json"), (one,))
    assert compare(case, spans, [explaining]).ok
    case = FixtureCase("c", Path("t.json"), (ExpectedFinding("r.one", SpanMatcher(name="child"), explains=()),))
    result = compare(case, spans, [explaining])
    assert result.diff() == (
        "FAIL c (t.json)\n"
        "  ~ r.one on span id=0000000000000002 name='child' service='web': "
        "explains id=0000000000000001 name='root' service='web', expected nothing"
    )
    with pytest.raises(FixtureError, match=r"expect\[0\].explains"):
        load_fixture_file(write(tmp_path, "y.test.yaml", "rule_files: [a]\ntests: [{trace: t.json, expect: [{rule: x, span: y, explains: z}]}]\n"))


@dataclass(frozen=True)
class _Rate:
    id: str
    kind: str
    traces: int
    of_traces: int
    trees: tuple[str, ...] = ()

    @property
    def trace_rate(self) -> float:
        return self.traces / self.of_traces


def test_healthy_ceiling_loads_globs_and_per_rule_ceilings(tmp_path):
    write(tmp_path, "healthy_a.json", "{}")
    write(tmp_path, "healthy_b.json", "{}")
    p = write(tmp_path, "x.test.yaml", """
rule_files: [a.rules]
tests: [{trace: t.json, expect: []}]
healthy:
  traces: healthy_*.json
  max_rate: 0.01
  rules: {r.weak: {max_rate: 0.2}}
""")
    h = load_fixture_file(p).healthy
    assert h is not None and [t.name for t in h.traces] == ["healthy_a.json", "healthy_b.json"]
    assert (h.max_rate, h.rules) == (0.01, {"r.weak": 0.2})


def test_healthy_ceiling_exempts_rules_a_tree_reads_unless_named():
    h = HealthyCeiling((), 0.01, {"r.named": 0.1})
    rates = [_Rate("r.loud", "rule", 3, 100), _Rate("r.quiet", "rule", 1, 100),
             _Rate("r.in_tree", "rule", 50, 100, ("t",)), _Rate("r.named", "rule", 20, 100, ("t",)),
             _Rate("t", "tree", 2, 100)]
    assert h.problems(rates) == [
        "rule r.loud fires on 3 of 100 healthy traces (3%), above its ceiling of 1%",
        "rule r.named fires on 20 of 100 healthy traces (20%), above its ceiling of 10%",
        "tree t fires on 2 of 100 healthy traces (2%), above its ceiling of 1%",
    ]
    assert HealthyCeiling((), None, {"r.gone": 0.1}).problems([]) == ["healthy.rules names r.gone, which no rule file defines"]


@pytest.mark.parametrize(("healthy", "message"), [
    ("healthy: [x]", "healthy: expected a mapping"),
    ("healthy: {traces: none_*.json, max_rate: 0.01}", "matches no file"),
    ("healthy: {traces: t.json}", "give `max_rate`"),
    ("healthy: {traces: t.json, max_rate: 5}", "between 0 and 1"),
    ("healthy: {traces: t.json, rules: {r: 0.1}}", "{max_rate: RATE}"),
    ("healthy: {traces: t.json, max_rate: 0.1, ceiling: 1}", "unknown key(s) ceiling"),
])
def test_healthy_ceiling_errors_name_the_key(tmp_path, healthy, message):
    write(tmp_path, "t.json", "{}")
    p = write(tmp_path, "x.test.yaml", f"rule_files: [a.rules]\ntests: [{{trace: t.json, expect: []}}]\n{healthy}\n")
    with pytest.raises(FixtureError) as err:
        load_fixture_file(p)
    assert message in str(err.value)
