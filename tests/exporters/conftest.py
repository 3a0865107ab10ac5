"""Fixtures for exporter tests (the sinks, ``grpc_sink`` / ``http_sink``, come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from processor.service.telemetry import Telemetry


@pytest.fixture
def telemetry() -> Telemetry:
    """A fresh registry per test, so metric assertions see only that test's exporter."""
    return Telemetry()
