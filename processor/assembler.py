"""Assembler: decides when a buffered trace is complete and must be released.

Tail-sampling semantics: a trace is complete ``decision_wait`` after its last
span arrived.  A trace that looks whole leaves sooner: once its root span (no
parent) has arrived ended, it is a *candidate*, and ``complete_grace`` after
its last span the release loop asks the store whether every span's parent is
present (``SpanStore.complete``); if so it is released then (reason
``assembled``), otherwise it waits for more spans as before.  The grace is for
spans still on their way from other services' exporters: a child nobody has
sent yet cannot be seen missing, only waited for.  The number of buffered traces is bounded by ``max_traces``
(the least recently active go first: released early, never dropped), and a
trace that reaches ``max_spans_per_trace`` is released at once.  Spans that
arrive after their trace was released are "late": the trace is remembered
(bounded LRU of ids) so its late spans are released on the next tick, with
whatever the trace's verdict was.

Pure bookkeeping, no I/O: the pipeline tells it what arrived and asks what is
due; time is passed in, so tests control it.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

V = TypeVar("V")


class ReleaseReason(enum.StrEnum):
    COMPLETE = "complete"        # decision_wait passed since the last span
    ASSEMBLED = "assembled"      # root ended, every parent present, complete_grace passed since the last span
    MAX_TRACES = "max_traces"    # evicted to respect max_traces
    SPAN_LIMIT = "span_limit"    # reached max_spans_per_trace
    LATE = "late"                # spans of an already released trace
    SHUTDOWN = "shutdown"        # flushed on shutdown


@dataclass(slots=True)
class _Trace:
    last_seen: float
    spans: int
    ended: bool = False  # its root span arrived with an end time


@dataclass(slots=True)
class Due:
    """Traces to release now, with the reason for each."""

    trace_ids: list[bytes] = field(default_factory=list)
    reasons: list[ReleaseReason] = field(default_factory=list)

    def add(self, trace_id: bytes, reason: ReleaseReason) -> None:
        self.trace_ids.append(trace_id)
        self.reasons.append(reason)

    def __len__(self) -> int:
        return len(self.trace_ids)


class Assembler(Generic[V]):
    """Tracks buffered traces by last activity; V is the verdict kept for late spans."""

    def __init__(self, decision_wait: float, max_traces: int, max_spans_per_trace: int,
                 late_span_cache: int, complete_grace: float = 0.0) -> None:
        self.decision_wait = decision_wait
        self.complete_grace = complete_grace  # 0: only decision_wait releases a trace
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.late_span_cache = late_span_cache
        self._open: OrderedDict[bytes, _Trace] = OrderedDict()  # oldest activity first
        self._decided: OrderedDict[bytes, V | None] = OrderedDict()
        self._urgent = Due()
        self._urgent_ids: set[bytes] = set()
        # Candidates (root ended) by the time their grace ends: appended in the order of
        # their last span, so the first is always the earliest.
        self._candidates: OrderedDict[bytes, float] = OrderedDict()

    @property
    def buffered_traces(self) -> int:
        return len(self._open)

    @property
    def has_urgent(self) -> bool:
        """Traces to release without waiting (late spans, span limit reached)."""
        return bool(self._urgent_ids)

    @property
    def next_check(self) -> float | None:
        """When the earliest candidate's grace ends (None: no candidate)."""
        if not self._candidates:
            return None
        return next(iter(self._candidates.values()))

    def observe(self, traces: dict[bytes, int], now: float, ended: Collection[bytes] = ()) -> int:
        """Record spans that were just stored (trace id -> span count; ``ended``: the traces
        whose root span, with its end time, was among them); returns how many were late."""
        late = 0
        # Locals: the loops below run once per trace received, checked and released.
        open_, candidates, grace = self._open, self._candidates, self.complete_grace
        check_at = now + grace
        for trace_id, count in traces.items():
            state = open_.get(trace_id)
            if state is None:
                if trace_id in self._decided:
                    late += count
                    self._mark_urgent(trace_id, ReleaseReason.LATE)
                    continue
                state = open_[trace_id] = _Trace(now, count)
            else:
                state.last_seen = now
                state.spans += count
                open_.move_to_end(trace_id)
            if state.spans >= self.max_spans_per_trace:
                self._mark_urgent(trace_id, ReleaseReason.SPAN_LIMIT)
            elif grace > 0 and (state.ended or trace_id in ended):
                # Every new span restarts the grace: more may be on their way.
                state.ended = True
                if trace_id in candidates:
                    candidates.move_to_end(trace_id)
                candidates[trace_id] = check_at
        return late

    def to_check(self, now: float) -> list[bytes]:
        """Take the candidates whose grace has ended: the caller checks that every span's
        parent is present and reports the ones that pass to ``assembled``."""
        candidates = self._candidates
        ended = []
        for trace_id, at in candidates.items():
            if at > now:
                break
            ended.append(trace_id)
        for _ in ended:
            candidates.popitem(last=False)
        open_, urgent = self._open, self._urgent_ids
        return [t for t in ended if t in open_ and t not in urgent]

    def assembled(self, trace_ids: Iterable[bytes]) -> None:
        """These checked candidates are whole: the next ``due`` releases them.  A trace
        that failed the check stays open until a new span (a new candidacy) or decision_wait."""
        open_, urgent = self._open, self._urgent_ids
        whole = [t for t in dict.fromkeys(trace_ids) if t in open_ and t not in urgent]
        urgent.update(whole)
        self._urgent.trace_ids.extend(whole)
        self._urgent.reasons.extend([ReleaseReason.ASSEMBLED] * len(whole))

    def _mark_urgent(self, trace_id: bytes, reason: ReleaseReason) -> None:
        if trace_id not in self._urgent_ids:
            self._urgent_ids.add(trace_id)
            self._urgent.add(trace_id, reason)

    def due(self, now: float) -> Due:
        """Take the traces to release now (they are considered decided from here on)."""
        due, self._urgent, self._urgent_ids = self._urgent, Due(), set()
        open_ = self._open
        for trace_id in due.trace_ids:
            open_.pop(trace_id, None)
        horizon = now - self.decision_wait
        while open_:
            trace_id, state = next(iter(open_.items()))
            if state.last_seen > horizon:
                break
            open_.popitem(last=False)
            due.add(trace_id, ReleaseReason.COMPLETE)
        while len(open_) > self.max_traces:
            trace_id, _ = open_.popitem(last=False)
            due.add(trace_id, ReleaseReason.MAX_TRACES)
        candidates = self._candidates
        for trace_id in due.trace_ids:
            candidates.pop(trace_id, None)
        self._remember_all(due.trace_ids)
        return due

    def drain(self) -> Due:
        """Everything still open or pending, for shutdown."""
        due, self._urgent, self._urgent_ids = self._urgent, Due(), set()
        for trace_id in due.trace_ids:
            self._open.pop(trace_id, None)
        while self._open:
            trace_id, _ = self._open.popitem(last=False)
            due.add(trace_id, ReleaseReason.SHUTDOWN)
        self._candidates.clear()
        return due

    def _remember_all(self, trace_ids: list[bytes]) -> None:
        """``_remember(trace_id, None)`` for each, in order."""
        if self.late_span_cache == 0:
            return
        decided = self._decided
        for trace_id in trace_ids:
            decided.setdefault(trace_id, None)  # a late batch keeps the trace's verdict
            decided.move_to_end(trace_id)
        # The oldest go past the bound, as one by one: the last ``late_span_cache`` touched stay.
        while len(decided) > self.late_span_cache:
            decided.popitem(last=False)

    def _remember(self, trace_id: bytes, verdict: V | None) -> None:
        if self.late_span_cache == 0:
            return
        if trace_id in self._decided and verdict is None:
            verdict = self._decided[trace_id]  # a late batch keeps the trace's verdict
        self._decided[trace_id] = verdict
        self._decided.move_to_end(trace_id)
        while len(self._decided) > self.late_span_cache:
            self._decided.popitem(last=False)

    def set_verdict(self, trace_id: bytes, verdict: V) -> None:
        """Keep a released trace's verdict so its late spans get it too."""
        self._remember(trace_id, verdict)

    def verdict(self, trace_id: bytes) -> V | None:
        return self._decided.get(trace_id)
