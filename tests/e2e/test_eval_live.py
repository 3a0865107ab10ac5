"""`faulttrace eval --live` on a tiny generated dataset: every case replayed through a running pipeline,
scored from the spans it exported, beside the offline figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from processor.tools.evaluation import LIVE_SOURCE


def _faulttrace(*args: str, cwd: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "processor.cli", *args], capture_output=True, text=True,
                         timeout=240, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_eval_live_scores_the_replayed_cases(tmp_path: Path) -> None:
    data = tmp_path / "shop"
    _faulttrace("demo", "--write-dataset", str(data), "--fault", "exception", "--fault", "token-limit",
                "--cases-per-kind", "1", "--traces-per-case", "10", "--baseline-traces", "80", cwd=tmp_path)
    lines = _faulttrace("eval", str(data), "--live", "--format", "json", cwd=tmp_path).splitlines()
    summaries = [json.loads(line) for line in lines if '"by_fault"' in line]
    offline, live = summaries
    assert "source" not in offline and live["source"] == LIVE_SOURCE
    assert live["cases"] == offline["cases"] == 2 and live["export_missing_traces"] == 0
    assert live["span_traces"] == offline["span_traces"] > 0
    assert live["span_ac@1"] > 0.5

    text = _faulttrace("eval", str(data), "--live", cwd=tmp_path)
    assert f"({LIVE_SOURCE})" in text
    table = text[text.index("offline (one batch per case"):].splitlines()
    # the demo's cases are span-labelled: serve's analyzer in process is the row between
    assert [row.split()[0] for row in table[3:6]] == ["offline", "as", "live"]
    assert table[4].startswith("as served")
