"""How ``complete_grace`` trades verdict latency for late spans when services export on their own.

Each service of a call chain (``--services``, default 4) is its own
opentelemetry-sdk ``TracerProvider`` with a ``BatchSpanProcessor`` and an
OTLP/gRPC exporter, as instrumented processes are: a trace's spans leave each
service when that service's batch processor flushes (every
``schedule_delay``, 5 s by default in the SDKs, ``OTEL_BSP_SCHEDULE_DELAY``),
so they reach faulttrace apart (here each service's timer starts at a random
point of the first period, as independent processes' would).  A trace whose root has arrived and whose
spans all have their parent can still miss a service whose batch has not
flushed yet: released after ``complete_grace``, that service's spans come
late (exported with the trace's verdict, but the analysis did not see them).

For each ``schedule_delay`` x ``complete_grace`` a real pipeline (in this
process, ``decision_wait: 5s``) receives ``--traces`` traces sent over
``--seconds``; reported: the share of traces released early (``assembled``),
the share of spans that came late, and the late releases per trace (a trace
whose late spans come in two turns counts twice); means over ``--seeds`` draws
of the services' phases.
Run::

    python -m tests.e2e.bench_skew [--delays 5000 1000 200] [--graces 0.5 1 2] [--format json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.support.harness import config_dict, grpc_exporter, start_pipeline, wait_until
from tests.support.otlp_sink import OtlpGrpcSink


def measure(delay_ms: int, grace: float, traces: int, seconds: float, services: int,
            seed: int = 0) -> dict[str, Any]:
    with OtlpGrpcSink() as sink:
        config = config_dict({"otlp_grpc": grpc_exporter(sink.port)}, decision_wait=5.0,
                             processor={"complete_grace": grace, "release_interval": 1.0})
        running = start_pipeline(config)
        try:
            endpoint = f"http://{running.grpc_target}"
            # Separate processes flush on timers of their own: each service's starts at a random
            # point of the first period (``seed``: the same phases for every grace).
            rng = random.Random(seed)
            phases = [rng.uniform(0, delay_ms / 1000) for _ in range(services)]
            started = time.monotonic()
            by_service: dict[int, TracerProvider] = {}
            for i in sorted(range(services), key=phases.__getitem__):
                time.sleep(max(0.0, started + phases[i] - time.monotonic()))
                provider = TracerProvider(resource=Resource.create({"service.name": f"svc{i}"}))
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                               schedule_delay_millis=delay_ms))
                by_service[i] = provider
            providers = [by_service[i] for i in range(services)]
            tracers = [p.get_tracer("skew") for p in providers]

            def call(depth: int) -> None:
                with tracers[depth].start_as_current_span(f"handle{depth}", kind=SpanKind.SERVER):
                    if depth + 1 < services:
                        with tracers[depth].start_as_current_span(f"call{depth + 1}", kind=SpanKind.CLIENT):
                            call(depth + 1)

            for n in range(traces):
                call(0)
                time.sleep(seconds / traces)
            for provider in providers:
                provider.shutdown()  # flushes what each still holds
            spans = traces * (2 * services - 1)
            wait_until(lambda: sink.span_count >= spans, 30, "every span at the sink")
            time.sleep(0.5)
            late = running.metric("faulttrace_processor_late_spans_total")
            early = running.metric("faulttrace_processor_released_traces_total", reason="assembled")
            late_traces = running.metric("faulttrace_processor_released_traces_total", reason="late")
        finally:
            running.stop()
    return {"schedule_delay_ms": delay_ms, "complete_grace_s": grace, "traces": traces,
            "assembled_share": round(early / traces, 3), "late_span_share": round(late / spans, 3),
            "late_releases_per_trace": round(late_traces / traces, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--delays", type=int, nargs="+", default=[5000, 1000, 200], metavar="MS",
                        help="BatchSpanProcessor schedule delays (ms) of the senders")
    parser.add_argument("--graces", type=float, nargs="+", default=[0.5, 1.0, 2.0], metavar="S")
    parser.add_argument("--traces", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--services", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3, help="phase draws per cell; the shares are their means")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args()
    for delay in args.delays:
        for grace in args.graces:
            rows = [measure(delay, grace, args.traces, args.seconds, args.services, seed)
                    for seed in range(args.seeds)]
            row = {**rows[0], **{k: round(sum(r[k] for r in rows) / len(rows), 3)
                                 for k in ("assembled_share", "late_span_share", "late_releases_per_trace")},
                   "seeds": args.seeds}
            print(json.dumps(row) if args.format == "json" else
                  f"schedule_delay {delay:>5} ms  complete_grace {grace:>4} s  released early "
                  f"{row['assembled_share']:.0%}  late spans {row['late_span_share']:.1%}  "
                  f"late releases per trace {row['late_releases_per_trace']:.1%}", flush=True)


if __name__ == "__main__":
    main()
