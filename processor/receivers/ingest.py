"""Ingest: the one path from a received request body to spans in the store.

Both receivers (gRPC and HTTP) call it, so validation, overload refusal,
decoding, storing and metrics are one piece of code.  A request is accepted
only once its spans are in the store; the caller acknowledges after that.
A protobuf body of up to ``INLINE_BYTES`` going to a store in memory is
decoded and stored on the event loop: both hold the interpreter lock all the
way (protobuf field reads, Arrow arrays built from Python objects), so a
worker thread ran them no sooner, and handing every request to it and back
cost the receiving process about 2.5 µs a span (``faulttrace bench``, pipeline
mode, alternating runs: 12.2 -> 9.8 µs a span, 60k -> 75k spans/s).  Larger
bodies, OTLP/JSON and a durable store's journaling (DuckDB works without the
lock) run on a worker thread, so the event loop keeps serving meanwhile.  On
the loop too, appending waits for the store's lock while a release takes rows.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from processor.model import DecodedRequest, SpanBatch
from processor.otlp.otlpjson import request_from_json
from processor.receivers.decode import MalformedRequest, decode
from processor.service.telemetry import Telemetry
from processor.store import SpanStore


class Encoding(enum.Enum):
    PROTOBUF = "protobuf"
    JSON = "json"


class Overloaded(Exception):
    """The store is full, or memory short: refuse with a retryable status and a retry delay."""

    def __init__(self, message: str, retry_after: float, spans: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.spans = spans  # how many spans were refused, when known


@dataclass(frozen=True, slots=True)
class Accepted:
    accepted_spans: int
    rejected_spans: int
    error_message: str


def _decode_body(data: bytes, encoding: Encoding) -> DecodedRequest:
    if encoding is Encoding.JSON:
        try:
            return decode(request_from_json(data))
        except (ValueError, TypeError, KeyError) as err:  # json_format.ParseError is a ValueError
            if isinstance(err, MalformedRequest):
                raise
            raise MalformedRequest(f"cannot decode the body as OTLP/JSON: {err}") from None
    return decode(data)


# Protobuf bodies up to this size are decoded on the event loop (see the module docstring): the
# loop stops for about 2-4 ms at most, the time of 2,000 of the bench's spans.
INLINE_BYTES = 1 << 20


class Ingest:
    """Decode, bound, store, then report what was accepted."""

    def __init__(self, store: SpanStore, max_buffered_spans: int, telemetry: Telemetry,
                 on_stored: Callable[[SpanBatch], None], retry_after: float = 1.0,
                 admit: Callable[[], None] | None = None) -> None:
        self._store = store
        self._admit = admit  # raises Overloaded to refuse a request before it is read (memory_limiter)
        self._max_buffered = max_buffered_spans
        self._telemetry = telemetry
        self._on_stored = on_stored
        self._retry_after = retry_after
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faulttrace-decode")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def admit(self) -> None:
        """Raise Overloaded if a request would be refused whatever it holds (memory short, store
        full): receivers call it before reading a body, ``submit`` before decoding one."""
        if self._admit is not None:
            self._admit()
        self._check_capacity(0)

    def _check_capacity(self, incoming: int) -> None:
        buffered = self._store.buffered_spans
        if buffered + incoming > self._max_buffered and buffered > 0:
            raise Overloaded(f"faulttrace is at capacity ({buffered} spans buffered, limit "
                             f"{self._max_buffered}); retry later", self._retry_after, incoming)

    def _inline(self, data: bytes, encoding: Encoding) -> bool:
        """Whether this body is decoded and stored on the event loop (see the module docstring)."""
        return encoding is Encoding.PROTOBUF and len(data) <= INLINE_BYTES and not self._store.durable

    def _decode_and_store(self, data: bytes, encoding: Encoding) -> DecodedRequest:
        """Decode, bound, store: on the event loop, or on the worker thread (``_inline``)."""
        decoded = _decode_body(data, encoding)
        self._check_capacity(decoded.batch.span_count)
        self._store.append_now(decoded.batch)
        return decoded

    async def submit(self, data: bytes, encoding: Encoding, receiver: str, transport: str) -> Accepted:
        """Store the spans of one request body.  Raises MalformedRequest or Overloaded."""
        labels = (receiver, transport)
        self.admit()  # refuse early, before paying for decoding
        loop = asyncio.get_running_loop()
        try:
            if self._inline(data, encoding):
                decoded = self._decode_and_store(data, encoding)
            else:
                decoded = await loop.run_in_executor(self._executor, self._decode_and_store, data, encoding)
        except Overloaded as err:
            self._telemetry.receiver_refused_spans.labels(*labels).inc(err.spans)
            raise
        batch = decoded.batch
        self._on_stored(batch)
        self._telemetry.receiver_accepted_spans.labels(*labels).inc(batch.span_count)
        if decoded.rejected_spans:
            self._telemetry.receiver_refused_spans.labels(*labels).inc(decoded.rejected_spans)
        return Accepted(batch.span_count, decoded.rejected_spans, decoded.error_message)
