"""processor.annotator + processor.otlp.spanedit: verdicts become ``rca.*`` additions that the
standard OpenTelemetry protobuf ``Span`` parser reads back with the right value types."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dsl import TreeOutcome, load_rules
from processor.analysis.verdict import BatchVerdict, Candidate, Evidence, Symptom, TraceVerdict
from processor.annotator import annotate, annotations, late_annotations
from processor.model import ReleasedSpans
from processor.otlp.spanedit import Annotation, append_to_spans
from processor.otlp.tracefile import read_requests
from processor.otlp.wire import length_delimited
from processor.receivers.decode import decode
from processor.store import released_from_rows
from processor.tools.offline import analyze
from tests.support.harness import sid, tid

ROOT = Path(__file__).resolve().parents[1]
CODE_EXCEPTION = ROOT / "rules" / "tests" / "traces" / "code_exception.json"


def value(v: AnyValue) -> tuple[str, Any]:
    """(which AnyValue field is set, the Python value) — the type is part of what is checked."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return kind, [value(x) for x in v.array_value.values]
    return kind, getattr(v, kind)


def attrs(kvs: Any) -> dict[str, tuple[str, Any]]:
    return {a.key: value(a.value) for a in kvs}


def rca_attrs(span: Span) -> dict[str, tuple[str, Any]]:
    return {k: v for k, v in attrs(span.attributes).items() if k.startswith("rca.")}


# --- through real rules ---------------------------------------------------------------


@pytest.fixture(scope="module")
def annotated() -> tuple[list[bytes], list[bytes], list[Span]]:
    """The shipped code_exception trace, analysed by the built-in rules and annotated."""
    requests = read_requests(CODE_EXCEPTION)
    result = analyze(requests, load_rules([ROOT / "rules"]))
    spans = [s for r in requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    raw = [s.SerializeToString() for s in spans]
    adds = annotations(result.verdict)
    edits = {i: adds[(s.trace_id, s.span_id)] for i, s in enumerate(spans) if (s.trace_id, s.span_id) in adds}
    out = append_to_spans(raw, edits)
    return raw, out, [Span.FromString(b) for b in out]


def test_blamed_span_attributes_have_exact_types(annotated):
    raw, out, parsed = annotated
    blamed = parsed[3]
    assert blamed.span_id == sid(4) and blamed.name == "charge card"
    assert rca_attrs(blamed) == {
        "rca.root_cause": ("bool_value", True),
        "rca.rank": ("int_value", 1),
        "rca.confidence": ("double_value", 0.8),
        "rca.rule": ("array_value", [("string_value", "code.deepest_exception")]),
        "rca.layer": ("string_value", "code"),
        # the built-in tree request.failure fired through this span's rule
        "rca.fault_tree": ("string_value", "request.failure"),
        "rca.cut_set": ("array_value", [("string_value", "exception")]),
    }
    # The original bytes are a prefix; the original attributes and events come first, unchanged.
    assert out[3].startswith(raw[3])
    before = Span.FromString(raw[3])
    assert list(blamed.attributes)[:len(before.attributes)] == list(before.attributes)
    assert list(blamed.events)[:len(before.events)] == list(before.events)


def test_blamed_span_carries_a_finding_event(annotated):
    raw, _, parsed = annotated
    blamed, before = parsed[3], Span.FromString(raw[3])
    added = list(blamed.events)[len(before.events):]
    assert [e.name for e in added] == ["rca.finding", "rca.finding"]
    event = added[0]
    assert event.time_unix_nano == blamed.end_time_unix_nano
    assert attrs(event.attributes) == {
        "rca.rule": ("string_value", "code.deepest_exception"),
        "rca.layer": ("string_value", "code"),
        "rca.confidence": ("double_value", 0.8),
        "rca.message": ("string_value", "payments: charge card raised ValueError: card declined"),
    }
    # the fault tree's finding names the tree and the cut set that fired
    tree = attrs(added[1].attributes)
    assert tree["rca.fault_tree"] == ("string_value", "request.failure")
    assert tree["rca.cut_set"] == ("array_value", [("string_value", "exception")])
    assert "fired: cut set {exception}" in tree["rca.message"][1]


def test_root_span_carries_the_verdict(annotated):
    _, _, parsed = annotated
    root = parsed[0]
    assert not root.parent_span_id and root.name == "GET /checkout"
    assert rca_attrs(root) == {
        "rca.verdict.span_id": ("string_value", sid(4).hex()),
        "rca.verdict.service": ("string_value", "payments"),
        "rca.verdict.name": ("string_value", "charge card"),
        "rca.verdict.layer": ("string_value", "code"),
        "rca.verdict.rule": ("array_value", [("string_value", "code.deepest_exception")]),
        "rca.verdict.confidence": ("double_value", 0.8),
        "rca.verdict.candidates": ("int_value", 1),
        "rca.verdict.fault_tree": ("string_value", "request.failure"),
        # the root shows request.failure's top event: a symptom of the span its fired cut set blames
        "rca.symptom": ("bool_value", True),
        "rca.caused_by": ("string_value", sid(4).hex()),
    }
    assert not any(e.name.startswith("rca.") for e in root.events)
    # The verdict names a span of this trace that really is annotated as the cause.
    by_hex = {s.span_id.hex(): s for s in parsed}
    assert rca_attrs(by_hex[rca_attrs(root)["rca.verdict.span_id"][1]])["rca.root_cause"] == ("bool_value", True)


def test_untouched_spans_are_byte_identical(annotated):
    raw, out, parsed = annotated
    for i in (1, 2):
        assert out[i] is raw[i]
        assert not rca_attrs(parsed[i])


# --- hand-made verdicts -------------------------------------------------------------------


def candidate(n: int, rank: int, *evidence: Evidence, service: str = "svc", name: str = "op",
              start: int = 10, end: int = 20, depth: int = 1) -> Candidate:
    return Candidate(sid(n), service, name, depth, start, end, evidence, rank)


def apply(adds: dict[tuple[bytes, bytes], Annotation], trace: int, n: int) -> Span:
    original = Span(trace_id=tid(trace), span_id=sid(n), name=f"span {n}",
                    attributes=[KeyValue(key="keep", value=AnyValue(string_value="me"))])
    raw = original.SerializeToString()
    return Span.FromString(append_to_spans([raw], {0: adds[(tid(trace), sid(n))]})[0])


def late(trace_ids: list[bytes], span_ids: list[bytes], parents: list[bytes | None]) -> ReleasedSpans:
    raw = [Span(trace_id=t, span_id=s).SerializeToString() for t, s in zip(trace_ids, span_ids)]
    n = len(raw)
    return released_from_rows(trace_ids, span_ids, parents, raw, [0] * n, [0] * n, {}, {}, len(set(trace_ids)))


def test_annotate_edits_only_the_rows_named_and_appends_to_their_bytes():
    spans = late([tid(1), tid(2), tid(1), tid(2)], [sid(1), sid(2), sid(3), sid(4)], [None, None, sid(1), sid(2)])
    note = Annotation({"rca.symptom": True})
    edits = annotate(spans, {(tid(1), sid(3)): note, (tid(2), sid(2)): note, (tid(9), sid(9)): note})
    assert sorted(edits) == [1, 2]  # rows of spans named; a key no row has is ignored
    for row, data in edits.items():
        assert data == spans.raw[row] + note.encode()
        assert attrs(Span.FromString(data).attributes)["rca.symptom"] == ("bool_value", True)
    assert annotate(spans, {}) == {}


def test_every_candidate_is_annotated_with_its_own_rank_and_the_root_names_the_top():
    top = candidate(3, 1, Evidence("r.deep", "deep broke", 0.9, 4.5, "data"),
                    Evidence("r.other", "also", 0.5, 1.0, "code"), service="db", name="query", end=99)
    second = candidate(2, 2, Evidence("r.mid", "mid broke", 1.0, 4.0, "infrastructure"), start=7, end=0)
    adds = annotations(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (top, second))}))
    assert set(adds) == {(tid(1), sid(1)), (tid(1), sid(2)), (tid(1), sid(3))}

    deep = apply(adds, 1, 3)
    assert rca_attrs(deep) == {
        "rca.root_cause": ("bool_value", True), "rca.rank": ("int_value", 1),
        "rca.confidence": ("double_value", 0.9), "rca.layer": ("string_value", "data"),
        "rca.rule": ("array_value", [("string_value", "r.deep"), ("string_value", "r.other")]),
    }
    assert [(e.name, e.time_unix_nano, attrs(e.attributes)["rca.rule"], attrs(e.attributes)["rca.message"])
            for e in deep.events] == [("rca.finding", 99, ("string_value", "r.deep"), ("string_value", "deep broke")),
                                      ("rca.finding", 99, ("string_value", "r.other"), ("string_value", "also"))]

    mid = apply(adds, 1, 2)
    assert rca_attrs(mid)["rca.rank"] == ("int_value", 2)
    assert rca_attrs(mid)["rca.confidence"] == ("double_value", 1.0)  # a whole number stays a double
    assert [e.time_unix_nano for e in mid.events] == [7]  # no end time: the start
    assert attrs(mid.attributes)["keep"] == ("string_value", "me")

    root = apply(adds, 1, 1)
    assert rca_attrs(root) == {
        "rca.verdict.span_id": ("string_value", sid(3).hex()), "rca.verdict.service": ("string_value", "db"),
        "rca.verdict.name": ("string_value", "query"), "rca.verdict.layer": ("string_value", "data"),
        "rca.verdict.rule": ("array_value", [("string_value", "r.deep"), ("string_value", "r.other")]),
        "rca.verdict.confidence": ("double_value", 0.9), "rca.verdict.candidates": ("int_value", 2),
    }
    assert list(root.events) == []


def test_localizer_evidence_is_named_in_rca_evidence_not_in_rca_rule():
    # rca.rule names the rules that fired (DESIGN.md); the localizer's sources get their own attribute
    both = candidate(3, 1, Evidence("r.deep", "deep broke", 0.8, 4.0, "data"),
                     Evidence("localizer.latency", "3x its p99", 0.6, 1.8, "", "localizer"))
    alone = candidate(4, 1, Evidence("localizer.errors", "error origin", 0.7, 2.1, "", "localizer"))
    adds = annotations(BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (both,)),
                                     tid(2): TraceVerdict(tid(2), sid(1), (alone,))}))
    span = rca_attrs(apply(adds, 1, 3))
    assert span["rca.rule"] == ("array_value", [("string_value", "r.deep")])
    assert span["rca.evidence"] == ("array_value", [("string_value", "localizer.latency")])
    events = [attrs(e.attributes) for e in apply(adds, 1, 3).events]
    assert [e.get("rca.rule") for e in events] == [("string_value", "r.deep"), None]
    assert [e.get("rca.evidence") for e in events] == [None, ("string_value", "localizer.latency")]
    root = rca_attrs(apply(adds, 2, 1))
    assert root["rca.verdict.rule"] == ("array_value", [])
    assert root["rca.verdict.evidence"] == ("array_value", [("string_value", "localizer.errors")])
    assert rca_attrs(apply(adds, 1, 1))["rca.verdict.evidence"] == ("array_value", [("string_value", "localizer.latency")])


def test_a_blamed_root_gets_both_its_finding_and_the_verdict():
    c = candidate(1, 1, Evidence("r.root", "root broke", 0.7, 2.1, "config"), depth=0)
    adds = annotations(BatchVerdict({tid(5): TraceVerdict(tid(5), sid(1), (c,))}))
    assert list(adds) == [(tid(5), sid(1))]
    span = apply(adds, 5, 1)
    got = rca_attrs(span)
    assert got["rca.root_cause"] == ("bool_value", True)
    assert got["rca.verdict.span_id"] == ("string_value", sid(1).hex())
    assert got["rca.verdict.rule"] == ("array_value", [("string_value", "r.root")])
    assert [e.name for e in span.events] == ["rca.finding"]
    # Each key once: a parser that keeps the last duplicate must see the same values.
    keys = [a.key for a in span.attributes]
    assert len(keys) == len(set(keys))


def test_traces_are_annotated_separately_and_empty_verdicts_add_nothing():
    a = candidate(2, 1, Evidence("r.a", "in a", 0.5, 1.0, "code"), service="A")
    b = candidate(2, 1, Evidence("r.b", "in b", 0.5, 1.0, "data"), service="B")
    adds = annotations(BatchVerdict({
        tid(1): TraceVerdict(tid(1), sid(1), (a,)),
        tid(2): TraceVerdict(tid(2), sid(9), (b,)),
        tid(3): TraceVerdict(tid(3), sid(1), ()),      # nothing found: nothing added, not even a verdict
        tid(4): TraceVerdict(tid(4), None, (a,)),      # no root known: only the blamed span
    }))
    assert set(adds) == {(tid(1), sid(1)), (tid(1), sid(2)), (tid(2), sid(9)), (tid(2), sid(2)), (tid(4), sid(2))}
    assert rca_attrs(apply(adds, 1, 2))["rca.rule"] == ("array_value", [("string_value", "r.a")])
    assert rca_attrs(apply(adds, 2, 2))["rca.rule"] == ("array_value", [("string_value", "r.b")])
    assert rca_attrs(apply(adds, 2, 9))["rca.verdict.service"] == ("string_value", "B")
    assert not any(k.startswith("rca.verdict") for k in rca_attrs(apply(adds, 4, 2)))
    assert annotations(BatchVerdict()) == {}


def test_a_late_root_span_gets_its_traces_verdict_and_other_late_spans_nothing():
    top = candidate(3, 1, Evidence("code.x", "boom", 0.8, 2.4, "code"), service="payments")
    verdicts = {tid(1): TraceVerdict(tid(1), None, (top,))}
    adds = late_annotations(late([tid(1), tid(1), tid(2)], [sid(1), sid(4), sid(5)], [None, sid(1), None]),
                            verdicts.get)
    assert set(adds) == {(tid(1), sid(1))}  # the late child and the trace without a verdict: untouched
    got = rca_attrs(apply(adds, 1, 1))
    assert got["rca.verdict.span_id"] == ("string_value", sid(3).hex())
    assert got["rca.verdict.service"] == ("string_value", "payments")
    assert "rca.root_cause" not in got


def test_below_the_floor_a_candidate_keeps_its_findings_but_is_no_root_cause():
    weak = candidate(3, 1, Evidence("r.weak", "handled 429", 0.3, 1.2, "infrastructure"), end=50)
    weaker = candidate(4, 2, Evidence("localizer.errors", "error", 0.1, 0.3, "", "localizer"), end=60)
    verdict = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (weak, weaker), min_confidence=0.5)},
                           symptoms={tid(1): (Symptom(sid(2), sid(3)), Symptom(sid(5), None))})
    adds = annotations(verdict)
    assert set(adds) == {(tid(1), sid(3)), (tid(1), sid(4))}  # no verdict on the root, no symptom marked
    span = apply(adds, 1, 3)
    assert rca_attrs(span) == {}
    assert [(e.name, attrs(e.attributes)["rca.rule"], attrs(e.attributes)["rca.confidence"]) for e in span.events] == [
        ("rca.finding", ("string_value", "r.weak"), ("double_value", 0.3))]
    assert [attrs(e.attributes)["rca.evidence"] for e in apply(adds, 1, 4).events] == [("string_value", "localizer.errors")]
    assert late_annotations(late([tid(1)], [sid(1)], [None]), verdict.traces.get) == {}


def test_the_floor_keeps_the_candidates_above_it_and_their_symptoms():
    strong = candidate(3, 1, Evidence("r.strong", "broke", 0.8, 3.2, "code"))
    weak = candidate(4, 2, Evidence("r.weak", "also", 0.2, 0.4, "code"))
    verdict = BatchVerdict({tid(1): TraceVerdict(tid(1), sid(1), (strong, weak), min_confidence=0.5)},
                           symptoms={tid(1): (Symptom(sid(2), sid(3)), Symptom(sid(5), sid(4)), Symptom(sid(6), None))})
    adds = annotations(verdict)
    assert rca_attrs(apply(adds, 1, 3))["rca.root_cause"] == ("bool_value", True)
    assert "rca.root_cause" not in rca_attrs(apply(adds, 1, 4))
    assert rca_attrs(apply(adds, 1, 1))["rca.verdict.span_id"] == ("string_value", sid(3).hex())
    assert rca_attrs(apply(adds, 1, 2))["rca.caused_by"] == ("string_value", sid(3).hex())
    assert (tid(1), sid(5)) not in adds  # its cause is below the floor
    assert rca_attrs(apply(adds, 1, 6)) == {"rca.symptom": ("bool_value", True)}
    assert late_annotations(late([tid(1)], [sid(1)], [None]), verdict.traces.get)[(tid(1), sid(1))].attributes[
        "rca.verdict.span_id"] == sid(3).hex()


# --- property: whatever a verdict holds, annotated spans stay valid OTLP -------------------

_texts = st.text(max_size=12)  # any Unicode a rule message or a span name may carry
_evidence = st.builds(
    Evidence, source=_texts, message=st.text(max_size=40), confidence=st.floats(), score=st.floats(),
    layer=st.sampled_from(["code", "data", "infrastructure", ""]),
    kind=st.sampled_from(["rule", "fault_tree", "localizer"]), cut_set=st.lists(_texts, max_size=3).map(tuple))
_times = st.integers(0, 2**63 - 1)  # the store's BIGINT columns


@st.composite
def _verdicts(draw: st.DrawFn, trace: bytes, span_ids: list[bytes]) -> BatchVerdict:
    candidates = tuple(
        Candidate(span_id=span, service=draw(_texts), name=draw(_texts), depth=draw(st.integers(0, 50)),
                  start_ns=draw(_times), end_ns=draw(_times),
                  evidence=tuple(draw(st.lists(_evidence, min_size=1, max_size=3))), rank=rank,
                  probability=draw(st.one_of(st.none(), st.floats())))
        for rank, span in enumerate(draw(st.lists(st.sampled_from(span_ids), unique=True, max_size=3)), 1))
    trees = tuple(
        TreeOutcome(trace_id=trace, tree_id=draw(_texts), title=draw(_texts), layer="code", severity="high",
                    fired=draw(st.booleans()), confidence=draw(st.floats(0, 1)), cut_sets=(), spans=())
        for _ in range(draw(st.integers(0, 2))))
    root = draw(st.one_of(st.none(), st.sampled_from(span_ids)))
    symptoms = tuple(Symptom(s, draw(st.one_of(st.none(), st.sampled_from(span_ids))))
                     for s in draw(st.lists(st.sampled_from(span_ids), unique=True, max_size=3)))
    return BatchVerdict(traces={trace: TraceVerdict(trace, root, candidates, trees)}, symptoms={trace: symptoms})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), names=st.lists(_texts, min_size=1, max_size=4))
def test_annotated_spans_parse_as_spans_with_only_rca_additions(data: st.DataObject, names: list[str]) -> None:
    originals = []
    for n, name in enumerate(names, 1):
        span = Span(trace_id=tid(1), span_id=sid(n), name=name, start_time_unix_nano=n, end_time_unix_nano=n + 9)
        span.attributes.extend([KeyValue(key="http.route", value=AnyValue(string_value=name))])
        span.events.add(name="exception", time_unix_nano=n)
        originals.append(span.SerializeToString())
    verdict = data.draw(_verdicts(tid(1), [sid(n) for n in range(1, len(names) + 1)]))
    adds = annotations(verdict)
    annotated = append_to_spans(originals, {i: adds[(tid(1), sid(i + 1))] for i in range(len(names))
                                            if (tid(1), sid(i + 1)) in adds})
    # The spans' own bytes framed in a request, parsed whole as a receiver (ours, a downstream's) does.
    scope_spans = b"".join(length_delimited(2, raw) for raw in annotated)
    decoded = decode(length_delimited(1, length_delimited(2, scope_spans)))
    assert decoded.rejected_spans == 0 and decoded.batch.span_count == len(names)
    for before, after in zip(originals, annotated):
        assert after.startswith(before)
        added = Span.FromString(after[len(before):])  # appended fields parse on their own too
        assert all(a.key.startswith("rca.") for a in added.attributes)
        assert all(e.name == "rca.finding" and all(a.key.startswith("rca.") for a in e.attributes)
                   for e in added.events)
        assert not added.trace_id and not added.name  # nothing but attributes and events

