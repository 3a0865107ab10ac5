"""Golden diagnostics: each ``golden/*.rules`` renders exactly as its ``.out``.

Regenerate after an intended change with
``UPDATE_GOLDEN=1 /tmp/venv/bin/pytest tests/dsl/test_golden.py`` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsl import check_paths
from dsl.diagnostics import render_all

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.glob("*.rules"))


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)  # paths in the output stay relative and stable
    diags = check_paths([name])
    actual = render_all(diags, {name: Path(name).read_text(encoding="utf-8")}) + "\n"
    expected_path = GOLDEN / (name.removesuffix(".rules") + ".out")
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(actual, encoding="utf-8")
    assert actual == expected_path.read_text(encoding="utf-8")


def test_every_golden_file_has_an_expectation():
    assert CASES and all((GOLDEN / (c.removesuffix(".rules") + ".out")).exists() for c in CASES)
