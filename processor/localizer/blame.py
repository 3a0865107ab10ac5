"""Per-trace root causes: the spans where a trace's error or delay originates, and its symptoms.

Two kinds of evidence, each judged within one trace against the baseline and
weighed by the window's service ranking (``window.rank_services``), which
carries what one trace cannot show (consistency across traces, explaining
away):

- *error origin*: an erroring span none of whose children errors; an
  exception event makes it stronger.  Repeated failures of one operation in a
  trace (a retry loop) are one candidate, its first attempt.
- *latency blame*: self time above the operation's baseline p99 on the
  trace's critical path (``graph.critical_path``), so a parallel sibling that
  finished early is not blamed.  A client span's self time is charged to the
  callee's server span, or to the client span itself when the window says the
  caller is the one slow on all its calls.  Without window support a span must
  stand out on its own: as far beyond p99 as p99 is beyond the median.

A failing span (error or latency origin) is no candidate when a silently
abnormal span of its causal past explains it (``silent``: an attribute value
improbable under its operation's baseline, after which the window shows the
failure far more often than without it): that span is the candidate
(``localizer.silent``), the failing span an *explained* symptom caused by it.

*Symptoms* are the ancestors that inherited a candidate's error (they error
too) or delay (slower than their own p99, or waiting out a delay that is
most of their duration, or above a delay on the critical path, which held
back the end of every span above it); those of an explained span are caused
by its explanation.

Each candidate's confidence is its evidence mapped to a probability of
causation, the share of what was observed that normal behaviour cannot
account for (the attributable fraction ``1 - 1/RR`` of epidemiology):

- latency: ``1 - p99 / self time`` — the part of the span's self time beyond
  what normal traffic reaches 99% of the time;
- error origin: ``(1 - baseline error rate) x`` the reliability of the
  structural claim that the error starts here — ``EXCEPTION_CONFIDENCE`` when
  the span recorded raising an exception, ``ERROR_CONFIDENCE`` when only its
  status says so (a callee that failed silently or a lost child span would
  look the same);
- the window's support for the charged service (``ServiceScore.confidence``,
  odds equal to its score);

independent lines of evidence combined by noisy-OR.  How candidates of one
trace compete for the blame is ``processor.analysis.combined``'s part.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from dsl import no_parent_sql, root_key_sql
from dsl.api import parsed
from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict
from processor.localizer.attribution import Attribution
from processor.localizer.baseline import Baseline, min_observations
from processor.localizer.evidence import QUANTILE
from processor.localizer.graph import Span, children_of, critical_path
from processor.localizer.silent import Abnormality, Explanation, Silent, explain_failures
from processor.localizer.window import ServiceScore

MIN_WINDOW = 0.1             # window score (share of a service's work abnormal) that supports a span
# The evidence piece that carries the window's support (``window.rank_services``): what the batch's
# other traces say about the charged service, not what this trace shows.
WINDOW_SOURCE = "localizer.window"
LATENCY_SOURCE = "localizer.latency"  # self time beyond the p99 (``_latency``, ``_slow_pods``)
# the window's support above which a slow span within its baseline's range is a delay (``_delay``)
MORE_LIKELY_THAN_NOT = 0.5
# observations an operation's baseline needs before a slow span of it is a delay: its p99 (what
# the latency piece reads) more likely than not one the sample reached (69); the largest of 69 is
# passed by a normal span 1 time in 70
P99_OBSERVATIONS = min_observations(QUANTILE, 0.5)
SUPPORTED = "supported"  # a delay by the window's support, until another trace bears it out (``_corroborate``)
ERROR_CONFIDENCE = 0.6       # an erroring span with no erroring child
EXCEPTION_CONFIDENCE = 0.85  # ... that also recorded an exception event

# Every span of the traces with evidence: an error origin, or self time above p99; with its trace's root
# (``dsl.root_key_sql``: the one the rules and their ``trace.root_service`` see too).
ROWS_SQL = f"""
-- the traces with evidence, found from the few columns that say so before every column of their spans is
-- read (a CTE of every span's columns, read twice, was materialized: most of the statement's cost)
WITH hit AS (
    SELECT DISTINCT m.trace_id FROM m LEFT JOIN base_ops o USING (service, name)
    WHERE (m.status_code = 2 AND NOT m.child_error) OR m.self_ns::DOUBLE > o.self_p99::DOUBLE
          OR (m.pod IN (SELECT pod FROM lz_slow_pods) AND m.self_ns::DOUBLE > o.self_med::DOUBLE)
),
j AS (
    SELECT m.trace_id, m.span_id, m.parent_span_id, m.service, m.name, m.callee, m.start_ns, m.end_ns,
           m.n_children, m.dur::DOUBLE AS dur, m.self_ns::DOUBLE AS self_ns, m.status_code = 2 AS error,
           coalesce(m.exception, false) AS exception, m.pod IN (SELECT pod FROM lz_slow_pods) AS slow_pod,
           (m.status_code = 2 AND NOT m.child_error) AS origin, m.orphan,
           o.self_med::DOUBLE AS self_med, o.self_p99::DOUBLE AS self_p99, o.dur_p99::DOUBLE AS dur_p99,
           o.self_max::DOUBLE AS self_max, o.n::DOUBLE AS base_n,
           coalesce(o.err_rate, 0.0)::DOUBLE AS err_rate
    FROM m LEFT JOIN base_ops o USING (service, name)
    WHERE m.trace_id IN (SELECT trace_id FROM hit)
)
SELECT *, arg_min(span_id, {root_key_sql("j", no_parent_sql("j.parent_span_id"), "NOT j.orphan")})
              OVER (PARTITION BY trace_id) AS trace_root
FROM j
ORDER BY trace_id, start_ns, span_id  -- span_id: spans starting together in one order every run
"""


@dataclass(frozen=True, slots=True)
class LocalizedBatch(BatchVerdict):
    """A ``BatchVerdict`` (with, per trace, the spans whose error or delay is inherited
    from its root causes: ``symptoms``) plus the attribute values candidates share."""

    attributions: tuple[Attribution, ...] = ()   # attribute values the candidates share
    # (trace id, span id) -> the span's improbable attribute values (``silent``)
    abnormal: dict[tuple[bytes, bytes], list[Abnormality]] = field(default_factory=dict)


@dataclass(slots=True)
class _Blame:
    """Evidence gathered against one span of one trace."""

    span: dict[str, Any]
    charged: str
    own: float = 0.0                      # the trace-local severity
    confidence: float = 0.0
    error: bool = False
    # (source, message, its probability of causation, the failure it is about: "error", "delay")
    messages: list[tuple[str, str, float, str]] = field(default_factory=list)
    explains: list[bytes] = field(default_factory=list)              # failing spans it explains
    excess: float = 0.0                   # self time beyond p99 it is blamed for (ns)
    beyond_p99: bool = False              # a span of it is slower than its operation's p99 (``_latency``)

    @property
    def how(self) -> str:
        """What kind of failure this is: "error" or "slow"."""
        return "error" if self.error else "slow"


def blame_traces(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline,
                 ranking: Sequence[ServiceScore], per_trace: int = 5,
                 details: dict[tuple[bytes, bytes], str] | None = None,
                 silent: Silent | None = None, slow_pods: Iterable[str] = ()) -> LocalizedBatch:
    """Ranked candidates and symptoms for every trace of ``metrics`` that has evidence.

    ``details`` optionally gives an error span's exception or status message; ``silent``
    the batch's silent abnormalities, which may explain a failing span; ``slow_pods`` the pods
    the window finds slower than their peers (``shift``): where a trace has no other evidence,
    its spans there slower than their median are candidates.
    """
    slow = pa.table({"pod": pa.array(sorted(set(slow_pods)), pa.string())})
    with baseline.beside(conn, metrics, lz_slow_pods=slow):
        rows = conn.sql(parsed(ROWS_SQL)).to_arrow_table().to_pylist()
        window = {r.service: r for r in ranking if r.score >= MIN_WINDOW}
        gathered = [_gather(trace_id, spans, window, details or {}) for trace_id, spans in _by_trace(rows)]
        _corroborate(gathered)
        explained: dict[tuple[bytes, bytes], Explanation] = {}
        abnormal: dict[tuple[bytes, bytes], list[Abnormality]] = {}
        failing = [(t.trace_id, sid, b.span["service"], b.span["name"], b.how)
                   for t in gathered for sid, b in t.blames.items()]
        if silent is not None and failing:
            silent = silent.detected()
            ops = baseline.ops.select(["service", "name", "n", "err_rate"]).to_pylist()
            base = {(o["service"], o["name"]): (float(o["n"]), float(o["err_rate"] or 0.0)) for o in ops}
            parents = {(t.trace_id, sid): r["parent_span_id"] for t in gathered for sid, r in t.by_id.items()}
            explained, abnormal = explain_failures(conn, silent, failing, base, parents)
    traces: dict[bytes, TraceVerdict] = {}
    symptoms: dict[bytes, tuple[Symptom, ...]] = {}
    for t in gathered:
        verdict, inherited = _finish(t, window, per_trace, explained, abnormal)
        if verdict.candidates:
            traces[t.trace_id] = verdict
            if inherited:
                symptoms[t.trace_id] = inherited
    return LocalizedBatch(traces, symptoms, abnormal=abnormal)


def _by_trace(rows: list[dict[str, Any]]) -> Iterable[tuple[bytes, list[dict[str, Any]]]]:
    group: list[dict[str, Any]] = []
    for r in rows:
        if group and r["trace_id"] != group[0]["trace_id"]:
            yield group[0]["trace_id"], group
            group = []
        group.append(r)
    if group:
        yield group[0]["trace_id"], group


@dataclass(slots=True)
class _Gathered:
    """One trace's spans and the evidence against them, before explanation and ranking."""

    trace_id: bytes
    root: bytes | None
    by_id: dict[bytes, dict[str, Any]]
    blames: dict[bytes, _Blame]
    on_path: frozenset[bytes] = frozenset()   # the trace's critical path


def _gather(trace_id: bytes, rows: list[dict[str, Any]], window: dict[str, ServiceScore],
            details: dict[tuple[bytes, bytes], str]) -> _Gathered:
    by_id = {r["span_id"]: r for r in rows}
    spans = [Span(r["span_id"], r["parent_span_id"], r["service"], r["name"], r["start_ns"], r["end_ns"])
             for r in rows]
    children = children_of(spans)
    on_path = {s.span_id for root in children.get(None, []) for s in critical_path(root, children)}
    trace_ns = max(1, max(r["end_ns"] for r in rows) - min(r["start_ns"] for r in rows))
    blames: dict[bytes, _Blame] = {}
    _errors(rows, by_id, blames, details)
    _latency(rows, by_id, children, on_path, trace_ns, window, blames)
    if not blames:
        _slow_pods(rows, on_path, trace_ns, blames)
    return _Gathered(trace_id, rows[0]["trace_root"], by_id, blames, frozenset(on_path))


def _finish(t: _Gathered, window: dict[str, ServiceScore], per_trace: int,
            explained: dict[tuple[bytes, bytes], Explanation], abnormal: dict[tuple[bytes, bytes], list[Abnormality]]
            ) -> tuple[TraceVerdict, tuple[Symptom, ...]]:
    causes = _explain(t, explained)
    _merge_within_services(t.blames, t.by_id)
    ranked = _rank(t.blames, t.by_id, window, per_trace, {s: abnormal.get((t.trace_id, s), []) for s in t.blames})
    inherited = _symptoms(ranked, t.blames, t.by_id, causes, t.on_path)
    return TraceVerdict(t.trace_id, t.root, ranked), inherited


def _explain(t: _Gathered, explained: dict[tuple[bytes, bytes], Explanation]) -> dict[bytes, tuple[bytes, str, _Blame]]:
    """Move the blame of each explained failing span to its cause (followed through chains:
    a cause that is itself an explained failure passes it on); returns per explained span
    (cause, why, its own blame before it moved)."""
    direct = {s: e for (trace, s), e in explained.items() if trace == t.trace_id and s in t.blames}
    out: dict[bytes, tuple[bytes, str, _Blame]] = {}
    for span_id, e in direct.items():
        cause, seen = e.cause.span_id, {span_id}
        while cause in direct and cause not in seen:
            seen.add(cause)
            cause = direct[cause].cause.span_id
        if cause == span_id or cause not in t.by_id:
            continue
        out[span_id] = (cause, e.message, t.blames[span_id])
    for span_id, (cause, why, failed) in out.items():
        del t.blames[span_id]
        b = t.blames.get(cause)
        if b is None:
            b = t.blames[cause] = _Blame(t.by_id[cause], t.by_id[cause]["service"])
        e = direct[span_id]
        f = failed.span
        b.own += failed.own
        b.excess += failed.excess
        confidence = e.fraction * max(failed.confidence, e.cause.confidence)
        b.confidence = max(b.confidence, confidence)
        b.explains.append(span_id)
        b.messages.append(("localizer.silent", f"{e.message}; explains {f['service']}:{f['name']}'s {failed.how}",
                           confidence, failed.how))
    return out


def _errors(rows: list[dict[str, Any]], by_id: dict[bytes, dict[str, Any]], blames: dict[bytes, _Blame],
            details: dict[tuple[bytes, bytes], str]) -> None:
    attempts: dict[tuple[str, str, bytes | None], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        attempts[(r["service"], r["name"], _caller(r, by_id))].append(r)
    for (service, name, _), same in attempts.items():
        failed = [r for r in same if r["origin"]]
        if not failed:
            continue
        first = failed[0]
        exception = any(r["exception"] for r in failed)
        what = "error origin: status ERROR and no erroring child"
        if exception:
            what += ", exception recorded"
        detail = next((details[(r["trace_id"], r["span_id"])] for r in failed
                       if (r["trace_id"], r["span_id"]) in details), "")
        if detail:
            what += f" ({detail})"
        if len(same) > 1:
            what += f"; {len(failed)} of {len(same)} {service}:{name} attempts failed (retried)"
        b = blames.setdefault(first["span_id"], _Blame(first, service))
        b.error = True
        b.own += 1.5 if exception else 1.0
        # an operation that also fails normally explains that share of its failures by background noise
        structural = EXCEPTION_CONFIDENCE if exception else ERROR_CONFIDENCE
        confidence = structural * (1.0 - min(1.0, first["err_rate"]))
        b.confidence = max(b.confidence, confidence)
        b.messages.append(("localizer.errors", what, confidence, "error"))


def _caller(r: dict[str, Any], by_id: dict[bytes, dict[str, Any]]) -> bytes | None:
    """The span that issued ``r``: its parent, or the parent's parent when the parent is a
    client span in another service wrapping only ``r`` (retries make one such per attempt)."""
    parent = by_id.get(r["parent_span_id"]) if r["parent_span_id"] else None
    if parent is None:
        return r["parent_span_id"]
    if parent["service"] != r["service"] and parent["n_children"] == 1:
        return parent["parent_span_id"]
    return parent["span_id"]


def _latency(rows: list[dict[str, Any]], by_id: dict[bytes, dict[str, Any]], children: dict[bytes | None, list[Span]],
             on_path: set[bytes], trace_ns: int, window: dict[str, ServiceScore],
             blames: dict[bytes, _Blame]) -> None:
    for r in rows:
        p99, med = r["self_p99"], r["self_med"]
        if r["span_id"] not in on_path or p99 is None or r["self_ns"] <= p99:
            continue
        target, charged, how = _charge(r, children, by_id, window)
        strong = r["self_ns"] - p99 >= p99 - (med or 0.0)
        if not (strong or charged in window):
            continue
        excess = r["self_ns"] - p99
        msg = (f"{how}self time {_ms(r['self_ns'])} vs p99 {_ms(p99)} (median {_ms(med or 0.0)}) "
               f"on the critical path, {excess / trace_ns:.0%} of the trace's {_ms(trace_ns)}")
        b = blames.setdefault(target["span_id"], _Blame(target, charged))
        b.beyond_p99 = True
        b.excess += excess
        b.own += min(1.0, excess / trace_ns)
        b.confidence = max(b.confidence, 1.0 - p99 / r["self_ns"])
        b.messages.append((LATENCY_SOURCE, msg, 1.0 - p99 / r["self_ns"], _delay(r, window.get(charged))))


def _slow_pods(rows: list[dict[str, Any]], on_path: set[bytes], trace_ns: int, blames: dict[bytes, _Blame]) -> None:
    """A trace with nothing beyond p99: its critical-path spans on a pod the window finds slower than
    its peers (a stressed CPU slows a span 2-4x, often still below a heavy-tailed p99), by their self
    time beyond their operation's median."""
    for r in rows:
        med = r["self_med"]
        if not r["slow_pod"] or r["span_id"] not in on_path or med is None or r["self_ns"] <= med:
            continue
        excess = r["self_ns"] - med
        b = blames.setdefault(r["span_id"], _Blame(r, r["service"]))
        b.excess += excess
        b.own += min(1.0, excess / trace_ns)
        b.confidence = max(b.confidence, 1.0 - med / r["self_ns"])
        b.messages.append((LATENCY_SOURCE, f"self time {_ms(r['self_ns'])} vs median {_ms(med)} on a pod "
                                           f"slower than its peers, on the critical path, "
                                           f"{excess / trace_ns:.0%} of the trace's {_ms(trace_ns)}",
                           # within its p99: no delay on its own, whatever the window says of the pod
                           # (a trace that did not fail gets no root cause from it: ``_delay``)
                           1.0 - med / r["self_ns"], ""))


def _delay(r: dict[str, Any], support: ServiceScore | None) -> str:
    """What a slow span's latency piece claims: "delay" — a failure on its own, even where the trace's
    root did not fail (``analysis.combined.trace_local``) — when normal traffic never went that far
    (beyond the largest self time its operation's baseline holds), or ``SUPPORTED`` (a delay if
    another trace bears it out: ``_corroborate``) when the window's own support for the charged
    service (``support``) is more likely than not (one fully abnormal place: a fault that slows many
    requests without failing any).  Otherwise "": slower than the p99, but within what normal traffic
    has shown (a heavy tail's outliers), it only qualifies other evidence.  Either claim needs the
    observations behind the p99 it reads (issue #12: no timing evidence before its baseline holds
    enough for its quantile): ``P99_OBSERVATIONS``, 69.  (At 99, where the largest is passed at most
    1% of the time, as a slow root needs, a 400-trace seed's checkout calls, 88 each, lost the
    live network-latency case: span AC@1 1.00 -> 0.)"""
    # the latency piece reads the p99: it counts once the baseline more likely than not reached it
    known = (r["base_n"] or 0) >= P99_OBSERVATIONS
    top = r["self_max"]
    if top is None or r["self_ns"] > top:
        # beyond the largest of too few is what normal traffic does often (a cold start's first
        # minutes: 1 in 21 at 20 observations), no delay by itself
        return "delay" if known else ""
    return SUPPORTED if known and support is not None and support.confidence >= MORE_LIKELY_THAN_NOT else ""


def _corroborate(gathered: list[_Gathered]) -> None:
    """Settle the delays the window's support alone made (``SUPPORTED``): a delay where another trace
    of the batch shows its service slow too, nothing otherwise.  A batch of one trace is a window of
    one trace: its slow span is all the window holds, so the window's support for it would be the
    span's own again (a GC pause released alone looked like a fault, released among 200 healthy
    traces it did not).  Counting only the other traces keeps such a verdict from following how the
    traffic happened to be batched; a fault that slows many requests still shows in several.  The
    other trace must show the service beyond its p99: slower than the median on a pod the window
    finds slow (``_slow_pods``) is half of that pod's spans, and says nothing more."""
    slow_in: dict[str, set[bytes]] = defaultdict(set)   # service -> traces with a span of it beyond p99
    for t in gathered:
        for b in t.blames.values():
            if b.beyond_p99:
                slow_in[b.charged].add(t.trace_id)
    for t in gathered:
        for b in t.blames.values():
            if any(f == SUPPORTED for *_, f in b.messages):
                settled = "delay" if slow_in[b.charged] - {t.trace_id} else ""
                b.messages = [(s, m, p, settled if f == SUPPORTED else f) for s, m, p, f in b.messages]


def _charge(r: dict[str, Any], children: dict[bytes | None, list[Span]], by_id: dict[bytes, dict[str, Any]],
            window: dict[str, ServiceScore]) -> tuple[dict[str, Any], str, str]:
    """The span (and service) a slow span's self time is charged to, and how to say so."""
    callee = r["callee"]
    if callee is None:
        return r, r["service"], ""
    caller_score = window[r["service"]].score if r["service"] in window else 0.0
    callee_score = window[callee].score if callee in window else 0.0
    if caller_score > callee_score:
        return r, r["service"], f"{r['service']} slow on its calls: client span to {callee}, "
    # the excess is the client span's own time (network, queueing, the callee's accept path): the
    # span is where it shows, the callee's service the one charged
    how = f"call from {r['service']} ({r['name']}) waits outside {callee}'s span (network, queueing): "
    return r, callee, how


def _merge_within_services(blames: dict[bytes, _Blame], by_id: dict[bytes, dict[str, Any]]) -> None:
    """Fold a candidate into an enclosing candidate charged to the same service, reached without
    leaving that service (a slow service's own span and the calls it is slow on are one cause)."""
    for span_id in sorted(blames, key=lambda s: -_depth(s, by_id)):
        b = blames[span_id]
        parent = by_id[span_id]["parent_span_id"]
        while parent in by_id and by_id[parent]["service"] == b.charged:
            into = blames.get(parent)
            if into is not None and into.charged == b.charged:
                into.own += b.own
                into.confidence = max(into.confidence, b.confidence)
                into.error = into.error or b.error
                into.excess += b.excess
                into.messages.extend(b.messages)
                del blames[span_id]
                break
            parent = by_id[parent]["parent_span_id"]


def _rank(blames: dict[bytes, _Blame], by_id: dict[bytes, dict[str, Any]], window: dict[str, ServiceScore],
          per_trace: int, abnormal: dict[bytes, list[Abnormality]] | None = None) -> tuple[Candidate, ...]:
    scored = []
    for span_id, b in blames.items():
        w = window.get(b.charged)
        key = b.own + (w.score if w else 0.0)
        confidence = 1.0 - (1.0 - b.confidence) * (1.0 - (w.confidence if w else 0.0))
        messages = list(b.messages)
        # the candidate's own improbable values (a setting out of range, an unusual answer)
        said = {m for _, m, _, _ in messages}
        for a in sorted((abnormal or {}).get(span_id, ()), key=lambda a: a.order)[:3]:
            if not any(a.message in m for m in said):
                messages.append(("localizer.silent", f"{a.message} on the span itself", b.confidence, ""))
        # Each of the trace's own pieces carries what it shows against the baseline (an error origin,
        # a delay, the value that explains one: most confident, ``b.confidence``), a qualifier the
        # span's, the window's piece the two together.  So the family's confidence (its most
        # confident piece) is the same, and a reader that must not count the window or a delay (a
        # trace that did not fail: ``analysis.combined.trace_local``) can tell them apart.
        evidence = [Evidence(source, msg, round(own, 4), key, "", "localizer", failure=failure)
                    for source, msg, own, failure in messages]
        if w is not None:
            why = "; ".join(e.message for e in w.evidence if e.message)
            evidence.append(Evidence(WINDOW_SOURCE, f"{b.charged} anomalous across the window" + (f": {why}" if why else ""),
                                     round(confidence, 4), key, "", "localizer"))
        s = b.span
        scored.append((key, _depth(s["span_id"], by_id), s["span_id"],
                       Candidate(s["span_id"], b.charged, s["name"], 0, s["start_ns"], s["end_ns"], tuple(evidence))))
    scored.sort(key=lambda t: (-t[0], -t[1], t[2]))
    return tuple(Candidate(c.span_id, c.service, c.name, depth, c.start_ns, c.end_ns, c.evidence, rank=i)
                 for i, (_, depth, _, c) in enumerate(scored[:per_trace], 1))


def _depth(span_id: bytes, by_id: dict[bytes, dict[str, Any]]) -> int:
    depth, seen = 0, {span_id}
    parent = by_id[span_id]["parent_span_id"]
    while parent in by_id and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = by_id[parent]["parent_span_id"]
    return depth


def _symptoms(ranked: tuple[Candidate, ...], blames: dict[bytes, _Blame], by_id: dict[bytes, dict[str, Any]],
              explained: dict[bytes, tuple[bytes, str, _Blame]] | None = None,
              on_path: frozenset[bytes] = frozenset()) -> tuple[Symptom, ...]:
    """The failing spans a candidate explains (``explained``), then the ancestors that inherited
    a candidate's or an explained span's error or delay, each caused by the best-ranked
    candidate it comes from.  An ancestor of a span on the critical path (``on_path``) waited
    for it (its end was held back by that span's): for a delay always, for an error when the
    ancestor took longer than its p99."""
    chosen = {c.span_id for c in ranked}
    out: dict[bytes, Symptom] = {}
    starts: list[tuple[bytes, bytes, _Blame]] = [(c.span_id, c.span_id, blames[c.span_id]) for c in ranked]
    for span_id, (cause, why, failed) in (explained or {}).items():
        if cause in chosen:
            out[span_id] = Symptom(span_id, cause, why, explained=True)
            starts.append((span_id, cause, failed))
    for span_id, (cause, _, _) in (explained or {}).items():
        if cause in chosen:
            for relay in _relays(cause, span_id, by_id):
                if relay not in chosen and relay not in out:
                    out[relay] = Symptom(relay, cause, "relayed the cause's result to the failing span")
    # then the spans blamed beyond the candidates kept (a slow node slows many): their ancestors
    # inherited from them, not from a candidate
    starts += [(s, s, b) for s, b in sorted(blames.items(), key=lambda kv: -kv[1].own) if s not in chosen]
    for start, cause, b in starts:
        error = b.error
        slow = any(src == LATENCY_SOURCE for src, *_ in b.messages)
        awaited = start in on_path
        parent, seen = by_id[start]["parent_span_id"], set()
        while parent in by_id and parent not in seen:
            seen.add(parent)
            p = by_id[parent]
            # it waited out the delay: slower than its p99, or the delay is most of its time
            # (a delay on the critical path held back every ancestor; an error there, each ancestor
            # that took longer than its p99: it waited out the retries or the timeout)
            beyond = p["dur_p99"] is None or p["dur"] > p["dur_p99"] or 2 * b.excess >= p["dur"]
            delayed = (slow and (awaited or beyond)) or (awaited and p["dur_p99"] is not None and p["dur"] > p["dur_p99"])
            if parent not in chosen and parent not in out and ((error and p["error"]) or delayed):
                out[parent] = Symptom(parent, cause, "inherited error" if error and p["error"] else "waited")
            parent = p["parent_span_id"]
    return tuple(out.values())


def _relays(cause: bytes, failed: bytes, by_id: dict[bytes, dict[str, Any]]) -> list[bytes]:
    """The spans that carried ``cause``'s output to ``failed``: ``cause``'s ancestors below the
    first one that is ``failed`` or one of its ancestors (a client span between a callee that
    returned nothing and the caller that threw; the tool span around an empty query)."""
    above_failed, span, seen = set(), failed, set()
    while span in by_id and span not in seen:
        seen.add(span)
        above_failed.add(span)
        span = by_id[span]["parent_span_id"]
    out, span, seen = [], by_id[cause]["parent_span_id"], {cause}
    while span in by_id and span not in above_failed and span not in seen:
        seen.add(span)
        out.append(span)
        span = by_id[span]["parent_span_id"]
    # a cause in another trace branch than any ancestor of ``failed`` relays nothing we can see
    return out if span in above_failed else []


def _ms(ns: float) -> str:
    ms = ns / 1e6
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2f} ms"
