"""The exporter registry: each exporter type's config model and implementation, and the factory.

A component id is ``type[/name]`` (``otlp/backend``); the type picks the
entry.  ``processor.config`` validates each ``exporters.<id>`` body against
the entry's model; ``build_exporter`` makes the exporter from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from processor.confmap import component_type
from processor.exporters.base import Exporter
from processor.exporters.config import (
    DebugExporterConfig,
    FileExporterConfig,
    OtlpExporterConfig,
    OtlpHttpExporterConfig,
)
from processor.exporters.debug import DebugExporter
from processor.exporters.file import FileExporter
from processor.exporters.otlp_grpc import OtlpGrpcExporter
from processor.exporters.otlp_http import OtlpHttpExporter
from processor.service.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class ExporterType:
    config: type[BaseModel]
    build: Callable[[str, Any, Telemetry], Exporter]


_OTLP_GRPC = ExporterType(OtlpExporterConfig, OtlpGrpcExporter)
_OTLP_HTTP = ExporterType(OtlpHttpExporterConfig, OtlpHttpExporter)

EXPORTERS: dict[str, ExporterType] = {
    "otlp_grpc": _OTLP_GRPC,
    "otlp": _OTLP_GRPC,          # the collector's older name
    "otlp_http": _OTLP_HTTP,
    "otlphttp": _OTLP_HTTP,      # the collector's older name
    "file": ExporterType(FileExporterConfig, FileExporter),
    "debug": ExporterType(DebugExporterConfig, DebugExporter),
}


def build_exporter(component_id: str, config: Any, telemetry: Telemetry) -> Exporter:
    """The exporter for ``component_id``, configured by its already-validated config model."""
    kind = component_type(component_id)
    try:
        entry = EXPORTERS[kind]
    except KeyError:
        raise ValueError(f"exporters.{component_id}: unknown type {kind!r} "
                         f"(known: {', '.join(sorted(EXPORTERS))})") from None
    return entry.build(component_id, config, telemetry)
