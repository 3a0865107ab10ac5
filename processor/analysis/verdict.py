"""What analysis concludes about a batch of completed traces: the verdict types.

Per trace, ranked root-cause candidates (``Candidate``), each with the
evidence that blames it (``Evidence``: a rule, a fault tree, the localizer),
and the spans that only inherited the problem (symptoms).  Analyzers
(``processor.analysis.protocols``) produce a ``BatchVerdict``; the annotator
turns it into span annotations and ``faulttrace explain`` prints it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from dsl import TreeOutcome


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason a span is blamed: a rule firing, a fault tree whose fired
    cut set contains a rule blaming the span, a baseline deviation."""

    source: str       # rule id (fault tree id when kind is "fault_tree")
    message: str
    confidence: float
    score: float      # ranking weight (confidence x severity for rules and trees)
    layer: str
    kind: str = "rule"                 # "rule" | "fault_tree" | "localizer"
    cut_set: tuple[str, ...] = ()      # fault trees: the fired minimal cut set (event ids)
    # localizer: the failure the piece says starts at the span, "error" or "delay" ('' for a piece
    # that only qualifies the others: the window's support, an attribution, the span's own values)
    failure: str = ""
    # the confidence its source gave, where a trace that did not fail lowered ``confidence`` (how
    # likely the span caused anything there: combined.trace_local, prevalence.HealthyFiring.weigh);
    # None where it was not lowered.  The layer vote reads it (``Candidate.layer``)
    stated: float | None = None

    @property
    def reading(self) -> float:
        """How sure the source is of what it reads on the span (its layer), were the span the cause:
        the stated confidence, not the doubt a trace without a failure casts on it being one."""
        return self.confidence if self.stated is None else self.stated

    def discounted(self, confidence: float) -> Evidence:
        """This piece with ``confidence`` as its belief in a trace that did not fail; the stated
        confidence is kept (the first one given, however many discounts follow)."""
        if confidence == self.confidence:
            return self
        return dataclasses.replace(self, confidence=confidence, stated=self.reading)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A span localized as a root cause of its trace."""

    span_id: bytes
    service: str
    name: str
    depth: int
    start_ns: int
    end_ns: int
    evidence: tuple[Evidence, ...]
    rank: int = 0
    # The probability that this span is its trace's root cause, once the
    # trace's candidates are calibrated together (``processor.analysis.calibration``).
    probability: float | None = None

    @property
    def score(self) -> float:
        """Ranking weight: the strongest evidence, a fired fault tree's included."""
        return max(e.score for e in self.evidence)

    @property
    def _primary(self) -> tuple[Evidence, ...]:
        """The evidence about this span itself (rules), else all of it: a
        fault tree's confidence is about its top event, not about one span."""
        own = tuple(e for e in self.evidence if e.kind != "fault_tree")
        return own or self.evidence

    @property
    def confidence(self) -> float:
        """The calibrated probability, else the most confident evidence about the span itself."""
        if self.probability is not None:
            return self.probability
        return max(e.confidence for e in self._primary)

    @property
    def layer(self) -> str:
        """The layer most of the evidence about the span agrees on ('' when none names one).

        Each family of evidence is one voter with its most confident piece per layer: the
        rules (a library's rules overlap: two rules reading the same exception are one reading,
        not two), the fault trees, and the localizer (its sources share the layer it infers
        from the span's conventions); the layer with the most support wins, the strongest
        evidence breaking ties. So generic rules (any exception is "code", a key error is
        "code") do not overrule a reading of the same span that a specific rule and the
        conventions agree on (the exception is a pool's: infrastructure; it follows a flag
        variant never seen before: config).  A piece votes with its stated confidence
        (``Evidence.reading``): in a trace that did not fail, the doubt that the span caused
        anything is no doubt about which layer its fault would be in."""
        votes: dict[str, dict[str, float]] = {}
        best: dict[str, float] = {}
        for e in self._primary:
            if not e.layer:
                continue
            voter = e.kind
            layer_votes = votes.setdefault(e.layer, {})
            layer_votes[voter] = max(layer_votes.get(voter, 0.0), e.reading)
            best[e.layer] = max(best.get(e.layer, 0.0), e.score)
        if not votes:
            return ""
        return max(votes, key=lambda layer: (round(sum(votes[layer].values()), 9), best[layer], layer))

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules that fired on this span (``rca.rule``)."""
        return tuple(dict.fromkeys(e.source for e in self.evidence if e.kind == "rule"))

    @property
    def statistical(self) -> tuple[str, ...]:
        """The localizer's sources that blame this span (``rca.evidence``: ``localizer.latency``, …)."""
        return tuple(dict.fromkeys(e.source for e in self.evidence if e.kind == "localizer"))

    @property
    def fault_tree(self) -> Evidence | None:
        """The strongest fault-tree evidence on this span, if a tree fired through it."""
        trees = [e for e in self.evidence if e.kind == "fault_tree"]
        return max(trees, key=lambda e: e.score) if trees else None


def rank_candidates(candidates: Iterable[Candidate],
                    support: Callable[[Candidate], float] | None = None) -> tuple[Candidate, ...]:
    """Candidates in ranking order, numbered from 1: the strongest evidence
    first (confidence x severity); on ties the better supported (``support``: the
    span's evidence taken together, so a rule's finding that the statistics
    corroborate comes before the same finding alone), then deeper spans, then by span id."""
    ordered = sorted(candidates, key=lambda c: (-c.score, -(support(c) if support else 0.0), -c.depth, c.span_id))
    return tuple(dataclasses.replace(c, rank=i) for i, c in enumerate(ordered, 1))


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    trace_id: bytes
    root_span_id: bytes | None      # the trace's root span (dsl.root_key_sql), if it has spans
    candidates: tuple[Candidate, ...]
    fault_trees: tuple[TreeOutcome, ...] = ()  # trees whose top event is true (fired) or unknown
    min_confidence: float = 0.0     # below it a candidate is not written as a root cause (annotator)

    @property
    def fired_tree(self) -> TreeOutcome | None:
        """The fired tree with the highest score (confidence x severity)."""
        fired = [t for t in self.fault_trees if t.fired]
        return max(fired, key=lambda t: (t.score, t.tree_id)) if fired else None

    @property
    def top(self) -> Candidate | None:
        """The first candidate, written or not (the analysis's ranking)."""
        return self.candidates[0] if self.candidates else None

    def is_written(self, c: Candidate) -> bool:
        """Whether ``c`` is written as a root cause: at least as confident as ``min_confidence``."""
        return self.min_confidence <= 0 or c.confidence >= self.min_confidence

    @property
    def written(self) -> tuple[Candidate, ...]:
        """The candidates written as root causes (``rca.root_cause``), in ranking order."""
        return tuple(c for c in self.candidates if self.is_written(c))

    @property
    def root_cause(self) -> Candidate | None:
        """The trace's root cause as the annotator writes it: the first candidate if it is written,
        else None.  What the metrics, the log sentence and the incidents count, so they agree with
        the spans that leave."""
        top = self.top
        return top if top is not None and self.is_written(top) else None


@dataclass(frozen=True, slots=True)
class ServiceRank:
    """A service in the window-level ranking (``localizer.window``)."""

    service: str
    score: float          # abnormality beyond chance, summed over the evidence sources
    probability: float    # that the window's fault originates here, given that it holds one


@dataclass(frozen=True, slots=True)
class Symptom:
    """A span that only shows a problem originating elsewhere in its trace (``rca.symptom``).

    ``caused_by`` is the candidate that explains it (``rca.caused_by``). An *inherited*
    symptom (an ancestor that propagated the error or waited out the delay) stays a
    candidate if some analyzer blames it on its own. An *explained* one (a rule's
    ``explains``, a fired fault tree's cut set, the counterfactual lift) is no candidate
    at all while its cause is one: knowledge or the window says it only followed.
    """

    span_id: bytes
    caused_by: bytes | None = None
    reason: str = ""          # the link's evidence, for explain (inherited error, lift, rule)
    explained: bool = False


def follow_cause(s: Symptom, symptoms: Mapping[bytes, Symptom], blamed: Collection[bytes]) -> bytes | None:
    """Where ``s``'s ``caused_by`` leads through other symptoms (``symptoms``, by span id): the
    first span that is blamed or no symptom; None when the links go round in a circle."""
    cause, seen = s.caused_by, {s.span_id}
    while cause is not None and cause not in blamed and cause in symptoms and cause not in seen:
        seen.add(cause)
        cause = symptoms[cause].caused_by
    return None if cause in seen else cause


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    traces: dict[bytes, TraceVerdict] = field(default_factory=dict)
    # trace id -> spans whose error or delay comes from the root causes (rca.symptom)
    symptoms: dict[bytes, tuple[Symptom, ...]] = field(default_factory=dict)
    # services ranked by how consistently they are anomalous across the batch's traces
    services: tuple[ServiceRank, ...] = ()
