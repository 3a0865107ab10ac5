"""Several analyzers as one: rules (with fault trees) and the localizer over the same batch.

Each analyzer reads the batch on its own; their verdicts merge per trace: a
span blamed by several keeps one candidate with all the evidence, and the
trace's candidates are ranked again.  Localizer evidence is statistical, rule
evidence is a team's knowledge, so a localizer score is put on the rules'
scale as confidence x the weight of a *medium* severity (3 of 5): a rule that
fires with high severity and reasonable confidence outranks a deviation, a
weak rule does not.

In a trace that did not fail, the localizer's evidence counts only as far as
the trace's own pieces carry it (``trace_local``): an error origin, or a
delay where the window finds its service abnormal across traces; the
window's support never raises a confidence there.  Each finding's confidence is then weighed by
how often its source fires on such traces (``processor.analysis.prevalence``),
and those firings are learned; a candidate's confidence is then calibrated
over its trace (``processor.analysis.calibration``), the attempts of one call
(``repeated_calls``) as one explanation.  Each trace verdict
of a trace that did not fail carries the floor below which its root cause is
not written (``min_confidence``: the annotator records the findings only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from dsl import BASELINE_TABLE, AttrRef
from processor.analysis.calibration import calibrate_trace, support
from processor.analysis.prevalence import HealthyFiring, fired, outcomes
from processor.analysis.protocols import Analyzer
from processor.analysis.verdict import (
    BatchVerdict,
    Candidate,
    Evidence,
    Symptom,
    TraceVerdict,
    follow_cause,
    rank_candidates,
)
from processor.localizer.baseline import unexcluded_error_rate

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


def trace_local(verdict: BatchVerdict, failed: frozenset[bytes], ops: pa.Table | None = None) -> BatchVerdict:
    """``verdict`` where, in the traces that did not fail, the localizer's evidence counts only as far
    as the trace's own pieces carry it: an error origin (or the value that explains one), and a delay
    only where the window shows its service abnormal too.  Every other piece keeps its message and
    ranking score, its confidence capped there (0 without such a piece).

    - The window (``localizer.window``) says where a batch's fault most likely originates, given
      that the batch holds one; which traces share a batch is an accident of timing (release
      interval, traffic, request sizes), so its support never raises a confidence here.
    - A delay (``localizer.latency``, a value that explains a delay) the root absorbed — it ended
      within its usual time — caused no failure by itself.  It counts where the localizer says it
      is one (``Evidence.failure == "delay"``, ``localizer.blame._delay``): beyond anything normal
      traffic has shown, or with the window's own support for its service more likely than not and
      another trace of the batch slow there too (``blame._corroborate``);
      slower than the p99 but within the baseline's range (the outliers every heavy-tailed
      operation has: a handful of 90x-p99 calls in nezha-ob's healthy traces), it does not.  The
      window only gates: the confidence stays the delay's own.
    - An attribution or the span's own improbable values only qualify the pieces above.
    - An error origin's ``1 - baseline error rate`` becomes ``1 -`` the highest rate its operation's
      observations (``ops``: ``service``, ``name``, ``n``, ``err_rate``, the baseline before the
      batch) do not rule out (``unexcluded_error_rate``): an operation seen a few times, or never,
      cannot say its errors are rare.  Without ``ops`` (no learned baseline) it stays."""
    seen: dict[tuple[str, str], tuple[float, float]] = {}
    if ops is not None and ops.num_rows:
        columns = (ops.column(c).to_pylist() for c in ("service", "name", "n", "err_rate"))
        seen = {(s, name): (float(n), float(e or 0.0)) for s, name, n, e in zip(*columns)}

    def known(c: Candidate, e: Evidence) -> float:
        """An error piece's confidence with the error rate its operation's baseline cannot exclude."""
        if ops is None:  # no learned baseline to ask (an analysis without a history)
            return e.confidence
        n, rate = seen.get((c.service, c.name), (0.0, 0.0))
        return e.confidence * (1.0 - unexcluded_error_rate(n, rate)) / (1.0 - rate) if rate < 1.0 else 0.0

    def local(c: Candidate) -> Candidate:
        if not any(e.kind == "localizer" for e in c.evidence):
            return c
        errors = {i: known(c, e) for i, e in enumerate(c.evidence) if e.kind == "localizer" and e.failure == "error"}
        delays = (e.confidence for e in c.evidence if e.kind == "localizer" and e.failure == "delay")
        cap = max([*errors.values(), *delays], default=0.0)
        return dataclasses.replace(c, evidence=tuple(
            e.discounted(round(errors[i] if i in errors else min(e.confidence, cap), 6))
            if e.kind == "localizer" else e for i, e in enumerate(c.evidence)))

    return dataclasses.replace(verdict, traces={
        t: v if t in failed else dataclasses.replace(v, candidates=tuple(local(c) for c in v.candidates))
        for t, v in verdict.traces.items()})


Call = tuple[bytes | None, str, str]  # an attempted call: the parent span, the service and operation


def repeated_calls(conn: duckdb.DuckDBPyConnection, table: str,
                   verdicts: Sequence[BatchVerdict]) -> dict[bytes, dict[bytes, Call]]:
    """Per trace, the candidates (of any of ``verdicts``) that are attempts of a call another
    candidate attempts too — one operation of one service, called from one parent span (a retry
    loop, a call repeated) — each with that call (``calibration.calibrate_trace``).  Only spans
    sharing a service and operation with another candidate of their trace are looked up."""
    ops: dict[tuple[bytes, str, str], set[bytes]] = {}
    for verdict in verdicts:
        for trace_id, v in verdict.traces.items():
            for c in v.candidates:
                ops.setdefault((trace_id, c.service, c.name), set()).add(c.span_id)
    wanted = [(t, span, service, name) for (t, service, name), spans in ops.items() if len(spans) > 1
              for span in sorted(spans)]
    if not wanted:  # the common batch: no operation blamed twice in a trace, no query
        return {}
    keys = pa.table({"trace_id": pa.array([w[0] for w in wanted], pa.binary()),
                     "span_id": pa.array([w[1] for w in wanted], pa.binary())})
    conn.register("_repeated_candidates", keys)
    try:
        rows = conn.execute(f"""
            SELECT k.trace_id, k.span_id, any_value(s.parent_span_id)
            FROM _repeated_candidates k JOIN {table} s ON s.trace_id = k.trace_id AND s.span_id = k.span_id
            GROUP BY k.trace_id, k.span_id""").fetchall()
    finally:
        conn.unregister("_repeated_candidates")
    parents = {(t, span): parent for t, span, parent in rows}
    calls: dict[bytes, dict[bytes, Call]] = {}
    for t, span, service, name in wanted:
        if (t, span) in parents:
            calls.setdefault(t, {})[span] = (parents[(t, span)], service, name)
    return calls


def merge(verdicts: Sequence[BatchVerdict], rerank: bool = True,
          calls: Mapping[bytes, Mapping[bytes, Call]] | None = None) -> BatchVerdict:
    """One verdict from several over the same batch, ranked and calibrated; candidates another
    one explains leave the ranking, and symptoms name the cause their chain leads to.
    ``rerank=False`` keeps the candidates' order (one analyzer's own ranking); ``calls``: per
    trace, the candidates that attempt one call (``repeated_calls``), calibrated as one."""
    traces: dict[bytes, TraceVerdict] = {}
    for verdict in verdicts:
        for trace_id, v in verdict.traces.items():
            traces[trace_id] = _merge_trace(traces[trace_id], v) if trace_id in traces else v
    found: dict[bytes, dict[bytes, Symptom]] = {}
    for verdict in verdicts:
        for trace_id, spans in verdict.symptoms.items():
            have = found.setdefault(trace_id, {})
            for s in spans:
                # an explanation (knowledge, lift) says more than inheritance up the parent chain
                if s.span_id not in have or (s.explained and not have[s.span_id].explained):
                    have[s.span_id] = s
    ranked: dict[bytes, TraceVerdict] = {}
    symptoms: dict[bytes, tuple[Symptom, ...]] = {}
    for trace_id, v in traces.items():
        explained = _explained(v, found.get(trace_id, {}))
        candidates = tuple(c for c in v.candidates if c.span_id not in explained)
        ordered = rank_candidates(candidates, support) if rerank else tuple(
            dataclasses.replace(c, rank=i) for i, c in enumerate(candidates, 1))
        ranked[trace_id] = calibrate_trace(dataclasses.replace(v, candidates=ordered),
                                           (calls or {}).get(trace_id))
    for trace_id, have in found.items():
        blamed = {c.span_id for c in ranked[trace_id].candidates} if trace_id in ranked else set()
        kept = tuple(_to_cause(s, have, blamed) for s in have.values() if s.span_id not in blamed)
        if kept:
            symptoms[trace_id] = kept
    services = next((v.services for v in verdicts if v.services), ())
    return BatchVerdict(ranked, symptoms, services)


def _to_cause(s: Symptom, symptoms: dict[bytes, Symptom], blamed: set[bytes]) -> Symptom:
    """``s`` with ``caused_by`` followed through other symptoms to the cause they lead to
    (a root span explained by a parse error that a truncated chat explains names the chat):
    ``rca.caused_by`` is one link from what the user saw to the cause, not to the next symptom."""
    cause = follow_cause(s, symptoms, blamed)
    if cause is None or cause == s.caused_by:  # None: a circle of symptoms, the link stays as given
        return s
    return dataclasses.replace(s, caused_by=cause)


def _explained(v: TraceVerdict, symptoms: dict[bytes, Symptom]) -> set[bytes]:
    """Candidates another candidate explains: they only followed from it, so they leave the
    ranking (an explanation whose cause blames nothing is ignored, so a trace keeps a cause)."""
    blamed = {c.span_id for c in v.candidates}
    return {s.span_id for s in symptoms.values()
            if s.explained and s.caused_by in blamed and s.caused_by != s.span_id}


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
        conn.register(BASELINE_TABLE, baseline_table())
        return True
    return False


class CombinedAnalyzer:
    """Runs each analyzer over the batch and merges their verdicts.

    ``statistical`` analyzers (the localizer) get their evidence put on the
    rules' scale first.  With ``healthy``, findings in traces that did not fail
    are weighed by their sources' healthy firing rates, which each batch's
    traces without a failure then teach it.  ``min_confidence`` goes on the
    verdict of every trace that did not fail, for the annotator.  A failure is not caught here: it costs the
    batch its verdict at the analysis boundary (``runner.analyze_released``).
    """

    def __init__(self, analyzers: Sequence[Analyzer], statistical: Sequence[Analyzer] = (),
                 healthy: HealthyFiring | None = None, min_confidence: float = 0.0) -> None:
        self.analyzers = tuple(analyzers)
        self.statistical = tuple(statistical)
        self.healthy = healthy
        self.min_confidence = min_confidence

    def projection(self) -> frozenset[AttrRef]:
        return frozenset().union(*(a.projection() for a in (*self.analyzers, *self.statistical)))

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        # each trace's outcome against the durations learned before this batch
        judged = self.healthy is not None or self.min_confidence > 0
        # the baseline learned before this batch (the localizer learns it below)
        ops = self._durations() if judged else None
        seen = outcomes(conn, table, ops) if judged else None
        verdicts = []
        # rules read the baseline learned so far (before the localizer learns this batch)
        registered = register_baseline(conn, self.statistical) if self.analyzers else False
        try:
            verdicts.extend(analyzer.analyze(conn, table) for analyzer in self.analyzers)
        finally:
            if registered:
                conn.unregister(BASELINE_TABLE)
        verdicts.extend(on_rule_scale(analyzer.analyze(conn, table)) for analyzer in self.statistical)
        if seen is not None:
            verdicts = [trace_local(v, seen.failed, ops) for v in verdicts]
        if self.healthy is not None and seen is not None:
            fired_in = fired(verdicts)
            verdicts = [self.healthy.weigh(v, seen) for v in verdicts]
            # learned after weighing: a batch's own firings do not discount it
            self.healthy.learn(seen.healthy, fired_in)
        # one verdict keeps its analyzer's ranking; either way confidences are calibrated
        merged = merge(verdicts, rerank=len(verdicts) != 1, calls=repeated_calls(conn, table, verdicts))
        if not self.min_confidence or seen is None:
            return merged
        # the floor is for traces without a failure: where the caller saw one, its candidates say
        # where it comes from, however unsure (a false alarm needs a trace that did not fail)
        return dataclasses.replace(merged, traces={
            t: v if t in seen.failed else dataclasses.replace(v, min_confidence=self.min_confidence)
            for t, v in merged.traces.items()})

    def _durations(self) -> pa.Table | None:
        """Per operation the baseline learned before this batch (``service``, ``name``, ``n``,
        ``dur_max``, ``err_rate`` …: ``Baseline.ops``), from the first statistical analyzer that
        keeps a history (the localizer); None without one."""
        for analyzer in self.statistical:
            history = getattr(analyzer, "history", None)
            if history is not None:
                return history.baseline().ops
        return None

    def close(self) -> None:
        for analyzer in (*self.analyzers, *self.statistical):
            analyzer.close()
