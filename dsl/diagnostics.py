"""Diagnostics: where a problem is (``SourceSpan``), what it is (``Diagnostic``)
and how it is shown (text in the rustc/VRL manner, or JSON).

Detecting a problem and rendering it are separate: the parser and checker
build ``Diagnostic`` values; only the functions at the bottom turn them into
text.  Codes are stable (documented in docs/rules.md): ``E0xx`` errors stop a
rule set from loading, ``W0xx`` warnings never do.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SourceSpan:
    """A region of one source file; lines and columns are 1-based, ``end_*``
    exclusive, offsets are 0-based character offsets into the file text."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    start: int = 0
    end: int = 0

    @staticmethod
    def at(path: str, text: str, start: int, end: int) -> SourceSpan:
        """The span of ``text[start:end]``, computing lines and columns."""
        line, col = _line_col(text, start)
        end_line, end_col = _line_col(text, max(end, start))
        return SourceSpan(path, line, col, end_line, end_col, start, max(end, start))


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, col


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem: a stable code, a message, where, and hints for the fix."""

    code: str
    message: str
    span: SourceSpan
    hints: tuple[str, ...] = field(default=())
    label: str = ""  # short text printed after the caret

    @property
    def severity(self) -> Severity:
        return Severity.ERROR if self.code.startswith("E") else Severity.WARNING

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_json(self) -> dict[str, object]:
        s = self.span
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "path": s.path,
            "line": s.line,
            "col": s.col,
            "end_line": s.end_line,
            "end_col": s.end_col,
            "label": self.label,
            "hints": list(self.hints),
        }


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> tuple[str, ...]:
    """A ``did you mean`` hint for ``word`` if one candidate is close enough."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=cutoff)
    return (f"did you mean `{close[0]}`?",) if close else ()


def sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    return (d.span.path, d.span.line, d.span.col, d.code)


def render(diag: Diagnostic, source: str | None) -> str:
    """``path:line:col: error[E012]: message``, the source line, a caret under
    the span and ``= hint:`` lines.  ``source`` is the file's text (``None``
    when it could not be read; then only the header and hints are shown)."""
    s = diag.span
    out = [f"{s.path}:{s.line}:{s.col}: {diag.severity.value}[{diag.code}]: {diag.message}"]
    lines = source.split("\n") if source is not None else []
    if 0 < s.line <= len(lines):
        text = lines[s.line - 1].rstrip("\r")
        gutter = " " * len(str(s.line))
        # a span over several lines is underlined to the end of its first line
        end_col = s.end_col if s.end_line == s.line else len(text) + 1
        width = max(1, end_col - s.col)
        # tabs keep their width so the caret lines up under the source text
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: s.col - 1])
        label = f" {diag.label}" if diag.label else ""
        out += [f"{gutter} |", f"{s.line} | {text}", f"{gutter} | {pad}{'^' * width}{label}"]
    out += [f"  = hint: {h}" for h in diag.hints]
    return "\n".join(out)


def render_all(diags: Sequence[Diagnostic], sources: dict[str, str]) -> str:
    """All diagnostics, sorted by position, then a summary line."""
    blocks = [render(d, sources.get(d.span.path)) for d in sorted(diags, key=sort_key)]
    errors = sum(d.is_error for d in diags)
    warnings = len(diags) - errors
    if diags:
        blocks.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n\n".join(blocks)


def to_json(diags: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in sorted(diags, key=sort_key)], indent=2)
