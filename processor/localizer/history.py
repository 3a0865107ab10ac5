"""A baseline that learns: decayed, bounded sketches of normal traffic in DuckDB.

Per (service, span name) the distributions of self time and duration are
kept as log-bucketed histograms (DDSketch-style: bucket ``b > 0`` holds values in
``(UNIT·γ^(b-2), UNIT·γ^(b-1)]``, so a quantile is within a relative error of
about ``(γ - 1) / 2``), with an error count; per operation the call shapes it makes
(the ``shape_sig`` of ``graph.span_metrics``).  Each update first multiplies every weight by
``0.5 ** (new traces / half_life)`` — decay by traffic volume, not by clock,
so a baseline seeded from yesterday's file stays valid until enough new
traffic has replaced it — and prunes what decayed to nothing.  Memory is
bounded by the bucket range per operation, ``max_shapes`` call shapes per
operation and ``max_ops`` operations (the least seen are dropped).

Per service, the values of the attributes the localizer projects for
attribution (``lz_values``) are counted the same way — decayed weights,
pruned — against the service's decayed span count (``lz_vtot``), so
attribution can ask how often a value is carried *normally*.  Per service,
not per operation: the attributes that localize a fault (node, pod, version,
zone) are properties of where a service runs, shared by all its operations,
and a value concentrated in one operation (an endpoint, a peer) is itself what
attribution should report; per-operation cells would also be thinner and
multiply memory.  At most ``max_values`` values are kept per (service,
attribute); the weight of those evicted is kept as one "other" row (value
NULL), so a value not kept is known to be at most that common.

Per (service, span name), every span attribute's values are learned too
(from ``attributes.ALL_ATTRIBUTES``, long form): how often each key is present
(``lz_akeys``, against the operation's span count ``lz_aops``), the shares of
its text values (``lz_acat``: strings, bools, array elements; at most
``max_values`` per key, the rest one "other" row) and a signed log-bucket
histogram of its numeric values (``lz_anum``: ints, doubles).  At most
``max_keys`` keys per operation are kept (the most often present).  What is
improbable under them is the localizer's *silent abnormality* (``silent``).

``baseline()`` turns the sketches into the ``Baseline`` tables the evidence
reads, so a learned baseline and one learned from a file score the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import AttrRef, column_name
from dsl.api import parsed
from processor.analysis.attributes import ALL_ATTRIBUTES, all_attributes_sql
from processor.localizer.attribution import ValueBaseline
from processor.localizer.baseline import Baseline
from processor.localizer.graph import span_metrics
from processor.localizer.reads import Reads
from processor.localizer.silent import AttributeBaseline, attr_bucket_sql
from processor.localizer.snapshot import SKETCH_TABLES, Snapshots
from processor.localizer.spans import read_spans

T = TypeVar("T")

UNIT_NS = 1_000   # values below one microsecond all land in bucket 0


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    gamma: float = 1.05          # bucket growth: quantiles within 5%
    half_life: float = 20_000    # traces after which old weight counts half
    min_count: float = 20.0      # effective samples before an operation is judged
    max_ops: int = 20_000
    max_shapes: int = 32         # call shapes kept per operation
    prune: float = 0.01          # weights below this are dropped
    max_values: int = 64         # attribute values kept per (service, attribute), and per (operation, key)
    max_keys: int = 64           # span attribute keys whose values are learned per operation
    attr_gamma: float = 1.1      # numeric attribute buckets: values within 10%
    snapshot: str | None = None  # a file the sketches are restored from and saved to (``snapshot``)
    # DuckDB threads of the sketches' connection.  Learning is some twenty small statements a batch,
    # cheapest on one like the analysis connection (``StorageConfig.threads``): with the machine's
    # cores it cost the bench's analysis worker ~15 ms more CPU a batch in scheduling threads
    threads: int = 1


SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS lz_hist (service VARCHAR, name VARCHAR, metric UTINYINT, b INTEGER, w DOUBLE);
CREATE TABLE IF NOT EXISTS lz_ops (service VARCHAR, name VARCHAR, n DOUBLE, errors DOUBLE);
CREATE TABLE IF NOT EXISTS lz_shapes (service VARCHAR, name VARCHAR, sig VARCHAR, k INTEGER, w DOUBLE);
CREATE TABLE IF NOT EXISTS lz_values (service VARCHAR, key VARCHAR, val VARCHAR, w DOUBLE);
CREATE TABLE IF NOT EXISTS lz_vtot (service VARCHAR, n DOUBLE);
CREATE TABLE IF NOT EXISTS lz_aops (service VARCHAR, name VARCHAR, n DOUBLE);
CREATE TABLE IF NOT EXISTS lz_akeys (service VARCHAR, name VARCHAR, key VARCHAR, w DOUBLE);
CREATE TABLE IF NOT EXISTS lz_acat (service VARCHAR, name VARCHAR, key VARCHAR, val VARCHAR, w DOUBLE);
CREATE TABLE IF NOT EXISTS lz_anum (service VARCHAR, name VARCHAR, key VARCHAR, b INTEGER, w DOUBLE);
"""

# the spans attribute shares are taken of (``ok``): those of the traces whose attributes are learned
AOPS_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_aops AS
SELECT service, name, sum(n) AS n FROM (
    SELECT service, name, n * $f AS n FROM lz_aops
    UNION ALL
    SELECT service, name, weight FROM lz_in WHERE ok
) GROUP BY ALL HAVING sum(n) >= $prune
"""

AKEYS_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_akeys AS
WITH m AS (
    SELECT service, name, key, sum(w) AS w FROM (
        SELECT service, name, key, w * $f AS w FROM lz_akeys
        UNION ALL
        SELECT service, name, key, any_value(weight) FROM lz_anew GROUP BY service, name, trace_id, span_id, key
    ) GROUP BY ALL HAVING sum(w) >= $prune
)
SELECT * FROM m QUALIFY row_number() OVER (PARTITION BY service, name ORDER BY w DESC, key) <= $max_keys
"""

ACAT_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_acat AS
WITH merged AS (
    SELECT service, name, key, val, sum(w) AS w FROM (
        SELECT service, name, key, val, w * $f AS w FROM lz_acat
        UNION ALL
        SELECT service, name, key, sval, any_value(weight) FROM lz_anew WHERE sval IS NOT NULL
        GROUP BY service, name, trace_id, span_id, key, sval
    ) SEMI JOIN lz_akeys USING (service, name, key) GROUP BY ALL
),
ranked AS (
    SELECT *, val IS NOT NULL AND row_number() OVER (
                  PARTITION BY service, name, key, val IS NULL ORDER BY w DESC, val) <= $max_values AS keep
    FROM merged
)
SELECT service, name, key, val, w FROM ranked WHERE keep AND w >= $prune
UNION ALL
SELECT service, name, key, NULL, sum(w) FROM ranked WHERE NOT keep GROUP BY ALL HAVING sum(w) >= $prune
"""

ANUM_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_anum AS
SELECT service, name, key, b, sum(w) AS w FROM (
    SELECT service, name, key, b, w * $f AS w FROM lz_anum
    UNION ALL
    SELECT service, name, key, {bucket} AS b, weight FROM lz_anew WHERE nval IS NOT NULL AND isfinite(nval)
) SEMI JOIN lz_akeys USING (service, name, key) GROUP BY ALL HAVING sum(w) >= $prune
"""


# What an operation evicted from lz_ops leaves behind: per table, the key its rows are kept under (the
# operation, or its service where the table is per service) and the rows to delete.  STALE_SQL names
# the tables that may hold any (those with a key lz_ops lacks, a null one included), so that a batch
# evicting nothing runs no DELETE; it never misses one NOT IN would delete.
_EVICTED_KEYS = {"lz_hist": "service, name", "lz_shapes": "service, name", "lz_values": "service",
                 "lz_vtot": "service", "lz_aops": "service, name", "lz_akeys": "service, name",
                 "lz_acat": "service, name", "lz_anum": "service, name"}
EVICTED = {t: f"({k}) NOT IN (SELECT ({k}) FROM lz_ops)" for t, k in _EVICTED_KEYS.items()}
STALE_SQL = " UNION ALL ".join(f"SELECT '{t}' FROM (SELECT 1 FROM {t} ANTI JOIN lz_ops USING ({k}) LIMIT 1)"
                               for t, k in _EVICTED_KEYS.items())

def _bucket_sql(v: str, unit: int, gamma: float) -> str:
    """The log bucket of ``v`` (ns): 0 below ``unit``, else 1 + the power of ``gamma`` it reaches in units."""
    return f"CASE WHEN {v} < {unit} THEN 0 ELSE ceil(ln({v} / {unit}) / ln({gamma}))::INTEGER + 1 END"


HIST_SQL = """
CREATE OR REPLACE TABLE lz_hist AS
SELECT service, name, metric, b, sum(w) AS w FROM (
    SELECT service, name, metric, b, w * $f AS w FROM lz_hist
    UNION ALL
    -- self time (metric 0) and duration (1) of every span: two reads of lz_in, cheaper than two lists a
    -- span unnested
    SELECT service, name, 0 AS metric, {self_b} AS b, weight AS w FROM lz_in
    UNION ALL
    SELECT service, name, 1 AS metric, {dur_b} AS b, weight AS w FROM lz_in
) GROUP BY ALL HAVING sum(w) >= $prune
"""

OPS_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_ops AS
SELECT service, name, sum(n) AS n, sum(errors) AS errors FROM (
    SELECT service, name, n * $f AS n, errors * $f AS errors FROM lz_ops
    UNION ALL
    SELECT service, name, weight, CASE WHEN status_code = 2 THEN weight ELSE 0 END FROM lz_in
) GROUP BY ALL HAVING sum(n) >= $prune
ORDER BY n DESC LIMIT $max_ops
"""

SHAPES_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_shapes AS
WITH s AS (
    SELECT service, name, sig, k, sum(w) AS w FROM (
        SELECT service, name, sig, k, w * $f AS w FROM lz_shapes
        UNION ALL
        SELECT service, name, shape_sig, shape_k, weight FROM lz_in  -- the call shapes span_metrics computed
    ) GROUP BY ALL HAVING sum(w) >= $prune
)
SELECT service, name, sig, k, w FROM s
QUALIFY row_number() OVER (PARTITION BY service, name ORDER BY w DESC, sig) <= $max_shapes
"""

# Attribute values of the new spans (``lz_vin``: trace_id, service, one VARCHAR column per
# attribute, and their trace's ``weight``); NULL (attribute absent) is never a value.  Spans that
# carry the same values are summed first: a batch holds far fewer combinations than spans, and
# VALUES_UPDATE_SQL unpivots a row per attribute.
VALUES_NEW_SQL = """
SELECT service, sum(weight) AS weight, {cols} FROM lz_vin GROUP BY ALL
"""

VTOT_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_vtot AS
SELECT service, sum(n) AS n FROM (
    SELECT service, n * $f AS n FROM lz_vtot
    UNION ALL
    SELECT service, weight FROM lz_vnew
) GROUP BY ALL HAVING sum(n) >= $prune
"""

# Old weights decay, new ones add; per (service, key) the ``max_values`` heaviest values are
# kept and the rest folds into the "other" row (val NULL).
VALUES_UPDATE_SQL = """
CREATE OR REPLACE TABLE lz_values AS
WITH merged AS (
    SELECT service, key, val, sum(w) AS w FROM (
        SELECT service, key, val, w * $f AS w FROM lz_values
        UNION ALL
        SELECT service, key, val, weight AS w FROM (UNPIVOT lz_vnew ON {cols} INTO NAME key VALUE val)
    ) GROUP BY ALL
),
ranked AS (
    SELECT *, val IS NOT NULL AND row_number() OVER (
                  PARTITION BY service, key, val IS NULL ORDER BY w DESC, val) <= $max_values AS keep
    FROM merged
)
SELECT service, key, val, w FROM ranked WHERE keep AND w >= $prune
UNION ALL
SELECT service, key, NULL, sum(w) FROM ranked WHERE NOT keep GROUP BY service, key HAVING sum(w) >= $prune
"""

# What attribution compares with (``values``): per service seen ``min_count`` times, each kept
# value's share of its spans (part 0), and per attribute the share a value *not* kept can have at
# most (part 1: the smaller of the evicted weight and the lightest kept value's); the services
# (part 2).  One statement, split in Arrow (``_parts``): see ATTRIBUTES_SQL.
BASE_VALUES_SQL = """
WITH t AS (SELECT * FROM lz_vtot WHERE n >= $min_count)
SELECT 0 AS part, v.service, v.key, v.val, v.w / t.n AS share
FROM lz_values v JOIN t USING (service) WHERE v.val IS NOT NULL
UNION ALL
SELECT 1, v.service, v.key, NULL,
       least(sum(v.w) FILTER (WHERE v.val IS NULL), min(v.w) FILTER (WHERE v.val IS NOT NULL)) / any_value(t.n)
FROM lz_values v JOIN t USING (service) GROUP BY ALL HAVING sum(v.w) FILTER (WHERE v.val IS NULL) > 0
UNION ALL
SELECT 2, service, NULL, NULL, NULL FROM t
"""
VALUE_PARTS = (("service", "key", "val", "share"), ("service", "key", "share"), ("service",))

# What the silent abnormality compares with (``attributes``): the operations whose attributes were
# learned on ``min_count`` spans, and their rows of lz_akeys, lz_acat and lz_anum.  One statement, the
# parts told apart by ``part`` and split in Arrow (``_parts``), not four: 1.2 ms a batch less on the
# bench's sketches (7.3 -> 6.1 ms, however few rows each reads).
ATTRIBUTES_SQL = """
WITH o AS (SELECT service, name, n FROM lz_aops WHERE n >= $min_count)
SELECT 0 AS part, service, name, n, NULL::VARCHAR AS key, NULL::VARCHAR AS val, NULL::INTEGER AS b, NULL::DOUBLE AS w
FROM o
UNION ALL SELECT 1, service, name, NULL, key, NULL, NULL, w FROM lz_akeys SEMI JOIN o USING (service, name)
UNION ALL SELECT 2, service, name, NULL, key, val, NULL, w FROM lz_acat SEMI JOIN o USING (service, name)
UNION ALL SELECT 3, service, name, NULL, key, NULL, b, w FROM lz_anum SEMI JOIN o USING (service, name)
"""
# each part's columns, as its table has them
ATTRIBUTE_PARTS = (("service", "name", "n"), ("service", "name", "key", "w"), ("service", "name", "key", "val", "w"),
                   ("service", "name", "key", "b", "w"))

# Quantiles of a sketch: the first bucket whose cumulative weight reaches q — the median at
# the bucket's centre, p99 at its upper edge (a threshold for "slow" errs on the high side);
# MAD is the weighted median of |centre - median|.
BASE_OPS_SQL = """
WITH o AS (SELECT * FROM lz_ops WHERE n >= $min_count),
h AS (
    SELECT h.service, h.name, h.metric, h.w,
           CASE WHEN h.b = 0 THEN 0.0 ELSE {unit} * 2 * pow({gamma}, h.b - 1) / ({gamma} + 1) END AS v,
           CASE WHEN h.b = 0 THEN {unit} ELSE {unit} * pow({gamma}, h.b - 1) END AS hi,
           sum(h.w) OVER (PARTITION BY h.service, h.name, h.metric ORDER BY h.b) AS cum,
           sum(h.w) OVER (PARTITION BY h.service, h.name, h.metric) AS tot
    FROM lz_hist h SEMI JOIN o USING (service, name)
),
q AS (
    SELECT service, name, metric,
           arg_min(v, cum) FILTER (WHERE cum >= 0.5 * tot) AS med,
           arg_min(hi, cum) FILTER (WHERE cum >= 0.99 * tot) AS p99,
           max(hi) FILTER (WHERE w > 0) AS top  -- the largest value seen (its bucket's upper edge)
    FROM h GROUP BY ALL
),
d AS (
    SELECT h.service, h.name, abs(h.v - q.med) AS dev, h.w,
           sum(h.w) OVER (PARTITION BY h.service, h.name ORDER BY abs(h.v - q.med)) AS cum,
           sum(h.w) OVER (PARTITION BY h.service, h.name) AS tot
    FROM h JOIN q USING (service, name, metric) WHERE h.metric = 0
),
mad AS (SELECT service, name, arg_min(dev, cum) FILTER (WHERE cum >= 0.5 * tot) AS self_mad FROM d GROUP BY ALL)
SELECT o.service, o.name, o.n::BIGINT AS n,
       s.med AS self_med, mad.self_mad, s.p99 AS self_p99, s.top AS self_max,
       t.med AS dur_med, t.p99 AS dur_p99, t.top AS dur_max,
       o.errors / o.n AS err_rate
FROM o
JOIN q s ON s.service = o.service AND s.name = o.name AND s.metric = 0
JOIN q t ON t.service = o.service AND t.name = o.name AND t.metric = 1
LEFT JOIN mad ON mad.service = o.service AND mad.name = o.name
"""

BASE_SHAPES_SQL = """
WITH s AS (SELECT * FROM lz_shapes SEMI JOIN (SELECT * FROM lz_ops WHERE n >= $min_count) USING (service, name)),
n AS (
    SELECT service, name, sum(w) AS n,
           arg_min(k, cum) FILTER (WHERE cum >= 0.5 * tot) AS k_med
    FROM (SELECT *, sum(w) OVER (PARTITION BY service, name ORDER BY k) AS cum,
                 sum(w) OVER (PARTITION BY service, name) AS tot FROM s)
    GROUP BY ALL
)
SELECT s.service, s.name, s.sig, sum(s.w) / any_value(n.n) AS share, any_value(n.n) AS n,
       any_value(n.k_med)::DOUBLE AS k_med
FROM s JOIN n USING (service, name) GROUP BY ALL
"""


@dataclass(frozen=True, slots=True)
class Sketches:
    """A copy of a history's sketches (every ``SKETCH_TABLES`` table) and the traces they learned from."""

    tables: dict[str, pa.Table]
    traces_seen: int


class History:
    """Decayed sketches of normal traffic in a private DuckDB connection (thread-safe)."""

    def __init__(self, config: HistoryConfig | None = None) -> None:
        self.config = config or HistoryConfig()
        self._conn = duckdb.connect()
        self._conn.execute(f"SET threads TO {int(self.config.threads)}")
        self._conn.execute(SCHEMA_SQL)
        self._lock = threading.Lock()
        self._cached: Baseline | None = None
        self._cached_values: ValueBaseline | None = None
        self._cached_attributes: AttributeBaseline | None = None
        self._ops: _Ops | None = None  # unknown: the next update checks every table for evicted rows
        self._reads = Reads()  # the read-backs' relations (``_read``)
        self.traces_seen = 0
        # saved beside the journal and restored here (``snapshot``); other parts may ``attach``
        self.snapshots = Snapshots(self.config.snapshot) if self.config.snapshot else None
        if self.snapshots is not None:
            self.snapshots.restore(self)

    def close(self) -> None:
        if self.snapshots is not None:
            self.snapshots.close(self)
        self._conn.close()

    def with_sketches(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` on the sketches' connection under the lock, then drop the cached baselines
        (``snapshot`` saves and restores through it)."""
        with self._lock:
            try:
                return fn(self._conn)
            finally:
                self._cached = self._cached_values = self._cached_attributes = None
                self._ops = None

    def sketches(self) -> Sketches:
        """A copy of what the history has learned, for another history to ``load``."""
        def read(conn: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
            return {t: conn.sql(f"SELECT * FROM {t}").to_arrow_table() for t in SKETCH_TABLES}
        return Sketches(self.with_sketches(read), self.traces_seen)

    def load(self, sketches: Sketches) -> None:
        """Replace the sketches with a copy (``sketches``) of another history's, learned at the same
        scale: it goes on from where that one was."""
        def write(conn: duckdb.DuckDBPyConnection) -> None:
            for table, rows in sketches.tables.items():
                conn.register("lz_load", rows)
                try:
                    conn.execute(f"DELETE FROM {table}")
                    conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM lz_load")
                finally:
                    conn.unregister("lz_load")
        self.with_sketches(write)
        self.traces_seen = sketches.traces_seen

    def seed(self, path: str | Path, attributes: Sequence[AttrRef] = (), every: bool = False,
             spans: pa.Table | None = None) -> int:
        """Learn a file of normal traffic (OTLP/JSON lines or protobuf, gzip or not), with the
        values of ``attributes`` and, with ``every``, of all span attributes; returns traces.
        ``spans``: the file already read (``read_spans`` with at least those attributes)."""
        refs = [r for r in attributes if r != ALL_ATTRIBUTES]
        if spans is None:
            spans = read_spans(path, [*refs, ALL_ATTRIBUTES] if every else refs)
        long = None
        with self._lock:
            metrics = span_metrics(self._conn, spans)
            if every:
                self._conn.register("lz_seed", spans)
                try:
                    long = self._conn.sql(all_attributes_sql("lz_seed")).to_arrow_table()
                finally:
                    self._conn.unregister("lz_seed")
        # a file gives span and resource values only (an event attribute has none to learn)
        keys = [c for c in dict.fromkeys(column_name(ref) for ref in refs) if c in spans.column_names]
        values = spans.select(["trace_id", "service", *keys]) if keys else None
        return self.learn(metrics, values=values, attributes=long)

    def learn(self, metrics: pa.Table, weights: dict[bytes, float] | None = None,
              values: pa.Table | None = None, attributes: pa.Table | None = None, scale: float = 1.0,
              value_scale: float = 1.0, traces: int | None = None) -> int:
        """Fold span metrics (``graph.span_metrics``) in, each trace weighted by ``weights``
        (default 1: a weight below one learns a suspicious trace only a little); ``values``
        (``trace_id``, ``service`` and one string column per attribute, named by
        ``dsl.column_name``) are the same spans' attribute values, counted per service;
        ``attributes`` all their span attributes in long form (``attributes.all_attributes_sql``),
        learned per operation from the traces without a failure (root span in error, or weight
        below one).  ``attributes`` are of a sample of the traces when ``scale`` (the traces one
        of them stands for) is above 1, ``values`` when ``value_scale`` is: each sampled trace's
        weight counts that many times.  ``traces``: the distinct traces of ``metrics``, when the caller
        has counted them (else counted here)."""
        if metrics.num_rows == 0:
            return 0
        cfg = self.config
        # the batch's rows weighted per trace (``_weighted``), joined in Arrow once instead of in
        # every statement that reads them
        new = _weighted(metrics, weights)
        failed = _failed(new, weights) if attributes is not None else None
        if failed is not None:  # ``ok``: the spans of the traces whose attributes are learned
            new = new.append_column("ok", pc.invert(pc.is_in(new.column("trace_id"), failed)))
        if traces is None:
            traces = pc.count_distinct(metrics.column("trace_id")).as_py()
        f = 0.5 ** (traces / cfg.half_life)
        with self._lock:
            conn = self._conn
            conn.register("lz_in", new)
            try:
                common = {"f": f, "prune": cfg.prune}
                if values is not None and values.num_columns > 2:
                    self._learn_values(_weighted(values, weights, value_scale), common)
                if attributes is not None and failed is not None:
                    self._learn_attributes(attributes, failed, common, scale)
                conn.execute(parsed(HIST_SQL.format(self_b=_bucket_sql("self_ns", UNIT_NS, cfg.gamma),
                                                     dur_b=_bucket_sql("dur", UNIT_NS, cfg.gamma))), common)
                evicting = self._may_evict(new, weights, f)
                conn.execute(parsed(OPS_UPDATE_SQL), {**common, "max_ops": cfg.max_ops})
                conn.execute(parsed(SHAPES_UPDATE_SQL), {**common, "max_shapes": cfg.max_shapes})
                # operations evicted from lz_ops take their buckets with them; most batches evict
                # none, and one query finding where is cheaper than a DELETE per table
                if evicting:
                    for (table,) in conn.execute(parsed(STALE_SQL)).fetchall():
                        conn.execute(f"DELETE FROM {table} WHERE {EVICTED[table]}")
                rows, least = conn.execute(parsed("SELECT count(*), min(n) FROM lz_ops")).fetchall()[0]
                self._ops = _Ops(rows, least)
            except BaseException:
                self._ops = None  # the tables may be half updated: the next batch checks them all
                raise
            finally:
                conn.unregister("lz_in")
            self._cached = None
            self._cached_values = None
            self._cached_attributes = None
            self.traces_seen += traces
        if self.snapshots is not None:
            self.snapshots.learned(self)
        return traces

    def _may_evict(self, new: pa.Table, weights: dict[bytes, float] | None, f: float) -> bool:
        """Whether this batch's update of lz_ops (decay by ``f``, then the new rows) may drop an
        operation, leaving rows of it in other tables.  The other tables take their keys from the
        same new rows as lz_ops, which takes every one of them, so they hold an operation (or a
        service) lz_ops lacks only once lz_ops drops one: unless lz_ops is unknown (``_Ops``: the
        first batch, or after the tables were replaced), only if its lightest operation decays below
        ``prune``, a new trace weighs less than ``prune`` or the operations may outnumber ``max_ops``."""
        cfg, ops = self.config, self._ops
        if ops is None:
            return True
        if ops.rows and ops.least * f < cfg.prune:
            return True
        if min((weights or {}).values(), default=1.0) < cfg.prune:
            return True
        if ops.rows + new.num_rows <= cfg.max_ops:
            return False
        return ops.rows + new.group_by(["service", "name"]).aggregate([]).num_rows > cfg.max_ops

    def _learn_values(self, values: pa.Table, common: dict[str, float]) -> None:
        """Count attribute values per service (under the lock, in ``learn``): ``values`` with their
        trace's ``weight`` (``_weighted``), which applies to its spans' values as to its timings."""
        conn = self._conn
        keys = [n for n in values.column_names if n not in ("trace_id", "service", "weight")]
        cols = ", ".join(_quote(k) for k in keys)
        conn.register("lz_vin", values)
        try:
            conn.execute(parsed(f"CREATE OR REPLACE TEMP TABLE lz_vnew AS {VALUES_NEW_SQL.format(cols=cols)}"))
            conn.execute(parsed(VTOT_UPDATE_SQL), common)
            conn.execute(parsed(VALUES_UPDATE_SQL.format(cols=cols)), {**common, "max_values": self.config.max_values})
        finally:
            conn.execute(parsed("DROP TABLE IF EXISTS lz_vnew"))
            conn.unregister("lz_vin")

    def _learn_attributes(self, attributes: pa.Table, failed: pa.Array, common: dict[str, float],
                          scale: float = 1.0) -> None:
        """Learn every span attribute per operation (under the lock, in ``learn``) from the traces
        without a failure (not in ``failed``: ``_failed``); lz_in's ``ok`` says which its spans are."""
        conn, cfg = self._conn, self.config
        ok = pc.invert(pc.is_in(attributes.column("trace_id"), failed))
        anew = attributes.select(["service", "name", "trace_id", "span_id", "key", "type", "sval", "nval"]).filter(ok)
        anew = anew.append_column("weight", pa.repeat(pa.scalar(scale, pa.float64()), anew.num_rows))
        conn.register("lz_anew", anew)
        try:
            conn.execute(parsed(AOPS_UPDATE_SQL), common)
            conn.execute(parsed(AKEYS_UPDATE_SQL), {**common, "max_keys": cfg.max_keys})
            conn.execute(parsed(ACAT_UPDATE_SQL), {**common, "max_values": cfg.max_values})
            conn.execute(parsed(ANUM_UPDATE_SQL.format(bucket=attr_bucket_sql("nval", cfg.attr_gamma))), common)
        finally:
            conn.unregister("lz_anew")

    def attributes(self) -> AttributeBaseline:
        """What each operation's span attributes normally hold, for the operations whose
        attributes were learned on at least ``min_count`` (effective) spans."""
        with self._lock:
            if self._cached_attributes is None:
                ops, keys, cat, num = _parts(self._read(ATTRIBUTES_SQL), ATTRIBUTE_PARTS)
                self._cached_attributes = AttributeBaseline(ops, keys, cat, num, self.config.attr_gamma)
            return self._cached_attributes

    def baseline(self) -> Baseline:
        """The operations seen at least ``min_count`` times (effective), as a ``Baseline``."""
        with self._lock:
            if self._cached is None:
                ops = self._read(BASE_OPS_SQL.format(unit=UNIT_NS, gamma=self.config.gamma))
                self._cached = Baseline(ops, self._read(BASE_SHAPES_SQL))
            return self._cached

    def values(self) -> ValueBaseline:
        """How often each attribute value is carried normally, per service seen at least
        ``min_count`` times (effective spans)."""
        with self._lock:
            if self._cached_values is None:
                self._cached_values = ValueBaseline(*_parts(self._read(BASE_VALUES_SQL), VALUE_PARTS))
            return self._cached_values

    def _read(self, sql: str) -> pa.Table:
        """The rows of a read-back statement (under the lock), from a relation kept for it (``Reads``)."""
        return self._reads.rows(self._conn, sql, {"min_count": self.config.min_count})

    def size(self) -> dict[str, int]:
        """Rows held per table: what bounds memory."""
        with self._lock:
            return {t: self._conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in SKETCH_TABLES}


@dataclass(frozen=True, slots=True)
class _Ops:
    """lz_ops after the last update (``History._may_evict``): its rows and its lightest ``n``."""

    rows: int
    least: float | None


def _weighted(rows: pa.Table, weights: dict[bytes, float] | None, scale: float = 1.0) -> pa.Table:
    """``rows`` with their trace's learning ``weight`` (``weights``, 1 for a trace not in it), times
    ``scale`` (the traces a sampled one stands for)."""
    if not weights:
        return rows.append_column("weight", pa.repeat(pa.scalar(scale, pa.float64()), rows.num_rows))
    ids = rows.column("trace_id")
    at = pc.index_in(ids, pa.array(list(weights), ids.type))
    weight = pc.fill_null(pc.take(pa.array(list(weights.values()), pa.float64()), at), 1.0)
    return rows.append_column("weight", weight if scale == 1.0 else pc.multiply(weight, scale))


def _failed(new: pa.Table, weights: dict[bytes, float] | None) -> pa.Array:
    """The traces whose attribute values are not learned: a failed request (its root span in error)
    or a suspect trace (weight below one: the localizer found a cause in it).  What values are normal
    is learned from traffic without a failure, so a fault's values do not become normal while it
    lasts (its traces fail), while a lasting change that fails nothing is absorbed."""
    ids = new.column("trace_id")
    root_error = pc.and_(pc.is_null(new.column("parent_span_id")), pc.equal(new.column("status_code"), 2))
    suspect = [t for t, w in (weights or {}).items() if w < 1]
    return pc.unique(pa.concat_arrays([ids.filter(root_error).combine_chunks(), pa.array(suspect, ids.type)]))


def _parts(rows: pa.Table, parts: Sequence[Sequence[str]]) -> list[pa.Table]:
    """The tables a statement returned as one (``part`` telling them apart), each with its columns."""
    part = rows.column("part")
    return [rows.filter(pc.equal(part, i)).select(list(columns)) for i, columns in enumerate(parts)]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'

