"""Evidence sources: each turns a window of span metrics, compared with a baseline, into
per-service scores.

All sources read the window's span metrics as DuckDB table ``m`` and the
baseline as ``base_ops`` / ``base_shapes`` (``Baseline.register``).  Scores
are in one unit — the share of a service's work that looks abnormal, summed
over the places it shows — so sources add up without per-dataset weights.

- ``latency``: self time above the operation's baseline p99.  A client span's
  self time (network, queueing, the callee's accept path) is charged to the
  callee; with *explaining away*, each (caller, callee) cell is split between
  the two by how consistently the caller is slow on all its calls versus how
  consistently every caller of the callee sees it slow.
- ``shape``: call shapes (which children a span makes) that are
  over-represented against the baseline.  A span cut short is charged to the
  call after which it stopped (the last child's callee), or to itself when it
  made no call; a span that calls differently is charged to itself.
- ``errors``: error origins — erroring spans with no erroring child, an
  exception event counting double — above the operation's baseline error rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import duckdb

from dsl.api import parsed

QUANTILE = 0.99   # the baseline quantile a span must exceed to count as slow
Z = 1.64          # one-sided 95% confidence for rate bounds


@dataclass(frozen=True, slots=True)
class ServiceEvidence:
    """One source's case against one service."""

    source: str
    service: str
    score: float
    message: str


def wilson_lower(k: float, n: float, z: float = Z) -> float:
    """Lower confidence bound of a rate k/n: small samples need more to look abnormal."""
    if n <= 0 or k <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


CELLS_SQL = """
SELECT m.service AS caller, {callee} AS callee, count(*) AS n,
       sum(CASE WHEN m.self_ns > o.self_p99 THEN 1 ELSE 0 END) AS slow,
       sum(greatest(m.self_ns - o.self_med, 0)) AS excess_ns
FROM m JOIN base_ops o USING (service, name)
WHERE m.pod IS NULL OR m.pod NOT IN (SELECT pod FROM lz_node_explained)  -- slowed by their node (``shift``)
GROUP BY ALL
ORDER BY ALL  -- DuckDB's group order varies: the sums and messages built from the rows must not
"""


def latency(conn: duckdb.DuckDBPyConnection, explain_away: bool = True, wire_time: bool = True) -> list[ServiceEvidence]:
    """Slow self time per (caller, callee) cell; without ``wire_time`` a client span's self time stays
    with its own service instead of going to the callee's."""
    cells: dict[tuple[str, str], float] = {}
    excess: dict[tuple[str, str], float] = {}
    sql = CELLS_SQL.format(callee="m.blame" if wire_time else "m.service")
    for caller, callee, n, slow, excess_ns in conn.execute(parsed(sql)).fetchall():
        rate = max(0.0, wilson_lower(slow, n) - (1 - QUANTILE))
        if rate > 0:
            cells[(caller, callee)] = rate
            excess[(caller, callee)] = excess_ns
    rows: dict[str, list[float]] = defaultdict(list)   # caller -> its client cells
    cols: dict[str, list[float]] = defaultdict(list)   # callee -> cells of its callers
    for (caller, callee), _ in _client_cells(conn):
        r = cells.get((caller, callee), 0.0)
        rows[caller].append(r)
        cols[callee].append(r)
    score: dict[str, float] = defaultdict(float)
    why: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for (caller, callee), r in cells.items():
        if caller == callee:
            score[callee] += r
            why[callee].append((r, f"own spans slow ({r:.0%} above p99)"))
            continue
        row = _mean(rows[caller]) if explain_away else 0.0
        col = _mean(cols[callee]) if explain_away else 1.0
        to_callee = col / (col + row) if col + row > 0 else 0.5
        score[callee] += r * to_callee
        score[caller] += r * (1 - to_callee)
        if to_callee >= 0.5:
            why[callee].append((r, f"calls from {caller} slow ({r:.0%})"))
        else:
            why[caller].append((r, f"slow on its calls to {callee} ({r:.0%})"))
    return [ServiceEvidence("latency", s, v, _strongest(why[s])) for s, v in score.items() if v > 0]


def _strongest(why: list[tuple[float, str]], k: int = 3) -> str:
    """The k strongest reasons, strongest first (ties by text, so the message does not follow row order)."""
    return "; ".join(m for _, m in sorted(why, key=lambda w: (-w[0], w[1]))[:k])


def _client_cells(conn: duckdb.DuckDBPyConnection) -> list[tuple[tuple[str, str], int]]:
    """Every (caller, callee) pair with calls in the window, slow or not."""
    rows = conn.sql(parsed("SELECT service, blame, count(*) FROM m WHERE blame <> service GROUP BY ALL ORDER BY ALL")
                    ).fetchall()
    return [((a, b), n) for a, b, n in rows]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


SHAPE_SQL = """
WITH s AS ({shapes}),
wc AS (SELECT service, name, sig, count(*) AS c FROM s GROUP BY service, name, sig),
w AS (SELECT *, c / sum(c) OVER (PARTITION BY service, name) AS share,
             sum(c) OVER (PARTITION BY service, name) AS n FROM wc),
b AS (SELECT DISTINCT service, name, n AS nb, k_med FROM base_shapes),
x AS (  -- per call shape: how much more often it occurs than normal, beyond sampling noise
    SELECT w.service, w.name, w.sig, w.c,
           greatest(w.share - coalesce(bs.share, 0)
                    - {z} * sqrt(w.share * (1 - w.share) / w.n
                                 + coalesce(bs.share, 1 / b.nb) * (1 - coalesce(bs.share, 0)) / b.nb), 0) AS excess
    FROM w JOIN b USING (service, name)
    LEFT JOIN base_shapes bs USING (service, name, sig)
)
SELECT CASE WHEN s.k < b.k_med AND s.k > 0 THEN s.last_blame ELSE s.blame END AS charged,
       s.service, s.name, sum(x.excess / x.c) AS score, count(*) AS spans,
       bool_or(s.k < b.k_med) AS cut_short
FROM s JOIN x USING (service, name, sig) JOIN b USING (service, name)
WHERE x.excess > 0
GROUP BY ALL
ORDER BY ALL  -- a fixed order for the sums and messages (``CELLS_SQL``)
"""


def shape(conn: duckdb.DuckDBPyConnection) -> list[ServiceEvidence]:
    from processor.localizer.baseline import SHAPES_SQL

    sql = SHAPE_SQL.format(shapes=SHAPES_SQL.format(table="m"), z=Z)
    score: dict[str, float] = defaultdict(float)
    why: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for charged, service, name, s, spans, cut in conn.execute(parsed(sql)).fetchall():
        if charged is None:
            continue
        score[charged] += s
        how = "cut short" if cut else "calls differ"
        why[charged].append((s, f"{service}:{name} {how} ({s:.0%} of its spans)"))
    return [ServiceEvidence("shape", svc, v, _strongest(why[svc]))
            for svc, v in score.items() if v > 0]


ERRORS_SQL = """
WITH b AS (SELECT service, name, err_rate FROM base_ops)
SELECT m.blame, m.service, m.name, count(*) AS n,
       sum(CASE WHEN m.status_code = 2 AND NOT m.child_error
                THEN CASE WHEN m.exception THEN 2 ELSE 1 END ELSE 0 END) AS origins,
       count(*) FILTER (WHERE m.status_code = 2 AND NOT m.child_error) AS failed,
       any_value(coalesce(b.err_rate, 0)) AS base_rate
FROM m LEFT JOIN b USING (service, name)
GROUP BY ALL
ORDER BY ALL  -- a fixed order for the sums and messages (``CELLS_SQL``)
"""


def errors(conn: duckdb.DuckDBPyConnection) -> list[ServiceEvidence]:
    score: dict[str, float] = defaultdict(float)
    why: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for blame, service, name, n, origins, failed, base_rate in conn.execute(parsed(ERRORS_SQL)).fetchall():
        rate = max(0.0, wilson_lower(min(origins, n), n) - base_rate)
        if rate > 0:
            score[blame] += rate
            why[blame].append((rate, f"errors originate in {service}:{name} ({failed} of {n})"))
    return [ServiceEvidence("errors", s, v, _strongest(why[s])) for s, v in score.items() if v > 0]
