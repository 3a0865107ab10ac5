"""Events and links as relations (``event e of s``, ``link l of s``) over real spans.

Spans come from a real opentelemetry-sdk tracer (events with their own
timestamps, a recorded exception, links to a span of the batch and to one
outside it), encoded by the SDK's OTLP encoder, decoded by the analysis'
projector (``processor.analysis.attributes``) and run through the compiled
rules, as ``faulttrace serve`` would."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from dsl import AttrSource, load_rules
from tests.support.harness import fire_rules

HEAD = 'title "t"\n  layer code\n  severity low\n  confidence 0.5'
T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _request():
    """Two traces.  ``call``: three ``retry`` events at 10, 20 and 30 ms after
    its start (attempt 1..3), then two exceptions, the second a timeout.
    ``produce`` fails; ``consume`` (its own trace) links to it and to a span
    that is not in the batch."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "events"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faulttrace-tests")
    call = tracer.start_span("call", start_time=T0)
    for attempt in (1, 2, 3):
        call.add_event("retry", {"attempt": attempt}, timestamp=T0 + 10 * attempt * MS)
    call.add_event("exception", {"exception.type": "KeyError", "exception.message": "k"}, timestamp=T0 + 31 * MS)
    call.add_event("exception", {"exception.type": "TimeoutError", "exception.message": "slow backend"},
                   timestamp=T0 + 32 * MS)
    call.end(end_time=T0 + 40 * MS)
    produce = tracer.start_span("produce", start_time=T0, context=trace.set_span_in_context(trace.INVALID_SPAN))
    produce.set_status(Status(StatusCode.ERROR))
    produce.end(end_time=T0 + 5 * MS)
    absent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    consume = tracer.start_span("consume", start_time=T0 + 6 * MS, context=trace.set_span_in_context(trace.INVALID_SPAN),
                                links=[trace.Link(produce.get_span_context()), trace.Link(absent)])
    consume.end(end_time=T0 + 9 * MS)
    provider.shutdown()
    return encode_spans(memory.get_finished_spans())


RULES = [
    # every event, not only the first of each name
    ("three_retries", 'count(event e of s where e.name = "retry") = 3', "{count(event e of s)} events"),
    ("late_retry", 'exists(event e of s where e.name = "retry" and e.attr["attempt"] = 3 and e.time - s.start = 30ms)',
     "{max(e.time - s.start for event e of s where e.name = 'retry')}"),
    # the attempts, summed over the events
    ("attempts", 'sum(e.attr["attempt"] for event e of s) = 6', "x"),
    # forall: no retry lacks an attempt
    ("every_retry_counted", 'exists(event e of s) and not exists(event e of s where e.name = "retry" and not exists(e.attr["attempt"]))', "x"),
    # an event bound by `match`: the second exception, which `s.event["exception"]` never saw
    ("timeout", 'e.name = "exception" and e.attr["exception.type"] =~ "Timeout"', "{e.attr['exception.message']} at {e.time - s.start}"),
    ("linked_failure", "l.status = error", "{s.name} links to failed {l.name}"),
    ("links_present", "count(link l of s) = 1", "x"),
]
MATCH = {"timeout": "span s, event e of s", "linked_failure": "span s, link l of s"}


@pytest.fixture(scope="module")
def fired(tmp_path_factory):
    """rule id -> (span name, message) of its findings over the batch."""
    text = "\n".join(f"rule t.{rid} {{\n  {HEAD}\n  match {MATCH.get(rid, 'span s')} where {where}\n  message \"{msg}\"\n}}"
                     for rid, where, msg in RULES)
    rules, conn, findings = fire_rules(tmp_path_factory.mktemp("events"), text, [_request()])
    names = dict(conn.execute("SELECT span_id, name FROM batch").fetchall())
    out: dict[str, list[tuple[str, str]]] = {}
    for f in findings:
        out.setdefault(f.rule_id.removeprefix("t."), []).append((names[f.span_id], f.message))
    return out, rules


def test_every_event_with_its_time_and_attributes(fired):
    out, _ = fired
    assert out["three_retries"] == [("call", "5 events")]
    assert out["late_retry"] == [("call", "30ms")]
    assert out["attempts"] == [("call", "x")]
    assert out["every_retry_counted"] == [("call", "x")]
    assert out["timeout"] == [("call", "slow backend at 32ms")]


def test_links_reach_spans_of_the_batch_only(fired):
    out, _ = fired
    assert out["linked_failure"] == [("consume", "consume links to failed produce")]
    assert out["links_present"] == [("consume", "x")]  # the link to a span outside the batch is no row


def test_the_lists_are_projected_only_for_rules_that_use_them(fired, tmp_path):
    _, rules = fired
    sources = {r.source for r in rules.projection}
    assert {AttrSource.EVENTS, AttrSource.LINKS} <= sources
    path = tmp_path / "plain.rules"
    path.write_text(f'rule t.plain {{\n  {HEAD}\n  match span s where s.event["exception"]\n}}', encoding="utf-8")
    plain = load_rules([path])
    assert not {r.source for r in plain.projection} & {AttrSource.EVENTS, AttrSource.LINKS}
