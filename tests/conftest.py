"""Shared fixtures: real OTLP sinks and pipelines started on ports chosen at run time, and a
state directory (the default journal's) per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.harness import RunningPipeline, start_pipeline
from tests.support.otlp_sink import OtlpGrpcSink, OtlpHttpSink


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test's own XDG state directory, where the default journal lives (for
    `faulttrace serve` subprocesses too): no test writes to the user's, or shares one."""
    path = str(tmp_path_factory.mktemp("state"))
    monkeypatch.setenv("XDG_STATE_HOME", path)
    return path


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
