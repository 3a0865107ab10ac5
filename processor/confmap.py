"""Shared pieces of collector-shaped configuration (the collector's confmap): strict models,
Go-style durations, ``host:port`` endpoints, ``type[/name]`` component ids,
``${env:VAR}`` / ``${file:PATH}`` expansion, ``--set key=value`` and the error every
config problem becomes.

Each component's config model lives beside the component (``receivers/config.py``,
``exporters/config.py``); ``processor.config`` reads the whole file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict

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


class StrictModel(BaseModel):
    """A config model: unknown keys are errors, values are frozen."""


    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"endpoint {value!r} must be host:port")
    # The collector's ":4317" listens on every interface.
    return value if host else f"0.0.0.0:{port}"


Endpoint = Annotated[str, BeforeValidator(lambda v: _check_endpoint(str(v)))]


# YAML reads `min_version: 1.2` as a number.  1.0 and 1.1 are deprecated (RFC 8996) and refused.
TlsVersion = Annotated[Literal["1.2", "1.3"], BeforeValidator(lambda v: str(v) if isinstance(v, float) else v)]

COLLECTOR_ONLY = "supported by the collector, not by faulttrace"


def collector_only(hint: str) -> str:
    """The message for a collector option faulttrace does not have: what it is, then what to do instead."""
    return f"{COLLECTOR_ONLY}: {hint}"


def component_type(component_id: str) -> str:
    """``otlp/backend`` -> ``otlp`` (the collector's type[/name] ids)."""
    return component_id.split("/", 1)[0]


class ConfigError(Exception):
    """A configuration problem, with every message naming its YAML key path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


# ${env:VAR}, ${VAR}, ${env:VAR:-default}, ${file:/path}, ${scheme:...} (refused), and $$.
_REF = re.compile(r"\$\{(?:([a-z][a-z0-9+.-]*):)?([^}:]*?)(?::-([^}]*))?\}|\$\$")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """Expand the collector's config references in one value.

    ``${env:VAR}`` and ``${VAR}`` read the environment, ``${env:VAR:-default}`` falls back
    to ``default``; ``${file:PATH}`` reads a file (a mounted secret), without its trailing
    newline; ``$$`` is a literal ``$``. An unset variable with no default, an unreadable
    file, or another provider (``http``, ``yaml``, …) is a ``ValueError``: the collector
    would pass an empty string on, which silently points an exporter nowhere.
    """
    env = os.environ if environ is None else environ

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        scheme, name, default = m.group(1) or "env", m.group(2), m.group(3)
        if scheme == "file":
            try:
                return Path(name).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as err:
                raise ValueError(f"${{file:{name}}}: cannot read: {err.strerror}") from None
        if scheme != "env":
            raise ValueError(f"${{{scheme}:...}}: the {scheme!r} config provider is supported by the "
                             "collector, not by faulttrace; use ${env:VAR} or ${file:PATH}")
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"${{env:{name}}}: not an environment variable name")
        value = env.get(name)
        if value is None:
            if default is None:
                raise ValueError(f"${{env:{name}}} is not set; set it or give a default: "
                                 f"${{env:{name}:-value}}")
            return default
        return value

    return _REF.sub(sub, text)


def expand_config(data: Any, environ: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """``data`` (parsed YAML) with every string value expanded (``expand_env``), and the
    problems found, each naming its key path. Keys and comments are not expanded."""
    problems: list[str] = []

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            try:
                return expand_env(value, environ)
            except ValueError as err:
                problems.append(f"{path or '<top>'}: {err}")
        return value

    return walk(data, ""), problems


def _merge(base: dict[str, Any], key: str, value: Any) -> None:
    """``base[key] = value``, merging mappings into mappings as the collector's confmap does (lists replace)."""
    old = base.get(key)
    if isinstance(old, dict) and isinstance(value, dict):
        for k, v in value.items():
            _merge(old, k, v)
    else:
        base[key] = value


def set_values(data: dict[str, Any], assignments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``data`` with each ``otelcol --set`` assignment applied: ``a.b.c=value`` sets the key at that
    dotted path (mappings on the way are made), the value read as YAML (``2s``, ``[otlp]``,
    ``{insecure: true}``; a mapping merges into one already there).  Returns the new data and
    the problems, each naming its assignment; ``data`` is not changed."""
    data = copy.deepcopy(data)
    problems: list[str] = []
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            problems.append(f"--set {assignment}: expected key.path=value, e.g. "
                            "processors.faulttrace.decision_wait=2s")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problems.append(f"--set {key}: the value is not YAML: {getattr(err, 'problem', None) or err}")
            continue
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"--set {key}: {'.'.join(path[:depth + 1])} is not a mapping")
                break
            node = child
        else:
            _merge(node, path[-1], value)
    return data, problems
