"""`faulttrace demo`'s choices before any pipeline starts: which faults, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.cli import main
from processor.demo.faults import KINDS, LAYERS, kinds_named
from processor.demo.live import by_layer


def test_faults_take_one_layer_after_another() -> None:
    order = by_layer(KINDS)
    assert sorted(k.name for k in order) == sorted(k.name for k in KINDS)
    assert [k.layer for k in order[:len(LAYERS)]] == list(LAYERS)   # a short run still covers every layer


def test_fault_kinds_by_name() -> None:
    assert [k.name for k in kinds_named(["token-limit", "exception", "token-limit"])] == ["token-limit", "exception"]
    assert kinds_named([]) == list(KINDS)
    with pytest.raises(ValueError, match="unknown fault kind nope; one of: exception, "):
        kinds_named(["nope"])


def test_an_unknown_fault_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--fault", "nope", "--seconds", "1"]) == 2
    assert "error: --fault: unknown fault kind nope" in capsys.readouterr().err


def test_write_dataset_takes_the_faults_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shop"
    assert main(["demo", "--write-dataset", str(out), "--fault", "zero-rows", "--cases-per-kind", "1",
                 "--traces-per-case", "4", "--baseline-traces", "4"]) == 0
    assert [p.name for p in (out / "cases").iterdir()] == ["zero-rows-1"]
