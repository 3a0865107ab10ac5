"""A second simulated system for the demo's datasets: a deep travel-booking call graph with hubs.

``faulttrace demo --write-dataset DIR --topology deep`` writes it.  Where the
shop (``shop``, ``agent``) is shallow and rich in attributes, this system is
what large call graphs look like: 28 services, calls up to seven services
deep, fan-out of four in parallel, sequential steps, two *hub* services most
requests pass through whose healthy latency is heavy-tailed (Pareto: now and
then 10x their median with nothing wrong), every service on one to three
pods spread over six nodes (``k8s.pod.name``, ``k8s.node.name``,
``host.name``), gRPC and HTTP with timeouts and retries.

The system is data (``OPS``: each operation's service, own work, how
CPU-bound it is and its steps: a call, calls in parallel, a database call);
``Walk`` executes one request through it on the simulated clock of
``spans``.  The fault kinds are the delays of large systems:

- ``network-delay``: a pod's egress is delayed (netem).  The callee's own
  spans stay normal; the delay shows in the client spans of the calls it
  answers and of the calls it makes (their wire time): those are labelled.
- ``cpu-contention``: a stress process in one pod saturates its node: that
  pod's spans run 2.5-5x slower, the more CPU-bound the more so; every other
  pod on the node slows a little too (a noisy neighbour).  Labelled: the
  injected pod's stretched spans; the neighbours' are symptoms.
- ``slow-dependency``: a service behind a hub answers 20-60x slower; the hub
  (already heavy-tailed) inherits it.
- ``slow-leaf``: the leaf at the bottom of a six-service chain is slow.
- ``retry-amplification``: a callee slows past its caller's timeout; the
  caller retries, so the delay is paid up to three times.

Healthy noise everywhere: lognormal work, the hubs' tails and their load
swinging between busy and quiet periods (a window can look abnormal at a hub
with nothing wrong), cache misses, transient UNAVAILABLE answers retried.  Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from processor.demo.simtrace import CLIENT, MS, SERVER, Op, SimTrace
from processor.demo.topology import Pod
from processor.demo.writer import EPOCH_NS, MEAN_GAP_MS, Written, case_label, write_cases, write_traces
from processor.otlp.spanedit import key_values

NODES = ("gke-travel-pool-a-3f1c", "gke-travel-pool-a-8d2e", "gke-travel-pool-a-c47b",
         "gke-travel-pool-b-1a9f", "gke-travel-pool-b-5e60", "gke-travel-pool-b-e2d8")
_ZONE = {n: ("europe-west1-b" if "-a-" in n else "europe-west1-c") for n in NODES}

# service -> (runtime, protocol, pods)
SERVICES: dict[str, tuple[str, str, int]] = {
    "edge": ("nodejs", "http", 3), "session": ("go", "grpc", 2), "profile": ("java", "grpc", 2),
    "search": ("python", "http", 2), "itinerary": ("java", "http", 2), "routes": ("go", "grpc", 2),
    "fares": ("java", "grpc", 2), "pricing": ("java", "grpc", 2), "tax": ("go", "grpc", 1),
    "currency": ("go", "grpc", 1), "seats": ("go", "grpc", 2), "geo": ("go", "grpc", 2),
    "geoindex": ("go", "grpc", 1), "refdata": ("java", "grpc", 2), "refstore": ("python", "grpc", 1),
    "booking": ("java", "http", 2), "hold": ("go", "grpc", 2), "fraud": ("python", "grpc", 2),
    "insurance": ("python", "http", 1), "meals": ("nodejs", "http", 1), "wallet": ("go", "grpc", 2),
    "cardproxy": ("go", "grpc", 2), "ledger": ("java", "grpc", 2), "notify": ("python", "http", 2),
    "mailer": ("python", "http", 1), "loyalty": ("java", "grpc", 1), "reviews": ("python", "http", 1),
    "baggage": ("go", "grpc", 1),
}
_SDK = {"nodejs": "1.28.0", "python": "1.29.0", "go": "1.33.0", "java": "1.45.0"}
_SCOPE = {"nodejs": "@opentelemetry/instrumentation-{}", "python": "opentelemetry.instrumentation.{}",
          "go": "go.opentelemetry.io/contrib/instrumentation/{}", "java": "io.opentelemetry.{}"}


@dataclass(frozen=True)
class Call:
    """A step calling ``ops`` (several: in parallel), ``p`` of the time; a timeout and attempts
    make the caller give up on a slow answer and try again."""

    ops: tuple[str, ...]
    p: float = 1.0
    timeout_ms: float | None = None
    attempts: int = 1


@dataclass(frozen=True)
class Db:
    """A step querying a database (a client span only)."""

    system: str
    operation: str
    collection: str
    ms: float
    p: float = 1.0


@dataclass(frozen=True)
class OpSpec:
    """One operation: its service, span name, own work (ms), CPU-bound share, steps; a hub's
    own work is heavy-tailed."""

    service: str
    name: str
    work_ms: float
    cpu: float
    steps: tuple[Call | Db, ...] = ()
    heavy: bool = False


def _c(*ops: str, p: float = 1.0, timeout_ms: float | None = None, attempts: int = 1) -> Call:
    return Call(ops, p, timeout_ms, attempts)


_SPECS: tuple[OpSpec, ...] = (
    OpSpec("refstore", "travel.refstore.RefStore/Get", 0.8, 0.3, (Db("postgresql", "SELECT", "reference", 2.0),)),
    OpSpec("refdata", "travel.refdata.RefData/Lookup", 1.5, 0.6,
           (Db("redis", "GET", "ref", 0.4), _c("refstore.Get", p=0.3)), heavy=True),
    OpSpec("geoindex", "travel.geo.GeoIndex/Query", 2.0, 0.8),
    OpSpec("geo", "travel.geo.Geo/Resolve", 2.0, 0.7, (_c("geoindex.Query"), _c("refdata.Lookup", p=0.2)),
           heavy=True),
    OpSpec("currency", "travel.currency.Currency/Rates", 1.2, 0.5, (Db("redis", "HGET", "rates", 0.4),)),
    OpSpec("tax", "travel.tax.Tax/Compute", 1.0, 0.6, (_c("currency.Rates"), _c("refdata.Lookup"))),
    OpSpec("pricing", "travel.pricing.Pricing/Price", 2.5, 0.9, (_c("refdata.Lookup"), _c("tax.Compute"))),
    OpSpec("fares", "travel.fares.Fares/Quote", 1.5, 0.5,
           (Db("postgresql", "SELECT", "fares", 2.5), _c("pricing.Price"))),
    OpSpec("routes", "travel.routes.Routes/List", 1.2, 0.5,
           (_c("geo.Resolve"), Db("postgresql", "SELECT", "routes", 1.8))),
    OpSpec("seats", "travel.seats.Seats/Availability", 1.0, 0.4,
           (Db("redis", "GET", "seatmap", 0.5), _c("refdata.Lookup"))),
    OpSpec("seats", "travel.seats.Seats/Hold", 1.0, 0.3,
           (Db("postgresql", "UPDATE", "seats", 2.5), _c("refdata.Lookup"))),
    OpSpec("itinerary", "POST /plan", 2.0, 0.7,
           (_c("routes.List", "fares.Quote", "seats.Availability", "geo.Resolve"),)),
    OpSpec("reviews", "GET /summary", 0.8, 0.3, (Db("postgresql", "SELECT", "reviews", 1.5),)),
    OpSpec("search", "GET /find", 1.5, 0.5, (_c("geo.Resolve"), _c("itinerary.plan"), _c("reviews.summary"))),
    OpSpec("session", "travel.session.Session/Validate", 0.6, 0.4, (Db("redis", "GET", "session", 0.4),)),
    OpSpec("loyalty", "travel.loyalty.Loyalty/Points", 0.9, 0.3,
           (Db("postgresql", "SELECT", "points", 1.2), _c("refdata.Lookup"))),
    OpSpec("profile", "travel.profile.Profile/Get", 1.0, 0.4,
           (Db("postgresql", "SELECT", "users", 1.5), _c("loyalty.Points"))),
    OpSpec("fraud", "travel.fraud.Fraud/Check", 3.0, 0.9, (_c("geo.Resolve"),)),
    OpSpec("hold", "travel.hold.Hold/Reserve", 0.8, 0.3, (_c("seats.Hold"),)),
    OpSpec("insurance", "POST /quote", 1.2, 0.5, (_c("refdata.Lookup"),)),
    OpSpec("meals", "GET /options", 0.8, 0.3, (Db("postgresql", "SELECT", "meals", 1.0),)),
    OpSpec("cardproxy", "travel.card.CardProxy/Authorize", 1.0, 0.3),
    OpSpec("ledger", "travel.ledger.Ledger/Post", 0.8, 0.3, (Db("postgresql", "INSERT", "entries", 2.0),)),
    OpSpec("wallet", "travel.wallet.Wallet/Charge", 1.0, 0.4,
           (_c("cardproxy.Authorize", timeout_ms=2000, attempts=2), _c("ledger.Post"))),
    OpSpec("mailer", "POST /queue", 0.6, 0.3, (Db("redis", "LPUSH", "outbox", 0.3),)),
    OpSpec("notify", "POST /send", 0.9, 0.4, (_c("mailer.queue"),)),
    OpSpec("baggage", "travel.baggage.Baggage/Options", 1.0, 0.5, (_c("refdata.Lookup"),)),
    OpSpec("booking", "POST /bookings", 2.0, 0.6, (
        _c("profile.Get"),
        _c("fraud.Check", "hold.Reserve", "insurance.quote", "meals.options", timeout_ms=250, attempts=3),
        _c("fares.Quote"), _c("wallet.Charge"), Db("postgresql", "INSERT", "bookings", 2.5), _c("notify.send"))),
    OpSpec("booking", "POST /bookings/:id/change", 1.8, 0.5, (
        _c("baggage.Options"), _c("fares.Quote"), _c("wallet.Charge"), _c("notify.send"))),
    OpSpec("booking", "GET /bookings/list", 1.0, 0.3, (Db("postgresql", "SELECT", "bookings", 2.0),)),
)


def _key(spec: OpSpec) -> str:
    return spec.service + "." + spec.name.rsplit("/", 1)[-1].split(" ")[-1]


OPS: dict[str, OpSpec] = {_key(o): o for o in _SPECS}
# the client span's timeout applies to a grpc call only (an HTTP client here has none)

# request type -> (the edge's route, the steps behind it), and how often each comes
FLOWS: dict[str, tuple[str, tuple[Call, ...]]] = {
    "search": ("GET /api/search", (_c("session.Validate"), _c("search.find"))),
    "account": ("GET /api/account", (_c("session.Validate"), _c("profile.Get", "booking.list"))),
    "book": ("POST /api/bookings", (_c("session.Validate"), _c("booking.bookings"))),
    "change": ("POST /api/bookings/:id/change", (_c("session.Validate"), _c("booking.change"))),
}
MIX = {"search": 0.4, "account": 0.2, "book": 0.25, "change": 0.15}
HUB_TAIL = 1.6        # Pareto shape of a hub's healthy work: P(10x the minimum) = 10^-1.6
HUB_LOAD_SIGMA = 0.5  # the hubs' load swings from one period to the next (lognormal factor on their work)
PERIOD = 40           # requests per period of steady load
TRANSIENT = 0.03      # healthy: a call with retries that is answered UNAVAILABLE once
MIN_STRETCH_MS = 0.5  # a span the stressed node stretched by less is not labelled


def check_graph() -> None:
    """``OPS`` is keyed ``service.Method`` (gRPC) or ``service.<last path word>`` (HTTP), and steps
    name operations by that key (``itinerary.plan``): every step must resolve, keys must not clash."""
    if len(OPS) != sum(1 for _ in _SPECS):
        raise KeyError("two operations share a key")
    for spec in OPS.values():
        for step in spec.steps:
            if isinstance(step, Call):
                for key in step.ops:
                    if key not in OPS:
                        raise KeyError(f"{spec.service}: step calls unknown operation {key}")


@dataclass(frozen=True)
class DeepKind:
    name: str
    summary: str
    variants: tuple[str, ...]     # the target service of each variant


KINDS: tuple[DeepKind, ...] = (
    DeepKind("network-delay", "a pod's egress is delayed: the calls it answers and makes take longer on the wire",
             ("pricing", "seats", "geo", "ledger")),
    DeepKind("cpu-contention", "a stress process in a pod saturates its node: its spans (CPU-bound ones most) "
                               "run 2.5-5x slower, every other pod's on the node a little",
             ("fares", "booking", "refdata", "profile")),
    DeepKind("slow-dependency", "a service behind a hub answers 20-60x slower; the hub inherits it",
             ("geoindex", "refstore", "geoindex", "refstore")),
    DeepKind("slow-leaf", "the leaf at the bottom of a long chain is slow", ("currency", "mailer", "currency",
                                                                            "mailer")),
    DeepKind("retry-amplification", "a callee slows past its caller's timeout; the caller retries it",
             ("fraud", "hold", "fraud", "hold")),
)


def kinds_named(names: tuple[str, ...] | list[str]) -> tuple[DeepKind, ...]:
    """The kinds named (all when none); an unknown name is a ValueError listing the known ones."""
    known = {k.name: k for k in KINDS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown fault kind {', '.join(unknown)} for the deep topology; "
                         f"known: {', '.join(known)}")
    return tuple(known[n] for n in names) if names else KINDS


@dataclass(eq=False)
class DeepPod(Pod):
    """A pod of the deep system; its resource names the pod, its node and the node's zone."""

    def resource(self) -> Resource:
        return Resource(attributes=key_values({
            "service.name": self.service, "service.namespace": "travel", "service.version": self.version,
            "service.instance.id": self.name, "deployment.environment.name": "production",
            "telemetry.sdk.language": self.runtime, "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": _SDK[self.runtime], "k8s.cluster.name": "travel-prod-euw1",
            "k8s.namespace.name": "travel", "k8s.deployment.name": self.service, "k8s.pod.name": self.name,
            "k8s.node.name": self.node, "host.name": self.node, "cloud.provider": "gcp",
            "cloud.availability_zone": _ZONE[self.node]}))


def build_pods(seed: int) -> dict[str, list[DeepPod]]:
    """Every service's pods, spread over the nodes (a seeded shuffle, as a scheduler would)."""
    rng = random.Random(f"deep-cluster-{seed}")
    slots = list(NODES)
    rng.shuffle(slots)
    pods: dict[str, list[DeepPod]] = {}
    i = 0
    for service, (runtime, _, count) in SERVICES.items():
        rs = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(9))
        version = f"{1 + len(service) % 3}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
        pods[service] = []
        for _ in range(count):
            suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
            pods[service].append(DeepPod(service, version, f"{service}-{rs}-{suffix}",
                                         slots[i % len(slots)], runtime))
            i += 1
    return pods


def reaches(steps: tuple[Call | Db, ...], service: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether ``steps`` can lead to an operation of ``service``."""
    for step in steps:
        if isinstance(step, Call):
            for key in step.ops:
                spec = OPS[key]
                if spec.service == service or (key not in seen and reaches(spec.steps, service, seen | {key})):
                    return True
    return False


@dataclass
class Injected:
    """The fault of a case as one request sees it: its kind, target service and pod, parameters."""

    kind: str
    service: str
    pod: DeepPod
    delay_ms: float = 0.0        # network-delay: per packet leg
    factor: float = 1.0          # cpu-contention on the pod; slow-*: how much slower
    node_factor: float = 1.0     # cpu-contention: the neighbours'


@dataclass
class Walk:
    """One request through the system: routing to pods, the spans of each call, the fault."""

    trace: SimTrace
    pods: dict[str, list[DeepPod]]
    fault: Injected | None
    active: bool = False  # the request meets the fault (a pod's or node's fault: wherever it runs there)
    load: float = 1.0   # the hubs' load in this period: their work and their tail grow with it
    routes: dict[str, DeepPod] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)     # id(op) -> how CPU-bound its work is
    stretched: dict[Op, float] = field(default_factory=dict)  # ms the stressed node added to a span's work

    @property
    def rng(self) -> random.Random:
        return self.trace.rng

    def pod(self, service: str) -> DeepPod:
        """The pod a call to ``service`` goes to: the faulty pod when the fault is active in this
        request, one of the others when not (a pod's fault is there for every request it serves)."""
        if service not in self.routes:
            f, pods = self.fault, self.pods[service]
            if f is not None and f.service == service:
                others = [p for p in pods if p is not f.pod]
                self.routes[service] = f.pod if self.active or not others else self.rng.choice(others)
            else:
                self.routes[service] = self.rng.choice(pods)
        return self.routes[service]

    def work(self, op: Op, ms: float, sigma: float = 0.3) -> None:
        """About ``ms`` of ``op``'s own work, stretched on a stressed node: on the injected pod by
        its factor, elsewhere on the node by the neighbours', each weighed by how CPU-bound it is."""
        spent = op.work(ms, sigma)
        f = self.fault
        if f is None or f.kind != "cpu-contention" or op.pod.node != f.pod.node:
            return
        full = f.factor if op.pod is f.pod else f.node_factor
        extra = spent * (full - 1.0) * self.cpu.get(id(op), 0.2)
        op.wait(extra)
        self.stretched[op] = self.stretched.get(op, 0.0) + extra

    def run(self, flow: str) -> None:
        route, steps = FLOWS[flow]
        edge = self.pod("edge")
        root = self.trace.root(edge, _SCOPE[edge.runtime].format("http"), route, SERVER,
                               http__request__method=route.split()[0], http__route=route.split()[1],
                               url__path=route.split()[1], url__scheme="https", server__address="travel.example",
                               user_agent__original="Mozilla/5.0")
        self.cpu[id(root)] = 0.5
        with root:
            self.work(root, 0.8)
            self._steps(root, steps)
            self.work(root, 0.6)

    def _steps(self, server: Op, steps: tuple[Call | Db, ...]) -> None:
        for step in steps:
            if self.rng.random() >= step.p:
                continue
            if isinstance(step, Db):
                self._db(server, step)
            elif len(step.ops) == 1:
                self._call(server, step.ops[0], step)
            else:
                with server.parallel() as branch:
                    for key in step.ops:
                        branch()
                        self._call(server, key, step)

    def _db(self, caller: Op, step: Db) -> None:
        with caller.child(None, _SCOPE[caller.pod.runtime].format(step.system), f"{step.operation} {step.collection}",
                          CLIENT, db__system__name=step.system, db__operation__name=step.operation,
                          db__collection__name=step.collection, server__address=f"{step.system}.travel.svc") as db:
            self.cpu[id(db)] = 0.1
            self.work(db, step.ms, sigma=0.4)

    def _call(self, caller: Op, key: str, step: Call) -> None:
        spec = OPS[key]
        runtime, protocol, _ = SERVICES[spec.service]
        for attempt in range(step.attempts):
            transient = step.attempts > 1 and attempt + 1 < step.attempts and self.rng.random() < TRANSIENT
            if self._attempt(caller, spec, protocol, step, attempt, transient):
                return
            caller.wait(self.rng.uniform(5, 15) * (attempt + 1))   # backoff before the next attempt

    def _attempt(self, caller: Op, spec: OpSpec, protocol: str, step: Call, attempt: int, transient: bool) -> bool:
        """One attempt of a call; whether it was answered in time."""
        callee = self.pod(spec.service)
        grpc = protocol == "grpc"
        rpc_service, _, method = spec.name.rpartition("/")
        if grpc:
            attrs: dict[str, Any] = dict(rpc__system="grpc", rpc__service=rpc_service, rpc__method=method,
                                         server__address=spec.service, server__port=50051)
            client_name = spec.name
        else:
            verb, path = spec.name.split(" ", 1)
            attrs = dict(http__request__method=verb, server__address=spec.service, server__port=8080)
            client_name = verb
        timeout = step.timeout_ms if grpc else None
        with caller.child(None, _SCOPE[caller.pod.runtime].format(protocol), client_name, CLIENT,
                          **attrs, url__full=None if grpc else f"http://{spec.service}:8080{path}",
                          http__request__resend_count=(attempt or None) if not grpc else None) as client:
            self.cpu[id(client)] = 0.1
            if timeout is not None:
                client.set(**{"rpc__grpc__request__metadata__grpc-timeout": [f"{int(timeout)}m"]})
            self._wire(client, caller.pod)
            server_attrs = dict(attrs, http__route=None if grpc else path)
            with client.child(callee, _SCOPE[callee.runtime].format(protocol), spec.name, SERVER,
                              **server_attrs) as server:
                self.cpu[id(server)] = spec.cpu
                if transient:
                    self.work(server, 0.3)
                else:
                    self._serve(server, spec)
            self._wire(client, callee)
            late = timeout is not None and client.now - client.start > timeout * MS
            if late:
                client.deadline = client.start + int(timeout * MS)
        if transient:
            for op, code in ((server, 14), (client, 14)):
                op.attributes["rpc.grpc.status_code" if grpc else "http.response.status_code"] = (
                    code if grpc else 503)
                op.error("UNAVAILABLE" if grpc else "503")
            return False
        if late:
            for op in (server, client):
                op.attributes["rpc.grpc.status_code"] = 4
                op.error("DEADLINE_EXCEEDED")
            return False
        return True

    def _wire(self, client: Op, sender: DeepPod) -> None:
        """One leg of a call on the network; a delayed pod's packets wait out the delay."""
        self.work(client, 0.25)
        f = self.fault
        if f is not None and f.kind == "network-delay" and sender is f.pod:
            client.wait(f.delay_ms * self.rng.uniform(0.9, 1.1))
            self.trace.cause(client)

    def _serve(self, server: Op, spec: OpSpec) -> None:
        tail = min(self.rng.paretovariate(HUB_TAIL / self.load), 40.0) * self.load if spec.heavy else 1.0
        self.work(server, spec.work_ms * 0.4 * tail)
        f = self.fault
        if self.active and f is not None and f.service == spec.service and f.kind in (
                "slow-dependency", "slow-leaf", "retry-amplification"):
            slow = spec.work_ms * f.factor if f.kind != "retry-amplification" else f.delay_ms
            server.wait(slow * math.exp(self.rng.gauss(0.0, 0.2)))
            self.trace.cause(server)
        self._steps(server, spec.steps)
        self.work(server, spec.work_ms * 0.6 * tail)


def _inject(kind: DeepKind, variant: int, pods: dict[str, list[DeepPod]], rng: random.Random) -> Injected:
    service = kind.variants[variant % len(kind.variants)]
    pod = rng.choice(pods[service])
    if kind.name == "network-delay":
        return Injected(kind.name, service, pod, delay_ms=rng.uniform(40, 120))
    if kind.name == "cpu-contention":
        return Injected(kind.name, service, pod, factor=rng.uniform(2.5, 5.0), node_factor=rng.uniform(1.2, 1.6))
    if kind.name == "retry-amplification":
        return Injected(kind.name, service, pod, delay_ms=rng.uniform(240, 420))
    return Injected(kind.name, service, pod, factor=rng.uniform(20, 60))


def simulate(seed_key: str, start_ns: int, count: int, pods: dict[str, list[DeepPod]],
             fault: Injected | None) -> list[SimTrace]:
    """``count`` requests from ``start_ns`` in the usual mix; with a fault, each meets it (if it reaches
    the target) with the case's probability."""
    rng = random.Random(seed_key)
    rate = rng.uniform(0.3, 0.6)
    traces, now, load = [], start_ns, 1.0
    for i in range(count):
        if i % PERIOD == 0:   # busy and quiet periods: the hubs, shared by everyone, feel them most
            load = math.exp(rng.gauss(0.0, HUB_LOAD_SIGMA))
        now += int(rng.expovariate(1 / MEAN_GAP_MS) * 1e6)
        active = fault is not None and rng.random() < rate
        # the usual mix either way: a fault changes how requests go, not which requests come
        flow = rng.choices(list(MIX), weights=list(MIX.values()))[0]
        trace = SimTrace(random.Random(rng.getrandbits(64)), now)
        walk = Walk(trace, pods, fault, active, load)
        walk.run(flow)
        for op, extra in walk.stretched.items():
            if extra >= MIN_STRETCH_MS:
                if fault is not None and op.pod is fault.pod:
                    trace.cause(op)
                else:
                    trace.symptom(op)
        traces.append(trace)
    return traces


def label(kind: DeepKind, fault: Injected, inject_ns: int, traces: list[SimTrace]) -> dict[str, Any]:
    causes: list[Op] = []
    symptoms: list[Op] = []
    affected = 0
    for trace in traces:
        c, s = trace.labelled()
        if c:
            affected += 1
            causes += c
            symptoms += [op for op in s if op not in c]
        else:
            symptoms += trace.symptoms
    root = {"service": fault.service, "pod": fault.pod.name, "node": fault.pod.node, "fault": kind.name,
            "layer": "infrastructure", "silent": False, "target": fault.service,
            "span_ids": [op.span_id.hex() for op in causes]}
    params = {"delay_ms": round(fault.delay_ms, 1), "factor": round(fault.factor, 2),
              "node_factor": round(fault.node_factor, 2)}
    root["parameters"] = {k: v for k, v in params.items() if v not in (0.0, 1.0)}
    return case_label(root, symptoms, inject_ns, kind.summary, traces, affected)


def write_dataset(out: str | Path, seed: int = 1, traces_per_case: int = 40, cases_per_kind: int = 2,
                  baseline_traces: int = 400, kinds: tuple[DeepKind, ...] = KINDS) -> Written:
    """The deep system's labelled dataset, in the layout of ``writer.write_dataset``."""
    check_graph()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    pods = build_pods(seed)
    baseline = simulate(f"deep/{seed}/baseline", EPOCH_NS, baseline_traces, pods, None)
    spans = write_traces(root / "baseline" / "traces.jsonl.gz", baseline)

    def case(kind: DeepKind, n: int, case_id: str, inject: int) -> tuple[list[SimTrace], dict[str, Any]]:
        fault = _inject(kind, n, pods, random.Random(f"deep/{seed}/{case_id}/fault"))
        traces = simulate(f"deep/{seed}/{case_id}", inject, traces_per_case, pods, fault)
        return traces, label(kind, fault, inject, traces)

    cases = write_cases(root, kinds, cases_per_kind, case)
    meta = {"name": "demo-deep", "level": "span", "cases": cases.cases, "seed": seed,
            "generator": "faulttrace demo --write-dataset --topology deep", "traces_per_case": traces_per_case,
            "baseline_traces": len(baseline), "spans": spans + cases.spans,
            "kinds": [{"fault": k.name, "layer": "infrastructure", "silent": False, "summary": k.summary}
                      for k in kinds],
            "signals": "OTLP spans (http, rpc, db attributes), k8s pod and node resource attributes",
            "services": len(SERVICES), "nodes": len(NODES),
            "pods": dict(Counter(p.node for ps in pods.values() for p in ps))}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Written(root, cases.cases, len(baseline) + cases.traces, spans + cases.spans, cases.affected)
