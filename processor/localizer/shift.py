"""Evidence source ``peers``: the pod that is slower than its service's other pods, with co-location.

A delay on one pod (a stressed CPU, a delayed network interface) does not
always reach an operation's baseline p99 (a hub whose healthy tail is long, a
CPU slowed 2x), and a window's load moves every pod of a service at once.
Its *peers* — the same operation on the service's other pods, in the same
window — are the reference that neither hides: per pod and operation, the
share of its spans above the peers' median, beyond half and beyond sampling
noise (a Wilson lower bound), times the typical slowdown in doublings (the
median log ratio to the peers' median, capped at one), is the pod's shift,
0..1; a pod's is its operation that moved most (a stressed CPU slows
CPU-bound work most, not the wait on a database).  It is read on *self
time*, so a caller waiting on a slow callee does not shift (its children
cover the wait): explaining away along a deep chain, only what a span does
itself counts.  A client span's self time is its *wire time* (the client
span minus its server child: network and queueing), charged to the callee's
pod (``wire_time``): a pod whose egress is delayed shows there, not in its
own server spans.

*Co-location* (``colocation``): pods that share a node (``k8s.node.name``,
else ``host.name``, when the spans carry them) share its CPU.  When two or
more pods of a node are slower than their peers, the slowdown is the node's,
and it is charged to the pod slowed most (the stressed pod itself, hit
hardest); the others are its neighbours: their shift, and their slow spans
in ``latency`` (``window`` leaves them out), are explained by it and count
for nothing.

A service's score is the sum of its pods' shifts, each weighed by the pod's
share of the service's spans in the window: one pod of two fully shifted is
0.5.  A service with one pod has no peers and no score here (``latency``
reads it against its baseline).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from dsl.api import parsed
from processor.localizer.evidence import ServiceEvidence, wilson_lower

MIN_NODE_PODS = 3   # pods on a node (in the window) before what they share is taken as the node's

# Per charged (service, pod, node) and operation: spans; those with a peer reference, those above it (the
# median of the same operation on the service's other pods in the window: same load, same moment) and the
# median log ratio to it.  Operations whose baseline self time does not vary (MAD 0: all zeros, a
# constant) say nothing.
SHIFT_SQL = """
WITH s AS (
    SELECT {charged_service} AS cs, coalesce({charged_pod}, {charged_service}) AS pod, {charged_node} AS node,
           m.service, m.name, greatest(m.self_ns, 1)::DOUBLE AS self
    FROM m JOIN base_ops o USING (service, name)
    WHERE o.self_mad > 0
),
pods AS (SELECT DISTINCT cs, service, name, pod FROM s),
peer AS (  -- the same operation on the charged service's other pods
    SELECT a.cs, a.service, a.name, a.pod, median(b.self) AS ref
    FROM pods a JOIN s b ON a.cs = b.cs AND a.service = b.service AND a.name = b.name AND b.pod <> a.pod
    GROUP BY ALL HAVING count(*) >= {min_peer}
)
SELECT s.cs, s.pod, any_value(s.node), s.service, s.name, count(*) AS n, count(p.ref) AS n_peer, count(*) FILTER (WHERE s.self > p.ref) AS above_peer,
       median(ln(s.self / p.ref)) FILTER (WHERE p.ref IS NOT NULL) AS lr_peer
FROM s LEFT JOIN peer p USING (cs, service, name, pod)
GROUP BY ALL
"""
MIN_PEER_SPANS = 5   # spans of an operation on the other pods before their median is a reference


def _part(above: int, n: int, lr: float | None) -> float:
    """How far a pod's spans moved: the share above the reference beyond half and beyond noise
    (Wilson), times the typical slowdown in doublings (capped at one)."""
    if n <= 0 or lr is None:
        return 0.0
    share = max(0.0, wilson_lower(above, n) - 0.5) / 0.5
    return share * min(1.0, max(0.0, lr / math.log(2)))


@dataclass(frozen=True, slots=True)
class PodShift:
    """One pod's shift in the window; ``node_pod`` the pod of its node that explains it, if any."""

    service: str
    pod: str
    node: str | None
    n: int
    peer: float                   # its shift against its peers now, 0..1
    node_pod: str | None = None
    slowdown: float = 1.0         # how many times slower than its peers its most shifted operation is


def pod_shifts(conn: duckdb.DuckDBPyConnection, *, wire_time: bool = True, colocation: bool = True) -> list[PodShift]:
    """Every pod's shift (``m``: span metrics with ``pod``, ``node`` and their callee's; ``base_ops``): its
    operation that moved most (a stressed CPU slows CPU-bound work most, not the wait on a database)."""
    if wire_time:  # to the callee: a client span's server child in another service (``graph``'s callee)
        charged = ("coalesce(m.callee, m.service)", "coalesce(m.callee_pod, m.pod)", "coalesce(m.callee_node, m.node)")
    else:
        charged = ("m.service", "m.pod", "m.node")
    sql = SHIFT_SQL.format(charged_service=charged[0], charged_pod=charged[1], charged_node=charged[2],
                           min_peer=MIN_PEER_SPANS)
    spans: dict[tuple[str, str, str | None], int] = defaultdict(int)
    peer: dict[tuple[str, str, str | None], float] = defaultdict(float)
    slowdown: dict[tuple[str, str, str | None], float] = defaultdict(float)
    for service, pod, node, _, _, n, n_peer, above_peer, lr_peer in conn.execute(parsed(sql)).fetchall():
        key = (service, pod, node)
        spans[key] += n
        part = _part(above_peer, n_peer, lr_peer)
        if part > 0:
            peer[key] = max(peer[key], part)
            slowdown[key] = max(slowdown[key], lr_peer)
    # a node's slowdown is local: it slows a pod against its own service's other pods (on other nodes);
    # a whole service slowed, or a hub's load swing, is no node's doing.  The pod hit hardest is the
    # one slowed most (its operations' median log ratio to their peers').
    node_pod = explained_by_node(slowdown, spans) if colocation else {}
    return [PodShift(k[0], k[1], k[2], n, peer[k], node_pod.get(k[1]), math.exp(slowdown.get(k, 0.0)))
            for k, n in spans.items()]


def explained_by_node(shifts: dict[tuple[str, str, str | None], float],
                      all_pods: Iterable[tuple[str, str, str | None]]) -> dict[str, str]:
    """Pods their node explains -> the node's pod slowed most: ``shifts`` holds, per pod significantly
    slower than its peers, by how much (log ratio).  On a node with at least ``MIN_NODE_PODS`` pods
    in the window and two or more of them slower than their peers, the slowdown is the node's, and
    the pod hit hardest is where it comes from."""
    by_node: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for (service, pod, node), v in shifts.items():
        if node:
            by_node[node].append((v, pod, service))
    # pods seen on each node, slowed or not (only the slowed are in ``shifts``): the node's size
    pods_on: dict[str, set[str]] = defaultdict(set)
    for service, pod, node in all_pods:
        if node:
            pods_on[node].add(pod)
    out: dict[str, str] = {}
    for node, pods in by_node.items():
        shifted = sorted((p for p in pods if p[0] > 0), reverse=True)
        if len(pods_on[node]) < MIN_NODE_PODS or len(shifted) < 2:
            continue
        top_shift, top, top_service = shifted[0]
        out.update({pod: top for v, pod, service in shifted[1:] if service != top_service and v < top_shift})
    return out


def shift(pods: list[PodShift]) -> list[ServiceEvidence]:
    """Per service (source ``peers``): its pods' shifts against their peers (``pod_shifts``), each
    weighed by its share of the service's spans; a pod its node explains adds nothing, and the pod
    that explains it says so."""
    total: dict[str, int] = defaultdict(int)
    for p in pods:
        total[p.service] += p.n
    neighbours: dict[str, list[str]] = defaultdict(list)
    for p in pods:
        if p.node_pod is not None:
            neighbours[p.node_pod].append(p.service)
    score: dict[str, float] = defaultdict(float)
    why: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for p in pods:
        part = p.peer * p.n / total[p.service]
        if part <= 0 or p.node_pod is not None:
            continue
        score[p.service] += part
        also = neighbours.get(p.pod)
        node = f"; its node {p.node} slowed {', '.join(sorted(set(also)))} less" if also else ""
        why[p.service].append((part, f"pod {p.pod} {p.slowdown:.1f}x slower than its peers ({p.peer:.0%}){node}"))
    return [ServiceEvidence("peers", s, v, "; ".join(m for _, m in sorted(why[s], reverse=True)[:2]))
            for s, v in score.items()]
