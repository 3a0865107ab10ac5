"""How often each source of evidence fires where nothing failed, and what its finding is worth then.

A finding's ``confidence`` says how often it is right where something went
wrong.  On traffic where nothing did, the same evidence may still fire: a
retried 429 is an error span, a slow external call is slow.  What a finding
in a trace without a failure is worth depends on how often its source — a
rule, a fault tree, a localizer source (``localizer.errors`` …) — fires on
such traces: one that fires on a fifth of them says little; one that never
does says what its confidence says.

**A failure** is what the trace's caller saw: its root span (``dsl.root_key_sql``,
as the rules see it) ended in error, or took longer than any duration its
operation's learned baseline holds (``dur_max``) — once that baseline holds
``MIN_OBSERVATIONS`` (99): a normal duration passes the largest of ``n`` with
probability ``1 / (n + 1)``, so from 99 on healthy traffic fails this way at
most ``PRIOR_RATE`` (1%) of the time, less as the baseline grows.  Beyond the
p99 instead would fail 1% of healthy roots for ever, and every candidate of a
failed trace is written (``combined``: no floor), so that 1% alone was the
whole false-alarm budget.  An error the trace handled (retried, caught, turned
into a fallback) is not one: the root still succeeded within its usual range.

**Healthy firing rate.**  Per source, ``HealthyFiring`` counts the traces
without a failure and those of them the source fired on, seeded from the
localizer's baseline file (every trace of it, analyzed as the pipeline
analyzes a batch) and then learned from each batch, decayed by traffic volume
with the localizer's half-life (``localizer.history``).  The rate is the mean
of a Beta prior updated by those counts: the prior is one firing in
``1 / PRIOR_RATE`` traces, ``PRIOR_RATE`` being the ceiling a shipped rule is
held to on healthy traffic (``faulttrace check --baseline``), so a source
nobody has measured yet is taken to meet it, ``h = (k + 1) / (n + 1 / PRIOR_RATE)``.

**Posterior.**  In a trace without a failure, a finding's confidence ``c`` is
read as the probability for a source that fires on ``PRIOR_RATE`` of healthy
traces; with its measured rate ``h`` the likelihood ratio of its firing
changes by ``PRIOR_RATE / h``, so its odds become ``c / (1 - c) x min(1,
PRIOR_RATE / h)``.  The factor is capped at 1: a source that fires less than
the ceiling keeps the confidence its author or the localizer gave it (a
stated confidence is never raised by the absence of false alarms alone).  A
trace that failed is left as it is: its failure is observed, the findings
only say where it comes from.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from dsl import no_parent_sql, root_key_sql
from dsl.api import parsed
from processor.analysis.verdict import BatchVerdict, Evidence
from processor.localizer.baseline import range_observations
from processor.localizer.history import HistoryConfig

# The healthy firing rate a source is presumed to have until measured: the ceiling a shipped
# rule is held to on fault-free traffic (``tools.firingrate``'s W020).
PRIOR_RATE = 0.01
ERROR = 2  # OTLP status code
# observations of the root's operation before a duration beyond the largest of them is a failure:
# a normal one passes the largest of n with probability 1/(n + 1), at most PRIOR_RATE from here
MIN_OBSERVATIONS = range_observations(PRIOR_RATE)

_NO_PARENT = no_parent_sql("s.parent_span_id")
_ROOT = root_key_sql("s", no_parent=_NO_PARENT, parent_found="p.span_id IS NOT NULL")
# Each trace's root as ``dsl.root_key_sql`` picks it, in two steps.  A trace with a span that names
# no parent has its root among those (rank 0 of the key: the earliest start, then end), so no
# span's parent need be looked up: the self-join on (trace id, span id) that does it was half the
# cost of reading the roots (100,000 bench spans: ~65 -> ~33 ms).  The traces where that finds no
# root (fragments whose root has not arrived) or a root without a value (arg_min passes over a
# NULL: the whole key's next span gives it) are read again with the whole key (``FRAGMENTS``).
ROOTS_SQL = f"""
SELECT s.trace_id,
       arg_min(s.service, (s.start_ns, s.end_ns)) FILTER ({_NO_PARENT}) AS service,
       arg_min(s.name, (s.start_ns, s.end_ns)) FILTER ({_NO_PARENT}) AS name,
       arg_min(s.status_code, (s.start_ns, s.end_ns)) FILTER ({_NO_PARENT}) AS status_code,
       arg_min(s.end_ns - s.start_ns, (s.start_ns, s.end_ns)) FILTER ({_NO_PARENT}) AS dur
FROM {{table}} s GROUP BY s.trace_id
"""
FRAGMENTS = "_prevalence_fragments"  # the trace ids FRAGMENT_ROOTS_SQL reads (registered while it runs)
FRAGMENT_ROOTS_SQL = f"""
SELECT s.trace_id, arg_min(s.service, {_ROOT}), arg_min(s.name, {_ROOT}),
       arg_min(s.status_code, {_ROOT}), arg_min(s.end_ns - s.start_ns, {_ROOT})
FROM {{table}} s SEMI JOIN {FRAGMENTS} f ON f.trace_id = s.trace_id
LEFT JOIN (SELECT trace_id, span_id FROM {{table}} SEMI JOIN {FRAGMENTS} USING (trace_id)) p
    ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
GROUP BY s.trace_id
"""


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The traces of a batch, and those whose root failed (error, or slower than its baseline has been)."""

    traces: frozenset[bytes]
    failed: frozenset[bytes]

    @property
    def healthy(self) -> frozenset[bytes]:
        return self.traces - self.failed


def outcomes(conn: duckdb.DuckDBPyConnection, table: str, durations: pa.Table | None = None) -> Outcomes:
    """Each trace's outcome at its root: failed if the root span ended in error, or if
    ``durations`` (``service``, ``name``, ``n``, ``dur_max`` per operation) says it took longer
    than any duration of its operation's baseline, learned from at least ``MIN_OBSERVATIONS`` spans."""
    rows = conn.execute(parsed(ROOTS_SQL.format(table=table))).fetchall()
    fragments = [t for t, *values in rows if None in values]
    if fragments:
        rows = [r for r in rows if None not in r[1:]] + _fragment_roots(conn, table, fragments)
    top: dict[tuple[str, str], float] = {}
    if durations is not None and durations.num_rows:
        columns = (durations.column(c).to_pylist() for c in ("service", "name", "n", "dur_max"))
        top = {(s, name): d for s, name, n, d in zip(*columns) if d is not None and n >= MIN_OBSERVATIONS}
    failed = {t for t, service, name, status, dur in rows
              if status == ERROR or (dur is not None and dur > top.get((service, name), float("inf")))}
    return Outcomes(frozenset(t for t, *_ in rows), frozenset(failed))


def _fragment_roots(conn: duckdb.DuckDBPyConnection, table: str, traces: list[bytes]) -> list[tuple]:
    """The roots of ``traces`` by the whole key (``FRAGMENT_ROOTS_SQL``)."""
    conn.register(FRAGMENTS, pa.table({"trace_id": pa.array(traces, pa.binary())}))
    try:
        return conn.execute(parsed(FRAGMENT_ROOTS_SQL.format(table=table))).fetchall()
    finally:
        conn.unregister(FRAGMENTS)


def fired(verdicts: Iterable[BatchVerdict]) -> dict[bytes, set[str]]:
    """Per trace, the sources whose evidence is on any of its candidates (rule ids, fault tree ids,
    localizer sources): what fired on it."""
    out: dict[bytes, set[str]] = {}
    for verdict in verdicts:
        for trace_id, v in verdict.traces.items():
            out.setdefault(trace_id, set()).update(e.source for c in v.candidates for e in c.evidence)
    return out


class HealthyFiring:
    """Per source, the decayed count of traces without a failure it fired on, against their total."""

    def __init__(self, half_life: float = HistoryConfig().half_life, prior_rate: float = PRIOR_RATE) -> None:
        self.half_life = half_life
        self.prior_rate = prior_rate
        self.traces = 0.0
        self.fired: dict[str, float] = {}
        self._lock = threading.Lock()

    def learn(self, healthy: Iterable[bytes], fired_in: Mapping[bytes, set[str]]) -> None:
        """Count ``healthy`` traces (no failure) and the sources that fired on each, after decaying
        what was counted before by ``0.5 ** (len(healthy) / half_life)``."""
        healthy = list(healthy)
        if not healthy:
            return
        with self._lock:
            keep = 0.5 ** (len(healthy) / self.half_life)
            self.traces = self.traces * keep + len(healthy)
            self.fired = {s: w * keep for s, w in self.fired.items() if w * keep >= 1e-6}
            for trace_id in healthy:
                for source in fired_in.get(trace_id, ()):
                    self.fired[source] = self.fired.get(source, 0.0) + 1.0

    def state(self) -> dict[str, float]:
        """What was counted, as named numbers (kept in the baseline snapshot, ``localizer.snapshot``)."""
        with self._lock:
            return {"traces": self.traces, **{f"fired:{s}": w for s, w in self.fired.items()}}

    def load_state(self, state: dict[str, float]) -> None:
        with self._lock:
            self.traces = state.get("traces", 0.0)
            self.fired = {k.removeprefix("fired:"): w for k, w in state.items() if k.startswith("fired:")}

    def rate(self, source: str) -> float:
        """The source's healthy firing rate: ``(k + 1) / (n + 1 / prior_rate)``."""
        return (self.fired.get(source, 0.0) + 1.0) / (self.traces + 1.0 / self.prior_rate)

    def posterior(self, confidence: float, source: str) -> float:
        """``confidence`` with its odds times ``min(1, prior_rate / rate)``."""
        factor = min(1.0, self.prior_rate / self.rate(source))
        c = min(max(confidence, 0.0), 1.0)
        if factor >= 1.0 or c <= 0.0:
            return c
        if c >= 1.0:
            return 1.0
        odds = c / (1.0 - c) * factor
        return odds / (1.0 + odds)

    def weigh(self, verdict: BatchVerdict, outcomes: Outcomes) -> BatchVerdict:
        """``verdict`` with each finding's confidence, in the traces that did not fail, turned into
        its posterior (the ranking scores stay: they weigh consequence, not belief)."""
        traces = {}
        for trace_id, v in verdict.traces.items():
            if trace_id in outcomes.failed:
                traces[trace_id] = v
                continue
            traces[trace_id] = dataclasses.replace(v, candidates=tuple(
                dataclasses.replace(c, evidence=self._weighed(c.evidence)) for c in v.candidates))
        return dataclasses.replace(verdict, traces=traces)

    def _weighed(self, evidence: tuple[Evidence, ...]) -> tuple[Evidence, ...]:
        """Each rule and tree finding by its own source's rate; the localizer's pieces by the rate of
        the first (``primary``): they are one finding, one probability, whose first source made the
        span a candidate (an error origin, a latency excess, an improbable value) and whose others
        say more about it (the window, an attribution) but never fire without it."""
        primary = next((e.source for e in evidence if e.kind == "localizer"), "")
        return tuple(e.discounted(round(self.posterior(
            e.confidence, primary if e.kind == "localizer" else e.source), 6)) for e in evidence)

    def rates(self) -> dict[str, float]:
        """Every source seen so far with its healthy firing rate."""
        return {s: self.rate(s) for s in sorted(self.fired)}
