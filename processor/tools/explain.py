"""``faulttrace explain``: localized root causes of recorded traces, as text or JSON.

Per trace, each cause's chain: the cause with its evidence (layer, rules,
fault tree and what each said), the symptoms it explains from the innermost
out with the evidence of each link (``Symptom.reason``: an inherited error,
a wait, a rule's ``explains``, the lift), and what the user saw — the
trace's root span.  Then the span tree with causes and symptoms marked.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from dsl import TreeOutcome
from processor.analysis.verdict import BatchVerdict, Candidate, Symptom, TraceVerdict, follow_cause
from processor.tools.offline import OfflineResult

Row = dict[str, Any]   # one span: trace_id, span_id, parent_span_id, service, name, start_ns, end_ns, status_code


@dataclass(frozen=True, slots=True)
class Chain:
    """One cause of a trace and what follows from it, up to what the user saw."""

    cause: Candidate
    span: Row                                   # the cause's span
    explains: tuple[tuple[Row, Symptom], ...]   # the symptoms naming it, innermost first
    user_saw: Row | None                        # the trace's root span
    user_saw_symptom: Symptom | None            # the root span's link to this cause, if it is one
    user_saw_rank: int | None = None            # the root span's rank, if it is a cause itself


@dataclass(frozen=True, slots=True)
class TraceSpans:
    """The spans of one trace with their tree: children by parent, the root span, depths."""

    rows: dict[bytes, Row]
    children: dict[bytes | None, list[Row]]
    root: Row | None

    @classmethod
    def of(cls, spans: list[Row], root_span_id: bytes | None = None) -> TraceSpans:
        rows = {s["span_id"]: s for s in spans}
        children: dict[bytes | None, list[Row]] = defaultdict(list)
        for s in sorted(spans, key=lambda s: s["start_ns"]):
            children[s["parent_span_id"] if s["parent_span_id"] in rows else None].append(s)
        root = rows.get(root_span_id) if root_span_id is not None else None
        if root is None and children[None]:
            root = children[None][0]
        return cls(rows, children, root)

    def depth(self, span_id: bytes) -> int:
        depth, seen, parent = 0, {span_id}, self.rows[span_id]["parent_span_id"]
        while parent in self.rows and parent not in seen:
            seen.add(parent)
            depth += 1
            parent = self.rows[parent]["parent_span_id"]
        return depth


def chains(v: TraceVerdict | None, symptoms: tuple[Symptom, ...], spans: TraceSpans
           ) -> tuple[list[Chain], list[tuple[Row, Symptom]]]:
    """Each candidate's chain, in rank order; and the symptoms naming no candidate of the trace.

    A symptom naming another symptom (a fired tree's top event explained by a span that is
    itself explained) joins the chain of the candidate that one leads to."""
    candidates = v.candidates if v else ()
    by_cause: dict[bytes | None, list[tuple[Row, Symptom]]] = defaultdict(list)
    blamed = {c.span_id for c in candidates}
    for s in symptoms:
        if s.span_id in spans.rows:
            by_cause[cause_of(s, symptoms, blamed)].append((spans.rows[s.span_id], s))
    root_id = spans.root["span_id"] if spans.root else None
    root_rank = next((c.rank for c in candidates if c.span_id == root_id), None)
    out = []
    for c in candidates:
        links = sorted(by_cause.get(c.span_id, []), key=lambda rs: (-spans.depth(rs[0]["span_id"]), rs[0]["start_ns"]))
        at_root = next((s for row, s in links if row["span_id"] == root_id), None)
        row = spans.rows.get(c.span_id) or {"span_id": c.span_id, "service": c.service, "name": c.name,
                                            "start_ns": c.start_ns, "end_ns": c.end_ns, "status_code": 0}
        explains = tuple((r, s) for r, s in links if r["span_id"] != root_id)
        out.append(Chain(c, row, explains, spans.root, at_root, root_rank))
    return out, by_cause.get(None, [])


def cause_of(s: Symptom, symptoms: tuple[Symptom, ...], blamed: set[bytes]) -> bytes | None:
    """The candidate ``s`` leads to, following ``caused_by`` through other symptoms; None if none."""
    cause = follow_cause(s, {x.span_id: x for x in symptoms}, blamed)
    return cause if cause in blamed else None


# ---- JSON ------------------------------------------------------------------------------------


def to_json(result: OfflineResult) -> dict[str, Any]:
    by_trace = _rows_by_trace(result.spans)
    traces = []
    for trace_id in _trace_order(result.spans):
        verdict = result.verdict.traces.get(trace_id)
        symptoms = result.verdict.symptoms.get(trace_id, ())
        spans = TraceSpans.of(by_trace[trace_id], verdict.root_span_id if verdict else None)
        found, orphans = chains(verdict, symptoms, spans)
        traces.append({"trace_id": trace_id.hex(),
                       "root_causes": [_candidate_json(c) for c in (verdict.candidates if verdict else ())],
                       "fault_trees": [_tree_json(t) for t in (verdict.fault_trees if verdict else ())],
                       "chains": [_chain_json(ch) for ch in found],
                       "symptoms": [_symptom_json(s) for s in symptoms],
                       **({"unexplained_symptoms": [_link_json(row, s) for row, s in orphans]} if orphans else {})})
    return {"traces": traces,
            "services": [{"service": r.service, "score": r.score, "probability": r.probability}
                         for r in result.verdict.services]}


def _tree_json(t: TreeOutcome) -> dict[str, Any]:
    """A fault tree whose top event is true (fired) or unknown: for a fired
    tree the satisfied minimal cut sets and the spans they blame; otherwise
    the cut sets still possible and the basic events whose evidence is unknown."""
    return {"id": t.tree_id, "fired": t.fired, "confidence": round(t.confidence, 4),
            "cut_sets": [list(cs) for cs in t.cut_sets], "spans": list(dict.fromkeys(s.hex() for s, _, _ in t.spans)),
            "unknown": list(t.unknown)}


def _candidate_json(c: Candidate) -> dict[str, Any]:
    return {"rank": c.rank, "span_id": c.span_id.hex(), "service": c.service, "name": c.name,
            "layer": c.layer, "rules": list(c.rules), "confidence": round(c.confidence, 4),
            "message": next((e.message for e in c.evidence if e.kind == "rule"), c.evidence[0].message),
            "evidence": [{"source": e.source, "kind": e.kind, "message": e.message,
                          "confidence": round(e.confidence, 4)} for e in c.evidence]}


def _chain_json(ch: Chain) -> dict[str, Any]:
    """The cause by rank and span id (its evidence is under ``root_causes``), each link with its
    evidence, and the root span: a symptom of this cause, a cause itself (its rank), or neither."""
    out: dict[str, Any] = {"rank": ch.cause.rank, "cause": ch.cause.span_id.hex(),
                           "explains": [_link_json(row, s) for row, s in ch.explains]}
    if ch.user_saw is not None:
        out["user_saw"] = {**_span_json(ch.user_saw), "cause_rank": ch.user_saw_rank,
                           "symptom": ch.user_saw_symptom is not None,
                           "reason": ch.user_saw_symptom.reason if ch.user_saw_symptom else ""}
    return out


def _link_json(row: Row, s: Symptom) -> dict[str, Any]:
    """A symptom with its evidence; ``caused_by``, the span it names (the cause, or the symptom
    through which it leads to the cause)."""
    return {**_span_json(row), "caused_by": s.caused_by.hex() if s.caused_by else None, "reason": s.reason,
            "explained": s.explained}


def _span_json(row: Row) -> dict[str, Any]:
    return {"span_id": row["span_id"].hex(), "service": row["service"], "name": row["name"],
            "error": row["status_code"] == 2, "duration_ms": round((row["end_ns"] - row["start_ns"]) / 1e6, 3)}


def _symptom_json(s: Symptom) -> dict[str, Any]:
    return {"span_id": s.span_id.hex(), "caused_by": s.caused_by.hex() if s.caused_by else None,
            "reason": s.reason, "explained": s.explained}


def _trace_order(spans: pa.Table) -> list[bytes]:
    return list(dict.fromkeys(spans.column("trace_id").to_pylist()))


def _rows_by_trace(spans: pa.Table) -> dict[bytes, list[Row]]:
    rows = spans.select(["trace_id", "span_id", "parent_span_id", "service", "name", "start_ns", "end_ns",
                         "status_code"]).to_pylist()
    by_trace: dict[bytes, list[Row]] = defaultdict(list)
    for r in rows:
        by_trace[r["trace_id"]].append(r)
    return by_trace


# ---- text ------------------------------------------------------------------------------------


def write_text(result: OfflineResult, out: TextIO) -> None:
    """Each trace: its causes' chains, then its span tree with causes and symptoms marked."""
    by_trace = _rows_by_trace(result.spans)
    for trace_id in _trace_order(result.spans):
        _write_trace(trace_id, by_trace[trace_id], result.verdict, out)
    if result.verdict.services:
        out.write("services, most likely origin first (across all traces of the file):\n")
        for n, r in enumerate(result.verdict.services, 1):
            out.write(f"  {n}. {r.service}  score {r.score:.2f}  p {r.probability:.2f}\n")


def _describe(span: Row) -> str:
    duration = (span["end_ns"] - span["start_ns"]) / 1e6
    return f"{span['service']}: {span['name']} {duration:.1f}ms{' ERROR' if span['status_code'] == 2 else ''}"


def _write_trace(trace_id: bytes, rows: list[Row], verdict: BatchVerdict, out: TextIO) -> None:
    v = verdict.traces.get(trace_id)
    symptoms = verdict.symptoms.get(trace_id, ())
    spans = TraceSpans.of(rows, v.root_span_id if v else None)
    blamed = {c.span_id: c for c in v.candidates} if v else {}
    summary = f"{len(v.candidates)} root cause(s)" if v and v.candidates else "no root cause found"
    out.write(f"trace {trace_id.hex()}: {len(rows)} spans, {summary}\n")
    for t in v.fault_trees if v else ():
        if t.fired:
            sets = " or ".join("{" + ", ".join(cs) + "}" for cs in t.cut_sets)
            out.write(f"  fault tree {t.tree_id} fired ({t.confidence:.2f}): cut set {sets}\n")
        else:
            out.write(f"  fault tree {t.tree_id} unknown ({t.confidence:.2f}): no evidence for {', '.join(t.unknown)}\n")
    found, orphans = chains(v, symptoms, spans)
    for ch in found:
        write_chain(ch, out)
    for row, s in orphans:
        out.write(f"  symptom naming no cause here: {_describe(row)}  ({s.reason or 'no reason given'})\n")
    marks = {s.span_id: s for s in symptoms}

    def walk(span: Row, depth: int) -> None:
        c = blamed.get(span["span_id"])
        s = marks.get(span["span_id"])
        mark = f"  <== #{c.rank} {c.layer} {','.join((*c.rules, *c.statistical))} ({c.confidence:.2f})" if c else ""
        if s is not None and c is None:
            cause = blamed.get(cause_of(s, symptoms, set(blamed)) or b"")
            mark = f"  <- symptom{f' of #{cause.rank}' if cause else ''}{f': {s.reason}' if s.reason else ''}"
        out.write(f"  {'  ' * depth}{_describe(span)}{mark}\n")
        for child in spans.children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in spans.children[None]:
        walk(root, 0)


def write_chain(ch: Chain, out: TextIO, evidence: int | None = None) -> None:
    """``#rank cause``, its evidence one line each (at most ``evidence`` lines, then how many more),
    ``→ explains`` per symptom from the innermost out, and ``→ user saw`` the root span."""
    c = ch.cause
    what = [c.layer or "no layer"]
    if c.rules or c.statistical:
        what.append(", ".join((*c.rules, *c.statistical)))
    tree = c.fault_tree
    if tree is not None:
        what.append(f"tree {tree.source} {{{', '.join(tree.cut_set)}}}")
    out.write(f"  #{c.rank} cause {_describe(ch.span)}  [{'; '.join(what)}] ({c.confidence:.2f})\n")
    shown = c.evidence if evidence is None else c.evidence[:evidence]
    for e in shown:
        out.write(f"       {e.source}: {e.message}\n")
    if len(shown) < len(c.evidence):
        rest = c.evidence[len(shown):]
        out.write(f"       (+{len(rest)} more: {', '.join(e.source for e in rest)})\n")
    links = {row["span_id"]: row for row, _ in ch.explains}

    def why(s: Symptom) -> str:
        reason = s.reason or "no reason given"
        via = links.get(s.caused_by) if s.caused_by != c.span_id else None
        return f"{reason}; through {via['service']}: {via['name']}" if via else reason

    for row, s in ch.explains:
        out.write(f"     → explains {_describe(row)}  ({why(s)})\n")
    root = ch.user_saw
    if root is None:
        return
    if root["span_id"] == c.span_id:
        out.write("     → user saw this span: the cause is the root span\n")
        return
    if ch.user_saw_symptom is not None:
        link = why(ch.user_saw_symptom)
    elif ch.user_saw_rank is not None:
        link = f"blamed itself as #{ch.user_saw_rank}"
    else:
        link = "not marked a symptom of this cause"
    out.write(f"     → user saw {_describe(root)}  (root span; {link})\n")


def dumps(result: OfflineResult) -> str:
    return json.dumps(to_json(result), indent=2)


# ---- what failed, in one line ------------------------------------------------------------------


def failed_only(result: OfflineResult) -> OfflineResult:
    """The result narrowed to the traces given a root cause (``explain --failed``); the
    window's service ranking stays, as it was learned from every trace."""
    blamed = {t: v for t, v in result.verdict.traces.items() if v.top is not None}
    column = result.spans.column("trace_id")
    spans = result.spans.filter(pc.is_in(column, value_set=pa.array(list(blamed), column.type)))
    verdict = dataclasses.replace(result.verdict, traces=blamed,
                                  symptoms={t: s for t, s in result.verdict.symptoms.items() if t in blamed})
    return dataclasses.replace(result, spans=spans, verdict=verdict)


def summary_line(result: OfflineResult) -> str:
    """``40 traces, 8 with a root cause (infrastructure 5, data 3); most often payment: POST
    /charge (5 traces)``: how much failed, in which layers, the commonest cause."""
    traces = len(_trace_order(result.spans))
    tops = [v.top for v in result.verdict.traces.values() if v.top is not None]
    text = f"{traces} trace{'s' if traces != 1 else ''}, {len(tops)} with a root cause"
    if not tops:
        return text
    layers = Counter(c.layer or "no layer" for c in tops)
    causes = Counter(f"{c.service}: {c.name}" for c in tops)
    cause, count = min(causes.items(), key=lambda kv: (-kv[1], kv[0]))
    return (f"{text} ({', '.join(f'{layer} {n}' for layer, n in layers.most_common())}); "
            f"most often {cause} ({count} trace{'s' if count != 1 else ''})")
