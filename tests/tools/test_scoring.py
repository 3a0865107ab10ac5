"""What eval reads off the spans: the annotator's rca.* additions, or the same read back from an export."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict, rank_candidates
from processor.annotator import annotations
from processor.otlp.otlpjson import request_to_json
from processor.otlp.spanedit import append_to_spans
from processor.tools.scoring import (
    Label,
    caused_by_hits,
    export_attributes,
    outcomes,
    score_trace,
    services_from_outcomes,
    verdict_attributes,
)

T1, T2 = b"\x01" * 16, b"\x02" * 16
ROOT, CALL, QUERY, OTHER = (bytes([i]) * 8 for i in (10, 11, 12, 13))
SERVICES = {ROOT: "frontend", CALL: "checkout", QUERY: "db", OTHER: "db"}


def _candidate(span_id: bytes, layer: str, confidence: float, score: float) -> Candidate:
    return Candidate(span_id, SERVICES[span_id], "op", 2, 0, 1,
                     (Evidence("r", "why", confidence, score, layer),), probability=confidence)


def _verdict() -> BatchVerdict:
    """T1: QUERY blamed first (data), CALL second (code); ROOT a symptom caused by QUERY, OTHER
    one that names no cause. T2: nothing blamed."""
    cands = rank_candidates([_candidate(QUERY, "data", 0.7, 2.0), _candidate(CALL, "code", 0.2, 1.0)])
    return BatchVerdict({T1: TraceVerdict(T1, ROOT, cands)},
                        {T1: (Symptom(ROOT, QUERY, "inherited error"), Symptom(OTHER, None, "waited"))})


def _spans() -> pa.Table:
    rows = [(T1, s) for s in (ROOT, CALL, QUERY, OTHER)] + [(T2, b"\x20" * 8)]
    return pa.table({"trace_id": pa.array([t for t, _ in rows], pa.binary()),
                     "span_id": pa.array([s for _, s in rows], pa.binary()),
                     "service": [SERVICES.get(s, "frontend") for _, s in rows]})


def _exported(verdict: BatchVerdict, path: Path, protobuf: bool = False) -> Path:
    """The spans as ``serve`` exports them: each span's bytes with the annotator's additions
    appended (``spanedit``), regrouped under a resource, written as OTLP/JSON lines (gzip) or protobuf."""
    adds = annotations(verdict)
    spans = _spans()
    req = ExportTraceServiceRequest()
    for trace_id, span_id, service in zip(*(spans.column(c).to_pylist() for c in ("trace_id", "span_id", "service"))):
        raw = Span(trace_id=trace_id, span_id=span_id, name="op",
                   attributes=[KeyValue(key="rca.layer", value=AnyValue(string_value="stale"))]).SerializeToString()
        edits = {0: adds[(trace_id, span_id)]} if (trace_id, span_id) in adds else {}
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
        rs.scope_spans.add().spans.append(Span.FromString(append_to_spans([raw], edits)[0]))
    if protobuf:
        path.write_bytes(req.SerializeToString())
    else:
        path.write_bytes(gzip.compress((request_to_json(req) + "\n").encode()))
    return path


def test_outcomes_read_candidates_in_rank_order_and_caused_by() -> None:
    (t1, t2) = outcomes(_spans(), verdict_attributes(_verdict()))
    assert [(c.span_id, c.rank, c.service, c.layer) for c in t1.candidates] == [
        (QUERY, 1, "db", "data"), (CALL, 2, "checkout", "code")]
    assert t1.candidates[0].confidence == pytest.approx(0.7, abs=1e-3)
    assert t1.caused_by == {ROOT: QUERY}           # OTHER is a symptom that names no cause
    assert t1.span_ids == {ROOT, CALL, QUERY, OTHER}
    assert t2.candidates == () and t2.top is None and t2.caused_by == {}


@pytest.mark.parametrize("protobuf", [False, True])
def test_an_export_reads_as_the_verdict_it_was_annotated_with(tmp_path: Path, protobuf: bool) -> None:
    verdict = _verdict()
    path = _exported(verdict, tmp_path / "export", protobuf)
    from_export = export_attributes([path])
    # the span's own rca.layer="stale" came first; the appended annotation wins, as decoders read it
    assert from_export[(T1, QUERY)]["rca.layer"] == "data"
    assert outcomes(_spans(), from_export) == outcomes(_spans(), verdict_attributes(verdict))


def test_a_trace_is_scored_once_whatever_the_number_of_its_labelled_spans() -> None:
    (t1, t2) = outcomes(_spans(), verdict_attributes(_verdict()))
    # both QUERY and OTHER are where the fault originates; CALL's rank does not matter
    score = score_trace(Label("db", "data", frozenset({QUERY, OTHER})), t1)
    assert score is not None and score.rank == 1 and score.hit(1)
    assert score.service_hit and score.layer_hit is True
    # labelled span ranked second: a hit at 3, not at 1; first candidate's service and layer are wrong
    score = score_trace(Label("checkout", "code", frozenset({CALL})), t1)
    assert score is not None and score.rank == 2 and not score.hit(1) and score.hit(3)
    assert not score.service_hit and score.layer_hit is False
    # no layer labelled: layer not scored; a labelled span never blamed: no rank
    score = score_trace(Label("frontend", "", frozenset({ROOT})), t1)
    assert score is not None and score.rank is None and score.layer_hit is None and not score.hit(5)
    assert score_trace(Label("db", "data", frozenset({QUERY})), t2) is None    # not affected


def test_caused_by_counts_labelled_symptoms_pointing_at_a_labelled_cause() -> None:
    traces = outcomes(_spans(), verdict_attributes(_verdict()))
    # ROOT names QUERY (right), OTHER names nothing (wrong), an id absent from the traces is not counted
    assert caused_by_hits(Label("db", "", frozenset({QUERY}), frozenset({ROOT, OTHER, b"\x99" * 8})), traces) == (2, 1)
    assert caused_by_hits(Label("db", "", frozenset({CALL}), frozenset({ROOT})), traces) == (1, 0)


def test_services_read_off_the_spans_rank_by_traces_blamed_first() -> None:
    traces = outcomes(_spans(), verdict_attributes(_verdict()))
    assert services_from_outcomes(traces) == [("db", 1.0)]
    assert services_from_outcomes([]) == []
