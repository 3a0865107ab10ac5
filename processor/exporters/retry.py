"""Delivery for the OTLP exporters: bounded sending queue, retries with backoff.

Shaped like the collector's exporterhelper: a payload goes into a bounded
queue (``sending_queue``) drained by ``num_consumers`` tasks; each consumer
sends it, and on a retryable failure waits an exponentially growing, jittered
interval (``retry_on_failure``) — at least as long as the server asked for —
before trying again.  The transport (gRPC or HTTP) only performs one attempt
and classifies its result as an :class:`Attempt`; everything about when and
whether to try again lives here, once, for both.

Nothing is dropped silently: ``submit`` waits for room in a full queue
(backpressure), and whatever is given up on — a permanent error, retries
exhausted, or still undelivered when ``shutdown`` times out — is counted in
``exporter_send_failed_spans``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from processor.exporters.config import QueueConfig, RetryConfig
from processor.model import ExportPayload
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one send attempt, as the transport classified it."""

    ok: bool
    retryable: bool = False
    throttle: float | None = None  # seconds the server asked us to wait (RetryInfo / Retry-After)
    rejected: int = 0  # spans refused in a partial-success response (never retried, per OTLP)
    error: str = ""

    @classmethod
    def success(cls, rejected: int = 0) -> Attempt:
        return cls(ok=True, rejected=rejected)

    @classmethod
    def retry(cls, error: str, throttle: float | None = None) -> Attempt:
        return cls(ok=False, retryable=True, throttle=throttle, error=error)

    @classmethod
    def permanent(cls, error: str) -> Attempt:
        return cls(ok=False, error=error)


SendOnce = Callable[[bytes], Awaitable[Attempt]]


class Backoff:
    """Exponential backoff with jitter, as cenkalti/backoff (which the collector uses).

    Each delay is the current interval randomized by ±``randomization_factor``;
    the interval then grows by ``multiplier`` up to ``max_interval``.
    """

    def __init__(self, config: RetryConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._interval = config.initial_interval

    def next_delay(self) -> float:
        delta = self._config.randomization_factor * self._interval
        delay = self._interval - delta + self._rng.random() * 2 * delta
        self._interval = min(self._interval * self._config.multiplier, self._config.max_interval)
        return delay


class RetryingSender:
    """Queue, consumers and retry loop around one transport's ``send_once``."""

    def __init__(self, component_id: str, retry: RetryConfig, queue: QueueConfig,
                 telemetry: Telemetry, send_once: SendOnce, rng: random.Random | None = None) -> None:
        self._id = component_id
        self._retry = retry
        self._queue_config = queue
        self._send_once = send_once
        self._rng = rng or random.Random()
        self._sent = telemetry.exporter_sent_spans.labels(component_id)
        self._failed = telemetry.exporter_send_failed_spans.labels(component_id)
        self._retries = telemetry.exporter_retries.labels(component_id)
        self._queue_size = telemetry.exporter_queue_size.labels(component_id)
        self._queue_capacity = telemetry.exporter_queue_capacity.labels(component_id)
        self._queue: asyncio.Queue[ExportPayload] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._pending_puts = 0  # submit() calls waiting for room in a full queue
        self._inflight = 0  # inline sends (queue disabled) not yet finished
        self._idle = asyncio.Event()
        self._deadline: float | None = None  # loop time by which shutdown must end
        self._closed = False

    async def start(self) -> None:
        self._idle.set()
        if not self._queue_config.enabled:
            self._queue_capacity.set(0)
            return
        self._queue = asyncio.Queue(self._queue_config.queue_size)
        self._queue_capacity.set(self._queue_config.queue_size)
        self._queue_size.set(0)
        self._consumers = [asyncio.create_task(self._consume(), name=f"{self._id} consumer {i}")
                           for i in range(self._queue_config.num_consumers)]

    async def submit(self, payload: ExportPayload) -> None:
        """Queue ``payload`` (waiting while the queue is full), or send it inline without a queue."""
        if self._closed:
            self._give_up(payload, "exporter is shut down", settled=False)
            return
        if self._queue is None:
            await self._send_inline(payload)
            return
        self._pending_puts += 1
        try:
            await self._queue.put(payload)
        finally:
            self._pending_puts -= 1
        self._queue_size.set(self._queue.qsize())

    async def shutdown(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout``; count the rest as failed."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        if self._queue is None:
            await self._wait_inline(timeout)
            self._closed = True
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("exporter %s: shutdown timeout %.1fs reached with %d batches queued",
                        self._id, timeout, self._queue.qsize())
        self._closed = True
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        await self._fail_leftovers()

    # --- internals ---------------------------------------------------------

    async def _consume(self) -> None:
        assert self._queue is not None
        while True:
            payload = await self._queue.get()
            self._queue_size.set(self._queue.qsize())
            try:
                await self._deliver(payload)
            except asyncio.CancelledError:
                self._give_up(payload, "shutdown timeout reached while sending", settled=False)
                raise
            except Exception:  # component boundary: a bug in a transport must not kill the consumer
                log.exception("exporter %s: unexpected error sending %d spans", self._id, payload.span_count)
                self._failed.inc(payload.span_count)
                payload.settled()
            finally:
                self._queue.task_done()

    async def _send_inline(self, payload: ExportPayload) -> None:
        self._inflight += 1
        self._idle.clear()
        try:
            await self._deliver(payload)
        except Exception:  # component boundary, as in _consume
            log.exception("exporter %s: unexpected error sending %d spans", self._id, payload.span_count)
            self._failed.inc(payload.span_count)
            payload.settled()
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _wait_inline(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("exporter %s: shutdown timeout %.1fs reached with %d sends in flight",
                        self._id, timeout, self._inflight)

    async def _fail_leftovers(self) -> None:
        assert self._queue is not None
        while True:
            while not self._queue.empty():
                self._give_up(self._queue.get_nowait(), "not sent before shutdown timeout", settled=False)
                self._queue.task_done()
            if self._pending_puts == 0:
                break
            await asyncio.sleep(0)  # let submitters blocked on a full queue put their payload
        self._queue_size.set(0)

    async def _deliver(self, payload: ExportPayload) -> None:
        """Send with retries until success, a permanent error, or the retry budget runs out."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._retry, self._rng)
        started = loop.time()
        while True:
            attempt = await self._send_once(payload.data)
            if attempt.ok:
                rejected = min(attempt.rejected, payload.span_count)
                self._sent.inc(payload.span_count - rejected)
                if rejected:
                    self._failed.inc(rejected)
                payload.settled()
                return
            if not attempt.retryable or not self._retry.enabled:
                self._give_up(payload, attempt.error)
                return
            delay = backoff.next_delay()
            if attempt.throttle is not None:
                delay = max(delay, attempt.throttle)
            now = loop.time()
            max_elapsed = self._retry.max_elapsed_time
            if max_elapsed and now - started + delay > max_elapsed:
                self._give_up(payload, f"{attempt.error}; no more retries within max_elapsed_time "
                                       f"{max_elapsed:g}s")
                return
            if self._deadline is not None and now + delay > self._deadline:
                self._give_up(payload, f"{attempt.error}; shutting down, no time left to retry", settled=False)
                return
            log.info("exporter %s: %s; retrying %d spans in %.3fs",
                     self._id, attempt.error, payload.span_count, delay)
            self._retries.inc()
            await asyncio.sleep(delay)

    def _give_up(self, payload: ExportPayload, reason: str, settled: bool = True) -> None:
        """Count ``payload`` as failed; ``settled``: for good (not a shutdown leaving it
        undelivered, whose spans a durable store keeps for the next start)."""
        self._failed.inc(payload.span_count)
        if settled:
            log.error("exporter %s: dropping %d spans: %s", self._id, payload.span_count, reason)
            payload.settled()
        else:  # a durable store sends them again on the next start; without one they are lost
            log.error("exporter %s: %d spans not delivered before shutdown: %s", self._id, payload.span_count,
                      reason)
