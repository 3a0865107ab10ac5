#!/usr/bin/env python3
"""Turn Nezha's Online Boutique traces into a labelled dataset for ``faulttrace eval``.

Source: the repository of "Nezha: Interpretable Fine-Grained Root Causes
Analysis for Microservices on Multi-Modal Observability Data" (Yu et al.,
ESEC/FSE 2023), github.com/IntelligentDDS/Nezha, MIT licence.  Clone it
yourself; this script ships none of its data and fetches nothing.  It reads,
from the clone:

    rca_data/<date>/<date>-fault_list.json   the injected faults (service-level labels):
        {"<hour>": [{"inject_time": "2022-08-22 03:53:54", "inject_pod": "frontend-579b9bff58-t2dbm",
                     "inject_type": "cpu_contention", ...}, ...], ...}
    rca_data/<date>/trace/<HH>_<MM>_trace.csv        traces while a fault was active, one file a minute
    construct_data/<date>/trace/<HH>_<MM>_trace.csv  fault-free traces (the baseline minute)
    construct_data/root_cause_hipster.json           optional: {service: {fault type: detail}}

A trace file has a header row and one span a row; the columns read are
``TraceID, SpanID, ParentID, PodName, StartTimeUnixNano, EndTimeUnixNano,
OperationName`` (others are ignored; ``ParentID`` is ``root`` on a trace's
first span).  As Nezha's own evaluation does, each fault's case is the minute
of traces two minutes after its injection (``--offset``), and its service is
the injected pod's name without the last two ``-`` parts
(``frontend-579b9bff58-t2dbm`` -> ``frontend``).  Faults whose minute has no
trace file in the clone are left out, and said so on stderr.

It writes the layout of a dataset (docs/localization.md, "Measuring"):

    OUT/dataset.json                     {"name", "level": "service", "cases", "baseline_spans", "source", "signals"}
    OUT/baseline/traces.jsonl.gz         the fault-free minute
    OUT/cases/<YYYY-MM-DDTHHMMSS>/traces.jsonl.gz and label.json

as gzip-compressed OTLP/JSON lines: one ExportTraceServiceRequest per line,
a resource per pod (``service.name``, ``k8s.pod.name``).  Nezha's spans carry
timing and structure only, so the spans have no kind, status or attributes.

    python examples/nezha/convert.py PATH/TO/Nezha OUT [--baseline "2022-08-23 17:00"]
    faulttrace eval OUT
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

COLUMNS = ("TraceID", "SpanID", "ParentID", "PodName", "StartTimeUnixNano", "EndTimeUnixNano", "OperationName")
DATES = ("2022-08-22", "2022-08-23")  # Nezha's Online Boutique days (its main.py, namespace "hipster")
BASELINE = "2022-08-23 17:00"  # the fault-free minute Nezha's own evaluation pairs with the 2022-08-23 faults
SCOPE = "nezha-import"
SPANS_PER_RESOURCE = 2000  # per resourceSpans entry: lines stay a few hundred kB


class NezhaError(ValueError):
    """Input that is not in Nezha's format: says which file, which row and what."""


@dataclass(frozen=True, slots=True)
class Fault:
    inject_time: datetime  # UTC
    pod: str
    kind: str

    @property
    def service(self) -> str:
        return service_of(self.pod)

    @property
    def case_id(self) -> str:
        return self.inject_time.strftime("%Y-%m-%dT%H%M%S")


@dataclass(frozen=True, slots=True)
class NezhaSpan:
    trace_id: str  # 32 hex digits
    span_id: str   # 16 hex digits
    parent_id: str | None
    pod: str
    start_ns: int
    end_ns: int
    name: str


def service_of(pod: str) -> str:
    """A Kubernetes pod name without its ReplicaSet hash and pod suffix, as Nezha derives the service."""
    return pod.rsplit("-", 1)[0].rsplit("-", 1)[0]


def _hex_id(value: str, digits: int, where: str, column: str) -> str:
    text = value.strip().lower()
    if not text or len(text) > digits or any(c not in "0123456789abcdef" for c in text):
        raise NezhaError(f"{where}: {column} {value!r} is not a hex id of at most {digits} digits")
    return text.rjust(digits, "0")  # 64-bit Jaeger trace ids, left-padded as OTLP does


def _nanos(value: str, where: str, column: str) -> int:
    try:
        # Written by pandas, a large integer may come as a float ("1.661140486804117e+18");
        # Nezha itself rounds these up (np.ceil), and so does this.
        return int(Decimal(value.strip()).to_integral_value(rounding=ROUND_CEILING))
    except (InvalidOperation, ValueError):
        raise NezhaError(f"{where}: {column} {value!r} is not a time in nanoseconds") from None


def read_spans(path: Path) -> Iterator[NezhaSpan]:
    """The spans of one Nezha trace file, in file order."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise NezhaError(f"{path}: not a Nezha trace file: no column {', '.join(missing)}")
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}:{row_number}"
            parent = (row["ParentID"] or "").strip()
            start, end = _nanos(row["StartTimeUnixNano"], where, "StartTimeUnixNano"), _nanos(
                row["EndTimeUnixNano"], where, "EndTimeUnixNano")
            if end < start:
                raise NezhaError(f"{where}: the span ends before it starts")
            pod = row["PodName"].strip()
            if not pod:
                raise NezhaError(f"{where}: PodName is empty")
            yield NezhaSpan(
                trace_id=_hex_id(row["TraceID"], 32, where, "TraceID"),
                span_id=_hex_id(row["SpanID"], 16, where, "SpanID"),
                parent_id=None if parent.lower() in ("", "root", "nan") else _hex_id(parent, 16, where, "ParentID"),
                pod=pod, start_ns=start, end_ns=end, name=row["OperationName"])


def _otlp_span(s: NezhaSpan) -> dict[str, Any]:
    span: dict[str, Any] = {"traceId": s.trace_id, "spanId": s.span_id, "name": s.name, "kind": 0,
                            "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns), "status": {}}
    if s.parent_id is not None:
        span["parentSpanId"] = s.parent_id
    return span


def _resource(pod: str) -> dict[str, Any]:
    return {"attributes": [{"key": "service.name", "value": {"stringValue": service_of(pod)}},
                           {"key": "k8s.pod.name", "value": {"stringValue": pod}}]}


def write_traces(spans: Iterable[NezhaSpan], out: Path) -> int:
    """OTLP/JSON lines, gzip: the spans grouped by pod (a resource each), in the order pods first appear."""
    by_pod: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_pod.setdefault(s.pod, []).append(_otlp_span(s))
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(out, "wt", encoding="utf-8") as f:
        for pod, pod_spans in by_pod.items():
            for i in range(0, len(pod_spans), SPANS_PER_RESOURCE):
                chunk = pod_spans[i:i + SPANS_PER_RESOURCE]
                request = {"resourceSpans": [{"resource": _resource(pod),
                                              "scopeSpans": [{"scope": {"name": SCOPE}, "spans": chunk}]}]}
                f.write(json.dumps(request, separators=(",", ":")) + "\n")
                count += len(chunk)
    return count


def read_faults(path: Path) -> list[Fault]:
    """The faults of one ``<date>-fault_list.json``, in injection order."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise NezhaError(f"{path}: cannot read the fault list: {err}") from None
    if not isinstance(doc, dict):
        raise NezhaError(f"{path}: a fault list maps hours to lists of faults")
    faults = []
    for hour, entries in doc.items():
        for i, entry in enumerate(entries or ()):
            where = f"{path}: [{hour!r}][{i}]"
            try:
                when = datetime.strptime(entry["inject_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
                faults.append(Fault(when, str(entry["inject_pod"]), str(entry["inject_type"])))
            except (KeyError, TypeError, ValueError) as err:
                raise NezhaError(f"{where}: not a fault ({err!r}); needs inject_time, inject_pod, inject_type") from None
    return sorted(faults, key=lambda f: f.inject_time)


def minute_file(root: Path, when: datetime) -> Path:
    """``<root>/<date>/trace/<HH>_<MM>_trace.csv`` for the minute ``when`` falls in."""
    return root / when.strftime("%Y-%m-%d") / "trace" / when.strftime("%H_%M_trace.csv")


def convert(nezha: Path, out: Path, dates: Sequence[str] = DATES, baseline: str = BASELINE, offset: int = 2,
            log: TextIO = sys.stderr) -> dict[str, Any]:
    """Write the dataset; returns its dataset.json."""
    details: dict[str, dict[str, str]] = {}
    details_path = nezha / "construct_data" / "root_cause_hipster.json"
    if details_path.exists():
        details = json.loads(details_path.read_text(encoding="utf-8"))
    try:
        baseline_minute = datetime.strptime(baseline, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    except ValueError:
        raise NezhaError(f"--baseline {baseline!r}: give a minute as YYYY-MM-DD HH:MM") from None
    baseline_file = minute_file(nezha / "construct_data", baseline_minute)
    if not baseline_file.exists():
        raise NezhaError(f"{baseline_file}: no such baseline trace file (is {nezha} a clone of IntelligentDDS/Nezha?)")
    baseline_spans = write_traces(read_spans(baseline_file), out / "baseline" / "traces.jsonl.gz")

    cases = 0
    for date in dates:
        for fault in read_faults(nezha / "rca_data" / date / f"{date}-fault_list.json"):
            minute = minute_file(nezha / "rca_data", fault.inject_time + timedelta(minutes=offset))
            if not minute.exists():
                print(f"skipped {fault.case_id} ({fault.kind} on {fault.pod}): no {minute}", file=log)
                continue
            case = out / "cases" / fault.case_id
            spans = write_traces(read_spans(minute), case / "traces.jsonl.gz")
            root_cause = {"service": fault.service, "pod": fault.pod, "fault": fault.kind}
            detail = details.get(fault.service, {}).get(fault.kind)
            if detail:
                root_cause["detail"] = detail
            label = {"root_cause": root_cause,
                     "inject_time_unix_nano": int(fault.inject_time.timestamp()) * 1_000_000_000, "spans": spans}
            (case / "label.json").write_text(json.dumps(label, indent=1) + "\n")
            cases += 1
    if not cases:
        raise NezhaError(f"{nezha}: no fault of {', '.join(dates)} has its trace minute in the clone")
    meta = {"name": "nezha-hipster", "level": "service", "cases": cases, "baseline_spans": baseline_spans,
            "source": f"IntelligentDDS/Nezha (MIT), rca_data + construct_data, minute inject+{offset}",
            "signals": "span timing and structure only: no status, kind or attributes"}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Source: github.com/IntelligentDDS/Nezha (MIT licence).")
    parser.add_argument("nezha", type=Path, help="a clone of IntelligentDDS/Nezha")
    parser.add_argument("out", type=Path, help="the dataset folder to write")
    parser.add_argument("--dates", nargs="+", default=list(DATES), help=f"fault days (default {' '.join(DATES)})")
    parser.add_argument("--baseline", default=BASELINE, help=f"fault-free minute, UTC (default {BASELINE!r})")
    parser.add_argument("--offset", type=int, default=2, help="minutes after injection of a case's traces (default 2)")
    args = parser.parse_args(argv)
    try:
        meta = convert(args.nezha, args.out, args.dates, args.baseline, args.offset)
    except NezhaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {meta['cases']} cases, {meta['baseline_spans']} baseline spans; "
          f"now: faulttrace eval {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
