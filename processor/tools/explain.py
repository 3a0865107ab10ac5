"""``faulttrace explain``: localized root causes of recorded traces, as a tree or JSON."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, TextIO

import pyarrow as pa

from dsl import TreeOutcome
from processor.analysis.verdict import BatchVerdict, Candidate
from processor.tools.offline import OfflineResult


def to_json(result: OfflineResult) -> dict[str, Any]:
    traces = []
    for trace_id in _trace_order(result.spans):
        verdict = result.verdict.traces.get(trace_id)
        traces.append({"trace_id": trace_id.hex(),
                       "root_causes": [_candidate_json(c) for c in (verdict.candidates if verdict else ())],
                       "fault_trees": [_tree_json(t) for t in (verdict.fault_trees if verdict else ())]})
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


def _trace_order(spans: pa.Table) -> list[bytes]:
    return list(dict.fromkeys(spans.column("trace_id").to_pylist()))


def write_text(result: OfflineResult, out: TextIO) -> None:
    """Each trace as an indented span tree; root causes marked with their rank and why."""
    rows = result.spans.select(["trace_id", "span_id", "parent_span_id", "service", "name", "start_ns", "end_ns",
                                "status_code"]).to_pylist()
    by_trace: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_trace[r["trace_id"]].append(r)
    for trace_id in _trace_order(result.spans):
        _write_trace(trace_id, by_trace[trace_id], result.verdict, out)
    if result.verdict.services:
        out.write("services, most likely origin first (across all traces of the file):\n")
        for n, r in enumerate(result.verdict.services, 1):
            out.write(f"  {n}. {r.service}  score {r.score:.2f}  p {r.probability:.2f}\n")


def _write_trace(trace_id: bytes, spans: list[dict[str, Any]], verdict: BatchVerdict, out: TextIO) -> None:
    v = verdict.traces.get(trace_id)
    blamed = {c.span_id: c for c in v.candidates} if v else {}
    ids = {s["span_id"] for s in spans}
    children: dict[bytes | None, list[dict[str, Any]]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s["start_ns"]):
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children[parent].append(s)
    summary = f"{len(v.candidates)} root cause(s)" if v and v.candidates else "no root cause found"
    out.write(f"trace {trace_id.hex()}: {len(spans)} spans, {summary}\n")
    for t in v.fault_trees if v else ():
        if t.fired:
            sets = " or ".join("{" + ", ".join(cs) + "}" for cs in t.cut_sets)
            out.write(f"  fault tree {t.tree_id} fired ({t.confidence:.2f}): cut set {sets}\n")
        else:
            out.write(f"  fault tree {t.tree_id} unknown ({t.confidence:.2f}): no evidence for {', '.join(t.unknown)}\n")

    def walk(span: dict[str, Any], depth: int) -> None:
        c = blamed.get(span["span_id"])
        duration = (span["end_ns"] - span["start_ns"]) / 1e6
        status = " ERROR" if span["status_code"] == 2 else ""
        mark = f"  <== #{c.rank} {c.layer} {','.join((*c.rules, *c.statistical))} ({c.confidence:.2f})" if c else ""
        out.write(f"  {'  ' * depth}{span['service']}: {span['name']} {duration:.1f}ms{status}{mark}\n")
        if c:
            for e in c.evidence:
                out.write(f"  {'  ' * depth}    {e.source}: {e.message}\n")
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in children[None]:
        walk(root, 0)


def dumps(result: OfflineResult) -> str:
    return json.dumps(to_json(result), indent=2)
