"""Delivery for the OTLP exporters: bounded sending queue, retries with backoff.

Shaped like the collector's exporterhelper: a payload goes into a bounded
queue (``sending_queue``, ``queue_size`` payloads, spans or bytes as its
``sizer`` says) drained by ``num_consumers`` tasks; each consumer
sends it, and on a retryable failure waits an exponentially growing, jittered
interval (``retry_on_failure``) — at least as long as the server asked for —
before trying again.  The transport (gRPC or HTTP) only performs one attempt
and classifies its result as an :class:`Attempt`; everything about when and
whether to try again lives here, once, for both.

A payload the downstream refuses as data (malformed, unprocessable: an
:meth:`Attempt.refusal`) is cut in halves (``otlp.payload.split_payload``:
by resource, then scope, then span) and each half delivered the same way, so
one bad span never costs the others: only what the downstream refuses alone
is dropped, logged once with its trace id.  The payload settles once, when
every part is done.

Nothing is dropped silently: ``submit`` waits for room in a full queue
(backpressure), and whatever is given up on — a permanent error, retries
exhausted, or still undelivered when ``shutdown`` times out — is counted in
``exporter_send_failed_spans``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from processor.exporters.config import QueueConfig, RetryConfig
from processor.model import ExportPayload
from processor.otlp.payload import span_ids, split_payload
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
    refused: bool = False  # permanent, and about the data: a part of it may still be taken

    @classmethod
    def success(cls, rejected: int = 0) -> Attempt:
        return cls(ok=True, rejected=rejected)

    @classmethod
    def retry(cls, error: str, throttle: float | None = None) -> Attempt:
        return cls(ok=False, retryable=True, throttle=throttle, error=error)

    @classmethod
    def permanent(cls, error: str) -> Attempt:
        return cls(ok=False, error=error)

    @classmethod
    def refusal(cls, error: str) -> Attempt:
        """Not retryable, and because of what the payload holds (malformed, unprocessable), not
        because of who sends it or where: the parts of it the downstream does take are sent."""
        return cls(ok=False, error=error, refused=True)


SendOnce = Callable[[bytes], Awaitable[Attempt]]

# sending_queue.sizer: what queue_size counts.
SIZERS: dict[str, Callable[[ExportPayload], int]] = {
    "requests": lambda payload: 1,
    "items": lambda payload: payload.span_count,
    "bytes": lambda payload: len(payload.data),
}


class SizedQueue(asyncio.Queue[ExportPayload]):
    """The sending queue, its capacity counted by the sizer: payloads (``requests``), spans
    (``items``) or bytes.  A payload is let in while what is queued is below the capacity, so the
    last one in may pass it, and one larger than the whole capacity still goes in, alone."""

    def __init__(self, capacity: int, sizer: str) -> None:
        super().__init__()
        self.capacity = capacity
        self.size = 0  # in the sizer's unit
        self._weigh = SIZERS[sizer]

    def full(self) -> bool:
        return self.size >= self.capacity

    def _put(self, item: ExportPayload) -> None:
        super()._put(item)
        self.size += self._weigh(item)

    def _get(self) -> ExportPayload:
        item = super()._get()
        self.size -= self._weigh(item)
        return item


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


class _Outcome(enum.Enum):
    SENT = "sent"
    REFUSED = "refused"  # permanently, because of its data
    FAILED = "failed"  # given up on for good: another permanent error, or retries exhausted
    UNSENT = "unsent"  # shutdown came first: not settled, a durable store sends it again


@dataclass(slots=True)
class _Tally:
    """What became of one payload's spans so far, across the parts it was cut into."""

    counted: int = 0  # spans counted as sent or failed
    refused: list[tuple[ExportPayload, str]] = field(default_factory=list)  # dropped: refused alone
    cut: bool = False  # the payload was sent in parts (said once in the log)


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
        self._enqueue_failed = telemetry.exporter_enqueue_failed_spans.labels(component_id)
        self._queue_size = telemetry.exporter_queue_size.labels(component_id)
        self._queue_capacity = telemetry.exporter_queue_capacity.labels(component_id)
        self._queue: SizedQueue | None = None
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
        self._queue = SizedQueue(self._queue_config.queue_size, self._queue_config.sizer)
        self._queue_capacity.set(self._queue_config.queue_size)
        self._queue_size.set(0)
        self._consumers = [asyncio.create_task(self._consume(), name=f"{self._id} consumer {i}")
                           for i in range(self._queue_config.num_consumers)]

    async def submit(self, payload: ExportPayload) -> None:
        """Queue ``payload`` (waiting while the queue is full), or send it inline without a queue."""
        if self._closed:
            self._enqueue_failed.inc(payload.span_count)
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
        self._queue_size.set(self._queue.size)

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
            self._queue_size.set(self._queue.size)
            try:
                await self._deliver(payload)  # counts and settles whatever happens, cancellation too
            finally:
                self._queue.task_done()
            # Not held while waiting for the next: after a burst each consumer kept its last
            # payload (up to 3 MiB) until more came (9 MiB of 10 after the bench's pipeline mode).
            del payload

    async def _send_inline(self, payload: ExportPayload) -> None:
        self._inflight += 1
        self._idle.clear()
        try:
            await self._deliver(payload)
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
        """Deliver every part of ``payload`` the downstream takes; settle it once, when all are done."""
        tally = _Tally()
        try:
            settled = await self._deliver_part(payload, tally)
        except asyncio.CancelledError:
            self._failed.inc(payload.span_count - tally.counted)
            log.error("exporter %s: %d spans not delivered before shutdown: shutdown timeout reached while "
                      "sending", self._id, payload.span_count - tally.counted)
            raise
        except Exception:  # component boundary: a bug in a transport must not kill the consumer
            log.exception("exporter %s: unexpected error sending %d spans", self._id, payload.span_count)
            self._failed.inc(payload.span_count - tally.counted)
            settled = True
        if tally.refused:
            self._log_refused(payload, tally)
        if settled:
            payload.settled()
        else:  # shutdown left the rest undelivered: counted, and kept by a durable store for the next start
            self._failed.inc(payload.span_count - tally.counted)

    async def _deliver_part(self, part: ExportPayload, tally: _Tally) -> bool:
        """Send ``part``, cutting it where the downstream refuses its data; False if shutdown
        left some of it undelivered (not counted yet)."""
        outcome, attempt = await self._send(part)
        if outcome is _Outcome.REFUSED:
            halves = split_payload(part)
            if halves:
                if not tally.cut:
                    tally.cut = True
                    log.info("exporter %s: %s; sending the %d spans in parts to find what is refused",
                             self._id, attempt.error, part.span_count)
                for half in halves:
                    if not await self._deliver_part(half, tally):
                        return False
                return True
            tally.refused.append((part, attempt.error))
            self._failed.inc(part.span_count)
        elif outcome is _Outcome.SENT:
            rejected = min(attempt.rejected, part.span_count)
            self._sent.inc(part.span_count - rejected)
            if rejected:
                self._failed.inc(rejected)
        elif outcome is _Outcome.FAILED:
            log.error("exporter %s: dropping %d spans: %s", self._id, part.span_count, attempt.error)
            self._failed.inc(part.span_count)
        else:
            log.error("exporter %s: %d spans not delivered before shutdown: %s", self._id, part.span_count,
                      attempt.error)
            return False
        tally.counted += part.span_count
        return True

    async def _send(self, part: ExportPayload) -> tuple[_Outcome, Attempt]:
        """Attempts until success, a permanent error, or the retry budget runs out."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self._retry, self._rng)
        started = loop.time()
        while True:
            attempt = await self._send_once(part.data)
            if attempt.ok:
                return _Outcome.SENT, attempt
            if attempt.refused:
                return _Outcome.REFUSED, attempt
            if not attempt.retryable or not self._retry.enabled:
                return _Outcome.FAILED, attempt
            delay = backoff.next_delay()
            if attempt.throttle is not None:
                delay = max(delay, attempt.throttle)
            now = loop.time()
            max_elapsed = self._retry.max_elapsed_time
            if max_elapsed and now - started + delay > max_elapsed:
                return _Outcome.FAILED, Attempt.permanent(
                    f"{attempt.error}; no more retries within max_elapsed_time {max_elapsed:g}s")
            if self._deadline is not None and now + delay > self._deadline:
                return _Outcome.UNSENT, Attempt.permanent(f"{attempt.error}; shutting down, no time left to retry")
            log.info("exporter %s: %s; retrying %d spans in %.3fs",
                     self._id, attempt.error, part.span_count, delay)
            self._retries.inc()
            await asyncio.sleep(delay)

    def _log_refused(self, payload: ExportPayload, tally: _Tally) -> None:
        """One line for what the downstream refused of ``payload``: how much, which span, why."""
        dropped = sum(part.span_count for part, _ in tally.refused)
        part, error = tally.refused[0]
        ids = next((i for i in span_ids(part) if i is not None), None)
        which = f"trace {ids[0].hex()} span {ids[1].hex()}" if ids else "spans that do not decode"
        more = f" (and {len(tally.refused) - 1} more part(s))" if len(tally.refused) > 1 else ""
        log.error("exporter %s: dropping %d of %d spans the downstream refused on their own: %s%s: %s",
                  self._id, dropped, payload.span_count, which, more, error)

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
