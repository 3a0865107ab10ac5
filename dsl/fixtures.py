"""Rule fixture tests in the promtool manner, as data: load them, compare.

A fixture file (YAML) names rule files, and cases: an OTLP/JSON trace file
and the findings expected from it (rule id + the blamed span by name/service
or by id; an empty list means "must not fire")::

    rule_files: [../code.rules]
    tests:
      - name: deepest erroring span with an exception is blamed
        trace: traces/code_exception.json
        rules: [code.deepest_exception]      # optional: rules under test
        expect:
          - rule: code.deepest_exception
            span: {name: "SELECT orders", service: orders-db}
            message: "ValueError"             # optional substring
            explains: [GET /orders]           # optional: exactly the spans the finding explains
      - name: a handled exception does not fire
        trace: traces/code_handled.json
        rules: [code.deepest_exception]
        expect: []
      - name: pool exhaustion makes the checkout tree fire
        trace: traces/infra_pool.json
        trees:                                # fault trees under test (`expect` is then optional)
          - tree: checkout.failure
            fired: true
            cut_sets: [[pool_exhausted]]      # optional: exactly these satisfied cut sets
            confidence: 0.8                   # optional: +- 0.005
            spans: [SELECT carts]             # optional: spans the fired cut set blames
    healthy:                                  # optional: a ceiling on firing over fault-free traces
      traces: [traces/healthy_*.json]         # files or globs (one path is fine)
      max_rate: 0.01                          # every rule and tree loaded, but the rules a tree reads
      rules:                                  # optional: per rule (or tree) ceilings, a tree's rules too
        infra.retry_storm: {max_rate: 0.05}

This module only loads fixtures into typed values and compares expected with
actual findings; whoever runs the pipeline (``faulttrace test``) reads the
trace a case names and supplies its spans (``FixtureSpan``) and the actual
findings.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

FIXTURE_SUFFIXES = (".test.yaml", ".test.yml")


class FixtureError(Exception):
    """A fixture file or trace file that cannot be used; the message names the file and key."""


class FindingLike(Protocol):
    trace_id: bytes
    span_id: bytes
    rule_id: str
    message: str


@dataclass(frozen=True, slots=True)
class FixtureSpan:
    """The parts of an OTLP span fixtures and rules look at (attribute values as Python values)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    name: str
    service: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    events: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True, slots=True)
class SpanMatcher:
    """Which span a finding must blame: by id, or by name and/or service."""

    span_id: str = ""  # hex
    name: str = ""
    service: str = ""

    def matches(self, span: FixtureSpan) -> bool:
        if self.span_id and span.span_id.hex() != self.span_id.lower():
            return False
        if self.name and span.name != self.name:
            return False
        return not self.service or span.service == self.service

    def describe(self) -> str:
        parts = [f"id={self.span_id}"] if self.span_id else []
        parts += [f"name={self.name!r}"] if self.name else []
        parts += [f"service={self.service!r}"] if self.service else []
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ExpectedFinding:
    rule: str
    span: SpanMatcher
    message: str = ""  # substring the message must contain, if given
    explains: tuple[SpanMatcher, ...] | None = None  # exactly the spans the finding explains, if given

    def explains_match(self, finding: FindingLike, spans: dict[bytes, FixtureSpan]) -> bool:
        """Whether ``finding`` explains exactly the spans expected (each matcher takes one)."""
        if self.explains is None:
            return True
        explained = getattr(finding, "explains", ())
        left = [spans[s] for s in explained if s in spans]
        if len(left) != len(explained):
            return False
        for m in self.explains:
            hit = next((s for s in left if m.matches(s)), None)
            if hit is None:
                return False
            left.remove(hit)
        return not left


@dataclass(frozen=True, slots=True)
class ExpectedTree:
    """What a fault tree must conclude about the case's trace (``None``: not checked)."""

    tree: str
    fired: bool
    cut_sets: tuple[frozenset[str], ...] | None = None
    confidence: float | None = None
    spans: tuple[SpanMatcher, ...] = ()


CONFIDENCE_TOLERANCE = 0.005


@dataclass(frozen=True, slots=True)
class FixtureCase:
    name: str
    trace: Path
    expect: tuple[ExpectedFinding, ...]
    rules: tuple[str, ...] = ()  # rules under test; empty = every rule loaded
    trees: tuple[ExpectedTree, ...] = ()  # fault trees under test
    checks_findings: bool = True  # False: a tree case without `expect`


class RateLike(Protocol):
    id: str
    kind: str                 # "rule" | "tree"
    traces: int
    of_traces: int
    trees: tuple[str, ...]    # for a rule: the trees that read it

    @property
    def trace_rate(self) -> float: ...


@dataclass(frozen=True, slots=True)
class HealthyCeiling:
    """How often the rules may fire on fault-free traces: ``max_rate`` for every rule and tree not read by
    a tree (``None``: only those named), ``rules`` for the ones named (a rule a tree reads too)."""

    traces: tuple[Path, ...]
    max_rate: float | None = None
    rules: dict[str, float] = field(default_factory=dict)

    def problems(self, rates: Iterable[RateLike]) -> list[str]:
        """One line per rule or tree above its ceiling, or named but not loaded."""
        out, seen = [], set()
        for r in rates:
            seen.add(r.id)
            ceiling = self.rules.get(r.id, None if r.trees else self.max_rate)
            if ceiling is not None and r.trace_rate > ceiling:
                out.append(f"{r.kind} {r.id} fires on {r.traces} of {r.of_traces} healthy traces "
                           f"({100 * r.trace_rate:.3g}%), above its ceiling of {100 * ceiling:.3g}%")
        out += [f"healthy.rules names {x}, which no rule file defines" for x in sorted(set(self.rules) - seen)]
        return out


@dataclass(frozen=True, slots=True)
class FixtureFile:
    path: Path
    rule_files: tuple[Path, ...]
    cases: tuple[FixtureCase, ...]
    healthy: HealthyCeiling | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: FixtureCase
    missing: tuple[ExpectedFinding, ...]
    unexpected: tuple[FindingLike, ...]
    wrong_message: tuple[tuple[ExpectedFinding, FindingLike], ...]
    spans: tuple[FixtureSpan, ...]
    tree_problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_message or self.tree_problems)

    def diff(self) -> str:
        """A readable account of what differs ('' when the case passed)."""
        if self.ok:
            return ""
        by_id = {s.span_id: s for s in self.spans}
        lines = [f"FAIL {self.case.name} ({self.case.trace.name})"]
        for e in self.missing:
            lines.append(f"  - expected {e.rule} on span {e.span.describe()}" + (f" with message containing {e.message!r}" if e.message else ""))
        for f in self.unexpected:
            lines.append(f"  + unexpected {f.rule_id} on span {_describe(f.span_id, by_id)}: {f.message!r}")
        for e, f in self.wrong_message:
            if e.message not in f.message:
                lines.append(f"  ~ {e.rule} on span {_describe(f.span_id, by_id)}: message {f.message!r} does not contain {e.message!r}")
            else:
                got = ", ".join(_describe(x, by_id) for x in getattr(f, "explains", ())) or "nothing"
                want = ", ".join(m.describe() for m in e.explains or ()) or "nothing"
                lines.append(f"  ~ {e.rule} on span {_describe(f.span_id, by_id)}: explains {got}, expected {want}")
        lines += [f"  ~ {p}" for p in self.tree_problems]
        return "\n".join(lines)


def _describe(span_id: bytes, spans: dict[bytes, FixtureSpan]) -> str:
    s = spans.get(span_id)
    return f"id={span_id.hex()}" + (f" name={s.name!r} service={s.service!r}" if s else " (not in the trace)")


# ---- loading --------------------------------------------------------------------


def find_fixture_files(paths: Iterable[str | Path]) -> list[Path]:
    """Fixture files named by ``paths`` or found below directories in them."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.name.endswith(FIXTURE_SUFFIXES))
        elif p.name.endswith(FIXTURE_SUFFIXES):
            out.append(p)
    return out


def load_fixture_file(path: str | Path) -> FixtureFile:
    """Parse and validate one fixture file; paths inside are relative to it."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise FixtureError(f"{p}: {err}") from err
    if not isinstance(doc, dict):
        raise FixtureError(f"{p}: expected a mapping with `rule_files` and `tests`")
    unknown = set(doc) - {"rule_files", "tests", "healthy"}
    if unknown:
        raise FixtureError(f"{p}: unknown key(s) {', '.join(sorted(unknown))} (expected rule_files, tests, healthy)")
    rule_files = _str_list(doc.get("rule_files"), f"{p}: rule_files")
    if not rule_files:
        raise FixtureError(f"{p}: rule_files: name at least one rule file")
    tests = doc.get("tests")
    if not isinstance(tests, list) or not tests:
        raise FixtureError(f"{p}: tests: expected a non-empty list")
    cases = tuple(_case(p, i, t) for i, t in enumerate(tests))
    healthy = _healthy(p, doc["healthy"]) if "healthy" in doc else None
    return FixtureFile(p, tuple(p.parent / f for f in rule_files), cases, healthy)


def _healthy(path: Path, h: object) -> HealthyCeiling:
    where = f"{path}: healthy"
    if not isinstance(h, dict):
        raise FixtureError(f"{where}: expected a mapping with `traces` and `max_rate` and/or `rules`")
    unknown = set(h) - {"traces", "max_rate", "rules"}
    if unknown:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected traces, max_rate, rules)")
    raw = [h["traces"]] if isinstance(h.get("traces"), str) else _str_list(h.get("traces"), f"{where}.traces")
    traces: list[Path] = []
    for pattern in raw:
        found = sorted(glob.glob(str(path.parent / pattern)))
        if not found:
            raise FixtureError(f"{where}.traces: {pattern} matches no file")
        traces += [Path(f) for f in found]
    if not traces:
        raise FixtureError(f"{where}.traces: name the fault-free trace files")
    max_rate = _rate(f"{where}.max_rate", h["max_rate"]) if "max_rate" in h else None
    rules = h.get("rules", {})
    if not isinstance(rules, dict) or not all(isinstance(v, dict) and set(v) == {"max_rate"} for v in rules.values()):
        raise FixtureError(f"{where}.rules: expected a mapping of rule or tree ids to {{max_rate: RATE}}")
    ceilings = {str(k): _rate(f"{where}.rules.{k}.max_rate", v["max_rate"]) for k, v in rules.items()}
    if max_rate is None and not ceilings:
        raise FixtureError(f"{where}: give `max_rate` (every rule and tree) or `rules` (some)")
    return HealthyCeiling(tuple(traces), max_rate, ceilings)


def _rate(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise FixtureError(f"{where}: expected a share of traces between 0 and 1 (0.01 = 1%)")
    return float(value)


def _str_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FixtureError(f"{where}: expected a list of strings")
    return value


def _case(path: Path, index: int, t: object) -> FixtureCase:
    where = f"{path}: tests[{index}]"
    if not isinstance(t, dict):
        raise FixtureError(f"{where}: expected a mapping")
    unknown = set(t) - {"name", "trace", "rules", "expect", "trees"}
    if unknown:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected name, trace, rules, expect, trees)")
    if not isinstance(t.get("trace"), str):
        raise FixtureError(f"{where}.trace: expected the path of an OTLP/JSON file")
    trees = t.get("trees")
    if trees is not None and (not isinstance(trees, list) or not trees):
        raise FixtureError(f"{where}.trees: expected a non-empty list of tree expectations")
    checks_findings = "expect" in t or trees is None
    if checks_findings and not isinstance(t.get("expect"), list):
        raise FixtureError(f"{where}.expect: expected a list (an empty list means no rule may fire)")
    expect = tuple(_expected(f"{where}.expect[{j}]", e) for j, e in enumerate(t.get("expect") or []))
    expected_trees = tuple(_expected_tree(f"{where}.trees[{j}]", e) for j, e in enumerate(trees or []))
    name = str(t.get("name") or f"test {index + 1}")
    return FixtureCase(name, path.parent / t["trace"], expect, tuple(_str_list(t.get("rules"), f"{where}.rules")),
                       expected_trees, checks_findings)


def _expected_tree(where: str, e: object) -> ExpectedTree:
    if not isinstance(e, dict) or not isinstance(e.get("tree"), str) or not isinstance(e.get("fired"), bool):
        raise FixtureError(f"{where}: expected a mapping with `tree` and `fired` (true or false)")
    unknown = set(e) - {"tree", "fired", "cut_sets", "confidence", "spans"}
    if unknown:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected tree, fired, cut_sets, confidence, spans)")
    cut_sets = None
    if "cut_sets" in e:
        raw = e["cut_sets"]
        if not isinstance(raw, list) or not all(isinstance(cs, list) and all(isinstance(x, str) for x in cs) for cs in raw):
            raise FixtureError(f"{where}.cut_sets: expected a list of lists of event ids, e.g. [[pool_exhausted]]")
        cut_sets = tuple(frozenset(cs) for cs in raw)
    confidence = e.get("confidence")
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))):
        raise FixtureError(f"{where}.confidence: expected a number between 0 and 1")
    spans = e.get("spans", [])
    if not isinstance(spans, list):
        raise FixtureError(f"{where}.spans: expected a list of span names or mappings")
    matchers = tuple(_matcher(f"{where}.spans[{j}]", s) for j, s in enumerate(spans))
    return ExpectedTree(e["tree"], e["fired"], cut_sets, None if confidence is None else float(confidence), matchers)


def _matcher(where: str, span: object) -> SpanMatcher:
    if isinstance(span, str):
        return SpanMatcher(name=span)
    if isinstance(span, dict) and span and set(span) <= {"id", "name", "service"}:
        return SpanMatcher(str(span.get("id", "")), str(span.get("name", "")), str(span.get("service", "")))
    raise FixtureError(f"{where}: expected a span name, or a mapping with id, name and/or service")


def _expected(where: str, e: object) -> ExpectedFinding:
    if not isinstance(e, dict) or not isinstance(e.get("rule"), str):
        raise FixtureError(f"{where}: expected a mapping with `rule` and `span`")
    unknown = set(e) - {"rule", "span", "message", "explains"}
    if unknown:
        raise FixtureError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected rule, span, message, explains)")
    explains = e.get("explains")
    if explains is not None and not isinstance(explains, list):
        raise FixtureError(f"{where}.explains: expected a list of span names or mappings ([] = explains nothing)")
    matchers = None if explains is None else tuple(_matcher(f"{where}.explains[{j}]", s) for j, s in enumerate(explains))
    return ExpectedFinding(e["rule"], _matcher(f"{where}.span", e.get("span")), str(e.get("message", "")), matchers)


# ---- comparing ------------------------------------------------------------------


class TreeOutcomeLike(Protocol):
    tree_id: str
    fired: bool
    confidence: float
    cut_sets: tuple[tuple[str, ...], ...]
    spans: tuple[tuple[bytes, tuple[str, ...], str], ...]


def compare(case: FixtureCase, spans: Sequence[FixtureSpan], findings: Iterable[FindingLike],
            trees: Iterable[TreeOutcomeLike] = ()) -> CaseResult:
    """Expected vs actual findings of the rules under test, and what the
    trees under test concluded.

    Each expectation consumes one matching finding; findings of rules not
    under test are ignored; every other finding left over is unexpected.  A
    tree case without ``expect`` does not look at findings."""
    by_id = {s.span_id: s for s in spans}
    tree_problems = tuple(_compare_trees(case.trees, by_id, list(trees)))
    if not case.checks_findings:
        return CaseResult(case, (), (), (), tuple(spans), tree_problems)
    under_test = set(case.rules) or None
    actual = [f for f in findings if under_test is None or f.rule_id in under_test]
    missing: list[ExpectedFinding] = []
    wrong: list[tuple[ExpectedFinding, FindingLike]] = []
    for e in case.expect:
        hits = [f for f in actual if f.rule_id == e.rule and f.span_id in by_id and e.span.matches(by_id[f.span_id])]
        if not hits:
            missing.append(e)
            continue
        good = [f for f in hits if e.message in f.message and e.explains_match(f, by_id)]
        if good:
            actual.remove(good[0])
        else:
            wrong.append((e, hits[0]))
            actual.remove(hits[0])
    return CaseResult(case, tuple(missing), tuple(actual), tuple(wrong), tuple(spans), tree_problems)


def _compare_trees(expected: Sequence[ExpectedTree], by_id: dict[bytes, FixtureSpan],
                   outcomes: list[TreeOutcomeLike]) -> Iterable[str]:
    for e in expected:
        got = next((o for o in outcomes if o.tree_id == e.tree), None)
        fired = got is not None and got.fired
        if fired != e.fired:
            why = "" if got is None else f" (confidence {got.confidence:.4g}, cut sets {_sets(got.cut_sets)})"
            yield f"tree {e.tree}: expected {'to fire' if e.fired else 'not to fire'}, it {'fired' if fired else 'did not'}{why}"
            continue
        confidence = got.confidence if got is not None else 0.0
        if e.confidence is not None and abs(confidence - e.confidence) > CONFIDENCE_TOLERANCE:
            yield f"tree {e.tree}: confidence {confidence:.4g}, expected {e.confidence:.4g}"
        actual_sets = {frozenset(cs) for cs in got.cut_sets} if got is not None else set()
        if e.cut_sets is not None and actual_sets != set(e.cut_sets):
            yield f"tree {e.tree}: cut sets {_sets(got.cut_sets if got else ())}, expected {_sets(e.cut_sets)}"
        blamed = [by_id[s] for s, _, _ in (got.spans if got is not None else ()) if s in by_id]
        for m in e.spans:
            if not any(m.matches(s) for s in blamed):
                yield f"tree {e.tree}: no blamed span matches {m.describe()} (blamed: {', '.join(s.name for s in blamed) or 'none'})"


def _sets(cut_sets: Iterable[Iterable[str]]) -> str:
    return "[" + ", ".join("{" + ", ".join(sorted(cs)) + "}" for cs in cut_sets) + "]"
