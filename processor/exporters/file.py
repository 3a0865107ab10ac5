"""The ``file`` exporter: OTLP/JSON lines, optionally gzipped, like the collector's.

Each payload becomes one line holding one ``ExportTraceServiceRequest`` in
OTLP/JSON (:mod:`processor.otlp.otlpjson`), appended to ``path``.  With
``compression: gzip`` each write is one complete gzip member: a file of
concatenated members is a valid gzip file (``gzip.open`` / ``zcat`` read it
whole), and everything written survives a crash.  Decoding, encoding and
writing run in a worker thread so the event loop keeps serving receivers.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from pathlib import Path
from typing import BinaryIO

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.exporters.base import LocalExporter
from processor.exporters.config import FileExporterConfig
from processor.model import ExportPayload
from processor.otlp.otlpjson import request_to_json
from processor.service.telemetry import Telemetry

log = logging.getLogger(__name__)


class FileExporter(LocalExporter):
    def __init__(self, component_id: str, config: FileExporterConfig, telemetry: Telemetry) -> None:
        super().__init__(component_id, telemetry)
        self._path = Path(config.path)
        self._gzip = config.compression == "gzip"
        self._file: BinaryIO | None = None
        self._lock = asyncio.Lock()  # one writer at a time keeps lines whole and in order

    async def start(self) -> None:
        self._file = await asyncio.to_thread(self._open)

    async def export(self, payload: ExportPayload) -> None:
        async with self._lock:
            if self._file is None:
                log.error("exporter %s: dropping %d spans: file is not open", self.component_id,
                          payload.span_count)
                self._failed.inc(payload.span_count)
                return
            await self._write_settled(payload, self._write, f"write to {self._path}")

    async def shutdown(self, timeout: float) -> None:
        async with self._lock:
            if self._file is not None:
                file, self._file = self._file, None
                await asyncio.to_thread(file.close)

    def _open(self) -> BinaryIO:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return open(self._path, "ab")  # append, as the collector's file exporter does

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        line = request_to_json(ExportTraceServiceRequest.FromString(data)).encode("utf-8") + b"\n"
        self._file.write(gzip.compress(line) if self._gzip else line)
        # Flushed per payload so readers (tail -f, zcat) see whole lines, and a crash loses
        # at most the write in progress.
        self._file.flush()
