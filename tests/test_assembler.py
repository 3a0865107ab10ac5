"""processor.assembler: when traces are released (time is passed in, so no sleeping)."""

from __future__ import annotations

from processor.assembler import Assembler, ReleaseReason

A, B, C, D = (bytes([n]) * 16 for n in (1, 2, 3, 4))


def make(decision_wait: float = 5.0, max_traces: int = 100, max_spans: int = 1000,
         late_cache: int = 100) -> Assembler[str]:
    return Assembler(decision_wait, max_traces, max_spans, late_cache)


def test_a_trace_is_complete_decision_wait_after_its_last_span():
    asm = make(decision_wait=5.0)
    asm.observe({A: 2}, now=0.0)
    asm.observe({A: 1}, now=3.0)  # activity pushes the deadline to 8.0
    assert len(asm.due(now=7.9)) == 0
    due = asm.due(now=8.0)
    assert due.trace_ids == [A] and due.reasons == [ReleaseReason.COMPLETE]
    assert asm.buffered_traces == 0
    assert len(asm.due(now=100.0)) == 0  # released once


def test_completion_order_follows_last_activity():
    asm = make(decision_wait=1.0)
    asm.observe({A: 1, B: 1}, now=0.0)
    asm.observe({A: 1}, now=0.5)
    asm.observe({C: 1}, now=0.7)
    assert asm.due(now=1.6).trace_ids == [B, A]
    assert asm.due(now=1.7).trace_ids == [C]


def test_max_traces_releases_the_least_recently_active_first_never_drops():
    asm = make(decision_wait=60.0, max_traces=2)
    asm.observe({A: 1}, now=0.0)
    asm.observe({B: 1}, now=1.0)
    asm.observe({C: 1}, now=2.0)
    asm.observe({A: 1}, now=3.0)  # A is now the most recent
    asm.observe({D: 1}, now=4.0)
    due = asm.due(now=4.0)
    assert due.trace_ids == [B, C]
    assert due.reasons == [ReleaseReason.MAX_TRACES] * 2
    assert asm.buffered_traces == 2
    assert asm.drain().trace_ids == [A, D]


def test_span_limit_releases_the_trace_at_once():
    asm = make(decision_wait=60.0, max_spans=5)
    asm.observe({A: 3, B: 1}, now=0.0)
    assert len(asm.due(now=0.0)) == 0
    asm.observe({A: 2}, now=0.1)
    due = asm.due(now=0.1)
    assert due.trace_ids == [A] and due.reasons == [ReleaseReason.SPAN_LIMIT]
    assert asm.buffered_traces == 1


def test_span_limit_in_one_batch_and_marked_once():
    asm = make(max_spans=3)
    asm.observe({A: 10}, now=0.0)
    asm.observe({A: 1}, now=0.0)  # still open until due(): counted, not marked twice
    due = asm.due(now=0.0)
    assert due.trace_ids == [A]


def test_late_spans_of_a_released_trace_are_released_on_the_next_tick():
    asm = make(decision_wait=1.0)
    asm.observe({A: 2}, now=0.0)
    assert asm.due(now=1.0).trace_ids == [A]
    assert asm.observe({A: 3, B: 1}, now=2.0) == 3  # three late spans
    due = asm.due(now=2.0)
    assert due.trace_ids == [A] and due.reasons == [ReleaseReason.LATE]
    assert asm.buffered_traces == 1  # B waits normally
    assert asm.observe({A: 1}, now=2.5) == 1  # still remembered


def test_late_spans_keep_the_traces_verdict():
    asm = make(decision_wait=1.0)
    asm.observe({A: 1}, now=0.0)
    asm.due(now=1.0)
    asm.set_verdict(A, "root cause: db")
    asm.observe({A: 1}, now=2.0)
    asm.due(now=2.0)
    assert asm.verdict(A) == "root cause: db"
    assert asm.verdict(B) is None


def test_late_span_cache_is_bounded_lru():
    asm = make(decision_wait=0.0, late_cache=2)
    for n, trace in enumerate((A, B, C)):
        asm.observe({trace: 1}, now=float(n))
        asm.due(now=float(n))
    assert asm.observe({A: 1}, now=10.0) == 0  # A was forgotten: a new trace again
    assert asm.observe({C: 1}, now=10.0) == 1
    assert asm.buffered_traces == 1


def test_no_late_tracking_with_a_zero_cache():
    asm = make(decision_wait=0.0, late_cache=0)
    asm.observe({A: 1}, now=0.0)
    asm.due(now=0.0)
    assert asm.observe({A: 1}, now=1.0) == 0


def test_drain_returns_everything_open_and_pending():
    asm = make(decision_wait=60.0, max_spans=2)
    asm.observe({A: 1}, now=0.0)
    asm.observe({B: 5}, now=1.0)  # urgent (span limit), not yet taken
    asm.observe({C: 1}, now=2.0)
    due = asm.drain()
    assert due.trace_ids == [B, A, C]
    assert due.reasons == [ReleaseReason.SPAN_LIMIT, ReleaseReason.SHUTDOWN, ReleaseReason.SHUTDOWN]
    assert asm.buffered_traces == 0
    assert len(asm.drain()) == 0
    assert len(asm.due(now=1000.0)) == 0


# --- complete traces leave early (complete_grace) ------------------------------


def test_a_candidate_is_checked_complete_grace_after_its_last_span_and_released_if_whole():
    asm = Assembler(5.0, 100, 1000, 100, complete_grace=0.5)
    asm.observe({A: 2}, now=0.0)              # children first, as an SDK sends them
    assert asm.next_check is None             # no root yet: nothing to check
    asm.observe({A: 1}, now=1.0, ended=[A])   # the root, ended
    assert asm.next_check == 1.5
    assert asm.to_check(1.4) == []
    assert asm.to_check(1.5) == [A]
    asm.assembled([A])
    due = asm.due(1.5)
    assert due.trace_ids == [A] and due.reasons == [ReleaseReason.ASSEMBLED]
    assert asm.buffered_traces == 0 and asm.next_check is None
    asm.observe({A: 1}, now=1.6)              # a span after the release: late, as before
    late = asm.due(1.6)
    assert late.trace_ids == [A] and late.reasons == [ReleaseReason.LATE]


def test_a_new_span_restarts_the_grace_and_a_failed_check_waits_for_decision_wait():
    asm = Assembler(5.0, 100, 1000, 100, complete_grace=0.5)
    asm.observe({A: 1, B: 1}, now=0.0, ended=[A, B])
    asm.observe({A: 1}, now=0.4)              # the root already came: still a candidate, later
    assert asm.to_check(0.5) == [B]
    assert asm.to_check(0.9) == [A]
    asm.assembled([])                         # neither was whole (a parent missing)
    assert len(asm.due(4.0)) == 0
    due = asm.due(5.4)
    assert due.trace_ids == [B, A] and due.reasons == [ReleaseReason.COMPLETE] * 2
    assert asm.next_check is None


def test_without_complete_grace_only_decision_wait_releases():
    asm = Assembler(5.0, 100, 1000, 100, complete_grace=0.0)
    asm.observe({A: 3}, now=0.0, ended=[A])
    assert asm.next_check is None and asm.to_check(100.0) == []
    assert asm.due(5.0).reasons == [ReleaseReason.COMPLETE]


def test_a_candidate_released_otherwise_is_no_longer_checked():
    asm = Assembler(5.0, 1, 1000, 100, complete_grace=0.5)
    asm.observe({A: 1}, now=0.0, ended=[A])
    asm.observe({B: 1}, now=0.1)
    assert asm.due(0.1).reasons == [ReleaseReason.MAX_TRACES]   # A evicted for max_traces
    assert asm.next_check is None and asm.to_check(1.0) == []
    asm.assembled([A])                                           # a stale answer changes nothing
    assert len(asm.due(1.0)) == 0
