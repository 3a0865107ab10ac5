"""Protobuf views of OTLP trace messages, shaped for the decoder's and the projection's hot paths.

Two departures from the OTLP schema, both wire-compatible:

* ``ScopeSpans.spans`` is read as ``repeated bytes``, and a ResourceSpans'
  resource and a ScopeSpans' scope as ``optional bytes``: each arrives as the
  exact bytes the client sent, so the store keeps (and exports) them without
  re-encoding;
* a Resource's ``repeated KeyValue attributes`` is read as ``map<string,
  AnyValue>``: a map entry is encoded exactly like a KeyValue (key = 1,
  value = 2), so the parser (C) builds a hash map and projecting an attribute
  is one lookup instead of a Python loop over all of them.  Duplicate keys,
  which OTLP forbids, resolve to the last one.

For the projection, a span's attribute, event and link lists are also read
with every element as ``bytes`` (``span_lists_view``): the exact encoding of
each KeyValue, by which the projection remembers what it puts in the columns.
For the receivers, a request's spans concatenated are read as one message of
their links and status only (``span_presence_view``): whether any span has
links to check, or a status to read.

A view with bytes where messages were checks nothing inside them: the
receivers check requests whole with the OTLP classes
(``processor.receivers.decode``).  The descriptors are built once, on first
use, from the installed opentelemetry-proto descriptors, so they always match
its version.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

_PACKAGE = "faulttrace.views"
_ANY_VALUE = ".opentelemetry.proto.common.v1.AnyValue"
_F = descriptor_pb2.FieldDescriptorProto


def _attributes_entry(message: descriptor_pb2.DescriptorProto, value_as_bytes: bool) -> None:
    """Nest a map entry ``AttributesEntry`` in ``message``: key = 1, value = 2, encoded
    exactly like a KeyValue; the value an AnyValue, or (``value_as_bytes``) its encoding."""
    entry = message.nested_type.add(name="AttributesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    if value_as_bytes:
        entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    else:
        entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=_ANY_VALUE)


def _as_map(message: descriptor_pb2.DescriptorProto, field_name: str, scope: str) -> None:
    """Turn ``repeated KeyValue <field_name>`` into ``map<string, AnyValue>``."""
    _attributes_entry(message, value_as_bytes=False)
    for f in message.field:
        if f.name == field_name:
            f.type_name = f".{scope}.{message.name}.AttributesEntry"


def _bytes_map(message: descriptor_pb2.DescriptorProto, field_name: str, number: int, scope: str) -> None:
    """Add ``map<string, bytes> <field_name> = <number>``: a KeyValue list read with each value's encoding."""
    _attributes_entry(message, value_as_bytes=True)
    message.field.add(name=field_name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                      type_name=f".{scope}.AttributesEntry")


def _optional_bytes(message: descriptor_pb2.DescriptorProto, name: str, number: int) -> None:
    """A sub-message field read as its exact bytes, keeping presence (proto3 ``optional``)."""
    message.oneof_decl.add(name=f"_{name}")
    message.field.add(name=name, number=number, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL,
                      proto3_optional=True, oneof_index=len(message.oneof_decl) - 1)


@cache
def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)

    fd = descriptor_pb2.FileDescriptorProto(
        name="faulttrace/views.proto", package=_PACKAGE, syntax="proto3",
        dependency=["opentelemetry/proto/common/v1/common.proto",
                    "opentelemetry/proto/resource/v1/resource.proto"])

    scope_spans = fd.message_type.add(name="ScopeSpansView")
    _optional_bytes(scope_spans, "scope", 1)
    scope_spans.field.add(name="spans", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    scope_spans.field.add(name="schema_url", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)

    resource = descriptor_pb2.DescriptorProto()
    resource_pb2.Resource.DESCRIPTOR.CopyToProto(resource)
    resource.name = "ResourceView"
    _as_map(resource, "attributes", _PACKAGE)
    fd.message_type.append(resource)

    resource_spans = fd.message_type.add(name="ResourceSpansView")
    _optional_bytes(resource_spans, "resource", 1)
    resource_spans.field.add(name="scope_spans", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                             type_name=f".{_PACKAGE}.ScopeSpansView")
    resource_spans.field.add(name="schema_url", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)

    # A span's attributes and events only, attribute values as their encoded
    # AnyValue: what projection reads when a trace is released (the span was
    # checked whole when it was received); equal values have equal bytes, so
    # a converted value can be cached by them.  Other fields are skipped.
    attrs = fd.message_type.add(name="SpanAttributesView")
    _bytes_map(attrs, "attributes", 9, f"{_PACKAGE}.SpanAttributesView")
    event = attrs.nested_type.add(name="Event")
    event.field.add(name="time_unix_nano", number=1, type=_F.TYPE_FIXED64, label=_F.LABEL_OPTIONAL)
    event.field.add(name="name", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    _bytes_map(event, "attributes", 3, f"{_PACKAGE}.SpanAttributesView.Event")
    attrs.field.add(name="events", number=11, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                    type_name=f".{_PACKAGE}.SpanAttributesView.Event")
    # links: the linked span's ids only (``link l of s``)
    link = attrs.nested_type.add(name="Link")
    link.field.add(name="trace_id", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    link.field.add(name="span_id", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    attrs.field.add(name="links", number=13, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                    type_name=f".{_PACKAGE}.SpanAttributesView.Link")

    # Spans' attribute, event and link lists with every element as its exact
    # encoding (a KeyValue, an Event, a Link), nothing else read: parsing the
    # concatenation of many spans appends each one's elements to the same
    # lists, in order, so a batch is one parse (``attributes.Projector``).
    lists = fd.message_type.add(name="SpanListsView")
    for name, number in (("attributes", 9), ("events", 11), ("links", 13)):
        lists.field.add(name=name, number=number, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    # Spans' links and status only, each as its exact encoding: the receivers parse a request's
    # spans concatenated with it to learn whether any has links to check or a status to read
    # (``receivers.decode``).
    presence = fd.message_type.add(name="SpanPresenceView")
    presence.field.add(name="links", number=13, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    presence.field.add(name="status", number=15, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED)
    # A KeyValue with its value's encoding, for the odd one the projection's
    # own reading of canonical encodings does not take (fields reordered,
    # repeated or unknown): the same last-one-wins as any protobuf parser.
    key_value = fd.message_type.add(name="KeyValueView")
    key_value.field.add(name="key", number=1, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    key_value.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)

    request = fd.message_type.add(name="RequestView")
    request.field.add(name="resource_spans", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                      type_name=f".{_PACKAGE}.ResourceSpansView")
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in ("RequestView", "ScopeSpansView", "ResourceSpansView", "ResourceView", "SpanAttributesView",
                         "SpanListsView", "SpanPresenceView", "KeyValueView")}


def request_view() -> Any:
    """The class reading an ExportTraceServiceRequest with spans as bytes."""
    return _classes()["RequestView"]


def resource_view() -> Any:
    """The class reading a Resource with map-shaped attributes."""
    return _classes()["ResourceView"]


def resource_spans_view() -> Any:
    """The class reading a ResourceSpans (or a group head of one) with the resource as bytes."""
    return _classes()["ResourceSpansView"]


def span_attributes_view() -> Any:
    """The class reading only a span's attributes and events, attribute values as encoded AnyValue."""
    return _classes()["SpanAttributesView"]



def span_lists_view() -> Any:
    """The class reading a span's (or many concatenated spans') attributes, events and links
    as lists of their elements' exact encodings."""
    return _classes()["SpanListsView"]


def span_presence_view() -> Any:
    """The class reading a span's (or many concatenated spans') links and status (each
    occurrence as its exact encoding)."""
    return _classes()["SpanPresenceView"]


def key_value_view() -> Any:
    """The class reading a KeyValue with the key as bytes and the value as its encoded AnyValue."""
    return _classes()["KeyValueView"]
