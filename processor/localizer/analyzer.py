"""The localizer as a live ``Analyzer``: per batch of completed traces, root causes and symptoms
against a baseline it keeps learning.

Per batch (on the analysis thread or worker process, the batch registered in
DuckDB as ``table``):
span metrics (``graph``), the window ranking of services (``window``), the
span attribute values improbable under their operation's baseline
(``silent``), and the per-trace candidates and symptoms (``blame``: a failing
span whose causal past holds an abnormality that the window shows it follows
is explained by it) against the learned baseline (``history``); then the
attribute values the candidates share beyond what their services normally
carry (``attribution`` against the values the history counted), added to
their evidence; then each candidate's layer (``conventions``); then the
batch is learned — timings and call shapes of every trace, attribute values
of a sample of them — a trace with candidates only with weight
``learn_suspect`` so a fault does not teach the baseline that it is normal,
yet a lasting change is absorbed.

``silent``, ``causal_past`` and ``lift`` switch the parts of the causal model
off for an ablation (``SOURCES`` names them, so ``faulttrace eval --without``
takes them too).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dsl import AttrRef, AttrSource, AttrType, column_name, columns_of
from dsl.api import parsed
from processor.analysis.attributes import ALL_ATTRIBUTES, LongForm, all_attributes_sql
from processor.analysis.verdict import BatchVerdict, ServiceRank, TraceVerdict
from processor.localizer import conventions
from processor.localizer.attribution import Attribution, attribute
from processor.localizer.baseline import Baseline
from processor.localizer.blame import LocalizedBatch, blame_traces
from processor.localizer.contrast import excess_inside, why_not_first
from processor.localizer.graph import any_failed, placement_refs, span_metrics, span_metrics_of
from processor.localizer.history import History, HistoryConfig, Sketches
from processor.localizer.reads import Reads
from processor.localizer.shift import PodShift
from processor.localizer.silent import Silent, abnormal_spans
from processor.localizer.spans import read_spans
from processor.localizer.variability import null_scores
from processor.localizer.window import SOURCES, ServiceScore, rank_services, window_pods

# The parts of the causal model, by the names ``SOURCES`` gives them.
CAUSAL = ("silent", "causal_past", "lift")
# Traces of a batch whose attributes are learned and counted in the window (a uniform sample by
# trace id: what bounds the cost of a big batch); the traces with an error or a slow span are
# read besides, to be explained.
SAMPLE_TRACES = 128
# Traces of a batch whose attribution values are learned: the first of the same order by trace id
# (the attributes' sample is its head).  Their spans' values cost little beside the scan that finds
# them, and a value's share per service is learned within about 0.02 on the bench's traffic, where
# the attributes' 128 traces left 0.066 (against attribution's MIN_LIFT of 0.2).
VALUE_SAMPLE_TRACES = 1024

SAMPLE_SQL = """
SELECT trace_id FROM (SELECT DISTINCT trace_id FROM {table}) ORDER BY hash(trace_id), trace_id LIMIT $n
"""

# the traces to read: the sample, and those with an error or a slow span (to be explained)
READ_SQL = """
SELECT trace_id FROM lz_sample
UNION
SELECT m.trace_id FROM m LEFT JOIN base_ops o USING (service, name)
WHERE m.status_code = 2 OR m.self_ns > o.self_p99
"""

# the spans of lz_long (``_long_form``) and of the sampled traces, as a subquery the silent
# abnormality reads when it runs (``abnormal_spans``' spans), not a view made every batch
SPANS_SQL = """(
SELECT DISTINCT trace_id, span_id, service, name, sampled FROM lz_long
UNION
SELECT trace_id, span_id, service, name, true FROM {table} WHERE trace_id IN (SELECT trace_id FROM lz_sample)
)"""

log = logging.getLogger(__name__)

EXCEPTION = AttrRef(AttrSource.EVENT, "", AttrType.PRESENT, "exception")
EXCEPTION_TYPE = AttrRef(AttrSource.EVENT, "exception.type", AttrType.STRING, "exception")
EXCEPTION_MESSAGE = AttrRef(AttrSource.EVENT, "exception.message", AttrType.STRING, "exception")

# Where anomalous spans commonly have something in common (OpenTelemetry semantic conventions).
ATTRIBUTION: tuple[AttrRef, ...] = (
    *(AttrRef(AttrSource.RESOURCE, k) for k in (
        "k8s.node.name", "k8s.pod.name", "k8s.namespace.name", "host.name", "service.version",
        "service.instance.id", "cloud.availability_zone", "cloud.region", "deployment.environment")),
    *(AttrRef(AttrSource.SPAN, k) for k in (
        "http.request.method", "server.address", "peer.service", "db.system", "rpc.method")),
    AttrRef(AttrSource.SPAN, "http.response.status_code", AttrType.INT),
)


class Seed:
    """A baseline file read once for every localizer seeded from it (``analysis.build`` seeds a
    throw-away one for the rules' healthy firing rates, then the pipeline's): its spans are parsed
    once, and the first localizer's seeded sketches and null scores serve the next ones with the
    same attribution, bucket scale and sources."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._spans: tuple[frozenset[AttrRef], pa.Table] | None = None
        self._sketches: dict[tuple[object, ...], Sketches] = {}
        self._null: dict[tuple[str, ...], dict[tuple[str, str], tuple[float, ...]]] = {}

    def spans(self, refs: Iterable[AttrRef]) -> pa.Table:
        """The file's spans with the values of ``refs`` (``read_spans``), read once for the first
        set of refs asked for and again only for refs it does not hold."""
        want = frozenset(refs)
        if self._spans is None or not want <= self._spans[0]:
            held = want | (self._spans[0] if self._spans is not None else frozenset())
            self._spans = (held, read_spans(self.path, list(held)))
        return self._spans[1]

    def seed(self, history: History, attribution: tuple[AttrRef, ...]) -> None:
        """Seed ``history`` with the file's traffic: learned the first time, copied after."""
        cfg = history.config
        key = (attribution, cfg.gamma, cfg.attr_gamma, cfg.half_life, cfg.max_ops, cfg.max_shapes,
               cfg.prune, cfg.max_values, cfg.max_keys)
        if key in self._sketches:
            history.load(self._sketches[key])
            return
        # placement too: the null scores read the same spans
        spans = self.spans([*attribution, ALL_ATTRIBUTES, *placement_refs()])
        history.seed(self.path, attribution, every=True, spans=spans)
        self._sketches[key] = history.sketches()

    def null(self, sources: Iterable[str]) -> dict[tuple[str, str], tuple[float, ...]]:
        """``baseline_null`` of the file, computed once per set of sources."""
        key = tuple(sources)
        if key not in self._null:
            self._null[key] = baseline_null(self.path, key, self.spans(placement_refs()))
        return self._null[key]


class LocalizerAnalyzer:
    """Rule-free localization for the live pipeline (``processor.analysis.protocols.Analyzer``)."""

    def __init__(self, baseline: str | Path | None = None, *, sources: Iterable[str] = SOURCES,
                 history: HistoryConfig | None = None, attribution: Iterable[AttrRef] = ATTRIBUTION,
                 per_trace: int = 5, learn_suspect: float = 0.1, silent: bool = True, causal_past: bool = True,
                 lift: bool = True, sample_traces: int = SAMPLE_TRACES, value_sample_traces: int = VALUE_SAMPLE_TRACES,
                 null: Mapping[tuple[str, str], tuple[float, ...]] | None = None, contrast: bool = True,
                 seed: Seed | None = None) -> None:
        """``seed``: the ``baseline`` file read once for several localizers (``Seed``)."""
        self.history = History(history)
        self.sources = tuple(sources)
        self.attribution = tuple(attribution)
        self.per_trace = per_trace
        self.learn_suspect = learn_suspect
        # the causal model's switches: a name missing from ``sources`` switches its part off too
        self.silent = silent and "silent" in self.sources
        self.causal_past = causal_past and "causal_past" in self.sources
        self.lift = lift and "lift" in self.sources
        self.sample_traces = sample_traces
        self.value_sample_traces = value_sample_traces
        self.long_form = LongForm()   # attribute entries decoded once per distinct value, across batches
        self.reads = Reads()
        if baseline is not None and seed is None:
            seed = Seed(baseline)
        if seed is not None and not self.history.traces_seen:  # a restored snapshot holds the seed already
            seed.seed(self.history, self.attribution)
        # what each service scores in healthy windows of the baseline (``variability``): given, or
        # learned once from the baseline file
        # the last batch's ``contrast.why_not_first`` (``faulttrace explain`` prints it; the pipeline,
        # which never reads it, builds its localizer with ``contrast=False`` and saves the query)
        self.explain_contrast = contrast
        self.contrast: tuple[str, ...] = ()
        self.null: Mapping[tuple[str, str], tuple[float, ...]] = null if null is not None else {}
        if null is None and seed is not None and "hub_discount" in self.sources:
            self.null = seed.null(self.sources)

    def projection(self) -> frozenset[AttrRef]:
        # every span attribute, for their baseline and for the layer's conventions
        return frozenset({EXCEPTION, EXCEPTION_TYPE, EXCEPTION_MESSAGE, ALL_ATTRIBUTES, *self.attribution})

    def close(self) -> None:
        self.history.close()

    def baseline_table(self) -> pa.Table:
        """The learned per-operation self-time baseline in the rule language's shape
        (``dsl.BASELINE_COLUMNS``): what `s.baseline_p99`, `s.baseline_median`, `s.zscore` read."""
        ops = self.history.baseline().ops
        cols = {"service": "service", "name": "name", "p99_self_ns": "self_p99", "median_self_ns": "self_med",
                "mad_self_ns": "self_mad"}
        return pa.table({k: ops.column(v) for k, v in cols.items()})

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict:
        return self.localize(conn, table)

    def localize(self, conn: duckdb.DuckDBPyConnection, table: str) -> LocalizedBatch:
        columns = set(columns_of(conn, table))
        metrics = span_metrics_of(conn, *_spans(table, columns), self.reads)
        if metrics.num_rows == 0:
            return LocalizedBatch()
        baseline = self.history.baseline()
        # the batch's traces are those of its span metrics: counted once for the samples' scales and
        # the history's decay
        traces = pc.count_distinct(metrics.column("trace_id")).as_py()
        # ``m`` and the baseline registered once for every step of the batch that reads them
        with baseline.beside(conn, metrics):
            verdict, values, learned, scales, ranking = self._blame(conn, table, columns, metrics, traces, baseline)
        self.history.learn(metrics, dict.fromkeys(verdict.traces, self.learn_suspect), values, learned, scales.attributes,
                           value_scale=scales.values, traces=traces)
        services = tuple(ServiceRank(r.service, round(r.score, 4), round(r.probability, 4))
                         for r in ranking if r.score > 0)
        return dataclasses.replace(verdict, services=services)

    def _blame(self, conn: duckdb.DuckDBPyConnection, table: str, columns: set[str], metrics: pa.Table,
               traces: int, baseline: Baseline) -> tuple[LocalizedBatch, pa.Table | None, pa.Table | None, _Scales,
                                                         list[ServiceScore]]:
        """The batch's verdict (``m`` and ``baseline`` beside it; ``traces`` its distinct traces), the
        attribution values and the attributes to learn (of the sampled traces), the traces a sampled
        one stands for, and the services' ranking."""
        # the pods' shifts serve the window's ranking and the per-trace blame: read once
        pods = window_pods(conn, self.sources)
        ranking = rank_services(conn, metrics, baseline, self.sources, self.null, pods)
        # why the second service is not first (``faulttrace explain``), for the batch just ranked
        if self.explain_contrast:
            self.contrast = tuple(why_not_first(ranking, excess_inside(conn, metrics, baseline)))
        long, scales, rows = None, _Scales(), None
        if column_name(ALL_ATTRIBUTES) in columns:
            rows, scales = _long_form(conn, self.reads, table, columns, traces, self.sample_traces,
                                      self.value_sample_traces, self.long_form)
            long = "SELECT * FROM lz_long"
        try:
            silent = None
            if long is not None and self.silent:
                attrs, max_keys = self.history.attributes(), self.history.config.max_keys
                silent = Silent((), self.causal_past, self.lift, "lz_sample",
                                lambda: tuple(abnormal_spans(conn, long, SPANS_SQL.format(table=table), attrs,
                                                             max_keys)))
            # a batch without a failed span has no error details: no statement for them
            details = _details(conn, table, columns) if any_failed(metrics) else {}
            verdict = blame_traces(conn, metrics, baseline, ranking, self.per_trace, details, silent,
                                   _slow_pods(pods))
            found = self._attribute(conn, table, verdict)
            verdict = _with_layers(_with_attributions(verdict, found), _span_attributes(conn, long, verdict),
                                   details, _enclosing(conn, table, verdict))
            # what is learned: the sampled traces' attribution values and attributes (every trace's
            # when the sample holds them all)
            values = _values(conn, self.reads, table, columns, self.attribution, sampled=scales.values > 1)
            learned = rows.filter(rows.column("sampled")) if rows is not None else None
        finally:
            if long is not None:
                for name in ("lz_long", "lz_sample", "lz_value_sample"):
                    conn.unregister(name)
        return verdict, values, learned, scales, ranking

    def _attribute(self, conn: duckdb.DuckDBPyConnection, table: str, verdict: LocalizedBatch) -> list[Attribution]:
        """The attributions of the candidates, over the batch's attribution columns (read in place)."""
        # every candidate has evidence of its own (an error origin or latency), so all are anomalous
        spans = [(t, c.span_id) for t, v in verdict.traces.items() for c in v.candidates]
        if not spans or not self.attribution:
            return []
        selected = pa.table({"trace_id": pa.array([t for t, _ in spans], pa.binary()),
                             "span_id": pa.array([s for _, s in spans], pa.binary())})
        return attribute(conn, table, selected, {ref.key: column_name(ref) for ref in self.attribution},
                         self.history.values())


def _values(conn: duckdb.DuckDBPyConnection, reads: Reads, table: str, columns: set[str],
            refs: tuple[AttrRef, ...], sampled: bool) -> pa.Table | None:
    """The attribution values to learn as strings per span (``trace_id``, ``service``, one column per
    attribute) of the sampled traces (``lz_value_sample``; with ``sampled`` false, of every trace),
    None when the batch projects none: what ``History.learn`` counts.  A sample, not the batch:
    casting and counting every span's values was ~50 ms of a 100,000-span batch; the traces one
    sampled trace stands for weigh its values (``History.learn``'s ``value_scale``)."""
    cols = [c for c in dict.fromkeys(column_name(r) for r in refs) if c in columns]
    if not cols:
        return None
    casts = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in cols)
    where = " WHERE trace_id IN (SELECT trace_id FROM lz_value_sample)" if sampled else ""
    return reads.rows(conn, f"SELECT trace_id, service, {casts} FROM {table}{where}")


def _slow_pods(pods: list[PodShift]) -> list[str]:
    """The pods the window finds slower than their peers (``window_pods``), their node's neighbours left out."""
    return [p.pod for p in pods if p.peer > 0 and p.node_pod is None and p.pod != p.service]


def baseline_null(path: str | Path, sources: Iterable[str],
                  spans: pa.Table | None = None) -> dict[tuple[str, str], tuple[float, ...]]:
    """``variability.null_scores`` of a baseline file (its spans with their pods and nodes; ``spans``:
    the file already read with them)."""
    conn = duckdb.connect()
    try:
        if spans is None:
            spans = read_spans(path, placement_refs())
        return null_scores(conn, span_metrics(conn, spans), sources)
    finally:
        conn.close()


def _spans(table: str, columns: set[str]) -> tuple[str, list[str]]:
    """A query of the localizer's span columns (``spans.SCHEMA``) of the batch, and its columns: the
    exception flag from the projected exception event when the store has it; the pod and node
    attributes it projects."""
    exc = column_name(EXCEPTION)
    flag = f"coalesce({exc}, false)" if exc in columns else "false"
    placed = [c for c in dict.fromkeys(column_name(r) for r in placement_refs()) if c in columns]
    names = ["trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns",
             "status_code"]
    query = f"(SELECT {', '.join(names)}, {flag} AS exception{''.join(', ' + c for c in placed)} FROM {table})"
    return query, [*names, "exception", *placed]


def _details(conn: duckdb.DuckDBPyConnection, table: str, columns: set[str]) -> dict[tuple[bytes, bytes], str]:
    """Per erroring span, what it said: exception type and message, else its status message."""
    parts = [column_name(r) for r in (EXCEPTION_TYPE, EXCEPTION_MESSAGE) if column_name(r) in columns]
    exc = f"nullif(concat_ws(': ', {', '.join(parts)}), '')" if parts else "NULL"
    status = "nullif(status_message, '')" if "status_message" in columns else "NULL"
    rows = conn.execute(parsed(f"""
        SELECT trace_id, span_id, coalesce({exc}, {status}) AS detail
        FROM {table} WHERE status_code = 2 AND coalesce({exc}, {status}) IS NOT NULL""")).fetchall()
    return {(t, s): d for t, s, d in rows}


def _with_attributions(verdict: LocalizedBatch, found: list[Attribution]) -> LocalizedBatch:
    """The verdict with each attribution added to the evidence of the candidates it covers."""
    if not found:
        return verdict
    extra: dict[tuple[bytes, bytes], list[Attribution]] = {}
    for a in found:
        for key in a.spans:
            extra.setdefault(key, []).append(a)
    traces = {}
    for trace_id, v in verdict.traces.items():
        cands = []
        for c in v.candidates:
            adds = extra.get((trace_id, c.span_id), [])
            head = c.evidence[0]
            more = tuple(dataclasses.replace(head, source="localizer.attribution", message=a.message) for a in adds)
            cands.append(dataclasses.replace(c, evidence=c.evidence + more))
        traces[trace_id] = TraceVerdict(trace_id, v.root_span_id, tuple(cands))
    return dataclasses.replace(verdict, traces=traces, attributions=tuple(found))


@dataclasses.dataclass(frozen=True, slots=True)
class _Scales:
    """How many of the batch's traces one sampled trace stands for: of the attributes' sample
    (``lz_sample``) and of the attribution values' (``lz_value_sample``)."""

    attributes: float = 1.0
    values: float = 1.0


def _long_form(conn: duckdb.DuckDBPyConnection, reads: Reads, table: str, columns: set[str], total: int,
               sample: int, value_sample: int, long_form: LongForm) -> tuple[pa.Table, _Scales]:
    """The attributes of the batch's sampled and failing traces in long form, with ``sampled``,
    registered as ``lz_long``, the sampled traces as ``lz_sample`` (their spans: ``SPANS_SQL``) and
    those whose attribution values are learned as ``lz_value_sample`` (the first ``value_sample``
    in the same order, so one holds the other): decoded from the span bytes when the batch has
    them, else from its ``ALL_ATTRIBUTES`` column.  Returns the long form and how many traces a
    sampled one stands for (of the batch's ``total`` traces).  The span metrics (as ``m``) and the
    baseline (``base_ops``) are registered (``Baseline.beside``).  The long form and the samples
    stay Arrow tables, registered, not copied into DuckDB tables: what is learned of the long form
    is its sampled rows, taken in Arrow (~8 ms a batch less than two more statements)."""
    ordered = reads.rows(conn, SAMPLE_SQL.format(table=table), {"n": max(sample, value_sample)})
    sampled = ordered.slice(0, sample)
    conn.register("lz_sample", sampled)
    conn.register("lz_value_sample", ordered.slice(0, value_sample))
    read = f"SELECT * FROM {table} WHERE trace_id IN ({READ_SQL})"
    if "raw" in columns:
        spans = reads.rows(conn, f"SELECT trace_id, span_id, service, name, raw FROM ({read})")
        long = long_form.table(spans)
    else:
        long = conn.sql(all_attributes_sql(f"({read})")).to_arrow_table()
    long = long.append_column("sampled", pc.is_in(long.column("trace_id"), sampled.column("trace_id").combine_chunks()))
    conn.register("lz_long", long)
    # a sample is the first of the batch's traces (those of its span metrics, counted by the caller
    # instead of by two more statements per batch)
    return long, _Scales(total / min(sample, total) if total else 1.0,
                         total / min(value_sample, total) if total else 1.0)


def _span_attributes(conn: duckdb.DuckDBPyConnection, long: str | None, verdict: LocalizedBatch
                     ) -> dict[tuple[bytes, bytes], dict[str, float | None]]:
    """Per candidate span: its attribute keys, with the numeric value where there is one."""
    spans = [(t, c.span_id) for t, v in verdict.traces.items() for c in v.candidates]
    if long is None or not spans:
        return {}
    conn.register("lz_cands", pa.table({"trace_id": pa.array([t for t, _ in spans], pa.binary()),
                                        "span_id": pa.array([s for _, s in spans], pa.binary())}))
    try:
        rows = conn.execute(f"SELECT l.trace_id, l.span_id, l.key, any_value(l.nval) FROM ({long}) l "
                            "SEMI JOIN lz_cands c ON c.trace_id = l.trace_id AND c.span_id = l.span_id "
                            "GROUP BY ALL").fetchall()
    finally:
        conn.unregister("lz_cands")
    out: dict[tuple[bytes, bytes], dict[str, float | None]] = {}
    for trace_id, span_id, key, number in rows:
        out.setdefault((trace_id, span_id), {})[key] = number
    return out


def _enclosing(conn: duckdb.DuckDBPyConnection, table: str, verdict: LocalizedBatch
               ) -> dict[tuple[bytes, bytes], list[bytes]]:
    """Per candidate span: its ancestors in its own service, nearest first."""
    if not verdict.traces:
        return {}
    conn.register("lz_ctraces", pa.table({"trace_id": pa.array(list(verdict.traces), pa.binary())}))
    try:
        rows = conn.execute(f"SELECT trace_id, span_id, parent_span_id, service FROM {table} "
                            "SEMI JOIN lz_ctraces USING (trace_id)").fetchall()
    finally:
        conn.unregister("lz_ctraces")
    spans = {(t, s): (p, svc) for t, s, p, svc in rows}
    out: dict[tuple[bytes, bytes], list[bytes]] = {}
    for trace_id, v in verdict.traces.items():
        for c in v.candidates:
            chain: list[bytes] = []
            parent, seen = spans.get((trace_id, c.span_id), (None, ""))[0], {c.span_id}
            while (trace_id, parent) in spans and parent not in seen:
                seen.add(parent)
                p, svc = spans[(trace_id, parent)]
                if svc != c.service:
                    break
                chain.append(parent)
                parent = p
            out[(trace_id, c.span_id)] = chain
    return out


def _with_layers(verdict: LocalizedBatch, attrs: dict[tuple[bytes, bytes], dict[str, float | None]],
                 details: dict[tuple[bytes, bytes], str], enclosing: dict[tuple[bytes, bytes], list[bytes]]
                 ) -> LocalizedBatch:
    """Every candidate's evidence with the layer its evidence and conventions give
    (``conventions.layer``), the reason said in its first message."""
    shared: dict[tuple[bytes, bytes], list[str]] = {}
    for a in verdict.attributions:
        for key in a.spans:
            shared.setdefault(key, []).append(a.key)
    traces = {}
    for trace_id, v in verdict.traces.items():
        cands = []
        for c in v.candidates:
            key = (trace_id, c.span_id)
            sources = {e.source for e in c.evidence}
            own = attrs.get(key, {})
            abnormal = [a.key for a in verdict.abnormal.get(key, ())]
            abnormal += [a.key for s in enclosing.get(key, ()) for a in verdict.abnormal.get((trace_id, s), ())
                         if conventions.is_setting(a.key)]
            layer, reason = conventions.layer(
                own, error=("localizer.errors" in sources or key in details
                            or any(a.kind == "error" for a in verdict.abnormal.get(key, ()))),
                exception=any("exception recorded" in e.message for e in c.evidence if e.source == "localizer.errors"),
                slow="localizer.latency" in sources, silent="localizer.silent" in sources,
                detail=details.get(key, ""), abnormal_keys=abnormal,
                shared=shared.get(key, ()), numbers={k: n for k, n in own.items() if n is not None})
            if not layer:
                cands.append(c)
                continue
            evidence = [dataclasses.replace(e, layer=layer) for e in c.evidence]
            evidence[0] = dataclasses.replace(evidence[0], message=f"{evidence[0].message} [layer {layer}: {reason}]")
            cands.append(dataclasses.replace(c, evidence=tuple(evidence)))
        traces[trace_id] = TraceVerdict(trace_id, v.root_span_id, tuple(cands))
    return dataclasses.replace(verdict, traces=traces)
