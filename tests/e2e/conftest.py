"""End-to-end tests (real servers, real SDK exporters, several components at once) are ``slow``:
``pytest -m "not slow"`` is the fast loop."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.slow)
