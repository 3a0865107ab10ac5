"""Several analyzers as one: rules (with fault trees) and the localizer over the same batch.

Each analyzer reads the batch on its own; their verdicts merge per trace: a
span blamed by several keeps one candidate with all the evidence, and the
trace's candidates are ranked again.  Localizer evidence is statistical, rule
evidence is a team's knowledge, so a localizer score is put on the rules'
scale as confidence x the weight of a *medium* severity (3 of 5): a rule that
fires with high severity and reasonable confidence outranks a deviation, a
weak rule does not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import duckdb

from dsl import BASELINE_TABLE, AttrRef
from processor.analysis import Analyzer, BatchVerdict, Candidate, Evidence, TraceVerdict

log = logging.getLogger(__name__)

STATISTICAL_WEIGHT = 3.0  # the rule-severity weight statistical evidence is scored at (medium)


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
    """One verdict from several over the same batch."""
    traces: dict[bytes, TraceVerdict] = {}
    for verdict in verdicts:
        for trace_id, v in verdict.traces.items():
            traces[trace_id] = _merge_trace(traces[trace_id], v) if trace_id in traces else v
    ranked = {t: dataclasses.replace(v, candidates=_rank(v.candidates)) for t, v in traces.items()}
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


def _rank(candidates: tuple[Candidate, ...]) -> tuple[Candidate, ...]:
    ordered = sorted(candidates, key=lambda c: (-c.score, -c.depth, c.span_id))
    return tuple(dataclasses.replace(c, rank=i) for i, c in enumerate(ordered, 1))


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
        return merge(verdicts) if len(verdicts) != 1 else verdicts[0]

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
