"""Configuration: the whole collector-shaped file, and the faulttrace processor's own settings.

The shape follows the OpenTelemetry Collector (``receivers``, ``processors``,
``exporters``, ``extensions``, ``service.pipelines``, ``service.extensions``;
component ids ``type[/name]``).  Defaults live only in the models; receivers',
exporters' and extensions' models live beside them and are found through their
registries (``receivers.factory``, ``exporters.factory``, ``extensions.factory``).  ``${env:VAR}`` (and ``${VAR}``) are substituted in the
YAML text before parsing, as the collector does, with ``${env:VAR:-default}``
for a fallback.  Errors name the YAML key path (``exporters.otlp.endpoint``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from processor.confmap import ConfigError, Duration, Endpoint, StrictModel, component_type, expand_config
from processor.exporters.factory import EXPORTERS
from processor.extensions.factory import EXTENSIONS, unsupported_message
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


class FaulttraceProcessorConfig(StrictModel):
    decision_wait: Duration = 5.0
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
    # Run attribute decoding, rules, fault trees and the localizer in a worker
    # process: in the receiving process they compete with receiving for the
    # interpreter lock and one core (processor.analysis.worker).
    analysis_process: bool = True


# --- service ---------------------------------------------------------------


class PipelineConfig(StrictModel):
    receivers: list[str] = Field(min_length=1)
    processors: list[str] = []
    exporters: list[str] = Field(min_length=1)


class MetricsTelemetryConfig(StrictModel):
    address: Endpoint | None = "127.0.0.1:8888"  # None/empty: no /metrics server

    @field_validator("address", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return None if v in ("", None) else v


class TelemetryConfig(StrictModel):
    metrics: MetricsTelemetryConfig = MetricsTelemetryConfig()
    logs: dict[str, str] = {}


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

    def pipeline_exporters(self) -> dict[str, BaseModel]:
        return {cid: self.exporters[cid] for cid in self.pipeline.exporters}


DEFAULT_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
    "processors": {"faulttrace": {}},
    "exporters": {"debug": {}},
    "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["faulttrace"],
                                         "exporters": ["debug"]}}},
}


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "<root>"


# type -> config model per section: the component registries', and this processor.
_SECTIONS: tuple[tuple[str, dict[str, type[BaseModel]]], ...] = (
    ("receivers", {kind: c.config for kind, c in RECEIVERS.items()}),
    ("processors", {"faulttrace": FaulttraceProcessorConfig}),
    ("exporters", {kind: c.config for kind, c in EXPORTERS.items()}),
    ("extensions", {kind: e.config for kind, e in EXTENSIONS.items()}),
)


def _unknown_type(section: str, cid: str, types: dict[str, type[BaseModel]]) -> str:
    if section == "extensions" and (message := unsupported_message(cid)):
        return message
    kind = component_type(cid)
    return f"{section}.{cid}: unknown type {kind!r} (known: {', '.join(sorted(types))})"


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


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read, expand (``${env:}``, ``${file:}``) and validate a config file; None -> the embedded defaults."""
    if path is None:
        return parse_config(DEFAULT_CONFIG, "<defaults>")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
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
    data, problems = expand_config(data)
    if problems:
        raise ConfigError(source, problems)
    return parse_config(data, source)
