"""Labelled trace datasets (``../shared/corpora/README.md`` layout) and AC@k scoring.

A dataset is ``dataset.json``, an optional ``baseline/traces.jsonl.gz`` of
fault-free traffic, and ``cases/<id>/{traces.jsonl.gz,label.json}``.

**Services, per case.** Each case's services are ranked by the localizer's
window ranking against the baseline; AC@k is the share of cases whose true
root-cause service is among the first k, Avg@5 the mean of AC@1..AC@5,
overall and per fault kind.

**Spans, per trace.** Where labels carry ``span_ids`` (the spans where the
fault originates), every case is analyzed as ``faulttrace explain`` analyzes a
batch (``tools.offline.analyze``: the rules, fault trees and the localizer
seeded with the baseline; every candidate written, as ``serve`` writes those of
a trace whose caller saw a failure), the annotator's ``rca.*``
attributes are what is scored (``tools.scoring``), and the service ranking is
that analysis' own.  Among the *affected* traces (those holding a labelled
span) span AC@k is the share whose first k candidates (``rca.rank``) include
one of the trace's labelled spans, whatever their number.  Also: the share
whose first candidate is in the labelled service (``span_service@1``) or has
the labelled layer (``span_layer``, over cases whose label names one), and
the share of labelled ``symptom_span_ids`` whose ``rca.caused_by`` names a
labelled cause (``caused_by``).

**From an export.** ``--from-export FILE`` scores the spans a running
``faulttrace serve`` exported (its ``file`` exporter) instead of analyzing in
process: the same scoring over the same attributes; a case's service ranking
is then read off the spans (``scoring.services_from_outcomes``).

**Live.** ``--live`` replays every case through a running pipeline
(``tools.replay.LivePipeline``: the real receiver, store, assembler, the
analysis worker learning online after the dataset's baseline as its seed,
annotation and a ``file`` exporter), one pipeline per case so that no case
learns from another, as offline; the case's requests are sent over OTLP/HTTP
one after another, and the spans that come out are scored as
``--from-export`` scores them.  A replay is kept short: ``decision_wait``
``LIVE_DECISION_WAIT`` and ``release_interval`` ``LIVE_RELEASE_INTERVAL``
(serve's defaults are 5 s and 1 s; every request of a dataset holds whole
traces, so waiting longer only adds time), and at most ``LIVE_TIMEOUT``
seconds per case for its spans to come out.  Its figures differ from the
offline ones where the pipeline differs from one batch analyzed at once: a
case is analyzed in the batches its traces complete in (the window ranking
and the lift see one batch, not the case), the localizer keeps learning from
each batch before the next, and the service ranking is read off the spans.
The analyzer is serve's too: in a trace whose caller saw no failure (its
root did not fail, nor outlast its baseline) the findings are weighed by how
often their sources fire on healthy traffic, and a candidate below
``min_confidence`` is no root cause (``analysis.combined``).  So the text
report's side-by-side table has a third row, *as served*: each case analyzed
in process as one batch by the analyzer the replay's config builds
(``evaluate_served``): offline against it is the floor and the weighing,
it against live the pipeline (batches, online learning).

Calibration of the top-1 confidence is measured too: per case the
probability given to the first service against whether it is the true one,
and per affected trace the first candidate's ``rca.confidence`` against
whether it is a labelled span — as expected calibration error (10
equal-width bins, ``ece``, ``span_ece``) and Brier score (``brier``,
``span_brier``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import duckdb

from dsl import RuleSet, load_rules
from processor.analysis.attributes import span_table
from processor.analysis.build import analysis_projection, build_analyzer, rule_paths
from processor.analysis.protocols import RELEASED_TABLE, with_row_numbers
from processor.config import FaulttraceProcessorConfig
from processor.localizer import SOURCES, Baseline, LocalizerAnalyzer, rank_services, read_spans, span_metrics
from processor.localizer.analyzer import baseline_null
from processor.localizer.graph import placement_refs
from processor.otlp.tracefile import read_requests
from processor.tools.offline import analyze
from processor.tools.progress import each
from processor.tools.replay import LivePipeline, ReplayError, replay_config
from processor.tools.scoring import (
    Label,
    TraceOutcome,
    TraceScore,
    caused_by_hits,
    export_attributes,
    outcomes,
    score_trace,
    services_from_outcomes,
    verdict_attributes,
)

TRACES = "traces.jsonl.gz"
LIVE_DECISION_WAIT = 0.5     # seconds a replayed trace waits for more spans (its request holds them all)
LIVE_RELEASE_INTERVAL = 0.25  # seconds between releases: a case leaves in a few batches, as under load
LIVE_TIMEOUT = 60.0           # seconds a case's spans have to come out of the pipeline


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout; the message names the path."""


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    traces: Path
    service: str          # the true root-cause service
    fault: str
    span_ids: tuple[bytes, ...] = ()          # the spans where the fault originates, if labelled
    layer: str = ""                           # the labelled layer, if any
    symptom_span_ids: tuple[bytes, ...] = ()  # spans that only show the fault, if labelled

    @property
    def label(self) -> Label:
        return Label(self.service, self.layer, frozenset(self.span_ids), frozenset(self.symptom_span_ids))


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    rank: int | None      # 1-based rank of the true service; None if never ranked
    top: tuple[str, ...]  # the first five services
    traces: tuple[TraceScore, ...] = ()   # the case's affected traces, scored
    confidence: float = 0.0   # the probability given to the first service
    symptoms: tuple[int, int] = (0, 0)    # labelled symptom spans present, those caused_by a labelled cause
    missing: int = 0      # scored from an export: traces of the case none of whose spans it holds


@dataclass(frozen=True, slots=True)
class Dataset:
    root: Path
    name: str
    baseline: Path | None
    cases: tuple[Case, ...]
    level: str = "service"

    @property
    def span_labelled(self) -> bool:
        return self.level == "span" or any(c.span_ids for c in self.cases)

    @classmethod
    def load(cls, root: str | Path, need_cases: bool = True) -> Dataset:
        """The dataset at ``root``; ``need_cases=False`` for a reader of its baseline only
        (``eval --healthy``: a dataset of fault-free traffic has no cases)."""
        p = Path(root)
        meta_path = p / "dataset.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise DatasetError(f"{meta_path}: cannot read dataset metadata: {err}") from None
        cases = []
        for case_dir in sorted((p / "cases").glob("*/")):
            label_path = case_dir / "label.json"
            try:
                label = json.loads(label_path.read_text())
                rc = label["root_cause"]
                symptoms = label.get("symptom_span_ids", rc.get("symptom_span_ids")) or ()
                cases.append(Case(case_dir.name, case_dir / TRACES, rc["service"], rc.get("fault", "unknown"),
                                  _ids(rc.get("span_ids")), str(rc.get("layer") or ""), _ids(symptoms)))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise DatasetError(f"{label_path}: not a label: {err}") from None
        if not cases and need_cases:
            raise DatasetError(f"{p}: no cases/<id>/label.json found")
        base = p / "baseline" / TRACES
        return cls(p, str(meta.get("name", p.name)), base if base.exists() else None, tuple(cases),
                   str(meta.get("level", "service")))


def _ids(values: Iterable[str] | None) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(s) for s in values or ())


def evaluate(dataset: Dataset, sources: Iterable[str] = SOURCES,
             rules: Callable[[], RuleSet] | None = None) -> list[CaseResult]:
    """Every case analyzed in process.  Span-labelled datasets go through the product's analysis
    (the rule set ``rules()`` loads, by default the built-in library; fault trees; the localizer
    seeded afresh with the baseline for each case, so no case learns from another);
    service-level ones through the localizer's window ranking alone, one baseline for the set."""
    sources = tuple(sources)
    # what each service scores in the baseline's healthy windows (the hub discount), learned once
    null = baseline_null(dataset.baseline, sources) if dataset.baseline and "hub_discount" in sources else {}
    if dataset.span_labelled:
        ruleset = rules() if rules is not None else load_rules(rule_paths(FaulttraceProcessorConfig()))
        return [_analyzed_case(dataset, case, sources, ruleset, null) for case in _cases(dataset, "eval")]
    conn = duckdb.connect()
    try:
        baseline = (Baseline.learn(conn, span_metrics(conn, read_spans(dataset.baseline, placement_refs())))
                    if dataset.baseline else None)
        results = []
        for case in _cases(dataset, "eval"):
            metrics = span_metrics(conn, read_spans(case.traces, placement_refs()))
            base = baseline if baseline is not None else Baseline.learn(conn, metrics)
            scores = rank_services(conn, metrics, base, sources, null)
            results.append(case_result(case, [(s.service, s.probability) for s in scores], []))
        return results
    finally:
        conn.close()


def _cases(dataset: Dataset, what: str) -> Iterator[Case]:
    """The dataset's cases, with a progress bar on stderr while a terminal shows it (tools.progress)."""
    return each(dataset.cases, len(dataset.cases), what, "case")


def _analyzed_case(dataset: Dataset, case: Case, sources: tuple[str, ...], rules: RuleSet,
                   null: dict[tuple[str, str], tuple[float, ...]] | None = None) -> CaseResult:
    localizer = LocalizerAnalyzer(dataset.baseline, sources=sources, null=null)
    try:
        result = analyze(read_requests(case.traces), rules, localizer)
    finally:
        localizer.close()
    traces = outcomes(result.spans, verdict_attributes(result.verdict))
    return case_result(case, [(s.service, s.probability) for s in result.verdict.services], traces)


def evaluate_export(dataset: Dataset, paths: Sequence[str | Path]) -> list[CaseResult]:
    """Every case scored from the spans ``faulttrace serve`` exported to ``paths`` (its cases'
    traces replayed into it): the annotations are looked up by trace and span id."""
    attributes = export_attributes(paths)
    results = []
    for case in dataset.cases:
        traces = outcomes(read_spans(case.traces), attributes)
        missing = sum(1 for t in traces if not any((t.trace_id, s) in attributes for s in t.span_ids))
        results.append(dataclasses.replace(case_result(case, services_from_outcomes(traces), traces),
                                           missing=missing))
    return results


def evaluate_live(dataset: Dataset, rules: Sequence[str] = (), builtin_rules: bool = True) -> list[CaseResult]:
    """Every case replayed through a running pipeline (its own, seeded with the dataset's baseline)
    and scored from the spans its ``file`` exporter wrote, as ``evaluate_export``."""
    with tempfile.TemporaryDirectory(prefix="faulttrace-eval-") as tmp:
        files = asyncio.run(_replay_cases(dataset, Path(tmp), rules, builtin_rules))
        return evaluate_export(dataset, files)


async def _replay_cases(dataset: Dataset, out: Path, rules: Sequence[str], builtin_rules: bool) -> list[Path]:
    files = []
    for case in _cases(dataset, "eval --live"):
        path = out / f"{case.case_id}.jsonl"
        config = replay_config(path, dataset.baseline, LIVE_DECISION_WAIT, LIVE_RELEASE_INTERVAL, rules,
                               builtin_rules)
        requests = read_requests(case.traces)
        async with LivePipeline(config) as live:
            for request in requests:
                await live.send(request)
            spans = sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)
            if not await live.wait_exported(spans, LIVE_TIMEOUT):
                raise ReplayError(f"{case.case_id}: {live.exported} of {spans} spans came out of the pipeline "
                                  f"within {LIVE_TIMEOUT:.0f}s")
        files.append(path)
    return files


def evaluate_served(dataset: Dataset, rules: Sequence[str] = (), builtin_rules: bool = True) -> list[CaseResult]:
    """Every case analyzed in process, as one batch, by the analyzer ``serve`` builds from the live
    replay's config (``analysis.build.build_analyzer``: healthy firing rates seeded from the
    baseline, ``min_confidence``), a new one per case; scored as ``evaluate``."""
    config = replay_config(Path("unused.jsonl"), dataset.baseline, LIVE_DECISION_WAIT, LIVE_RELEASE_INTERVAL,
                           rules, builtin_rules).processor
    results = []
    for case in _cases(dataset, "eval --live (as served)"):
        analyzer = build_analyzer(config)
        if analyzer is None:  # nothing configured to run: nothing is written
            results.append(case_result(case, [], outcomes(read_spans(case.traces), {})))
            continue
        conn = duckdb.connect()
        try:
            table = span_table(read_requests(case.traces), analysis_projection(config, analyzer))
            conn.register(RELEASED_TABLE, with_row_numbers(table))
            verdict = analyzer.analyze(conn, RELEASED_TABLE)
        finally:
            conn.close()
            analyzer.close()
        results.append(case_result(case, [(s.service, s.probability) for s in verdict.services],
                                   outcomes(table, verdict_attributes(verdict))))
    return results


def case_result(case: Case, services: Sequence[tuple[str, float]], traces: Sequence[TraceOutcome]) -> CaseResult:
    """A case scored: ``services`` its ranking (service, probability), ``traces`` what its spans say."""
    ranked = [s for s, _ in services]
    rank = ranked.index(case.service) + 1 if case.service in ranked else None
    label = case.label
    scored = tuple(s for s in (score_trace(label, t) for t in traces) if s is not None)
    return CaseResult(case, rank, tuple(ranked[:5]), scored, services[0][1] if services else 0.0,
                      caused_by_hits(label, traces))


def expected_calibration_error(pairs: Sequence[tuple[float, bool]], bins: int = 10) -> float:
    """Over ``bins`` equal-width confidence bins ([0, 0.1), …, [0.9, 1]), the mean over predictions
    of |accuracy of the bin - mean confidence of the bin|."""
    groups: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for p, y in pairs:
        groups[min(int(p * bins), bins - 1)].append((p, y))
    n = len(pairs)
    return sum(abs(sum(y for _, y in g) - sum(p for p, _ in g)) / n for g in groups.values()) if n else 0.0


def brier_score(pairs: Sequence[tuple[float, bool]]) -> float:
    """Mean squared difference between confidence and outcome (1 if right, else 0)."""
    return sum((p - y) ** 2 for p, y in pairs) / len(pairs) if pairs else 0.0


def accuracy(results: Sequence[CaseResult]) -> dict[str, float]:
    """AC@1, AC@3, AC@5 and Avg@5 of the cases' service rankings, with the ECE and Brier score
    of the top-1 confidence; span figures (``span_accuracy``) when any case has affected traces."""
    n = len(results)
    ac = {k: sum(1 for r in results if r.rank is not None and r.rank <= k) / n if n else 0.0 for k in range(1, 6)}
    out = {"ac@1": ac[1], "ac@3": ac[3], "ac@5": ac[5], "avg@5": sum(ac.values()) / 5}
    top = [(r.confidence, r.rank == 1) for r in results]
    out.update(ece=expected_calibration_error(top), brier=brier_score(top))
    out.update(span_accuracy(results))
    return out


def span_accuracy(results: Sequence[CaseResult]) -> dict[str, float]:
    """Per affected trace: span AC@1..5 and Avg@5, the first candidate's service and layer
    right, ECE and Brier of its confidence (over traces with a candidate); the share of labelled
    symptom spans whose ``rca.caused_by`` names a labelled cause.  Empty without affected traces."""
    traces = [t for r in results for t in r.traces]
    out: dict[str, float] = {}
    if traces:
        n = len(traces)
        ac = {k: sum(t.hit(k) for t in traces) / n for k in range(1, 6)}
        out.update({"span_traces": n, **{f"span_ac@{k}": ac[k] for k in (1, 3, 5)},
                    "span_avg@5": sum(ac.values()) / 5,
                    "span_service@1": sum(t.service_hit for t in traces) / n})
        layered = [t.layer_hit for t in traces if t.layer_hit is not None]
        if layered:
            out.update(span_layer=sum(layered) / len(layered), span_layer_traces=len(layered))
        top = [(t.confidence, t.hit(1)) for t in traces if t.confidence is not None]
        if top:
            out.update(span_ece=expected_calibration_error(top), span_brier=brier_score(top))
    present = sum(r.symptoms[0] for r in results)
    if present:
        out.update(symptom_spans=present, caused_by=sum(r.symptoms[1] for r in results) / present)
    return out


def summary(results: Sequence[CaseResult]) -> dict[str, Any]:
    by_fault: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_fault[r.case.fault].append(r)
    out: dict[str, Any] = {"cases": len(results), **_rounded(accuracy(results))}
    out["by_fault"] = {f: {"cases": len(rs), **_rounded(accuracy(rs))} for f, rs in sorted(by_fault.items())}
    return out


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: v if isinstance(v, int) else round(v, 4) for k, v in d.items()}


def write_report(dataset: Dataset, results: Sequence[CaseResult], seconds: float, fmt: str, out: TextIO,
                 source: str = "") -> None:
    """Per case the rank of the true root cause, then the figures; with ``json`` the last line
    is one JSON object."""
    widths = (max((len(r.case.case_id) for r in results), default=0),
              max((len(r.case.fault) for r in results), default=0))
    for r in results:
        if fmt == "json":
            out.write(json.dumps(_case_json(r)) + "\n")
        else:
            out.write(_case_line(r, *widths) + "\n")
    s = summary(results)
    missing = sum(r.missing for r in results)
    if fmt == "json":
        export = {"source": source, "export_missing_traces": missing} if source else {}
        out.write(json.dumps({**s, "seconds": round(seconds, 2), **export}) + "\n")
        return
    scored = f" ({source})" if source else ""
    out.write(f"\n{dataset.name}: {s['cases']} cases in {seconds:.1f}s{scored}\n")
    if missing:
        out.write(f"warning: {missing} traces of the cases are not in the export at all (scored as misses)\n")
    ranking = ("services ranked by the traces that blame one of their spans first" if source
               else "the window ranking of services")
    out.write(f"services, per case: the true service among the first k of {ranking}\n")
    out.write(f"{'':<22}{'cases':>6}{'AC@1':>8}{'AC@3':>8}{'AC@5':>8}{'Avg@5':>8}{'ECE':>8}{'Brier':>8}\n")
    for label, row in [("overall", s), *s["by_fault"].items()]:
        out.write(f"{label:<22}{row['cases']:>6}{row['ac@1']:>8.3f}{row['ac@3']:>8.3f}{row['ac@5']:>8.3f}"
                  f"{row['avg@5']:>8.3f}{row['ece']:>8.3f}{row['brier']:>8.3f}\n")
    given = ("the first service's share of the traces blaming a service first" if source
             else "the confidence given to the first service")
    out.write(f"ECE (10 bins) and Brier score of {given}\n")
    if "span_traces" in s:
        _write_span_table(s, out)


def _write_span_table(s: dict[str, Any], out: TextIO) -> None:
    out.write("\nspans, per affected trace (one holding a labelled root-cause span): AC@k, a labelled span among\n"
              "its first k candidates (rca.rank); svc@1 and layer, the first candidate's service and rca.layer right;\n"
              "caused_by, the labelled symptom spans whose rca.caused_by names a labelled cause\n")
    out.write(f"{'':<22}{'traces':>7}{'AC@1':>8}{'AC@3':>8}{'AC@5':>8}{'Avg@5':>8}{'svc@1':>8}{'layer':>8}"
              f"{'caused_by':>11}\n")
    rows = [("overall", s), *((f, row) for f, row in s["by_fault"].items() if "span_traces" in row)]
    for label, row in rows:
        layer = f"{row['span_layer']:>8.3f}" if "span_layer" in row else f"{'-':>8}"
        caused = f"{row['caused_by']:>11.3f}" if "caused_by" in row else f"{'-':>11}"
        out.write(f"{label:<22}{row['span_traces']:>7}{row['span_ac@1']:>8.3f}{row['span_ac@3']:>8.3f}"
                  f"{row['span_ac@5']:>8.3f}{row['span_avg@5']:>8.3f}{row['span_service@1']:>8.3f}{layer}{caused}\n")
    notes = []
    if "symptom_spans" in s:
        notes.append(f"caused_by over {s['symptom_spans']} labelled symptom spans")
    if "span_layer_traces" in s:
        notes.append(f"layer over {s['span_layer_traces']} traces whose label names one")
    if "span_ece" in s:
        notes.append(f"first candidate's confidence: ECE {s['span_ece']:.3f}, Brier {s['span_brier']:.3f}")
    if notes:
        out.write("; ".join(notes) + "\n")


def _case_line(r: CaseResult, case_width: int = 0, fault_width: int = 16) -> str:
    rank = str(r.rank) if r.rank is not None else "-"
    line = (f"{r.case.case_id:<{case_width}}  {r.case.fault:<{max(fault_width, 16)}} {r.case.service:<24} "
            f"rank {rank:>2}  p {r.confidence:.2f}"
            f"  top: {', '.join(r.top[:3])}")
    if r.traces:
        first = sum(t.hit(1) for t in r.traces)
        line += f"  span rank 1 in {first} of {len(r.traces)} traces"
    if r.symptoms[0]:
        line += f"  caused_by right on {r.symptoms[1]} of {r.symptoms[0]} symptoms"
    return line


def _case_json(r: CaseResult) -> dict[str, Any]:
    row: dict[str, Any] = {"case": r.case.case_id, "fault": r.case.fault, "service": r.case.service,
                           "rank": r.rank, "top": list(r.top), "confidence": round(r.confidence, 4)}
    if r.case.span_ids:
        # one entry per affected trace: the best rank of a labelled span among its candidates
        row["span_ranks"] = [t.rank for t in r.traces]
        row["layer"] = r.case.layer
    if r.case.symptom_span_ids:
        row["symptom_spans"], row["caused_by_right"] = r.symptoms
    return row


def run(path: str | Path, fmt: str, out: TextIO, sources: Iterable[str] = SOURCES,
        rules: Callable[[], RuleSet] | None = None, exports: Sequence[str | Path] = (),
        live: Sequence[str] | None = None, builtin_rules: bool = True) -> int:
    """``faulttrace eval``: score in process, or the spans of ``exports`` when given; ``rules``
    loads the rule set, called only when a span-labelled dataset is analyzed.  ``live`` (the
    ``--rules`` paths): also replay the cases through a running pipeline, the rule library as
    ``builtin_rules`` says, and print its figures after the offline ones, then both side by side."""
    started = time.perf_counter()
    dataset = Dataset.load(path)
    if exports:
        results = evaluate_export(dataset, exports)
    else:
        results = evaluate(dataset, sources, rules)
    source = f"from {', '.join(map(str, exports))}" if exports else ""
    write_report(dataset, results, time.perf_counter() - started, fmt, out, source)
    if live is None:
        return 0
    started = time.perf_counter()
    replayed = evaluate_live(dataset, live, builtin_rules)
    if fmt == "text":
        out.write("\n")
    write_report(dataset, replayed, time.perf_counter() - started, fmt, out, LIVE_SOURCE)
    if fmt == "text":
        served = summary(evaluate_served(dataset, live, builtin_rules)) if dataset.span_labelled else None
        write_comparison(summary(results), summary(replayed), out, served)
    return 0


LIVE_SOURCE = "live: each case replayed through a running pipeline, scored from its exported spans"
COMPARED = (("ac@1", "AC@1"), ("ac@3", "AC@3"), ("span_ac@1", "span@1"), ("span_ac@3", "span@3"),
            ("span_service@1", "svc@1"), ("span_layer", "layer"), ("caused_by", "caused_by"), ("span_ece", "ECE"))


def write_comparison(offline: dict[str, Any], live: dict[str, Any], out: TextIO,
                     served: dict[str, Any] | None = None) -> None:
    """The overall figures of both runs side by side (services per case, then spans per affected
    trace); with ``served``, between them those of ``evaluate_served``."""
    out.write("\noffline (one batch per case, analyzed in process) vs live (replayed through the pipeline)\n")
    if served is not None:
        out.write("as served: one batch per case in process, by serve's analyzer (healthy-firing weighing, "
                  "min_confidence)\n")
    out.write(f"{'':<10}" + "".join(f"{label:>10}" for _, label in COMPARED) + "\n")
    rows = (("offline", offline), *((("as served", served),) if served is not None else ()), ("live", live))
    for name, s in rows:
        cells = (f"{s[key]:>10.3f}" if key in s else f"{'-':>10}" for key, _ in COMPARED)
        out.write(f"{name:<10}" + "".join(cells) + "\n")
