"""RetryingSender and Backoff against a scripted transport: retries, throttling, queue, shutdown,
refused data cut into parts."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import random
import time
import types
from collections.abc import Iterable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.exporters.config import QueueConfig, RetryConfig
from processor.exporters.retry import Attempt, Backoff, RetryingSender
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry
from tests.support.exporters import FAST_RETRY, make_request, metric, payload_of

CID = "otlp/test"


class ScriptedTransport:
    """Answers attempts from a script (then succeeds); records what it was sent."""

    def __init__(self, script: Iterable[Attempt | Exception] = ()) -> None:
        self.script = list(script)
        self.calls: list[tuple[bytes, float]] = []
        self.delivered: list[bytes] = []
        self.gate: asyncio.Event | None = None  # when set up, each attempt waits for it

    async def __call__(self, data: bytes) -> Attempt:
        self.calls.append((data, time.monotonic()))
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            if not step.ok:
                return step
        self.delivered.append(data)
        return Attempt.success()


def sender(transport: ScriptedTransport, telemetry: Telemetry, retry: dict | None = None,
           queue: dict | None = None) -> RetryingSender:
    return RetryingSender(CID, RetryConfig(**{**FAST_RETRY, **(retry or {})}),
                          QueueConfig(**(queue or {})), telemetry, transport, random.Random(7))


def payload(i: int, spans: int = 3) -> ExportPayload:
    return ExportPayload(f"payload-{i}".encode(), spans, 1)


def run_all(s: RetryingSender, payloads: list[ExportPayload], timeout: float = 5.0) -> None:
    async def main() -> None:
        await s.start()
        for p in payloads:
            await s.submit(p)
        await s.shutdown(timeout)

    asyncio.run(main())


def test_backoff_grows_by_multiplier_up_to_max_interval_with_bounded_jitter() -> None:
    config = RetryConfig(initial_interval=1, randomization_factor=0.5, multiplier=2, max_interval=5)
    backoff = Backoff(config, random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, interval in zip(delays, [1, 2, 4, 5, 5, 5]):
        assert interval * 0.5 <= delay <= interval * 1.5
    no_jitter = Backoff(config.model_copy(update={"randomization_factor": 0}), random.Random(1))
    assert [no_jitter.next_delay() for _ in range(5)] == [1, 2, 4, 5, 5]


def test_retryable_failures_are_retried_until_success_exactly_once(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("unavailable"), Attempt.retry("unavailable")])
    run_all(sender(transport, telemetry), [payload(1)])
    assert transport.delivered == [b"payload-1"]
    assert len(transport.calls) == 3
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 2
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 3
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 0


def test_permanent_error_is_not_retried_and_counts_failed(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.permanent("invalid argument")])
    run_all(sender(transport, telemetry), [payload(1), payload(2)])
    assert [data for data, _ in transport.calls] == [b"payload-1", b"payload-2"]
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 3
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 3


def test_throttle_hint_is_waited_even_when_backoff_is_shorter(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("slow down", throttle=0.25)])
    run_all(sender(transport, telemetry), [payload(1)])
    (_, first), (_, second) = transport.calls
    assert second - first >= 0.25


def test_gives_up_when_max_elapsed_time_would_be_exceeded(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("down")] * 1000)
    started = time.monotonic()
    run_all(sender(transport, telemetry, retry={"max_elapsed_time": 0.2}), [payload(1)])
    assert time.monotonic() - started < 2
    assert transport.delivered == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 3


def test_retry_disabled_gives_up_on_first_retryable_failure(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("down")])
    run_all(sender(transport, telemetry, retry={"enabled": False}), [payload(1)])
    assert len(transport.calls) == 1
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 3


def test_partial_success_counts_rejected_spans_as_failed(telemetry: Telemetry) -> None:
    async def transport(data: bytes) -> Attempt:
        return Attempt.success(rejected=1)

    s = RetryingSender(CID, RetryConfig(), QueueConfig(), telemetry, transport)
    run_all(s, [payload(1)])
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 2
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 1


def test_unexpected_transport_error_fails_that_payload_only(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([RuntimeError("bug")])
    run_all(sender(transport, telemetry, queue={"num_consumers": 1}), [payload(1), payload(2)])
    assert transport.delivered == [b"payload-2"]
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 3


def test_full_queue_makes_export_wait_instead_of_dropping(telemetry: Telemetry) -> None:
    transport = ScriptedTransport()
    s = sender(transport, telemetry, queue={"num_consumers": 1, "queue_size": 1})

    async def main() -> None:
        transport.gate = asyncio.Event()
        await s.start()
        await s.submit(payload(1))  # taken by the consumer, which blocks on the gate
        await asyncio.sleep(0.01)
        await s.submit(payload(2))  # fills the queue
        assert metric(telemetry, "faulttrace_exporter_queue_size", CID) == 1
        assert metric(telemetry, "faulttrace_exporter_queue_capacity", CID) == 1
        third = asyncio.create_task(s.submit(payload(3)))
        await asyncio.sleep(0.1)
        assert not third.done(), "export() must wait for room in a full queue"
        transport.gate.set()
        await asyncio.wait_for(third, 2)
        await s.shutdown(2)

    asyncio.run(main())
    assert transport.delivered == [b"payload-1", b"payload-2", b"payload-3"]
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 0


def test_an_idle_consumer_holds_no_delivered_payload(telemetry: Telemetry) -> None:
    """After a burst its payloads are free: a consumer waiting for the next one does not keep the
    last it delivered (each of num_consumers did, up to 3 MiB apiece, until the next came)."""
    transport = ScriptedTransport()
    s = sender(transport, telemetry, queue={"num_consumers": 3})

    async def main() -> list[str]:
        await s.start()
        sent = [payload(i) for i in range(6)]
        for i in range(len(sent)):
            await s.submit(sent[i])
        while len(transport.delivered) < len(sent):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        gc.collect()
        # A suspended coroutine refers to its frame's locals: a consumer holding a payload shows here.
        holders = [r.cr_code.co_name for i in range(len(sent)) for r in gc.get_referrers(sent[i])
                   if isinstance(r, types.CoroutineType)]
        await s.shutdown(1)
        return holders

    assert asyncio.run(main()) == []


def test_shutdown_drains_the_queue(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("blip")] * 5)
    payloads = [payload(i) for i in range(50)]
    run_all(sender(transport, telemetry, queue={"num_consumers": 2, "queue_size": 100}), payloads)
    assert sorted(transport.delivered) == sorted(p.data for p in payloads)
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 150


def test_shutdown_timeout_counts_undelivered_as_failed(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("down")] * 10_000)
    s = sender(transport, telemetry, retry={"max_elapsed_time": 0}, queue={"num_consumers": 2})
    started = time.monotonic()
    run_all(s, [payload(i) for i in range(10)], timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 30
    assert metric(telemetry, "faulttrace_exporter_queue_size", CID) == 0


def test_without_queue_export_returns_after_the_send(telemetry: Telemetry) -> None:
    transport = ScriptedTransport([Attempt.retry("blip")])
    s = sender(transport, telemetry, queue={"enabled": False})

    async def main() -> None:
        await s.start()
        await s.submit(payload(1))
        assert transport.delivered == [b"payload-1"]
        await s.shutdown(1)

    asyncio.run(main())
    assert metric(telemetry, "faulttrace_exporter_queue_capacity", CID) == 0


def test_export_after_shutdown_counts_failed(telemetry: Telemetry) -> None:
    transport = ScriptedTransport()
    s = sender(transport, telemetry)

    async def main() -> None:
        await s.start()
        await s.shutdown(1)
        await s.submit(payload(1))

    asyncio.run(main())
    assert transport.calls == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 3


def settling(i: int, settled: list[int]) -> ExportPayload:
    return ExportPayload(f"payload-{i}".encode(), 3, 1, on_settled=lambda: settled.append(i))


def test_a_payload_is_settled_when_delivered_or_given_up_for_good(telemetry: Telemetry) -> None:
    settled: list[int] = []
    transport = ScriptedTransport([Attempt.permanent("invalid"), Attempt.retry("down"), RuntimeError("bug")])
    run_all(sender(transport, telemetry, queue={"num_consumers": 1}), [settling(i, settled) for i in (1, 2, 3)])
    assert sorted(settled) == [1, 2, 3]  # refused for good, delivered after a retry, a transport bug
    settled.clear()
    run_all(sender(ScriptedTransport(), telemetry, queue={"enabled": False}), [settling(4, settled)])
    assert settled == [4]  # sent inline, without a queue


def test_a_payload_left_undelivered_by_shutdown_is_not_settled(telemetry: Telemetry) -> None:
    """A durable store keeps such spans for the next start: settling would lose them."""
    settled: list[int] = []
    transport = ScriptedTransport([Attempt.retry("down")] * 1000)
    s = sender(transport, telemetry, queue={"num_consumers": 1})

    async def main() -> None:
        await s.start()
        for i in (1, 2):  # one being retried, one waiting in the queue
            await s.submit(settling(i, settled))
        await asyncio.sleep(0.2)
        await s.shutdown(0.3)
        await s.submit(settling(3, settled))  # after shutdown

    asyncio.run(main())
    assert transport.delivered == [] and settled == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 9
    # the one submitted after shutdown could not even be queued (the collector's enqueue_failed)
    assert metric(telemetry, "faulttrace_exporter_enqueue_failed_spans_total", CID) == 3


# --- refused data: cut until only what is refused alone is left ----------------------------


class RefusingTransport:
    """Refuses every request holding ``marker`` as bad data, once per ``blips`` asks to retry first;
    takes the rest and keeps the spans it took."""

    def __init__(self, marker: bytes = b"poison", blips: int = 0) -> None:
        self.marker = marker
        self.blips = blips
        self.calls = 0
        self.taken: list[bytes] = []

    async def __call__(self, data: bytes) -> Attempt:
        self.calls += 1
        if self.blips:
            self.blips -= 1
            return Attempt.retry("blip")
        if self.marker in data:
            return Attempt.refusal("HTTP 400: bad span")
        request = ExportTraceServiceRequest.FromString(data)
        self.taken += [s.SerializeToString() for rs in request.resource_spans for ss in rs.scope_spans
                       for s in ss.spans]
        return Attempt.success()


def poisoned(poison: list[int], traces: int = 8) -> tuple[ExportPayload, list[bytes]]:
    """A payload of ``traces`` x 3 spans in two resources; spans at ``poison`` (indexes) are named
    "poison".  Also the good spans' bytes."""
    req = make_request(first_trace=1, traces=traces // 2, spans_per_trace=3)
    req.MergeFrom(make_request(first_trace=100, traces=traces - traces // 2, spans_per_trace=3, service="db"))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    for i in poison:
        spans[i].name = "poison"
    return payload_of(req), sorted(s.SerializeToString() for s in spans if s.name != "poison")


def test_a_refused_payload_is_cut_until_only_the_refused_spans_are_left(telemetry: Telemetry,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    settled: list[int] = []
    base, good = poisoned([4, 17])
    transport = RefusingTransport()
    run_all(sender(transport, telemetry), [dataclasses.replace(base, on_settled=lambda: settled.append(1))])
    assert sorted(transport.taken) == good
    assert settled == [1]
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 22
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 2
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 0
    assert transport.calls <= 1 + 2 * 2 * 5  # a bisection per bad span: log2(24) levels, two sends a level
    dropped = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(dropped) == 1 and "dropping 2 of 24 spans the downstream refused on their own: trace " in dropped[0]
    assert "(and 1 more part(s)): HTTP 400: bad span" in dropped[0]


def test_parts_are_retried_like_any_payload(telemetry: Telemetry) -> None:
    base, good = poisoned([0], traces=2)
    transport = RefusingTransport(blips=3)
    run_all(sender(transport, telemetry), [base])
    assert sorted(transport.taken) == good
    assert metric(telemetry, "faulttrace_exporter_retries_total", CID) == 3
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 1


def test_a_payload_refused_whole_is_dropped_span_by_span_and_settled_once(telemetry: Telemetry) -> None:
    settled: list[int] = []
    base, _ = poisoned(list(range(6)), traces=2)
    run_all(sender(RefusingTransport(), telemetry), [dataclasses.replace(base, on_settled=lambda: settled.append(1))])
    assert settled == [1]
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 6
    # Bytes that are not a request framed from spans cannot be cut: refused, dropped whole.
    transport = ScriptedTransport([Attempt.refusal("bad")])
    run_all(sender(transport, telemetry), [settling(7, settled)])
    assert len(transport.calls) == 1 and settled == [1, 7]
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 9


def test_shutdown_while_parts_are_pending_counts_the_rest_and_does_not_settle(telemetry: Telemetry) -> None:
    settled: list[int] = []
    base, _ = poisoned([5], traces=4)

    async def transport(data: bytes) -> Attempt:  # refuses the poisoned parts, asks to retry the others
        return Attempt.refusal("bad") if b"poison" in data else Attempt.retry("down")

    s = sender(transport, telemetry, retry={"max_elapsed_time": 0})
    run_all(s, [dataclasses.replace(base, on_settled=lambda: settled.append(1))], timeout=0.3)
    assert settled == []
    assert metric(telemetry, "faulttrace_exporter_send_failed_spans_total", CID) == 12
    assert metric(telemetry, "faulttrace_exporter_sent_spans_total", CID) == 0


@pytest.mark.parametrize("sizer, queue_size, held", [
    ("items", 7, [3, 3, 3]),            # 3 spans each: in while fewer than 7 are queued (0, 3, 6)
    ("bytes", 20, [9, 9, 9]),           # b"payload-N" is 9 bytes: in while fewer than 20 are queued
    ("requests", 3, [1, 1, 1]),
])
def test_the_sizer_says_what_queue_size_counts(telemetry: Telemetry, sizer: str, queue_size: int,
                                               held: list[int]) -> None:
    transport = ScriptedTransport()
    s = sender(transport, telemetry, queue={"num_consumers": 1, "queue_size": queue_size, "sizer": sizer})

    async def main() -> None:
        transport.gate = asyncio.Event()
        await s.start()
        await s.submit(payload(0))  # taken by the consumer, which blocks on the gate
        await asyncio.sleep(0.01)
        for i in range(1, len(held) + 1):
            await asyncio.wait_for(s.submit(payload(i)), 1)
        assert metric(telemetry, "faulttrace_exporter_queue_size", CID) == sum(held)
        assert metric(telemetry, "faulttrace_exporter_queue_capacity", CID) == queue_size
        waiting = asyncio.create_task(s.submit(payload(9)))
        await asyncio.sleep(0.1)
        assert not waiting.done(), "the queue is full in the sizer's unit"
        transport.gate.set()
        await asyncio.wait_for(waiting, 2)
        await s.shutdown(2)

    asyncio.run(main())
    assert len(transport.delivered) == len(held) + 2


def test_a_payload_larger_than_the_whole_queue_still_goes_alone(telemetry: Telemetry) -> None:
    transport = ScriptedTransport()
    run_all(sender(transport, telemetry, queue={"queue_size": 2, "sizer": "items"}), [payload(1, spans=50)])
    assert transport.delivered == [b"payload-1"]
