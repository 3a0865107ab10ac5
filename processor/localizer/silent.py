"""Silent abnormality and the counterfactual from the window: a cause that raised nothing.

A span can be abnormal without an error: an attribute value its operation
rarely or never shows (``finish_reasons=length``, an unknown tool name, an
empty result), a number outside its usual range (zero rows, a low score, a
temperature or timeout out of range), a key present that normally is not, or
absent that normally is.  Against the operation's learned attribute baseline
(``AttributeBaseline``, kept by ``history``) each value gets the probability
of a value *this unusual*:

- text (strings, bools, array elements): the baseline weight of the values no
  more common than it (Good–Turing: a value never seen is as likely as the
  values seen once together), the values the cap evicted and, for a
  high-cardinality key, those never recorded; the empty value against how
  often the key is empty;
- numbers: the baseline weight at or beyond its bucket on its side (a tail);
- presence: the share of the operation's spans with (or without) the key;

each with half a count of prior, over the operation's count plus one.  A
value is *abnormal* when that is below ``1 - QUANTILE`` (the latency
evidence's p99).  Its probability of causation is the attributable fraction
``1 - p / q``, ``q`` the lower bound of how often the operation shows it in
the window.

Abnormal is not a cause.  For a failing span B (an error origin or a latency
origin) and an abnormal antecedent A (``dsl.antecedents_sql``: B's causal
past), the window is the control group: among its traces with B's operation,
how often does it fail when A's operation shows that abnormality (``n1``,
``k1``) and when it does not (``n0``, ``k0``)?  The baseline adds its counts
(B's operation fails at its baseline rate; A's abnormality is as rare as the
baseline says, and followed by the baseline rate).  The lift's lower bound is
the Wilson lower bound of ``k1 / n1`` over the larger of the pooled control's
Wilson upper bound and the window control's lower bound (a window whose
traces fail without the abnormality too says the failure does not need it);
A *explains* B when the attributable fraction ``1 - 1 / lift`` exceeds 1/2
(more likely than not).  Normal noise explains nothing: a value healthy
traffic shows without failing is common (not abnormal) or has a low lift.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from dsl import antecedents_sql
from processor.localizer.conventions import is_error_report
from processor.localizer.evidence import QUANTILE, Z, wilson_lower

RARE = 1.0 - QUANTILE      # a value is abnormal when one this unusual is rarer than this
MORE_LIKELY_THAN_NOT = 0.5  # the attributable fraction above which an antecedent explains a failure
EMPTY = ("", "[]")          # the empty string and the empty array (``attributes.ALL_ATTRIBUTES``)

@dataclass(frozen=True, slots=True)
class AttributeBaseline:
    """What each operation's span attributes normally hold (``History.attributes``): ``ops``
    (service, name, n spans), ``keys`` (…, key, w spans carrying it), ``cat`` (…, key, val,
    w; val NULL the values evicted by the cap), ``num`` (…, key, b bucket, w)."""

    ops: pa.Table
    keys: pa.Table
    cat: pa.Table
    num: pa.Table
    gamma: float = 1.1


@dataclass(frozen=True, slots=True)
class Abnormality:
    """An improbable value on one span."""

    trace_id: bytes
    span_id: bytes
    service: str
    name: str
    key: str
    kind: str          # "value", "low", "high", "present", "absent"
    value: str         # the value as text ('' for presence)
    p: float           # the probability of a value this unusual under the baseline
    n: float           # the baseline's spans it is judged against
    usual: str         # what the baseline usually shows, for messages
    confidence: float = 0.0   # attributable fraction against the window (``1 - p / q``)
    k_win: int = 0            # the window's spans of the operation that show it ...
    n_win: int = 0            # ... of its spans in the window

    @property
    def order(self) -> tuple[float, str, str, str]:
        """Of one span's abnormalities, the most improbable first, then a fixed order (DuckDB's
        threads return rows in any): ``explain_failures`` keeps the first, ``blame`` lists them so."""
        return (self.p, self.key, self.kind, self.value)

    @property
    def event(self) -> tuple[str, str, str, str, str]:
        """What the window counts: this abnormality on this operation."""
        return (self.service, self.name, self.key, self.kind, self.value if self.kind == "value" else "")

    @property
    def message(self) -> str:
        what = {"error": "status ERROR", "value": f"{self.key}={self.value!r}",
                "low": f"{self.key}={self.value}, below its usual range",
                "high": f"{self.key}={self.value}, above its usual range",
                "present": f"{self.key} present", "absent": f"{self.key} absent"}[self.kind]
        return (f"{what} ({self.usual}; p={self.p:.2g} over {self.n:,.0f} baseline spans; "
                f"{self.k_win} of {self.n_win} spans in the window)")


@dataclass(frozen=True, slots=True)
class Explanation:
    """An abnormal antecedent that explains a failing span."""

    cause: Abnormality
    lift: float        # lower bound of how much more often the failure follows the abnormality
    fraction: float    # attributable fraction ``1 - 1 / lift``: the probability of causation
    counts: tuple[float, float, float, float]   # k1, n1, k0, n0 (window and baseline)
    window: tuple[int, int, int, int]           # the same in the window alone
    distance: int      # ``antecedents_sql``'s distance (-1: no causal past asked)

    @property
    def message(self) -> str:
        k1, n1, k0, n0 = self.window
        where = f"{self.cause.service}:{self.cause.name} {self.cause.message}"
        if math.isinf(self.lift):
            return f"{where}; in the failing span's causal past (no lift asked)"
        return (f"{where}; the failure follows it {self.lift:.1f}x more often than without it "
                f"(lower bound; window: {k1} of {n1} traces with it fail, {k0} of {n0} without)")


def wilson_upper(k: float, n: float, z: float = Z) -> float:
    """Upper confidence bound of a rate k/n (1 with no data)."""
    if n <= 0:
        return 1.0
    return 1.0 - wilson_lower(n - k, n, z)


def wilson_lower_sql(k: str, n: str, z: float = Z) -> str:
    """``evidence.wilson_lower`` as a SQL expression (0 when ``n`` is 0)."""
    p = f"({k})::DOUBLE / ({n})"
    return (f"(CASE WHEN ({n}) > 0 AND ({k}) > 0 THEN greatest(0.0, ({p} + {z * z} / (2.0 * ({n})) - {z} * "
            f"sqrt({p} * (1 - {p}) / ({n}) + {z * z} / (4.0 * ({n}) * ({n})))) / (1 + {z * z} / ({n}))) ELSE 0.0 END)")


# Per (operation, key, value) of the batch: the probability of a value this unusual under the
# baseline (p) and how many of the window's spans of the operation show it (k_win of n_win); the
# values whose attributable fraction ``1 - p / q`` (q: the Wilson lower bound of k_win / n_win)
# exceeds 1/2 come back, once per span that shows them.
ABNORMAL_SQL = """
WITH
ops AS (SELECT * FROM sb_ops),
keyed AS (  -- per (operation, key): spans with the key, and the least weight of a kept key
    SELECT k.*, min(k.w) OVER (PARTITION BY k.service, k.name) AS w_min_key,
           count(*) OVER (PARTITION BY k.service, k.name) AS n_keys
    FROM sb_keys k
),
win AS (SELECT service, name, count(*) AS n_win FROM sl_spans WHERE sampled GROUP BY ALL),
tspan AS (SELECT DISTINCT trace_id, span_id, service, name, key, sval, sampled FROM sl_long WHERE sval IS NOT NULL),
tv AS (SELECT service, name, key, sval, count(*) FILTER (WHERE sampled) AS k_win FROM tspan GROUP BY ALL),
cs AS (  -- per (operation, key): weights recorded, evicted, empty
    SELECT service, name, key, sum(w) AS w_rec, coalesce(sum(w) FILTER (WHERE val IS NULL), 0) AS w_other,
           coalesce(sum(w) FILTER (WHERE val IN ('', '[]')), 0) AS w_empty
    FROM sb_cat GROUP BY ALL
),
cat AS (
    SELECT tv.service, tv.name, tv.key, tv.sval, tv.k_win, k.w AS n_ref,
           CASE WHEN tv.sval IN ('', '[]') THEN (coalesce(cs.w_empty, 0) + 0.5) / (k.w + 1)
                ELSE (coalesce((SELECT sum(c2.w) FROM sb_cat c2
                                WHERE c2.service = tv.service AND c2.name = tv.name AND c2.key = tv.key
                                  AND c2.val IS NOT NULL AND c2.val NOT IN ('', '[]')
                                  AND c2.w <= greatest(coalesce(c.w, 0), 1)), 0)
                      + coalesce(cs.w_other, 0) + greatest(k.w - coalesce(cs.w_rec, 0), 0) + 0.5) / (k.w + 1)
           END AS p,
           CASE WHEN tv.sval IN ('', '[]') THEN coalesce(cs.w_empty, 0) / k.w ELSE coalesce(c.w, 0) / k.w END AS share
    FROM tv JOIN keyed k USING (service, name, key)
    LEFT JOIN sb_cat c ON c.service = tv.service AND c.name = tv.name AND c.key = tv.key AND c.val = tv.sval
    LEFT JOIN cs ON cs.service = tv.service AND cs.name = tv.name AND cs.key = tv.key
),
nspan AS (
    SELECT DISTINCT trace_id, span_id, service, name, key, {bucket} AS b, sampled FROM sl_long
    WHERE nval IS NOT NULL AND isfinite(nval)
),
nb AS (SELECT service, name, key, b, count(*) FILTER (WHERE sampled) AS c FROM nspan GROUP BY ALL),
nv AS (
    SELECT *, sum(c) OVER (PARTITION BY service, name, key ORDER BY b) AS k_le,
              sum(c) OVER (PARTITION BY service, name, key ORDER BY b DESC) AS k_ge
    FROM nb
),
hist AS (
    SELECT *, sum(w) OVER (PARTITION BY service, name, key ORDER BY b) AS cum,
           sum(w) OVER (PARTITION BY service, name, key) AS tot
    FROM sb_num
),
qs AS (
    SELECT service, name, key, any_value(tot) AS tot,
           arg_min(b, cum) FILTER (WHERE cum >= 0.01 * tot) AS b_lo,
           arg_min(b, cum) FILTER (WHERE cum >= 0.5 * tot) AS b_med,
           arg_min(b, cum) FILTER (WHERE cum >= 0.99 * tot) AS b_hi
    FROM hist GROUP BY ALL
),
num0 AS (
    SELECT nv.service, nv.name, nv.key, nv.b, nv.k_le, nv.k_ge, any_value(qs.tot) AS tot,
           coalesce(sum(h.w) FILTER (WHERE h.b <= nv.b), 0) AS le,
           coalesce(sum(h.w) FILTER (WHERE h.b >= nv.b), 0) AS ge,
           any_value(qs.b_lo) AS b_lo, any_value(qs.b_med) AS b_med, any_value(qs.b_hi) AS b_hi
    FROM nv JOIN qs USING (service, name, key) JOIN sb_num h USING (service, name, key)
    GROUP BY ALL
),
num AS (
    SELECT *, CASE WHEN le <= ge THEN 'low' ELSE 'high' END AS side,
           (least(le, ge) + 0.5) / (tot + 1) AS p, CASE WHEN le <= ge THEN k_le ELSE k_ge END AS k_win
    FROM num0
),
kspan AS (SELECT DISTINCT trace_id, span_id, service, name, key, sampled FROM sl_long),
kp AS (SELECT service, name, key, count(*) FILTER (WHERE sampled) AS k_win FROM kspan GROUP BY ALL),
pres AS (  -- keys on spans of operations where they are rare, or keys the operation has not kept
    SELECT kp.service, kp.name, kp.key, o.n, kp.k_win,
           (coalesce(k.w, CASE WHEN kc.n_keys >= $max_keys THEN kc.w_min_key ELSE 0 END) + 0.5) / (o.n + 1) AS p,
           coalesce(k.w, 0) / o.n AS share
    FROM kp JOIN ops o USING (service, name)
    LEFT JOIN keyed k USING (service, name, key)
    LEFT JOIN (SELECT DISTINCT service, name, n_keys, w_min_key FROM keyed) kc USING (service, name)
),
absn AS (  -- keys the operation usually carries: how many of the window's spans lack them
    SELECT k.service, k.name, k.key, o.n, (o.n - k.w + 0.5) / (o.n + 1) AS p, k.w / o.n AS share,
           win.n_win - coalesce(kp.k_win, 0) AS k_win
    FROM sb_keys k JOIN ops o USING (service, name) JOIN win USING (service, name)
    LEFT JOIN kp USING (service, name, key)
)
SELECT t.trace_id, t.span_id, t.service, t.name, t.key, 'value' AS kind, t.sval AS val, c.p, c.n_ref AS n, c.share,
       NULL::INTEGER AS b_lo, NULL::INTEGER AS b_hi, NULL::INTEGER AS b_med, c.k_win, win.n_win
FROM tspan t JOIN cat c USING (service, name, key, sval) JOIN win USING (service, name)
WHERE c.p < {wl_cat} / 2
UNION ALL
-- of an array's values in the bucket the most extreme (any_value's pick varied with DuckDB's threads;
-- any_value(nm.side): side is grouped on, but GROUP BY ALL would not group on an expression mixing it with aggregates)
SELECT s.trace_id, s.span_id, s.service, s.name, s.key, nm.side,
       CAST(CASE WHEN any_value(nm.side) = 'low' THEN min(l.nval) ELSE max(l.nval) END AS VARCHAR),
       nm.p, nm.tot, least(nm.le, nm.ge) / nm.tot, nm.b_lo, nm.b_hi, nm.b_med, nm.k_win, any_value(win.n_win)
FROM nspan s JOIN num nm USING (service, name, key, b) JOIN win USING (service, name)
JOIN sl_long l ON l.trace_id = s.trace_id AND l.span_id = s.span_id AND l.key = s.key AND {bucket_l} = s.b
WHERE nm.p < {wl_num} / 2
GROUP BY ALL
UNION ALL
SELECT s.trace_id, s.span_id, s.service, s.name, s.key, 'present', '', pr.p, pr.n, pr.share,
       NULL, NULL, NULL, pr.k_win, win.n_win
FROM kspan s JOIN pres pr USING (service, name, key) JOIN win USING (service, name)
WHERE pr.p < {wl_pres} / 2
UNION ALL
SELECT s.trace_id, s.span_id, s.service, s.name, a.key, 'absent', '', a.p, a.n, a.share,
       NULL, NULL, NULL, a.k_win, win.n_win
FROM sl_spans s JOIN absn a USING (service, name) JOIN win USING (service, name)
WHERE a.p < {wl_abs} / 2
  AND NOT EXISTS (SELECT 1 FROM kspan x WHERE x.trace_id = s.trace_id AND x.span_id = s.span_id AND x.key = a.key)
"""


ATTR_UNIT = 1e-9   # numeric attribute values closer to 0 than this share bucket 0


def attr_bucket_sql(v: str, gamma: float) -> str:
    """The signed log bucket of a numeric attribute value: 0 around zero, ``±(k + 1)`` for
    ``|v|`` in ``(UNIT·γ^(k-1), UNIT·γ^k]`` — so order is kept across signs."""
    # ln|v| - ln(UNIT), not ln(|v| / UNIT): the quotient overflows to inf for |v| near the
    # largest double, and inf (or NaN) cannot be cast to a bucket; those values have no bucket
    # (the callers also filter them, but DuckDB may evaluate a projection before the filter)
    return (f"(CASE WHEN NOT isfinite({v}) THEN NULL WHEN abs({v}) < {ATTR_UNIT} THEN 0 "
            f"ELSE sign({v})::INTEGER * "
            f"(ceil((ln(abs({v})) - ln({ATTR_UNIT})) / ln({gamma}))::INTEGER + 1) END)")


def attr_bucket_value(b: int, gamma: float) -> float:
    """A representative value of bucket ``b`` (its geometric middle), for messages."""
    return 0.0 if b == 0 else (1 if b > 0 else -1) * ATTR_UNIT * gamma ** (abs(b) - 1.5)


def abnormal_spans(conn: duckdb.DuckDBPyConnection, long: str, spans: str, base: AttributeBaseline,
                   max_keys: int) -> list[Abnormality]:
    """The improbable attribute values of the batch: ``long`` is its long form
    (``attributes.all_attributes_sql``) and ``spans`` its spans (trace_id, span_id, service,
    name), each with ``sampled``: the window's counts come from the sampled rows, the values
    judged are all of them."""
    if base.ops.num_rows == 0:
        return []
    views = {"sb_ops": base.ops, "sb_keys": base.keys, "sb_cat": base.cat, "sb_num": base.num}
    for name, t in views.items():
        conn.register(name, t)
    conn.execute(f"CREATE OR REPLACE TEMP VIEW sl_long AS {long}")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW sl_spans AS SELECT trace_id, span_id, service, name, sampled FROM {spans}")
    try:
        sql = ABNORMAL_SQL.format(
            bucket=attr_bucket_sql("nval", base.gamma), bucket_l=attr_bucket_sql("l.nval", base.gamma),
            wl_cat=wilson_lower_sql("c.k_win", "win.n_win"),
            wl_num=wilson_lower_sql("least(nm.k_win, win.n_win)", "win.n_win"),
            wl_pres=wilson_lower_sql("pr.k_win", "win.n_win"), wl_abs=wilson_lower_sql("a.k_win", "win.n_win"))
        rows = conn.execute(sql, {"max_keys": max_keys}).fetchall()
    finally:
        conn.execute("DROP VIEW IF EXISTS sl_long")
        conn.execute("DROP VIEW IF EXISTS sl_spans")
        for name in views:
            conn.unregister(name)
    out = []
    for trace_id, span_id, service, name, key, kind, val, p, n, share, b_lo, b_hi, b_med, k_win, n_win in rows:
        if kind in ("low", "high"):
            lo, hi, med = (_number(attr_bucket_value(b, base.gamma)) for b in (b_lo, b_hi, b_med))
            usual = f"usually {lo}..{hi}, median {med}; {share:.1%} of its spans this {kind}"
            val = _number(float(val))
        elif kind == "value" and val in EMPTY:
            usual = f"empty on {share:.1%} of its spans"
        elif kind == "value":
            usual = f"on {share:.2%} of its spans" if share > 0 else "never seen"
        else:
            usual = f"normally on {share:.1%} of its spans"
        k_win = min(k_win, n_win)   # an array's elements: a span counts once
        q = wilson_lower(k_win, n_win)
        out.append(Abnormality(trace_id, span_id, service, name, key, kind, val or "", p, n, usual,
                               max(0.0, 1.0 - p / q) if q > 0 else 0.0, int(k_win), int(n_win)))
    return out


def _number(v: float) -> str:
    """A value for messages: integers as they are, bucket values (within 10%) to two digits."""
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{v:.0f}"
    return f"{v:.0f}" if 100 <= abs(v) < 1e15 else f"{v:.2g}"


@dataclass(slots=True)
class Window:
    """Per operation, the window's traces where it occurs and fails; per abnormality, the
    traces (and spans) that show it."""

    occurs: dict[tuple[str, str], set[bytes]] = field(default_factory=dict)
    errors: dict[tuple[str, str], set[bytes]] = field(default_factory=dict)
    slow: dict[tuple[str, str], set[bytes]] = field(default_factory=dict)
    shows: dict[tuple[str, str, str, str, str], set[bytes]] = field(default_factory=lambda: defaultdict(set))


WINDOW_SQL = """
SELECT m.service, m.name, list(DISTINCT m.trace_id) AS occurs,
       list(DISTINCT m.trace_id) FILTER (WHERE m.status_code = 2 AND NOT m.child_error) AS errors,
       list(DISTINCT m.trace_id) FILTER (WHERE m.self_ns > o.self_p99) AS slow
FROM m LEFT JOIN base_ops o USING (service, name) {where} GROUP BY ALL
"""


def window(conn: duckdb.DuckDBPyConnection, abnormal: Iterable[Abnormality], sample: str | None = None) -> Window:
    """The window's counts (``m``: span metrics, ``base_ops`` registered), over the traces of
    ``sample`` (a relation of ``trace_id``) when given."""
    w = Window()
    where = f"WHERE m.trace_id IN (SELECT trace_id FROM {sample})" if sample else ""
    for service, name, occurs, errors, slow in conn.execute(WINDOW_SQL.format(where=where)).fetchall():
        w.occurs[(service, name)] = set(occurs)
        w.errors[(service, name)] = set(errors or ())
        w.slow[(service, name)] = set(slow or ())
    traces = set().union(*w.occurs.values()) if w.occurs else set()
    for a in abnormal:
        if a.trace_id in traces:
            w.shows[a.event].add(a.trace_id)
    return w


def lift(w: Window, cause: Abnormality, failed: tuple[str, str], how: str, base_rate: float,
         base_n: float) -> tuple[float, tuple[float, float, float, float], tuple[int, int, int, int]]:
    """The lower bound of how much more often ``failed`` (an operation) fails (``how``: "error"
    or "slow") in traces where ``cause`` shows than in those where it does not, with the window
    and the baseline's counts."""
    occurs = w.occurs.get(failed, set())
    fails = (w.errors if how == "error" else w.slow).get(failed, set()) & occurs
    shows = w.shows.get(cause.event, set())
    n1w, k1w = len(occurs & shows), len(fails & shows)
    n0w, k0w = len(occurs - shows), len(fails - shows)
    seen = max(0.0, cause.p * (cause.n + 1) - 0.5)   # the baseline's spans that showed it
    n1, k1 = n1w + seen, k1w + seen * base_rate
    n0, k0 = n0w + base_n, k0w + base_n * base_rate
    control = max(wilson_upper(k0, n0), wilson_lower(k0w, n0w))
    treated = wilson_lower(k1, n1)
    value = treated / control if control > 0 else math.inf
    return value, (k1, n1, k0, n0), (k1w, n1w, k0w, n0w)


def antecedents(conn: duckdb.DuckDBPyConnection, spans: str, targets: list[tuple[bytes, bytes]],
                causal_past: bool = True) -> dict[tuple[bytes, bytes], dict[bytes, int]]:
    """Per target (trace id, span id): its antecedents and their distance (``dsl.antecedents_sql``);
    without ``causal_past``, every other span of its trace (distance -1)."""
    if not targets:
        return {}
    conn.register("sl_targets", pa.table({"trace_id": pa.array([t for t, _ in targets], pa.binary()),
                                          "span_id": pa.array([s for _, s in targets], pa.binary())}))
    # Each target's antecedents in start order (then span id): ``explain_failures`` keeps the first
    # of equally good explanations (retries of one call all showing the same value), so that is
    # the earliest, the first attempt, as ``blame`` takes a retry loop's first failure.  Without
    # the ORDER BY the rows come in the order DuckDB's threads finish, and so did the choice.
    try:
        if causal_past:
            rows = conn.execute(f"""SELECT a.trace_id, a.span_id, a.antecedent_id, a.distance
                                    FROM ({antecedents_sql(spans, "sl_targets")}) a
                                    JOIN (SELECT DISTINCT trace_id, span_id, start_ns FROM {spans}) s
                                      ON s.trace_id = a.trace_id AND s.span_id = a.antecedent_id
                                    ORDER BY s.start_ns, a.antecedent_id""").fetchall()
        else:
            rows = conn.execute(f"""SELECT t.trace_id, t.span_id, s.span_id, -1 FROM sl_targets t
                                    JOIN {spans} s ON s.trace_id = t.trace_id AND s.span_id <> t.span_id
                                    ORDER BY s.start_ns, s.span_id""").fetchall()
    finally:
        conn.unregister("sl_targets")
    out: dict[tuple[bytes, bytes], dict[bytes, int]] = defaultdict(dict)
    for trace_id, target, ante, distance in rows:
        out[(trace_id, target)][ante] = distance
    return out


@dataclass(frozen=True, slots=True)
class Silent:
    """The batch's silent abnormalities and how to judge them (the ablation switches)."""

    abnormal: tuple[Abnormality, ...] = ()
    causal_past: bool = True   # explain a failure only by its antecedents (else by any span of its trace)
    lift: bool = True          # require the window's lift (else the most improbable antecedent explains)
    sample: str | None = None  # a relation of the traces the window's counts come from (None: all)
    # finds ``abnormal`` when there is a failure to explain (a batch without one costs nothing)
    detect: Callable[[], tuple[Abnormality, ...]] | None = None

    def detected(self) -> Silent:
        """This with ``abnormal`` found (``detect``)."""
        if self.detect is None:
            return self
        return dataclasses.replace(self, abnormal=self.detect(), detect=None)


ERRORS_SQL = """
SELECT m.trace_id, m.span_id, m.service, m.name, o.n, o.err_rate, c.k_win, c.n_win
FROM m JOIN base_ops o USING (service, name)
JOIN (SELECT service, name, count(*) FILTER (WHERE status_code = 2) AS k_win, count(*) AS n_win
      FROM m {where} GROUP BY ALL) c USING (service, name)
WHERE m.status_code = 2 AND m.trace_id IN (SELECT trace_id FROM sl_failing)
"""


def _errors(conn: duckdb.DuckDBPyConnection, traces: set[bytes], sample: str | None) -> list[Abnormality]:
    """Erroring spans of the failing traces whose operation errs more often in the window than
    its baseline allows (attributable fraction above 1/2): an error is an improbable status."""
    conn.register("sl_failing", pa.table({"trace_id": pa.array(list(traces), pa.binary())}))
    try:
        where = f"WHERE trace_id IN (SELECT trace_id FROM {sample})" if sample else ""
        rows = conn.execute(ERRORS_SQL.format(where=where)).fetchall()
    finally:
        conn.unregister("sl_failing")
    out = []
    for trace_id, span_id, service, name, n, err_rate, k_win, n_win in rows:
        p = ((err_rate or 0.0) * n + 0.5) / (n + 1)
        q = wilson_lower(k_win, n_win)
        if q > 0 and p < q / 2:
            out.append(Abnormality(trace_id, span_id, service, name, "status", "error", "ERROR", p, float(n),
                                   f"errors on {err_rate or 0.0:.1%} of its spans", 1.0 - p / q, k_win, n_win))
    return out


def explain_failures(conn: duckdb.DuckDBPyConnection, silent: Silent,
                     failing: list[tuple[bytes, bytes, str, str, str]],
                     base: dict[tuple[str, str], tuple[float, float]],
                     parents: dict[tuple[bytes, bytes], bytes | None] | None = None
                     ) -> tuple[dict[tuple[bytes, bytes], Explanation], dict[tuple[bytes, bytes], list[Abnormality]]]:
    """For each failing span (trace id, span id, service, name, "error" or "slow"), the abnormal
    antecedent that explains it, if one does; and every abnormality by span.  ``m`` (span
    metrics) and ``base_ops`` must be registered; ``base`` gives per operation its baseline
    (spans, error rate); ``parents`` the parent of each span of the failing traces.

    Among the antecedents that explain a failure, one whose descendant explains it by the same
    attribute is not where the abnormality originates (a client span relays what its callee
    answered), nor one whose explanation is an error report (``conventions.is_error_report``:
    errors propagate up) while a descendant explains it too; of the others the most probable
    cause, then the most abnormal, the nearest, the earliest (``antecedents``' order)."""
    if not silent.abnormal:
        return {}, {}
    abnormal = sorted([*silent.abnormal, *_errors(conn, {t for t, *_ in failing}, silent.sample)],
                      key=lambda a: (a.trace_id, a.span_id, *a.order))
    w = window(conn, abnormal, silent.sample)
    by_span: dict[tuple[bytes, bytes], list[Abnormality]] = defaultdict(list)
    for a in abnormal:
        by_span[(a.trace_id, a.span_id)].append(a)
    if not failing:
        return {}, by_span
    past = antecedents(conn, "m", [(t, s) for t, s, *_ in failing], silent.causal_past)
    found: dict[tuple[bytes, bytes], Explanation] = {}
    for trace_id, span_id, service, name, how in failing:
        n, err_rate = base.get((service, name), (0.0, 0.0))
        rate = err_rate if how == "error" else RARE
        explaining: dict[bytes, tuple[tuple[float, float, int], Explanation]] = {}
        for ante, distance in past.get((trace_id, span_id), {}).items():
            for a in by_span.get((trace_id, ante), ()):
                if silent.lift:
                    value, counts, in_window = lift(w, a, (service, name), how, rate, n)
                    fraction = 1.0 - 1.0 / value if value > 1 else 0.0
                else:
                    value, counts, in_window, fraction = math.inf, (0, 0, 0, 0), (0, 0, 0, 0), a.confidence
                if fraction <= MORE_LIKELY_THAN_NOT:
                    continue
                key = (fraction, a.confidence, -abs(distance))
                if ante not in explaining or key > explaining[ante][0]:
                    explaining[ante] = (key, Explanation(a, value, fraction, counts, in_window, distance))
        # an ancestor showing what a descendant shows only relays it (a client span, its callee's
        # answer), and one reporting an error relays the descendant's abnormality (errors propagate up)
        relays: set[tuple[bytes, str]] = set()
        below: set[bytes] = set()
        for ante, (_, e) in explaining.items():
            parent, seen = (parents or {}).get((trace_id, ante)), {ante}
            while parent is not None and parent not in seen:
                seen.add(parent)
                relays.add((parent, e.cause.key))
                below.add(parent)
                parent = (parents or {}).get((trace_id, parent))
        origins = [e for ante, e in explaining.items()
                   if (ante, e[1].cause.key) not in relays and not (ante in below and is_error_report(e[1].cause.key))]
        if origins:
            found[(trace_id, span_id)] = max(origins, key=lambda e: e[0])[1]
    return found, by_span
