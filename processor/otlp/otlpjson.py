"""OTLP/JSON encoding of trace export requests, both directions.

OTLP/JSON is proto3's canonical JSON mapping with the deviations the OTLP
spec requires: trace and span ids are lowercase hex strings (not base64),
enums are integers, keys are lowerCamelCase.  Receivers must ignore unknown
fields and accept enums as integers or names.  protobuf's ``json_format`` does
the mapping; this module only swaps the id encodings, so the file exporter
and the HTTP receiver agree on one implementation.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Id fields of Span and Span.Link, under both names json_format accepts.
_SPAN_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_LINK_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")


class OtlpJsonError(ValueError):
    """The text is not a valid OTLP/JSON ExportTraceServiceRequest; the message says where."""


def request_to_json(req: ExportTraceServiceRequest) -> str:
    """One compact line of OTLP/JSON (no newline)."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    _convert_ids(doc, _b64_to_hex)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def request_from_json(data: str | bytes | dict[str, Any]) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON; unknown fields are ignored, enums may be integers or names."""
    if isinstance(data, dict):
        doc = copy.deepcopy(data)  # the id rewrite must not mutate the caller's dict
    else:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise OtlpJsonError(f"invalid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise OtlpJsonError("expected a JSON object at the top level")
    _convert_ids(doc, _hex_to_b64)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as err:
        raise OtlpJsonError(str(err)) from None


def _b64_to_hex(value: str, where: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_b64(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value  # json_format reports the type error with the field's path
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpJsonError(f"{where}: {value!r} is not a hex id") from None
    return base64.b64encode(raw).decode("ascii")


def _convert_ids(doc: dict[str, Any], convert: Callable[[Any, str], Any]) -> None:
    """Rewrite every span and link id in place with ``convert``."""
    for r, rs in enumerate(_items(doc, "resourceSpans", "resource_spans")):
        for s, ss in enumerate(_items(rs, "scopeSpans", "scope_spans")):
            for i, span in enumerate(_items(ss, "spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                _convert_keys(span, _SPAN_ID_KEYS, convert, where)
                for j, link in enumerate(_items(span, "links")):
                    _convert_keys(link, _LINK_ID_KEYS, convert, f"{where}.links[{j}]")


def _convert_keys(obj: dict[str, Any], keys: tuple[str, ...], convert: Callable[[Any, str], Any],
                  where: str) -> None:
    for key in keys:
        if key in obj:
            obj[key] = convert(obj[key], f"{where}.{key}")


def _items(obj: Any, *keys: str) -> list[dict[str, Any]]:
    """The dict elements of the first list found under ``keys``; malformed shapes are left to json_format."""
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
    return []


__all__ = ["OtlpJsonError", "request_from_json", "request_to_json"]
