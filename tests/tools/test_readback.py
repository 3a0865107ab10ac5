"""Verdicts read back from exported spans: the rca.* attributes and rca.finding events, as explain prints them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from processor.tools import explain
from processor.tools.readback import Readback, Tail

TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, CALLER, QUERY = "00000000000000a1", "00000000000000b2", "00000000000000c3"


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    if isinstance(value, list):
        return {"key": key, "value": {"arrayValue": {"values": [{"stringValue": v} for v in value]}}}
    return {"key": key, "value": {"stringValue": value}}


def _span(span_id: str, parent: str, name: str, start: int, end: int, error: bool, attrs: dict[str, Any],
          events: list[dict[str, Any]] = ()) -> dict[str, Any]:
    span = {"traceId": TRACE, "spanId": span_id, "name": name, "kind": 2, "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end), "attributes": [_kv(k, v) for k, v in attrs.items()],
            "events": list(events), "status": {"code": 2 if error else 0}}
    if parent:
        span["parentSpanId"] = parent
    return span


def _doc(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [_kv("service.name", service)]},
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": list(spans)}]}]}


def _exported() -> list[dict[str, Any]]:
    """A checkout whose stock query found no rows, as `serve` annotates it (the root arrives last)."""
    finding = {"name": "rca.finding", "timeUnixNano": "3000000", "attributes": [
        _kv("rca.rule", "data.empty_result_then_failure"), _kv("rca.layer", "data"), _kv("rca.confidence", 0.9),
        _kv("rca.message", "postgresql SELECT stock returned no rows; the work it served then failed")]}
    localizer = {"name": "rca.finding", "timeUnixNano": "3000000", "attributes": [
        _kv("rca.evidence", "localizer.silent"), _kv("rca.layer", ""), _kv("rca.confidence", 0.7),
        _kv("rca.message", "db.response.returned_rows=0, below its usual range")]}
    query = _span(QUERY, CALLER, "SELECT stock", 2_000_000, 3_000_000, False,
                  {"db.system.name": "postgresql", "rca.root_cause": True, "rca.rank": 1, "rca.confidence": 0.93,
                   "rca.rule": ["data.empty_result_then_failure"], "rca.evidence": ["localizer.silent"],
                   "rca.layer": "data"}, [finding, localizer])
    caller = _span(CALLER, ROOT, "POST /inventory/reserve", 1_000_000, 5_000_000, True,
                   {"rca.symptom": True, "rca.caused_by": QUERY})
    root = _span(ROOT, "", "POST /api/checkout", 0, 9_000_000, True,
                 {"rca.symptom": True, "rca.caused_by": QUERY, "rca.verdict.span_id": QUERY})
    return [_doc("inventory", query, caller), _doc("frontend", root)]


def test_a_trace_read_back_prints_as_explain_prints_its_chain() -> None:
    back = Readback()
    assert sum(back.add(doc) for doc in _exported()) == 3
    read = back.trace(bytes.fromhex(TRACE))
    (chain,), orphans = explain.chains(read.verdict, read.symptoms, read.spans)
    assert not orphans
    assert chain.cause.layer == "data" and chain.cause.rank == 1 and chain.cause.confidence == 0.93
    assert chain.cause.rules == ("data.empty_result_then_failure",)
    assert chain.cause.statistical == ("localizer.silent",)
    out = io.StringIO()
    explain.write_chain(chain, out, evidence=1)
    text = out.getvalue()
    assert "#1 cause inventory: SELECT stock 1.0ms  [data; data.empty_result_then_failure, localizer.silent] (0.93)" in text
    assert "data.empty_result_then_failure: postgresql SELECT stock returned no rows" in text
    assert "(+1 more: localizer.silent)" in text
    assert "→ explains inventory: POST /inventory/reserve 4.0ms ERROR  (rca.caused_by)" in text
    assert "→ user saw frontend: POST /api/checkout 9.0ms ERROR  (root span; rca.caused_by)" in text


def test_scoring_reads_the_same_attributes() -> None:
    back = Readback()
    for doc in _exported():
        back.add(doc)
    attrs = back.attributes[(bytes.fromhex(TRACE), bytes.fromhex(QUERY))]
    assert attrs["rca.root_cause"] is True and attrs["rca.rank"] == 1
    assert back.attributes[(bytes.fromhex(TRACE), bytes.fromhex(ROOT))]["rca.caused_by"] == QUERY


def test_a_trace_without_annotations_has_no_candidate() -> None:
    back = Readback()
    back.add(_doc("svc", _span(ROOT, "", "GET /", 0, 1_000_000, False, {})))
    read = back.trace(bytes.fromhex(TRACE))
    assert read.verdict.candidates == () and read.symptoms == ()
    assert read.spans.root is not None and read.spans.root["name"] == "GET /"


def test_tail_reads_whole_lines_once(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    tail = Tail(path)
    assert list(tail.documents()) == []          # not written yet
    first, second = (json.dumps(d) for d in _exported())
    path.write_text(first + "\n" + second[:10])  # the second line is still being written
    assert [len(d["resourceSpans"]) for d in tail.documents()] == [1]
    with open(path, "a") as f:
        f.write(second[10:] + "\n")
    assert len(list(tail.documents())) == 1
    assert list(tail.documents()) == []
