"""Attribute projection: the columns analysis reads beyond a span's intrinsics.

The rules and the localizer name the attributes they read (``dsl.AttrRef``:
span, resource or event attributes, each with a type); a ``Projection`` is
that set laid out as typed columns.  The store keeps each span as received
(intrinsics, group ids, bytes) and the columns are decoded from the span's
bytes only when its trace is released for analysis (``Projector``), in the
analysis process: on the receiving process's hot path they cost more than all
the rest of decoding (measured: 8 of 11 µs a span for the 39 attributes of
the rule library plus 50 benchmark rules).

Decoding parses many spans at once through ``otlp.views.span_lists_view``
(their attributes as a list of encoded KeyValues) and remembers, per
distinct KeyValue encoding, what it puts in the columns: attributes repeat
across spans (routes, hosts, status codes, pod names), so most cost one
dictionary lookup, and one not projected no more.  A new encoding is split
into key and value in place (or, unusually encoded, parsed) and its value
converted once per distinct encoding and column type.  Events and links are
read per span (``otlp.views.span_attributes_view``), only for spans that
have them.  Conversion is nil-safe: a value of another type than the
column's is nil (an ``ANY`` column holds every value's text).

A rule set with an ``event`` or ``link`` relation asks for per-span lists
(``AttrSource.EVENTS``/``LINKS``): every event's (name, time), each event's
value of an attribute (aligned with them, nil where one lacks it), every
link's (trace id, span id); the rules' prepare step makes them long-form
tables (``dsl.compiler``).  Other rule sets never decode them.

``ALL_ATTRIBUTES`` asks for every span attribute at once, in long form: per
span and value ``(key, type, sval, nval)`` — type ``string``, ``bool``,
``int``, ``double``, ``string[]``, …, the value as text (strings, bools,
array elements) and as a number (ints, doubles) — for analyses that learn
what any attribute normally holds (the localizer's silent abnormality).  An
array gives one entry per element (an empty one the entry ``[]``); the
attributes of the span's first event of each name come too, keyed
``event:key`` (``message:rpc.message.uncompressed_size``).  Decoding every
attribute of every span would cost more than the rest of analysis, so the
column is left empty at release and the span bytes stay with the batch
(``runner``): the analyzer decodes the spans it needs (``LongForm.table``:
a sample, the failing traces).  A string-valued key whose values are mostly
new (ids, urls, query texts, messages: ``KeyCardinality``) is kept as
presence only (``sval`` NULL), except for values of at most two encoded bytes
(the empty string), which say something whatever the key.  Files read for a
baseline fill the column itself (``localizer.spans``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from dsl import SPAN_COLUMNS, AttrRef, AttrSource, AttrType, any_text, column_name
from dsl.projection import EVENT_LIST, ref_sql_type
from processor.otlp.views import (
    key_value_view,
    resource_spans_view,
    resource_view,
    span_attributes_view,
    span_lists_view,
)
from processor.otlp.wire import SPAN_ATTRIBUTES, SPAN_EVENTS, SPAN_LINKS, length_delimited, read_varint
from processor.receivers.decode import decode
from processor.store import ARROW_TYPES, NO_SEPARATOR, STORAGE_COLUMNS

CACHED_VALUES = 50_000   # distinct encoded values remembered per column type

# A span's end among LongForm's entry numbers; as a remembered encoding, the end mark's
# (``_END``: no KeyValue has it), with no key.
_SPAN_END = -1
_END_ITEM: tuple[str | None, bytes, tuple[int, ...]] = (None, b"", (_SPAN_END,))

# Every span attribute in long form (module docstring); "*" is no attribute key.
ALL_ATTRIBUTES = AttrRef(AttrSource.SPAN, "*")
ENTRY_TYPE = pa.struct([("k", pa.string()), ("t", pa.string()), ("s", pa.string()), ("n", pa.float64())])
ALL_ATTRIBUTES_TYPE = pa.list_(ENTRY_TYPE)
ALL_ATTRIBUTES_SQL_TYPE = "STRUCT(k VARCHAR, t VARCHAR, s VARCHAR, n DOUBLE)[]"
SHORT_VALUE = 2   # encoded bytes: a value this short (the empty string) is kept even for a high-cardinality key


def all_attributes_sql(table: str) -> str:
    """A query: ``table``'s ``ALL_ATTRIBUTES`` column (when filled: files, tests) in long form,
    one row per (span, value): ``trace_id, span_id, service, name, key, type, sval, nval``."""
    col = column_name(ALL_ATTRIBUTES)
    return (f"SELECT trace_id, span_id, service, name, a.k AS key, a.t AS type, a.s AS sval, a.n AS nval "
            f"FROM (SELECT trace_id, span_id, service, name, unnest({col}) AS a FROM {table})")


class KeyCardinality:
    """Which string-valued attribute keys are high-cardinality, learned from the values seen:
    once a key has shown ``MIN_SEEN`` values, it is high-cardinality when more than half were
    new — a typical value recurs less than twice: there is no distribution to learn, only
    presence — and decided either way (``decided``), so later values cost no counting."""

    MIN_SEEN = 32

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}   # key -> [values seen, new values]
        self.high: set[str] = set()
        self.decided: set[str] = set()

    def observe(self, key: str, new: bool) -> None:
        c = self._counts.get(key)
        if c is None:
            c = self._counts[key] = [0, 0]
        c[0] += 1
        c[1] += new
        if c[0] >= self.MIN_SEEN:
            if 2 * c[1] > c[0]:
                self.high.add(key)
            self.decided.add(key)
            del self._counts[key]


def _long_entries(key: str, value: Any) -> list[tuple[str, str, str | None, float | None]]:
    """An attribute's Python value (``otlpjson.any_value``, or converted from an AnyValue) as
    ``ALL_ATTRIBUTES`` entries."""
    if isinstance(value, list):
        if not value:
            return [(key, "[]", "[]", None)]
        return [(key, f"{t}[]", s, n) for v in value for _, t, s, n in _long_entries(key, v)]
    if isinstance(value, bool):
        return [(key, "bool", "true" if value else "false", None)]
    if isinstance(value, int):
        return [(key, "int", None, float(value))]
    if isinstance(value, float):
        return [(key, "double", None, value)]
    if isinstance(value, str):
        return [(key, "string", value, None)]
    return [(key, "bytes" if isinstance(value, bytes) else "kvlist", None, None)]


def _python_value(value: Any) -> Any:
    """An AnyValue message as a Python value (kvlists as dicts, only their presence matters)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_python_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {}
    return getattr(value, kind) if kind else None


def long_entries_json(cardinality: KeyCardinality, seen: set[tuple[str, str]], attrs: Mapping[str, Any]
                      ) -> list[tuple[str, str, str | None, float | None]]:
    """``ALL_ATTRIBUTES`` entries of a span's OTLP/JSON attributes (key -> Python value), the
    high-cardinality string keys (``cardinality``, fed here; ``seen`` remembers values) as presence."""
    out: list[tuple[str, str, str | None, float | None]] = []
    for key, value in attrs.items():
        entries = _long_entries(key, value)
        if entries and entries[0][1] in ("string", "string[]"):
            if key not in cardinality.decided:
                text = str(value)
                new = (key, text) not in seen
                if new:
                    if len(seen) >= CACHED_VALUES:
                        seen.clear()
                    seen.add((key, text))
                cardinality.observe(key, new)
            if key in cardinality.high:
                entries = [(k, t, s if s == "" else None, n) for k, t, s, n in entries]
        out.extend(entries)
    return out


def _entries_array(flat: Sequence[tuple[str, str, str | None, float | None]]) -> pa.StructArray:
    ks, ts, ss, ns = (list(c) for c in zip(*flat)) if flat else ([], [], [], [])
    return pa.StructArray.from_arrays(
        [pa.array(ks, pa.string()), pa.array(ts, pa.string()), pa.array(ss, pa.string()),
         pa.array(ns, pa.float64())], fields=list(ENTRY_TYPE))


def long_array(rows: Sequence[list[tuple[str, str, str | None, float | None]]]) -> pa.Array:
    """Per-span entry lists as an ``ALL_ATTRIBUTES`` array (plain, not dictionary-encoded)."""
    offsets = [0]
    flat: list[tuple[str, str, str | None, float | None]] = []
    for entries in rows:
        flat.extend(entries)
        offsets.append(len(flat))
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), _entries_array(flat))


class LongForm:
    """``ALL_ATTRIBUTES`` entries numbered once per distinct (key, encoded value): a span costs
    a lookup per attribute, and the column is the entries taken by number in Arrow.  At most
    ``CACHED_VALUES`` entries are kept; past that the numbering restarts at a batch's start.

    ``table`` parses ``CHUNK`` spans in one call, as the ``Projector`` does (``_joined``): each
    span's attributes come as their KeyValue encodings, and most encodings are remembered
    (``_kv_cache``) with their key and entry numbers, so a span costs a lookup per attribute."""

    def __init__(self) -> None:
        self.cardinality = KeyCardinality()
        self._ids: dict[str, dict[bytes, tuple[int, ...]]] = {}
        # (high key, value's first byte) -> (key, b"", the numbers of its presence)
        self._presence: dict[tuple[str, int], tuple[str, bytes, tuple[int, ...]]] = {}
        # encoded KeyValue -> (key, encoded value, entry numbers), for those whose numbers no
        # longer depend on the key's cardinality (``_numbers``)
        self._kv_cache: dict[bytes, tuple[str | None, bytes, tuple[int, ...]]] = {_END: _END_ITEM}
        # the usual encoding's head (0x0A, size, key, 0x12) of each high key -> the key
        self._high_heads: dict[bytes, str] = {}
        self._entries: list[tuple[str, str, str | None, float | None]] = []
        self._dictionary: pa.StructArray = _entries_array([])
        self.start(restart=True)

    def start(self, restart: bool = False) -> None:
        """Before a batch: restart the numbering when it holds too much.  Entry 0 is a
        placeholder no span refers to."""
        if restart or len(self._entries) >= CACHED_VALUES or len(self._kv_cache) >= CACHED_VALUES:
            self._ids.clear()
            self._presence.clear()
            self._kv_cache.clear()
            self._kv_cache[_END] = _END_ITEM
            self._entries = [("", "", None, None)]
            self._dictionary = _entries_array([])

    def _add(self, entries: list[tuple[str, str, str | None, float | None]]) -> tuple[int, ...]:
        at = len(self._entries)
        self._entries.extend(entries)
        return tuple(range(at, at + len(entries)))

    def _numbers(self, key: str, data: bytes) -> tuple[tuple[int, ...], bool]:
        """The entry numbers of one (key, encoded AnyValue), counted by the key's cardinality,
        and whether the pair may be remembered by its encoding: not when it is presence (a high
        key's new values) or counted (until its key is decided).  Numbers remembered of a key
        later found high are forgotten then (``_kv_cache`` emptied)."""
        high = self.cardinality.high
        if key in high and len(data) > SHORT_VALUE:
            item = self._presence.get((key, data[0]))
            if item is None:
                item = self._presence[(key, data[0])] = (key, b"", self._add(
                    [(key, _ENCODED_TYPES.get(data[0], "string"), None, None)]))
            return item[2], False   # a new value each time (ids, urls): not remembered by encoding
        per = self._ids.get(key)
        if per is None:
            per = self._ids[key] = {}
        got = per.get(data)
        new = got is None
        if got is None:
            got = per[data] = self._add(_long_entries(key, _python_value(AnyValue.FromString(data))))
        counted = bool(got) and self._entries[got[0]][1] in ("string", "string[]")
        if counted and key not in self.cardinality.decided:
            self.cardinality.observe(key, new)
            if key in high:   # found high: its long values (any type's) are presence from now on
                self._kv_cache.clear()
                self._kv_cache[_END] = _END_ITEM
                self._high_heads = {_usual_head(k): k for k in high}
            return got, False   # its next occurrence is counted too
        return got, True

    def add_span(self, items: Iterable[tuple[str, bytes]], out: list[int]) -> None:
        """Append the entry numbers of a span's (key, encoded AnyValue) pairs to ``out``."""
        for key, data in items:
            out.extend(self._numbers(key, data)[0])

    def _add_encoded(self, kvs: Sequence[bytes], out: list[int]) -> None:
        """Append the entry numbers of a span's KeyValue encodings (in wire order) to ``out``.
        Duplicate keys, which OTLP forbids, resolve to the last one, as the map the span was
        once read into did (the key at its first place); an earlier one is never counted."""
        known: list[Any] = list(map(self._kv_cache.get, kvs))
        pending = None in known and self._resolve(kvs, known)
        if len({item[0] for item in known}) < len(known):
            for key, data, got in {item[0]: item for item in known}.values():
                out.extend(got if got is not None else self._numbers(key, data)[0])
            return
        if not pending:
            for item in known:
                out.extend(item[2])
            return
        for kv, (key, data, got) in zip(kvs, known):
            if got is None:
                got, remembered = self._numbers(key, data)
                if remembered:
                    self._kv_cache[kv] = (key, data, got)
            out.extend(got)

    def _resolve(self, kvs: Sequence[bytes], known: list[Any]) -> bool:
        """Fill the encodings not remembered in ``known`` with (key, encoded value, None), or, for
        a high key's long value numbered already, its presence (``_presence_of``): no side
        effect (no counting, no numbering), as one of them may be a duplicate key dropped.
        Returns whether some are left to number (``_numbers``)."""
        pending, i = False, -1
        while None in known:
            i = known.index(None, i + 1)
            item = self._presence_of(kvs[i])
            if item is None:
                key, data = _split_key_value(kvs[i])
                item = (key.decode(), data, None)
                pending = True
            known[i] = item
        return pending

    def table(self, spans: pa.Table) -> pa.Table:
        """The long form (``all_attributes_sql``'s columns) of ``spans`` (trace_id, span_id,
        service, name, raw): each span's attributes and those of its first event of each name."""
        self.start()
        raws = spans.column("raw")
        numbers: list[int] = []   # each span's entry numbers, then _SPAN_END
        parse = span_lists_view().FromString
        for start in range(0, len(raws), CHUNK):
            count = min(len(raws), start + CHUNK) - start
            lists = parse(_joined(raws.slice(start, count), _ATTRIBUTES_END + _EVENTS_END))
            kvs, events = list(lists.attributes), list(lists.events)
            if kvs.count(_END) != count or events.count(_END) != count:
                # a mark read inside a span (not a valid span): each span read alone
                for raw in raws.slice(start).to_pylist():
                    self._span_alone(raw, numbers)
                    numbers.append(_SPAN_END)
                break
            # a span's events' entries come after its attributes'
            with_events = {row: raws[start + row].as_py() for row in _rows_with_elements(events, count)}
            if not self._chunk_known(kvs, numbers, with_events):
                self._chunk_by_span(kvs, numbers, with_events)
        all_numbers = pa.array(numbers, pa.int32())
        ends = pc.equal(all_numbers, _SPAN_END)
        # the span of each entry: the ends before it
        owner = pc.filter(pc.cumulative_sum(ends.cast(pa.int64())), pc.invert(ends))
        entries = self._entries_for(pc.filter(all_numbers, pc.invert(ends)))
        base = spans.select(["trace_id", "span_id", "service", "name"]).take(owner)
        return pa.table({"trace_id": base.column("trace_id"), "span_id": base.column("span_id"),
                         "service": base.column("service"), "name": base.column("name"),
                         "key": entries.field("k"), "type": entries.field("t"), "sval": entries.field("s"),
                         "nval": entries.field("n")})

    def _chunk_known(self, kvs: list[bytes], numbers: list[int], with_events: Mapping[int, bytes]) -> bool:
        """Append the entry numbers of a chunk's spans (``kvs``: their KeyValue encodings, each
        span's ended by ``_END``; ``with_events``: the bytes of those with events, by row), each
        span's ended by ``_SPAN_END``, when every encoding is remembered or a high key's presence
        already numbered, and no span repeats a key.  Otherwise nothing is appended, and False
        returned.  In C but for the encodings not remembered and the spans with events."""
        known: list[Any] = list(map(self._kv_cache.get, kvs))
        at = -1
        try:
            while True:
                at = known.index(None, at + 1)
                item = self._presence_of(kvs[at])
                if item is None:
                    return False
                known[at] = item
        except ValueError:
            pass
        keys, at, ends = list(map(itemgetter(0), known)), 0, []
        for _ in range(keys.count(None)):
            end = keys.index(None, at)
            if len(set(keys[at:end])) < end - at:
                return False   # a span repeats a key
            ends.append(end)
            at = end + 1
        at = 0
        for row, raw in with_events.items():
            end = ends[row]
            numbers.extend(chain.from_iterable(map(itemgetter(2), known[at:end])))
            self._event_entries(span_attributes_view().FromString(raw), numbers)
            at = end
        numbers.extend(chain.from_iterable(map(itemgetter(2), known[at:])))
        return True

    def _chunk_by_span(self, kvs: list[bytes], numbers: list[int], with_events: Mapping[int, bytes]) -> None:
        """``_chunk_known`` for any chunk, span by span."""
        at = 0
        for row in range(kvs.count(_END)):
            end = kvs.index(_END, at)
            self._add_encoded(kvs[at:end], numbers)
            at = end + 1
            raw = with_events.get(row)
            if raw is not None:
                self._event_entries(span_attributes_view().FromString(raw), numbers)
            numbers.append(_SPAN_END)

    def _presence_of(self, kv: bytes) -> tuple[str, bytes, tuple[int, ...]] | None:
        """A KeyValue encoding's (key, b"", numbers) when it is a high key's long value in the
        usual encoding (one length byte to the end) whose presence is numbered, else None."""
        at = kv[1] + 3 if len(kv) > 3 else 0
        key = self._high_heads.get(kv[:at]) if at else None
        if key is None or len(kv) <= at + 1 + SHORT_VALUE or kv[at] != len(kv) - at - 1:
            return None
        return self._presence.get((key, kv[at + 1]))

    def _span_alone(self, raw: bytes, out: list[int]) -> None:
        """A span's entries, parsed on its own (raises DecodeError on an invalid span)."""
        self._add_encoded(list(span_lists_view().FromString(raw).attributes), out)
        span = span_attributes_view().FromString(raw)
        if span.events:
            self._event_entries(span, out)

    def _event_entries(self, span: Any, out: list[int]) -> None:
        """The entries of a span's first event of each name, keyed ``event:key``."""
        seen: set[str] = set()
        for event in span.events:
            if event.name not in seen:
                seen.add(event.name)
                name = event.name
                self.add_span(((f"{name}:{k}", v) for k, v in event.attributes.items()), out)

    def _entries_for(self, flat: pa.Array) -> pa.StructArray:
        if len(self._dictionary) < len(self._entries):
            self._dictionary = pa.concat_arrays(
                [self._dictionary, _entries_array(self._entries[len(self._dictionary):])])
        return self._dictionary.take(flat)


EVENT_LIST_TYPE = pa.list_(pa.struct([("name", pa.string()), ("time", pa.int64())]))
LINK_LIST_TYPE = pa.list_(pa.struct([("trace_id", pa.binary()), ("span_id", pa.binary())]))


def _field_type(ref: AttrRef) -> pa.DataType:
    if ref == ALL_ATTRIBUTES:
        return ALL_ATTRIBUTES_TYPE
    if ref == EVENT_LIST:
        return EVENT_LIST_TYPE
    if ref.source is AttrSource.LINKS:
        return LINK_LIST_TYPE
    if ref.source is AttrSource.EVENTS:  # one value per event
        return pa.list_(ARROW_TYPES[ref.type.sql_type])
    return ARROW_TYPES[ref.type.sql_type]


def _sql_type(ref: AttrRef) -> str:
    return ALL_ATTRIBUTES_SQL_TYPE if ref == ALL_ATTRIBUTES else ref_sql_type(ref)


def _array(element: AttrType) -> Any:
    def convert(value: Any) -> Any:
        out = [convert_value(v, element) for v in value.array_value.values]
        return None if any(v is None for v in out) else out
    return convert


# (column type, AnyValue's set field) -> the value for the column.  Pairs not
# listed are nil: a value of another type never matches (nil-safe).
_CONVERTERS: dict[tuple[AttrType, str | None], Any] = {
    (AttrType.STRING, "string_value"): lambda v: v.string_value,
    (AttrType.INT, "int_value"): lambda v: v.int_value,
    (AttrType.DOUBLE, "double_value"): lambda v: v.double_value,
    (AttrType.DOUBLE, "int_value"): lambda v: float(v.int_value),
    (AttrType.BOOL, "bool_value"): lambda v: v.bool_value,
    (AttrType.STRING_ARRAY, "array_value"): _array(AttrType.STRING),
    (AttrType.INT_ARRAY, "array_value"): _array(AttrType.INT),
    (AttrType.DOUBLE_ARRAY, "array_value"): _array(AttrType.DOUBLE),
}


def _kvlist(value: Any) -> dict[str, Any]:
    return {kv.key: _any_python(kv.value) for kv in value.kvlist_value.values}


def _any_python(value: Any) -> Any:
    """An AnyValue as a Python value, maps included (for ``ANY``'s text)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _kvlist(value)
    return getattr(value, kind) if kind else None


def convert_value(value: Any, kind: AttrType) -> Any:
    """An AnyValue as the Python value of a column of type ``kind``, or None (nil).
    An ``ANY`` column takes every value, as its text (``dsl.any_text``)."""
    if kind is AttrType.ANY:
        return any_text(_any_python(value))
    convert = _CONVERTERS.get((kind, value.WhichOneof("value")))
    return None if convert is None else convert(value)


@dataclass(frozen=True, slots=True)
class Projection:
    """The attribute columns of the span table, in a stable order (sorted refs)."""

    refs: tuple[AttrRef, ...]
    schema: pa.Schema    # intrinsics, then the projected columns, then STORAGE_COLUMNS

    @classmethod
    def of(cls, refs: Iterable[AttrRef]) -> Projection:
        ordered = tuple(sorted(set(refs)))
        fields = [pa.field(name, ARROW_TYPES[sql]) for name, sql in SPAN_COLUMNS]
        fields += [pa.field(column_name(r), _field_type(r)) for r in ordered]
        fields += [pa.field(name, ARROW_TYPES[sql]) for name, sql in STORAGE_COLUMNS]
        return cls(ordered, pa.schema(fields))

    def columns_sql(self) -> list[tuple[str, str]]:
        """(name, DuckDB type) of every span-table column, in table order."""
        return ([*SPAN_COLUMNS] + [(column_name(r), _sql_type(r)) for r in self.refs]
                + [*STORAGE_COLUMNS])

    @property
    def reads_span_bytes(self) -> bool:
        """Whether projecting needs the spans' bytes (span or event attributes, events, links)."""
        return any(r.source is not AttrSource.RESOURCE for r in self.refs)

    @property
    def reads_resources(self) -> bool:
        """Whether projecting needs the resource heads."""
        return any(r.source is AttrSource.RESOURCE for r in self.refs)


_MISSING = object()
_ROW_END = object()
CHUNK = 4096                  # spans parsed in one call: bounds the copy of their bytes
CACHED_KEY_VALUE_BYTES = 256  # longer KeyValue encodings (statements, stack traces) are not remembered
KEY_VALUES_REMEMBERED = 2048  # encodings of one key remembered at most (``Projector._learn``)
# A span's lists each end with the element b"\xff" (field 9, 11, 13; length 1): not a valid
# encoding of a KeyValue, Event or Link (a varint's first byte with no last), so no span has it.
_END = b"\xff"
_ATTRIBUTES_END, _EVENTS_END, _LINKS_END = (length_delimited(f, _END) for f in (SPAN_ATTRIBUTES, SPAN_EVENTS, SPAN_LINKS))


def _split_key_value(kv: bytes) -> tuple[bytes, bytes]:
    """A KeyValue encoding's key (bytes) and value (the encoded AnyValue, b"" when absent).
    The usual encoding (key, then value, nothing else) is sliced in place; any other is parsed."""
    n = len(kv)
    try:
        if kv[0] == 0x0A:
            size = kv[1]
            at = 2
            if size >= 0x80:
                size, at = read_varint(kv, 1)
            end = at + size
            if end == n:
                return kv[at:end], b""
            if end < n and kv[end] == 0x12:
                vsize = kv[end + 1]
                vat = end + 2
                if vsize >= 0x80:
                    vsize, vat = read_varint(kv, end + 1)
                if vat + vsize == n:
                    return kv[at:end], kv[vat:]
    except IndexError:
        pass
    parsed = key_value_view().FromString(kv)
    return parsed.key, parsed.value


def _joined(raws: pa.ChunkedArray, marks: bytes) -> memoryview:
    """The spans' bytes, each followed by ``marks``, as one buffer."""
    joined = pc.binary_join_element_wise(raws, pa.scalar(marks, pa.binary()), NO_SEPARATOR)
    array = joined.combine_chunks() if joined.num_chunks != 1 else joined.chunk(0)
    if not len(array):
        return memoryview(b"")
    _, offsets, data = array.buffers()
    first, last = (struct.unpack_from("<i", offsets, 4 * at)[0] for at in (array.offset, array.offset + len(array)))
    return memoryview(data)[first:last]


def _ends(elements: list[bytes], spans: int) -> bool:
    """Whether a list of spans' elements (empty when not read) holds each span's end mark once."""
    return not elements or elements.count(_END) == spans


def _rows_with_elements(elements: Sequence[bytes], spans: int) -> list[int]:
    """The rows (of ``spans``) with at least one element, in a list of spans' elements where
    each span's end with ``_END`` (an empty list: none)."""
    if len(elements) <= spans:
        return []
    out, row, last = [], 0, -1
    for element in elements:
        if element == _END:
            row += 1
        elif last != row:
            out.append(row)
            last = row
    return out


class Projector:
    """Decodes a Projection's columns for tables of stored spans; keep one per
    projection (it remembers converted values across batches)."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        caches: dict[AttrType, dict[bytes, Any]] = {}
        self._caches = caches
        # key -> (slot, type, that type's cache) for every column the key fills
        self._span_keys: dict[str, list[tuple[int, AttrType, dict[bytes, Any]]]] = {}
        self._event_keys: dict[str, list[tuple[int, str, AttrType, dict[bytes, Any]]]] = {}
        self._resource_refs: list[tuple[int, AttrRef]] = []
        # encoded KeyValue -> what it puts in the span columns (``_learn``); ``_END`` ends a span
        self._kv_cache: dict[bytes, Any] = {_END: _ROW_END}
        self._learnt: dict[bytes, int] = {}   # key -> its encodings remembered in _kv_cache
        # the heads (0x0A, size, key, 0x12: how the usual encoding starts) of the keys no column
        # reads and whose encodings are no longer remembered (``_learn``)
        self._spent: set[bytes] = set()
        # every event / link of a span, as lists (``event e of s``, ``link l of s``): (slot, key, type, cache)
        self._event_lists: list[tuple[int, str, AttrType, dict[bytes, Any]]] = []
        self._link_slots: list[int] = []
        for slot, ref in enumerate(projection.refs):
            cache = caches.setdefault(ref.type, {})
            if ref == ALL_ATTRIBUTES:
                continue  # filled from the span bytes by LongForm, not by key
            if ref.source is AttrSource.EVENTS:
                self._event_lists.append((slot, ref.key, ref.type, cache))
            elif ref.source is AttrSource.LINKS:
                self._link_slots.append(slot)
            elif ref.source is AttrSource.SPAN:
                self._span_keys.setdefault(ref.key, []).append((slot, ref.type, cache))
            elif ref.source is AttrSource.RESOURCE:
                self._resource_refs.append((slot, ref))
            else:
                self._event_keys.setdefault(ref.event, []).append((slot, ref.key, ref.type, cache))
        self._span_keys_bytes = {key.encode(): slots for key, slots in self._span_keys.items()}

    def project(self, table: pa.Table, resources: Mapping[int, bytes]) -> pa.Table:
        """``table`` (stored spans: ``STORE_SCHEMA``) with the projected columns
        after the intrinsics, as ``projection.schema`` lays them out.

        ``resources`` maps the table's ``resource_id``s to their encoded heads
        (``processor.receivers.decode``); it is read only for resource attributes.
        """
        refs = self.projection.refs
        if not refs:
            return table
        rows = table.num_rows
        columns: list[list[Any] | pa.Array | None] = [None] * len(refs)
        if self._span_keys or self._event_keys or self._event_lists or self._link_slots:
            self._span_values(table.column("raw"), columns)
        if self._resource_refs:
            self._resource_values(table.column("resource_id"), resources, columns)
        at = len(SPAN_COLUMNS)
        for slot, (ref, values) in enumerate(zip(refs, columns)):
            field = self.projection.schema.field(at + slot)
            if values is None:
                values = (pa.repeat(False, rows) if ref.type is AttrType.PRESENT
                          else pa.nulls(rows, field.type))
            elif isinstance(values, list):
                values = pa.array(values, field.type)
            table = table.add_column(at + slot, field, values)
        return table

    def _span_values(self, raws: pa.ChunkedArray, columns: list[Any]) -> None:
        """Fill the span and event attribute columns (a list per column, made on its first value).

        ``CHUNK`` spans at a time are parsed in one call: their bytes concatenated (in Arrow),
        each followed by an end mark in each list read, which appends every span's KeyValues
        (events, links) as encoded to one list.  Spans with events or links (when the
        projection reads them) are parsed again on their own."""
        rows = len(raws)
        marks = _ATTRIBUTES_END if self._span_keys else b""
        if self._event_keys or self._event_lists:
            marks += _EVENTS_END
        if self._link_slots:
            marks += _LINKS_END
        parse = span_lists_view().FromString
        for start in range(0, rows, CHUNK):
            end = min(rows, start + CHUNK)
            lists = parse(_joined(raws.slice(start, end - start), marks))
            events = list(lists.events) if _EVENTS_END in marks else []
            links = list(lists.links) if _LINKS_END in marks else []
            try:
                aligned = ((not self._span_keys or self._attribute_values(lists.attributes, start, rows, columns) == end)
                           and _ends(events, end - start) and _ends(links, end - start))
            except IndexError:   # more spans' ends than spans
                aligned = False
            if not aligned:
                # a mark read inside a span (not a valid span): start again, each span read alone
                columns[:] = [None] * len(columns)
                self._spans_one_by_one(raws.to_pylist(), columns)
                return
            for i in sorted({*_rows_with_elements(events, end - start), *_rows_with_elements(links, end - start)}):
                self._list_values(raws[start + i].as_py(), start + i, rows, columns)

    def _spans_one_by_one(self, raws: Sequence[bytes], columns: list[Any]) -> None:
        """``_span_values`` for spans parsed one at a time; raises DecodeError on an invalid one."""
        parse = span_lists_view().FromString
        for row, raw in enumerate(raws):
            kvs = list(parse(raw).attributes)
            if _END in kvs:
                raise DecodeError("a span attribute is not a KeyValue")
            if self._span_keys:
                self._attribute_values([*kvs, _END], row, len(raws), columns)
            self._list_values(raw, row, len(raws), columns)

    def _attribute_values(self, kvs: Iterable[bytes], row: int, rows: int, columns: list[Any]) -> int:
        """Fill the span attribute columns from spans' KeyValue encodings, each span's ended by
        ``_END``, the first span's row ``row``; returns the row after the last span's.

        What a KeyValue puts in the columns is remembered by its encoding (``_kv_cache``):
        most repeat across spans, and cost one lookup.  A key's later KeyValue overwrites an
        earlier one's values, nil included: duplicate keys, which OTLP forbids, resolve to the
        last one, as a map would."""
        get, spent = self._kv_cache.get, self._spent
        for kv in kvs:   # the container, not list(): iterating it directly is ~2x faster
            put = get(kv, _MISSING)
            if put is None:   # a key not projected
                continue
            if put is _ROW_END:
                row += 1
                continue
            if put is _MISSING:
                # a new value of a key not projected whose values are mostly new (ids, urls,
                # addresses): known by its head, when _learn would read it as the usual
                # encoding (one value to the end), without a call (~1 a span in the bench)
                at = kv[1] + 3 if len(kv) > 3 else 0
                if kv[:at] in spent and len(kv) > at and kv[at] == len(kv) - at - 1:
                    continue
                put = self._learn(kv)
                if put is None:
                    continue
            for slot, value in put:
                column = columns[slot]
                if column is None:
                    if value is None:
                        continue
                    column = columns[slot] = [None] * rows
                column[row] = value
        return row

    def _learn(self, kv: bytes) -> tuple[tuple[int, Any], ...] | None:
        """What a KeyValue encoding puts in the span columns: (slot, value) for each column of
        its key, None when no column reads the key.

        It is remembered unless long, or its key has shown ``KEY_VALUES_REMEMBERED`` new
        encodings since the cache was last emptied: a key whose values are mostly new (ids,
        urls) would fill the cache, and empty it of the values that do repeat.  The usual
        encoding with short lengths is checked and sliced here, without a call: most new
        encodings are such a new value of a key not projected.  Once such a key is no longer
        remembered its head is (``_spent``): its later new values are passed over in the loop."""
        size = kv[1] if len(kv) > 3 else 0x80
        end = size + 2
        data = None
        if size < 0x80 and kv[0] == 0x0A and end + 1 < len(kv) and kv[end] == 0x12 and kv[end + 1] == len(kv) - end - 2:
            key = kv[2:end]
        else:
            key, data = _split_key_value(kv)
        slots = self._span_keys_bytes.get(key)
        put: tuple[tuple[int, Any], ...] | None = None
        if slots is not None:
            if data is None:
                data = kv[end + 2:]
            values = []
            for slot, kind, cache in slots:
                value = cache.get(data, _MISSING)
                if value is _MISSING:
                    value = self._convert(data, kind, cache)
                values.append((slot, value))
            put = tuple(values)
        learnt = self._learnt.get(key, 0)
        if learnt < KEY_VALUES_REMEMBERED and len(kv) <= CACHED_KEY_VALUE_BYTES:
            if len(self._kv_cache) >= CACHED_VALUES or len(self._learnt) >= CACHED_VALUES:
                self._kv_cache.clear()   # what is remembered must not grow without limit
                self._kv_cache[_END] = _ROW_END
                self._learnt.clear()
                self._spent.clear()
            self._learnt[key] = learnt + 1
            self._kv_cache[kv] = put
        elif put is None and data is None and learnt >= KEY_VALUES_REMEMBERED:
            self._spent.add(kv[:end + 1])   # the usual encoding's head: 0x0A, size, key, 0x12
        return put

    def _list_values(self, raw: bytes, row: int, rows: int, columns: list[Any]) -> None:
        """The event columns, event lists and links of one span."""
        if not (self._event_keys or self._event_lists or self._link_slots):
            return
        span = span_attributes_view().FromString(raw)
        if self._event_keys and span.events:
            self._event_values(span.events, row, rows, columns)
        if self._event_lists and span.events:
            self._event_list_values(span.events, row, rows, columns)
        if self._link_slots and span.links:
            links = [(link.trace_id, link.span_id) for link in span.links]
            for slot in self._link_slots:
                column = columns[slot]
                if column is None:
                    column = columns[slot] = [None] * rows
                column[row] = links

    def _event_list_values(self, events: Any, row: int, rows: int, columns: list[Any]) -> None:
        """Every event of a span, in order: (name, time) for the key "", else the attribute of
        each event (nil where one lacks it or has another type)."""
        for slot, key, kind, cache in self._event_lists:
            if not key:
                # tuples, not dicts: Arrow converts them to its structs ~8x faster
                values: list[Any] = [(e.name, e.time_unix_nano) for e in events]
            else:
                values = []
                for e in events:
                    data = e.attributes.get(key)
                    value = None if data is None else cache.get(data, _MISSING)
                    if value is _MISSING:
                        value = self._convert(data, kind, cache)  # type: ignore[arg-type]
                    values.append(value)
            column = columns[slot]
            if column is None:
                column = columns[slot] = [None] * rows
            column[row] = values

    def _event_values(self, events: Any, row: int, rows: int, columns: list[Any]) -> None:
        seen: set[str] = set()
        for event in events:
            slots = self._event_keys.get(event.name)
            if slots is None or event.name in seen:
                continue
            seen.add(event.name)  # the first event of a name is the one projected
            for slot, key, kind, cache in slots:
                if kind is AttrType.PRESENT:
                    value: Any = True
                else:
                    data = event.attributes.get(key)
                    if data is None:
                        continue
                    value = cache.get(data, _MISSING)
                    if value is _MISSING:
                        value = self._convert(data, kind, cache)
                    if value is None:
                        continue
                column = columns[slot]
                if column is None:
                    column = columns[slot] = [False if kind is AttrType.PRESENT else None] * rows
                column[row] = value

    @staticmethod
    def _convert(data: bytes, kind: AttrType, cache: dict[bytes, Any]) -> Any:
        value = convert_value(AnyValue.FromString(data), kind)
        if len(cache) >= CACHED_VALUES:
            cache.clear()  # high-cardinality values (ids, paths) must not hold memory forever
        cache[data] = value
        return value

    def _resource_values(self, resource_ids: pa.ChunkedArray, resources: Mapping[int, bytes],
                         columns: list[Any]) -> None:
        """Resource attribute columns: one conversion per resource, spread over its spans in C.
        A key no resource has (most of those the rules name, in most deployments) is a column
        of nulls made as such, not taken row by row."""
        ids = pc.unique(resource_ids)
        attrs = [_resource_attributes(resources.get(rid, b"")) for rid in ids.to_pylist()]
        where = None
        for slot, ref in self._resource_refs:
            type_ = self.projection.schema.field(len(SPAN_COLUMNS) + slot).type
            per_resource = [None if (v := a.get(ref.key)) is None else convert_value(v, ref.type) for a in attrs]
            if not any(v is not None for v in per_resource):
                columns[slot] = pa.nulls(len(resource_ids), type_)
                continue
            if where is None:
                where = pc.index_in(resource_ids, value_set=ids)
            columns[slot] = pa.array(per_resource, type_).take(where)


def _usual_head(key: str) -> bytes:
    """How a KeyValue of ``key`` usually starts: its key field, then the value's tag (0x12);
    for a key of 128 bytes or more (a longer length varint) b"\\xff", which starts no KeyValue."""
    data = key.encode()
    return b"\x0a" + bytes([len(data)]) + data + b"\x12" if len(data) < 0x80 else b"\xff"


# the type of an encoded AnyValue from its first byte (field tag): high-cardinality keys are not decoded
_ENCODED_TYPES = {0x0A: "string", 0x10: "bool", 0x18: "int", 0x21: "double", 0x2A: "string[]",
                  0x32: "kvlist", 0x3A: "bytes"}


def _resource_attributes(head: bytes) -> Any:
    """The attribute map of a resource head (fields 1 and 3 of a ResourceSpans)."""
    resource = resource_spans_view().FromString(head).resource
    return resource_view().FromString(resource or b"").attributes


def span_table(requests: Iterable[ExportTraceServiceRequest], projection: Projection) -> pa.Table:
    """The requests' spans as the pipeline's analysis reads them, for traces read from files
    (``processor.tools.offline``, the localizer's protobuf baselines): the store's columns plus
    ``projection``'s, decoded once over all of them."""
    batches = [decode(r).batch for r in requests]
    if not batches:
        return projection.schema.empty_table()
    resources = {rid: head for b in batches for rid, head in b.resources.items()}
    return Projector(projection).project(pa.concat_tables([b.table for b in batches]), resources)
