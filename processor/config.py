"""Configuration: the whole collector-shaped file, and the faulttrace processor's own settings.

The shape follows the OpenTelemetry Collector (``receivers``, ``processors``,
``exporters``, ``extensions``, ``service.pipelines``, ``service.extensions``;
component ids ``type[/name]``).  Defaults live only in the models; receivers',
exporters' and extensions' models live beside them and are found through their
registries (``receivers.factory``, ``exporters.factory``, ``extensions.factory``).
A file is read, ``--set key=value`` applied, ``${env:VAR}`` / ``${file:PATH}``
expanded in its values (``confmap``), then validated.  Errors name the YAML key
path (``exporters.otlp.endpoint``); an option the collector has and faulttrace
does not is said to be one, with what to do instead (``COLLECTOR_ONLY_KEYS``,
``COLLECTOR_ONLY_TYPES``).  Without a file, the embedded defaults apply, with the
OpenTelemetry SDK's ``OTEL_EXPORTER_OTLP_*`` variables naming the exporter.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from processor.confmap import (
    ConfigError,
    Duration,
    Endpoint,
    StrictModel,
    collector_only,
    component_type,
    expand_config,
    set_values,
)
from processor.exporters import config as exporters_config
from processor.exporters.factory import EXPORTERS
from processor.extensions.factory import EXTENSIONS, unsupported_message
from processor.memory_limiter import COLLECTOR_ONLY_KEYS as MEMORY_LIMITER_KEYS
from processor.memory_limiter import MemoryLimiterConfig
from processor.receivers import config as receivers_config
from processor.receivers.config import OtlpReceiverConfig
from processor.receivers.factory import RECEIVERS

# --- the faulttrace processor ---------------------------------------------


JOURNAL_FILE = "journal.duckdb"  # the journal's name in the state directory (the default storage.path)
IN_MEMORY = ":memory:"  # storage.path that keeps spans in memory only


def default_journal_path() -> str:
    """``$XDG_STATE_HOME/faulttrace/journal.duckdb``, else ``~/.local/state/faulttrace/journal.duckdb``
    (the XDG base directory spec: state that should survive a restart, per user)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path(os.path.expanduser("~")) / ".local" / "state"
    return str(base / "faulttrace" / JOURNAL_FILE)


class StorageConfig(StrictModel):
    # The journal: every span is written to this DuckDB file before it is acknowledged
    # and leaves it once delivered, so a restart (a deploy, a crash) loses nothing
    # acknowledged.  Unset or null: default_journal_path() (its directory is made at
    # start).  ":memory:" opts out: what is buffered or undelivered dies with the process.
    path: str = Field(default_factory=default_journal_path)
    memory_limit: str | None = None  # DuckDB memory_limit, e.g. "2GB"
    # DuckDB threads for analysis (rules, fault trees, localizer).  One is the
    # cheapest per span (measured: 4.1 vs 6.0 us/span of CPU with two) while
    # receivers keep the other core busy; raise it on machines with cores to spare.
    threads: int = Field(1, gt=0)

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        if v is None:
            return default_journal_path()
        if isinstance(v, str) and not v.strip():
            raise ValueError(f"empty: give a journal file, or {IN_MEMORY!r} to keep spans in memory only")
        return v

    @property
    def journal(self) -> str | None:
        """The journal file, or None to keep spans in memory only."""
        return None if self.path == IN_MEMORY else self.path


class AttributeSpec(StrictModel):
    """An attribute projected for analysis besides those the rules read, and compared by the
    localizer's attribution (which values the anomalous spans share) besides its defaults."""

    key: str
    source: Literal["span", "resource", "event"] = "span"
    type: Literal["string", "int", "double", "bool", "string[]", "int[]", "double[]", "present"] = "string"
    event: str = ""


class LocalizerConfig(StrictModel):
    """Localization without rules: structure and timing against a learned baseline."""

    enabled: bool = True
    baseline: str | None = None  # OTLP/JSON lines of normal traffic to start the baseline from


class VerdictLogConfig(StrictModel):
    """What ``serve`` logs about its verdicts: a sentence per trace with a root cause (logger
    ``faulttrace.verdict``) and, every ``summary_interval``, the incidents (logger
    ``faulttrace.incidents``: traces with the same cause, grouped)."""

    enabled: bool = True
    # A link to the trace in a trace viewer, at the end of each sentence; {trace_id} is the
    # trace id in hex, e.g. http://jaeger:16686/trace/{trace_id} or a Grafana Explore URL.
    trace_url_template: str = ""
    summary_interval: Duration = 60.0  # 0: no incident summary

    @field_validator("trace_url_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        from processor.service.sentence import check_url_template

        return check_url_template(v)


class FaulttraceProcessorConfig(StrictModel):
    decision_wait: Duration = 5.0
    # A trace whose root span has ended and whose spans all have their parent is released this
    # long after its last span instead of decision_wait (0: never early); see docs/sizing.md.
    complete_grace: Duration = 0.5
    # How often completed traces are released, analyzed and exported, as one
    # batch: rules are SQL over the batch, so fewer, larger batches cost less per span.
    release_interval: Duration = 1.0
    max_traces: int = Field(50_000, gt=0)
    max_spans_per_trace: int = Field(10_000, gt=0)
    max_buffered_spans: int = Field(1_000_000, gt=0)
    late_span_cache: int = Field(100_000, ge=0)  # released trace ids remembered for late spans
    storage: StorageConfig = Field(default_factory=StorageConfig)  # its default path reads the environment
    attributes: list[AttributeSpec] = []
    rules: list[str] = []          # rule files, directories or globs, besides the built-in library
    builtin_rules: bool = True     # load the library shipped in rules/
    localizer: LocalizerConfig = LocalizerConfig()
    # rca.root_cause (and rca.verdict.*) only on candidates at least this confident; weaker
    # ones keep their rca.finding events (docs/localization.md, "What rca.confidence means")
    min_confidence: float = Field(0.7, ge=0.0, le=1.0)
    verdict_log: VerdictLogConfig = VerdictLogConfig()
    # Run attribute decoding, rules, fault trees and the localizer in a worker
    # process: in the receiving process they compete with receiving for the
    # interpreter lock and one core (processor.analysis.worker).
    analysis_process: bool = True


class BatchProcessorConfig(StrictModel):
    """The collector's ``batch`` processor, accepted with its checks: faulttrace batches already.

    Spans are held until their trace is complete and released together every
    ``release_interval``, then sent in payloads of at most 3 MiB, so the
    batch processor's ``timeout`` and ``send_batch_size`` have nothing left to
    do; ``send_batch_max_size`` caps the spans of each payload.
    """

    timeout: Duration = 0.2
    send_batch_size: int = Field(8192, ge=0)
    send_batch_max_size: int = Field(0, ge=0)  # 0: no cap but the payload's 3 MiB
    metadata_keys: list[str] = []
    metadata_cardinality_limit: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> BatchProcessorConfig:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater than or equal to send_batch_size")
        if self.metadata_keys:
            raise ValueError("metadata_keys: " + collector_only(
                "faulttrace regroups spans by trace, so no request's metadata reaches the exporters; run one "
                "pipeline (one faulttrace) per tenant, or batch by metadata in a collector after faulttrace"))
        return self


# --- service ---------------------------------------------------------------


class PipelineConfig(StrictModel):
    receivers: list[str] = Field(min_length=1)
    processors: list[str] = []
    exporters: list[str] = Field(min_length=1)


class PrometheusPullConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(8888, ge=0, le=65535)


class PullExporterConfig(StrictModel):
    prometheus: PrometheusPullConfig


class PullReaderConfig(StrictModel):
    exporter: PullExporterConfig


class MetricReaderConfig(StrictModel):
    """One of the collector's ``service.telemetry.metrics.readers``: a Prometheus pull endpoint."""

    pull: PullReaderConfig


class MetricsTelemetryConfig(StrictModel):
    """Where ``/metrics`` and ``/healthz`` are served: the collector's current form
    (``readers: [{pull: {exporter: {prometheus: {host, port}}}}]``) or its older ``address``."""

    # none: no metrics server, as in the collector.  basic, normal and detailed serve the same series.
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: Endpoint | None = "127.0.0.1:8888"  # None/empty: no /metrics server
    readers: list[MetricReaderConfig] = []

    @field_validator("address", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_endpoint(self) -> MetricsTelemetryConfig:
        if self.readers and "address" in self.model_fields_set:
            raise ValueError("give readers or address, not both (address is the collector's older form)")
        if len(self.readers) > 1:
            raise ValueError("readers: faulttrace serves one Prometheus endpoint; give one pull reader")
        return self

    @property
    def endpoint(self) -> str | None:
        """``host:port`` to serve ``/metrics`` on, or None for none."""
        if self.level == "none":
            return None
        if self.readers:
            prometheus = self.readers[0].pull.exporter.prometheus
            host = f"[{prometheus.host}]" if ":" in prometheus.host else prometheus.host
            return f"{host or '0.0.0.0'}:{prometheus.port}"
        return self.address


class LogsTelemetryConfig(StrictModel):
    level: Literal["debug", "info", "warn", "error"] = "info"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class TelemetryConfig(StrictModel):
    metrics: MetricsTelemetryConfig = MetricsTelemetryConfig()
    logs: LogsTelemetryConfig = LogsTelemetryConfig()


class ServiceConfig(StrictModel):
    pipelines: dict[str, PipelineConfig]
    extensions: list[str] = []  # ids under `extensions:` to start, before everything else
    telemetry: TelemetryConfig = TelemetryConfig()
    shutdown_timeout: Duration = 30.0

    @field_validator("pipelines")
    @classmethod
    def _traces_only(cls, v: dict[str, PipelineConfig]) -> dict[str, PipelineConfig]:
        for name in v:
            if name.split("/", 1)[0] != "traces":
                raise ValueError(f"pipeline {name!r}: faulttrace handles traces pipelines only")
        if len(v) != 1:
            raise ValueError("exactly one traces pipeline is supported")
        return v


class Config(StrictModel):
    """The whole file.  Component sections keep their raw form until checked."""

    receivers: dict[str, Any]
    processors: dict[str, Any] = {}
    exporters: dict[str, Any]
    extensions: dict[str, Any] = {}
    service: ServiceConfig

    @model_validator(mode="after")
    def _extension_references(self) -> Config:
        enabled = self.service.extensions
        for cid in enabled:
            if cid not in self.extensions:
                raise ValueError(f"service.extensions: {cid!r} is not defined under extensions")
        for cid in self.extensions:
            if cid not in enabled:
                raise ValueError(f"extensions.{cid}: defined but not enabled; add it to service.extensions "
                                 "or remove it")
        for rid, receiver in self.receivers.items():
            for path, ext in receiver.authenticators().items():
                if ext not in enabled:
                    raise ValueError(f"receivers.{rid}.{path}: {ext!r} is not an enabled extension "
                                     f"(service.extensions: [{', '.join(enabled)}])")
                if not EXTENSIONS[component_type(ext)].authenticator:
                    raise ValueError(f"receivers.{rid}.{path}: {ext!r} is not an authenticator")
        return self

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, p in self.service.pipelines.items():
            for section, ids in (("receivers", p.receivers), ("processors", p.processors),
                                 ("exporters", p.exporters)):
                defined = getattr(self, section)
                for cid in ids:
                    if cid not in defined:
                        raise ValueError(f"service.pipelines.{name}.{section}: {cid!r} is not defined "
                                         f"under {section}")
            kinds = [component_type(c) for c in p.processors]
            for kind in ("faulttrace", "memory_limiter", "batch"):
                if kinds.count(kind) > 1:
                    raise ValueError(f"service.pipelines.{name}.processors: {kind} appears twice")
        return self

    @model_validator(mode="after")
    def _persistent_queues(self) -> Config:
        if self.processor.storage.journal is not None:
            return self
        for cid in self.pipeline.exporters:
            queue = getattr(self.exporters.get(cid), "sending_queue", None)
            if queue is not None and queue.storage:
                raise ValueError(f"exporters.{cid}.sending_queue.storage: a persistent queue is faulttrace's "
                                 "journal, which processors.faulttrace.storage.path \":memory:\" turns off; "
                                 "give storage.path a file, or remove sending_queue.storage")
        return self

    # Convenience views of the one pipeline.
    @property
    def pipeline(self) -> PipelineConfig:
        return next(iter(self.service.pipelines.values()))

    @property
    def processor(self) -> FaulttraceProcessorConfig:
        for cid in self.pipeline.processors:
            if component_type(cid) == "faulttrace":
                return self.processors[cid]
        return FaulttraceProcessorConfig()

    def pipeline_processor(self, kind: str) -> tuple[str, Any] | None:
        """(id, config) of the pipeline's processor of type ``kind`` (``memory_limiter``, ``batch``), if any."""
        for cid in self.pipeline.processors:
            if component_type(cid) == kind:
                return cid, self.processors[cid]
        return None

    @property
    def payload_max_spans(self) -> int:
        """Spans per exported payload at most (the batch processor's send_batch_max_size); 0: no cap."""
        batch = self.pipeline_processor("batch")
        return batch[1].send_batch_max_size if batch else 0

    def pipeline_receivers(self) -> dict[str, OtlpReceiverConfig]:
        return {cid: self.receivers[cid] for cid in self.pipeline.receivers}

    def pipeline_exporters(self) -> dict[str, BaseModel]:
        return {cid: self.exporters[cid] for cid in self.pipeline.exporters}


DEFAULT_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "processors": {"faulttrace": {}},
    "exporters": {"debug": {}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                         "exporters": ["debug"]}}},
}

# --- the default exporter from the OpenTelemetry SDK's environment variables ---------------

OTEL_PREFIX = "OTEL_EXPORTER_OTLP_"
# Read for the default exporter, each as OTEL_EXPORTER_OTLP_TRACES_<NAME> or else OTEL_EXPORTER_OTLP_<NAME>.
OTEL_NAMES = ("ENDPOINT", "PROTOCOL", "HEADERS", "COMPRESSION", "TIMEOUT", "INSECURE", "CERTIFICATE",
              "CLIENT_CERTIFICATE", "CLIENT_KEY")


def _otel_headers(text: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values percent-encoded), as the OTLP exporter specification writes headers."""
    headers = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{item.strip()!r} is not key=value")
        headers[key.strip()] = unquote(value.strip())
    return headers


def otel_exporter(environ: Mapping[str, str]) -> tuple[str, dict[str, Any]] | None:
    """The exporter the OTLP exporter variables describe, as (id, config body), or None when no
    endpoint is set.  Per the specification: ``…_TRACES_ENDPOINT`` is the full URL,
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` a base (+ ``/v1/traces`` over HTTP); the protocol is
    ``http/protobuf`` unless it says ``grpc``; a gRPC endpoint without a scheme is TLS unless
    ``…_INSECURE`` is true.  A bad value is a ValueError naming the variable."""
    def get(name: str) -> tuple[str, str] | None:
        for var in (f"{OTEL_PREFIX}TRACES_{name}", f"{OTEL_PREFIX}{name}"):
            if environ.get(var, "").strip():
                return var, environ[var].strip()
        return None

    endpoint = get("ENDPOINT")
    if endpoint is None:
        return None
    protocol_var, protocol = get("PROTOCOL") or ("", "http/protobuf")
    body: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    var, url = endpoint
    if protocol == "grpc":
        cid = "otlp_grpc"
        body["endpoint"] = url
        insecure = get("INSECURE")
        tls["insecure"] = url.startswith("http://") or (insecure is not None and insecure[1].lower() == "true")
    elif protocol == "http/protobuf":
        cid = "otlp_http"
        body["endpoint"] = url
        if var.startswith(f"{OTEL_PREFIX}TRACES_"):
            body["traces_endpoint"] = url  # the full URL, as given
    else:
        raise ValueError(f"{protocol_var}: {protocol!r}: faulttrace sends grpc or http/protobuf"
                         + ("; http/json is the SDK's, use http/protobuf" if protocol == "http/json" else ""))
    if headers := get("HEADERS"):
        try:
            body["headers"] = _otel_headers(headers[1])
        except ValueError as err:
            raise ValueError(f"{headers[0]}: {err}") from None
    if compression := get("COMPRESSION"):
        body["compression"] = compression[1]
    if timeout := get("TIMEOUT"):
        if not timeout[1].isdigit():
            raise ValueError(f"{timeout[0]}: {timeout[1]!r} is not a number of milliseconds")
        body["timeout"] = f"{timeout[1]}ms"
    for name, key in (("CERTIFICATE", "ca_file"), ("CLIENT_CERTIFICATE", "cert_file"), ("CLIENT_KEY", "key_file")):
        if found := get(name):
            tls[key] = found[1]
    if tls:
        body["tls"] = tls
    return cid, body


def default_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The embedded defaults; with ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` set, spans go to that
    endpoint (``otel_exporter``) instead of the debug exporter's log lines."""
    data = copy.deepcopy(DEFAULT_CONFIG)
    try:
        exporter = otel_exporter(os.environ if environ is None else environ)
    except ValueError as err:
        raise ConfigError("<environment>", [str(err)]) from None
    if exporter is not None:
        cid, body = exporter
        data["exporters"] = {cid: body}
        data["service"]["pipelines"]["traces"]["exporters"] = [cid]
    return data


# --- port flags ----------------------------------------------------------------------------


def _child(parent: dict[str, Any], key: str) -> Any:
    """``parent[key]``, made an empty mapping if absent or null (``grpc:`` with no value)."""
    if parent.get(key) is None:
        parent[key] = {}
    return parent[key]


def _with_port(endpoint: Any, port: int, default_host: str) -> str:
    host = str(endpoint).rpartition(":")[0] if endpoint else default_host
    return f"{host}:{port}"


def set_ports(data: dict[str, Any], grpc: int | None = None, http: int | None = None,
              metrics: int | None = None) -> list[str]:
    """``serve --grpc-port/--http-port/--metrics-port``: the port of the otlp receiver's protocols and of
    the metrics endpoint, keeping their hosts; changes ``data`` (parsed, expanded) in place and
    returns the problems."""
    problems: list[str] = []
    for flag, protocol, port, default in (("--grpc-port", "grpc", grpc, "127.0.0.1"),
                                          ("--http-port", "http", http, "127.0.0.1")):
        if port is None:
            continue
        receivers = data.get("receivers") or {}
        otlp = [rid for rid in receivers if component_type(str(rid)) == "otlp"]
        if len(otlp) != 1:
            problems.append(f"{flag}: the configuration has {len(otlp)} otlp receivers; set each endpoint with "
                            f"--set receivers.<id>.protocols.{protocol}.endpoint=host:port")
            continue
        body = _child(receivers, otlp[0])
        protocols = body.get("protocols")
        if protocols is None:  # both, as OtlpReceiverConfig's default
            protocols = body["protocols"] = {"grpc": {}, "http": {}}
        if protocol not in protocols:
            problems.append(f"{flag}: receivers.{otlp[0]} has no {protocol} protocol")
            continue
        server = _child(protocols, protocol)
        server["endpoint"] = _with_port(server.get("endpoint"), port, default)
    if metrics is not None:
        settings = _child(_child(_child(data, "service"), "telemetry"), "metrics")
        readers = settings.get("readers") or []
        if readers:
            try:
                readers[0]["pull"]["exporter"]["prometheus"]["port"] = metrics
            except (KeyError, TypeError):
                problems.append("--metrics-port: service.telemetry.metrics.readers[0] is not a prometheus pull reader")
        else:
            settings["address"] = _with_port(settings.get("address"), metrics, "127.0.0.1")
    return problems


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "<root>"


# type -> config model per section: the component registries', and these processors.
_SECTIONS: tuple[tuple[str, dict[str, type[BaseModel]]], ...] = (
    ("receivers", {kind: c.config for kind, c in RECEIVERS.items()}),
    ("processors", {"faulttrace": FaulttraceProcessorConfig, "batch": BatchProcessorConfig,
                    "memory_limiter": MemoryLimiterConfig}),
    ("exporters", {kind: c.config for kind, c in EXPORTERS.items()}),
    ("extensions", {kind: e.config for kind, e in EXTENSIONS.items()}),
)

# --- what the collector has and faulttrace does not ---------------------------------------

_BEFORE = "run a collector with it in front of faulttrace, exporting OTLP to faulttrace"
_AROUND = "run it in a collector before or after faulttrace"
_AFTER = "export OTLP from faulttrace to a collector that has it"

# Component types of the collector (core and contrib) faulttrace does not have, per section.
COLLECTOR_ONLY_TYPES: dict[str, dict[str, str]] = {
    "receivers": {kind: _BEFORE for kind in (
        "jaeger", "zipkin", "kafka", "opencensus", "prometheus", "hostmetrics", "filelog", "otlpjsonfile",
        "fluentforward", "syslog", "statsd", "awsxray", "skywalking", "pulsar", "googlecloudpubsub",
        "k8s_cluster", "kubeletstats", "receiver_creator", "nop")},
    "processors": {
        **{kind: _AROUND for kind in (
            "attributes", "resource", "filter", "transform", "probabilistic_sampler", "k8sattributes",
            "resourcedetection", "groupbytrace", "groupbyattrs", "span", "routing", "redaction",
            "cumulativetodelta", "metricstransform", "deltatocumulative", "interval")},
        "tail_sampling": "sample in a collector after faulttrace, with a policy on rca.root_cause, so that "
                         "the sampler sees faulttrace's verdicts",
    },
    "exporters": {
        **{kind: _AFTER for kind in (
            "kafka", "loadbalancing", "prometheus", "prometheusremotewrite", "zipkin", "jaeger",
            "elasticsearch", "clickhouse", "awsxray", "datadog", "splunk_hec", "googlecloud", "azuremonitor",
            "sapm", "signalfx", "nop", "otlp_arrow", "otelarrow")},
        "logging": "the collector renamed it debug; use debug",
    },
}

# Keys faulttrace does not have, by section: for components, the key path under the component
# (``*`` is one key); for service, under ``service``.
COLLECTOR_ONLY_KEYS: dict[str, dict[str, str]] = {
    "receivers": receivers_config.COLLECTOR_ONLY_KEYS,
    "processors": MEMORY_LIMITER_KEYS,
    "exporters": exporters_config.COLLECTOR_ONLY_KEYS,
    "extensions": {
        "check_collector_pipeline": "the collector deprecated it; readiness covers the whole pipeline; remove it",
        "grpc": "faulttrace's health check is HTTP only; remove it",
        "tls": "the health check is plain HTTP; keep its endpoint on a private address",
    },
    "service": {
        "telemetry.traces": "faulttrace traces nothing of its own; remove it",
        "telemetry.resource": "remove it; faulttrace's metrics carry no resource",
        "telemetry.metrics.views": "faulttrace's metrics are fixed; remove it",
        "telemetry.metrics.readers.*.periodic": "faulttrace serves Prometheus for scraping only; use a pull "
                                                "reader and scrape it (a collector's prometheus receiver can)",
        "telemetry.metrics.readers.*.pull.exporter.prometheus.without_scope_info": "faulttrace's metric names "
                                                                                   "are fixed; remove it",
        "telemetry.metrics.readers.*.pull.exporter.prometheus.without_type_suffix": "faulttrace's metric names "
                                                                                    "are fixed; remove it",
        "telemetry.metrics.readers.*.pull.exporter.prometheus.without_units": "faulttrace's metric names are "
                                                                              "fixed; remove it",
        "telemetry.metrics.readers.*.pull.exporter.prometheus.with_resource_constant_labels": "remove it",
        **{f"telemetry.logs.{key}": "faulttrace logs text lines to stderr; remove it" for key in (
            "encoding", "development", "disable_caller", "disable_stacktrace", "sampling", "output_paths",
            "error_output_paths", "initial_fields", "processors")},
    },
}


def _matches(pattern: str, path: tuple[str, ...]) -> bool:
    parts = pattern.split(".")
    return len(parts) == len(path) and all(p in ("*", k) for p, k in zip(parts, path))


def collector_only_key(loc: tuple[Any, ...]) -> str | None:
    """The "supported by the collector, not by faulttrace" message for an unknown key at ``loc``
    (its full path, ``("exporters", "otlp", "balancer_name")``), or None if the collector has none."""
    section = str(loc[0]) if loc else ""
    start = 1 if section == "service" else 2
    path = tuple(str(p) for p in loc[start:])
    for pattern, hint in COLLECTOR_ONLY_KEYS.get(section, {}).items():
        if _matches(pattern, path):
            return collector_only(hint)
    return None


def _unknown_type(section: str, cid: str, types: dict[str, type[BaseModel]]) -> str:
    if section == "extensions" and (message := unsupported_message(cid)):
        return message
    kind = component_type(cid)
    hint = COLLECTOR_ONLY_TYPES.get(section, {}).get(kind)
    if hint is not None:
        return (f"{section}.{cid}: {kind!r} is {collector_only(hint)}; remove it from {section} and the pipeline "
                f"(faulttrace's {section}: {', '.join(sorted(types))})")
    return f"{section}.{cid}: unknown type {kind!r} (known: {', '.join(sorted(types))})"


def _problems(err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = collector_only_key(prefix + tuple(e["loc"])) or "unknown key"
        where = _loc(prefix + tuple(e["loc"]))
        # Cross-reference errors already name their own key path.
        out.append(msg if where == "<root>" and "." in msg.split(":", 1)[0] else f"{where}: {msg}")
    return out


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data; raise ConfigError naming every bad key path."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["the configuration must be a mapping"])
    problems: list[str] = []
    resolved = dict(data)
    # Component sections are typed by their ids (``otlp/2`` is an otlp receiver),
    # so each body is validated against its type's model here, with its full path.
    for section, types in _SECTIONS:
        comps = data.get(section) or {}
        if not isinstance(comps, dict):
            problems.append(f"{section}: must be a mapping of component ids")
            continue
        parsed = {}
        for cid, body in comps.items():
            kind = component_type(str(cid))
            if kind not in types:
                problems.append(_unknown_type(section, str(cid), types))
                continue
            try:
                parsed[cid] = types[kind].model_validate({} if body is None else body)
            except ValidationError as err:
                problems.extend(_problems(err, (section, cid)))
        resolved[section] = parsed
    if problems:
        raise ConfigError(source, problems)
    try:
        return Config.model_validate(resolved)
    except ValidationError as err:
        raise ConfigError(source, _problems(err)) from None


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = (),
                ports: Mapping[str, int | None] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, apply ``--set`` ``overrides``, expand (``${env:}``, ``${file:}``), apply port flags
    (``ports``: ``grpc``, ``http``, ``metrics``) and validate a config file; None -> the embedded
    defaults (``default_config``, which reads the ``OTEL_EXPORTER_OTLP_*`` variables)."""
    if path is None:
        data, source = default_config(environ), "<defaults>"
    else:
        data, source = _read(Path(path)), str(path)
    data, problems = set_values(data, overrides)
    if problems:
        raise ConfigError(source, problems)
    data, problems = expand_config(data, None if environ is None else dict(environ))
    if problems:
        raise ConfigError(source, problems)
    if ports and (problems := set_ports(data, **ports)):
        raise ConfigError(source, problems)
    return parse_config(data, source)


def _read(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(source, [f"cannot read: {err.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}{getattr(err, 'problem', None) or err}"]) from None
    if data is None:
        raise ConfigError(source, ["the file is empty"])
    if not isinstance(data, dict):
        raise ConfigError(source, ["the configuration must be a mapping"])
    return data
