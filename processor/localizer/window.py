"""Cross-trace ranking: fuse the evidence sources into one ranked list of services for a
window of traces (``faulttrace eval``, the ``services`` of ``explain``), each with the
probability that it is where the window's fault originates.

Scores are sums of noise-corrected abnormal shares (lower confidence bounds
minus what the baseline allows), so a positive score is abnormality beyond
chance, and services with none are not candidates.  Which of the abnormal
services is the origin is a choice among exclusive alternatives; by Luce's
choice axiom each is chosen in proportion to its strength, so the probability
of a service is its share of the window's total score — conditional on the
window holding a fault (it does not say *whether* there is one: that is the
per-trace evidence's job).  A clear winner gets most of the mass, a near tie
splits it, and the many small scores of services that merely inherit a delay
take their share.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from processor.localizer import scoring
from processor.localizer.baseline import Baseline
from processor.localizer.scoring import ServiceEvidence

# Evidence sources by name; ``explain_away`` switches the caller/callee split of latency; ``silent``,
# ``causal_past`` and ``lift`` the per-trace causal model (``silent``, read by ``LocalizerAnalyzer``).
SOURCES: tuple[str, ...] = ("latency", "explain_away", "shape", "errors", "silent", "causal_past", "lift")


@dataclass(frozen=True, slots=True)
class ServiceScore:
    service: str
    score: float
    evidence: tuple[ServiceEvidence, ...]
    probability: float = 0.0   # that the window's fault originates here (share of the total score)

    @property
    def confidence(self) -> float:
        """How abnormal the service is on its own, as odds equal to its score (0.5 at one
        fully abnormal place): the window's support for a span of it, whatever the others do."""
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
    scores = {s: sum(e.score for e in found.get(s, ())) for s in services | set(found)}
    total = sum(v for v in scores.values() if v > 0)
    ranked = [ServiceScore(s, v, tuple(found.get(s, ())), v / total if v > 0 else 0.0) for s, v in scores.items()]
    return sorted(ranked, key=lambda r: (-r.score, r.service))
