"""processor.memory_limiter: the collector's checks on its keys, what it measures (this process and
the analysis worker), and receivers refusing with retryable statuses while memory is short, driven
by real memory and real OTLP clients."""

from __future__ import annotations

import multiprocessing as mp
import time

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from processor.memory_limiter import MIB, MemoryLimiterConfig, process_tree_rss, total_memory
from tests.support import sdk
from tests.support.harness import config_dict, grpc_export, simple_request, start_pipeline, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("keys, message", [
    ({"limit_mib": 100}, "check_interval must be greater than zero"),
    ({"check_interval": "1s"}, "limit_mib or limit_percentage must be greater than zero"),
    ({"check_interval": "1s", "limit_mib": 100, "spike_limit_mib": 100}, "spike_limit_mib must be smaller than limit_mib"),
    ({"check_interval": "1s", "limit_percentage": 50, "spike_limit_percentage": 60},
     "spike_limit_percentage must be smaller than limit_percentage"),
    ({"check_interval": "1s", "limit_percentage": 120}, "less than or equal to 100"),
])
def test_the_collectors_checks(keys: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MemoryLimiterConfig(**keys)


def test_limits_in_mib_or_percent_with_a_default_spike_of_a_fifth() -> None:
    assert MemoryLimiterConfig(check_interval=1, limit_mib=500).limits(0) == (400 * MIB, 500 * MIB)
    assert MemoryLimiterConfig(check_interval=1, limit_mib=500, spike_limit_mib=100).limits(0) == (400 * MIB, 500 * MIB)
    assert MemoryLimiterConfig(check_interval=1, limit_percentage=80, spike_limit_percentage=15).limits(1000) == (650, 800)
    # limit_mib wins over limit_percentage, as in the collector
    assert MemoryLimiterConfig(check_interval=1, limit_mib=10, limit_percentage=80).limits(10**12)[1] == 10 * MIB
    assert 0 < total_memory()


def _hold(size: int, ready, done) -> None:
    block = bytearray(b"\x01") * size  # written, so resident
    ready.set()
    done.wait(30)
    del block


def test_what_is_measured_includes_child_processes() -> None:
    # The analysis worker is such a child: its memory is faulttrace's too.
    ctx = mp.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    before = process_tree_rss()
    child = ctx.Process(target=_hold, args=(200 * MIB, ready, done), daemon=True)
    child.start()
    try:
        assert ready.wait(30)
        assert process_tree_rss() - before > 150 * MIB
    finally:
        done.set()
        child.join(10)


def _limiter(**keys: object) -> dict:
    return {"memory_limiter": {"check_interval": "50ms", **keys}}


def _pipeline_config(limiter: dict) -> dict:
    config = config_dict({"debug": {}})
    config["processors"].update(limiter)
    config["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", "faulttrace"]
    return config


def test_above_the_soft_limit_every_receiver_refuses_with_a_retryable_status() -> None:
    running = start_pipeline(_pipeline_config(_limiter(limit_mib=2)))  # far below what any process uses
    try:
        # The OpenTelemetry SDK's exporter retries UNAVAILABLE, then gives up when its timeout runs out.
        exporter = sdk.grpc_exporter(running.ports["otlp/grpc"], timeout=1.5)
        assert sdk.export(exporter, sdk.make_spans("checkout")).name == "FAILURE"
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(running.grpc_target, simple_request(1))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "short of memory" in err.value.details()
        details = dict(err.value.trailing_metadata())["grpc-status-details-bin"]
        [retry] = [d for d in status_pb2.Status.FromString(details).details
                   if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
        reply = requests.post(running.http_url, data=simple_request(2).SerializeToString(),
                              headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
        assert running.metric("faulttrace_memory_limiter_refusing", processor="memory_limiter") == 1
        assert running.metric("faulttrace_memory_limiter_refused_requests_total", processor="memory_limiter") >= 3
        assert running.metric("faulttrace_receiver_accepted_spans_total", receiver="otlp", transport="grpc") == 0
        assert running.metric("faulttrace_memory_limiter_limit_bytes", processor="memory_limiter",
                              limit="hard") == 2 * MIB
    finally:
        running.stop()


def test_refuses_while_memory_is_high_and_accepts_again_once_it_drops() -> None:
    # Real memory: the limit sits 150 MiB above what this process (which hosts the pipeline) and its
    # children use now, the soft limit 50 MiB below that; 300 MiB held in this process crosses it.
    headroom = process_tree_rss() // MIB + 150
    running = start_pipeline(_pipeline_config(_limiter(limit_mib=headroom, spike_limit_mib=50)))
    refusing = lambda: running.metric("faulttrace_memory_limiter_refusing", processor="memory_limiter") == 1  # noqa: E731
    try:
        assert sdk.export(sdk.grpc_exporter(running.ports["otlp/grpc"]), sdk.make_spans("cart")).name == "SUCCESS"
        block = bytearray(b"\x01") * (300 * MIB)
        wait_until(refusing, 10, "the memory limiter to refuse")
        with pytest.raises(grpc.RpcError) as err:
            grpc_export(running.grpc_target, simple_request(10))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        del block
        wait_until(lambda: not refusing(), 10, "the memory limiter to accept again")
        time.sleep(0.1)
        assert sdk.export(sdk.grpc_exporter(running.ports["otlp/grpc"]), sdk.make_spans("cart")).name == "SUCCESS"
    finally:
        running.stop()
