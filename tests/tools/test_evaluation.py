"""``faulttrace eval`` end to end on a tiny labelled dataset written into tmp_path."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dsl import load_rules
from processor.analysis.build import rule_paths
from processor.annotator import annotations
from processor.cli import main
from processor.config import FaulttraceProcessorConfig
from processor.localizer import LocalizerAnalyzer
from processor.otlp.otlpjson import request_to_json
from processor.otlp.spanedit import append_to_spans
from processor.otlp.tracefile import read_requests
from processor.tools.evaluation import (
    Case,
    CaseResult,
    Dataset,
    DatasetError,
    TraceScore,
    accuracy,
    brier_score,
    evaluate,
    evaluate_served,
    expected_calibration_error,
)
from processor.tools.offline import analyze
from tests.support import localizer_synth as synth

CASES = {
    "c1": ("payment", "cpu", synth.Faults(slow={"payment": 5.0})),
    "c2": ("cart", "network", synth.Faults(net={"cart": 5.0})),
    "c3": ("db", "exception", synth.Faults(error={"db"})),
    "c4": ("catalog", "return", synth.Faults(cut={"catalog"})),
}
# Where labels carry span ids: the span where the fault originates in each trace.
ORIGINS = {"c1": ("payment", "Charge", None), "c3": ("db", "SELECT", "payment")}


def _origins(rows: list[dict], service: str, name: str, parent_service: str | None) -> list[str]:
    """Ids of the (service, name) spans, only those called from ``parent_service`` if given."""
    by_id = {r["span_id"]: r for r in rows}
    return [r["span_id"].hex() for r in rows if (r["service"], r["name"]) == (service, name)
            and (parent_service is None or by_id[r["parent_span_id"]]["service"] == parent_service)]


def _write(tmp_path: Path, span_labels: bool) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "level": "service", "cases": len(CASES)}))
    synth.write_otlp(synth.spans(n=80, seed=0), root / "baseline" / "traces.jsonl.gz")
    for i, (case_id, (service, fault, faults)) in enumerate(CASES.items()):
        rows = synth.spans(n=40, faults=faults, seed=i + 1)
        synth.write_otlp(rows, root / "cases" / case_id / "traces.jsonl.gz")
        rc: dict = {"service": service, "fault": fault}
        if span_labels and case_id in ORIGINS:
            rc["span_ids"] = _origins(rows, *ORIGINS[case_id])
        (root / "cases" / case_id / "label.json").write_text(json.dumps({"root_cause": rc, "inject_time_unix_nano": 0}))
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return _write(tmp_path, span_labels=False)


@pytest.fixture
def span_dataset(tmp_path: Path) -> Path:
    return _write(tmp_path, span_labels=True)


def test_eval_json_last_line_is_the_summary(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(dataset), "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["cases"] == 4
    assert summary["ac@1"] == 1.0 and summary["ac@3"] == 1.0 and summary["avg@5"] == 1.0
    assert set(summary["by_fault"]) == {"cpu", "network", "exception", "return"}
    assert [json.loads(line)["rank"] for line in lines[:-1]] == [1, 1, 1, 1]
    assert "span_ac@1" not in summary      # no span labels


def test_eval_scores_spans_when_labels_carry_span_ids(span_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(span_dataset), "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["span_traces"] == 80    # 40 traces in each of c1 and c3 contain a labelled span
    # c3's traces have two db origins (under catalog and under payment); the label names one
    assert summary["span_ac@1"] >= 0.95 and summary["span_ac@3"] == 1.0
    assert summary["span_service@1"] >= 0.95
    assert summary["by_fault"]["cpu"]["span_ac@1"] == 1.0 and "span_ac@1" not in summary["by_fault"]["network"]
    assert summary["by_fault"]["cpu"]["span_traces"] == 40
    assert json.loads(lines[0])["span_ranks"] == [1] * 40
    assert "span_layer" not in summary and "caused_by" not in summary    # no layer, no symptoms labelled
    assert main(["eval", str(span_dataset)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\noverall +80 +(1\.000|0\.9\d\d) +1\.000", out)     # the span table: traces, AC@1, AC@3
    assert "span rank 1 in 40 of 40 traces" in out


def test_eval_text_prints_ranks_and_table(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(dataset)]) == 0
    out = capsys.readouterr().out
    assert "c1" in out and "rank  1" in out
    assert "overall" in out and "AC@1" in out


def test_eval_ablation_switch_changes_the_result(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(dataset), "--format", "json", "--without", "errors"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["by_fault"]["exception"]["ac@1"] == 0.0


def test_eval_reports_a_broken_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "dataset.json" in capsys.readouterr().err
    with pytest.raises(DatasetError):
        Dataset.load(tmp_path)


def test_a_dataset_of_fault_free_traffic_only_seeds_eval_healthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "dataset.json").write_text('{"name": "calm"}')
    with pytest.raises(DatasetError, match="no cases"):
        Dataset.load(tmp_path)
    assert Dataset.load(tmp_path, need_cases=False).baseline is None
    # no baseline to seed with: said before any pipeline starts
    assert main(["eval", str(tmp_path), "--healthy", str(tmp_path / "x.jsonl")]) == 2
    assert "no baseline/traces.jsonl.gz to seed the pipeline with (--cold: none)" in capsys.readouterr().err
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "traces.jsonl.gz").write_bytes(b"")
    assert Dataset.load(tmp_path, need_cases=False).baseline == tmp_path / "baseline" / "traces.jsonl.gz"


def test_accuracy_counts_misses_as_never_in_top_k() -> None:
    case = Case("x", Path("."), "a", "f")
    results = [CaseResult(case, 1, ()), CaseResult(case, 4, ()), CaseResult(case, None, ())]
    acc = accuracy(results)
    assert acc["ac@1"] == pytest.approx(1 / 3) and acc["ac@3"] == pytest.approx(1 / 3)
    assert acc["ac@5"] == pytest.approx(2 / 3)
    assert acc["avg@5"] == pytest.approx((1 + 1 + 1 + 2 + 2) / 15)


def test_span_accuracy_is_over_traces_not_cases() -> None:
    case = Case("x", Path("."), "a", "f", (b"\x01" * 8,))
    first = CaseResult(case, 1, (), (_trace(1), _trace(2), _trace(None)))
    results = [first, CaseResult(case, 1, (), (_trace(1),))]
    acc = accuracy(results)
    assert acc["span_traces"] == 4
    assert acc["span_ac@1"] == pytest.approx(2 / 4) and acc["span_ac@3"] == pytest.approx(3 / 4)


def _trace(rank: int | None, confidence: float | None = None, service: bool = True,
           layer: bool | None = None) -> TraceScore:
    return TraceScore(b"\x00" * 16, rank, service, layer, confidence)


def test_calibration_figures_by_hand() -> None:
    pairs = [(0.95, True), (0.92, False), (0.55, True), (0.05, False)]
    # bins [0.9, 1]: accuracy 0.5 vs mean confidence 0.935; [0.5, 0.6): 1 vs 0.55; [0, 0.1): 0 vs 0.05
    assert expected_calibration_error(pairs) == pytest.approx(2 / 4 * 0.435 + 1 / 4 * 0.45 + 1 / 4 * 0.05)
    assert brier_score(pairs) == pytest.approx((0.05 ** 2 + 0.92 ** 2 + 0.45 ** 2 + 0.05 ** 2) / 4)
    assert expected_calibration_error([(1.0, True), (0.0, False)]) == 0.0   # 1.0 falls in the last bin
    assert expected_calibration_error([(0.7, True)] * 7 + [(0.7, False)] * 3) == pytest.approx(0.0)
    assert expected_calibration_error([]) == 0.0 and brier_score([]) == 0.0


def test_accuracy_reports_the_calibration_of_the_top_confidence() -> None:
    case = Case("x", Path("."), "a", "f", (b"\x01" * 8,))
    results = [CaseResult(case, 1, (), (_trace(1, 0.8),), 0.9), CaseResult(case, 2, (), (_trace(None, 0.4),), 0.6)]
    acc = accuracy(results)
    assert acc["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    assert acc["brier"] == pytest.approx((0.1 ** 2 + 0.6 ** 2) / 2)
    assert acc["span_ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.4)
    assert acc["span_brier"] == pytest.approx((0.2 ** 2 + 0.4 ** 2) / 2)


def test_eval_reports_calibration_end_to_end(span_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(span_dataset), "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary, rows = json.loads(lines[-1]), [json.loads(line) for line in lines[:-1]]
    assert all(0.0 < r["confidence"] <= 1.0 for r in rows)
    top = [(r["confidence"], r["rank"] == 1) for r in rows]
    assert summary["ece"] == round(expected_calibration_error(top), 4)
    assert summary["brier"] == round(brier_score(top), 4)
    assert 0.0 <= summary["span_ece"] <= 1.0 and 0.0 <= summary["span_brier"] <= 1.0
    assert "ece" in summary["by_fault"]["cpu"]
    assert main(["eval", str(span_dataset)]) == 0
    out = capsys.readouterr().out
    assert "ECE" in out and "Brier" in out
    assert re.search(r"first candidate's confidence: ECE \d\.\d{3}, Brier \d\.\d{3}", out)


# ---- known verdicts: a labelled dataset and the spans `serve` exported for it --------------------

def _sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


# Per trace: its spans (span number, service, parent number) and the rca.* attributes on them.
# `blame(rank, layer, confidence)` tags a root cause, `symptom(cause)` a symptom naming its cause.
def blame(rank: int, layer: str, confidence: float) -> dict:
    return {"rca.root_cause": True, "rca.rank": rank, "rca.layer": layer, "rca.confidence": confidence}


def symptom(cause: int | None) -> dict:
    return {"rca.symptom": True, **({"rca.caused_by": _sid(cause).hex()} if cause is not None else {})}


# case a (slow_query, layer data, service db)
A_TRACES = {
    # T1: the labelled query first; the root a symptom naming it
    1: {101: ("frontend", None, symptom(102)), 102: ("db", 101, blame(1, "data", 0.9))},
    # T2: five labelled queries (one slow node); the fourth blamed first: a hit, whatever the other four
    2: {201: ("frontend", None, symptom(205)), **{200 + i: ("db", 201, {}) for i in range(2, 7)},
        205: ("db", 201, blame(1, "data", 0.8))},
    # T3: the labelled query second, a frontend span first (wrong service and layer); the symptom names it
    3: {301: ("frontend", None, symptom(303)), 302: ("db", 301, blame(2, "data", 0.3)),
        303: ("frontend", 301, blame(1, "code", 0.6))},
    # T4: the labelled query, nothing blamed, the symptom names no cause
    4: {401: ("frontend", None, symptom(None)), 402: ("db", 401, {})},
    # T5: unaffected (no labelled span): its candidate counts for the service ranking only
    5: {501: ("frontend", None, {}), 502: ("db", 501, blame(1, "data", 0.9))},
}
# case b (null_return, layer code, service cart)
B_TRACES = {
    6: {601: ("frontend", None, symptom(602)), 602: ("cart", 601, blame(1, "code", 0.7))},
    # T7: labelled span fourth; the first candidate is another cart span with the right layer
    7: {701: ("frontend", None, {}), 702: ("cart", 701, blame(1, "code", 0.5)), 703: ("cart", 701, {}),
        704: ("cart", 703, blame(2, "code", 0.2)), 705: ("cart", 703, blame(3, "code", 0.1)),
        706: ("cart", 703, blame(4, "code", 0.05))},
}
# case c (cpu, no layer labelled, service payment)
C_TRACES = {8: {801: ("frontend", None, {}), 802: ("payment", 801, blame(1, "infrastructure", 0.95))}}

LABELS = {
    "a": ({"service": "db", "fault": "slow_query", "layer": "data",
           "span_ids": [_sid(n).hex() for n in (102, 202, 203, 204, 205, 206, 302, 402)]},
          # one listed symptom (999) is in no trace: not counted
          [_sid(n).hex() for n in (101, 201, 301, 401, 999)]),
    "b": ({"service": "cart", "fault": "null_return", "layer": "code",
           "span_ids": [_sid(n).hex() for n in (602, 706)]}, [_sid(601).hex()]),
    "c": ({"service": "payment", "fault": "cpu", "span_ids": [_sid(802).hex()]}, []),
}


def _otlp_lines(traces: dict[int, dict[int, tuple]], annotated: bool) -> bytes:
    lines = []
    for t, spans in traces.items():
        for n, (service, parent, attrs) in spans.items():
            span: dict = {"traceId": _tid(t).hex(), "spanId": _sid(n).hex(), "name": f"op{n}", "kind": 1,
                          "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"}
            if parent is not None:
                span["parentSpanId"] = _sid(parent).hex()
            if annotated and attrs:
                span["attributes"] = [{"key": k, "value": _any(v)} for k, v in attrs.items()]
            lines.append(json.dumps({"resourceSpans": [{
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [{"scope": {}, "spans": [span]}]}]}))
    return gzip.compress(("\n".join(lines) + "\n").encode())


def _any(v: object) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    """A span-level dataset and the file a `serve` it was replayed into exported."""
    root = tmp_path / "shop"
    (root / "cases").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"name": "shop", "level": "span", "cases": 3}))
    every = {}
    for case_id, traces in (("a", A_TRACES), ("b", B_TRACES), ("c", C_TRACES)):
        rc, symptoms = LABELS[case_id]
        (root / "cases" / case_id).mkdir()
        (root / "cases" / case_id / "traces.jsonl.gz").write_bytes(_otlp_lines(traces, annotated=False))
        (root / "cases" / case_id / "label.json").write_text(json.dumps({"root_cause": rc,
                                                                         "symptom_span_ids": symptoms}))
        every.update(traces)
    export = tmp_path / "export.jsonl.gz"
    export.write_bytes(_otlp_lines(every, annotated=True))
    return root, export


def test_eval_from_export_scores_each_affected_trace_once(exported: tuple[Path, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root, export = exported
    assert main(["eval", str(root), "--from-export", str(export), "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    s = json.loads(lines[-1])
    # affected traces: T1 T2 T3 T4 (a), T6 T7 (b), T8 (c); ranks 1 1 2 - 1 4 1
    assert s["span_traces"] == 7
    assert s["span_ac@1"] == round(4 / 7, 4) and s["span_ac@3"] == round(5 / 7, 4)
    assert s["span_ac@5"] == round(6 / 7, 4) and s["span_avg@5"] == round((4 + 5 + 5 + 6 + 6) / 35, 4)
    # first candidate in the labelled service: all but T3 (frontend) and T4 (none)
    assert s["span_service@1"] == round(5 / 7, 4)
    # layer over the six traces of a and b (c names none): all but T3 (code) and T4 (none)
    assert s["span_layer"] == round(4 / 6, 4) and s["span_layer_traces"] == 6
    # labelled symptoms present: 101 201 301 401 601; right: 101 (->102), 201 (->205), 601 (->602)
    assert s["symptom_spans"] == 5 and s["caused_by"] == 0.6
    top = [(0.9, True), (0.8, True), (0.6, False), (0.7, True), (0.5, False), (0.95, True)]
    assert s["span_brier"] == round(brier_score(top), 4) and s["span_ece"] == round(expected_calibration_error(top), 4)
    by = s["by_fault"]
    assert (by["slow_query"]["span_traces"], by["slow_query"]["span_ac@1"], by["slow_query"]["span_ac@3"]) == (4, 0.5, 0.75)
    assert (by["null_return"]["span_traces"], by["null_return"]["span_ac@1"], by["null_return"]["span_ac@3"]) == (2, 0.5, 0.5)
    assert by["null_return"]["span_ac@5"] == 1.0 and by["null_return"]["caused_by"] == 1.0
    assert (by["cpu"]["span_traces"], by["cpu"]["span_ac@1"]) == (1, 1.0) and "span_layer" not in by["cpu"]
    assert by["slow_query"]["caused_by"] == 0.5 and "caused_by" not in by["cpu"]
    # services read off the spans: a's traces blame db first three times, frontend once
    rows = {json.loads(line)["case"]: json.loads(line) for line in lines[:-1]}
    assert rows["a"]["top"] == ["db", "frontend"] and rows["a"]["rank"] == 1 and rows["a"]["confidence"] == 0.75
    assert rows["a"]["span_ranks"] == [1, 1, 2, None] and rows["b"]["span_ranks"] == [1, 4]
    assert (rows["a"]["symptom_spans"], rows["a"]["caused_by_right"]) == (4, 2)
    assert s["source"].startswith("from ") and s["ac@1"] == 1.0 and s["export_missing_traces"] == 0


def test_eval_text_shows_the_span_table_per_fault_kind(exported: tuple[Path, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root, export = exported
    assert main(["eval", str(root), "--from-export", str(export)]) == 0
    out = capsys.readouterr().out
    assert "a  slow_query" in out and "span rank 1 in 2 of 4 traces  caused_by right on 2 of 4 symptoms" in out
    table = out[out.index("spans, per affected trace"):]
    assert re.search(r"\noverall +7 +0\.571 +0\.714 +0\.857 +0\.743 +0\.714 +0\.667 +0\.600\n", table)
    assert re.search(r"\nslow_query +4 +0\.500 +0\.750 +0\.750 +0\.700 +0\.500 +0\.500 +0\.500\n", table)
    assert re.search(r"\ncpu +1 +1\.000 +1\.000 +1\.000 +1\.000 +1\.000 +- +-\n", table)
    assert "caused_by over 5 labelled symptom spans; layer over 6 traces whose label names one" in table


def test_eval_from_export_of_nothing_annotated_scores_zero(exported: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = exported
    bare = tmp_path / "bare.jsonl.gz"
    bare.write_bytes(_otlp_lines({**A_TRACES, **B_TRACES, **C_TRACES}, annotated=False))
    assert main(["eval", str(root), "--from-export", str(bare), "--format", "json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["span_traces"] == 7 and s["span_ac@5"] == 0.0 and s["caused_by"] == 0.0 and s["ac@5"] == 0.0
    assert s["export_missing_traces"] == 0       # every trace is there, none annotated
    # an export of case a's traces only: the others are missing, and said so
    partial = tmp_path / "partial.jsonl.gz"
    partial.write_bytes(_otlp_lines(A_TRACES, annotated=True))
    assert main(["eval", str(root), "--from-export", str(partial), "--format", "json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["export_missing_traces"] == 3 and s["span_ac@1"] == round(2 / 7, 4)
    assert main(["eval", str(root), "--from-export", str(partial)]) == 0
    assert "warning: 3 traces of the cases are not in the export at all" in capsys.readouterr().out
    assert main(["eval", str(root), "--from-export", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_in_process_and_exported_annotations_score_alike(span_dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """What eval computes in process is what it reads from the spans `serve` would export: the
    same analysis, its additions appended to each span's bytes by the annotator, read back."""
    dataset = Dataset.load(span_dataset)
    rules = load_rules(rule_paths(FaulttraceProcessorConfig()))
    export = tmp_path / "export.jsonl"
    with export.open("w") as out:
        for case in dataset.cases:
            requests = read_requests(case.traces)
            localizer = LocalizerAnalyzer(dataset.baseline)
            try:
                adds = annotations(analyze(requests, rules, localizer).verdict)
            finally:
                localizer.close()
            for req in requests:
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        raw = [span.SerializeToString() for span in ss.spans]
                        edits = {i: adds[(s.trace_id, s.span_id)] for i, s in enumerate(ss.spans)
                                 if (s.trace_id, s.span_id) in adds}
                        annotated = [Span.FromString(b) for b in append_to_spans(raw, edits)]
                        del ss.spans[:]
                        ss.spans.extend(annotated)
                out.write(request_to_json(req) + "\n")
    assert main(["eval", str(span_dataset), "--format", "json"]) == 0
    in_process = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", str(span_dataset), "--from-export", str(export), "--format", "json"]) == 0
    from_export = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    span_keys = [k for k in in_process if k.startswith("span_")]
    assert span_keys and {k: in_process[k] for k in span_keys} == {k: from_export[k] for k in span_keys}


def test_as_served_weighs_the_findings_where_the_caller_saw_no_failure(span_dataset: Path) -> None:
    """``evaluate_served`` analyzes as ``serve`` does: in c1 (a slow payment the root absorbed
    within what 80 baseline traces can call abnormal) the findings are weighed by their healthy
    firing rates, so each first candidate is less sure than offline; c3's roots failed (an error),
    and there the verdicts are the offline ones."""
    dataset = Dataset.load(span_dataset)
    offline = {r.case.case_id: r for r in evaluate(dataset)}
    served = {r.case.case_id: r for r in evaluate_served(dataset)}
    assert offline.keys() == served.keys()
    for case_id in ("c1", "c3"):
        assert [t.trace_id for t in served[case_id].traces] == [t.trace_id for t in offline[case_id].traces]
        assert all(t.rank == 1 for t in served[case_id].traces)
    pairs = list(zip(offline["c1"].traces, served["c1"].traces, strict=True))
    assert pairs and all(s.confidence < o.confidence for o, s in pairs)
    assert served["c3"].traces == offline["c3"].traces
