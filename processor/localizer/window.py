"""Cross-trace ranking: fuse the evidence sources into one ranked list of services for a
window of traces (``faulttrace eval``, the ``services`` of ``explain``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from processor.localizer import scoring
from processor.localizer.baseline import Baseline
from processor.localizer.scoring import ServiceEvidence

# Evidence sources by name; ``explain_away`` switches the caller/callee split of latency.
SOURCES: tuple[str, ...] = ("latency", "explain_away", "shape", "errors")


@dataclass(frozen=True, slots=True)
class ServiceScore:
    service: str
    score: float
    evidence: tuple[ServiceEvidence, ...]

    @property
    def confidence(self) -> float:
        """A score squashed to (0, 1): 0.5 at one fully abnormal place."""
        return self.score / (self.score + 1.0)


def _runners(sources: frozenset[str]) -> list[Callable[[duckdb.DuckDBPyConnection], list[ServiceEvidence]]]:
    out: list[Callable[[duckdb.DuckDBPyConnection], list[ServiceEvidence]]] = []
    if "latency" in sources:
        explain_away = "explain_away" in sources
        out.append(lambda conn: scoring.latency(conn, explain_away=explain_away))
    if "shape" in sources:
        out.append(scoring.shape)
    if "errors" in sources:
        out.append(scoring.errors)
    return out


def rank_services(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline,
                  sources: Iterable[str] = SOURCES) -> list[ServiceScore]:
    """Every service in the window, most likely root cause first (ties: by name)."""
    conn.register("m", metrics)
    baseline.register(conn)
    try:
        found: dict[str, list[ServiceEvidence]] = defaultdict(list)
        for run in _runners(frozenset(sources)):
            for ev in run(conn):
                found[ev.service].append(ev)
        services = {s for (s,) in conn.sql("SELECT DISTINCT service FROM m").fetchall()}
    finally:
        for name in ("m", "base_ops", "base_shapes"):
            conn.unregister(name)
    ranked = [ServiceScore(s, sum(e.score for e in found.get(s, ())), tuple(found.get(s, ())))
              for s in services | set(found)]
    return sorted(ranked, key=lambda r: (-r.score, r.service))
