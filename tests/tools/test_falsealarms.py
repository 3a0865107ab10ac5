"""processor.tools.falsealarms and ``faulttrace eval --healthy``: bad input is a clear error before any
pipeline starts; the report's figures (the replay itself: tests/e2e/test_healthy_replay.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from processor.cli import main
from processor.tools.falsealarms import FalseAlarms, replay_healthy, write_text

HEALTHY = Path(__file__).resolve().parents[2] / "rules" / "tests" / "traces" / "healthy_429_retried.json"


def test_a_negative_pace_is_refused():
    with pytest.raises(ValueError, match="--pace -1"):
        replay_healthy(HEALTHY, None, pace=-1)


def test_the_cli_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["eval", str(tmp_path), "--healthy", str(HEALTHY), "--cold", "--pace", "-1"]) == 2
    assert "--pace -1" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "none"), "--healthy", str(HEALTHY)]) == 2  # no dataset to seed from
    assert capsys.readouterr().err.startswith("error: ")


def test_the_report_counts_tagged_traces_and_their_sources():
    r = FalseAlarms(400, 5000, 3, 0, {"localizer.errors": 2, "r.x": 1}, (0.7, 0.9, 0.8), 12.0, 0.05, "seed.jsonl")
    assert r.share == 0.0075
    doc = r.to_json()
    assert doc["median_confidence"] == 0.8 and list(doc["by_source"]) == ["localizer.errors", "r.x"]
    out = io.StringIO()
    write_text(r, "healthy.jsonl", out)
    text = out.getvalue()
    assert "3 of 400 (0.8%)" in text and "seeded with seed.jsonl" in text and "0.05s between requests" in text
