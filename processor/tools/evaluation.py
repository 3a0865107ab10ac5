"""Labelled trace datasets (``../shared/corpora/README.md`` layout) and AC@k scoring.

A dataset is ``dataset.json``, an optional ``baseline/traces.jsonl.gz`` of
fault-free traffic, and ``cases/<id>/{traces.jsonl.gz,label.json}``.  Each
case's services are ranked by the localizer; AC@k is the share of cases
whose true root-cause service is among the first k, Avg@5 the mean of
AC@1..AC@5, overall and per fault type.  When labels carry ``span_ids`` (the
span where the fault originates, one per affected trace), span-level AC@k
too: among the traces that contain a labelled span, the share whose first k
candidates (``localizer.blame_traces``) include it.

Calibration of the top-1 confidence is measured too: per case the
probability given to the first service (``ServiceScore.probability``) against
whether it is the true one, and per trace with a labelled span the
probability of its first candidate (``analysis.calibration.calibrate_trace``) against
whether it is that span — as expected calibration error (10 equal-width
bins, ``ece``) and Brier score (``brier``; ``span_ece``, ``span_brier``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from processor.analysis.calibration import calibrate_trace
from processor.localizer import (
    SOURCES,
    Baseline,
    LocalizedBatch,
    blame_traces,
    rank_services,
    read_spans,
    span_metrics,
)

TRACES = "traces.jsonl.gz"


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout; the message names the path."""


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    traces: Path
    service: str          # the true root-cause service
    fault: str
    span_ids: tuple[bytes, ...] = ()   # the spans where the fault originates, if labelled


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    rank: int | None      # 1-based rank of the true service; None if never ranked
    top: tuple[str, ...]  # the first five services
    span_ranks: tuple[int | None, ...] = ()   # per labelled span found in the traces: its rank in its trace
    confidence: float = 0.0   # the probability given to the first service
    # per labelled span whose trace has candidates: (first candidate's confidence, it is the labelled span)
    span_top: tuple[tuple[float, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Dataset:
    root: Path
    name: str
    baseline: Path | None
    cases: tuple[Case, ...]

    @classmethod
    def load(cls, root: str | Path) -> Dataset:
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
                rc = json.loads(label_path.read_text())["root_cause"]
                span_ids = tuple(bytes.fromhex(s) for s in rc.get("span_ids") or ())
                cases.append(Case(case_dir.name, case_dir / TRACES, rc["service"], rc.get("fault", "unknown"),
                                  span_ids))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise DatasetError(f"{label_path}: not a label: {err}") from None
        if not cases:
            raise DatasetError(f"{p}: no cases/<id>/label.json found")
        base = p / "baseline" / TRACES
        return cls(p, str(meta.get("name", p.name)), base if base.exists() else None, tuple(cases))


def evaluate(dataset: Dataset, sources: Iterable[str] = SOURCES) -> list[CaseResult]:
    """Rank every case's services; one DuckDB connection and one baseline for the whole set."""
    sources = tuple(sources)
    conn = duckdb.connect()
    try:
        baseline = Baseline.from_file(conn, dataset.baseline) if dataset.baseline else None
        results = []
        for case in dataset.cases:
            metrics = span_metrics(conn, read_spans(case.traces))
            base = baseline if baseline is not None else Baseline.learn(conn, metrics)
            scores = rank_services(conn, metrics, base, sources)
            ranked = [r.service for r in scores]
            rank = ranked.index(case.service) + 1 if case.service in ranked else None
            span_ranks: tuple[int | None, ...] = ()
            span_top: tuple[tuple[float, bool], ...] = ()
            if case.span_ids:
                span_ranks, span_top = _span_ranks(blame_traces(conn, metrics, base, scores), metrics, case.span_ids)
            confidence = scores[0].probability if scores else 0.0
            results.append(CaseResult(case, rank, tuple(ranked[:5]), span_ranks, confidence, span_top))
        return results
    finally:
        conn.close()


def _span_ranks(verdict: LocalizedBatch, metrics: pa.Table, span_ids: tuple[bytes, ...]
                ) -> tuple[tuple[int | None, ...], tuple[tuple[float, bool], ...]]:
    """For each labelled span present in the case's traces, its rank among its trace's candidates;
    and, where the trace has candidates, the first one's confidence and whether it is that span."""
    hit = metrics.filter(pc.is_in(metrics.column("span_id"), value_set=pa.array(span_ids, pa.binary())))
    ranks_out: list[int | None] = []
    top_out: list[tuple[float, bool]] = []
    for trace_id, span_id in zip(hit.column("trace_id").to_pylist(), hit.column("span_id").to_pylist()):
        v = verdict.traces.get(trace_id)
        ranks = [c.rank for c in v.candidates if c.span_id == span_id] if v else []
        ranks_out.append(ranks[0] if ranks else None)
        if v is not None and v.candidates:
            top = calibrate_trace(v).candidates[0]
            top_out.append((top.confidence, top.span_id == span_id))
    return tuple(ranks_out), tuple(top_out)


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
    """AC@1, AC@3, AC@5 and Avg@5 of a list of case results, with the ECE and Brier score of
    the top-1 confidence; span AC@1 and AC@3 (over the traces that contain a labelled span),
    span ECE and Brier (over those of them with candidates) when any case has span labels."""
    n = len(results)
    ac = {k: sum(1 for r in results if r.rank is not None and r.rank <= k) / n if n else 0.0 for k in range(1, 6)}
    out = {"ac@1": ac[1], "ac@3": ac[3], "ac@5": ac[5], "avg@5": sum(ac.values()) / 5}
    top = [(r.confidence, r.rank == 1) for r in results]
    out.update(ece=expected_calibration_error(top), brier=brier_score(top))
    spans = [rank for r in results for rank in r.span_ranks]
    if spans:
        for k in (1, 3):
            out[f"span_ac@{k}"] = sum(1 for rank in spans if rank is not None and rank <= k) / len(spans)
        span_top = [t for r in results for t in r.span_top]
        if span_top:
            out.update(span_ece=expected_calibration_error(span_top), span_brier=brier_score(span_top))
    return out


def summary(results: Sequence[CaseResult]) -> dict[str, Any]:
    by_fault: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        by_fault[r.case.fault].append(r)
    out: dict[str, Any] = {"cases": len(results), **_rounded(accuracy(results))}
    if "span_ac@1" in out:
        out["span_traces"] = sum(len(r.span_ranks) for r in results)
    out["by_fault"] = {f: {"cases": len(rs), **_rounded(accuracy(rs))} for f, rs in sorted(by_fault.items())}
    return out


def _rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def write_report(dataset: Dataset, results: Sequence[CaseResult], seconds: float, fmt: str, out: TextIO) -> None:
    """Per case the rank of the true root cause, then the figures; with ``json`` the last line
    is one JSON object."""
    for r in results:
        rank = str(r.rank) if r.rank is not None else "-"
        line = (f"{r.case.case_id}  {r.case.fault:<16} {r.case.service:<24} rank {rank:>2}  p {r.confidence:.2f}"
                f"  top: {', '.join(r.top[:3])}")
        if r.span_ranks:
            first = sum(1 for k in r.span_ranks if k == 1)
            line += f"  span rank 1 in {first} of {len(r.span_ranks)} traces"
        if fmt == "json":
            row: dict[str, Any] = {"case": r.case.case_id, "fault": r.case.fault, "service": r.case.service,
                                   "rank": r.rank, "top": list(r.top), "confidence": round(r.confidence, 4)}
            if r.case.span_ids:
                row["span_ranks"] = list(r.span_ranks)
            out.write(json.dumps(row) + "\n")
        else:
            out.write(line + "\n")
    s = summary(results)
    if fmt == "json":
        out.write(json.dumps({**s, "seconds": round(seconds, 2)}) + "\n")
        return
    out.write(f"\n{dataset.name}: {s['cases']} cases in {seconds:.1f}s\n")
    out.write(f"{'':<18}{'cases':>6}{'AC@1':>8}{'AC@3':>8}{'AC@5':>8}{'Avg@5':>8}{'ECE':>8}{'Brier':>8}\n")
    for label, row in [("overall", s), *s["by_fault"].items()]:
        out.write(f"{label:<18}{row['cases']:>6}{row['ac@1']:>8.3f}{row['ac@3']:>8.3f}{row['ac@5']:>8.3f}"
                  f"{row['avg@5']:>8.3f}{row['ece']:>8.3f}{row['brier']:>8.3f}\n")
    out.write("ECE (10 bins) and Brier score of the confidence given to the first service\n")
    if "span_ac@1" in s:
        line = (f"span level: {s['span_traces']} traces with a labelled span, "
                f"AC@1 {s['span_ac@1']:.3f}, AC@3 {s['span_ac@3']:.3f}")
        if "span_ece" in s:
            line += f", ECE {s['span_ece']:.3f}, Brier {s['span_brier']:.3f} (first candidate's confidence)"
        out.write(line + "\n")


def run(path: str | Path, fmt: str, out: TextIO, sources: Iterable[str] = SOURCES) -> int:
    started = time.perf_counter()
    dataset = Dataset.load(path)
    results = evaluate(dataset, sources)
    write_report(dataset, results, time.perf_counter() - started, fmt, out)
    return 0
