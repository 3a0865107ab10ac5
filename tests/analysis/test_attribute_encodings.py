"""processor.analysis.attributes: span attributes read from their KeyValue encodings.

The Projector reads a batch's spans in one parse and remembers what each
encoded KeyValue puts in the columns; any valid encoding must project as the
OTLP classes read it (the last of a key wins), which ``reference`` computes
span by span.  Spans are written byte by
byte here so the encodings the usual serializer never makes (long varints,
fields reordered, repeated or unknown, duplicate keys) reach the store.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

import processor.analysis.attributes as attributes_module
from dsl import AttrRef, AttrSource, AttrType, column_name
from dsl.projection import EVENT_LIST, LINK_LIST
from processor.analysis.attributes import Projection, Projector, convert_value
from processor.otlp.views import span_attributes_view
from processor.receivers.decode import decode
from tests.support.harness import av, kv, sid, tid

S, E = AttrSource.SPAN, AttrSource.EVENT
LONG_KEY = "k" * 200           # key length 200: a two-byte varint
LONG_VALUE = "v" * 20_000      # value length 20_000: three-byte varints, longer than any cached KeyValue


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def key_value(key: str, value: object) -> bytes:
    """The usual KeyValue encoding: key, then value."""
    return kv(key, value).SerializeToString()


def span(n: int, kvs: list[bytes], tail: bytes = b"") -> bytes:
    """A span's encoding with ``kvs`` as its attributes (each a KeyValue's bytes), then ``tail``."""
    head = field(1, tid(n)) + field(2, sid(n)) + field(5, f"op{n}".encode())
    return head + b"".join(field(9, x) for x in kvs) + tail


def stored(spans: list[bytes]) -> tuple[pa.Table, dict[int, bytes]]:
    """The spans as the store keeps them (the receiver checks each and keeps its bytes)."""
    resource = Resource(attributes=[kv("service.name", "api")]).SerializeToString()
    request = field(1, field(1, resource) + field(2, b"".join(field(2, s) for s in spans)))
    batch = decode(request).batch
    assert batch.table.column("raw").to_pylist() == spans
    return batch.table, batch.resources


def reference(raws: list[bytes], ref: AttrRef) -> list[object]:
    """A span attribute column as the OTLP classes read each span (the last of a key wins)."""
    out = []
    for raw in raws:
        value = {a.key: a.value for a in Span.FromString(raw).attributes}.get(ref.key)
        out.append(None if value is None else convert_value(value, ref.type))
    return out


def column(table: pa.Table, ref: AttrRef) -> list:
    return table.column(column_name(ref)).to_pylist()


KEYS = ["a", "b", LONG_KEY, "arr", "map", ""]
TYPES = [AttrType.STRING, AttrType.INT, AttrType.DOUBLE, AttrType.ANY, AttrType.STRING_ARRAY]
REFS = [AttrRef(S, k, t) for k in KEYS for t in TYPES]

ODD_SPANS = [
    # long key and value: multi-byte varints, a KeyValue too long to remember
    [key_value(LONG_KEY, LONG_VALUE), key_value("a", LONG_VALUE)],
    # duplicate keys: the last wins, also when its value has another type (nil), or no value
    [key_value("a", "first"), key_value("b", 1), key_value("a", "second")],
    [key_value("a", "x"), key_value("a", 7)],
    [key_value("a", "x"), field(1, b"a")],
    # fields reordered; a key given twice (the last counts); an unknown field
    [field(2, av("late").SerializeToString()) + field(1, b"a")],
    [field(1, b"b") + field(2, av(5).SerializeToString()) + field(1, b"a")],
    # (field 3 is newer OTLP's key_strindex: reading attributes as a map dropped such a KeyValue)
    [field(1, b"a") + field(2, av("u").SerializeToString()) + varint(3 << 3) + varint(300)],
    # a value given twice (the last counts); lengths as non-minimal varints
    [field(1, b"a") + field(2, av("one").SerializeToString()) + field(2, av("two").SerializeToString())],
    [b"\x0a\x81\x00a" + b"\x12\x83\x00" + av("m").SerializeToString()],
    # empty values, empty KeyValues, an empty key; arrays and kvlists
    [key_value("a", ""), key_value("b", 0), b"", key_value("", "nokey")],
    [key_value("arr", ["x", "y"]), key_value("map", {"p": 1, "q": ["r"]}), key_value("a", [1, 2])],
    [],
]


def test_every_encoding_projects_as_the_otlp_classes_read_it():
    raws = [span(n, kvs) for n, kvs in enumerate(ODD_SPANS * 2, start=1)]
    table, resources = stored(raws)
    projector = Projector(Projection.of(REFS))
    for _ in range(2):  # the second time from the remembered KeyValues
        out = projector.project(table, resources)
        for ref in REFS:
            assert column(out, ref) == reference(raws, ref), ref
    assert column(out, AttrRef(S, "a"))[:9] == [LONG_VALUE, "second", None, None, "late", None, "u", "two", "m"]
    assert column(out, AttrRef(S, LONG_KEY)) == ([LONG_VALUE] + [None] * (len(ODD_SPANS) - 1)) * 2
    # the spans read one at a time (when a batch cannot be split by its end marks) give the same
    one_by_one: list = [None] * len(REFS)
    projector._spans_one_by_one(raws, one_by_one)
    assert [c or [None] * len(raws) for c in one_by_one] == [column(out, r) for r in projector.projection.refs]


def test_spans_split_over_parse_calls_and_a_full_cache_keep_their_values(monkeypatch):
    monkeypatch.setattr(attributes_module, "CHUNK", 3)
    monkeypatch.setattr(attributes_module, "CACHED_VALUES", 4)
    raws = [span(n, [key_value("a", f"/item/{n % 7}"), key_value("b", n % 5), key_value("z", n)])
            for n in range(1, 41)]
    table, resources = stored(raws)
    projector = Projector(Projection.of(REFS))
    out = projector.project(table, resources)
    assert column(out, AttrRef(S, "a")) == [f"/item/{n % 7}" for n in range(1, 41)]
    assert column(out, AttrRef(S, "b", AttrType.INT)) == [n % 5 for n in range(1, 41)]
    assert len(projector._kv_cache) <= 4


def test_a_key_of_ever_new_values_is_not_remembered_past_its_share(monkeypatch):
    monkeypatch.setattr(attributes_module, "KEY_VALUES_REMEMBERED", 3)
    raws = [span(n, [key_value("id", f"req-{n}"), key_value("a", f"/item/{n % 2}")]) for n in range(1, 21)]
    table, resources = stored(raws)
    projector = Projector(Projection.of([AttrRef(S, "id"), AttrRef(S, "a")]))
    out = projector.project(table, resources)
    assert column(out, AttrRef(S, "id")) == [f"req-{n}" for n in range(1, 21)]
    assert column(out, AttrRef(S, "a")) == [f"/item/{n % 2}" for n in range(1, 21)]
    remembered = [k for k in projector._kv_cache if b"req-" in k]
    assert len(remembered) == 3 and key_value("a", "/item/1") in projector._kv_cache


def test_a_spent_key_is_passed_over_only_in_its_usual_encoding(monkeypatch):
    # "id" is not projected and shows ever-new values: past its share its new values are passed
    # over by their head (0x0A, size, key, 0x12), unless the rest is not one value to the end
    monkeypatch.setattr(attributes_module, "KEY_VALUES_REMEMBERED", 3)
    odd = [
        field(1, b"id") + field(2, av("late").SerializeToString()) + field(1, b"a"),   # the key is "a"
        field(1, b"id") + field(2, av("x").SerializeToString()) + field(2, av("y").SerializeToString()),
        field(1, b"id"),   # a key without a value
    ]
    raws = [span(n, [key_value("id", f"req-{n}"), key_value("a", f"/item/{n % 2}")]) for n in range(1, 21)]
    raws += [span(20 + n, [key_value("a", "before"), kv_]) for n, kv_ in enumerate(odd, start=1)]
    table, resources = stored(raws)
    projector = Projector(Projection.of([AttrRef(S, "a")]))
    out = projector.project(table, resources)
    assert projector._spent == {b"\x0a\x02id\x12"}
    assert column(out, AttrRef(S, "a")) == [f"/item/{n % 2}" for n in range(1, 21)] + ["late", "before", "before"]
    assert column(out, AttrRef(S, "a")) == reference(raws, AttrRef(S, "a"))


def test_events_event_lists_and_links_come_with_the_attributes():
    exception = AttrRef(E, "exception.type", event="exception")
    present = AttrRef(E, "", AttrType.PRESENT, event="exception")
    sizes = AttrRef(AttrSource.EVENTS, "size", AttrType.INT)
    refs = [AttrRef(S, "a"), exception, present, sizes, EVENT_LIST, LINK_LIST]

    def event(name: str, time: int, kvs: list[bytes]) -> bytes:
        return b"\x09" + time.to_bytes(8, "little") + field(2, name.encode()) + b"".join(field(3, x) for x in kvs)

    link = field(1, tid(99)) + field(2, sid(99))
    raws = [
        span(1, [key_value("a", "x")], field(11, event("exception", 5, [key_value("exception.type", "E1")]))
             + field(11, event("exception", 6, [key_value("exception.type", "E2")]))
             + field(11, event("message", 7, [key_value("size", 10)]))),
        span(2, [key_value("a", "y")]),
        span(3, [], field(13, link) + field(11, event("message", 8, [key_value("size", "big")]))),
    ]
    table, resources = stored(raws)
    out = Projector(Projection.of(refs)).project(table, resources)
    assert column(out, AttrRef(S, "a")) == ["x", "y", None]
    assert column(out, exception) == ["E1", None, None]  # the first event of a name
    assert column(out, present) == [True, False, False]
    assert column(out, sizes) == [[None, None, 10], None, [None]]
    assert column(out, EVENT_LIST) == [[{"name": "exception", "time": 5}, {"name": "exception", "time": 6},
                                        {"name": "message", "time": 7}], None, [{"name": "message", "time": 8}]]
    assert column(out, LINK_LIST) == [None, None, [{"trace_id": tid(99), "span_id": sid(99)}]]


def test_an_attribute_that_is_no_key_value_fails_as_before():
    table, resources = stored([span(1, [key_value("a", "x")]), span(2, [key_value("a", "y")])])
    bad = table.set_column(table.schema.get_field_index("raw"), "raw",
                           pa.array([span(1, [b"\xff"]), span(2, [])], pa.binary()))
    with pytest.raises(DecodeError):
        span_attributes_view().FromString(bad.column("raw")[0].as_py())  # what reading a map of it did
    with pytest.raises(DecodeError):
        Projector(Projection.of([AttrRef(S, "a")])).project(bad, resources)


def long_entries(long: pa.Table, raws: list[bytes]) -> list[list[tuple]]:
    """Each span's rows of a long form as (key, type, sval, nval), sorted by key; a key's entries
    (an array's elements) stay in order.  Which key comes first is no part of the long form: the
    map spans were once read into gave its keys in an order of its own."""
    per: dict[bytes, list[tuple]] = {}
    for r in long.to_pylist():
        per.setdefault(r["span_id"], []).append((r["key"], r["type"], r["sval"], r["nval"]))
    return [sorted(per.get(Span.FromString(raw).span_id, []), key=lambda e: e[0]) for raw in raws]


def long_reference(raws: list[bytes]) -> list[list[tuple]]:
    """Each span's long form as the OTLP classes read it (the last of a key wins; the first event of
    each name), no key having shown enough values to be found high-cardinality."""
    out = []
    for raw in raws:
        span = Span.FromString(raw)
        attrs = {a.key: a.value for a in span.attributes}
        for name in dict.fromkeys(e.name for e in span.events):
            event = next(e for e in span.events if e.name == name)
            attrs.update({f"{name}:{k}": v for k, v in {a.key: a.value for a in event.attributes}.items()})
        entries = [e for k, v in attrs.items() for e in attributes_module._long_entries(k, attributes_module._python_value(v))]
        out.append(sorted(entries, key=lambda e: e[0]))
    return out


def long_form(raws: list[bytes]) -> pa.Table:
    table, _ = stored(raws)
    return table.select(["trace_id", "span_id", "service", "name", "raw"])


def test_the_long_form_reads_every_encoding_as_the_otlp_classes_read_it():
    with_events = Span(trace_id=tid(99), span_id=sid(99), name="op99", attributes=[kv("a", "x")])
    for name, value in (("exception", "E"), ("retry", 1), ("exception", "later")):
        with_events.events.add(name=name, attributes=[kv("v", value), kv("v", value)])
    odd = [span(n, kvs) for n, kvs in enumerate(ODD_SPANS * 2, start=1)]
    raws = [*odd[:3], with_events.SerializeToString(), *odd[3:]]   # the events' entries in their span's place
    long = attributes_module.LongForm()
    for _ in range(2):  # the second time from the remembered KeyValues
        assert long_entries(long.table(long_form(raws)), raws) == long_reference(raws)
    assert long_entries(long.table(long_form(raws)), raws)[1] == [("a", "string", "second", None),
                                                                   ("b", "int", None, 1.0)]


def test_the_long_form_in_one_parse_equals_the_spans_parsed_one_by_one(monkeypatch):
    # spans over several parse calls, batches and a key found high-cardinality midway (its long
    # values then presence); duplicate keys, odd encodings, empty attribute lists between them
    monkeypatch.setattr(attributes_module, "CHUNK", 7)
    seen = attributes_module.KeyCardinality.MIN_SEEN
    spans = []
    for i in range(3 * seen):
        kvs = [key_value("request.id", f"id-{i}"), key_value("route", "/x" if i % 3 else "/y"),
               key_value("n", i), key_value("tags", ["a", str(i % 2)])]
        if i % 5 == 0:
            kvs += [key_value("request.id", "" if i % 10 else f"dup-{i}"), key_value("route", "/z")]
        if i % 7 == 0:
            kvs = []
        spans.append(kvs + ODD_SPANS[i % len(ODD_SPANS)])
    raws = [span(n, kvs) for n, kvs in enumerate(spans, start=1)]
    batched, alone = attributes_module.LongForm(), attributes_module.LongForm()
    for at in range(0, len(raws), seen):   # batches of MIN_SEEN spans
        part = raws[at:at + seen]
        one_by_one = []
        for raw in part:   # as the OTLP classes read each span: the last of a key wins
            numbers: list[int] = []
            alone.add_span({a.key: a.value.SerializeToString() for a in Span.FromString(raw).attributes}.items(),
                           numbers)
            one_by_one.append(sorted((alone._entries[n] for n in numbers), key=lambda e: e[0]))
        assert long_entries(batched.table(long_form(part)), part) == one_by_one
        assert batched.cardinality.high == alone.cardinality.high
        assert batched.cardinality.decided == alone.cardinality.decided
    assert "request.id" in batched.cardinality.high and "route" not in batched.cardinality.high
    rows = long_entries(batched.table(long_form(raws[-3:])), raws[-3:])
    assert ("request.id", "string", None, None) in rows[0]   # presence only, once found high
