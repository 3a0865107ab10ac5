"""Baselines: what normal looks like, per operation, learned from fault-free traffic.

Per (service, span name): the distribution of self time and duration (median,
MAD, p99, count).  Per parent operation: the distribution of its *call
shapes* (which child operations a span of it makes, as a multiset), so a
window can be compared with normal both in timing and in structure.  Both
are DuckDB tables, learned from span metrics (``graph.span_metrics``) of any
set of traces — a baseline file or completed traces as they pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from processor.localizer.graph import span_metrics
from processor.localizer.spans import read_spans


def min_observations(quantile: float, confidence: float) -> int:
    """How many observations of an operation its baseline needs before evidence read against its
    ``quantile`` counts: the fewest ``n`` with ``1 - quantile ** n >= confidence``.

    Among ``n`` normal observations, none lies beyond the ``quantile`` with probability
    ``quantile ** n``; below the count, the baseline's threshold is more likely than not (at
    ``confidence`` 0.5) the sample's largest value standing in for a quantile it never reached,
    and traffic exceeds it far more often than ``1 - quantile`` (the largest of ``n`` is exceeded
    by a new normal value with probability ``1 / (n + 1)``: 5% at 20).  The same bound holds for a
    rate: a value, or an error, of probability ``1 - quantile`` shows at least once in ``n``
    observations with probability ``1 - quantile ** n``, so "never seen" means "rarer than that"
    only past the count.  p99 at confidence 0.5: 69; at 0.95: 299."""
    if not 0 < quantile < 1 or not 0 < confidence < 1:
        raise ValueError(f"quantile {quantile} and confidence {confidence} must lie strictly between 0 and 1")
    return math.ceil(math.log1p(-confidence) / math.log(quantile))


def range_observations(rate: float) -> int:
    """How many observations of an operation its baseline needs before a value beyond the largest
    of them is one normal traffic shows at most ``rate`` of the time: a new normal value exceeds the
    largest of ``n`` with probability ``1 / (n + 1)``, so the fewest ``n`` with ``1 / (n + 1) <=
    rate`` — 99 for 1%.  "Beyond anything the baseline has seen" (a root's longest duration, a
    span's largest self time) is a failure's or a delay's evidence only past it."""
    if not 0 < rate < 1:
        raise ValueError(f"rate {rate} must lie strictly between 0 and 1")
    return math.ceil(1 / rate - 1 - 1e-9)


def unexcluded_error_rate(n: float, err_rate: float, confidence: float = 0.5) -> float:
    """The highest error rate ``n`` observations of an operation (``err_rate`` of them errors) do not
    rule out at ``confidence``: at least the rate seen, and at least the rate ``r`` at which no error
    in ``n`` would be as likely as ``1 - confidence`` (``(1 - r) ** n = 1 - confidence``; the bound
    ``min_observations`` inverts: 1% at 69 observations).  1 without any."""
    if n < 1:
        return 1.0
    return max(err_rate, 1.0 - (1.0 - confidence) ** (1.0 / n))


OPS_SQL = """
WITH m AS (SELECT service, name, self_ns, dur, status_code,
                  median(self_ns) OVER (PARTITION BY service, name) AS med FROM {table})
SELECT service, name, count(*) AS n, any_value(med) AS self_med,
       median(abs(self_ns - med)) AS self_mad,
       quantile_cont(self_ns, 0.99) AS self_p99, max(self_ns) AS self_max,
       median(dur) AS dur_med, quantile_cont(dur, 0.99) AS dur_p99, max(dur) AS dur_max,
       avg(CASE WHEN status_code = 2 THEN 1.0 ELSE 0.0 END) AS err_rate
FROM m GROUP BY service, name
"""

# One row per span: its operation, its call shape (sorted child operations), how many
# children it has, and the service charged when the tree stops after its last child: columns
# ``graph.span_metrics`` computes once per batch.
SHAPES_SQL = """
SELECT trace_id, span_id, service, name, blame, shape_sig AS sig, shape_k AS k, shape_last_blame AS last_blame
FROM {table}
"""

SHAPE_DIST_SQL = """
WITH s AS ({shapes}),
n AS (SELECT service, name, count(*) AS n, median(k) AS k_med FROM s GROUP BY ALL)
SELECT s.service, s.name, s.sig, count(*) / any_value(n.n) AS share, any_value(n.n) AS n,
       any_value(n.k_med) AS k_med
FROM s JOIN n USING (service, name) GROUP BY ALL
"""


@dataclass(frozen=True, slots=True)
class Baseline:
    """Normal behaviour: ``ops`` (timing per operation) and ``shapes`` (call shapes per operation)."""

    ops: pa.Table
    shapes: pa.Table
    # the (connection, window metrics) this baseline is ``beside`` now: a ``beside`` within another
    # for the same window registers only its own tables (a registration costs ~0.5 ms a table)
    _open: list[tuple[duckdb.DuckDBPyConnection, pa.Table]] = field(
        default_factory=list, init=False, repr=False, compare=False)

    @classmethod
    def learn(cls, conn: duckdb.DuckDBPyConnection, metrics: pa.Table) -> Baseline:
        conn.register("_lz_base", metrics)
        try:
            ops = conn.sql(OPS_SQL.format(table="_lz_base")).to_arrow_table()
            shapes = conn.sql(SHAPE_DIST_SQL.format(shapes=SHAPES_SQL.format(table="_lz_base"))).to_arrow_table()
        finally:
            conn.unregister("_lz_base")
        return cls(ops, shapes)

    @classmethod
    def from_file(cls, conn: duckdb.DuckDBPyConnection, path: str | Path) -> Baseline:
        """Learn from a file of normal traffic (OTLP/JSON lines or protobuf, gzip or not)."""
        return cls.learn(conn, span_metrics(conn, read_spans(path)))

    def register(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Make the baseline visible to SQL as ``base_ops`` and ``base_shapes``."""
        conn.register("base_ops", self.ops)
        conn.register("base_shapes", self.shapes)

    @contextmanager
    def beside(self, conn: duckdb.DuckDBPyConnection, metrics: pa.Table,
               **tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        """The window's span metrics as ``m``, this baseline (``register``) and ``tables`` by name,
        visible to SQL on ``conn`` for the ``with`` block, gone after it.  Within a ``beside`` for
        the same ``conn`` and ``metrics`` (a caller keeping them for several steps of one batch),
        ``m`` and the baseline are the ones already there."""
        own = not any(c is conn and m is metrics for c, m in self._open)
        names = [*(("m", "base_ops", "base_shapes") if own else ()), *tables]
        if own:
            conn.register("m", metrics)
            self.register(conn)
            self._open.append((conn, metrics))
        for name, table in tables.items():
            conn.register(name, table)
        try:
            yield conn
        finally:
            if own:
                del self._open[next(i for i, (c, m) in enumerate(self._open) if c is conn and m is metrics)]
            for name in names:
                conn.unregister(name)
