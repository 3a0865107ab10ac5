"""Events and links as relations: ``event x of s`` ranges over every event of a
span (name, time, attributes), ``link k of s`` over the spans of the batch it
links to; both counted, aggregated and quantified like spans."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dsl import AttrSource, check_paths
from processor.tools.ruletest import run_fixture_tests
from tests.dsl.test_compiler import names, rule
from tests.support.dsl_spans import Trace


@pytest.fixture
def trace() -> Trace:
    """`call` retries three times (attempt 1..3 at 10, 20, 30 ms), then throws
    twice (KeyError, then TimeoutError at 35 ms); `quiet` has no event; `consume`
    links to `produce` (failed) and to `quiet`; `produce` links to nothing."""
    t = Trace()
    root = t.span("root", end=100)
    t.span("call", root, end=40, events=[
        ("retry", {"attempt": 1}, 10), ("retry", {"attempt": 2}, 20), ("retry", {"attempt": 3}, 30),
        ("exception", {"exception.type": "KeyError"}, 31), ("exception", {"exception.type": "TimeoutError"}, 35)])
    quiet = t.span("quiet", root, start=40, end=50)
    produce = t.span("produce", root, start=50, end=55, status="error")
    t.span("consume", root, start=60, end=70, status="error", links=[produce, quiet])
    return t


@pytest.mark.parametrize(("where", "fired"), [
    ('count(event x of e where x.name = "retry") = 3', ["call"]),
    ("count(event x of e) = 0", ["consume", "produce", "quiet", "root"]),   # no event is a count of 0
    ('exists(event x of e where x.name = "exception" and x.attr["exception.type"] = "TimeoutError")', ["call"]),
    ('exists(event x of e where x.time - e.start > 32ms)', ["call"]),
    ('exists(event x of e where x.time - e.start > 35ms)', []),
    ('max(x.attr["attempt"] for event x of e) = 3', ["call"]),
    ('sum(x.attr["attempt"]:int for event x of e where x.name = "retry") = 6', ["call"]),
    ('count(event x of e by x.name) = 3', ["call"]),                          # the retries are a group of 3
    ('count(event x of e by x.name) = 4', []),
    # every event named retry has an attempt (and there is one)
    ('exists(event x of e) and not exists(event x of e where x.name = "retry" and not exists(x.attr["attempt"]))', ["call"]),
    # events of another span, nested
    ('exists(child c of e where exists(event x of c where x.name = "retry"))', ["root"]),
    ('count(link k of e) = 2', ["consume"]),
    ("exists(link k of e where k.status = error)", ["consume"]),
    ('exists(link k of e where count(event x of k) > 0)', []),
    ('count(link k of e where k.start < e.start) = 2 and not exists(link k of e where k.end > e.start)', ["consume"]),
])
def test_quantified(rules_from, run, trace, where, fired):
    assert names(run(rules_from(rule(where)), trace), trace) == fired


def test_an_event_bound_by_match(rules_from, run, trace):
    text = rule('x.name = "retry" and x.attr["attempt"] >= 2', match="span e, event x of e",
                message='"attempt {x.attr[\'attempt\']} at {x.time - e.start}"')
    found = run(rules_from(text), trace)
    assert names(found, trace) == ["call"]  # one finding per span, not per event
    assert found[0].message in ("attempt 2 at 20ms", "attempt 3 at 30ms")


def test_a_linked_span_can_be_blamed(rules_from, run, trace):
    text = rule("e.status = error and k.status = error", match="span e, link k of e", blame="k",
                message='"{e.name} after {k.name}"')
    found = run(rules_from(text), trace)
    assert names(found, trace) == ["produce"]
    assert found[0].message == "consume after produce"


def test_a_link_out_of_the_batch_is_no_row(rules_from, run, trace):
    other = Trace()
    lonely = other.span("lonely", links=[trace.spans[0]])  # its target is in a batch of its own
    rs = rules_from(rule("count(link k of e) = 0 and e.name = \"lonely\""))
    assert names(run(rs, other), other) == ["lonely"]
    assert names(run(rs, other, trace), other) == []
    assert lonely.links


def test_the_projection_reads_the_lists_only_for_the_relation(rules_from):
    plain = rules_from(rule('e.event["exception"]["exception.type"] = "KeyError"'))
    assert {r.source for r in plain.projection} == {AttrSource.EVENT}
    events = rules_from(rule('exists(event x of e where x.attr["exception.type"] = "KeyError")'))
    assert {r.source for r in events.projection} == {AttrSource.EVENTS}
    links = rules_from(rule("exists(link k of e)"))
    assert {r.source for r in links.projection} == {AttrSource.LINKS}


@pytest.mark.parametrize(("where", "text"), [
    ("x.duration > 1s", "unknown event field `duration`"),
    ('x.resource["service.name"] = "a"', "`x` is an event, not a span"),
    ('x.event["retry"]', "`x` is an event, not a span"),
    ("exists(child c of x)", "`x` is an event, not a span: `child ... of` needs a span"),
    ("x before e", "`x` is an event, not a span: `before` needs a span"),
])
def test_an_event_is_not_a_span(tmp_path, where, text):
    path = tmp_path / "bad.rules"
    path.write_text(rule(where, match="span e, event x of e"), encoding="utf-8")
    diags = [d for d in check_paths([path]) if d.is_error]
    assert any(d.code in ("E073", "E011") and text in d.message for d in diags), [d.message for d in diags]


def test_fixtures_through_the_real_decode():
    """``faulttrace test`` on OTLP/JSON traces with events and links (tests/dsl/fixtures/events)."""
    out = io.StringIO()
    code = run_fixture_tests([Path(__file__).parent / "fixtures" / "events"], out)
    assert code == 0, out.getvalue()
    assert out.getvalue().endswith("4 passed, 0 failed\n")
