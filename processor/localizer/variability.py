"""How abnormal each service looks when nothing is wrong: the null the window's scores are discounted by.

A hub most requests pass through, whose timing varies with load, looks
abnormal in many windows with no fault at all: a fixed threshold (p99, a
Wilson bound) cannot tell its usual swings from a fault.  Its own history
can.  The baseline's traces are cut, in time order, into ``CHUNKS`` windows;
each is ranked (``window.rank_services``, every other evidence source as
configured) against a baseline learned from the rest, as a real window is
against the whole; a service's *null*, per evidence source, is the scores it
reached in those healthy windows (a hub's load swings move its timing, not
its call shapes).  ``rank_services`` then keeps of each source's score the
share of healthy windows it beats (``hub_discount``; ``usual_share`` is an
empirical p-value): a score beyond every healthy window's counts in full, one
a healthy window reaches half the time counts half, one it always reaches
counts nothing.

A service that never looks abnormal in healthy traffic loses nothing; the
windows are smaller than a case's, so the null leans low (a small window's
Wilson bounds are wider), never high.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import duckdb
import pyarrow as pa

from processor.localizer.baseline import Baseline
from processor.localizer.window import rank_services

CHUNKS = 10          # healthy windows cut from the baseline
MIN_CHUNK_TRACES = 10  # fewer traces per window than this: no null (too few to tell anything)

CHUNK_SQL = """
SELECT * EXCLUDE (t0, k, ntr), ((k - 1) * $chunks // ntr)::INTEGER AS chunk
FROM (SELECT *, dense_rank() OVER (ORDER BY t0, trace_id) AS k, count(DISTINCT trace_id) OVER () AS ntr
      FROM (SELECT *, min(start_ns) OVER (PARTITION BY trace_id) AS t0 FROM _lz_null))
"""


def null_scores(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, sources: Iterable[str],
                chunks: int = CHUNKS) -> dict[tuple[str, str], tuple[float, ...]]:
    """Per (service, evidence source), the scores it reaches in the healthy windows cut from
    ``metrics`` (span metrics of fault-free traffic), each against the rest, in ascending order;
    empty with too few traces."""
    sources = tuple(s for s in sources if s != "hub_discount")
    conn.register("_lz_null", metrics)
    try:
        traces = conn.sql("SELECT count(DISTINCT trace_id) FROM _lz_null").fetchall()[0][0]
        if traces < chunks * MIN_CHUNK_TRACES:
            return {}
        cut = conn.sql(CHUNK_SQL.replace("$chunks", str(int(chunks)))).to_arrow_table()
    finally:
        conn.unregister("_lz_null")
    conn.register("_lz_cut", cut)
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    try:
        for i in range(chunks):
            window = conn.sql(f"SELECT * EXCLUDE (chunk) FROM _lz_cut WHERE chunk = {i}").to_arrow_table()
            rest = conn.sql(f"SELECT * EXCLUDE (chunk) FROM _lz_cut WHERE chunk <> {i}").to_arrow_table()
            base = Baseline.learn(conn, rest)
            for s in rank_services(conn, window, base, sources):
                for e in s.evidence:
                    if e.score > 0:
                        seen[(s.service, e.source)].append(e.score)
    finally:
        conn.unregister("_lz_cut")
    # the windows where a source said nothing of a service scored it 0
    return {k: tuple(sorted(v + [0.0] * (chunks - len(v)))) for k, v in seen.items()}

