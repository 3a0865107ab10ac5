"""What analysis concludes about a batch of completed traces, and the analyzer interface.

An analyzer (rules now; fault trees and the localizer later) reads the
released spans in DuckDB and returns a ``BatchVerdict``: per trace, ranked
root-cause candidates.  The annotator turns verdicts into span annotations;
``faulttrace explain`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import duckdb

from dsl import AttrRef


@dataclass(frozen=True, slots=True)
class Evidence:
    """One reason a span is blamed: a rule firing (later: a fault tree, a baseline deviation)."""

    source: str       # rule id
    message: str
    confidence: float
    score: float      # ranking weight (confidence x severity for rules)
    layer: str


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

    @property
    def score(self) -> float:
        return max(e.score for e in self.evidence)

    @property
    def confidence(self) -> float:
        return max(e.confidence for e in self.evidence)

    @property
    def layer(self) -> str:
        return max(self.evidence, key=lambda e: e.score).layer

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.source for e in self.evidence))


@dataclass(frozen=True, slots=True)
class TraceVerdict:
    trace_id: bytes
    root_span_id: bytes | None      # the trace's root (no parent in the trace), if present
    candidates: tuple[Candidate, ...]

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    traces: dict[bytes, TraceVerdict] = field(default_factory=dict)


class Analyzer(Protocol):
    """Reads released spans in DuckDB (table ``table``) on the store thread; says what it found."""

    def projection(self) -> frozenset[AttrRef]: ...

    def analyze(self, conn: duckdb.DuckDBPyConnection, table: str) -> BatchVerdict: ...
