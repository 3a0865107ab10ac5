"""Several analyzers as one: rules (with fault trees) and the localizer over the same batch.

Each analyzer reads the batch on its own; their verdicts merge per trace: a
span blamed by several keeps one candidate with all the evidence, and the
trace's candidates are ranked again.  Localizer evidence is statistical, rule
evidence is a team's knowledge, so a localizer score is put on the rules'
scale as confidence x the weight of a *medium* severity (3 of 5): a rule that
fires with high severity and reasonable confidence outranks a deviation, a
weak rule does not.

Ranking weighs evidence by consequence (severity); a candidate's
*confidence* is the probability that it is the trace's root cause
(``calibrate``), in two steps:

1. *support* — what the span's own evidence says.  Each piece of evidence
   carries a probability: a rule's confidence is how often its finding is
   right, the localizer's a probability of causation (``localizer.blame``).
   Evidence of one family is not independent (rules of one library overlap, a
   fault tree is built from the rules on the span, the localizer's sources
   read the same spans), so a family counts with its most confident piece;
   the families — a team's knowledge and the statistics of the traffic — are
   independent, and combine by noisy-OR.
2. *competition* — a trace has one root cause, so its candidates are
   exclusive explanations.  Each candidate's support, as odds against "the
   root cause is none of these", is its likelihood ratio; normalising over
   the candidates and that alternative, ``p_i = o_i / (1 + sum_j o_j)``.  A
   lone candidate keeps its support; a clear winner keeps most of it; a
   near tie splits it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import duckdb

from dsl import BASELINE_TABLE, AttrRef
from processor.analysis import Analyzer, BatchVerdict, Candidate, Evidence, TraceVerdict, rank_candidates

log = logging.getLogger(__name__)

STATISTICAL_WEIGHT = 3.0  # the rule-severity weight statistical evidence is scored at (medium)
MAX_SUPPORT = 0.999       # support is capped below certainty so its odds stay finite


def support(c: Candidate) -> float:
    """The probability that ``c`` is a root cause on its own evidence: the most confident piece
    of each family (rules, with a fault tree only when no rule blames the span; the
    localizer), the families combined by noisy-OR."""
    rules = [e.confidence for e in c.evidence if e.kind == "rule"]
    trees = [e.confidence for e in c.evidence if e.kind == "fault_tree"]
    stats = [e.confidence for e in c.evidence if e.kind == "localizer"]
    miss = 1.0
    for family in (rules or trees, stats):
        if family:
            miss *= 1.0 - min(1.0, max(0.0, max(family)))
    return 1.0 - miss


def compete(supports: Sequence[float]) -> list[float]:
    """Probabilities of exclusive candidates from their supports: ``o_i / (1 + sum_j o_j)``
    with ``o = s / (1 - s)`` — a lone candidate keeps its support, rivals share it."""
    odds = [min(s, MAX_SUPPORT) / (1.0 - min(s, MAX_SUPPORT)) for s in supports]
    total = 1.0 + sum(odds)
    return [o / total for o in odds]


def calibrate_trace(v: TraceVerdict) -> TraceVerdict:
    """The trace's candidates, in the same order, with calibrated confidences."""
    probabilities = compete([support(c) for c in v.candidates])
    cands = tuple(dataclasses.replace(c, probability=round(p, 6)) for c, p in zip(v.candidates, probabilities))
    return dataclasses.replace(v, candidates=cands)


def calibrate(verdict: BatchVerdict) -> BatchVerdict:
    """A verdict whose candidates' confidences are calibrated (``calibrate_trace``)."""
    return dataclasses.replace(verdict, traces={t: calibrate_trace(v) for t, v in verdict.traces.items()})


def on_rule_scale(verdict: BatchVerdict) -> BatchVerdict:
    """A statistical analyzer's verdict with evidence scores as confidence x
    STATISTICAL_WEIGHT, marked ``kind="localizer"`` so readers can tell it from rules."""
    def rescale(e: Evidence) -> Evidence:
        return dataclasses.replace(e, score=round(e.confidence * STATISTICAL_WEIGHT, 6), kind="localizer")
    traces = {t: dataclasses.replace(v, candidates=tuple(
        dataclasses.replace(c, evidence=tuple(rescale(e) for e in c.evidence)) for c in v.candidates))
        for t, v in verdict.traces.items()}
    return dataclasses.replace(verdict, traces=traces)


def merge(verdicts: Sequence[BatchVerdict]) -> BatchVerdict:
    """One verdict from several over the same batch, ranked and calibrated."""
    traces: dict[bytes, TraceVerdict] = {}
    for verdict in verdicts:
        for trace_id, v in verdict.traces.items():
            traces[trace_id] = _merge_trace(traces[trace_id], v) if trace_id in traces else v
    ranked = {t: calibrate_trace(dataclasses.replace(v, candidates=rank_candidates(v.candidates))) for t, v in traces.items()}
    symptoms: dict[bytes, tuple[bytes, ...]] = {}
    for verdict in verdicts:
        for trace_id, spans in verdict.symptoms.items():
            blamed = {c.span_id for c in ranked[trace_id].candidates} if trace_id in ranked else set()
            merged = dict.fromkeys((*symptoms.get(trace_id, ()), *spans))
            symptoms[trace_id] = tuple(s for s in merged if s not in blamed)
    services = next((v.services for v in verdicts if v.services), ())
    return BatchVerdict(ranked, {t: s for t, s in symptoms.items() if s}, services)


def _merge_trace(a: TraceVerdict, b: TraceVerdict) -> TraceVerdict:
    by_span = {c.span_id: c for c in a.candidates}
    for c in b.candidates:
        if c.span_id in by_span:
            first = by_span[c.span_id]
            by_span[c.span_id] = dataclasses.replace(first, evidence=first.evidence + c.evidence,
                                                     depth=max(first.depth, c.depth))
        else:
            by_span[c.span_id] = c
    return TraceVerdict(a.trace_id, a.root_span_id or b.root_span_id, tuple(by_span.values()),
                        a.fault_trees + b.fault_trees)


def register_baseline(conn: duckdb.DuckDBPyConnection, analyzers: Sequence[Analyzer]) -> bool:
    """Register the first learned baseline among ``analyzers`` (one with ``baseline_table()``,
    i.e. the localizer) as ``dsl.BASELINE_TABLE`` for the rules' baseline intrinsics;
    whether one was registered (the caller unregisters it)."""
    for analyzer in analyzers:
        baseline_table = getattr(analyzer, "baseline_table", None)
        if baseline_table is None:
            continue
        try:
            conn.register(BASELINE_TABLE, baseline_table())
        except Exception:  # without it the baseline intrinsics are nil; the rules still run
            log.exception("registering the baseline of %s failed", type(analyzer).__name__)
            return False
        return True
    return False


class CombinedAnalyzer:
    """Runs each analyzer over the batch and merges their verdicts.

    ``statistical`` analyzers (the localizer) get their evidence put on the
    rules' scale first; one analyzer failing costs only its own evidence.
    """

    def __init__(self, analyzers: Sequence[Analyzer], statistical: Sequence[Analyzer] = ()) -> None:
        self.analyzers = tuple(analyzers)
        self.statistical = tuple(statistical)

    def projection(self) -> frozenset[AttrRef]:
        return frozenset().union(*(a.projection() for a in (*self.analyzers, *self.statistical)))

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        verdicts = []
        # rules read the baseline learned so far (before the localizer learns this batch)
        registered = register_baseline(conn, self.statistical) if self.analyzers else False
        try:
            for analyzer in self.analyzers:
                self._run(analyzer, conn, table, verdicts, False)
        finally:
            if registered:
                conn.unregister(BASELINE_TABLE)
        for analyzer in self.statistical:
            self._run(analyzer, conn, table, verdicts, True)
        # one verdict keeps its analyzer's ranking; either way confidences are calibrated
        return merge(verdicts) if len(verdicts) != 1 else calibrate(verdicts[0])

    @staticmethod
    def _run(analyzer: Analyzer, conn: duckdb.DuckDBPyConnection, table: str, verdicts: list[BatchVerdict],
             statistical: bool) -> None:
        try:
            verdict = analyzer.analyze(conn, table)
        except Exception:  # component boundary: the other analyzers' evidence still counts
            log.exception("%s failed on a batch", type(analyzer).__name__)
            return
        verdicts.append(on_rule_scale(verdict) if statistical else verdict)

    def close(self) -> None:
        for analyzer in (*self.analyzers, *self.statistical):
            close = getattr(analyzer, "close", None)
            if close is not None:
                close()
