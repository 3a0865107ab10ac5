"""A baseline file read once for several localizers (``analyzer.Seed``): the same baseline as each reading it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from processor.localizer.analyzer import LocalizerAnalyzer, Seed
from processor.localizer.history import History
from tests.support import localizer_synth as synth


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


def _learned(history: History) -> dict[str, list[tuple]]:
    """Everything the localizer reads of a history, rows sorted."""
    base, values, attrs = history.baseline(), history.values(), history.attributes()
    return {"ops": _rows(base.ops), "shapes": _rows(base.shapes), "values": _rows(values.values), "unknown": _rows(values.unknown),
            "attr_ops": _rows(attrs.ops), "attr_keys": _rows(attrs.keys), "attr_cat": _rows(attrs.cat),
            "attr_num": _rows(attrs.num), "seen": [(history.traces_seen,)]}


@pytest.fixture()
def baseline(tmp_path: Path) -> Path:
    path = tmp_path / "baseline.jsonl.gz"
    synth.write_otlp(synth.spans(n=150, seed=11), path)   # 150 traces: enough for the null's 10 windows
    synth.with_nodes(path, {"db": "node-a", "frontend": "node-b"})
    return path


def test_localizers_seeded_from_one_read_learn_what_each_reading_the_file_learns(baseline: Path) -> None:
    alone = LocalizerAnalyzer(baseline)
    seed = Seed(baseline)
    first = LocalizerAnalyzer(baseline, seed=seed)
    # what the first one learns after its seed is its own: the next starts from the seed
    first.history.seed(baseline)
    baseline.unlink()   # the next localizer reads nothing: the seed holds the file's spans and sketches
    second = LocalizerAnalyzer(baseline, seed=seed)
    try:
        assert _learned(second.history) == _learned(alone.history)
        assert _learned(first.history) != _learned(alone.history)
        assert second.null == alone.null and alone.null
    finally:
        for a in (alone, first, second):
            a.close()
