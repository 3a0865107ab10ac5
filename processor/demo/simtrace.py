"""Spans on a simulated clock: one trace's span tree, built as OTLP protobuf.

``SimTrace`` holds one request's spans; ``Op`` is one span whose start and end
are computed, not measured (no sleeping): work advances the span's own clock,
a child starts when its parent's clock says and moves the parent's clock to
its end.  An ``Op`` is a context manager; a ``SimError`` leaving it marks the
span failed the way OpenTelemetry instrumentations do: status ERROR with an
``exception`` event at the origin, status ERROR and ``error.type`` on every
span it propagates through (HTTP and gRPC status codes per the semantic
conventions: a server answering 4xx is not in error, its client is).

The trace also records the ground truth: the spans where an injected fault
originates (``cause``) and the spans that only show it (``symptom``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.demo.topology import Pod
from processor.otlp.spanedit import key_values

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = (Span.SPAN_KIND_INTERNAL, Span.SPAN_KIND_SERVER,
                                               Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER,
                                               Span.SPAN_KIND_CONSUMER)
MS = 1_000_000
# gRPC codes a server span reports as an error (semantic conventions, rpc spans)
_GRPC_SERVER_ERRORS = {2, 4, 12, 13, 14, 15}


class SimError(Exception):
    """A failure inside a simulated service.

    ``type_name`` is exception.type as the service's runtime reports it;
    ``frames`` the innermost code locations, (file, line, function, source).
    ``fault`` is true when the failure follows from the injected fault, so the
    span that raises it is a symptom (or, with ``cause``, the fault's origin).
    """

    def __init__(self, type_name: str, message: str, *, http_status: int = 500, grpc_code: int = 2,
                 frames: tuple[tuple[str, int, str, str], ...] = (), fault: bool = False,
                 cause: bool = False) -> None:
        super().__init__(message)
        self.type_name, self.message = type_name, message
        self.http_status, self.grpc_code = http_status, grpc_code
        self.frames, self.fault, self.cause = frames, fault, cause
        self.recorded = False  # the origin's exception event is written once
        self.answered = False  # a server span has answered with it: clients report a status


def stacktrace(err: SimError, op: Op) -> str:
    """A Python-style traceback ending in the frames of ``err``, under the service's request handler."""
    service = op.pod.service
    outer = [(f"/app/{service}/server.py", 88, "handle", "response = await handler(request)")]
    frames = outer + list(err.frames or [(f"/app/{service}/handlers.py", 142, "run", "return self._run(ctx)")])
    lines = ["Traceback (most recent call last):"]
    for path, line, func, source in frames:
        lines.append(f'  File "{path}", line {line}, in {func}\n    {source}')
    lines.append(f"{err.type_name}: {err.message}")
    return "\n".join(lines)


@dataclass
class Event:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass
class SimTrace:
    """One request's spans, ids drawn from ``rng`` (deterministic per seed), and its ground truth."""

    rng: random.Random
    start_ns: int
    throttle: Callable[[Op, float], float] = lambda op, ms: 0.0   # ms a throttled CPU adds to ms of a span's work
    trace_id: bytes = b""
    spans: list[Op] = field(default_factory=list)
    causes: list[Op] = field(default_factory=list)
    symptoms: list[Op] = field(default_factory=list)
    stretched: dict[Op, float] = field(default_factory=dict)   # ms a throttled CPU added to each span's work

    def __post_init__(self) -> None:
        self.trace_id = self.rng.getrandbits(128).to_bytes(16, "big")

    def span_id(self) -> bytes:
        return (self.rng.getrandbits(64) or 1).to_bytes(8, "big")  # all zeros is not a valid id

    def root(self, pod: Pod, scope: str, name: str, kind: int, **attributes: Any) -> Op:
        return Op(self, pod, scope, name, kind, _attrs(attributes), None, self.start_ns)

    def cause(self, op: Op) -> None:
        if op not in self.causes:
            self.causes.append(op)

    def symptom(self, op: Op) -> None:
        if op not in self.symptoms:
            self.symptoms.append(op)

    def labelled(self) -> tuple[list[Op], list[Op]]:
        """(causes, symptoms): symptoms are the marked spans and every ancestor of a cause or a
        marked span (the path the fault's error or delay travelled up), causes excluded."""
        out: list[Op] = []
        for op in [*self.causes, *self.symptoms]:
            node: Op | None = op if op in self.symptoms else op.parent
            while node is not None:
                if node not in out and node not in self.causes:
                    out.append(node)
                node = node.parent
        return list(self.causes), out


def _attrs(attributes: dict[str, Any]) -> dict[str, Any]:
    """``http__route=...`` keyword arguments as ``http.route`` keys; None values dropped."""
    return {k.replace("__", "."): v for k, v in attributes.items() if v is not None}


class Op:
    """One span on the simulated clock; see the module docstring."""

    def __init__(self, trace: SimTrace, pod: Pod, scope: str, name: str, kind: int, attributes: dict[str, Any],
                 parent: Op | None, start_ns: int) -> None:
        self.trace, self.pod, self.scope, self.name, self.kind = trace, pod, scope, name, kind
        self.attributes = attributes
        self.parent = parent
        self.span_id = trace.span_id()
        self.start = self.now = start_ns
        self.end: int | None = None
        self.deadline: int | None = None   # a client that gives up: the span ends here at the latest
        self.timed_out = False
        self.events: list[Event] = []
        self.status_code, self.status_message = Status.STATUS_CODE_UNSET, ""
        trace.spans.append(self)

    @property
    def service(self) -> str:
        return self.pod.service

    # --- time --------------------------------------------------------------------
    def work(self, ms: float, sigma: float = 0.3) -> float:
        """About ``ms`` milliseconds of this span's own work (lognormal around it), plus what a
        throttled CPU adds to it; returns the milliseconds spent."""
        spent = ms * math.exp(self.trace.rng.gauss(0.0, sigma))
        extra = self.trace.throttle(self, spent)
        if extra > 0:
            self.trace.stretched[self] = self.trace.stretched.get(self, 0.0) + extra
            spent += extra
        self.now += int(spent * MS)
        return spent

    def wait(self, ms: float) -> None:
        """Exactly ``ms`` milliseconds (a timer, a backoff, a lock wait: no CPU)."""
        self.now += int(ms * MS)

    # --- children ----------------------------------------------------------------
    def child(self, pod: Pod | None, scope: str, name: str, kind: int, **attributes: Any) -> Op:
        """A child span starting now: on ``pod`` (another process: a network hop later) or in-process."""
        remote = pod is not None and pod is not self.pod
        gap = self.trace.rng.uniform(0.15, 0.6) if remote else self.trace.rng.uniform(0.01, 0.06)
        return Op(self.trace, pod or self.pod, scope, name, kind, _attrs(attributes), self, self.now + int(gap * MS))

    @contextmanager
    def parallel(self) -> Iterator[Callable[[], None]]:
        """Fan-out: call the yielded function before each branch; branches start together and the
        span resumes when the last one ends."""
        t0, ends = self.now, [self.now]

        def branch() -> None:
            ends.append(self.now)
            self.now = t0 + int(self.trace.rng.uniform(0.02, 0.2) * MS)

        yield branch
        self.now = max(*ends, self.now)

    def set(self, **attributes: Any) -> None:
        self.attributes.update(_attrs(attributes))

    def event(self, name: str, **attributes: Any) -> None:
        self.events.append(Event(name, self.now, _attrs(attributes)))

    # --- ending ------------------------------------------------------------------
    def __enter__(self) -> Op:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if self.deadline is not None and self.now > self.deadline:
            self.now, self.timed_out = self.deadline, True
        if isinstance(exc, SimError):
            self.fail(exc)
        elif exc is None:
            self._succeed()
        self.end = self.now
        if self.parent is not None:
            remote = self.parent.pod is not self.pod
            gap = self.trace.rng.uniform(0.1, 0.4) if remote else 0.01
            self.parent.now = max(self.parent.now, self.end + int(gap * MS))
        return False  # never swallow: the caller's code decides whether it handles the error

    def fail(self, err: SimError) -> None:
        """Mark this span as failed by ``err``: the origin records the exception, the spans it
        travels through get the status their protocol gives them."""
        http = "http.request.method" in self.attributes
        grpc = self.attributes.get("rpc.system") == "grpc"
        code_name = err.type_name
        if http:
            status = self.attributes.setdefault("http.response.status_code", err.http_status)
            error = status >= 500 or (self.kind == CLIENT and status >= 400)
            code_name = str(status)
        elif grpc:
            code = self.attributes.setdefault("rpc.grpc.status_code", err.grpc_code)
            error = code in _GRPC_SERVER_ERRORS or (self.kind == CLIENT and code != 0)
            code_name = _GRPC_NAMES.get(code, str(code))
        else:
            error = True
        # A client that got an answer reports its status; one that got none (DNS, refused) raised here.
        record = error and not err.recorded and not (self.kind == CLIENT and err.answered)
        if self.kind == SERVER:
            err.answered = True
        if record:
            self.events.append(Event("exception", self.now, {
                "exception.type": err.type_name, "exception.message": err.message,
                "exception.stacktrace": stacktrace(err, self), "exception.escaped": True}))
            err.recorded = True
            if err.cause:
                self.trace.cause(self)
            elif err.fault:
                self.trace.symptom(self)
        if error:
            self.attributes["error.type"] = err.type_name if record or not (http or grpc) else code_name
            self.status_code = Status.STATUS_CODE_ERROR
            self.status_message = f"{err.type_name}: {err.message}" if record else ""

    def error(self, error_type: str, message: str = "") -> None:
        """Status ERROR without an exception: what an instrumentation records of a failed response."""
        self.attributes["error.type"] = error_type
        self.status_code, self.status_message = Status.STATUS_CODE_ERROR, message

    def _succeed(self) -> None:
        if self.timed_out:
            return  # cancelled: no answer to report
        if "http.request.method" in self.attributes:
            self.attributes.setdefault("http.response.status_code", 200)
        elif self.attributes.get("rpc.system") == "grpc":
            self.attributes.setdefault("rpc.grpc.status_code", 0)

    # --- protobuf ----------------------------------------------------------------
    def to_proto(self) -> Span:
        span = Span(trace_id=self.trace.trace_id, span_id=self.span_id, name=self.name, kind=self.kind,
                    start_time_unix_nano=self.start, end_time_unix_nano=self.end or self.now,
                    attributes=key_values(self.attributes),
                    status=Status(code=self.status_code, message=self.status_message))
        if self.parent is not None:
            span.parent_span_id = self.parent.span_id
        for e in self.events:
            span.events.add(time_unix_nano=e.time_ns, name=e.name, attributes=key_values(e.attributes))
        return span


_GRPC_NAMES = {1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
               8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION", 12: "UNIMPLEMENTED", 13: "INTERNAL",
               14: "UNAVAILABLE"}
