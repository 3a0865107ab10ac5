"""Read recorded traces: OTLP/JSON (one request, or one per line as the collector's
file exporter writes), optionally gzip-compressed, or OTLP protobuf."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.otlp.otlpjson import request_from_json


class TraceFileError(ValueError):
    """A trace file that cannot be read; the message names the file (and line)."""


def read_requests(path: str | Path) -> list[ExportTraceServiceRequest]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise TraceFileError(f"{p}: cannot read: {err.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:  # zlib.error: a corrupt deflate stream
            raise TraceFileError(f"{p}: bad gzip data: {err}") from None
    text = data.lstrip()
    if not text.startswith((b"{", b"[")):
        try:
            return [ExportTraceServiceRequest.FromString(data)]
        except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
            raise TraceFileError(f"{p}: neither OTLP/JSON nor OTLP protobuf: {err}") from None
    try:
        return [request_from_json(text)]  # one document, possibly spread over lines
    except ValueError as err:
        whole = err
    lines = data.splitlines()  # not `text`: line numbers count the blank lines stripped from it
    if not _is_json(next(line for line in lines if line.strip())):
        # Not JSON lines but one document spread over lines, and it is broken: say where.
        raise TraceFileError(f"{p}:{_json_error_line(data)}: not an OTLP/JSON request: {whole}") from None
    out = []
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(request_from_json(line))
            except ValueError as err:
                raise TraceFileError(f"{p}:{lineno}: not an OTLP/JSON request: {err}") from None
    return out


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _json_error_line(data: bytes) -> int:
    """The line of the first JSON syntax error in ``data`` (1 if the JSON is well formed)."""
    try:
        json.loads(data)
    except json.JSONDecodeError as err:
        return err.lineno
    except ValueError:  # not UTF-8
        pass
    return 1
