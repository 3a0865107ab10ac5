"""Annotator: turns trace verdicts into what is added to spans (``rca.*``).

On each blamed span: ``rca.root_cause``, ``rca.rank``, ``rca.confidence``,
``rca.rule`` (string array: the rules that fired), ``rca.evidence`` (string
array: the localizer's sources, ``localizer.latency`` …, when it blames the
span too), ``rca.layer``, and one ``rca.finding`` event per piece of evidence.  On the trace's root span: ``rca.verdict.*`` naming the
top candidate.  A fault tree that fired adds, on each span its fired cut set
blames, ``rca.fault_tree`` and ``rca.cut_set`` (string array of event ids)
and an ``rca.finding`` event naming the tree and cut set; the root span gets
``rca.verdict.fault_tree``.  A candidate less confident than its trace verdict's
``min_confidence`` (``processors.faulttrace.min_confidence``) gets only its
``rca.finding`` events: weak evidence stays on record for whoever looks, but
is no root cause, no verdict, and explains no symptom.  ``annotate`` appends the additions to the
released spans' original bytes (``otlp.spanedit``); values stay primitive so
Jaeger and Tempo show tags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, TraceVerdict
from processor.model import ReleasedSpans
from processor.otlp.spanedit import Annotation, AttrValue, SpanEvent, append_to_spans


def _candidate_annotation(c: Candidate) -> tuple[dict[str, AttrValue], list[SpanEvent]]:
    attributes: dict[str, AttrValue] = {
        "rca.root_cause": True,
        "rca.rank": c.rank,
        "rca.confidence": round(c.confidence, 4),
        "rca.rule": list(c.rules),
        "rca.layer": c.layer,
    }
    if c.statistical:
        attributes["rca.evidence"] = list(c.statistical)
    tree = c.fault_tree
    if tree is not None:
        attributes["rca.fault_tree"] = tree.source
        attributes["rca.cut_set"] = list(tree.cut_set)
    events = [SpanEvent("rca.finding", c.end_ns or c.start_ns, _finding_attributes(e)) for e in c.evidence]
    return attributes, events


_SOURCE_KEY = {"rule": "rca.rule", "localizer": "rca.evidence"}


def _finding_attributes(e: Evidence) -> dict[str, AttrValue]:
    source: dict[str, AttrValue] = ({"rca.fault_tree": e.source, "rca.cut_set": list(e.cut_set)}
                                    if e.kind == "fault_tree" else {_SOURCE_KEY[e.kind]: e.source})
    return {**source, "rca.layer": e.layer, "rca.confidence": round(e.confidence, 4), "rca.message": e.message}


def _verdict_attributes(v: TraceVerdict, top: Candidate) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {
        "rca.verdict.span_id": top.span_id.hex(),
        "rca.verdict.service": top.service,
        "rca.verdict.name": top.name,
        "rca.verdict.layer": top.layer,
        "rca.verdict.rule": list(top.rules),
        "rca.verdict.confidence": round(top.confidence, 4),
        "rca.verdict.candidates": len(v.candidates),
    }
    if top.statistical:
        out["rca.verdict.evidence"] = list(top.statistical)
    tree = v.fired_tree
    if tree is not None:
        out["rca.verdict.fault_tree"] = tree.tree_id
    return out


def annotations(verdict: BatchVerdict) -> dict[tuple[bytes, bytes], Annotation]:
    """(trace id, span id) -> what to append to that span."""
    out: dict[tuple[bytes, bytes], Annotation] = {}
    gated: dict[bytes, set[bytes]] = {}      # per trace, the candidates below the floor
    unexplained: set[bytes] = set()          # traces with candidates, none of them written
    for trace_id, v in verdict.traces.items():
        top = v.root_cause
        kept = v.written
        gated[trace_id] = {c.span_id for c in v.candidates} - {c.span_id for c in kept}
        if v.candidates and not kept:
            unexplained.add(trace_id)
        adds: dict[bytes, tuple[dict[str, AttrValue], list[SpanEvent]]] = {
            c.span_id: _candidate_annotation(c) for c in kept}
        for c in v.candidates:
            if c.span_id in gated[trace_id]:  # below the floor: the findings only
                adds[c.span_id] = ({}, _candidate_annotation(c)[1])
        if v.root_span_id is not None and top is not None:
            attrs, events = adds.get(v.root_span_id, ({}, []))
            adds[v.root_span_id] = ({**attrs, **_verdict_attributes(v, top)}, events)
        for span_id, (attrs, events) in adds.items():
            out[(trace_id, span_id)] = Annotation(attrs, events)
    for trace_id, symptoms in verdict.symptoms.items():
        below = gated.get(trace_id, set())
        for s in symptoms:
            # a symptom of a cause below the floor (or of none, in a trace with no cause written)
            # is not marked: nothing written explains it
            if s.caused_by in below or (s.caused_by is None and trace_id in unexplained):
                continue
            # error or delay that comes from a root cause (never a blamed span: localizer.blame
            # leaves them out, combined.merge drops those another analyzer blames)
            have = out.get((trace_id, s.span_id), Annotation())
            adds: dict[str, AttrValue] = {"rca.symptom": True}
            if s.caused_by is not None:
                adds["rca.caused_by"] = s.caused_by.hex()
            out[(trace_id, s.span_id)] = Annotation({**have.attributes, **adds}, have.events)
    return out


def late_annotations(spans: ReleasedSpans,
                     verdict_of: Callable[[bytes], TraceVerdict | None]) -> dict[tuple[bytes, bytes], Annotation]:
    """For spans that arrived after their trace was analyzed: a late root span
    still gets its trace's ``rca.verdict.*`` (the root often ends, and so
    arrives, last)."""
    table = spans.table
    roots = pc.indices_nonzero(pc.is_null(table.column("parent_span_id")))
    out: dict[tuple[bytes, bytes], Annotation] = {}
    for trace_id, span_id in zip(table.column("trace_id").take(roots).to_pylist(),
                                 table.column("span_id").take(roots).to_pylist()):
        v = verdict_of(trace_id)
        top = v.root_cause if v is not None else None
        if top is not None:
            out[(trace_id, span_id)] = Annotation(_verdict_attributes(v, top))
    return out


def annotate(spans: ReleasedSpans, adds: Mapping[tuple[bytes, bytes], Annotation]) -> dict[int, bytes]:
    """Row -> that released span's bytes with its addition appended, for the spans ``adds``
    names (by (trace id, span id)); every other span keeps its very bytes (``otlp.payload``
    frames the rows' bytes from the table, these in their place).  Only the rows of traces
    with an addition become Python objects."""
    if not adds:
        return {}
    table = spans.table
    traces = pa.array(list({trace_id for trace_id, _ in adds}), pa.binary())
    rows = pc.indices_nonzero(pc.is_in(table.column("trace_id"), value_set=traces))
    keys = zip(table.column("trace_id").take(rows).to_pylist(), table.column("span_id").take(rows).to_pylist())
    hits = [(row, adds[key]) for row, key in zip(rows.to_pylist(), keys) if key in adds]
    raw = table.column("raw").take(pa.array([row for row, _ in hits], pa.int64())).to_pylist()
    edited = append_to_spans(raw, {i: add for i, (_, add) in enumerate(hits)})
    return {row: data for (row, _), data in zip(hits, edited)}
