"""``faulttrace eval`` end to end on a tiny labelled dataset written into tmp_path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from processor.cli import main
from processor.tools.evaluation import (
    Case,
    CaseResult,
    Dataset,
    DatasetError,
    accuracy,
    brier_score,
    expected_calibration_error,
)
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
    assert summary["by_fault"]["cpu"]["span_ac@1"] == 1.0 and "span_ac@1" not in summary["by_fault"]["network"]
    assert json.loads(lines[0])["span_ranks"] == [1] * 40
    assert main(["eval", str(span_dataset)]) == 0
    out = capsys.readouterr().out
    assert "span level: 80 traces with a labelled span, AC@1 0.9" in out and "AC@3 1.000" in out
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


def test_accuracy_counts_misses_as_never_in_top_k() -> None:
    case = Case("x", Path("."), "a", "f")
    results = [CaseResult(case, 1, ()), CaseResult(case, 4, ()), CaseResult(case, None, ())]
    acc = accuracy(results)
    assert acc["ac@1"] == pytest.approx(1 / 3) and acc["ac@3"] == pytest.approx(1 / 3)
    assert acc["ac@5"] == pytest.approx(2 / 3)
    assert acc["avg@5"] == pytest.approx((1 + 1 + 1 + 2 + 2) / 15)


def test_span_accuracy_is_over_traces_not_cases() -> None:
    case = Case("x", Path("."), "a", "f", (b"\x01" * 8,))
    results = [CaseResult(case, 1, (), (1, 2, None)), CaseResult(case, 1, (), (1,))]
    acc = accuracy(results)
    assert acc["span_ac@1"] == pytest.approx(2 / 4) and acc["span_ac@3"] == pytest.approx(3 / 4)


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
    results = [CaseResult(case, 1, (), (1,), 0.9, ((0.8, True),)), CaseResult(case, 2, (), (None,), 0.6, ((0.4, False),))]
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
    assert "ECE" in out and "Brier" in out and re.search(r"span level: .*, ECE \d\.\d{3}, Brier \d\.\d{3}", out)
