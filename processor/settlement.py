"""Settlement: when a payload's spans may leave the durable journal.

Released spans are framed into payloads (``otlp.payload``) and each payload
goes to every exporter; each exporter settles a payload once it is done with
it for good (delivered, refused permanently, or retries exhausted).  As soon
as every exporter has settled a payload, its spans leave the journal
(``SpanStore.forget``, which gathers them into few deletes): payload by
payload, not once a whole released chunk is done, so a crash soon after
delivery sends little again.  A crash or a shutdown before that keeps them
for the next start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from processor.model import ExportPayload, ReleasedSpans
from processor.otlp.payload import framing_order
from processor.store import KEY_COLUMNS


class Settlement:
    """Counts one payload out to the exporters and back: once it is sealed (handed
    to every exporter) and every one has settled it, ``done()`` is called, once.
    Exporters settle on the event loop."""

    def __init__(self, done: Callable[[], None]) -> None:
        self._done: Callable[[], None] | None = done
        self._pending = 0
        self._sealed = False

    def expect(self) -> Callable[[], None]:
        """A callback for the payload handed to one exporter."""
        self._pending += 1
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled:  # once per exporter, whatever the exporter does
                settled = True
                self._pending -= 1
                self._check()
        return settle

    def seal(self) -> None:
        self._sealed = True
        self._check()

    def _check(self) -> None:
        if self._sealed and self._pending == 0 and self._done is not None:
            done, self._done = self._done, None
            done()


def with_keys(spans: ReleasedSpans, payloads: Iterable[ExportPayload]) -> Iterator[tuple[ExportPayload, pa.Table]]:
    """Each payload of ``encode_payloads(spans, …)`` with its spans' ``KEY_COLUMNS``.

    ``encode_payloads`` fills payloads group by group ((resource, scope) in the
    order each first appears, a group's rows in order), cutting a group where a
    payload is full: so each payload holds the next ``span_count`` rows of that
    order (tests/test_settlement.py checks this against the payloads' bytes)."""
    order = framing_order(spans).rows
    keys = spans.table.select(KEY_COLUMNS)
    start = 0
    for payload in payloads:
        yield payload, keys.take(order.slice(start, payload.span_count))
        start += payload.span_count
