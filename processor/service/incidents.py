"""The periodic incident summary: traces with the same cause, grouped over an interval.

Every ``interval`` one log line per group, most traces first, e.g.
``incident: payment POST /charge → gateway POST /checkout failed: 20 traces in the last 60s
(infrastructure, infra.connection_refused; e.g. http://jaeger:16686/trace/…)``.  A quiet
interval logs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

log = logging.getLogger("faulttrace.incidents")

# Groups one interval holds at most: distinct causes are few in an incident, but a
# misbehaving system (a cause on every operation of every service) must not grow the
# summary without bound; the rest are counted together.
MAX_GROUPS = 200
SHOWN = 10  # groups logged per interval; the rest are summed in one line


@dataclass(slots=True)
class _Group:
    traces: int = 0
    layers: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    example: str = ""  # the latest trace's link (or id)


class Incidents:
    """Counts traces by incident key (``sentence.incident_key``) until ``flush()``."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._groups: dict[tuple[str, str], _Group] = {}
        self._overflow = 0

    def add(self, key: tuple[str, str], layer: str, source: str, example: str) -> None:
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= MAX_GROUPS:
                self._overflow += 1
                return
            group = self._groups[key] = _Group()
        group.traces += 1
        group.layers[layer] = group.layers.get(layer, 0) + 1
        group.sources[source] = group.sources.get(source, 0) + 1
        group.example = example

    def flush(self) -> list[str]:
        """The summary lines of the interval that ends now (none if it was quiet); starts the next."""
        groups, overflow = self._groups, self._overflow
        self._groups, self._overflow = {}, 0
        ordered = sorted(groups.items(), key=lambda kv: (-kv[1].traces, kv[0]))
        lines = [self._line(key, g) for key, g in ordered[:SHOWN]]
        rest = sum(g.traces for _, g in ordered[SHOWN:]) + overflow
        if rest:
            lines.append(f"incident: {rest} more traces with other causes in the last {self.interval:g}s")
        return lines

    def _line(self, key: tuple[str, str], g: _Group) -> str:
        cause, seen = key
        what = f"{cause} → {seen}" if seen else cause
        layer = max(g.layers, key=lambda k: (g.layers[k], k)) or "no layer"
        source = max(g.sources, key=lambda k: (g.sources[k], k))
        return (f"incident: {what}: {g.traces} trace{'s' if g.traces != 1 else ''} in the last "
                f"{self.interval:g}s ({layer}, {source}; e.g. {g.example})")

    async def run(self) -> None:
        """Log a summary every ``interval`` until cancelled; the interval under way is logged then."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                self.log()
        finally:
            self.log()

    def log(self) -> None:
        for line in self.flush():
            log.info("%s", line)
