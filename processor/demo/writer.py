"""Simulate the shop's traffic and write it as a labelled dataset (``../shared/corpora`` layout).

``write_dataset`` writes ``dataset.json``, ``baseline/traces.jsonl.gz``
(fault-free traffic) and per case ``cases/<id>/traces.jsonl.gz`` with its
``label.json``: the fault's kind and layer, the service and pod where it
originates, ``root_cause.span_ids`` (every span where it originates, in the
traces it affected) and ``symptom_span_ids`` (the spans that only show it).
Traces are gzip-compressed OTLP/JSON lines, one ``ExportTraceServiceRequest``
per trace.  Everything follows from the seed: the same seed writes the same
bytes.

In a case, each trace has the fault active with a probability drawn per case
(0.3-0.6); an active trace is a request that reaches the fault's target,
the others are the usual mix.  An active trace whose fault had no effect (a
timeout the callee happened to beat) carries no label.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.demo.agent import agent_chat
from processor.demo.calls import Request
from processor.demo.faults import KINDS, Fault, FaultKind
from processor.demo.shop import browse, checkout_request, search
from processor.demo.simtrace import Op, SimError, SimTrace
from processor.demo.topology import SERVICES, Cluster, Pod
from processor.otlp.otlpjson import request_to_json

FLOWS: dict[str, Callable[[Request], None]] = {"browse": browse, "search": search, "agent": agent_chat,
                                               "checkout": checkout_request}
MIX = {"browse": 0.34, "search": 0.22, "agent": 0.26, "checkout": 0.18}
EPOCH_NS = 1_795_420_800 * 10**9          # 2026-11-21T00:00:00Z: the baseline's first trace
MEAN_GAP_MS = 400                          # mean time between requests (Poisson arrivals)
CFS_PERIOD_MS = 100.0                      # the kernel's default cpu.cfs_period_us, 100 ms
ROLLOUT_SHARE = 0.35                       # share of windows (cases, baseline) with a healthy rollout going on


@dataclass(frozen=True)
class Written:
    """What ``write_dataset`` wrote: counts for the report."""

    path: Path
    cases: int
    traces: int
    spans: int
    affected: int


def simulate(seed_key: str, start_ns: int, count: int, fault: Fault | None,
             cluster: Cluster) -> list[SimTrace]:
    """``count`` requests from ``start_ns``; with a fault, each active with the case's probability.
    Now and then a healthy release of another service is rolling out at the same time."""
    rng = random.Random(seed_key)
    rate = rng.uniform(0.3, 0.6)
    if rng.random() < ROLLOUT_SHARE:
        hit = fault.variant["target"].split(">")[0] if fault is not None else ""
        cluster.roll_out(rng.choice([s for s in SERVICES if s != hit]), rng)
    traces, now = [], start_ns
    for _ in range(count):
        now += int(rng.expovariate(1 / MEAN_GAP_MS) * 1e6)
        active = fault is not None and rng.random() < rate
        case_fault = fault if fault is not None else Fault.none()
        case_fault.active = active
        flow = rng.choice(case_fault.variant["requests"]) if active else _mix(rng)
        traces.append(_request(rng, now, case_fault, cluster, flow))
    return traces


def _mix(rng: random.Random) -> str:
    return rng.choices(list(MIX), weights=list(MIX.values()))[0]


def _request(rng: random.Random, start_ns: int, fault: Fault, cluster: Cluster, flow: str) -> SimTrace:
    trace = SimTrace(random.Random(rng.getrandbits(64)), start_ns)
    req = Request(trace, cluster, fault, f"user-{trace.rng.randint(10000, 99999)}")
    variant = fault.variant
    if fault.active and fault.kind.name == "cpu-throttling":
        throttled = throttled_pod(cluster, variant)
        req.routes[throttled.service] = throttled  # a request that reaches the throttled container
        trace.throttle = cfs_throttle(throttled, trace.rng.uniform(3.0, 6.0), trace.rng)
    if fault.active and "version" in variant:
        service = variant["target"].split(">")[0]
        req.canary[service] = cluster.canary(service, variant["version"])
    try:
        FLOWS[flow](req)
    except SimError:
        pass  # the request failed: its spans say so
    for op in trace.stretched:  # every span whose work the throttled container did: the injection, not a threshold
        trace.cause(op)
    return trace


def throttled_pod(cluster: Cluster, variant: dict[str, Any]) -> Pod:
    """The container a cpu-throttling variant throttles: the first pod of its target service's release."""
    return cluster.stable(variant["target"])[0]


def cfs_throttle(pod: Pod, demand: float, rng: random.Random) -> Callable[[Op, float], float]:
    """What a CFS quota adds to ``ms`` of work done by ``pod``'s process when it demands ``demand``
    times its quota: in each period (CFS_PERIOD_MS) the process runs for 1/demand of it and is
    frozen for the rest, so its work runs ``demand`` times slower on average and a slice that
    meets the frozen part waits for the next period.  Only the throttled container's own spans
    slow down: the node's other pods keep their CPU (a node-wide contention is another fault)."""
    frozen = CFS_PERIOD_MS * (1 - 1 / demand)

    def extra(op: Op, ms: float) -> float:
        if op.pod is not pod:
            return 0.0
        stall = rng.uniform(0.0, frozen) if rng.random() < 1 - 1 / demand else 0.0
        return ms * (demand - 1) + stall

    return extra


def to_request(trace: SimTrace) -> ExportTraceServiceRequest:
    """The trace's spans grouped by pod (resource) and instrumentation scope, in start order."""
    req = ExportTraceServiceRequest()
    groups: dict[int, tuple[Any, dict[str, Any]]] = {}
    for op in sorted(trace.spans, key=lambda o: o.start):
        if id(op.pod) not in groups:
            rs = req.resource_spans.add()
            rs.resource.CopyFrom(op.pod.resource())
            rs.schema_url = "https://opentelemetry.io/schemas/1.29.0"
            groups[id(op.pod)] = (rs, {})
        rs, scopes = groups[id(op.pod)]
        if op.scope not in scopes:
            ss = rs.scope_spans.add()
            ss.scope.name = op.scope
            scopes[op.scope] = ss
        scopes[op.scope].spans.append(op.to_proto())
    return req


def write_traces(path: Path, traces: list[SimTrace]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:  # mtime 0: same seed, same bytes
        for trace in traces:
            gz.write(request_to_json(to_request(trace)).encode() + b"\n")
    path.write_bytes(buf.getvalue())
    return sum(len(t.spans) for t in traces)


def label(kind: FaultKind, variant: dict[str, Any], inject_ns: int, traces: list[SimTrace]) -> dict[str, Any]:
    causes: list[Op] = []
    symptoms: list[Op] = []
    affected = 0
    for trace in traces:
        c, s = trace.labelled()
        if c:
            affected += 1
            causes += c
            symptoms += s
    service = Counter(op.service for op in causes).most_common(1)
    pod = Counter(op.pod.name for op in causes).most_common(1)
    root = {"service": service[0][0] if service else "", "pod": pod[0][0] if pod else "",
            "fault": kind.name, "layer": kind.layer, "silent": kind.silent, "target": variant["target"],
            "span_ids": [op.span_id.hex() for op in causes]}
    params = {k: v for k, v in variant.items() if k not in ("target", "requests")}
    if params:
        root["parameters"] = params
    return case_label(root, symptoms, inject_ns, kind.summary, traces, affected)


def case_label(root: dict[str, Any], symptoms: list[Op], inject_ns: int, description: str,
               traces: list[SimTrace], affected: int) -> dict[str, Any]:
    """A case's ``label.json``: its root cause, symptom spans, injection time and trace counts."""
    return {"root_cause": root, "symptom_span_ids": [op.span_id.hex() for op in symptoms],
            "inject_time_unix_nano": inject_ns, "description": description,
            "traces": len(traces), "affected_traces": affected}


@dataclass(frozen=True)
class WrittenCases:
    cases: int
    traces: int
    spans: int
    affected: int


class _Kind(Protocol):
    name: str


K = TypeVar("K", bound=_Kind)


def write_cases(root: Path, kinds: Sequence[K], cases_per_kind: int,
                case: Callable[[K, int, str, int], tuple[list[SimTrace], dict[str, Any]]]) -> WrittenCases:
    """Write ``cases_per_kind`` cases of each kind under ``root/cases``: ``case(kind, n, case_id,
    inject_ns)`` simulates one and labels it; injections are 15 minutes apart from an hour after
    the baseline.  One loop for every topology's dataset."""
    traces = spans = affected = count = 0
    inject = EPOCH_NS + 3600 * 10**9
    for kind in kinds:
        for n in range(cases_per_kind):
            case_id = f"{kind.name}-{n + 1}"
            inject += 900 * 10**9
            simulated, lab = case(kind, n, case_id, inject)
            spans += write_traces(root / "cases" / case_id / "traces.jsonl.gz", simulated)
            (root / "cases" / case_id / "label.json").write_text(json.dumps(lab, indent=1) + "\n")
            traces += len(simulated)
            affected += lab["affected_traces"]
            count += 1
    return WrittenCases(count, traces, spans, affected)


def write_dataset(out: str | Path, seed: int = 1, traces_per_case: int = 40, cases_per_kind: int = 2,
                  baseline_traces: int = 400, kinds: tuple[FaultKind, ...] = KINDS) -> Written:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    baseline = simulate(f"{seed}/baseline", EPOCH_NS, baseline_traces, None, Cluster.build(seed))
    spans = write_traces(root / "baseline" / "traces.jsonl.gz", baseline)

    def case(kind: FaultKind, n: int, case_id: str, inject: int) -> tuple[list[SimTrace], dict[str, Any]]:
        variant = kind.variants[n % len(kind.variants)]
        traces = simulate(f"{seed}/{case_id}", inject, traces_per_case, Fault(kind, variant), Cluster.build(seed))
        return traces, label(kind, variant, inject, traces)

    cases = write_cases(root, kinds, cases_per_kind, case)
    meta = {"name": "demo-shop", "level": "span", "cases": cases.cases, "seed": seed,
            "generator": "faulttrace demo --write-dataset", "traces_per_case": traces_per_case,
            "baseline_traces": len(baseline), "spans": spans + cases.spans,
            "kinds": [{"fault": k.name, "layer": k.layer, "silent": k.silent, "summary": k.summary} for k in kinds],
            "signals": "OTLP spans with semantic-convention attributes (http, rpc, db, gen_ai, feature_flag, "
                       "exception events), k8s and version resource attributes"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Written(root, cases.cases, len(baseline) + cases.traces, spans + cases.spans, cases.affected)
