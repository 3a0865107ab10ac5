"""Editing encoded spans: append attributes and events to a span's bytes without re-encoding it.

A protobuf message is the concatenation of its fields and repeated fields may
recur anywhere, so appending encoded ``Span.attributes`` (field 9) and
``Span.events`` (field 11) entries to a span's original bytes yields a valid
span that every parser reads with the additions.  Spans nobody annotates keep
their exact bytes; annotated ones keep theirs as a prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.otlp.wire import SPAN_ATTRIBUTES, SPAN_EVENTS, length_delimited

Scalar = str | bool | int | float
AttrValue = Scalar | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]


def any_value(value: AttrValue) -> AnyValue:
    """An OTLP AnyValue for a primitive or a homogeneous array of primitives."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    raise TypeError(f"unsupported attribute value {value!r}")


def key_values(attributes: Mapping[str, AttrValue]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_unix_nano: int
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Annotation:
    """What to add to one span."""

    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    events: Sequence[SpanEvent] = ()

    def encode(self) -> bytes:
        """The bytes to append to the span: one field 9 per attribute, one field 11 per event."""
        parts = [length_delimited(SPAN_ATTRIBUTES, kv.SerializeToString()) for kv in key_values(self.attributes)]
        for ev in self.events:
            msg = Span.Event(name=ev.name, time_unix_nano=ev.time_unix_nano, attributes=key_values(ev.attributes))
            parts.append(length_delimited(SPAN_EVENTS, msg.SerializeToString()))
        return b"".join(parts)


def append_to_spans(raw: list[bytes], edits: Mapping[int, Annotation | bytes]) -> list[bytes]:
    """Span bytes with the edits (row index -> annotation or pre-encoded bytes) appended.

    Rows without an edit are the very same bytes objects; the list is new.
    """
    out = list(raw)
    for row, edit in edits.items():
        out[row] = out[row] + (edit if isinstance(edit, bytes) else edit.encode())
    return out
