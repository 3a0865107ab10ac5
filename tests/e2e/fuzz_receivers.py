"""Fuzz both OTLP receivers alongside good traffic, through a real pipeline into strict sinks.

Mutated requests go to the gRPC receiver (protobuf) and the HTTP receiver
(protobuf and JSON): byte flips, truncations, corrupted length fields and tags,
splices of valid requests, scope or resource bytes that are no
InstrumentationScope or Resource, nesting around the parsers' limits, invalid
UTF-8, ids of the wrong length, unknown fields, broken or many-member gzip;
JSON texts and documents mutated alike.  Valid control requests are sent in
between, on every transport, so mutants and control spans are released,
analysed (rule library and localizer on) and exported together.  Two
exporters (otlp_grpc, otlp_http) deliver to sinks that refuse what a
collector refuses (``tests.support.otlp_sink``).

Figures, per transport and overall: answers by status; crashes (a 5xx,
INTERNAL or UNKNOWN answer, a dropped connection, an error the pipeline
logs); hangs (no answer within the timeout); answers that are not a valid
OTLP response; control spans lost, altered (anything beyond appended rca.*
attributes and rca.finding events, or another resource or scope) or
duplicated; spans the downstream refused (accepted here but refused there:
a gap in the receivers' validation).  Run::

    python -m tests.e2e.fuzz_receivers --mutations 10000 [--seed 1]

``--mutations`` counts per transport; the exit status is 1 unless every
figure that must be 0 is.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import requests
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from processor.otlp.otlpjson import request_from_json, request_to_json
from processor.otlp.views import request_view
from processor.otlp.wire import group_head, length_delimited, varint
from tests.support.harness import EXPORT_METHOD, config_dict, grpc_exporter, start_pipeline, wait_until
from tests.support.otlp_sink import OtlpGrpcSink, OtlpHttpSink

TRANSPORTS = ("grpc/protobuf", "http/protobuf", "http/json")
CONTROL = b"\xc0\x47\x12\x01"  # first bytes of every control trace id
CONTROL_EVERY = 4  # a control request after every this many mutants
TIMEOUT = 10.0  # seconds an answer may take before it counts as a hang
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


# --- figures -----------------------------------------------------------------------------


@dataclass
class Figures:
    mutations: Counter[str] = field(default_factory=Counter)  # per transport
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (transport, status), mutants
    control_answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    crash_bodies: list[bytes] = field(default_factory=list)  # what made them, to replay
    hangs: list[str] = field(default_factory=list)
    invalid_answers: list[str] = field(default_factory=list)
    control_requests: int = 0
    control_spans: int = 0  # acknowledged, each expected at both sinks
    lost: int = 0
    altered: int = 0
    duplicated: int = 0
    annotated: int = 0  # control spans that arrived with rca.* additions (and nothing else added)
    downstream_refused: int = 0
    logged_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (self.crashes or self.hangs or self.invalid_answers or self.lost or self.altered
                    or self.duplicated or self.downstream_refused or self.logged_errors)

    def report(self) -> str:
        lines = [f"{'transport':<15}{'mutations':>10}  answers to mutants | to control requests"]
        for t in TRANSPORTS:
            answers = ", ".join(f"{status} {n}" for (tt, status), n in sorted(self.answers.items()) if tt == t)
            control = ", ".join(f"{status} {n}" for (tt, status), n in sorted(self.control_answers.items())
                                if tt == t)
            lines.append(f"{t:<15}{self.mutations[t]:>10}  {answers} | {control}")
        lines += [
            f"crashes {len(self.crashes)}, hangs {len(self.hangs)}, invalid answers {len(self.invalid_answers)}, "
            f"errors logged by the pipeline {len(self.logged_errors)}",
            f"control: {self.control_requests} requests, {self.control_spans} acknowledged spans (each expected "
            f"at 2 sinks): lost {self.lost}, altered {self.altered}, duplicated {self.duplicated}; "
            f"{self.annotated} arrivals carried rca.* annotations",
            f"spans the downstream refused (accepted but not valid there): {self.downstream_refused}",
            f"{sum(self.mutations.values())} mutations in {self.seconds:.1f}s",
        ]
        for label, items in (("crash", self.crashes), ("hang", self.hangs), ("invalid answer", self.invalid_answers),
                             ("logged", self.logged_errors)):
            lines += [f"  {label}: {item}" for item in items[:5]]
        return "\n".join(lines)


# --- valid requests ------------------------------------------------------------------------


def _any_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return AnyValue(string_value=rng.choice(["", "GET", "résumé ✓ 日本", "x" * rng.randrange(40)]))
    if kind == 1:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 2:
        return AnyValue(int_value=rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-10**6, 10**6)]))
    if kind == 3:
        return AnyValue(double_value=rng.choice([0.0, -0.0, 1.5, float("inf"), float("nan"), 1e300]))
    if kind == 4:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(8)))
    if kind == 5:
        return AnyValue()
    if kind == 6:
        return AnyValue(array_value=ArrayValue(values=[_any_value(rng, depth + 1) for _ in range(rng.randrange(3))]))
    return AnyValue(kvlist_value=KeyValueList(values=_attributes(rng, depth + 1, 3)))


def _attributes(rng: random.Random, depth: int = 0, most: int = 5) -> list[KeyValue]:
    keys = ["service.name", "http.route", "k", "ü", "", "exception.type", "db.system"]
    return [KeyValue(key=rng.choice(keys), value=_any_value(rng, depth)) for _ in range(rng.randrange(most))]


def _span(rng: random.Random, trace_id: bytes, parent: bytes = b"") -> Span:
    span = Span(trace_id=trace_id, span_id=rng.randbytes(7) + b"\x01", parent_span_id=parent,
                name=rng.choice(["GET /pay", "SELECT", "ünï", ""]), kind=rng.randrange(6),
                start_time_unix_nano=1_700_000_000_000_000_000 + rng.randrange(10**9),
                trace_state=rng.choice(["", "k=v"]), flags=rng.randrange(2**32), attributes=_attributes(rng))
    span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**9)
    for _ in range(rng.randrange(3)):
        span.events.add(name=rng.choice(["exception", "log"]), time_unix_nano=span.start_time_unix_nano,
                        attributes=_attributes(rng))
    for _ in range(rng.randrange(2)):
        span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), attributes=_attributes(rng, most=2))
    span.status.code, span.status.message = rng.randrange(3), rng.choice(["", "boom"])
    return span


def seed_request(rng: random.Random) -> ExportTraceServiceRequest:
    """A valid request using most of what OTLP can express (no control trace ids)."""
    req = ExportTraceServiceRequest()
    trace_ids = [b"\x5e" + rng.randbytes(15) for _ in range(rng.randrange(1, 4))]
    for _ in range(rng.randrange(1, 3)):
        rs = ResourceSpans(schema_url=rng.choice(["", "https://opentelemetry.io/schemas/1.21.0"]))
        if rng.random() < 0.8:
            rs.resource.attributes.extend([KeyValue(key="service.name", value=AnyValue(string_value="fuzz")),
                                           *_attributes(rng)])
        for _ in range(rng.randrange(1, 3)):
            ss = ScopeSpans(schema_url=rng.choice(["", "https://scope"]))
            if rng.random() < 0.8:
                ss.scope.name, ss.scope.version = "lib", rng.choice(["", "1.0"])
                ss.scope.attributes.extend(_attributes(rng, most=2))
            ss.spans.extend(_span(rng, rng.choice(trace_ids)) for _ in range(rng.randrange(1, 5)))
            rs.scope_spans.append(ss)
        req.resource_spans.append(rs)
    return req


def control_request(n: int, rng: random.Random) -> ExportTraceServiceRequest:
    """Valid traces (a root, children, an error with an exception the rules blame) with control trace ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.21.0")
    rs.resource.attributes.extend([KeyValue(key="service.name", value=AnyValue(string_value=f"control-{n % 3}")),
                                   KeyValue(key="k8s.pod.name", value=AnyValue(string_value=f"pod-{n % 5}"))])
    ss = rs.scope_spans.add()
    ss.scope.name = "control"
    for t in range(2):
        trace_id = CONTROL + n.to_bytes(4, "big") + bytes([t]) + rng.randbytes(7)
        root = _span(rng, trace_id)
        ss.spans.append(root)
        for _ in range(rng.randrange(1, 5)):
            child = _span(rng, trace_id, root.span_id)
            if rng.random() < 0.3:
                child.status.CopyFrom(Status(code=2, message="failed"))
                child.events.add(name="exception", time_unix_nano=child.end_time_unix_nano, attributes=[
                    KeyValue(key="exception.type", value=AnyValue(string_value="TimeoutError"))])
            ss.spans.append(child)
    return req


# --- mutations -------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("not a varint")
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        shift += 7
        if b < 0x80:
            return value, pos


def wire_fields(data: bytes, start: int = 0, end: int | None = None, depth: int = 0,
                out: list[tuple[str, int, int]] | None = None) -> list[tuple[str, int, int]]:
    """("tag" | "length", offset, width) of the keys and length prefixes in ``data``, guessing that
    length-delimited fields hold messages (a guess that fails just stops the walk there)."""
    out = [] if out is None else out
    end = len(data) if end is None else end
    pos = start
    try:
        while pos < end:
            key, after = _read_varint(data, pos)
            out.append(("tag", pos, after - pos))
            wire, pos = key & 7, after
            if wire == 0:
                _, pos = _read_varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, body = _read_varint(data, pos)
                out.append(("length", pos, body - pos))
                if depth < 12 and body + length <= end:
                    wire_fields(data, body, body + length, depth + 1, out)
                pos = body + length
            else:
                return out
    except ValueError:
        pass
    return out


def _flip(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if out:
            out[rng.randrange(len(out))] ^= rng.randint(1, 255)
    return bytes(out)


def _truncate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    return data[:rng.randrange(len(data))] if data else data


def _corrupt_length(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    lengths = [(o, w) for kind, o, w in wire_fields(data) if kind == "length"]
    if not lengths:
        return _flip(rng, data, seeds)
    offset, width = rng.choice(lengths)
    value, _ = _read_varint(data, offset)
    new = rng.choice([value + rng.randint(1, 9), max(0, value - rng.randint(1, 9)), 0, rng.randrange(2**14),
                      2**31, 2**63 + rng.randrange(2**63)])
    return data[:offset] + varint(new) + data[offset + width:]


def _corrupt_tag(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    tags = [(o, w) for kind, o, w in wire_fields(data) if kind == "tag"]
    if not tags:
        return _flip(rng, data, seeds)
    offset, width = rng.choice(tags)
    key, _ = _read_varint(data, offset)
    new = rng.choice([(key & ~7) | rng.choice([0, 1, 2, 3, 4, 5, 6, 7]), rng.randrange(1, 2**32), 0])
    return data[:offset] + varint(new) + data[offset + width:]


def _splice(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    other = rng.choice(seeds)
    if rng.random() < 0.3:
        return data + other  # two requests concatenated: a valid merge
    return data[:rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]


def _insert_or_delete(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    at = rng.randrange(len(data) + 1)
    choice = rng.randrange(3)
    if choice == 0:
        return data[:at] + rng.randbytes(rng.randint(1, 8)) + data[at:]
    if choice == 1:
        return data[:at] + data[at + rng.randint(1, 16):]
    return data[:at] + data[at:at + rng.randint(1, 32)] + data[at:]  # a range twice


def _frame(span: bytes, *, scope: bytes | None = None, resource: bytes | None = None,
           scope_schema: bytes = b"") -> bytes:
    scope_spans = (length_delimited(1, scope) if scope is not None else b"") + length_delimited(2, span) + scope_schema
    body = (length_delimited(1, resource) if resource is not None else b"") + length_delimited(2, scope_spans)
    return length_delimited(1, body)


def _nested_value(rng: random.Random, depth: int) -> bytes:
    raw = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):
        if rng.random() < 0.5:
            raw = length_delimited(5, length_delimited(1, raw))  # array_value.values
        else:
            raw = length_delimited(6, length_delimited(1, length_delimited(1, b"k") + length_delimited(2, raw)))
    return raw


def _valid_span(rng: random.Random) -> bytes:
    return _span(rng, b"\x5e" + rng.randbytes(15)).SerializeToString()


def _bad_part(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """The measured case and its kin: a scope, resource or span that is not what it claims."""
    garbage = rng.choice([b"\xff\xff\xff", rng.randbytes(rng.randint(1, 12)), b"\x0a\x02\xc3\x28",
                          b"\x08\x01", b"\x1a\x05" + length_delimited(1, b"k") + b"\x12\x01",
                          length_delimited(3, length_delimited(1, b"k") + length_delimited(2, b"\x0a\x01\xff"))])
    where = rng.randrange(3)
    span = _valid_span(rng)
    if where == 0:
        return _frame(span, scope=garbage)
    if where == 1:
        return _frame(span, resource=garbage)
    return _frame(span + garbage)


def _deep(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    depth = rng.choice([rng.randint(40, 52), rng.randint(90, 110), rng.randint(1000, 5000)])
    attr = length_delimited(1, b"k") + length_delimited(2, _nested_value(rng, depth))
    where = rng.randrange(4)
    if where == 0:
        return _frame(_valid_span(rng) + length_delimited(9, attr))
    if where == 1:  # in an event
        return _frame(_valid_span(rng) + length_delimited(11, length_delimited(3, attr)))
    if where == 2:
        return _frame(_valid_span(rng), resource=length_delimited(1, attr))
    return _frame(_valid_span(rng), scope=length_delimited(3, attr))


def _bad_utf8(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    bad = rng.choice([b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"ok\xe2\x82"])
    where = rng.randrange(5)
    span = _valid_span(rng)
    if where == 0:
        return _frame(span + length_delimited(5, bad))  # name
    if where == 1:
        return _frame(span + length_delimited(9, length_delimited(1, bad)))  # an attribute key
    if where == 2:
        return _frame(span, scope=length_delimited(1, bad))  # scope name
    if where == 3:
        return _frame(span, scope_schema=length_delimited(3, bad))  # a schema_url
    return _frame(span + length_delimited(15, length_delimited(2, bad)))  # status message


def _bad_ids(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    req = ExportTraceServiceRequest.FromString(rng.choice(seeds))
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    span = rng.choice(spans)
    which = rng.randrange(4)
    wrong = rng.randbytes(rng.choice([0, 1, 7, 9, 15, 17, 32]))
    if which == 0:
        span.trace_id = wrong
    elif which == 1:
        span.span_id = wrong
    elif which == 2:
        span.parent_span_id = wrong
    else:
        span.links.add(trace_id=wrong if rng.random() < 0.5 else rng.randbytes(16),
                       span_id=rng.randbytes(rng.choice([1, 7, 9])))
    return req.SerializeToString()


def _unknown_fields(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """Valid: fields this schema does not know, at every level; they are kept or dropped, never refused."""
    number = rng.randint(16, 2**29 - 1)
    unknown = rng.choice([
        varint(number << 3) + varint(rng.randrange(2**64)),
        varint(number << 3 | 1) + rng.randbytes(8),
        varint(number << 3 | 5) + rng.randbytes(4),
        length_delimited(number, rng.randbytes(rng.randrange(10))),
        varint(number << 3 | 3) + varint(1 << 3) + b"\x01" + varint(number << 3 | 4),  # a group
    ])
    span = _valid_span(rng)
    where = rng.randrange(4)
    if where == 0:
        return _frame(span + unknown)
    if where == 1:
        return _frame(span, scope=b"\x0a\x03lib" + unknown)
    if where == 2:
        return _frame(span, resource=unknown)
    return data + unknown


def _odd_values(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """Valid, at the edges: enums out of their range (open enums: any int32), extreme times and counts."""
    value = rng.choice([-1, 6, 255, 256, 2**31 - 1, -(2**31)])
    odd = rng.choice([
        varint(6 << 3) + varint(value % 2**64),  # kind
        length_delimited(15, varint(3 << 3) + varint(value % 2**64)),  # status.code
        varint(7 << 3 | 1) + rng.choice([b"\xff" * 8, bytes(8)]),  # start_time_unix_nano
        varint(8 << 3 | 1) + b"\xff" * 8,  # end_time_unix_nano
        varint(10 << 3) + varint(2**32 - 1),  # dropped_attributes_count
        length_delimited(11, varint(1 << 3 | 1) + b"\xff" * 8),  # an event at the end of time
    ])
    return _frame(_valid_span(rng) + odd)


PROTOBUF_MUTATORS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    _flip, _flip, _truncate, _corrupt_length, _corrupt_length, _corrupt_tag, _splice, _insert_or_delete,
    _bad_part, _deep, _bad_utf8, _bad_ids, _unknown_fields, _odd_values,
]


def _json_text_mutation(rng: random.Random, text: bytes, texts: list[bytes]) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return _flip(rng, text, texts)
    if choice == 1:
        return _truncate(rng, text, texts)
    if choice == 2:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice([b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\xff", b"null"]) + text[at:]
    if choice == 3:
        other = rng.choice(texts)
        return text[:rng.randrange(len(text) + 1)] + other[rng.randrange(len(other) + 1):]
    return _insert_or_delete(rng, text, texts)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(10 if depth < 3 else 7)
    simple = [None, True, 0, -1, 2**64, 1.5e308, "", "x", "0" * 40, "NaN"]
    if choice < 7:
        return rng.choice(simple)
    if choice < 9:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["traceId", "spanId", "stringValue", "intValue", "values", "kind", "x"]):
            _random_json(rng, depth + 1) for _ in range(rng.randrange(3))}


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _nodes(v, path + (i,))
    return out


def _json_document_mutation(rng: random.Random, text: bytes, texts: list[bytes]) -> bytes:
    doc = json.loads(text)
    path = rng.choice(_nodes(doc)[1:] or [()])
    if not path:
        return text
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    choice = rng.randrange(6)
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
    elif choice == 1 and isinstance(key, str) and key in ("traceId", "spanId", "parentSpanId"):
        parent[key] = rng.choice([rng.randbytes(rng.choice([1, 7, 9, 15, 17])).hex(), "zz", "",
                                  base64.b64encode(rng.randbytes(16)).decode(), 12])
    elif choice == 2:
        depth = rng.choice([rng.randint(30, 60), rng.randint(250, 260), 10_000])
        parent[key] = json.loads('{"arrayValue":{"values":[' * depth + "1" + "]}}" * depth) if depth < 300 else \
            json.loads("[" * 200 + "]" * 200)
    else:
        parent[key] = _random_json(rng)
    out = json.dumps(doc).encode()
    if choice == 2 and rng.random() < 0.3:  # deeper than json.loads could ever follow
        out = out.replace(b"[]", b"[" * 10_000 + b"]" * 10_000, 1)
    return out


def _json_special(rng: random.Random, text: bytes, texts: list[bytes]) -> bytes:
    return rng.choice([
        b'{"resourceSpans":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"\xc3\x28"},"spans":[]}]}]}',
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"' + b"ab" * 16 + b'","spanId":"'
        + b"cd" * 8 + b'","name":"x","attributes":[{"key":"k","value":{"intValue":"1e999"}}]}]}]}]}',
        b"\xef\xbb\xbf" + text,  # a byte order mark
        b"", b"null", b"[]", b'"x"',
    ])


JSON_MUTATORS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    _json_text_mutation, _json_text_mutation, _json_document_mutation, _json_document_mutation, _json_special,
]


def _http_body(rng: random.Random, body: bytes) -> tuple[bytes, dict[str, str]]:
    """Sometimes gzip: whole, in several members, or broken."""
    choice = rng.randrange(6)
    if choice == 0:
        return gzip.compress(body), {"Content-Encoding": "gzip"}
    if choice == 1:
        cut = rng.randrange(len(body) + 1)
        return gzip.compress(body[:cut]) + gzip.compress(body[cut:]), {"Content-Encoding": "gzip"}
    if choice == 2:
        return _flip(rng, gzip.compress(body), []), {"Content-Encoding": "gzip"}
    return body, {}


# --- sending -------------------------------------------------------------------------


class Clients:
    """One gRPC channel and one HTTP session, reused; every answer classified into ``figures``."""

    def __init__(self, grpc_target: str, http_url: str, figures: Figures) -> None:
        self._channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_send_message_length", -1)])
        self._call = self._channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)
        self._session = requests.Session()
        self._url = http_url
        self._figures = figures

    def close(self) -> None:
        self._channel.close()
        self._session.close()

    def grpc(self, data: bytes, what: str) -> ExportTraceServiceResponse | None:
        """Send; the response when OK (None otherwise), the status counted."""
        transport = "grpc/protobuf"
        try:
            raw = self._call(data, timeout=TIMEOUT)
        except grpc.RpcError as err:
            code = err.code()
            self._count(transport, what, code.name)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                self._figures.hangs.append(f"{transport} {what}")
            elif code not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                self._crash(f"{transport} {what}: {code.name} {err.details()}", data)
            return None
        return self._response(transport, what, raw, PROTOBUF, "OK")

    def http(self, body: bytes, content_type: str, headers: dict[str, str], what: str
             ) -> ExportTraceServiceResponse | None:
        transport = "http/json" if content_type == JSON else "http/protobuf"
        try:
            reply = self._session.post(self._url, data=body, headers={"Content-Type": content_type, **headers},
                                       timeout=TIMEOUT)
        except requests.Timeout:
            self._figures.hangs.append(f"{transport} {what}")
            return None
        except requests.RequestException as err:
            self._crash(f"{transport} {what}: {type(err).__name__}: {err}", body)
            return None
        status = str(reply.status_code)
        if reply.headers.get("Content-Type", "").split(";")[0] != content_type:
            self._figures.invalid_answers.append(f"{transport} {what}: {status} as {reply.headers.get('Content-Type')}")
        if reply.status_code == 200:
            return self._response(transport, what, reply.content, content_type, status)
        self._count(transport, what, status)
        if reply.status_code >= 500:
            self._crash(f"{transport} {what}: {status} {reply.content[:200]!r}", body)
        elif not _is_status(reply.content, content_type):
            self._figures.invalid_answers.append(f"{transport} {what}: {status} body {reply.content[:100]!r}")
        return None

    def _response(self, transport: str, what: str, raw: bytes, content_type: str,
                  status: str) -> ExportTraceServiceResponse | None:
        try:
            if content_type == JSON:
                response = json_format.Parse(raw, ExportTraceServiceResponse())
            else:
                response = ExportTraceServiceResponse.FromString(raw)
        except (DecodeError, json_format.ParseError) as err:
            self._figures.invalid_answers.append(f"{transport} {what}: {status} body {raw[:100]!r}: {err}")
            return None
        partial = response.partial_success.rejected_spans or response.partial_success.error_message
        self._count(transport, what, f"{status} partial" if partial else status)
        return response

    def _count(self, transport: str, what: str, status: str) -> None:
        answers = self._figures.control_answers if what.startswith("control") else self._figures.answers
        answers[(transport, status)] += 1

    def _crash(self, what: str, body: bytes) -> None:
        self._figures.crashes.append(what)
        self._figures.crash_bodies.append(body)


def _is_status(body: bytes, content_type: str) -> bool:
    try:
        if content_type == JSON:
            json_format.Parse(body, status_pb2.Status())
        else:
            status_pb2.Status.FromString(body)
    except (DecodeError, json_format.ParseError):
        return False
    return True


# --- control spans --------------------------------------------------------------------


Placement = tuple[bytes, bytes, bytes]  # resource head, scope head, span bytes


def placements(data: bytes) -> dict[tuple[bytes, bytes], Placement]:
    """(trace id, span id) -> where and as what each control span of an encoded request is."""
    out = {}
    for rs in request_view().FromString(data).resource_spans:
        rhead = group_head(rs.resource if rs.HasField("resource") else None, rs.schema_url)
        for ss in rs.scope_spans:
            shead = group_head(ss.scope if ss.HasField("scope") else None, ss.schema_url)
            for raw in ss.spans:
                if raw[2:2 + len(CONTROL)] != CONTROL:  # trace_id, field 1, comes first in our encoding
                    continue
                span = Span.FromString(raw)
                out[(span.trace_id, span.span_id)] = (rhead, shead, raw)
    return out


def _only_annotations(extra: bytes) -> bool:
    """Whether bytes appended to a span hold nothing but rca.* attributes and rca.finding events."""
    try:
        added = Span.FromString(extra)
    except DecodeError:
        return False
    return (added.ByteSize() == sum(len(length_delimited(9, a.SerializeToString())) for a in added.attributes)
            + sum(len(length_delimited(11, e.SerializeToString())) for e in added.events)
            and all(a.key.startswith("rca.") for a in added.attributes)
            and all(e.name == "rca.finding" for e in added.events))


def check_control(expected: dict[tuple[bytes, bytes], Placement], sinks: list[Any], figures: Figures) -> None:
    for sink in sinks:
        got: dict[tuple[bytes, bytes], list[Placement]] = {}
        for received in sink.received:
            if received.failed_with is None:
                for key, placed in placements(received.raw).items():
                    got.setdefault(key, []).append(placed)
        for key, (rhead, shead, raw) in expected.items():
            arrived = got.get(key, [])
            if not arrived:
                figures.lost += 1
                continue
            figures.duplicated += len(arrived) - 1
            r, s, span = arrived[0]
            annotated = len(span) > len(raw) and _only_annotations(span[len(raw):])
            if (r, s) != (rhead, shead) or not span.startswith(raw) or (len(span) > len(raw) and not annotated):
                figures.altered += 1
            figures.annotated += annotated


# --- the run ------------------------------------------------------------------------


class _Errors(logging.Handler):
    def __init__(self, figures: Figures) -> None:
        super().__init__(logging.ERROR)
        self._figures = figures

    def emit(self, record: logging.LogRecord) -> None:
        self._figures.logged_errors.append(f"{record.name}: {record.getMessage()[:300]}")


def run(mutations: int, seed: int = 1, out: Callable[[str], None] = print) -> Figures:
    """``mutations`` mutants per transport against a fresh pipeline and sinks; the figures."""
    rng = random.Random(seed)
    figures = Figures()
    seeds = [seed_request(rng) for _ in range(40)]
    proto_seeds = [s.SerializeToString() for s in seeds]
    json_seeds = [request_to_json(s).encode() for s in seeds]
    handler = _Errors(figures)
    processor_log = logging.getLogger("processor")
    level = processor_log.level
    processor_log.addHandler(handler)
    processor_log.setLevel(logging.ERROR)
    started = time.monotonic()
    with OtlpGrpcSink() as grpc_sink, OtlpHttpSink() as http_sink:
        config = config_dict(
            {"otlp_grpc": grpc_exporter(grpc_sink.port),
             "otlp_http": {"endpoint": f"http://127.0.0.1:{http_sink.port}", "timeout": "5s",
                           "retry_on_failure": grpc_exporter(0)["retry_on_failure"]}},
            processor={"builtin_rules": True, "localizer": {"enabled": True}, "release_interval": 0.2},
            decision_wait=0.3)
        pipeline = start_pipeline(config)
        clients = Clients(pipeline.grpc_target, pipeline.http_url, figures)
        expected: dict[tuple[bytes, bytes], Placement] = {}
        try:
            for i in range(mutations * len(TRANSPORTS)):
                transport = TRANSPORTS[i % len(TRANSPORTS)]
                _send_mutant(rng, transport, i, clients, proto_seeds, json_seeds)
                figures.mutations[transport] += 1
                if i % CONTROL_EVERY == 0:
                    _send_control(rng, i // CONTROL_EVERY, clients, expected, figures)
                if i and i % 3000 == 0:
                    out(f"  {i} mutations sent, {time.monotonic() - started:.0f}s")
            figures.control_spans = len(expected)
            _settle(pipeline, [grpc_sink, http_sink], len(expected))
        finally:
            clients.close()
            pipeline.stop()
            processor_log.removeHandler(handler)
            processor_log.setLevel(level)
        figures.downstream_refused = int(sum(pipeline.metric("faulttrace_exporter_send_failed_spans_total",
                                                             exporter=e) for e in ("otlp_grpc", "otlp_http")))
        check_control(expected, [grpc_sink, http_sink], figures)
    figures.seconds = time.monotonic() - started
    return figures


def _send_mutant(rng: random.Random, transport: str, i: int, clients: Clients, proto_seeds: list[bytes],
                 json_seeds: list[bytes]) -> None:
    if transport == "http/json":
        mutator = rng.choice(JSON_MUTATORS)
        body = mutator(rng, rng.choice(json_seeds), json_seeds)
        clients.http(*_with_encoding(rng, body, JSON), what=f"mutant {i} ({mutator.__name__})")
        return
    mutator = rng.choice(PROTOBUF_MUTATORS)
    data = mutator(rng, rng.choice(proto_seeds), proto_seeds)
    if transport == "grpc/protobuf":
        clients.grpc(data, what=f"mutant {i} ({mutator.__name__})")
    else:
        clients.http(*_with_encoding(rng, data, PROTOBUF), what=f"mutant {i} ({mutator.__name__})")


def _with_encoding(rng: random.Random, body: bytes, content_type: str) -> tuple[bytes, str, dict[str, str]]:
    encoded, headers = _http_body(rng, body)
    return encoded, content_type, headers


def _send_control(rng: random.Random, n: int, clients: Clients, expected: dict[tuple[bytes, bytes], Placement],
                  figures: Figures) -> None:
    """A valid request on the next transport: it must be taken whole, and its spans arrive."""
    request = control_request(n, rng)
    transport = TRANSPORTS[n % len(TRANSPORTS)]
    what = f"control {n}"
    if transport == "grpc/protobuf":
        data = request.SerializeToString()
        response = clients.grpc(data, what)
    elif transport == "http/protobuf":
        data = request.SerializeToString()
        cut = rng.randrange(len(data) + 1)  # gzip in two members, now and then
        body, headers = (gzip.compress(data[:cut]) + gzip.compress(data[cut:]), {"Content-Encoding": "gzip"}) \
            if n % 2 else (data, {})
        response = clients.http(body, PROTOBUF, headers, what)
    else:
        text = request_to_json(request)
        data = request_from_json(text).SerializeToString()  # what the receiver stores of it
        response = clients.http(text.encode(), JSON, {}, what)
    figures.control_requests += 1
    if response is None or response.HasField("partial_success"):
        figures.crashes.append(f"{transport} {what}: a valid request was not taken whole ({response})")
        return
    expected.update(placements(data))


def _settle(pipeline: Any, sinks: list[Any], spans: int) -> None:
    """Wait until both sinks hold every control span (or give up after a while), then a little more."""
    def arrived(sink: Any) -> int:
        return sum(len(placements(r.raw)) for r in sink.received if r.failed_with is None)

    try:
        wait_until(lambda: all(arrived(s) >= spans for s in sinks), timeout=60, what="control spans at the sinks")
    except AssertionError:
        pass  # counted as lost by check_control
    time.sleep(1.0)  # late duplicates, if any, would show now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutations", type=int, default=10_000, help="mutated requests per transport")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", metavar="DIR", help="write the request behind each crash here, to replay")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the figures count errors; keep the output to them
    figures = run(args.mutations, args.seed)
    print(figures.report())
    if args.keep:
        for n, body in enumerate(figures.crash_bodies):
            path = os.path.join(args.keep, f"crash-{n}.bin")
            with open(path, "wb") as f:
                f.write(body)
    return 0 if figures.clean else 1


if __name__ == "__main__":
    sys.exit(main())
