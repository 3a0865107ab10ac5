"""Calibrated confidence: the probability that a candidate is its trace's root cause.

Ranking weighs evidence by consequence (severity); a candidate's
*confidence* is the probability that it is the trace's root cause
(``calibrate_trace``, which ``analysis.combined.merge`` applies to every trace), in two steps:

1. *support* — what the span's own evidence says.  Each piece of evidence
   carries a probability: a rule's confidence is how often its finding is
   right, the localizer's a probability of causation (``localizer.blame``).
   Evidence of one family is not independent (rules of one library overlap, a
   fault tree is built from the rules on the span, the localizer's sources
   read the same spans), so a family counts with its most confident piece;
   the families — a team's knowledge and the statistics of the traffic — are
   independent, and combine by noisy-OR.
2. *competition* — a trace has one root cause, so its candidates are
   exclusive explanations.  Each candidate's support, as odds against "the
   root cause is none of these", is its likelihood ratio; normalising over
   the candidates and that alternative, ``p_i = o_i / (1 + sum_j o_j)``.  A
   lone candidate keeps its support; a clear winner keeps most of it; a
   near tie splits it.

Attempts of one call are not rival explanations: a caller that retried a
refused connection five times holds five failed client spans of one
operation under one parent, and they all say "this call failed" (each is
the cause: had the callee answered, none would have failed).  Competing as
five, they would split the probability five ways, so the more often a
client retried, the less sure the verdict — below ``min_confidence`` in a
trace whose caller survived the retries.  ``calibrate_trace`` takes, per
candidate, the call it is an attempt of (``combined.repeated_calls``: its
parent span, service and operation); attempts of one call compete as one
explanation with the support of the strongest, and each gets that
explanation's probability.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence

from processor.analysis.verdict import Candidate, TraceVerdict

MAX_SUPPORT = 0.999       # support is capped below certainty so its odds stay finite


def support(c: Candidate) -> float:
    """The probability that ``c`` is a root cause on its own evidence: the most confident piece
    of each family (rules, with a fault tree only when no rule blames the span; the
    localizer), the families combined by noisy-OR."""
    rules = [e.confidence for e in c.evidence if e.kind == "rule"]
    trees = [e.confidence for e in c.evidence if e.kind == "fault_tree"]
    stats = [e.confidence for e in c.evidence if e.kind == "localizer"]
    miss = 1.0
    for family in (rules or trees, stats):
        if family:
            miss *= 1.0 - min(1.0, max(0.0, max(family)))
    return 1.0 - miss


def compete(supports: Sequence[float]) -> list[float]:
    """Probabilities of exclusive candidates from their supports: ``o_i / (1 + sum_j o_j)``
    with ``o = s / (1 - s)`` — a lone candidate keeps its support, rivals share it."""
    odds = [min(s, MAX_SUPPORT) / (1.0 - min(s, MAX_SUPPORT)) for s in supports]
    total = 1.0 + sum(odds)
    return [o / total for o in odds]


def calibrate_trace(v: TraceVerdict, calls: Mapping[bytes, Hashable] | None = None) -> TraceVerdict:
    """The trace's candidates, in the same order, with calibrated confidences.  ``calls``: per
    candidate span id, the call it is an attempt of; candidates of one call compete as one
    explanation with the strongest one's support, and each gets its probability (a candidate
    not in ``calls`` is a call of its own)."""
    calls = calls or {}
    keys = [calls.get(c.span_id, c.span_id) for c in v.candidates]
    strongest: dict[Hashable, float] = {}
    for key, c in zip(keys, v.candidates):
        strongest[key] = max(strongest.get(key, 0.0), support(c))
    probability = dict(zip(strongest, compete(list(strongest.values()))))
    cands = tuple(dataclasses.replace(c, probability=round(probability[key], 6)) for c, key in zip(v.candidates, keys))
    return dataclasses.replace(v, candidates=cands)
