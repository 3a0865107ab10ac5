"""`faulttrace demo` end to end: a subprocess runs the pipeline on the simulated shop under one fault, ends by
itself, prints a root-cause report read off the exported spans and leaves those spans in --out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from processor.demo.faults import kind
from processor.demo.live import fault_window
from processor.demo.topology import Cluster
from processor.tools.readback import Readback, Tail

SEED = 3


def test_demo_reports_the_cause_of_one_fault_from_the_exported_spans(tmp_path: Path) -> None:
    out = tmp_path / "spans.jsonl"
    run = subprocess.run([sys.executable, "-m", "processor.cli", "demo", "--seconds", "3", "--fault", "zero-rows",
                          "--seed", str(SEED), "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = run.stdout
    assert "[1] zero-rows (data layer, silent cause)" in report
    assert "#1 cause " in report and "→ user saw " in report
    assert f"spans exported to {out}" in report

    # the same seed simulates the same requests: the labelled cause spans are known
    window = fault_window(1, kind("zero-rows"), SEED, Cluster.build(SEED))
    back = Readback()
    for doc in Tail(out).documents():
        back.add(doc)
    assert all(back.span_count(t.trace_id) == len(t.spans) for t in window.traces)
    blamed = [back.attributes[(t.trace_id, op.span_id)] for t in window.affected for op in t.causes]
    assert blamed and all(a.get("rca.root_cause") is True and a.get("rca.layer") == "data" for a in blamed)
    assert any(a.get("rca.rank") == 1 for a in blamed)
