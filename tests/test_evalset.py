"""``faulttrace eval`` end to end on a tiny labelled dataset written into tmp_path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "localizer"))
import synth  # noqa: E402

from processor.cli import main  # noqa: E402
from processor.evalset import CaseResult, Case, Dataset, DatasetError, accuracy  # noqa: E402

CASES = {
    "c1": ("payment", "cpu", synth.Faults(slow={"payment": 5.0})),
    "c2": ("cart", "network", synth.Faults(net={"cart": 5.0})),
    "c3": ("db", "exception", synth.Faults(error={"db"})),
    "c4": ("catalog", "return", synth.Faults(cut={"catalog"})),
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"name": "tiny", "level": "service", "cases": len(CASES)}))
    synth.write_otlp(synth.spans(n=80, seed=0), root / "baseline" / "traces.jsonl.gz")
    for i, (case_id, (service, fault, faults)) in enumerate(CASES.items()):
        synth.write_otlp(synth.spans(n=40, faults=faults, seed=i + 1), root / "cases" / case_id / "traces.jsonl.gz")
        (root / "cases" / case_id / "label.json").write_text(
            json.dumps({"root_cause": {"service": service, "fault": fault}, "inject_time_unix_nano": 0}))
    return root


def test_eval_json_last_line_is_the_summary(dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(dataset), "--format", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["cases"] == 4
    assert summary["ac@1"] == 1.0 and summary["ac@3"] == 1.0 and summary["avg@5"] == 1.0
    assert set(summary["by_fault"]) == {"cpu", "network", "exception", "return"}
    assert [json.loads(line)["rank"] for line in lines[:-1]] == [1, 1, 1, 1]


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
