"""How often each rule and fault tree fires on fault-free traffic (``faulttrace check --baseline``,
and the ``healthy`` ceilings of ``faulttrace test``); the same command's W022 (a rule reading an
attribute as a type the traffic never sends) is ``processor.tools.valuetypes``'.

The traces go through the offline analysis ``faulttrace explain`` runs
(``processor.tools.offline``), with the baseline the localizer learns from
the same traces, so that rules reading ``s.baseline_*`` compare with what is
usual there (the localizer's own candidates are not computed: only rules and
trees are measured).  A
rule firing on more than ``max_rate`` of the traces is a false alarm in the
making: warning W020 (a tree: W021) at its id.  A rule a fault tree reads (a
basic event, a top rule) is reported but not flagged: a tree is where weak
signs belong, and the tree itself is measured.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from dsl import Diagnostic, RuleError, RuleSet, load_rules
from dsl.diagnostics import render_all, sort_key, to_json
from processor.analysis.prevalence import PRIOR_RATE
from processor.analysis.verdict import BatchVerdict
from processor.otlp.tracefile import TraceFileError, read_requests
from processor.tools.offline import analyze
from processor.tools.valuetypes import ValueTypes, id_span
from processor.tools.valuetypes import diagnostics as type_diagnostics

# The ceiling is also the healthy firing rate the running analysis presumes of a source it has not
# measured (``processor.analysis.prevalence``): one number for what a shipped rule may cost.
DEFAULT_MAX_RATE = PRIOR_RATE
RULE_ABOVE_CEILING = "W020"
TREE_ABOVE_CEILING = "W021"


@dataclass(frozen=True, slots=True)
class Rate:
    """One rule's (or tree's) firing on the baseline: traces and spans it fired on."""

    id: str
    kind: str               # "rule" | "tree"
    layer: str
    traces: int
    spans: int
    of_traces: int
    of_spans: int
    trees: tuple[str, ...] = ()  # for a rule: the trees that read it

    @property
    def trace_rate(self) -> float:
        return self.traces / self.of_traces if self.of_traces else 0.0

    @property
    def span_rate(self) -> float:
        return self.spans / self.of_spans if self.of_spans else 0.0

    def flagged(self, max_rate: float) -> bool:
        """Above the ceiling, and not a rule some tree weighs with other evidence."""
        return self.trace_rate > max_rate and not self.trees


@dataclass(frozen=True, slots=True)
class FiringRates:
    traces: int
    spans: int
    rules: tuple[Rate, ...]
    trees: tuple[Rate, ...] = field(default=())

    def get(self, rule_or_tree: str) -> Rate | None:
        return next((r for r in (*self.rules, *self.trees) if r.id == rule_or_tree), None)


class _LearnedBaseline:
    """The localizer's baseline learned from ``seed``, for the rules' ``s.baseline_*``; no candidates of its own."""

    def __init__(self, seed: str | Path) -> None:
        from processor.localizer import LocalizerAnalyzer

        self._localizer = LocalizerAnalyzer(seed)

    def projection(self) -> frozenset:
        return frozenset()

    def baseline_table(self):  # noqa: ANN201 - the localizer's pyarrow table
        return self._localizer.baseline_table()

    def analyze(self, conn: object, table: str) -> BatchVerdict:
        return BatchVerdict()

    def close(self) -> None:
        self._localizer.close()


def firing_rates(requests: Iterable[ExportTraceServiceRequest], rules: RuleSet,
                 seed: str | Path | None = None) -> FiringRates:
    """Per rule and per tree of ``rules``, the traces and spans of ``requests`` it fires on; ``s.baseline_*``
    read the baseline the localizer learns from the file ``seed`` (None: they are nil)."""
    baseline = _LearnedBaseline(seed) if seed is not None else None
    try:
        result = analyze(requests, rules, baseline)
    finally:
        if baseline is not None:
            baseline.close()
    n_traces = len(set(result.spans.column("trace_id").to_pylist())) if result.spans.num_rows else 0
    n_spans = result.spans.num_rows
    used_by: dict[str, list[str]] = {}
    for plan in rules.trees:
        for rule_id in {b.rule for b in plan.tree.basics} | ({plan.tree.top_rule} - {""}):
            used_by.setdefault(rule_id, []).append(plan.id)
    rule_rates = []
    for rule in rules.rules:
        found = [f for f in result.findings if f.rule_id == rule.id]
        rule_rates.append(Rate(rule.id, "rule", rule.meta.layer, len({f.trace_id for f in found}),
                               len({(f.trace_id, f.span_id) for f in found}), n_traces, n_spans,
                               tuple(sorted(used_by.get(rule.id, ())))))
    tree_rates = []
    for plan in rules.trees:
        fired = [t for t in result.trees if t.tree_id == plan.id and t.fired]
        tree_rates.append(Rate(plan.id, "tree", plan.tree.meta.layer, len({t.trace_id for t in fired}),
                               len({(t.trace_id, s) for t in fired for s, _, _ in t.spans}), n_traces, n_spans))
    return FiringRates(n_traces, n_spans, tuple(rule_rates), tuple(tree_rates))


# ---- diagnostics ------------------------------------------------------------------------------


def diagnostics(rates: FiringRates, rules: RuleSet, max_rate: float) -> list[Diagnostic]:
    """W020/W021 at the id of each rule or tree above ``max_rate`` (rules a tree reads are exempt)."""
    out = []
    for r in (*rates.rules, *rates.trees):
        if not r.flagged(max_rate):
            continue
        if r.kind == "rule":
            code, span = RULE_ABOVE_CEILING, rules.checked[r.id].span
            hint = ("raise its specificity (what only a fault shows: an error that follows, a count, an order), or "
                    "make it a basic event of a fault tree (`basic x = rule " + r.id + "`): a weak sign belongs in a tree")
        else:
            code, span = TREE_ABOVE_CEILING, rules.tree(r.id).tree.span
            hint = "require more of its cause (`and`, `atleast k of {…}`) or narrow its top event"
        message = (f"{r.kind} `{r.id}` fires on {_pct(r.trace_rate)} of fault-free traces ({r.traces} of "
                   f"{r.of_traces}), above the ceiling of {_pct(max_rate)}")
        out.append(Diagnostic(code, message, id_span(span, r.id, rules.sources), (hint,),
                              label=f"{r.traces} of {r.of_traces} healthy traces"))
    return sorted(out, key=sort_key)


def _pct(rate: float) -> str:
    return f"{100 * rate:.1f}%" if rate >= 0.001 or rate == 0 else f"{100 * rate:.2f}%"


# ---- the command ----------------------------------------------------------------------------


def cli_check_baseline(paths: Sequence[str], baseline: str, fmt: str, max_rate: float, out: TextIO) -> int:
    """``faulttrace check --baseline FILE PATH…``: compile diagnostics, the firing table, W020/W021;
    exit 1 on a compile error or a file that cannot be read (warnings never fail the check), 2 on a bad ceiling."""
    if not 0 <= max_rate <= 1:
        out.write(f"error: --max-rate {max_rate}: a share of traces between 0 and 1 (0.01 = 1%)\n")
        return 2
    try:
        rules = load_rules(paths)
    except RuleError as err:
        out.write((to_json(err.diagnostics) if fmt == "json" else render_all(err.diagnostics, err.sources)) + "\n")
        return 1
    try:
        requests = read_requests(baseline)
        rates = firing_rates(requests, rules, baseline)
    except (TraceFileError, OSError, ValueError) as err:
        out.write(f"error: --baseline: {err}\n")
        return 1
    warnings = [*rules.warnings, *diagnostics(rates, rules, max_rate),
                *type_diagnostics(rules, ValueTypes.of(requests))]
    if fmt == "json":
        out.write(json.dumps(to_document(rates, baseline, max_rate, warnings), indent=2) + "\n")
    else:
        write_text(rates, baseline, max_rate, warnings, rules.sources, out)
    return 0


def to_document(rates: FiringRates, baseline: str, max_rate: float,
                warnings: Sequence[Diagnostic]) -> dict[str, Any]:
    def row(r: Rate) -> dict[str, Any]:
        return {"id": r.id, "layer": r.layer, "traces": r.traces, "spans": r.spans,
                "trace_rate": round(r.trace_rate, 6), "span_rate": round(r.span_rate, 6),
                **({"trees": list(r.trees)} if r.kind == "rule" else {}), "flagged": r.flagged(max_rate)}

    return {"baseline": baseline, "traces": rates.traces, "spans": rates.spans, "max_rate": max_rate,
            "rules": [row(r) for r in rates.rules], "trees": [row(r) for r in rates.trees],
            "diagnostics": json.loads(to_json(warnings))}


def write_text(rates: FiringRates, baseline: str, max_rate: float, warnings: Sequence[Diagnostic],
               sources: dict[str, str], out: TextIO) -> None:
    """The rules and trees that fired, highest trace rate first (ties by id), those that never did, then the
    diagnostics."""
    out.write(f"baseline {baseline}: {rates.traces} traces, {rates.spans} spans; "
              f"ceiling {_pct(max_rate)} of traces\n")
    every = sorted((*rates.rules, *rates.trees), key=lambda r: (-r.trace_rate, r.kind, r.id))
    rows = [r for r in every if r.traces]
    width = max((len(r.id) for r in rows), default=6) + 5
    if rows:
        out.write(f"{'rule / tree':<{width}}  {'traces':>14}  {'spans':>14}\n")
    else:
        out.write("no rule or tree fired on these traces\n")
    for r in rows:
        mark = "  above the ceiling" if r.flagged(max_rate) else (
            f"  read by {', '.join(r.trees)}" if r.trees and r.traces else "")
        name = r.id if r.kind == "rule" else f"tree {r.id}"
        out.write(f"{name:<{width}}  {r.traces:>5} {'(' + _pct(r.trace_rate) + ')':>8}  "
                  f"{r.spans:>5} {'(' + _pct(r.span_rate) + ')':>8}{mark}\n")
    for kind in ("rule", "tree"):
        quiet = [r.id for r in every if r.kind == kind and not r.traces]
        if quiet:
            out.write("\n" + textwrap.fill(f"{kind}s that never fired ({len(quiet)}): {', '.join(quiet)}", 100,
                                             subsequent_indent="  ", break_on_hyphens=False))
    out.write("\n")
    if warnings:
        out.write("\n" + render_all(list(warnings), sources) + "\n")
    else:
        out.write(f"ok: no rule or tree above {_pct(max_rate)} of fault-free traces\n")
