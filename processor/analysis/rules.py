"""Evaluator: runs the compiled rule set over a batch of released traces.

Rules are SQL over the whole batch (``dsl.RuleSet.evaluate``); this module
groups their findings by blamed span into ranked candidates per trace:
rank by confidence x severity, deeper spans first on ties.  A fault tree
that fired adds its evidence (confidence x severity) to the spans its fired
cut set blames; every tree whose top event is true or unknown is kept on the
trace's verdict.

Causes and symptoms: a finding's ``explains`` spans, and the top-event spans
of a fired tree (explained by the best-ranked span of its fired cut sets),
are explained symptoms (``Symptom``): they leave the ranking while what
explains them is a candidate.  The span facts a
verdict needs (service, name, the trace's root) come from one query over the
batch, not per finding.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import duckdb
import pyarrow as pa

from dsl import AttrRef, Evaluation, Finding, RuleSet, TreeOutcome, no_parent_sql, root_key_sql
from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict, rank_candidates

log = logging.getLogger(__name__)


class RuleAnalyzer:
    """The Analyzer for a RuleSet."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def projection(self) -> frozenset[AttrRef]:
        return self.rules.projection

    def close(self) -> None:
        """Nothing to release: a rule set holds no state between batches."""

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        return self.verdict_of(conn, table, self.rules.evaluate_all(conn, table))

    @staticmethod
    def verdict_of(conn: duckdb.DuckDBPyConnection, table: str, evaluation: Evaluation) -> BatchVerdict:
        """The ranked verdict of an evaluation of ``table``."""
        if not evaluation.findings and not evaluation.trees:
            return BatchVerdict()
        return verdicts(conn, table, evaluation.findings, evaluation.trees)


def verdicts(conn: duckdb.DuckDBPyConnection, table: str, findings: list[Finding],
             trees: list[TreeOutcome] | tuple[TreeOutcome, ...] = ()) -> BatchVerdict:
    """Ranked candidates per trace from rule findings (and fault-tree
    outcomes) over ``table``.  A fired tree adds evidence to each span its
    fired cut set blames, weighted by the tree's confidence x severity, so it
    enters the ranking like a rule."""
    by_span: dict[tuple[bytes, bytes], list[Finding]] = defaultdict(list)
    for f in findings:
        by_span[(f.trace_id, f.span_id)].append(f)
    tree_evidence = _tree_evidence(trees, by_span)
    per_tree_trace: dict[bytes, list[TreeOutcome]] = defaultdict(list)
    for t in trees:
        per_tree_trace[t.trace_id].append(t)
    facts = _span_facts(conn, table, {t for t, _ in by_span} | set(per_tree_trace))
    per_trace: dict[bytes, list[Candidate]] = defaultdict(list)
    for (trace_id, span_id), fs in by_span.items():
        service, name, start, end = facts.spans.get((trace_id, span_id), ("", "", 0, 0))
        evidence = [Evidence(f.rule_id, f.message, f.confidence, f.score, f.layer) for f in fs]
        evidence += tree_evidence.get((trace_id, span_id), [])
        evidence.sort(key=lambda e: (e.kind == "fault_tree", -e.score, e.source))
        per_trace[trace_id].append(Candidate(span_id, service, name, max(f.depth for f in fs), start, end,
                                             tuple(evidence)))
    explaining: dict[bytes, list[Finding]] = defaultdict(list)
    for f in findings:
        if f.explains:
            explaining[f.trace_id].append(f)
    out = {}
    symptoms: dict[bytes, tuple[Symptom, ...]] = {}
    for trace_id in dict.fromkeys([*per_trace, *per_tree_trace]):
        ranked = rank_candidates(per_trace.get(trace_id, ()))
        tree_outcomes = tuple(sorted(per_tree_trace.get(trace_id, ()), key=lambda t: (not t.fired, -t.score, t.tree_id)))
        explained = _symptoms(ranked, explaining.get(trace_id, []), tree_outcomes)
        ranked = _without_explained(ranked, explained)
        kept = {c.span_id for c in ranked}
        if explained:
            symptoms[trace_id] = tuple(s for s in explained.values() if s.span_id not in kept)
        out[trace_id] = TraceVerdict(trace_id, facts.roots.get(trace_id), ranked, tree_outcomes)
    return BatchVerdict(out, {t: s for t, s in symptoms.items() if s})


def _symptoms(ranked: tuple[Candidate, ...], findings: list[Finding],
              trees: tuple[TreeOutcome, ...]) -> dict[bytes, Symptom]:
    """The trace's explained symptoms, one per span: each finding's ``explains``
    spans, and each fired tree's top-event spans, which its best-ranked cause
    span (a span of its fired cut sets) explains.  A span explained several
    times keeps the explanation whose cause ranks best."""
    explained = {span for f in findings for span in f.explains}
    # the best cause: one no rule explains away, then the best ranked
    order = {c.span_id: (c.span_id in explained, c.rank) for c in ranked}
    links: list[tuple[bytes, bytes, str]] = []  # (symptom, cause, reason)
    for f in findings:
        links += [(span, f.span_id, f"rule {f.rule_id}: {f.message}") for span in f.explains]
    for t in trees:
        causes = sorted({s for s, _, _ in t.spans if s in order}, key=order.__getitem__)
        if not t.fired or not causes:
            continue
        cut = next(cs for s, cs, _ in t.spans if s == causes[0])
        reason = f"fault tree {t.tree_id} fired: cut set {{{', '.join(cut)}}} explains its top event"
        links += [(span, causes[0], reason) for span in t.top_spans if span not in causes]
    out: dict[bytes, Symptom] = {}
    for span, cause, reason in sorted(links, key=lambda x: order.get(x[1], (True, len(order) + 1))):
        if span != cause and span not in out:
            out[span] = Symptom(span, cause, reason, explained=True)
    return out


def _without_explained(ranked: tuple[Candidate, ...], symptoms: dict[bytes, Symptom]) -> tuple[Candidate, ...]:
    """The candidates no other candidate explains, ranked again.  A candidate
    leaves when a candidate explains it (directly or down a chain); where
    explanations go round in a circle (a explains b, b explains a), the
    best-ranked candidate of the circle stays, so a trace always keeps a cause."""
    blamed = {c.span_id for c in ranked}
    cause_of = {s.span_id: s.caused_by for s in symptoms.values() if s.span_id in blamed and s.caused_by in blamed}
    kept = [c for c in ranked if c.span_id not in cause_of]
    while True:
        reached = {c.span_id for c in kept}
        frontier = list(reached)
        while frontier:  # everything the kept candidates explain, down the chains
            cause = frontier.pop()
            for span, by in cause_of.items():
                if by == cause and span not in reached:
                    reached.add(span)
                    frontier.append(span)
        circle = [c for c in ranked if c.span_id not in reached]
        if not circle:
            return rank_candidates(kept)
        kept.append(circle[0])  # the best-ranked candidate of a circle no kept candidate explains
        cause_of.pop(circle[0].span_id)


def _tree_evidence(trees: list[TreeOutcome] | tuple[TreeOutcome, ...],
                   by_span: dict[tuple[bytes, bytes], list[Finding]]) -> dict[tuple[bytes, bytes], list[Evidence]]:
    """Evidence of the fired trees, per blamed span (one per tree and span)."""
    out: dict[tuple[bytes, bytes], list[Evidence]] = defaultdict(list)
    for t in trees:
        if not t.fired:
            continue
        for span_id, cut_set, rule in t.spans:
            key = (t.trace_id, span_id)
            rule_layer = next((f.layer for f in by_span.get(key, ()) if f.rule_id == rule), "")
            message = f"fault tree {t.tree_id} ({t.title}) fired: cut set {{{', '.join(cut_set)}}}"
            out[key].append(Evidence(t.tree_id, message, t.confidence, t.score, t.layer or rule_layer,
                                     "fault_tree", cut_set))
    return out


class _Facts:
    def __init__(self) -> None:
        self.spans: dict[tuple[bytes, bytes], tuple[str, str, int, int]] = {}
        self.roots: dict[bytes, bytes] = {}


def _span_facts(conn: duckdb.DuckDBPyConnection, table: str, trace_ids: set[bytes]) -> _Facts:
    """Service/name/times of every span of the traces with findings, and each trace's root span
    (``dsl.root_key_sql``, as the rules' ``trace.root_service`` sees it)."""
    facts = _Facts()
    root = root_key_sql("s", no_parent=no_parent_sql("s.parent_span_id"), parent_found="p.span_id IS NOT NULL")
    conn.register("verdict_traces", pa.table({"trace_id": pa.array(list(trace_ids), pa.binary())}))
    try:
        rows = conn.execute(f"""
            SELECT s.trace_id, s.span_id, s.service, s.name, s.start_ns, s.end_ns,
                   arg_min(s.span_id, {root}) OVER (PARTITION BY s.trace_id) AS root
            FROM {table} s
            SEMI JOIN verdict_traces v ON v.trace_id = s.trace_id
            LEFT JOIN {table} p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
        """).fetchall()
    finally:
        conn.unregister("verdict_traces")
    for trace_id, span_id, service, name, start, end, root_id in rows:
        facts.spans[(trace_id, span_id)] = (service, name, start, end)
        facts.roots[trace_id] = root_id
    return facts
