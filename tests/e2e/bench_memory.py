"""Memory of `faulttrace serve` after load bursts and hostile input: does it come back?

A real `faulttrace serve` (a subprocess on the embedded defaults: analysis in
its worker process, the journal in a fresh state directory) exports to a real
OTLP/gRPC sink in another process (``processor.tools.bench.sink_main``).  Its
resident memory (VmRSS from ``/proc/PID/status``, the serving process plus
its children: the analysis worker, multiprocessing's resource tracker) is
read:

* ``idle``: a few seconds after start;
* ``burst 1``: the peak while a burst of realistic spans (``--spans``, sent by
  ``processor.tools.bench``'s load generator in its own process) is received,
  analysed and delivered, and ``settled``: every span at the sink, nothing
  buffered or queued, then ``--settle`` seconds;
* ``burst 2``: the same burst again, peak and settled;
* ``hostile``: the fuzz mutations of ``tests.e2e.fuzz_receivers`` on every
  transport, bodies over the size limits (HTTP and gRPC), gzip bombs (one
  member and thousands), and bodies trickled in by many connections that then
  go away; peak and settled.

Each repeat starts a fresh process; medians are reported with the ratios
burst 1 settled / idle and burst 2 settled / burst 1 settled (what a second
identical burst adds: memory that does not come back grows it).  Run::

    python -m tests.e2e.bench_memory [--spans 200000] [--repeats 3] [--mutations 1000] [--format json]

``--env NAME=VALUE`` (repeatable) sets the environment of `faulttrace serve`
for experiments, e.g. ``MALLOC_ARENA_MAX=2`` as the container image runs it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from processor.otlp.otlpjson import request_to_json
from processor.tools.bench import load_main, sink_main
from tests.e2e import fuzz_receivers as fuzz
from tests.support.harness import free_port, wait_until

PHASES = ("idle", "burst 1 peak", "burst 1 settled", "burst 2 peak", "burst 2 settled", "hostile peak",
          "hostile settled")
SENDERS = 2  # concurrent streams of the load generator, as `faulttrace bench` uses
MiB = 1 << 20


# --- resident memory ------------------------------------------------------------------


def vm_rss(pid: int) -> int:
    """Resident bytes of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children …), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Rss:
    main: int
    children: int

    @property
    def total(self) -> int:
        return self.main + self.children


def process_rss(pid: int) -> Rss:
    return Rss(vm_rss(pid), sum(vm_rss(c) for c in descendants(pid)))


class PeakSampler:
    """Samples a process tree's RSS every ``interval`` in a thread; keeps the largest total."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self.peak = Rss(0, 0)
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = process_rss(self._pid)
            if rss.total > self.peak.total:
                self.peak = rss
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the process under test ------------------------------------------------------------


class Serve:
    """`faulttrace serve` on the embedded defaults, but for its ports and exporter."""

    def __init__(self, workdir: Path, sink_port: int, env: dict[str, str] | None = None) -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        config = {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{self.grpc_port}"},
                                                 "http": {"endpoint": f"127.0.0.1:{self.http_port}"}}}},
            "processors": {"faulttrace": {}},  # every default: rules, fault trees, localizer, journal
            "exporters": {"otlp_grpc": {"endpoint": f"127.0.0.1:{sink_port}", "tls": {"insecure": True}}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                                 "exporters": ["otlp_grpc"]}},
                        "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}}},
        }
        path = workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log = workdir / "serve.log"
        env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), **(env or {})}  # a fresh default journal
        script = Path(sys.executable).with_name("faulttrace")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "processor.cli"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*command, "serve", "--config", str(path)], stdout=log, stderr=log, env=env)
        wait_until(self._healthy, timeout=60, what="faulttrace serve to come up")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"faulttrace serve exited: {self.log.read_text()[-2000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def metric(self, name: str) -> float:
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def drained(self) -> bool:
        """Nothing buffered, nothing queued for export, nothing sent for a moment."""
        sent = self.metric("faulttrace_exporter_sent_spans_total")
        health = requests.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=5).json()
        if health["buffered_spans"] or self.metric("faulttrace_exporter_queue_size"):
            return False
        time.sleep(0.5)
        return self.metric("faulttrace_exporter_sent_spans_total") == sent

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class Sink:
    """``faulttrace bench``'s OTLP/gRPC sink in its own process, counting spans."""

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self.count = self._ctx.Value("q", 0)
        self._stop = self._ctx.Event()
        ready, child_ready = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=sink_main, args=(child_ready, self.count, self._stop), daemon=True)
        self._proc.start()
        self._ready = ready  # kept open: the sink answers on it
        self.port: int = ready.recv()

    def burst(self, port: int, spans: int) -> int:
        """Send ``spans`` realistic spans (whole requests) to a gRPC receiver from a load process;
        returns how many were accepted."""
        result, child_result = self._ctx.Pipe()
        load = self._ctx.Process(target=load_main, args=(port, 3600.0, SENDERS, child_result, spans), daemon=True)
        load.start()
        sent = result.recv()["sent"]
        load.join()
        return sent

    def close(self) -> None:
        self._stop.set()
        self._proc.join(10)


# --- hostile input ----------------------------------------------------------------------


def hostile(serve: Serve, mutations: int, seed: int = 1) -> dict[str, Any]:
    """Everything an attacker might send, in order; a summary of the answers."""
    rng = random.Random(seed)
    seeds = [fuzz.seed_request(rng) for _ in range(40)]
    proto_seeds = [s.SerializeToString() for s in seeds]
    json_seeds = [request_to_json(s).encode() for s in seeds]
    figures = fuzz.Figures()
    clients = fuzz.Clients(serve.grpc_target, serve.http_url, figures)
    try:
        for i in range(mutations * len(fuzz.TRANSPORTS)):
            transport = fuzz.TRANSPORTS[i % len(fuzz.TRANSPORTS)]
            fuzz._send_mutant(rng, transport, i, clients, proto_seeds, json_seeds)
        oversized(serve, clients)
        gzip_bombs(clients)
    finally:
        clients.close()
    trickle(serve.http_port)
    return {"mutations": mutations * len(fuzz.TRANSPORTS), "crashes": len(figures.crashes),
            "hangs": len(figures.hangs), "answers": {f"{t} {s}": n for (t, s), n in figures.answers.items()}}


def oversized(serve: Serve, clients: fuzz.Clients, times: int = 5) -> None:
    """Bodies over the limits: HTTP 25 MiB (limit 20), gRPC 5 MiB (limit 4); refused, never held."""
    big = os.urandom(25 * MiB)
    for i in range(times):
        clients.http(big, fuzz.PROTOBUF, {}, what=f"oversized http {i}")
        clients.grpc(big[:5 * MiB], what=f"oversized grpc {i}")


def gzip_bombs(clients: fuzz.Clients, times: int = 5) -> None:
    """A 256 MiB gzip member of zeros (~250 KiB sent) and 4,000 members of 64 KiB zeros each: both
    inflate past the 20 MiB limit and get 413."""
    one = gzip.compress(bytes(256 * MiB), compresslevel=9)
    many = gzip.compress(bytes(64 * 1024), compresslevel=9) * 4000
    for i in range(times):
        for name, body in (("one member", one), ("many members", many)):
            clients.http(body, fuzz.PROTOBUF, {"Content-Encoding": "gzip"}, what=f"gzip bomb {name} {i}")


def trickle(http_port: int, connections: int = 100, seconds: float = 5.0) -> None:
    """Many connections announce 10 MiB bodies and trickle them a little at a time, then go away."""
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {10 * MiB}\r\n\r\n").encode()
    socks = []
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
            s.sendall(head)
            socks.append(s)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for s in socks:
                s.sendall(os.urandom(4096))
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()


# --- one run ------------------------------------------------------------------------------


@dataclass
class Run:
    rss: dict[str, Rss] = field(default_factory=dict)  # per phase
    spans: list[int] = field(default_factory=list)  # accepted per burst
    hostile: dict[str, Any] = field(default_factory=dict)


def _settle(serve: Serve, done: Callable[[], bool], seconds: float) -> Rss:
    wait_until(done, timeout=600, what="every span to be delivered")
    wait_until(serve.drained, timeout=120, what="faulttrace serve to drain")
    time.sleep(seconds)
    return process_rss(serve.pid)


def run_once(sink: Sink, spans: int, mutations: int, settle: float, idle: float = 5.0,
             out: Callable[[str], None] = print, env: dict[str, str] | None = None) -> Run:
    """Start a fresh `faulttrace serve`, then idle, two bursts and (``mutations`` > 0) hostile input."""
    run = Run()
    with tempfile.TemporaryDirectory(prefix="faulttrace-memory-") as tmp:
        serve = Serve(Path(tmp), sink.port, env)
        try:
            time.sleep(idle)
            run.rss["idle"] = process_rss(serve.pid)
            out(f"  idle {_mib(run.rss['idle'])}")
            for n in (1, 2):
                base = sink.count.value
                with PeakSampler(serve.pid) as peak:
                    sent = sink.burst(serve.grpc_port, spans)
                    settled = _settle(serve, lambda: sink.count.value - base >= sent, settle)
                run.spans.append(sent)
                run.rss[f"burst {n} peak"], run.rss[f"burst {n} settled"] = peak.peak, settled
                out(f"  burst {n}: {sent:,} spans, peak {_mib(peak.peak)}, settled {_mib(settled)}")
            if mutations:
                with PeakSampler(serve.pid) as peak:
                    run.hostile = hostile(serve, mutations)
                    settled = _settle(serve, lambda: True, settle)
                run.rss["hostile peak"], run.rss["hostile settled"] = peak.peak, settled
                out(f"  hostile: peak {_mib(peak.peak)}, settled {_mib(settled)}  {json.dumps(run.hostile)}")
        finally:
            serve.stop()
    return run


def _mib(rss: Rss) -> str:
    return f"{rss.total / MiB:,.0f} MiB ({rss.main / MiB:,.0f} + {rss.children / MiB:,.0f})"


@contextmanager
def running_sink() -> Iterator[Sink]:
    sink = Sink()
    try:
        yield sink
    finally:
        sink.close()


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Medians per phase (MiB: total, serving process, children) and the ratios."""
    phases = [p for p in PHASES if all(p in r.rss for r in runs)]
    median: dict[str, dict[str, float]] = {}
    for phase in phases:
        median[phase] = {part: round(statistics.median(getattr(r.rss[phase], part) for r in runs) / MiB, 1)
                         for part in ("total", "main", "children")}
    ratios = {}
    for name, num, den in (("burst 1 settled / idle", "burst 1 settled", "idle"),
                           ("burst 2 settled / burst 1 settled", "burst 2 settled", "burst 1 settled"),
                           ("hostile settled / burst 2 settled", "hostile settled", "burst 2 settled"),
                           ("hostile settled / idle", "hostile settled", "idle")):
        if num in phases:
            ratios[name] = round(statistics.median(r.rss[num].total / r.rss[den].total for r in runs), 3)
    return {"runs": len(runs), "spans_per_burst": runs[0].spans[0] if runs and runs[0].spans else 0,
            "rss_mib": median, "ratios": ratios}


def table(summary: dict[str, Any]) -> str:
    lines = [f"{'phase':<18}{'total MiB':>10}{'serve':>8}{'children':>10}"]
    for phase, v in summary["rss_mib"].items():
        lines.append(f"{phase:<18}{v['total']:>10,.0f}{v['main']:>8,.0f}{v['children']:>10,.0f}")
    lines += [f"{name}: {value}" for name, value in summary["ratios"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans per burst")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes; medians reported")
    parser.add_argument("--mutations", type=int, default=1000, help="fuzz mutations per transport (0: no hostile phase)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a drain before 'settled' is read")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment of `faulttrace serve` (repeatable), e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    runs = []
    with running_sink() as sink:
        for n in range(args.repeats):
            print(f"run {n + 1}", file=sys.stderr, flush=True)
            runs.append(run_once(sink, args.spans, args.mutations, args.settle,
                                 out=lambda line: print(line, file=sys.stderr, flush=True), env=env))
    summary = summarize(runs)
    print(json.dumps(summary) if args.format == "json" else table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
