"""The contract between rules and the span store: which attributes to project.

A rule set names the attributes its predicates read; the store extracts exactly
those (and nothing else) from each span into typed columns of its span table.
Both sides derive the column name from the same :class:`AttrRef`, so neither
guesses the other's naming.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass


class AttrSource(enum.StrEnum):
    """Where an attribute lives on a span."""

    SPAN = "span"          # Span.attributes
    RESOURCE = "resource"  # Resource.attributes of the span's resource
    EVENT = "event"        # attributes of the span's first event named `event`
    # Every event / link of the span, as lists aligned by index (``event e of s``, ``link l of s``):
    # key "" is the list itself (``EVENT_LIST_SQL_TYPE`` / ``LINK_LIST_SQL_TYPE``); an ``EVENTS``
    # ref with a key is that attribute of each event, nil where an event lacks it.
    EVENTS = "events"
    LINKS = "links"


class AttrType(enum.StrEnum):
    """DuckDB column type of a projected attribute.

    A value of another OTLP type than the column's lands as NULL (nil-safe:
    every comparison with it is false), except that INT values also fill a
    DOUBLE column.  ``PRESENT`` (only with ``AttrSource.EVENT`` and an empty
    key) is a BOOLEAN that says whether the span has an event of that name.
    ``ANY`` is the value's text whatever its type (``any_text``): what a rule
    reads of an attribute whose type neither the semantic conventions, an
    annotation nor a literal beside it gives, so a present value is never
    nil because of its type.
    """

    STRING = "string"              # VARCHAR
    INT = "int"                    # BIGINT
    DOUBLE = "double"              # DOUBLE
    BOOL = "bool"                  # BOOLEAN
    STRING_ARRAY = "string[]"      # VARCHAR[]  (array of strings)
    INT_ARRAY = "int[]"            # BIGINT[]
    DOUBLE_ARRAY = "double[]"      # DOUBLE[]
    PRESENT = "present"            # BOOLEAN, events only
    ANY = "any"                    # VARCHAR: the text of a value of any type

    @property
    def sql_type(self) -> str:
        return _SQL_TYPES[self]


_SQL_TYPES = {
    AttrType.STRING: "VARCHAR",
    AttrType.INT: "BIGINT",
    AttrType.DOUBLE: "DOUBLE",
    AttrType.BOOL: "BOOLEAN",
    AttrType.STRING_ARRAY: "VARCHAR[]",
    AttrType.INT_ARRAY: "BIGINT[]",
    AttrType.DOUBLE_ARRAY: "DOUBLE[]",
    AttrType.PRESENT: "BOOLEAN",
    AttrType.ANY: "VARCHAR",
}


def any_text(value: object) -> str | None:
    """The text an ``ANY`` column holds for an attribute's value (as Python
    has it: str, bool, int, float, bytes, list, dict): strings as they are,
    ``true``/``false``, numbers as written (``42``, ``0.5``), arrays and maps
    as JSON, bytes as hex."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"no text for {type(value).__name__}")


@dataclass(frozen=True, slots=True, order=True)
class AttrRef:
    """One projected attribute: source, key, (event name), type."""

    source: AttrSource
    key: str
    type: AttrType = AttrType.STRING
    event: str = ""

    def __post_init__(self) -> None:
        if (self.source is AttrSource.EVENT) != bool(self.event):
            raise ValueError("an event name goes with source 'event' and only with it")
        if self.type is AttrType.PRESENT and (self.source is not AttrSource.EVENT or self.key):
            raise ValueError("type 'present' is for an event with an empty key")
        if self.source is AttrSource.LINKS and self.key:
            raise ValueError("a links ref has no key")


EVENT_LIST_SQL_TYPE = "STRUCT(name VARCHAR, time BIGINT)[]"   # a span's events: name, time_unix_nano
LINK_LIST_SQL_TYPE = "STRUCT(trace_id BLOB, span_id BLOB)[]"  # a span's links: the linked span's ids
EVENT_LIST = AttrRef(AttrSource.EVENTS, "")
LINK_LIST = AttrRef(AttrSource.LINKS, "")


def ref_sql_type(ref: AttrRef) -> str:
    """The DuckDB type of ``ref``'s span-table column: the type's, or for the
    per-event and per-link lists, a list of it (one element per event)."""
    if ref == EVENT_LIST:
        return EVENT_LIST_SQL_TYPE
    if ref.source is AttrSource.LINKS:
        return LINK_LIST_SQL_TYPE
    if ref.source is AttrSource.EVENTS:
        return ref.type.sql_type + "[]"
    return ref.type.sql_type


def column_name(ref: AttrRef) -> str:
    """The span-table column that holds ``ref``.

    Short, SQL-safe (``[a-z0-9_]`` only, so it never needs quoting) and stable
    across processes: a readable slug of the key plus a hash of the full ref.
    """
    ident = f"{ref.source}\x00{ref.event}\x00{ref.key}\x00{ref.type}"
    digest = hashlib.blake2b(ident.encode(), digest_size=5).hexdigest()
    slug = "".join(c if c.isalnum() else "_" for c in ref.key.lower())[:32]
    return f"a_{_PREFIX.get(ref.source, ref.source.value[0])}_{slug}_{digest}"


# the per-event and per-link list columns have prefixes of their own (``a_v_``, ``a_k_``): the
# compiler's prepare step finds them by it
_PREFIX = {AttrSource.EVENTS: "v", AttrSource.LINKS: "k"}
EVENT_COLUMN_PREFIX = "a_v_"


# The intrinsic columns every span table has, in order, with their DuckDB
# types.  The store creates its tables from this list and the rule compiler
# writes SQL against it; projected attribute columns (``column_name``) follow.
SPAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "BLOB"),         # 16 bytes
    ("span_id", "BLOB"),          # 8 bytes
    ("parent_span_id", "BLOB"),   # 8 bytes, NULL for a root span
    ("service", "VARCHAR"),       # resource attribute service.name ('' if absent)
    ("name", "VARCHAR"),
    ("kind", "UTINYINT"),         # OTLP SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    ("start_ns", "BIGINT"),       # start_time_unix_nano
    ("end_ns", "BIGINT"),         # end_time_unix_nano
    ("status_code", "UTINYINT"),  # OTLP StatusCode: 0 unset, 1 ok, 2 error
    ("status_message", "VARCHAR"),
)
