"""Configuration: collector-shaped YAML validated by pydantic models.

The shape follows the OpenTelemetry Collector (``receivers``, ``processors``,
``exporters``, ``service.pipelines``; component ids ``type[/name]``).  Defaults
live only in the models.  ``${env:VAR}`` (and ``${VAR}``) are substituted in the
YAML text before parsing, as the collector does, with ``${env:VAR:-default}``
for a fallback.  Errors name the YAML key path (``exporters.otlp.endpoint``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Go-style duration (``5s``, ``250ms``, ``1m30s``) or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 250ms")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        pos, seconds = 0, 0.0
        for m in _DURATION_PART.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            raise ValueError(f"invalid duration {value!r}: expected e.g. 5s, 250ms, 1m30s")
    else:
        raise ValueError("expected a duration such as 5s or 250ms")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"endpoint {value!r} must be host:port")
    return value


Endpoint = Annotated[str, BeforeValidator(lambda v: _check_endpoint(str(v)))]


# --- receivers -------------------------------------------------------------


class GrpcServerConfig(_Model):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = Field(4, gt=0)
    max_concurrent_streams: int = Field(0, ge=0)  # 0: gRPC's default


class HttpServerConfig(_Model):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: int = Field(20 * 1024 * 1024, gt=0)  # bytes, after decompression
    traces_url_path: str = "/v1/traces"


class OtlpProtocols(_Model):
    grpc: GrpcServerConfig | None = None
    http: HttpServerConfig | None = None

    @field_validator("grpc", "http", mode="before")
    @classmethod
    def _empty_means_defaults(cls, v: Any) -> Any:
        # `grpc:` with no value turns the protocol on with its defaults, as in the collector.
        return {} if v is None else v


class OtlpReceiverConfig(_Model):
    protocols: OtlpProtocols = OtlpProtocols(grpc=GrpcServerConfig(), http=HttpServerConfig())


# --- processor -------------------------------------------------------------


class StorageConfig(_Model):
    path: str | None = None  # None: in memory
    memory_limit: str | None = None  # DuckDB memory_limit, e.g. "2GB"
    # DuckDB threads for analysis (rules, fault trees, localizer).  One is the
    # cheapest per span (measured: 4.1 vs 6.0 us/span of CPU with two) while
    # receivers keep the other core busy; raise it on machines with cores to spare.
    threads: int = Field(1, gt=0)


class AttributeSpec(_Model):
    """An attribute projected for analysis besides those the rules read, and compared by the
    localizer's attribution (which values the anomalous spans share) besides its defaults."""

    key: str
    source: Literal["span", "resource", "event"] = "span"
    type: Literal["string", "int", "double", "bool", "string[]", "int[]", "double[]", "present"] = "string"
    event: str = ""


class LocalizerConfig(_Model):
    """Localization without rules: structure and timing against a learned baseline."""

    enabled: bool = True
    baseline: str | None = None  # OTLP/JSON lines of normal traffic to start the baseline from


class FaulttraceProcessorConfig(_Model):
    decision_wait: Duration = 5.0
    # How often completed traces are released, analyzed and exported, as one
    # batch: rules are SQL over the batch, so fewer, larger batches cost less per span.
    release_interval: Duration = 1.0
    max_traces: int = Field(50_000, gt=0)
    max_spans_per_trace: int = Field(10_000, gt=0)
    max_buffered_spans: int = Field(1_000_000, gt=0)
    late_span_cache: int = Field(100_000, ge=0)  # released trace ids remembered for late spans
    storage: StorageConfig = StorageConfig()
    attributes: list[AttributeSpec] = []
    rules: list[str] = []          # rule files, directories or globs, besides the built-in library
    builtin_rules: bool = True     # load the library shipped in rules/
    localizer: LocalizerConfig = LocalizerConfig()
    # Run attribute decoding, rules, fault trees and the localizer in a worker
    # process: in the receiving process they compete with receiving for the
    # interpreter lock and one core (processor.worker).
    analysis_process: bool = True


# --- exporters -------------------------------------------------------------


class TlsClientConfig(_Model):
    insecure: bool = False
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsClientConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self


class RetryConfig(_Model):
    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = Field(0.5, ge=0, le=1)
    multiplier: float = Field(1.5, ge=1)
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0  # 0: retry forever


class QueueConfig(_Model):
    enabled: bool = True
    num_consumers: int = Field(10, gt=0)
    queue_size: int = Field(1000, gt=0)  # batches


class OtlpExporterConfig(_Model):
    endpoint: str
    tls: TlsClientConfig = TlsClientConfig()
    headers: dict[str, str] = {}
    compression: Literal["gzip", "none", ""] = "gzip"
    timeout: Duration = 5.0
    retry_on_failure: RetryConfig = RetryConfig()
    sending_queue: QueueConfig = QueueConfig()


class OtlpHttpExporterConfig(OtlpExporterConfig):
    traces_endpoint: str | None = None  # default: endpoint + /v1/traces


class FileExporterConfig(_Model):
    path: str
    compression: Literal["gzip", "none", ""] = "none"


class DebugExporterConfig(_Model):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"


EXPORTER_TYPES: dict[str, type[_Model]] = {
    "otlp_grpc": OtlpExporterConfig,
    "otlp": OtlpExporterConfig,
    "otlp_http": OtlpHttpExporterConfig,
    "otlphttp": OtlpHttpExporterConfig,
    "file": FileExporterConfig,
    "debug": DebugExporterConfig,
}
RECEIVER_TYPES: dict[str, type[_Model]] = {"otlp": OtlpReceiverConfig}
PROCESSOR_TYPES: dict[str, type[_Model]] = {"faulttrace": FaulttraceProcessorConfig}


# --- service ---------------------------------------------------------------


class PipelineConfig(_Model):
    receivers: list[str] = Field(min_length=1)
    processors: list[str] = []
    exporters: list[str] = Field(min_length=1)


class MetricsTelemetryConfig(_Model):
    address: Endpoint | None = "127.0.0.1:8888"  # None/empty: no /metrics server

    @field_validator("address", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v in ("", None) else v


class TelemetryConfig(_Model):
    metrics: MetricsTelemetryConfig = MetricsTelemetryConfig()
    logs: dict[str, str] = {}


class ServiceConfig(_Model):
    pipelines: dict[str, PipelineConfig]
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


def component_type(component_id: str) -> str:
    """``otlp/backend`` -> ``otlp`` (the collector's type[/name] ids)."""
    return component_id.split("/", 1)[0]


class Config(_Model):
    """The whole file.  Component sections keep their raw form until checked."""

    receivers: dict[str, Any]
    processors: dict[str, Any] = {}
    exporters: dict[str, Any]
    extensions: dict[str, Any] = {}
    service: ServiceConfig

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
            if kinds.count("faulttrace") > 1:
                raise ValueError(f"service.pipelines.{name}.processors: faulttrace appears twice")
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

    def pipeline_receivers(self) -> dict[str, OtlpReceiverConfig]:
        return {cid: self.receivers[cid] for cid in self.pipeline.receivers}

    def pipeline_exporters(self) -> dict[str, _Model]:
        return {cid: self.exporters[cid] for cid in self.pipeline.exporters}


DEFAULT_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "processors": {"faulttrace": {}},
    "exporters": {"debug": {}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                         "exporters": ["debug"]}}},
}


class ConfigError(Exception):
    """A configuration problem, with every message naming its YAML key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


_ENV = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Collector-style ``${env:VAR}`` / ``${VAR}`` / ``${env:VAR:-default}``; ``$$`` escapes ``$``."""
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        value = env.get(m.group(1))
        if value is None:
            return m.group(2) if m.group(2) is not None else ""
        return value

    return _ENV.sub(sub, text)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "<root>"


_SECTIONS = (("receivers", RECEIVER_TYPES), ("processors", PROCESSOR_TYPES), ("exporters", EXPORTER_TYPES))


def _problems(err: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    out = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
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
                problems.append(f"{section}.{cid}: unknown type {kind!r} (known: {', '.join(sorted(types))})")
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


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read, env-expand and validate a config file; None -> the embedded defaults."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, "<defaults>")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(source, [f"cannot read: {err.strerror}"]) from None
    try:
        data = yaml.safe_load(expand_env(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}{getattr(err, 'problem', None) or err}"]) from None
    if data is None:
        raise ConfigError(source, ["the file is empty"])
    return parse_config(data, source)
