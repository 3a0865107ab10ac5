"""Exporters: the pipeline's last stage, and the factory building them from config.

A component id is ``type[/name]`` (``otlp/backend``); the type picks the
implementation, the config model was already chosen by ``processor.config``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.config import component_type
from processor.exporters.base import Exporter, ExportResult
from processor.exporters.debug import DebugExporter
from processor.exporters.file import FileExporter
from processor.exporters.otlp_grpc import OtlpGrpcExporter
from processor.exporters.otlp_http import OtlpHttpExporter
from processor.telemetry import Telemetry

EXPORTERS: dict[str, Callable[[str, Any, Telemetry], Exporter]] = {
    "otlp_grpc": OtlpGrpcExporter,
    "otlp": OtlpGrpcExporter,
    "otlp_http": OtlpHttpExporter,
    "otlphttp": OtlpHttpExporter,
    "file": FileExporter,
    "debug": DebugExporter,
}


def build_exporter(component_id: str, config: Any, telemetry: Telemetry) -> Exporter:
    """The exporter for ``component_id``, configured by its already-validated config model."""
    kind = component_type(component_id)
    try:
        factory = EXPORTERS[kind]
    except KeyError:
        raise ValueError(f"exporters.{component_id}: unknown type {kind!r} "
                         f"(known: {', '.join(sorted(EXPORTERS))})") from None
    return factory(component_id, config, telemetry)


__all__ = ["EXPORTERS", "ExportResult", "Exporter", "build_exporter"]
