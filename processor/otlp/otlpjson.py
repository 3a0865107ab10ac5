"""OTLP/JSON: the one mapping between its documents and faulttrace's values, both directions.

OTLP/JSON is proto3's canonical JSON mapping with the deviations the OTLP
spec requires: trace and span ids are lowercase hex strings (not base64),
enums are integers, keys are lowerCamelCase.  Receivers must ignore unknown
fields and accept enums as integers or names.

Everything that reads OTLP/JSON reads it here, so every reader takes the same
documents: ids in hex (or in base64, proto3's own mapping, which some
exporters write), enums as integers, numeric strings or names (an unknown
name is 0: json_format ignores it), keys in camelCase or snake_case, and
``instrumentationLibrarySpans`` (OTLP before 1.0) for ``scopeSpans``.

* ``request_from_json`` builds the protobuf message: protobuf's
  ``json_format`` does the mapping once the ids are swapped to base64 (the
  HTTP receiver; recorded trace files through ``processor.otlp.tracefile``).
* ``spans`` walks a parsed document straight to span values, for readers to
  whom building messages would cost more than their own work: the localizer
  reads datasets of hundreds of thousands of spans (``processor.localizer.spans``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# The keys of a field, camelCase first: OTLP/JSON writes camelCase, json_format also reads the proto names.
_RESOURCE_SPANS = ("resourceSpans", "resource_spans")
_SCOPE_SPANS = ("scopeSpans", "scope_spans")
_LEGACY_SCOPE_SPANS = ("instrumentationLibrarySpans", "instrumentation_library_spans")
_LEGACY_SCOPE = ("instrumentationLibrary", "instrumentation_library")
# Id fields of Span and Span.Link, under both names json_format accepts.
_SPAN_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_LINK_ID_KEYS = ("traceId", "spanId", "trace_id", "span_id")
_ID_SIZES = (8, 16)  # span and trace ids: base64 that decodes to another size is not taken for one

# JSON nested deeper than this is refused before it is parsed: far deeper than any document json_format
# takes (it stops at 100 nested messages), far shallower than the recursion that would stop json.loads.
MAX_JSON_DEPTH = 256
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 opens, -1 closes

SPAN_KINDS = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
              "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}
STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}

# What ``spans`` decodes of every span, in this order: trace_id, span_id, parent_span_id (None for a
# root), service (its resource's ``service.name``), name, kind, start_ns, end_ns, status_code, status_message.
Intrinsics = tuple[bytes, bytes, bytes | None, str, str, int, int, int, int, str]


class OtlpJsonError(ValueError):
    """The text is not a valid OTLP/JSON ExportTraceServiceRequest; the message says where."""


# ---- protobuf messages ------------------------------------------------------------------


def request_to_json(req: ExportTraceServiceRequest) -> str:
    """One compact line of OTLP/JSON (no newline)."""
    return json.dumps(request_to_document(req), separators=(",", ":"), ensure_ascii=False)


def request_to_document(req: ExportTraceServiceRequest) -> dict[str, Any]:
    """``req`` as a parsed OTLP/JSON document."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    _convert_ids(doc, lambda value, where: base64.b64decode(value).hex())
    return doc


def request_from_json(data: str | bytes | dict[str, Any]) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON; unknown fields are ignored, enums may be integers or names."""
    # the rewrite for json_format must not mutate the caller's dict
    return request_from_document(copy.deepcopy(data) if isinstance(data, dict) else parse_json(data))


def request_from_document(doc: dict[str, Any]) -> ExportTraceServiceRequest:
    """``request_from_json`` of a parsed document the caller gives up: it is rewritten in place."""
    _convert_ids(doc, lambda value, where: base64.b64encode(span_id(value, where)).decode("ascii"))
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as err:
        raise OtlpJsonError(str(err)) from None


def _convert_ids(doc: dict[str, Any], convert: Callable[[Any, str], Any]) -> None:
    """Rewrite every span and link id in place with ``convert``, legacy keys under their current names."""
    for where, rs, ss in _scopes(doc):
        _rename(rs, _LEGACY_SCOPE_SPANS, _SCOPE_SPANS)
        _rename(ss, _LEGACY_SCOPE, ("scope",))
        for i, span in enumerate(_objects(ss, ("spans",), f"{where}.spans")):
            _convert_keys(span, _SPAN_ID_KEYS, convert, f"{where}.spans[{i}]")
            for j, link in enumerate(_objects(span, ("links",), f"{where}.spans[{i}].links")):
                _convert_keys(link, _LINK_ID_KEYS, convert, f"{where}.spans[{i}].links[{j}]")


def _convert_keys(obj: dict[str, Any], keys: tuple[str, ...], convert: Callable[[Any, str], Any],
                  where: str) -> None:
    for key in keys:
        if key in obj:
            obj[key] = convert(obj[key], f"{where}.{key}")


def _rename(obj: dict[str, Any], legacy: tuple[str, ...], current: tuple[str, ...]) -> None:
    """A legacy field under its current name, unless the current one is given (the legacy one is then ignored)."""
    for key in legacy:
        if obj.get(key) is not None and all(obj.get(c) is None for c in current):
            obj[current[0]] = obj.pop(key)


# ---- values ---------------------------------------------------------------------------------


def parse_json(data: str | bytes) -> dict[str, Any]:
    """The top-level object of a JSON text (nested at most ``MAX_JSON_DEPTH`` deep)."""
    _check_depth(data)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OtlpJsonError(f"invalid JSON: {err}") from None
    return document(value)


def _check_depth(data: str | bytes) -> None:
    """OtlpJsonError if the brackets and braces of ``data`` outside strings nest deeper than
    ``MAX_JSON_DEPTH`` anywhere: deeper than a parser reading it would recurse, valid or not."""
    text = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if b"\\" in text:  # escapes first, read left to right as JSON does: no quote is left escaped
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Quotes and brackets only.  Two adjacent quotes enclose a string without brackets (nearly all
    # strings) or lie between two strings: dropping them leaves every bracket where it was.
    marks = text.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])  # what lies outside strings
    steps = memoryview(marks.translate(_STEPS)).cast("b")
    if max(accumulate(steps), default=0) > MAX_JSON_DEPTH:
        raise OtlpJsonError(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")


def document(value: Any) -> dict[str, Any]:
    """Parsed JSON as an OTLP/JSON document: it must be an object."""
    if not isinstance(value, dict):
        raise OtlpJsonError("expected a JSON object at the top level")
    return value


def span_id(value: Any, where: str) -> bytes:
    """A trace or span id: hex as OTLP/JSON writes it, or base64 as proto3's mapping does."""
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (TypeError, ValueError, binascii.Error):
        raw = b""
    if len(raw) not in _ID_SIZES:
        raise OtlpJsonError(f"{where}: {value!r} is not a hex id")
    return raw


def enum(value: Any, names: dict[str, int]) -> int:
    """An enum given as an integer, a numeric string or a name (an unknown name is 0, as json_format ignores it)."""
    if isinstance(value, str):
        if value in names:
            return names[value]
        return int(value) if value.lstrip("-").isdigit() else 0
    return 0 if value is None else int(value)


def attributes(kvs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Attribute key -> its AnyValue object as written (``any_value`` converts one)."""
    return {kv.get("key", ""): kv.get("value") for kv in kvs or ()}


def attribute_values(kvs: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Attribute key -> its value as a Python value (``any_value``)."""
    return {key: any_value(value) for key, value in attributes(kvs).items()}


def any_value(value: dict[str, Any] | None) -> Any:
    """An AnyValue as a Python value (str, bool, int, float, bytes, list or dict); None when empty."""
    for key, field in (value or {}).items():
        convert = _ANY_VALUE_KINDS.get(key)
        if convert is not None and field is not None:
            return convert(field)
    return None


def _array(value: dict[str, Any]) -> list[Any]:
    return [any_value(v) for v in value.get("values") or ()]


def _kvlist(value: dict[str, Any]) -> dict[str, Any]:
    return attribute_values(value.get("values"))


_ANY_VALUE_KINDS: dict[str, Callable[[Any], Any]] = {
    "stringValue": str, "string_value": str,
    "boolValue": bool, "bool_value": bool,
    "intValue": int, "int_value": int,  # int64 travels as a JSON string
    "doubleValue": float, "double_value": float,
    "arrayValue": _array, "array_value": _array,
    "kvlistValue": _kvlist, "kvlist_value": _kvlist,
    "bytesValue": base64.b64decode, "bytes_value": base64.b64decode,
}


# ---- walking a document ---------------------------------------------------------------------


def spans(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any], Intrinsics]]:
    """Every span of ``doc``: its resource's ``attributes``, the span object as written, and its
    ``Intrinsics``.  A malformed span is an OtlpJsonError saying where it is."""
    last_rs: dict[str, Any] | None = None
    resource: dict[str, Any] = {}
    service = ""
    for where, rs, ss in _scopes(doc):
        if rs is not last_rs:
            last_rs, resource = rs, attributes((rs.get("resource") or {}).get("attributes"))
            service = any_value(resource.get("service.name"))
            service = service if isinstance(service, str) else ""
        for i, span in enumerate(_list(ss, ("spans",), f"{where}.spans")):
            try:
                intrinsics = _intrinsics(span, service)
            except OtlpJsonError as err:
                raise OtlpJsonError(f"{where}.spans[{i}].{err}") from None
            except (TypeError, ValueError, AttributeError) as err:
                problem = f"malformed span: {err}" if isinstance(span, dict) else _not_an_object(span)
                raise OtlpJsonError(f"{where}.spans[{i}]: {problem}") from None
            yield resource, span, intrinsics


def _intrinsics(span: dict[str, Any], service: str) -> Intrinsics:
    # the hot loop of reading a dataset: integers and hex ids take no detour through the general conversions
    parent = span.get("parentSpanId") or span.get("parent_span_id")
    status = span.get("status") or {}
    kind, code = span.get("kind"), status.get("code")
    return (
        _id(span.get("traceId") or span.get("trace_id"), "traceId"),
        _id(span.get("spanId") or span.get("span_id"), "spanId"),
        _id(parent, "parentSpanId") if parent else None,
        service,
        span.get("name", ""),
        kind if type(kind) is int else enum(kind, SPAN_KINDS),
        int(span.get("startTimeUnixNano") or span.get("start_time_unix_nano") or 0),
        int(span.get("endTimeUnixNano") or span.get("end_time_unix_nano") or 0),
        code if type(code) is int else enum(code, STATUS_CODES),
        status.get("message", ""),
    )


def _id(value: Any, key: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        if not value:
            raise OtlpJsonError(f"{key}: missing") from None
        return span_id(value, key)


def _scopes(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every scope of every resource: its path for messages, its resourceSpans object, its scopeSpans one."""
    for r, rs in enumerate(_objects(doc, _RESOURCE_SPANS, "resourceSpans")):
        where = f"resourceSpans[{r}]"
        for s, ss in enumerate(_objects(rs, _SCOPE_SPANS + _LEGACY_SCOPE_SPANS, f"{where}.scopeSpans")):
            yield f"{where}.scopeSpans[{s}]", rs, ss


def _objects(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> list[dict[str, Any]]:
    """The list of objects under the first of ``keys`` given (null or absent: none)."""
    items = _list(obj, keys, where)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise OtlpJsonError(f"{where}[{i}]: {_not_an_object(item)}")
    return items


def _not_an_object(value: Any) -> str:
    return f"expected an object, not {type(value).__name__}"


def _list(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> list[Any]:
    """The list under the first of ``keys`` given (null or absent: empty)."""
    for key in keys:
        value = obj.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise OtlpJsonError(f"{where}: expected a list, not {type(value).__name__}")
            return value
    return []


__all__ = ["SPAN_KINDS", "STATUS_CODES", "Intrinsics", "OtlpJsonError", "any_value", "attribute_values", "attributes",
           "document", "enum", "parse_json", "request_from_document", "request_from_json", "request_to_document",
           "request_to_json", "span_id", "spans"]
