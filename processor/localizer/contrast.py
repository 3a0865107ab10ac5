"""Why the second service is not first: what the window ranking weighed, in sentences.

For each of the first services after the first, against every service ranked
above it: whether its delay is its callee's (the share of its excess time —
its entry spans' duration beyond their baseline median — spent inside its
calls to the service above), how much of its evidence healthy windows show
too (``hub_discount``), else by how much and on what the service above
scores more.  ``faulttrace explain`` prints them under the services.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from processor.localizer.baseline import Baseline
from processor.localizer.window import ServiceScore

EXPLAINED = 0.5   # share of a service's excess time inside calls to another that makes the delay that one's

# Per (service, callee): the excess time (beyond the operation's median duration) of the service's entry
# spans, and of its calls to the callee.
EXCESS_SQL = """
WITH x AS (SELECT m.*, greatest(m.dur - o.dur_med, 0)::DOUBLE AS ex FROM m JOIN base_ops o USING (service, name))
SELECT c.service, c.callee, sum(c.ex) AS inside, any_value(t.total) AS total
FROM x c JOIN (SELECT service, sum(ex) AS total FROM x
               WHERE parent_service IS NULL OR parent_service <> service GROUP BY service) t USING (service)
WHERE c.callee IS NOT NULL
GROUP BY ALL
"""


def excess_inside(conn: duckdb.DuckDBPyConnection, metrics: pa.Table, baseline: Baseline
                  ) -> dict[tuple[str, str], float]:
    """Per (service, callee), the share of the service's excess time spent inside calls to the callee."""
    with baseline.beside(conn, metrics):
        rows = conn.sql(EXCESS_SQL).fetchall()
    return {(s, c): min(1.0, inside / total) for s, c, inside, total in rows if total and total > 0}


def why_not_first(ranking: Sequence[ServiceScore], inside: dict[tuple[str, str], float], top: int = 3) -> list[str]:
    """A sentence per service ranked 2nd..``top`` (with a positive score or evidence): why the one
    above it comes first."""
    out = []
    shown = [r for r in ranking[:top] if r.evidence]
    for i, r in enumerate(shown[1:], 1):
        above = shown[:i]
        callee = max(above, key=lambda a: inside.get((r.service, a.service), 0.0))
        share = inside.get((r.service, callee.service), 0.0)
        if share >= EXPLAINED:
            out.append(f"{r.service}'s delay is explained by its callee {callee.service}: {share:.0%} of its "
                       f"excess time is inside calls to {callee.service}")
            continue
        discount = [e for e in r.evidence if e.source == "hub_discount"]
        first = shown[0]
        if discount and -discount[0].score >= r.score:
            out.append(f"{r.service} is {discount[0].message}: its evidence counts {r.score:.2f}, below "
                       f"{first.service}'s {first.score:.2f}")
            continue
        out.append(f"{first.service} scores {first.score:.2f} ({_parts(first)}), {r.service} {r.score:.2f} "
                   f"({_parts(r)})")
    return out


def _parts(r: ServiceScore) -> str:
    return ", ".join(f"{e.source} {e.score:+.2f}" for e in sorted(r.evidence, key=lambda e: -abs(e.score))[:3])
