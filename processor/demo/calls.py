"""How the demo shop's services call each other and their backends, with the spans each call leaves.

``Request`` is one trace in the making: it routes each service to a pod and
builds the spans of a call the way OpenTelemetry instrumentations would —
an HTTP or gRPC client span in the caller and a server span in the callee,
a database client span (``db.*``), a client span alone for an external API
whose server is not instrumented.  Faults of the network and of the pods
(DNS, refused connections, latency, timeouts, throttled CPU) are applied
here, where the call is made; the services' own faults are in their code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from processor.demo.faults import Fault
from processor.demo.simtrace import CLIENT, SERVER, Op, SimError, SimTrace
from processor.demo.topology import Cluster, Pod

T = TypeVar("T")

_HTTP_PORTS = {"assistant": 8000}    # HTTP listens on 8080 unless said here; gRPC on 50051
GRPC_PORT = 50051
_SCOPES = {"nodejs": "@opentelemetry/instrumentation-{}", "python": "opentelemetry.instrumentation.{}",
           "go": "go.opentelemetry.io/contrib/instrumentation/{}", "java": "io.opentelemetry.{}"}
_REFUSED = {"nodejs": ("Error", "connect ECONNREFUSED {}:{}"),
            "python": ("httpx.ConnectError", "[Errno 111] Connection refused ({}:{})"),
            "go": ("*net.OpError", "dial tcp {}:{}: connect: connection refused"),
            "java": ("java.net.ConnectException", "Connection refused: {}/{}")}
_DNS = {"nodejs": ("Error", "getaddrinfo ENOTFOUND {}"),
        "python": ("httpx.ConnectError", "[Errno -3] Temporary failure in name resolution ({})"),
        "go": ("*net.DNSError", "lookup {} on 10.96.0.10:53: no such host"),
        "java": ("java.net.UnknownHostException", "{}: Name or service not known")}

_TIMEOUT = {"nodejs": ("TimeoutError", "The operation was aborted due to timeout ({service}, {ms} ms)"),
            "python": ("TimeoutError", "call to {service} timed out after {ms} ms"),
            "go": ("context.deadlineExceededError", "context deadline exceeded ({service}, {ms}ms)"),
            "java": ("java.util.concurrent.TimeoutException", "call to {service} timed out after {ms} ms")}


def scope(pod: Pod, library: str) -> str:
    return _SCOPES[pod.runtime].format(library)


@dataclass
class Request:
    """One request through the shop: its trace, where each service runs, the fault as it stands."""

    trace: SimTrace
    cluster: Cluster
    fault: Fault
    user: str
    routes: dict[str, Pod] = field(default_factory=dict)
    canary: dict[str, Pod] = field(default_factory=dict)      # service -> pod of a rollout this request hits

    @property
    def rng(self) -> random.Random:
        return self.trace.rng

    def pod(self, service: str) -> Pod:
        if service not in self.routes:
            if service in self.canary:
                self.routes[service] = self.canary[service]
            else:
                self.routes[service] = self.cluster.pick(service, self.rng)
        return self.routes[service]

    # --- service to service ------------------------------------------------------------------------
    def http(self, caller: Op, service: str, method: str, route: str, path: str,
             handler: Callable[[Op], T], *, timeout_ms: float | None = None, attempt: int = 0) -> T:
        """An HTTP call from ``caller`` to ``service``: client span, then the callee's server span."""
        callee = self.pod(service)
        port = _HTTP_PORTS.get(service, 8080)
        with caller.child(None, scope(caller.pod, "http"), method, CLIENT,
                          http__request__method=method, url__full=f"http://{service}:{port}{path}",
                          server__address=service, server__port=port, network__protocol__version="1.1",
                          http__request__resend_count=attempt or None) as client:
            if timeout_ms is not None:
                client.set(app__http__client__timeout_ms=timeout_ms)
            self._network(client, caller.service, service)
            with client.child(callee, scope(callee, "http"), f"{method} {route}", SERVER,
                              http__request__method=method, http__route=route, url__path=path.split("?")[0],
                              url__scheme="http", server__address=service, server__port=port,
                              client__address=f"10.0.{self.rng.randint(1, 3)}.{self.rng.randint(2, 250)}",
                              network__protocol__version="1.1") as server:
                server.work(0.3)
                result = handler(server)
                server.work(0.2)
            self._network(client, caller.service, service)
            size = server.attributes.get("http.response.body.size")
            if size is not None:
                client.set(http__response__body__size=size)
            status = server.attributes.get("http.response.status_code", 200)
            client.set(http__response__status_code=status)
            if status >= 400:  # an answer the caller's code takes in its stride: the client span says so
                client.error(str(status))
            self._give_up(client, timeout_ms)
        self._timed_out(client, service)
        return result

    def grpc(self, caller: Op, service: str, rpc_service: str, method: str, handler: Callable[[Op], T],
             *, timeout: str = "", attempt: int = 0) -> T:
        """A gRPC call: client span named ``pkg.Service/Method``, then the callee's server span."""
        callee = self.pod(service)
        name = f"{rpc_service}/{method}"
        with caller.child(None, scope(caller.pod, "grpc"), name, CLIENT, rpc__system="grpc",
                          rpc__service=rpc_service, rpc__method=method, server__address=service,
                          server__port=GRPC_PORT) as client:
            if timeout:
                client.set(**{"rpc__grpc__request__metadata__grpc-timeout": [timeout]})
            self._network(client, caller.service, service)
            with client.child(callee, scope(callee, "grpc"), name, SERVER, rpc__system="grpc",
                              rpc__service=rpc_service, rpc__method=method,
                              server__address=service, server__port=GRPC_PORT) as server:
                server.work(0.2)
                result = handler(server)
                server.work(0.15)
            self._network(client, caller.service, service)
            client.set(rpc__grpc__status_code=server.attributes.get("rpc.grpc.status_code", 0))
            self._give_up(client, _grpc_timeout_ms(timeout))
        self._timed_out(client, service)
        return result

    def connect(self, caller: Op, service: str, method: str, path: str, *, attempt: int = 0) -> None:
        """A client span whose connection was refused (the callee's pod is restarting): raises."""
        port = _HTTP_PORTS.get(service, 8080)
        with caller.child(None, scope(caller.pod, "http"), method, CLIENT, http__request__method=method,
                          url__full=f"http://{service}:{port}{path}", server__address=service, server__port=port,
                          network__protocol__version="1.1", http__request__resend_count=attempt or None) as client:
            client.work(1.2)
            type_name, message = _REFUSED[caller.pod.runtime]
            raise SimError(type_name, message.format(service, port), cause=True,
                           frames=((f"/app/{caller.service}/clients.py", 57, "send",
                                    "resp = await self._http.send(req)"),))

    def _network(self, client: Op, source: str, target: str) -> None:
        """One way of a call between two services; packet loss there adds retransmission delays."""
        client.work(0.25)
        lossy = self.fault.at("network-latency", f"{source}>{target}")
        if lossy:
            client.wait(self.rng.uniform(100, 500))
            self.trace.cause(client)

    def _give_up(self, client: Op, timeout_ms: float | None) -> None:
        """A client whose timeout expires before the answer stops waiting (the callee runs on): its span
        ends at the timeout, cancelled; the caller's code raises."""
        if timeout_ms is not None and client.now - client.start > timeout_ms * 1e6:
            client.deadline = client.start + int(timeout_ms * 1e6)
            client.attributes.pop("http.response.status_code", None)
            client.attributes.pop("http.response.body.size", None)
            client.attributes.pop("rpc.grpc.status_code", None)

    def _timed_out(self, client: Op, service: str) -> None:
        """The caller's code raises when its call was cut at the timeout it set on the client."""
        if not client.timed_out:
            return
        fault = self.fault.at("short-timeout") is not None
        if fault:
            self.trace.cause(client)
        ms = (client.end - client.start) / 1e6 if client.end else 0
        type_name, message = _TIMEOUT[client.pod.runtime]
        raise SimError(type_name, message.format(service=service, ms=round(ms)), http_status=504, grpc_code=4,
                       fault=fault, frames=((f"/app/{client.service}/clients.py", 73, "call",
                                             "return await asyncio.wait_for(stub(request), timeout)"),))

    # --- backends ------------------------------------------------------------------------------------
    def db(self, caller: Op, system: str, operation: str, collection: str | None, query: str,
           **attributes: Any) -> Op:
        """A database client span (``with``); the caller does its work and sets returned rows."""
        name = f"{operation} {collection}" if collection else operation
        server = {"postgresql": ("postgres-primary.shop.svc", 5432), "redis": ("redis-master.shop.svc", 6379),
                  "elasticsearch": ("search-es-http.shop.svc", 9200), "qdrant": ("qdrant.shop.svc", 6333),
                  "mysql": ("mysql.shop.svc", 3306)}[system]
        return caller.child(None, scope(caller.pod, system), name, CLIENT, db__system__name=system,
                            db__system=system, db__operation__name=operation, db__collection__name=collection,
                            db__query__text=query, server__address=server[0], server__port=server[1],
                            **attributes)

    def external(self, caller: Op, host: str, method: str, path: str, ms: float, *, attempt: int = 0,
                 **attributes: Any) -> Op:
        """A client span to a third-party API (its server is not ours: no server span). Not yet ended:
        the caller's code sets the status; a host that does not resolve raises here."""
        client = caller.child(None, scope(caller.pod, "http"), method, CLIENT, http__request__method=method,
                              url__full=f"https://{host}{path}", server__address=host, server__port=443,
                              network__protocol__version="1.1", http__request__resend_count=attempt or None,
                              **attributes)
        if self.fault.at("dns-failure", host):
            client.work(4)
            type_name, message = _DNS[caller.pod.runtime]
            with client:
                raise SimError(type_name, message.format(host), cause=True,
                               frames=((f"/app/{caller.service}/clients.py", 41, "post",
                                        "return await self._http.post(url, json=body)"),))
        client.work(ms, sigma=0.35)
        return client


def _grpc_timeout_ms(timeout: str) -> float | None:
    if not timeout:
        return None
    units = {"m": 1.0, "S": 1000.0, "M": 60000.0}
    return float(timeout[:-1]) * units[timeout[-1]]


def retry(attempts: int, call: Callable[[int], T], on_error: Callable[[int, SimError], None]) -> T:
    """``call(attempt)`` until it returns; ``on_error`` (a backoff) between failures; the last error escapes."""
    for attempt in range(attempts):
        try:
            return call(attempt)
        except SimError as err:
            if attempt + 1 == attempts:
                raise
            on_error(attempt, err)
    raise AssertionError("unreachable")
