"""build_exporter maps component types (and their aliases) to implementations."""

from __future__ import annotations

import pytest

from processor.config import parse_config
from processor.exporters.debug import DebugExporter
from processor.exporters.factory import build_exporter
from processor.exporters.file import FileExporter
from processor.exporters.otlp_grpc import OtlpGrpcExporter
from processor.exporters.otlp_http import OtlpHttpExporter
from processor.service.telemetry import Telemetry


def test_every_configured_type_builds_its_exporter(tmp_path: object) -> None:
    config = parse_config({
        "receivers": {"otlp": {}},
        "exporters": {
            "otlp_grpc": {"endpoint": "127.0.0.1:4317"},
            "otlp/2": {"endpoint": "127.0.0.1:4317"},
            "otlp_http": {"endpoint": "http://127.0.0.1:4318"},
            "otlphttp/b": {"endpoint": "http://127.0.0.1:4318"},
            "file": {"path": "/tmp/x.jsonl"},
            "debug/verbose": {"verbosity": "detailed"},
        },
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug/verbose"]}}},
    })
    expected = {"otlp_grpc": OtlpGrpcExporter, "otlp/2": OtlpGrpcExporter, "otlp_http": OtlpHttpExporter,
                "otlphttp/b": OtlpHttpExporter, "file": FileExporter, "debug/verbose": DebugExporter}
    telemetry = Telemetry()
    for cid, cls in expected.items():
        exporter = build_exporter(cid, config.exporters[cid], telemetry)
        assert type(exporter) is cls
        assert exporter.component_id == cid


def test_unknown_type_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"exporters\.kafka/x: unknown type 'kafka'"):
        build_exporter("kafka/x", None, Telemetry())
