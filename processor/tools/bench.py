"""``faulttrace bench``: end-to-end throughput and memory of the pipeline.

Three processes, so that none of them shares the others' interpreter lock:

* a load generator sending realistic OTLP/gRPC requests as fast as they are
  accepted (10 spans per trace, ~12 semantic-convention attributes, ~500 B a
  span, several services per request), retrying refused ones;
* the server under test: the full pipeline (receiver, DuckDB store,
  assembler, exporter), or, in alternating runs, a passthrough built from the
  same receiver and exporter with no store;
* a real OTLP/gRPC sink counting what arrives.

Two more modes show what analysis costs: ``rules`` runs the built-in library
plus the files given with ``--rules`` (by default 50 generated rules of mixed
kinds), ``full`` what ``faulttrace serve`` runs by default (the rule library,
its fault trees and the localizer).

Throughput is the sink's steady-state rate (from a warm-up second after the
first span reaches it until the load stops), with the same buffer limit in
every mode (``MAX_BUFFERED_SPANS``); every run also checks that every
accepted span reached the sink.  A run whose first delivery comes after its
window (or with no delivery at all) has no rate: it is reported failed, with
the reason, and the command exits 1.  Each mode runs ``--runs`` times,
alternating, and medians are reported; ``ratio`` is pipeline / passthrough.

Each run also reports, per process, the CPU time it spent from the start of
the load until every span was delivered, in µs per delivered span
(``cpu_us_per_span``: ``receiver`` is the process receiving, storing and
exporting, ``analysis`` its analysis worker; read from the kernel's
accounting, so startup is left out), and the verdict latency: for each
request, from its acknowledgement (its spans are stored) to the arrival of
the last of its spans at the sink, p50 and p99 over the run.

Memory: when the most spans are buffered, the store's own bytes per span
(``bytes_per_buffered_span``) and the serving process's resident memory above
its size once started, per buffered span (``rss_bytes_per_buffered_span``:
what the allocator keeps around the store's buffers, in-flight batches
included).  What the process holds whatever the buffer (the batches under
analysis and being exported) is divided among the buffered spans there, so
that figure depends on how full the buffer got; ``rss_slope_bytes_per_buffered_span``
is what one more buffered span adds: the slope of resident memory against
buffered spans over the run's samples (``robust_slope``), the figure to size
``max_buffered_spans`` by.

``--modes rotel`` adds an external anchor: rotel (``pip install rotel``, an
OpenTelemetry collector written in Rust) forwarding from its OTLP/gRPC
receiver to the same sink, its CPU per span read the same way; skipped, with
the reason in the output, where it is not installed.

Progress goes to stderr, only when stderr is a terminal: a bar over the
runs, naming the one under way and how far it is (``tools.progress``).

The store keeps spans in memory by default (``--storage memory``), so figures
stay comparable with earlier ones; ``--storage journal`` journals them to a
DuckDB file, as ``faulttrace serve`` does by default, in a fresh temporary
directory per run (removed after it).  The output says which.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from processor.config import IN_MEMORY, JOURNAL_FILE, parse_config
from processor.confmap import parse_duration
from processor.service.memory import rss
from processor.tools.progress import Progress

SERVICE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MARKER = b"\xfa\x17\x7e\x3c\x55\x0d\xb1\x29"  # first half of every template trace id, replaced per send
SPANS_PER_TRACE = 10
TRACES_PER_REQUEST = 50
SERVICES = ("frontend", "checkout", "cart", "payment", "inventory")
# pipeline: no analysis; rules: the built-in library plus --rules files (default: 50 generated
# rules); full: the default analysis of `faulttrace serve` (rule library + localizer);
# passthrough: receiver + exporter only.
MODES = ("pipeline", "rules", "full", "passthrough", "rotel")
DEFAULT_MODES = ("pipeline", "rules", "full", "passthrough")  # rotel only when asked for
# The buffer limit in every mode: above what the pipeline without analysis ever holds here
# (~3 s of traffic: decision_wait, release interval), so a mode that cannot keep up with the
# load fills it within a run and is then measured at its sustained rate, refusing the excess
# (as in production), instead of while a backlog grows without bound.
MAX_BUFFERED_SPANS = 500_000


# --- rules -------------------------------------------------------------------------
# 50 rules of mixed kinds (attribute, structural, aggregate) for the 'rules' mode;
# tests/dsl/bench_rules.py times the same rules alone over a 100,000-span batch.

ATTRIBUTE_RULES = [
    'c.kind = client and c.attr["http.response.status_code"] >= 50{n}',
    'c.attr["db.system.name"] = "postgresql" and c.duration > {n}00ms',
    'c.name =~ "^GET /api/v{n}/items/[0-9]+$" or c.attr["url.path"] starts_with "/v{n}/admin"',
    'c.attr["gen_ai.response.finish_reasons"] contains "length" and c.attr["gen_ai.request.temperature"] > 1.{n}',
    'c.status = error and c.event["exception"]["exception.type"] in ["E{n}", "TimeoutError", "ValueError"]',
    'c.resource["k8s.pod.name"] ends_with "-{n}" and c.self_time > {n}00ms',
]
STRUCTURAL_RULES = [
    'c.status = error and not exists(child d of c where d.status = error) and c.depth > {n}',
    'c.kind = server and count(child d of c where d.kind = client and d.status = error) > {n}',
    'c.status = error and exists(descendant d of c where d.attr["db.system.name"] = "redis" and d.duration > {n}00ms)',
    'c.kind = client and exists(sibling s of c where s.name = c.name and s.status = error) and c.end - c.start > {n}00ms',
    'c.status = error and exists(ancestor a of c where a.kind = server and a.service != c.service) and c.duration > {n}00ms',
]
AGGREGATE_RULES = [
    'c.is_root and count(span s where s.status = error) > {n}',
    'c.is_root and max(s.duration for span s where s.kind = client) > {n}00ms',
    'c.is_root and trace.error_count > {n} and trace.duration > 500ms',
    'c.kind = server and avg(d.duration for child d of c) > {n}0ms',
]


def bench_rule_text(n_rules: int = 50) -> str:
    kinds = [ATTRIBUTE_RULES, STRUCTURAL_RULES, AGGREGATE_RULES]
    out = []
    for i in range(n_rules):
        family = kinds[i % 3]
        cond = family[(i // 3) % len(family)].format(n=i % 7 + 1)
        out.append(
            f'rule bench.r{i} {{\n  title "bench {i}"\n  layer code\n  severity medium\n  confidence 0.5\n'
            f"  match span c where {cond}\n  message \"{{c.name}} in {{c.service}} took {{c.duration}}\"\n}}\n"
        )
    return "\n".join(out)



# --- load --------------------------------------------------------------------------


def build_templates(count: int) -> list[bytes]:
    """Distinct encoded requests whose trace ids all start with MARKER."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def kv(key: str, value: object) -> KeyValue:
        if isinstance(value, int):
            return KeyValue(key=key, value=AnyValue(int_value=value))
        return KeyValue(key=key, value=AnyValue(string_value=str(value)))

    out = []
    seq = 0
    rng = __import__("random").Random(7)
    for t in range(count):
        req = ExportTraceServiceRequest()
        groups = {}
        for svc in SERVICES:
            rs = req.resource_spans.add()
            rs.resource.attributes.extend([kv("service.name", svc), kv("service.version", "1.4.2"),
                                           kv("k8s.pod.name", f"{svc}-7d9f8c-{rng.randrange(100):02d}"),
                                           kv("host.name", f"node-{rng.randrange(8)}")])
            ss = rs.scope_spans.add()
            ss.scope.name = "opentelemetry.instrumentation.flask"
            ss.scope.version = "0.48b0"
            groups[svc] = ss
        for _ in range(TRACES_PER_REQUEST):
            seq += 1
            trace_id = MARKER + struct.pack(">Q", seq)
            start = 1_700_000_000_000_000_000 + seq * 1_000_000
            parent = b""
            for i in range(SPANS_PER_TRACE):
                svc = SERVICES[min(i // 2, len(SERVICES) - 1)]
                span = groups[svc].spans.add()
                span.trace_id = trace_id
                span.span_id = os.urandom(8)
                span.parent_span_id = parent
                parent = span.span_id
                span.name = f"{'GET' if i % 2 else 'POST'} /api/{svc}/{{id}}"
                span.kind = 2 if i % 2 == 0 else 3
                span.start_time_unix_nano = start + i * 1000
                span.end_time_unix_nano = start + 5_000_000 - i * 1000
                span.attributes.extend([
                    kv("http.request.method", "GET" if i % 2 else "POST"),
                    kv("http.route", f"/api/{svc}/{{id}}"),
                    kv("http.response.status_code", 200),
                    kv("url.path", f"/api/{svc}/{rng.randrange(10**6)}"),
                    kv("url.scheme", "http"),
                    kv("server.address", f"{svc}.shop.svc.cluster.local"),
                    kv("server.port", 8080),
                    kv("network.protocol.version", "1.1"),
                    kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101"),
                    kv("client.address", f"10.0.{rng.randrange(255)}.{rng.randrange(255)}"),
                    kv("thread.id", rng.randrange(64)),
                    kv("code.function.name", f"handle_{svc}"),
                ])
        out.append(req.SerializeToString())
    return out


async def _load(port: int, seconds: float, senders: int, result: Connection, spans: int | None = None) -> None:
    """Send for ``seconds``, or (given ``spans``) until that many spans are accepted."""
    import grpc

    templates = build_templates(16)
    spans_per_request = TRACES_PER_REQUEST * SPANS_PER_TRACE
    sent = refused = claimed = 0
    acked: dict[bytes, float] = {}  # request key (the trace ids' first half) -> when it was acknowledged
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(SERVICE_METHOD)

        async def sender(k: int) -> None:
            nonlocal sent, refused, claimed
            i = k
            while time.monotonic() < deadline and (spans is None or claimed < spans):
                claimed += spans_per_request
                key = os.urandom(8)
                data = templates[i % len(templates)].replace(MARKER, key)
                i += senders
                while True:
                    try:
                        await call(data, timeout=30)
                        acked[key] = time.monotonic()  # one clock for every process of the machine
                        sent += spans_per_request
                        break
                    except grpc.aio.AioRpcError as err:
                        if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                            raise
                        refused += 1
                        await asyncio.sleep(0.05)

        await asyncio.gather(*(sender(k) for k in range(senders)))
    result.send({"sent": sent, "refused_requests": refused, "acked": acked})


def load_main(port: int, seconds: float, senders: int, result: Connection, spans: int | None = None) -> None:
    asyncio.run(_load(port, seconds, senders, result, spans))


# --- sink --------------------------------------------------------------------------


def sink_main(ready: Connection, count: Any, stop: Any) -> None:
    """A real OTLP/gRPC sink that counts spans into a shared counter and notes when the last span
    of each request key arrived; ``ready`` answers "arrivals" with them (and forgets them)."""
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    arrived: dict[bytes, float] = {}

    async def main() -> None:
        async def export(request: bytes, context: Any) -> bytes:
            req = ExportTraceServiceRequest.FromString(request)
            now = time.monotonic()
            n = 0
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    n += len(ss.spans)
                    arrived.update(dict.fromkeys({sp.trace_id[:8] for sp in ss.spans}, now))
            with count.get_lock():
                count.value += n
            return b""

        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        handler = grpc.unary_unary_rpc_method_handler(export)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.send(port)
        asking = True  # until the parent closes its end (a caller that only counts spans)
        while not stop.is_set():
            if asking and ready.poll():
                try:
                    ready.recv()
                    ready.send(dict(arrived))
                except (EOFError, OSError):
                    asking = False
                arrived.clear()
            await asyncio.sleep(0.05)
        await server.stop(1)

    asyncio.run(main())


# --- server under test -------------------------------------------------------------


def _config(sink_port: int, decision_wait: float, compression: str, rules: list[str] | None,
            localizer: bool = False, journal: str = IN_MEMORY, complete_grace: float | None = None) -> Any:
    # rules None: no rules at all; otherwise the built-in library plus these files
    # (by default a file of the 50 generated bench rules).  complete_grace None: the default.
    grace = {} if complete_grace is None else {"complete_grace": complete_grace}
    return parse_config({
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 16}}}},
        "processors": {"faulttrace": {"decision_wait": decision_wait, "max_buffered_spans": MAX_BUFFERED_SPANS,
                                      "max_traces": 500_000, "builtin_rules": rules is not None,
                                      "rules": rules or [], "localizer": {"enabled": localizer},
                                      "storage": {"path": journal}, **grace}},
        "exporters": {"otlp_grpc": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True},
                                    "compression": compression}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": ["otlp_grpc"]}},
                    "telemetry": {"metrics": {"address": None}},
                    # The drain is part of the run: every accepted span is delivered and counted
                    # (a mode that cannot keep up drains its backlog at its own rate).
                    "shutdown_timeout": "600s"},
    }, "<bench>")


def robust_slope(points: list[tuple[float, float]], spread: float = 0.1) -> float | None:
    """The Theil-Sen slope of ``points`` (x, y): the median of the slopes between pairs whose x
    differ by at least ``spread`` of the largest x (closer pairs are all noise), or None with
    no such pair.  A median, not a fit: samples taken while a batch is under analysis or
    being exported sit above the line by that batch, whatever the buffer holds."""
    if len(points) > 300:   # pairs grow with the square: every k-th sample is plenty
        points = points[::len(points) // 300 + 1]
    top = max((x for x, _ in points), default=0.0)
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points) for x2, y2 in points[i + 1:]
              if abs(x2 - x1) >= spread * top > 0]
    return statistics.median(slopes) if slopes else None


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Passthrough:
    """Ingest stand-in: validate (parse fully, as any OTLP receiver must) and forward, storing nothing."""

    def __init__(self, exporter: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._exporter = exporter
        self._executor = ThreadPoolExecutor(max_workers=1)

    async def submit(self, data: bytes, encoding: Any, receiver: str, transport: str) -> Any:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        from processor.model import ExportPayload
        from processor.receivers.ingest import Accepted

        def count() -> int:
            req = ExportTraceServiceRequest.FromString(data)
            return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)

        n = await asyncio.get_running_loop().run_in_executor(self._executor, count)
        await self._exporter.export(ExportPayload(data=data, span_count=n))
        return Accepted(n, 0, "")


async def _serve(mode: str, sink_port: int, decision_wait: float, compression: str, rules: list[str],
                 storage: str, ctl: Connection, complete_grace: float | None = None) -> None:
    import shutil

    from processor.exporters.factory import build_exporter
    from processor.pipeline import Pipeline
    from processor.receivers.otlp_grpc import GrpcReceiver
    from processor.service.telemetry import Telemetry

    if mode == "rules" and not rules:
        path = os.path.join(tempfile.mkdtemp(prefix="faulttrace-bench-"), "bench.rules")
        with open(path, "w", encoding="utf-8") as f:
            f.write(bench_rule_text(50))
        rules = [path]
    # A fresh journal per run: nothing recovered from an earlier one.
    state = tempfile.mkdtemp(prefix="faulttrace-bench-") if storage == "journal" else None
    journal = os.path.join(state, JOURNAL_FILE) if state else IN_MEMORY
    if mode == "full":  # what `faulttrace serve` runs by default: the rule library and the localizer
        config = _config(sink_port, decision_wait, compression, [], localizer=True, journal=journal,
                         complete_grace=complete_grace)
    else:
        config = _config(sink_port, decision_wait, compression, rules if mode == "rules" else None,
                         journal=journal, complete_grace=complete_grace)
    stats: dict[str, float | None] = {"max_buffered_spans": 0, "bytes_per_buffered_span": 0.0,
                                      "rss_bytes_per_buffered_span": 0.0}
    points: list[tuple[float, float]] = []  # (buffered spans, RSS above rss0), every sample
    workers: list[int] = []
    if mode != "passthrough":
        pipeline = Pipeline(config)
        await pipeline.start()
        port = pipeline.ports()["otlp/grpc"]
        workers = [p.pid for p in mp.active_children() if p.pid]  # the analysis worker, if any
    else:
        telemetry = Telemetry()
        exporter = build_exporter("otlp_grpc", config.exporters["otlp_grpc"], telemetry)
        await exporter.start()
        receiver = GrpcReceiver("otlp", config.receivers["otlp"].protocols.grpc, _Passthrough(exporter), telemetry)
        port = await receiver.start()
    # CPU and memory from here on: the startup (imports, compiling the rules, DuckDB, the servers'
    # threads) is not the spans' cost.  Memory before the start would be divided among the
    # buffered spans too (100 MB or more over 75k spans: 1.3 KiB a span that no span holds).
    cpu0 = {"receiver": _own_cpu_s(), "analysis": sum(_cpu_s(pid) for pid in workers)}
    rss0 = rss()
    ctl.send(port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_reader(ctl.fileno(), stop.set)
    while not stop.is_set():
        if mode != "passthrough":
            buffered = pipeline.store.buffered_spans
            grown = rss() - rss0
            points.append((buffered, grown))
            if buffered > (stats["max_buffered_spans"] or 0):
                mem = pipeline.store.memory_bytes()
                stats.update(max_buffered_spans=buffered, bytes_per_buffered_span=mem / buffered,
                             rss_bytes_per_buffered_span=grown / buffered)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass
    loop.remove_reader(ctl.fileno())
    ctl.recv()
    if mode != "passthrough":
        await pipeline.stop()
    else:
        await receiver.stop(1)
        await exporter.shutdown(30)
    if state is not None:
        shutil.rmtree(state, ignore_errors=True)
    stats["peak_rss_mib"] = _peak_rss_mib()
    stats["rss_slope_bytes_per_buffered_span"] = robust_slope(points)
    cpu = {"receiver": _own_cpu_s() - cpu0["receiver"]}
    if workers:  # stopped and joined by pipeline.stop(): the kernel added its time to our children's
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["analysis"] = usage.ru_utime + usage.ru_stime - cpu0["analysis"]
    ctl.send({**stats, "cpu_s": cpu})


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc); 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


# --- rotel: an external anchor -----------------------------------------------------


def rotel_binary() -> tuple[Path | None, str]:
    """rotel's collector binary, or None and why it cannot be used here."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or spec.origin is None:
        return None, "rotel is not installed (pip install rotel; its wheels are for x86_64 Linux)"
    binary = Path(spec.origin).parent / "rotel-agent"
    try:
        probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"rotel's binary {binary} cannot run here: {err}"
    if probe.returncode != 0:
        return None, f"rotel's binary {binary} does not run here: {probe.stderr.strip()[:200]}"
    return binary, ""


class _Rotel:
    """rotel forwarding OTLP/gRPC to the sink: the server of the 'rotel' mode."""

    def __init__(self, binary: Path, sink_port: int, compression: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._dir = tempfile.mkdtemp(prefix="faulttrace-bench-rotel-")
        self._log = Path(self._dir, "rotel.log")
        self._process = subprocess.Popen(
            [str(binary), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{self.port}",
             "--otlp-http-endpoint", "127.0.0.1:0", "--exporter", "otlp",
             "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}", "--otlp-exporter-protocol", "grpc",
             "--otlp-exporter-compression", compression, "--pid-file", str(Path(self._dir, "rotel.pid")),
             "--log-file", str(self._log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._listening():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotel did not start: {self._log.read_text()[-500:] if self._log.exists() else ''}")
            time.sleep(0.05)
        self.cpu0 = _cpu_s(self._process.pid)

    def _listening(self) -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> dict[str, float]:
        cpu = _cpu_s(self._process.pid) - self.cpu0
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
        return {"rotel": cpu}


def serve_main(mode: str, sink_port: int, decision_wait: float, compression: str, rules: list[str],
               storage: str, ctl: Connection, complete_grace: float | None = None) -> None:
    from processor.service.process import tune_process

    tune_process()  # as `faulttrace serve` does, in every mode
    asyncio.run(_serve(mode, sink_port, decision_wait, compression, rules, storage, ctl, complete_grace))


# --- orchestration -----------------------------------------------------------------


@dataclass
class RunResult:
    mode: str
    spans_per_s: float | None  # None: the run failed (``failed`` says why)
    sent: int
    delivered: int
    refused_requests: int
    peak_rss_mib: float
    bytes_per_buffered_span: float
    rss_bytes_per_buffered_span: float
    max_buffered_spans: float
    cpu_us_per_span: dict[str, float] = field(default_factory=dict)  # by process
    rss_slope_bytes_per_buffered_span: float | None = None  # None: the buffer never varied enough
    verdict_latency_p50_s: float | None = None
    verdict_latency_p99_s: float | None = None
    failed: str = ""


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _one_run(ctx: Any, mode: str, sink_port: int, count: Any, args: argparse.Namespace,
             decision_wait: float, sink_ctl: Connection, label: str = "", rotel: Path | None = None,
             progress: Callable[[str], None] = lambda _: None) -> RunResult:
    """One run of ``mode``; ``progress`` is told what it is doing (the bar's text on a terminal)."""
    rotel_server = None
    if mode == "rotel":
        assert rotel is not None
        rotel_server = _Rotel(rotel, sink_port, "gzip" if args.compression == "gzip" else "none")
        port = rotel_server.port
    else:
        ctl, child_ctl = ctx.Pipe()
        server = ctx.Process(target=serve_main, args=(mode, sink_port, decision_wait, args.compression,
                                                      list(args.rules or []), args.storage, child_ctl,
                                                      getattr(args, "complete_grace", None)))
        server.start()
        port = ctl.recv()
    base = count.value
    res, child_res = ctx.Pipe()
    load = ctx.Process(target=load_main, args=(port, args.seconds, args.senders, child_res), daemon=True)
    t_start = time.monotonic()
    load.start()
    samples: list[tuple[float, int]] = []
    while load.is_alive():
        samples.append((time.monotonic() - t_start, count.value - base))
        progress(f"{label}{mode}: {samples[-1][0]:.0f}/{args.seconds:.0f} s, {samples[-1][1]:,} spans delivered")
        time.sleep(0.1)
    t_end = time.monotonic() - t_start
    load_stats = res.recv()
    load.join()
    deadline = time.monotonic() + 60
    if rotel_server is not None:  # rotel has no drain on request: wait for the sink, then stop it
        while count.value - base < load_stats["sent"] and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = {"peak_rss_mib": 0.0, "bytes_per_buffered_span": 0.0, "rss_bytes_per_buffered_span": 0.0,
                 "max_buffered_spans": 0, "cpu_s": rotel_server.stop()}
    else:
        progress(f"{label}{mode}: draining")
        ctl.send("stop")
        stats = ctl.recv()
        server.join()
    while count.value - base < load_stats["sent"] and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = count.value - base
    sink_ctl.send("arrivals")
    arrived: dict[bytes, float] = sink_ctl.recv()
    latencies = [arrived[k] - t for k, t in load_stats["acked"].items() if k in arrived]
    rate, failed = window_rate(samples, t_end)
    spans = max(1, delivered)
    return RunResult(mode, rate, load_stats["sent"], delivered, load_stats["refused_requests"],
                     stats["peak_rss_mib"], stats["bytes_per_buffered_span"],
                     stats["rss_bytes_per_buffered_span"], stats["max_buffered_spans"],
                     cpu_us_per_span={k: round(v / spans * 1e6, 2) for k, v in stats["cpu_s"].items()},
                     verdict_latency_p50_s=_quantile(latencies, 0.5), verdict_latency_p99_s=_quantile(latencies, 0.99),
                     rss_slope_bytes_per_buffered_span=stats.get("rss_slope_bytes_per_buffered_span"),
                     failed=failed)


def window_rate(samples: list[tuple[float, int]], t_end: float) -> tuple[float | None, str]:
    """The sink's steady rate from ``samples`` (seconds since the load started, spans delivered so
    far): from a warm-up second after the first span arrived (each mode has its own latency:
    decision_wait, the first analysis) until the load stopped at ``t_end``.  No rate, and why,
    when nothing was delivered in that window: a failed run, never 0 spans/s."""
    first = next((t for t, n in samples if n > 0), None)
    if first is None:
        return None, f"no span reached the sink while the load ran ({t_end:.1f} s)"
    window = [(t, n) for t, n in samples if first + 1.0 <= t <= t_end]
    if len(window) < 2:
        return None, (f"the first span reached the sink {first:.1f} s after the load started, too late for a "
                      f"measuring window before the load stopped at {t_end:.1f} s (a longer --seconds?)")
    if window[-1][1] == window[0][1]:
        return None, (f"no span reached the sink in the measuring window ({window[0][0]:.1f}-{window[-1][0]:.1f} s "
                      "after the load started): the first delivery was the only one before the load stopped")
    return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]), ""


def _median(results: list[RunResult], mode: str, name: str = "spans_per_s") -> float | None:
    """The median of a figure over the mode's runs that did not fail."""
    values = [getattr(r, name) for r in results if r.mode == mode and not r.failed]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _median_cpu(results: list[RunResult], mode: str) -> dict[str, float]:
    runs = [r.cpu_us_per_span for r in results if r.mode == mode and not r.failed]
    return {k: round(statistics.median(run[k] for run in runs if k in run), 2)
            for k in sorted({k for run in runs for k in run})}


def summarize(results: list[RunResult]) -> dict[str, Any]:
    """Medians per mode and the ratios between modes that ran (a ratio needs both of its modes)."""
    pipe, thru = _median(results, "pipeline"), _median(results, "passthrough")
    rules, full = _median(results, "rules"), _median(results, "full")
    summary: dict[str, Any] = {}
    if pipe is not None:
        summary["spans_per_s"] = round(pipe)
        summary["bytes_per_buffered_span"] = round(_median(results, "pipeline", "bytes_per_buffered_span") or 0)
        summary["rss_bytes_per_buffered_span"] = round(
            _median(results, "pipeline", "rss_bytes_per_buffered_span") or 0)
        summary["peak_rss_mib"] = round(max(r.peak_rss_mib for r in results if r.mode == "pipeline"), 1)
    for mode in ("pipeline", "rules", "full"):
        if any(r.mode == mode for r in results):
            prefix = "" if mode == "pipeline" else f"{mode}_"
            if mode != "pipeline":
                value = _median(results, mode, "rss_bytes_per_buffered_span")
                summary[f"{prefix}rss_bytes_per_buffered_span"] = None if value is None else round(value)
            slope = _median(results, mode, "rss_slope_bytes_per_buffered_span")
            summary[f"{prefix}rss_slope_bytes_per_buffered_span"] = None if slope is None else round(slope)
    if thru is not None:
        summary["passthrough_spans_per_s"] = round(thru)
        summary["passthrough_peak_rss_mib"] = round(max(r.peak_rss_mib for r in results
                                                        if r.mode == "passthrough"), 1)
        if pipe is not None:
            summary["ratio"] = round(pipe / max(1.0, thru), 3)
    for name, rate in (("rules", rules), ("full", full)):
        if rate is not None:
            summary[f"{name}_spans_per_s"] = round(rate)
            if pipe is not None:
                summary[f"{name}_ratio"] = round(rate / max(1.0, pipe), 3)
    for mode in MODES:
        if any(r.mode == mode for r in results):
            summary[f"{mode}_cpu_us_per_span"] = _median_cpu(results, mode)
            for q in ("p50", "p99"):
                value = _median(results, mode, f"verdict_latency_{q}_s")
                summary[f"{mode}_verdict_latency_{q}_s"] = None if value is None else round(value, 3)
    if rotel := _median(results, "rotel"):
        summary["rotel_spans_per_s"] = round(rotel)
        if pipe is not None:
            summary["pipeline_per_rotel"] = round(pipe / max(1.0, rotel), 3)
    summary["lossless"] = all(r.delivered == r.sent for r in results)
    failed = [f"{r.mode}: {r.failed}" for r in results if r.failed]
    if failed:
        summary["failed"] = failed
    return summary


def _duration(text: str | float) -> float:
    """``5s``, ``250ms`` or a number of seconds."""
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def run_bench(args: argparse.Namespace) -> int:
    decision_wait = _duration(args.decision_wait)
    if getattr(args, "complete_grace", None) is not None:
        args.complete_grace = _duration(args.complete_grace)
    ctx = mp.get_context("spawn")
    count = ctx.Value("q", 0)
    stop = ctx.Event()
    ready, child_ready = ctx.Pipe()
    sink = ctx.Process(target=sink_main, args=(child_ready, count, stop), daemon=True)
    sink.start()
    sink_port = ready.recv()
    results: list[RunResult] = []
    modes = [m for m in MODES if m in getattr(args, "modes", DEFAULT_MODES)]
    skipped: dict[str, str] = {}
    rotel = None
    if "rotel" in modes:
        rotel, why = rotel_binary()
        if rotel is None:
            modes.remove("rotel")
            skipped["rotel"] = why
            print(f"rotel skipped: {why}", file=sys.stderr)
    try:
        with Progress(args.runs * len(modes), "bench", "run") as bar:  # on a terminal only
            for run in range(args.runs):
                for mode in modes:
                    r = _one_run(ctx, mode, sink_port, count, args, decision_wait, ready,
                                 label=f"run {run + 1}/{args.runs} ", rotel=rotel, progress=bar.now)
                    results.append(r)
                    bar.step()
                    if args.format == "text":
                        bar.write(_run_line(run, r))
    finally:
        stop.set()
        sink.join(5)
    summary = summarize(results)
    if skipped:
        summary["skipped"] = skipped
    summary["storage"] = args.storage
    summary.update({"rules": ["built-in", *(args.rules or ["50 generated bench rules"])],
                    "runs": args.runs, "seconds": args.seconds, "decision_wait_s": decision_wait,
                    "complete_grace_s": getattr(args, "complete_grace", None),
                    "compression": args.compression, "spans_per_trace": SPANS_PER_TRACE,
                    "spans_per_request": SPANS_PER_TRACE * TRACES_PER_REQUEST})
    if args.format == "json":
        for r in results:
            print(json.dumps(asdict(r)))
        print(json.dumps(summary))
    else:
        print("; ".join(f"{k} {v:,}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k} {v}"
                        for k, v in summary.items() if k not in ("rules", "runs", "seconds", "decision_wait_s", "complete_grace_s",
                                                                 "compression", "spans_per_trace",
                                                                 "spans_per_request")))
    return 0 if summary["lossless"] and "failed" not in summary else 1


def _run_line(run: int, r: RunResult) -> str:
    rate = f"{r.spans_per_s:>10,.0f} spans/s" if r.spans_per_s is not None else f"FAILED ({r.failed})"
    cpu = ", ".join(f"{k} {v:,.1f}" for k, v in r.cpu_us_per_span.items())
    latency = (f"  verdict latency p50 {r.verdict_latency_p50_s:.2f} s p99 {r.verdict_latency_p99_s:.2f} s"
               if r.verdict_latency_p99_s is not None else "")
    return (f"run {run + 1} {r.mode:11s} {rate}  sent {r.sent:,} delivered {r.delivered:,}  "
            f"CPU µs/span: {cpu}{latency}  peak RSS {r.peak_rss_mib:,.0f} MiB"
            + (f"  {r.bytes_per_buffered_span:,.0f} B/buffered span (max {r.max_buffered_spans:,.0f} buffered), "
               f"RSS {r.rss_bytes_per_buffered_span:,.0f} B/buffered span"
               + (f", {r.rss_slope_bytes_per_buffered_span:,.0f} B a span more"
                  if r.rss_slope_bytes_per_buffered_span is not None else "")
               if r.mode not in ("passthrough", "rotel") else ""))
