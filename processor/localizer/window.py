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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from processor.localizer import evidence, shift
from processor.localizer.baseline import Baseline
from processor.localizer.evidence import ServiceEvidence
from processor.localizer.graph import any_failed

# Evidence sources by name; ``explain_away`` switches the caller/callee split of latency, ``wire_time``
# charging a client span's own time to its callee (``latency`` and ``peers``), ``colocation`` a node's
# slowdown charged to its pod slowed most (``peers``: a pod against the service's other pods now), ``hub_discount`` the discount by what a service shows in healthy windows
# (``variability``); ``silent``, ``causal_past`` and ``lift`` the per-trace causal model (``silent``,
# read by ``LocalizerAnalyzer``).
SOURCES: tuple[str, ...] = ("latency", "explain_away", "shape", "errors", "peers", "wire_time", "colocation",
                            "hub_discount", "silent", "causal_past", "lift")


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


def window_pods(conn: duckdb.DuckDBPyConnection, sources: Iterable[str]) -> list[shift.PodShift]:
    """The window's pod shifts (``shift.pod_shifts``) as the sources ask for them, with ``m`` and the
    baseline beside (``Baseline.beside``); none without ``peers``."""
    sources = frozenset(sources)
    if "peers" not in sources:
        return []
    return shift.pod_shifts(conn, wire_time="wire_time" in sources, colocation="colocation" in sources)


def _runners(sources: frozenset[str], given: list[shift.PodShift] | None, failed: bool = True
             ) -> list[Callable[[duckdb.DuckDBPyConnection], list[ServiceEvidence]]]:
    """The evidence sources' readers; ``failed`` false (no span of the window failed) leaves out
    ``errors``, which finds no error origin then (every rate is 0: no evidence)."""
    out: list[Callable[[duckdb.DuckDBPyConnection], list[ServiceEvidence]]] = []
    wire_time = "wire_time" in sources

    def shifted(conn: duckdb.DuckDBPyConnection) -> list[ServiceEvidence]:
        pods = given if given is not None else window_pods(conn, sources)
        # the neighbours' slow spans are the node's doing (``shift``): the other sources leave them out
        explained = [p.pod for p in pods if p.node_pod is not None]
        conn.register("lz_node_explained", pa.table({"pod": pa.array(explained, pa.string())}))
        return shift.shift(pods)

    if "peers" in sources:
        out.append(shifted)
    if "latency" in sources:
        explain_away = "explain_away" in sources
        out.append(lambda conn: evidence.latency(conn, explain_away=explain_away, wire_time=wire_time))
    if "shape" in sources:
        out.append(evidence.shape)
    if "errors" in sources and failed:
        out.append(evidence.errors)
    return out


def usual_share(null: tuple[float, ...], score: float) -> float:
    """The share of healthy windows (``null``: a service's scores in them) in which the service
    scored at least ``score``, an empirical p-value: 0 when ``score`` is beyond all of them."""
    return sum(1 for v in null if v >= score) / len(null) if null else 0.0


def rank_services(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline,
                  sources: Iterable[str] = SOURCES, null: Mapping[tuple[str, str], tuple[float, ...]] | None = None,
                  pods: list[shift.PodShift] | None = None) -> list[ServiceScore]:
    """Every service in the window, most likely root cause first (ties: by name).  With ``null``
    (``variability.null_scores``: the scores each service reaches per source in healthy windows)
    and ``hub_discount`` among the sources, each source's score counts by the share of healthy
    windows it beats.  ``pods``: the window's pod shifts (``window_pods``) when the caller has
    them already (the live localizer reads them again for its per-trace blame), else computed here."""
    sources = frozenset(sources)
    with baseline.beside(conn, metrics, lz_node_explained=pa.table({"pod": pa.array([], pa.string())})):
        found: dict[str, list[ServiceEvidence]] = defaultdict(list)
        for run in _runners(sources, pods, any_failed(metrics)):
            for ev in run(conn):
                found[ev.service].append(ev)
    # the window's services, from the Arrow table (a statement over m was ~4 ms of a 100,000-span batch)
    services = set(metrics.column("service").unique().to_pylist())
    if null and "hub_discount" in sources:
        for s, evidence in found.items():
            usual = {e.source: (usual_share(null.get((s, e.source), ()), e.score), e.score)
                     for e in evidence if e.score > 0}
            discount = sum(share * score for share, score in usual.values())
            if discount > 0:
                said = ", ".join(f"{src} {share:.0%}" for src, (share, _) in usual.items() if share > 0)
                evidence.append(ServiceEvidence("hub_discount", s, -discount,
                                                f"as abnormal in healthy windows ({said} of them)"))
    scores = {s: sum(e.score for e in found.get(s, ())) for s in services | set(found)}
    total = sum(v for v in scores.values() if v > 0)
    ranked = [ServiceScore(s, v, tuple(found.get(s, ())), v / total if v > 0 else 0.0) for s, v in scores.items()]
    return sorted(ranked, key=lambda r: (-r.score, r.service))
