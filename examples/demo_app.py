#!/usr/bin/env python3
"""A small simulated shop that sends OpenTelemetry traces, with faults on demand.

Five services call each other for every checkout::

    frontend  POST /api/checkout                      (HTTP server)
    └─ checkout  POST /checkout                        (HTTP)
       ├─ cart       shop.CartService/GetCart          (gRPC) ─ redis GET, postgresql SELECT
       ├─ inventory  POST /inventory/reserve           (HTTP) ─ postgresql SELECT … FOR UPDATE, UPDATE
       ├─ checkout   calculate order total             (in-process)
       ├─ payment    shop.PaymentService/Charge        (gRPC) ─ HTTPS POST to the card gateway
       └─ checkout   INSERT orders                     (postgresql)

Spans carry semantic-convention attributes (http.*, rpc.*, db.*, server.*,
error.type) and each service has its own resource (service.name, k8s.pod.name,
host.name, ...), so the traces look like those of an instrumented system.
Time is simulated: span timestamps are computed rather than slept, so a "3 s
database stall" costs no wall time and every run is reproducible with --seed.

Faults (--fault), each with one origin span:

    none              healthy traffic
    db-slow           inventory's SELECT … FOR UPDATE waits 1.5-3 s on a row lock
    payment-error     payment's call to the card gateway fails (HTTP 503); the error
                      propagates up through payment, checkout and frontend
    cache-miss-storm  cart's redis GET misses; cart falls back to one postgresql
                      query per item (N+1), making the cart call slow
    retry-storm       inventory's connection pool is exhausted; checkout retries
                      the reserve call several times (http.request.resend_count)
    cpu-hog           checkout's in-process "calculate order total" burns 0.8-2 s
                      of CPU (extra self time)

An error is recorded at its origin as an `exception` event with status ERROR;
every caller it propagates through gets status ERROR and error.type, without an
exception event of its own.  A slowdown is extra self time at the origin.

Usage::

    pip install '.[demo]'    # the OpenTelemetry SDK and OTLP/gRPC exporter (or opentelemetry-sdk
                             # opentelemetry-exporter-otlp-proto-grpc); already there with .[test]
    python examples/demo_app.py --fault payment-error --traces 20
    python examples/demo_app.py --endpoint faulttrace:4317 --fault db-slow --fault-ratio 0.2 --traces 0

The endpoint is --endpoint, else OTEL_EXPORTER_OTLP_ENDPOINT, else
127.0.0.1:4317 (OTLP/gRPC; plaintext unless it starts with https://).
One line per trace is printed: its trace id and the span expected to be blamed.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from types import TracebackType

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as _missing:
    # faulttrace itself needs only opentelemetry-proto; this app is instrumented with the SDK,
    # which `pip install .` does not bring.  Say what to install instead of a bare traceback.
    sys.exit(f"demo_app.py needs the OpenTelemetry SDK and its OTLP/gRPC exporter ({_missing}).\n"
             "Install them with:  pip install '.[demo]'   (from the repository)\n"
             "               or:  pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc")

FAULTS = ("none", "db-slow", "payment-error", "cache-miss-storm", "retry-storm", "cpu-hog")
SCOPE_VERSION = "0.1.0"
GRPC_UNAVAILABLE = 14

# service -> (version, pod, node): one resource per service, as separate processes would have.
SERVICES = {
    "frontend": ("2.4.1", "frontend-7c9d5b8f6-qk2lm", "node-a"),
    "checkout": ("1.18.0", "checkout-5f8b7c9d4-x7p2r", "node-b"),
    "cart": ("1.6.3", "cart-6d4f9b7c8-m3n8t", "node-a"),
    "inventory": ("3.1.0", "inventory-84b6c7d9f-z5w1v", "node-c"),
    "payment": ("0.9.7", "payment-9c7d8b6f5-h4j6k", "node-b"),
}

PRODUCTS = ["SKU-1001", "SKU-1002", "SKU-2040", "SKU-3307", "SKU-4410", "SKU-5123", "SKU-6001"]


# --- errors the simulated services raise ---------------------------------------


class ShopError(Exception):
    """A failure inside the shop.  `origin` is set by the span that recorded it
    first, so callers mark themselves as failed without recording it again."""

    http_status = 500
    grpc_status = 2  # UNKNOWN
    origin: Expected | None = None


class PaymentGatewayError(ShopError):
    __module__ = "payment.gateway"  # exception.type as the payment service would report it
    http_status = 502
    grpc_status = GRPC_UNAVAILABLE


class ConnectionPoolExhausted(ShopError):
    __module__ = "inventory.db.pool"
    http_status = 503
    grpc_status = GRPC_UNAVAILABLE


# --- spans on a simulated clock ------------------------------------------------


class Op:
    """One span whose start and end are computed, not measured.

    Used as a context manager: ``with parent.call(...) as child:``.  Work done
    inside advances the span's own clock (`work`); when the span ends, its
    parent's clock moves to the child's end.  An exception leaving the block
    marks the span as failed (recording the exception only at its origin).
    """

    def __init__(self, shop: Shop, service: str, scope: str, name: str, kind: SpanKind,
                 protocol: str | None, attributes: dict, parent: Op | None, start_ns: int) -> None:
        self.shop, self.service, self.kind, self.protocol, self.parent = shop, service, kind, protocol, parent
        context = trace.set_span_in_context(parent.span) if parent else Context()
        self.now = start_ns
        self.span: Span = shop.tracer(service, scope).start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=start_ns)

    # time
    def work(self, ms: float, jitter: float = 0.25) -> None:
        """Advance this span's clock by about `ms` milliseconds of its own work."""
        self.now += int(ms * self.shop.rng.uniform(1 - jitter, 1 + jitter) * 1e6)

    # children
    def call(self, service: str, scope: str, name: str, kind: SpanKind, protocol: str | None = None,
             **attributes: object) -> Op:
        gap = 0.3 if kind in (SpanKind.SERVER, SpanKind.CONSUMER) else 0.05  # network vs. in-process
        start = self.now + int(self.shop.rng.uniform(0.5, 1.5) * gap * 1e6)
        return Op(self.shop, service, scope, name, kind, protocol,
                  {k.replace("__", "."): v for k, v in attributes.items()}, self, start)

    def set(self, **attributes: object) -> None:
        for key, value in attributes.items():
            self.span.set_attribute(key.replace("__", "."), value)

    # ending
    def __enter__(self) -> Op:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if isinstance(exc, ShopError):
            self._fail(exc)
        elif exc is None:
            self._succeed()
        self.span.end(end_time=self.now)
        if self.parent is not None:
            gap = 0.3 if self.kind in (SpanKind.SERVER, SpanKind.CONSUMER) else 0.02
            self.parent.now = max(self.parent.now, self.now + int(gap * 1e6))
        return False  # never swallow: the caller decides whether to handle it

    def _fail(self, exc: ShopError) -> None:
        if exc.origin is None:
            self.span.record_exception(exc, timestamp=self.now, escaped=True)
            exc.origin = Expected(self.service, self.span.name)
            description = f"{type(exc).__name__}: {exc}"
        else:
            description = f"call failed: {type(exc).__name__}"
        if self.protocol == "http":
            # A server answers 5xx; a client reports what it got back (and
            # keeps the code already set at the origin).
            if not self.span.attributes.get("http.response.status_code"):
                self.span.set_attribute("http.response.status_code", exc.http_status)
        elif self.protocol == "grpc":
            self.span.set_attribute("rpc.grpc.status_code", exc.grpc_status)
        self.span.set_attribute("error.type", type(exc).__name__)
        self.span.set_status(Status(StatusCode.ERROR, description))

    def _succeed(self) -> None:
        if self.protocol == "http" and "http.response.status_code" not in self.span.attributes:
            self.span.set_attribute("http.response.status_code", 200)
        elif self.protocol == "grpc" and "rpc.grpc.status_code" not in self.span.attributes:
            self.span.set_attribute("rpc.grpc.status_code", 0)


# --- the shop ------------------------------------------------------------------


@dataclass
class Expected:
    """What a correct root-cause localizer should blame in one trace."""

    service: str
    span: str

    def __str__(self) -> str:
        return f"{self.service} {self.span!r}"


class Shop:
    """The five services (one tracer provider and resource each) and one checkout's call flow."""

    def __init__(self, endpoint: str, seed: int | None) -> None:
        self.rng = random.Random(seed)
        self.providers: dict[str, TracerProvider] = {}
        self._tracers: dict[tuple[str, str], trace.Tracer] = {}
        insecure = not endpoint.startswith("https://")
        for service, (version, pod, node) in SERVICES.items():
            resource = Resource.create({
                "service.name": service,
                "service.namespace": "shop",
                "service.version": version,
                "service.instance.id": pod,
                "deployment.environment.name": "demo",
                "k8s.namespace.name": "shop",
                "k8s.deployment.name": service,
                "k8s.pod.name": pod,
                "k8s.node.name": node,
                "host.name": node,
            })
            provider = TracerProvider(resource=resource)
            # One exporter per provider: each processor shuts its exporter down.
            provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, insecure=insecure), schedule_delay_millis=500))
            self.providers[service] = provider

    def tracer(self, service: str, scope: str) -> trace.Tracer:
        key = (service, scope)
        if key not in self._tracers:
            self._tracers[key] = self.providers[service].get_tracer(scope, SCOPE_VERSION)
        return self._tracers[key]

    def shutdown(self) -> None:
        for provider in self.providers.values():
            provider.shutdown()  # flushes what is still buffered

    # One checkout request, start to end.
    def checkout(self, fault: str) -> tuple[str, Expected | None]:
        items = self.rng.sample(PRODUCTS, self.rng.randint(1, 4))
        user = f"user-{self.rng.randint(1000, 9999)}"
        expected: Expected | None = None
        root = Op(self, "frontend", "demo.http.server", "POST /api/checkout", SpanKind.SERVER, "http",
                  {"http.request.method": "POST", "http.route": "/api/checkout", "url.path": "/api/checkout",
                   "url.scheme": "https", "server.address": "shop.example.com", "server.port": 443,
                   "client.address": f"203.0.113.{self.rng.randint(1, 254)}",
                   "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                   "network.protocol.version": "1.1", "enduser.id": user},
                  None, time.time_ns())
        trace_id = format(root.span.get_span_context().trace_id, "032x")
        try:
            with root:
                root.work(2)
                with root.call("frontend", "demo.http.client", "POST", SpanKind.CLIENT, "http",
                               http__request__method="POST", url__full="http://checkout:8080/checkout",
                               server__address="checkout", server__port=8080) as client:
                    with client.call("checkout", "demo.http.server", "POST /checkout", SpanKind.SERVER, "http",
                                     http__request__method="POST", http__route="/checkout",
                                     url__path="/checkout", url__scheme="http", server__address="checkout",
                                     server__port=8080) as server:
                        expected = self._checkout_service(server, fault, user, items)
                root.work(1.5)
        except ShopError as exc:
            expected = exc.origin  # already on the spans: the request failed
        return trace_id, expected

    def _checkout_service(self, op: Op, fault: str, user: str, items: list[str]) -> Expected | None:
        expected: Expected | None = None
        op.work(1)
        expected = self._cart(op, fault, user, items) or expected
        expected = self._reserve_with_retries(op, fault, items) or expected
        with op.call("checkout", "demo.app", "calculate order total", SpanKind.INTERNAL,
                     code__function__name="checkout.pricing.calculate_total",
                     thread__name="worker-3") as calc:
            calc.work(3)
            if fault == "cpu-hog":
                calc.work(self.rng.uniform(800, 2000), jitter=0)
                expected = Expected("checkout", "calculate order total")
        expected = self._charge(op, fault, user) or expected
        with op.call("checkout", "demo.db", "INSERT orders", SpanKind.CLIENT, "db",
                     db__system__name="postgresql", db__namespace="shop", db__collection__name="orders",
                     db__operation__name="INSERT",
                     db__query__text="INSERT INTO orders (user_id, items, total) VALUES ($1, $2, $3)",
                     server__address="postgres", server__port=5432) as db:
            db.work(4)
        op.work(0.8)
        return expected

    def _cart(self, parent: Op, fault: str, user: str, items: list[str]) -> Expected | None:
        expected = None
        with parent.call("checkout", "demo.grpc.client", "shop.CartService/GetCart", SpanKind.CLIENT, "grpc",
                         rpc__system="grpc", rpc__service="shop.CartService", rpc__method="GetCart",
                         server__address="cart", server__port=50051) as client:
            with client.call("cart", "demo.grpc.server", "shop.CartService/GetCart", SpanKind.SERVER, "grpc",
                             rpc__system="grpc", rpc__service="shop.CartService",
                             rpc__method="GetCart") as server:
                server.work(0.5)
                miss = fault == "cache-miss-storm"
                with server.call("cart", "demo.db", "GET", SpanKind.CLIENT, "db",
                                 db__system__name="redis", db__operation__name="GET",
                                 db__query__text=f"GET cart:{user}", db__namespace="0",
                                 server__address="redis", server__port=6379) as cache:
                    cache.work(0.4)
                    cache.set(db__response__returned_rows=0 if miss else 1)
                if miss:
                    # Cold cache: one query per line item instead of one cached read.
                    for _ in range(self.rng.randint(25, 40)):
                        with server.call("cart", "demo.db", "SELECT cart_items", SpanKind.CLIENT, "db",
                                         db__system__name="postgresql", db__namespace="shop",
                                         db__collection__name="cart_items", db__operation__name="SELECT",
                                         db__query__text="SELECT * FROM cart_items WHERE user_id = $1 "
                                                         "AND line = $2",
                                         server__address="postgres", server__port=5432) as db:
                            db.work(self.rng.uniform(8, 15))
                        server.work(0.2)
                    expected = Expected("cart", "shop.CartService/GetCart")  # N+1 after a miss
                else:
                    with server.call("cart", "demo.db", "SELECT products", SpanKind.CLIENT, "db",
                                     db__system__name="postgresql", db__namespace="shop",
                                     db__collection__name="products", db__operation__name="SELECT",
                                     db__query__text="SELECT sku, price FROM products WHERE sku = ANY($1)",
                                     server__address="postgres", server__port=5432) as db:
                        db.work(3)
                        db.set(db__response__returned_rows=len(items))
                server.work(0.5)
        return expected

    def _reserve_with_retries(self, parent: Op, fault: str, items: list[str]) -> Expected | None:
        expected = None
        if fault == "retry-storm":
            failing_attempts = self.rng.randint(3, 6)
            # Most storms end in success one try later; some run out of attempts.
            max_attempts = failing_attempts + (1 if self.rng.random() < 0.7 else 0)
        else:
            failing_attempts, max_attempts = 0, 1
        for attempt in range(max_attempts):
            failing = attempt < failing_attempts
            try:
                with parent.call("checkout", "demo.http.client", "POST", SpanKind.CLIENT, "http",
                                 http__request__method="POST", url__full="http://inventory:8080/inventory/reserve",
                                 server__address="inventory", server__port=8080) as client:
                    if attempt:
                        client.set(http__request__resend_count=attempt)
                    with client.call("inventory", "demo.http.server", "POST /inventory/reserve", SpanKind.SERVER,
                                     "http", http__request__method="POST", http__route="/inventory/reserve",
                                     url__path="/inventory/reserve", url__scheme="http",
                                     server__address="inventory", server__port=8080) as server:
                        return self._inventory(server, fault, items, failing) or expected
            except ConnectionPoolExhausted as exc:
                expected = exc.origin
                if attempt + 1 == max_attempts:
                    raise
                parent.work(min(25 * 2 ** attempt, 200), jitter=0.1)  # backoff before the next try
        return expected

    def _inventory(self, op: Op, fault: str, items: list[str], pool_exhausted: bool) -> Expected | None:
        expected = None
        op.work(0.6)
        with op.call("inventory", "demo.db", "db.connection.acquire", SpanKind.INTERNAL,
                     db__system__name="postgresql", db__client__connection__pool__name="inventory-pool",
                     server__address="postgres", server__port=5432) as acquire:
            if pool_exhausted:
                acquire.work(250, jitter=0.05)  # the pool's acquire timeout
                raise ConnectionPoolExhausted("timed out after 250ms waiting for a connection "
                                              "(pool inventory-pool: 20/20 in use)")
            acquire.work(0.2)
        with op.call("inventory", "demo.db", "SELECT stock", SpanKind.CLIENT, "db",
                     db__system__name="postgresql", db__namespace="shop", db__collection__name="stock",
                     db__operation__name="SELECT",
                     db__query__text="SELECT sku, quantity FROM stock WHERE sku = ANY($1) FOR UPDATE",
                     server__address="postgres", server__port=5432) as db:
            db.work(2.5)
            if fault == "db-slow":
                db.work(self.rng.uniform(1500, 3000), jitter=0)  # waiting on a row lock
                expected = Expected("inventory", "SELECT stock")
            db.set(db__response__returned_rows=len(items))
        with op.call("inventory", "demo.db", "UPDATE stock", SpanKind.CLIENT, "db",
                     db__system__name="postgresql", db__namespace="shop", db__collection__name="stock",
                     db__operation__name="UPDATE",
                     db__query__text="UPDATE stock SET quantity = quantity - $2 WHERE sku = $1",
                     server__address="postgres", server__port=5432) as db:
            db.work(1.8)
        op.work(0.5)
        return expected

    def _charge(self, parent: Op, fault: str, user: str) -> Expected | None:
        with parent.call("checkout", "demo.grpc.client", "shop.PaymentService/Charge", SpanKind.CLIENT, "grpc",
                         rpc__system="grpc", rpc__service="shop.PaymentService", rpc__method="Charge",
                         server__address="payment", server__port=50051) as client:
            with client.call("payment", "demo.grpc.server", "shop.PaymentService/Charge", SpanKind.SERVER,
                             "grpc", rpc__system="grpc", rpc__service="shop.PaymentService",
                             rpc__method="Charge") as server:
                server.work(1.2)
                with server.call("payment", "demo.http.client", "POST", SpanKind.CLIENT, "http",
                                 http__request__method="POST",
                                 url__full="https://api.cardgateway.example/v2/charges",
                                 server__address="api.cardgateway.example", server__port=443,
                                 peer__service="card-gateway") as gateway:
                    gateway.work(self.rng.uniform(60, 120), jitter=0)
                    if fault == "payment-error":
                        gateway.set(http__response__status_code=503)
                        raise PaymentGatewayError(f"card gateway returned 503 Service Unavailable "
                                                  f"for charge of {user}")
                server.work(0.8)
        return None


# --- command line ----------------------------------------------------------------


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Simulated shop that sends OTLP traces with injected faults.")
    parser.add_argument("--endpoint", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"),
                        help="OTLP/gRPC endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT or 127.0.0.1:4317)")
    parser.add_argument("--fault", choices=FAULTS, default="none", help="fault to inject (default: none)")
    parser.add_argument("--fault-ratio", type=float, default=1.0, metavar="P",
                        help="share of traces that get the fault, 0..1 (default 1); the rest are healthy")
    parser.add_argument("--traces", type=int, default=20, metavar="N",
                        help="number of traces to send; 0 runs until interrupted (default 20)")
    parser.add_argument("--rate", type=float, default=10.0, metavar="R",
                        help="traces per second (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed for a reproducible run")
    parser.add_argument("--quiet", action="store_true", help="no line per trace")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fault_ratio <= 1.0:
        parser.error("--fault-ratio must be between 0 and 1")
    if args.rate <= 0 or args.traces < 0:
        parser.error("--rate must be positive and --traces at least 0")

    # SIGTERM (docker stop) ends the loop like Ctrl-C, so buffered spans are flushed.
    signal.signal(signal.SIGTERM, _stop)

    shop = Shop(args.endpoint, args.seed)
    print(f"sending {args.traces or 'unlimited'} traces at {args.rate:g}/s to {args.endpoint}, "
          f"fault: {args.fault} (ratio {args.fault_ratio:g})", file=sys.stderr)
    sent = 0
    next_at = time.monotonic()
    try:
        while args.traces == 0 or sent < args.traces:
            fault = args.fault if shop.rng.random() < args.fault_ratio else "none"
            trace_id, expected = shop.checkout(fault)
            sent += 1
            if not args.quiet:
                blame = f"expected root cause: {expected}" if expected else "healthy"
                print(f"trace {trace_id} fault={fault} {blame}", flush=True)
            next_at += 1.0 / args.rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        shop.shutdown()
    print(f"sent {sent} traces", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
