"""``faulttrace demo``: the shop's traffic through a running pipeline, and a root-cause report per fault.

The real pipeline starts in this process (``tools.replay.LivePipeline``: the
embedded defaults on free local ports, a ``file`` exporter writing to
``out``), its localizer seeded with the shop's healthy traffic.  Then each
fault in turn (interleaved by layer, so a short run still covers every
layer) is active in the requests of its window, sent over OTLP/HTTP as they
are simulated.  Once a window's traces have come out of the exporter, its
report is read off those exported spans (``tools.readback``: their
``rca.*`` attributes and ``rca.finding`` events) and printed with
``faulttrace explain``'s chain: the first affected request's cause, layer,
confidence, evidence, the symptoms naming it and what the user saw; and how
often the injected span came first (``tools.scoring``, as ``eval`` scores).
"""

from __future__ import annotations

import asyncio
import io
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from processor.demo.faults import LAYERS, Fault, FaultKind
from processor.demo.simtrace import SimTrace
from processor.demo.topology import Cluster
from processor.demo.writer import label, simulate, to_request, write_traces
from processor.tools import explain
from processor.tools.replay import LivePipeline, replay_config
from processor.tools.scoring import Label, TraceScore, outcomes, score_trace

BASELINE_TRACES = 300        # healthy requests the localizer's baseline is seeded with
TRACES_PER_FAULT = 20        # requests sent while a fault is active (each reaches it with p 0.3-0.6)
MIN_WINDOW = 1.0             # seconds: a fault's traffic is spread over at least this
DECISION_WAIT = 1.0          # seconds (serve's default is 5): each request is one whole trace
EVIDENCE_LINES = 3           # the cause's strongest evidence shown, then the others' names
DRAIN_TIMEOUT = 20.0         # seconds after the last window to wait for its spans


@dataclass
class Window:
    """One fault's turn: the requests simulated with it active and their ground truth."""

    number: int
    kind: FaultKind
    variant: dict[str, Any]
    traces: list[SimTrace]
    label: Label
    reported: bool = False
    spans: dict[bytes, int] = field(default_factory=dict)   # trace id -> spans sent

    @property
    def affected(self) -> list[SimTrace]:
        return [t for t in self.traces if t.causes]


def by_layer(kinds: Sequence[FaultKind]) -> list[FaultKind]:
    """``kinds`` taking one of each layer in turn (code, data, infrastructure, semantic, config)."""
    queues = [[k for k in kinds if k.layer == layer] for layer in LAYERS]
    out: list[FaultKind] = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out


def fault_window(number: int, kind: FaultKind, seed: int, cluster: Cluster) -> Window:
    """The requests of ``kind``'s turn, simulated from now, and their labels: the same ``seed`` (and a
    ``cluster`` in the same state) gives the same ids, so a test knows the cause spans."""
    rng = random.Random(f"{seed}/demo/{kind.name}")
    variant = rng.choice(kind.variants)
    traces = simulate(f"{seed}/demo/{kind.name}", time.time_ns(), TRACES_PER_FAULT, Fault(kind, variant), cluster)
    lab = label(kind, variant, traces[0].start_ns, traces)
    root = lab["root_cause"]
    truth = Label(root["service"], root["layer"], frozenset(bytes.fromhex(s) for s in root["span_ids"]),
                  frozenset(bytes.fromhex(s) for s in lab["symptom_span_ids"]))
    return Window(number, kind, variant, traces, truth)


async def run(seconds: float, kinds: Sequence[FaultKind], out: Path, seed: int, stdout: TextIO) -> int:
    """The demo; 0 when every window's spans came out of the exporter, 1 otherwise."""
    kinds = by_layer(kinds)
    kinds = kinds[:max(1, int(seconds // MIN_WINDOW))]
    window_s = max(MIN_WINDOW, seconds / len(kinds))
    with tempfile.TemporaryDirectory(prefix="faulttrace-demo-") as tmp:
        baseline = Path(tmp) / "baseline.jsonl.gz"
        stdout.write(f"simulating {BASELINE_TRACES} healthy requests to seed the localizer's baseline …\n")
        stdout.flush()
        healthy = simulate(f"{seed}/demo/baseline", time.time_ns() - 3600 * 10**9, BASELINE_TRACES, None,
                           Cluster.build(seed))
        write_traces(baseline, healthy)
        config = replay_config(out, baseline, DECISION_WAIT, 1.0)
        async with LivePipeline(config) as live:
            ports = live.ports
            stdout.write(f"faulttrace pipeline running: OTLP/gRPC 127.0.0.1:{ports['otlp/grpc']}, OTLP/HTTP "
                         f"127.0.0.1:{ports['otlp/http']}, metrics 127.0.0.1:{ports['metrics']}; "
                         f"annotated spans -> {out}\n")
            stdout.write(f"{len(kinds)} faults, {window_s:.1f}s each, {TRACES_PER_FAULT} requests per fault "
                         f"over OTLP/HTTP\n\n")
            stdout.flush()
            windows = await _send(live, kinds, seed, window_s, stdout)
            complete = await live.wait_exported(sum(sum(w.spans.values()) for w in windows), DRAIN_TIMEOUT)
            _report_ready(live, windows, stdout)
        for w in windows:  # whatever came out during the stop
            if not w.reported:
                _report(live, w, stdout, partial=not complete)
    affected = [s for w in windows for s in _scores(live, w)]
    first = sum(s.hit(1) for s in affected)
    stdout.write(f"\n{len(windows)} faults, {sum(len(w.traces) for w in windows)} requests, "
                 f"{live.exported} spans exported to {out} (OTLP/JSON lines); the injected span ranked first in "
                 f"{first} of {len(affected)} affected requests\n")
    return 0 if complete else 1


async def _send(live: LivePipeline, kinds: Sequence[FaultKind], seed: int, window_s: float,
                stdout: TextIO) -> list[Window]:
    cluster = Cluster.build(seed)
    windows: list[Window] = []
    for n, kind in enumerate(kinds, 1):
        w = fault_window(n, kind, seed, cluster)
        windows.append(w)
        started = time.monotonic()
        for i, trace in enumerate(w.traces):
            request = to_request(trace)
            await live.send(request)
            w.spans[trace.trace_id] = len(trace.spans)
            _report_ready(live, windows, stdout)
            await asyncio.sleep(max(0.0, started + window_s * (i + 1) / len(w.traces) - time.monotonic()))
    return windows


def _report_ready(live: LivePipeline, windows: list[Window], stdout: TextIO) -> None:
    """Report, in order, the windows whose every span has come out of the exporter."""
    live.poll()
    for w in windows:
        if w.reported:
            continue
        if len(w.spans) < len(w.traces) or any(live.readback.span_count(t) < n for t, n in w.spans.items()):
            return
        _report(live, w, stdout)


def _scores(live: LivePipeline, w: Window) -> list[TraceScore]:
    spans = pa.table({"trace_id": [t.trace_id for t in w.traces for _ in t.spans],
                      "span_id": [op.span_id for t in w.traces for op in t.spans],
                      "service": [op.service for t in w.traces for op in t.spans]})
    found = outcomes(spans, live.readback.attributes)
    return [s for s in (score_trace(w.label, t) for t in found) if s is not None]


def _report(live: LivePipeline, w: Window, stdout: TextIO, partial: bool = False) -> None:
    w.reported = True
    k = w.kind
    out = io.StringIO()
    out.write(f"[{w.number}] {k.name} ({k.layer} layer{', silent cause' if k.silent else ''}): {k.summary}\n")
    scores = _scores(live, w)
    affected = w.affected
    first, top3 = sum(s.hit(1) for s in scores), sum(s.hit(3) for s in scores)
    out.write(f"  injected at {w.variant['target']} in {len(affected)} of {len(w.traces)} requests; "
              f"the injected span ranked first in {first} of {len(scores)} (top 3: {top3})\n")
    if partial:
        out.write("  (not every span of this fault came out of the exporter in time)\n")
    shown = next((t for t in affected if live.readback.span_count(t.trace_id)), None)
    if shown is None:
        out.write("  no affected request to show\n\n" if not affected else "  its requests did not come out\n\n")
        stdout.write(out.getvalue())
        stdout.flush()
        return
    read = live.readback.trace(shown.trace_id)
    chains, _ = explain.chains(read.verdict, read.symptoms, read.spans)
    out.write(f"  request {shown.trace_id.hex()} (the first affected), as exported:\n")
    if chains:
        explain.write_chain(chains[0], out, evidence=EVIDENCE_LINES)
        more = len(chains) - 1
        if more:
            out.write(f"     ({more} more candidate{'s' if more > 1 else ''} in this trace)\n")
    else:
        out.write("  no root cause on its spans\n")
    ranks = {c.span_id: c.rank for c in read.verdict.candidates}
    op = min(shown.causes, key=lambda o: ranks.get(o.span_id, len(ranks) + 1))
    if ranks.get(op.span_id) != 1:
        where = f"ranked #{ranks[op.span_id]}" if op.span_id in ranks else "not blamed"
        out.write(f"  the injected span, {op.service}: {op.name}, is {where} here\n")
    out.write("\n")
    stdout.write(out.getvalue())
    stdout.flush()

