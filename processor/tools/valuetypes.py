"""What types a baseline's attributes carry, and the rules that read one as a type it never has
(``faulttrace check --baseline``: warning W022).

A rule reads an attribute as one type: the semantic conventions', an
annotation's (``:int``), or the one a literal beside it wants
(``s.attr["app.code"] >= 500`` reads an int).  A value of another OTLP type
reads as nil (``dsl.projection.AttrType``), so a rule that reads
``app.code`` as an int where the application sends it as a string never
fires, without an error.  Only the data can say: per attribute (span,
resource, event), the OTLP value types the baseline's spans carry it with;
a rule reading it as a type none of them has gets W022 at its id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from dsl import Diagnostic, RuleSet, SourceSpan
from dsl.diagnostics import LineIndex, sort_key
from dsl.ir import AttrValue, walk
from dsl.projection import AttrSource, AttrType

TYPE_NEVER_SEEN = "W022"

# The OTLP value types each read type takes; every other one reads as nil.
_READS: dict[AttrType, frozenset[str]] = {
    AttrType.STRING: frozenset({"string"}),
    AttrType.INT: frozenset({"int"}),
    AttrType.DOUBLE: frozenset({"double", "int"}),  # an int fills a double column
    AttrType.BOOL: frozenset({"bool"}),
    AttrType.STRING_ARRAY: frozenset({"string[]"}),
    AttrType.INT_ARRAY: frozenset({"int[]"}),
    AttrType.DOUBLE_ARRAY: frozenset({"double[]", "int[]"}),
}
# Where a read of each source finds its values in the baseline's counts.
_WHERE = {AttrSource.SPAN: "span", AttrSource.RESOURCE: "resource", AttrSource.EVENT: "event",
          AttrSource.EVENTS: "event"}


def value_type(v: AnyValue) -> str:
    """An OTLP value's type as the rule language names it (``string``, ``int[]``, …; ``kvlist``, ``bytes``)."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        inner = {value_type(x) for x in v.array_value.values}
        return f"{inner.pop()}[]" if len(inner) == 1 else "array"
    return {"string_value": "string", "int_value": "int", "double_value": "double", "bool_value": "bool",
            "kvlist_value": "kvlist", "bytes_value": "bytes"}.get(kind or "", "empty")


@dataclass(frozen=True, slots=True)
class ValueTypes:
    """Per (where, key) — where: ``span``, ``resource``, ``event`` — how many values of each type."""

    counts: dict[tuple[str, str], Counter[str]]

    @classmethod
    def of(cls, requests: Iterable[ExportTraceServiceRequest]) -> ValueTypes:
        counts: dict[tuple[str, str], Counter[str]] = {}

        def add(where: str, attributes: Iterable[KeyValue], times: int = 1) -> None:
            for kv in attributes:
                counts.setdefault((where, kv.key), Counter())[value_type(kv.value)] += times

        for r in requests:
            for rs in r.resource_spans:
                n = sum(len(ss.spans) for ss in rs.scope_spans)
                add("resource", rs.resource.attributes, n)  # a resource's values, once per span it carries
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        add("span", s.attributes)
                        for e in s.events:
                            add("event", e.attributes)
        return cls(counts)


def diagnostics(rules: RuleSet, types: ValueTypes) -> list[Diagnostic]:
    """W022 at the id of each rule that reads an attribute as a type the baseline never carries it with
    (attributes the baseline does not carry at all say nothing: a rule may look for what is rare)."""
    out = []
    for rule_id, checked in rules.checked.items():
        nodes = [checked.where, *(p for p in checked.message if not isinstance(p, str))]
        seen: set[tuple[str, str, AttrType]] = set()
        for node in nodes:
            if node is None:
                continue
            for n in walk(node):
                if not isinstance(n, AttrValue):
                    continue
                for ref in n.refs:
                    wanted = _READS.get(ref.type)
                    where = _WHERE.get(ref.source)
                    have = types.counts.get((where, ref.key)) if where else None
                    if wanted is None or not have or wanted & have.keys() or (where, ref.key, ref.type) in seen:
                        continue
                    seen.add((where, ref.key, ref.type))
                    carried = ", ".join(f"{t} ({k})" for t, k in have.most_common())
                    usual = have.most_common(1)[0][0]
                    out.append(Diagnostic(
                        TYPE_NEVER_SEEN,
                        f"rule `{rule_id}` reads {where} attribute `{ref.key}` as {ref.type}, but the baseline's "
                        f"{sum(have.values())} values of it are {carried}: read as {ref.type}, each is nil",
                        id_span(checked.span, rule_id, rules.sources),
                        (f"compare it with a {usual} literal, or read it as what it carries "
                         f"(`[\"{ref.key}\"]:{usual}`)",),
                        label=f"`{ref.key}` is never {ref.type} here"))
    return sorted(out, key=sort_key)


def id_span(span: SourceSpan, ident: str, sources: dict[str, str]) -> SourceSpan:
    """The id's place in the definition at ``span`` (the whole definition if it is not found)."""
    text = sources.get(span.path)
    at = text.find(ident, span.start, span.end) if text is not None else -1
    return LineIndex(text).span(span.path, at, at + len(ident)) if text is not None and at >= 0 else span
