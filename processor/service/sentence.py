"""A trace's verdict as a sentence a person reads: the cause, its layer and confidence, what the
finding says, what it explains, and a link to the trace.

``serve`` logs one per trace with a root cause (``verdicts``), ``explain --failed`` prints them
too.  The spans named besides the cause (the trace's root span, what the user saw) come from
the released batch's intrinsic columns (``SpanFacts``), read only for the traces that need them.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from processor.analysis.verdict import Candidate, Evidence, Symptom, TraceVerdict, follow_cause

ERROR = 2  # OTLP STATUS_CODE_ERROR
PLACEHOLDERS = frozenset({"trace_id"})  # what a trace_url_template may name


@dataclass(frozen=True, slots=True)
class SpanFacts:
    """What a sentence says about a span that is not the cause: who, what, failed or how long."""

    service: str
    name: str
    error: bool
    status_message: str
    duration_ms: float

    def outcome(self) -> str:
        if self.error:
            return f"failed ({self.status_message})" if self.status_message else "failed"
        return f"took {self.duration_ms:.0f} ms"


def span_facts(table: pa.Table, span_ids: Iterable[bytes]) -> dict[bytes, SpanFacts]:
    """The facts of ``span_ids`` found in ``table`` (store columns), by span id; one filter over
    the batch, so a chunk of thousands of traces costs one pass, not one per trace."""
    wanted = pa.array(list(set(span_ids)), pa.binary())
    if not len(wanted) or not table.num_rows:
        return {}
    rows = table.filter(pc.is_in(table.column("span_id").cast(pa.binary()), value_set=wanted)).select(
        ["span_id", "service", "name", "status_code", "status_message", "start_ns", "end_ns"]).to_pylist()
    return {r["span_id"]: SpanFacts(r["service"] or "", r["name"] or "", r["status_code"] == ERROR,
                                    r["status_message"] or "", (r["end_ns"] - r["start_ns"]) / 1e6)
            for r in rows}


def check_url_template(template: str) -> str:
    """``template`` if it names no placeholder but ``{trace_id}``, else ValueError saying which."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(f"{template!r}: {err}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ValueError(f"{template!r}: unknown placeholder {{{sorted(unknown)[0]}}}; the one known is {{trace_id}}")
    return template


def trace_url(template: str, trace_id: bytes) -> str:
    return template.format(trace_id=trace_id.hex()) if template else ""


def finding(c: Candidate) -> Evidence:
    """The evidence a sentence quotes: among the evidence about the span itself in the layer
    the candidate is given (so the message agrees with the layer beside it), a rule's before
    the localizer's (a rule's message was written for people), the strongest first; a fault
    tree's only when nothing else blames the span."""
    own = [e for e in c.evidence if e.kind != "fault_tree"] or list(c.evidence)
    agreeing = [e for e in own if e.layer == c.layer] or own
    return max(agreeing, key=lambda e: (e.kind == "rule", e.score, e.confidence))


def explained(v: TraceVerdict, symptoms: Iterable[Symptom], cause: bytes) -> list[Symptom]:
    """The symptoms whose ``caused_by`` chain leads to ``cause``."""
    symptoms = tuple(symptoms)
    by_id = {s.span_id: s for s in symptoms}
    blamed = {c.span_id for c in v.candidates}
    return [s for s in symptoms if follow_cause(s, by_id, blamed) == cause]


def describe(v: TraceVerdict, symptoms: Iterable[Symptom], facts: Mapping[bytes, SpanFacts],
             url_template: str = "") -> str:
    """One sentence for a trace with a root cause (``v.root_cause`` must be set), e.g.::

        trace 4bf92f35…: root cause payment "POST /charge" (infrastructure, confidence 0.82):
        connection refused by db:5432; explains 3 spans; the user saw gateway "POST /checkout"
        failed (503). http://jaeger:16686/trace/4bf92f35…
    """
    top = v.root_cause
    assert top is not None, "describe() needs a trace with a root cause"
    e = finding(top)
    text = (f"trace {v.trace_id.hex()}: root cause {top.service} \"{top.name}\" "
            f"({top.layer or 'no layer'}, confidence {top.confidence:.2f}): {e.message or e.source}")
    followers = explained(v, symptoms, top.span_id)
    if followers:
        text += f"; explains {len(followers)} span{'s' if len(followers) != 1 else ''}"
    if len(v.candidates) > 1:
        text += f"; {len(v.candidates) - 1} other candidate{'s' if len(v.candidates) > 2 else ''}"
    root = facts.get(v.root_span_id) if v.root_span_id is not None else None
    if v.root_span_id == top.span_id:
        text += "; the cause is the root span"
    elif root is not None:
        text += f"; the user saw {root.service} \"{root.name}\" {root.outcome()}"
    url = trace_url(url_template, v.trace_id)
    return f"{text}. {url}" if url else f"{text}."


def incident_key(v: TraceVerdict, facts: Mapping[bytes, SpanFacts]) -> tuple[str, str]:
    """What groups traces into one incident, as display text: the cause (service and
    operation) and what the user saw (the root span's service and operation, and whether it failed)."""
    top = v.root_cause
    assert top is not None
    cause = f"{top.service} {top.name}"
    root = facts.get(v.root_span_id) if v.root_span_id is not None else None
    if root is None or v.root_span_id == top.span_id:
        return cause, ""
    # Not the status message: it may carry ids that would split one incident into many.  A root
    # that did not fail is named alone (slow, or a wrong answer: the sentence says which).
    return cause, f"{root.service} {root.name}{' failed' if root.error else ''}"
