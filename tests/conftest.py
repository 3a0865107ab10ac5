"""Shared fixtures: real OTLP sinks and pipelines started on ports chosen at run time."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# pytest puts tests/ on sys.path (the tests import `otlp_sink`, `harness`), which makes
# tests/dsl/ a namespace-package candidate for `import dsl`; the editable install finds
# the real package only through a meta-path hook that runs after that.  Put the project
# root first so the real `dsl` (a regular package) wins, whichever test imports it first.
_ROOT = str(Path(__file__).resolve().parents[1])
if sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from harness import RunningPipeline, start_pipeline  # noqa: E402
from otlp_sink import OtlpGrpcSink, OtlpHttpSink  # noqa: E402


@pytest.fixture
def grpc_sink() -> Iterator[OtlpGrpcSink]:
    with OtlpGrpcSink() as sink:
        yield sink


@pytest.fixture
def http_sink() -> Iterator[OtlpHttpSink]:
    with OtlpHttpSink() as sink:
        yield sink


@pytest.fixture
def pipeline_factory() -> Iterator[Callable[[dict[str, Any]], RunningPipeline]]:
    """Start pipelines from config dicts; every one is stopped at teardown."""
    started: list[RunningPipeline] = []

    def start(config: dict[str, Any]) -> RunningPipeline:
        running = start_pipeline(config)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()
