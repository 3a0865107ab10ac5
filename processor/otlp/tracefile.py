"""Read recorded traces: OTLP/JSON (one request, or one per line as the collector's
file exporter writes), optionally gzip-compressed, or OTLP protobuf.

The one reader of such files: the offline tools take requests from it
(``read_requests``), the localizer its span columns straight from the JSON
(``processor.localizer.spans``).  Whatever cannot be read names the file, and
for JSON the line.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.otlp.otlpjson import document, request_from_document

T = TypeVar("T")
_NOT_JSON = object()


class TraceFileError(ValueError):
    """A trace file that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True, slots=True)
class TraceFile:
    """A recorded trace file in memory, uncompressed: OTLP protobuf (``request``) or OTLP/JSON."""

    path: Path
    data: bytes
    request: ExportTraceServiceRequest | None = None  # the file is OTLP protobuf

    def parse(self, read: Callable[[dict[str, Any]], T]) -> list[T]:
        """``read`` of each OTLP/JSON document: the whole file, or each line of JSON lines.

        What ``read`` raises of a document that is not OTLP/JSON (an OtlpJsonError, or the
        TypeError, KeyError ... of a malformed shape) is a TraceFileError naming the file and line."""
        out = []
        for lineno, value in self._documents():
            try:
                out.append(read(document(value)))
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise self._error(lineno, err) from None
        return out

    def _documents(self) -> Iterator[tuple[int, Any]]:
        """Each JSON value with the line it starts on: those of JSON lines, else the file's one document."""
        lines = [(n, line) for n, line in enumerate(self.data.splitlines(), 1) if line.strip()]
        (start, head), rest = lines[0], lines[1:]
        try:
            first = json.loads(head)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            first = _NOT_JSON
        if first is _NOT_JSON:
            if rest:  # not JSON lines but one document spread over lines
                yield start, self._loads(self.data, 1)
                return
            first = self._loads(head, start)  # raises, naming the line
        yield start, first
        for lineno, line in rest:
            yield lineno, self._loads(line, lineno)

    def _loads(self, text: bytes, lineno: int) -> Any:
        try:
            return json.loads(text)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise self._error(lineno + _error_line(text, err) - 1, f"invalid JSON: {err}") from None

    def _error(self, lineno: int, err: object) -> TraceFileError:
        return TraceFileError(f"{self.path}:{lineno}: not an OTLP/JSON request: {err}")


def read_trace_file(path: str | Path) -> TraceFile:
    """The file at ``path``, decompressed and told protobuf from JSON; protobuf is parsed."""
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
    if data.lstrip()[:1] in (b"{", b"["):
        return TraceFile(p, data)
    try:
        return TraceFile(p, data, ExportTraceServiceRequest.FromString(data))
    except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
        raise TraceFileError(f"{p}: neither OTLP/JSON nor OTLP protobuf: {err}") from None


def read_requests(path: str | Path) -> list[ExportTraceServiceRequest]:
    """The requests of a recorded trace file, in order."""
    trace = read_trace_file(path)
    return [trace.request] if trace.request is not None else trace.parse(request_from_document)


def _error_line(text: bytes, err: ValueError) -> int:
    """The line of ``text`` where JSON decoding failed."""
    if isinstance(err, json.JSONDecodeError):
        return err.lineno
    if isinstance(err, UnicodeDecodeError):
        return text[:err.start].count(b"\n") + 1
    return 1
