"""What exported spans say: verdicts read back from their ``rca.*`` attributes and ``rca.finding`` events.

A ``file`` exporter (or any OTLP/JSON capture downstream) holds the spans as
``serve`` annotated them.  ``Readback`` gathers such documents, one at a time
as they are written (``Tail`` follows a growing file), and rebuilds per trace
what a person would read off the spans: the blamed spans (``rca.root_cause``,
``rca.rank``, ``rca.confidence``, ``rca.layer``) with the evidence of their
``rca.finding`` events, and the symptoms with their ``rca.caused_by``.  It
gives them as the verdict types ``faulttrace explain`` prints
(``tools.explain.chains``), so the demo's report and explain's chains are one
piece of code, and as the attributes ``tools.scoring`` scores.

What the spans do not carry stays unknown: a symptom's reason (the link's
evidence; explain prints it, the annotator does not write it), a fault
tree's other cut sets, the window ranking of services.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.analysis.verdict import Candidate, Evidence, Symptom, TraceVerdict
from processor.otlp import otlpjson
from processor.tools.explain import Row, TraceSpans
from processor.tools.scoring import RCA, Attributes, SpanKey

FINDING = "rca.finding"


@dataclass(frozen=True, slots=True)
class ReadTrace:
    """One trace as exported: its spans, the verdict its annotations give, its symptoms."""

    spans: TraceSpans
    verdict: TraceVerdict
    symptoms: tuple[Symptom, ...]


class Readback:
    """Exported spans gathered by trace, with their ``rca.*`` attributes and ``rca.finding`` events."""

    def __init__(self) -> None:
        self.rows: dict[bytes, list[Row]] = defaultdict(list)
        self.attributes: dict[SpanKey, Attributes] = {}
        self._findings: dict[SpanKey, list[dict[str, Any]]] = {}

    def add(self, doc: dict[str, Any]) -> int:
        """The spans of one OTLP/JSON ``ExportTraceServiceRequest`` document; returns their number."""
        n = 0
        for _, span, (trace_id, span_id, parent, service, name, _kind, start, end, code, _msg) in otlpjson.spans(doc):
            n += 1
            self.rows[trace_id].append({"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
                                        "service": service, "name": name, "start_ns": start, "end_ns": end,
                                        "status_code": code})
            attrs = otlpjson.attribute_values(span.get("attributes"))
            rca = {k: v for k, v in attrs.items() if k.startswith(RCA)}
            key = (trace_id, span_id)
            self.attributes[key] = {**self.attributes.get(key, {}), **rca}
            findings = [otlpjson.attribute_values(e.get("attributes")) for e in span.get("events") or ()
                        if e.get("name") == FINDING]
            if findings:
                self._findings.setdefault(key, []).extend(findings)
        return n

    def span_count(self, trace_id: bytes) -> int:
        return len(self.rows.get(trace_id, ()))

    def trace(self, trace_id: bytes) -> ReadTrace:
        """The trace's spans and what their annotations say (no candidate if none is blamed)."""
        rows = self.rows.get(trace_id, [])
        candidates, symptoms = [], []
        root_id: bytes | None = None
        for row in rows:
            key = (trace_id, row["span_id"])
            attrs = self.attributes.get(key, {})
            if attrs.get("rca.verdict.span_id") is not None:  # the annotator's root span
                root_id = row["span_id"]
            if attrs.get("rca.root_cause") is True:
                candidates.append(self._candidate(row, attrs, self._findings.get(key, [])))
            if attrs.get("rca.symptom") is True:
                symptoms.append(Symptom(row["span_id"], _span_id(attrs.get("rca.caused_by")), "rca.caused_by"))
        candidates.sort(key=lambda c: (c.rank, c.span_id))
        spans = TraceSpans.of(rows, root_id)  # without a verdict, the first span without a parent
        root = spans.root["span_id"] if spans.root else None
        return ReadTrace(spans, TraceVerdict(trace_id, root, tuple(candidates)), tuple(symptoms))

    @staticmethod
    def _candidate(row: Row, attrs: Attributes, findings: list[dict[str, Any]]) -> Candidate:
        layer = str(attrs.get("rca.layer") or "")
        evidence = tuple(_evidence(f, layer) for f in findings)
        if not evidence:  # annotated without events: what the attributes name
            sources = [*(attrs.get("rca.rule") or ()), *(attrs.get("rca.evidence") or ())]
            evidence = (Evidence(", ".join(sources) or "rca", "", float(attrs.get("rca.confidence") or 0.0),
                                 1.0, layer),)
        return Candidate(row["span_id"], row["service"], row["name"], 0, row["start_ns"], row["end_ns"], evidence,
                         int(attrs.get("rca.rank") or 0), float(attrs.get("rca.confidence") or 0.0))


def _evidence(f: dict[str, Any], layer: str) -> Evidence:
    confidence = float(f.get("rca.confidence") or 0.0)
    e_layer = str(f.get("rca.layer") or "")
    # The ranking score is not exported; weighting the evidence that names the span's rca.layer
    # makes Candidate.layer give back the exported layer.
    score = confidence + (1.0 if e_layer and e_layer == layer else 0.0)
    message = str(f.get("rca.message") or "")
    if "rca.fault_tree" in f:
        return Evidence(str(f["rca.fault_tree"]), message, confidence, score, e_layer, "fault_tree",
                        tuple(f.get("rca.cut_set") or ()))
    if "rca.rule" in f:
        return Evidence(str(f["rca.rule"]), message, confidence, score, e_layer, "rule")
    return Evidence(str(f.get("rca.evidence") or "localizer"), message, confidence, score, e_layer, "localizer")


def _span_id(value: Any) -> bytes | None:
    try:
        return bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        return None


class Tail:
    """The OTLP/JSON lines appended to a file since the last read (a ``file`` exporter's output,
    uncompressed): only whole lines, so a line being written is read next time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0

    def documents(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if line.strip():
                yield otlpjson.parse_json(line)  # the one OTLP/JSON reader: nesting checked first
