"""processor.settlement.Settlement: a chunk leaves the journal only when every exporter is done with every payload."""

from __future__ import annotations

from processor.model import ReleasedSpans
from processor.settlement import Settlement
from tests.support.harness import sid, tid


def chunk(n: int) -> ReleasedSpans:
    return ReleasedSpans(trace_ids=[tid(1)] * n, span_ids=[sid(i) for i in range(1, n + 1)],
                         parent_span_ids=[None] * n, raw=[b""] * n, resource_ids=[0] * n, scope_ids=[0] * n,
                         resources={}, scopes={}, trace_count=1)


def test_the_keys_come_once_when_all_payloads_of_all_exporters_are_settled():
    done: list[list] = []
    s = Settlement(chunk(2), done.append)
    first_a, first_b, second_a = s.expect(), s.expect(), s.expect()  # 2 payloads x 2 exporters, one still coming
    first_a()
    first_b()
    assert done == []                  # not sealed: more payloads may follow
    second_b = s.expect()
    s.seal()
    second_a()
    second_a()                         # settling twice counts once
    assert done == []                  # the second exporter still holds the second payload
    second_b()
    assert done == [[(tid(1), sid(1)), (tid(1), sid(2))]]
    second_b()
    assert len(done) == 1


def test_a_chunk_without_payloads_is_settled_when_sealed():
    done: list[list] = []
    Settlement(chunk(0), done.append).seal()
    assert done == [[]]
