"""Test harness: a real Pipeline on its own event loop thread, configs, requests, comparisons.

Tests stay plain sync functions (no pytest-asyncio): ``RunningPipeline`` owns a
loop in a background thread, starts the pipeline there and hands back the
ports it bound (every server binds ``127.0.0.1:0``).  ``flatten`` and
``assert_same_spans`` are the collector testbed's correctness validator in
small: every span arrives exactly once, equal to what was sent, under the
same resource and scope.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import duckdb
import grpc
from google.protobuf import json_format, text_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.config import Config, parse_config
from processor.pipeline import Pipeline

T = TypeVar("T")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FAST_RETRY = {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed_time": "30s"}


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (for subprocesses that need fixed ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_dict(exporters: dict[str, Any], *, decision_wait: float = 0.2, processor: dict[str, Any] | None = None,
                grpc: dict[str, Any] | None = None, http: dict[str, Any] | None = None,
                shutdown_timeout: float = 10.0, metrics: str = "127.0.0.1:0") -> dict[str, Any]:
    """A collector-shaped config: both receivers on port 0, the given exporters, spans in
    memory (a test about the journal gives ``processor={"storage": {"path": …}}``)."""
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0", **(grpc or {})},
                                             "http": {"endpoint": "127.0.0.1:0", **(http or {})}}}},
        # No rule library, no localizer: these tests are about the lossless data path, so
        # nothing may annotate.  Releases every 50 ms keep the tests fast.  In memory: two
        # pipelines of one process must not share the default journal (DuckDB lets them).
        "processors": {"faulttrace": {"decision_wait": decision_wait, "builtin_rules": False,
                                      "localizer": {"enabled": False}, "storage": {"path": ":memory:"},
                                      "release_interval": 0.05, **(processor or {})}},
        "exporters": exporters,
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                             "exporters": list(exporters)}},
                    "telemetry": {"metrics": {"address": metrics}},
                    "shutdown_timeout": shutdown_timeout},
    }


def grpc_exporter(port: int, **extra: Any) -> dict[str, Any]:
    """An otlp_grpc exporter section aimed at a sink on ``port``, retrying fast."""
    return {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY,
            "timeout": "2s", **extra}


class RunningPipeline:
    """A started Pipeline living on a private event loop thread."""

    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-pipeline")
        self._thread.start()
        self.pipeline: Pipeline = self.call(self._build(config))
        self.call(self.pipeline.start())
        self.ports = self.pipeline.ports()
        self._stopped = False

    @staticmethod
    async def _build(config: Config) -> Pipeline:
        return Pipeline(config)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.ports['otlp/grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['otlp/http']}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}"

    def metric(self, name: str, **labels: str) -> float:
        value = self.pipeline.telemetry.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.call(self.pipeline.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def start_pipeline(config: dict[str, Any] | Config) -> RunningPipeline:
    cfg = config if isinstance(config, Config) else parse_config(config, "<test>")
    return RunningPipeline(cfg)


# --- clients -------------------------------------------------------------------


def grpc_export(target: str, request: ExportTraceServiceRequest | bytes,
                compression: grpc.Compression = grpc.Compression.NoCompression,
                timeout: float = 10.0) -> ExportTraceServiceResponse:
    """One raw TraceService/Export call; grpc.RpcError on a non-OK status."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(EXPORT_METHOD, request_serializer=None,
                                   response_deserializer=ExportTraceServiceResponse.FromString)
        return call(data, timeout=timeout, compression=compression)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# --- test data -----------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=av(value))


def av(value: Any) -> AnyValue:
    """AnyValue of a Python value: str, bool, int, float, bytes, list (array), dict (kvlist)."""
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[av(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    raise TypeError(value)


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def simple_request(first_trace: int, traces: int = 1, spans_per_trace: int = 2,
                   service: str = "svc") -> ExportTraceServiceRequest:
    """Small valid traces; span ids are unique for distinct trace numbers."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", service))
    ss = rs.scope_spans.add()
    ss.scope.name = "test"
    for t in range(first_trace, first_trace + traces):
        for s in range(spans_per_trace):
            span = ss.spans.add(trace_id=tid(t), span_id=sid(t * 1000 + s + 1), name=f"op{s}", kind=2,
                                start_time_unix_nano=1_700_000_000_000_000_000 + s,
                                end_time_unix_nano=1_700_000_000_100_000_000 + s)
            if s:
                span.parent_span_id = sid(t * 1000 + 1)
    return req


def otlp_json(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON per the spec, built here independently of faulttrace: hex ids, integer enums."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = base64.b64decode(link[key]).hex()
    return doc


def from_otlp_json(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """The inverse of ``otlp_json`` (hex ids back to bytes), again independent of faulttrace."""
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
    return json_format.ParseDict(doc, ExportTraceServiceRequest())


# --- the correctness validator ---------------------------------------------------

Placed = tuple[bytes, str, bytes, str, bytes]  # resource, its schema_url, scope, its schema_url, span


def flatten(requests: Iterable[ExportTraceServiceRequest]) -> list[Placed]:
    """Every span with the resource and scope it travelled under, as canonical bytes."""
    out = []
    for req in requests:
        for rs in req.resource_spans:
            # An absent resource/scope and an empty one differ on the wire: keep the difference.
            resource = rs.HasField("resource") * b"+" + rs.resource.SerializeToString(deterministic=True)
            for ss in rs.scope_spans:
                scope = ss.HasField("scope") * b"+" + ss.scope.SerializeToString(deterministic=True)
                for span in ss.spans:
                    out.append((resource, rs.schema_url, scope, ss.schema_url,
                                span.SerializeToString(deterministic=True)))
    return out


def span_count(requests: Iterable[ExportTraceServiceRequest]) -> int:
    return sum(len(ss.spans) for r in requests for rs in r.resource_spans for ss in rs.scope_spans)


def assert_same_spans(sent: Iterable[ExportTraceServiceRequest],
                      received: Iterable[ExportTraceServiceRequest]) -> None:
    """Received = sent, span for span, each exactly once, under the same resource and scope."""
    want, got = Counter(flatten(sent)), Counter(flatten(received))
    if want == got:
        return
    missing, extra = want - got, got - want
    lines = [f"{sum(missing.values())} span(s) missing or altered, {sum(extra.values())} unexpected/duplicated"]
    for label, diff in (("missing", missing), ("unexpected", extra)):
        for placed in list(diff)[:3]:
            span = Span.FromString(placed[4])
            lines.append(f"{label}: {text_format.MessageToString(span, as_one_line=True)[:400]}")
    raise AssertionError("\n".join(lines))


def fire_rules(directory, text: str, requests: list) -> tuple[Any, duckdb.DuckDBPyConnection, list]:
    """``text`` written as a rule file in ``directory``, loaded, and evaluated over ``requests``
    (protobuf-encoded or messages) decoded as the pipeline does: (the rule set, the connection
    holding them as table ``batch``, the findings).  The caller closes nothing: the connection is
    in memory."""
    from dsl import load_rules
    from processor.analysis.attributes import Projection, span_table

    path = directory / "t.rules"
    path.write_text(text, encoding="utf-8")
    rules = load_rules([path])
    conn = duckdb.connect()
    conn.register("batch", span_table(requests, Projection.of(rules.projection)))
    return rules, conn, rules.evaluate(conn, "batch")
