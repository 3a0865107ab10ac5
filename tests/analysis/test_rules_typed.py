"""Types from the data: an attribute outside the semantic conventions, with no
annotation and no literal beside it, is read by the type its value carries.

Spans come from a real opentelemetry-sdk tracer, encoded by the SDK's OTLP
encoder, decoded by the analysis' projector (``processor.analysis.attributes``)
and run through the compiled rules, as ``faulttrace serve`` would."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dsl import AttrType
from tests.support.harness import fire_rules

HEAD = 'title "t"\n  layer code\n  severity low\n  confidence 0.5'


def _request():
    """One trace: a root with an int, a bool, a double, an array and a string
    attribute of the application's own keys, and two children with scores."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "typed"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faulttrace-tests")
    with tracer.start_as_current_span("root", attributes={
            "app.code": 42, "app.cached": False, "app.ratio": 0.25, "app.tags": ["a", "b"], "app.mode": "fast"}):
        for score in (0.5, 1):  # a double and an int: both numbers
            with tracer.start_as_current_span("step", attributes={"app.score": score}):
                pass
    provider.shutdown()
    return encode_spans(memory.get_finished_spans())


@pytest.fixture(scope="module")
def fired(tmp_path_factory):
    """rule id -> messages of its findings over the trace."""
    text = "\n".join(f"rule t.{rid} {{\n  {HEAD}\n  match span s where {where}\n  message \"{msg}\"\n}}"
                     for rid, where, msg in RULES)
    rules, _, findings = fire_rules(tmp_path_factory.mktemp("typed"), text, [_request()])
    out: dict[str, list[str]] = {}
    for f in findings:
        out.setdefault(f.rule_id.removeprefix("t."), []).append(f.message)
    return out, rules


RULES = [
    ("message", "s.is_root", "{s.attr['app.code']} {s.attr['app.cached']} {s.attr['app.ratio']} "
                             "{s.attr['app.tags']} {s.attr['app.mode']}"),
    ("exists", 'exists(s.attr["app.cached"]) and exists(s.attr["app.code"]) and exists(s.attr["app.ratio"])', "x"),
    ("bare_bool", 's.is_root and not s.attr["app.cached"]', "x"),
    ("number", 's.attr["app.code"] = 42 and s.attr["app.ratio"] < 0.5', "x"),
    ("text", 's.attr["app.code"] = "42" and s.attr["app.cached"] =~ "^f" and s.attr["app.mode"] = "fast"', "x"),
    ("avg", 'avg(c.attr["app.score"] for child c of s) = 0.75 and max(c.attr["app.score"] for child c of s) = 1',
     "{avg(c.attr['app.score'] for child c of s)}"),
    ("absent", 'exists(s.attr["app.code"]) and not exists(s.attr["app.nothing"])', "x"),
]


def test_a_present_value_is_never_nil_for_its_type(fired):
    out, _ = fired
    assert out["message"] == ['42 false 0.25 ["a", "b"] fast']
    for rid in ("exists", "bare_bool", "number", "text", "avg", "absent"):
        assert len(out.get(rid, [])) == 1, rid
    assert out["avg"] == ["0.75"]


def test_the_projection_reads_text_only_where_nothing_gives_a_type(fired):
    _, rules = fired
    types = {(r.key, r.type) for r in rules.projection}
    assert ("app.code", AttrType.ANY) in types  # in the message, in `= "42"`
    assert ("app.code", AttrType.DOUBLE) in types  # beside a number
    assert ("app.cached", AttrType.BOOL) in types  # a condition on its own
    assert ("app.score", AttrType.DOUBLE) in types  # aggregated
