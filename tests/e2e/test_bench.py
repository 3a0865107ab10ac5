"""``faulttrace bench`` end to end, briefly: every figure of a run is there (CPU per span for the
receiving process and its analysis worker, verdict latency), complete traces leave long before
decision_wait, and rotel's passthrough is measured (or skipped with the reason)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from processor.tools.bench import rotel_binary

pytestmark = pytest.mark.timeout(300)


def bench(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run([sys.executable, "-m", "processor.cli", "bench", "--runs", "1", "--format", "json",
                           *args], capture_output=True, text=True, timeout=280)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, lines, proc.stderr


def test_a_full_run_reports_cpu_per_process_and_verdict_latency():
    code, lines, err = bench("--seconds", "4", "--decision-wait", "5s", "--modes", "full", "rotel")
    *runs, summary = lines
    full = next(r for r in runs if r["mode"] == "full")
    assert set(full["cpu_us_per_span"]) == {"receiver", "analysis"}
    assert all(v > 0 for v in full["cpu_us_per_span"].values())
    if full["failed"]:   # a slow machine: flagged, never a rate of 0
        assert full["spans_per_s"] is None and code == 1 and summary["failed"]
    else:
        assert full["spans_per_s"] > 0
    assert full["verdict_latency_p50_s"] is not None
    binary, why = rotel_binary()
    if binary is None:
        assert summary["skipped"] == {"rotel": why} and "rotel skipped" in err
    else:
        rotel = next(r for r in runs if r["mode"] == "rotel")
        assert rotel["cpu_us_per_span"]["rotel"] > 0 and rotel["delivered"] == rotel["sent"]


def test_complete_traces_reach_the_sink_long_before_decision_wait():
    code, lines, _ = bench("--seconds", "4", "--decision-wait", "5s", "--modes", "pipeline")
    run, summary = lines
    assert code == 0 and not run["failed"] and summary["lossless"]
    assert run["verdict_latency_p99_s"] < 2.5   # the bench's traces arrive whole: complete_grace, not 5 s
