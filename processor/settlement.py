"""Settlement: when a chunk of released spans may leave the durable journal.

A chunk's spans are framed into payloads and each payload goes to every
exporter; each exporter settles a payload once it is done with it for good
(delivered, refused permanently, or retries exhausted).  Only when every
payload of the chunk is settled by every exporter do its spans leave the
journal (``store.forget``): a crash or a shutdown before that keeps them for
the next start.
"""

from __future__ import annotations

from collections.abc import Callable

from processor.model import ReleasedSpans


class Settlement:
    """Counts a chunk's payloads out to the exporters and back: once the chunk
    is sealed (all handed out) and every one is settled, ``done`` gets the
    chunk's (trace id, span id) keys.  Exporters settle on the event loop."""

    def __init__(self, spans: ReleasedSpans, done: Callable[[list[tuple[bytes, bytes]]], None]) -> None:
        self._keys = list(zip(spans.trace_ids, spans.span_ids))
        self._done: Callable[[list[tuple[bytes, bytes]]], None] | None = done
        self._pending = 0
        self._sealed = False

    def expect(self) -> Callable[[], None]:
        """A callback for one payload handed to one exporter."""
        self._pending += 1
        settled = False

        def settle() -> None:
            nonlocal settled
            if not settled:  # once per payload and exporter, whatever the exporter does
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
            done(self._keys)
