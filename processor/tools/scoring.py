"""Scoring localization from what is on the spans: the ``rca.*`` attributes.

``faulttrace eval`` scores the annotations a person would see, not the
analysis' internals, so one scoring path serves every way of producing them:
the annotator's additions to a verdict computed in process
(``verdict_attributes``), or the spans a running ``faulttrace serve`` exported
to a file (``export_attributes``).  Either gives, per (trace id, span id), the
span's ``rca.*`` attributes; ``outcomes`` gathers them per trace
(``TraceOutcome``: the blamed spans by ``rca.rank``, the symptoms'
``rca.caused_by``), and ``score_trace`` / ``caused_by_hits`` compare a trace
with its label as ``../shared/corpora/README.md`` defines it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from processor.analysis.verdict import BatchVerdict
from processor.annotator import annotations
from processor.otlp import otlpjson
from processor.otlp.otlpjson import request_to_document
from processor.otlp.tracefile import read_trace_file

RCA = "rca."

SpanKey = tuple[bytes, bytes]   # (trace id, span id)
Attributes = Mapping[str, Any]  # a span's rca.* attributes as Python values


@dataclass(frozen=True, slots=True)
class Blamed:
    """A span tagged ``rca.root_cause``, as its attributes describe it."""

    span_id: bytes
    rank: int
    service: str
    layer: str
    confidence: float


@dataclass(frozen=True, slots=True)
class TraceOutcome:
    """What the annotations of one trace say: its blamed spans in ``rca.rank`` order and,
    per symptom span that names one, the cause it names (``rca.caused_by``)."""

    trace_id: bytes
    span_ids: frozenset[bytes]
    candidates: tuple[Blamed, ...]
    caused_by: Mapping[bytes, bytes]

    @property
    def top(self) -> Blamed | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True, slots=True)
class Label:
    """The ground truth of one case (``label.json``'s ``root_cause``) that span scoring reads."""

    service: str
    layer: str = ""                              # "" when the label names none
    span_ids: frozenset[bytes] = frozenset()     # where the fault originates
    symptom_span_ids: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class TraceScore:
    """One affected trace (it holds a labelled root-cause span) against its label."""

    trace_id: bytes
    rank: int | None          # the best rca.rank of a labelled span; None if none is blamed
    service_hit: bool         # the first candidate is in the labelled service
    layer_hit: bool | None    # the first candidate's rca.layer is the labelled one; None: no layer labelled
    confidence: float | None  # the first candidate's rca.confidence; None: no candidate

    def hit(self, k: int) -> bool:
        return self.rank is not None and self.rank <= k


def verdict_attributes(verdict: BatchVerdict) -> dict[SpanKey, Attributes]:
    """What the annotator adds to each span for ``verdict``: the attributes ``serve`` would export."""
    return {key: a.attributes for key, a in annotations(verdict).items()}


def export_attributes(paths: Iterable[str | Path]) -> dict[SpanKey, Attributes]:
    """The ``rca.*`` attributes of every span in exported trace files (OTLP/JSON lines as the
    ``file`` exporter writes them, or OTLP protobuf; gzip or not), empty for a span without
    any, so what the export lacks can be told from what it left unannotated.  An attribute
    appended twice (repeated fields concatenate) reads as its last value, as OTLP decoders do."""
    out: dict[SpanKey, Attributes] = {}

    def read(doc: dict[str, Any]) -> None:
        for _, span, intrinsics in otlpjson.spans(doc):
            attrs = otlpjson.attribute_values(span.get("attributes"))
            rca = {k: v for k, v in attrs.items() if k.startswith(RCA)}
            key = (intrinsics[0], intrinsics[1])
            out[key] = {**out[key], **rca} if key in out else rca

    for path in paths:
        trace = read_trace_file(path)
        if trace.request is not None:
            read(request_to_document(trace.request))
        else:
            trace.parse(read)
    return out


def outcomes(spans: pa.Table, attributes: Mapping[SpanKey, Attributes]) -> list[TraceOutcome]:
    """Per trace of ``spans`` (``trace_id``, ``span_id``, ``service`` columns), what the
    ``attributes`` of its spans say; traces in order of first appearance."""
    span_ids: dict[bytes, set[bytes]] = defaultdict(set)
    blamed: dict[bytes, list[Blamed]] = defaultdict(list)
    caused_by: dict[bytes, dict[bytes, bytes]] = defaultdict(dict)
    for trace_id, span_id, service in zip(*(spans.column(c).to_pylist() for c in ("trace_id", "span_id", "service"))):
        span_ids[trace_id].add(span_id)
        attrs = attributes.get((trace_id, span_id))
        if not attrs:
            continue
        if attrs.get("rca.root_cause") is True:
            blamed[trace_id].append(Blamed(span_id, int(attrs.get("rca.rank") or 0), service,
                                           str(attrs.get("rca.layer") or ""),
                                           float(attrs.get("rca.confidence") or 0.0)))
        cause = _span_id(attrs.get("rca.caused_by"))
        if cause is not None:
            caused_by[trace_id][span_id] = cause
    return [TraceOutcome(t, frozenset(ids), tuple(sorted(blamed[t], key=lambda b: (b.rank, b.span_id))),
                         caused_by[t])
            for t, ids in span_ids.items()]


def _span_id(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def score_trace(label: Label, outcome: TraceOutcome) -> TraceScore | None:
    """The trace against its label; None when it holds no labelled root-cause span (unaffected)."""
    if not label.span_ids & outcome.span_ids:
        return None
    ranks = [c.rank for c in outcome.candidates if c.span_id in label.span_ids]
    top = outcome.top
    return TraceScore(outcome.trace_id, min(ranks) if ranks else None,
                      top is not None and top.service == label.service,
                      (top is not None and top.layer == label.layer) if label.layer else None,
                      top.confidence if top is not None else None)


def caused_by_hits(label: Label, traces: Iterable[TraceOutcome]) -> tuple[int, int]:
    """(labelled symptom spans present in ``traces``, those whose ``rca.caused_by`` names a
    labelled root-cause span of the case)."""
    present = right = 0
    for t in traces:
        for span_id in label.symptom_span_ids & t.span_ids:
            present += 1
            right += t.caused_by.get(span_id) in label.span_ids
    return present, right


def services_from_outcomes(traces: Sequence[TraceOutcome]) -> list[tuple[str, float]]:
    """A window ranking of services read off the spans: by how many traces blame one of its
    spans first (then by their summed confidence), each with its share of those traces."""
    votes: Counter[str] = Counter()
    weight: Counter[str] = Counter()
    for t in traces:
        if t.top is not None:
            votes[t.top.service] += 1
            weight[t.top.service] += t.top.confidence
    total = sum(votes.values())
    return [(s, votes[s] / total) for s in sorted(votes, key=lambda s: (-votes[s], -weight[s], s))]
