"""Diagnostics: where a problem is (``SourceSpan``), what it is (``Diagnostic``)
and how it is shown (text in the rustc/VRL manner, or JSON).

Detecting a problem and rendering it are separate: the parser and checker
build ``Diagnostic`` values; only the functions at the bottom turn them into
text.  Codes are stable (documented in docs/rules.md): ``E0xx`` errors stop a
rule set from loading, ``W0xx`` warnings never do.
"""

from __future__ import annotations

import bisect
import difflib
import enum
import json
import re
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
        """The span of ``text[start:end]``, computing lines and columns
        (for many spans of one text, build one ``LineIndex``)."""
        return LineIndex(text).span(path, start, end)


class LineIndex:
    """Where each line of a text starts, so that the line and column of an
    offset, or the text of a line, cost a binary search instead of a scan
    from the start (which made a large file's diagnostics quadratic)."""

    __slots__ = ("text", "_starts")

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of ``offset``."""
        line = bisect.bisect_right(self._starts, offset)
        return line, offset - self._starts[line - 1] + 1

    def span(self, path: str, start: int, end: int) -> SourceSpan:
        """The span of ``text[start:end]``."""
        end = max(end, start)
        line, col = self.line_col(start)
        end_line, end_col = self.line_col(end)
        return SourceSpan(path, line, col, end_line, end_col, start, end)

    def line(self, number: int) -> str | None:
        """The text of line ``number`` (1-based, without its newline), as
        ``text.split("\\n")[number - 1]``; None past the last line."""
        if not 0 < number <= len(self._starts):
            return None
        start = self._starts[number - 1]
        end = self._starts[number] - 1 if number < len(self._starts) else len(self.text)
        return self.text[start:end]


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
    return _render(diag, LineIndex(source) if source is not None else None)


def _render(diag: Diagnostic, lines: LineIndex | None) -> str:
    s = diag.span
    out = [f"{s.path}:{s.line}:{s.col}: {diag.severity.value}[{diag.code}]: {diag.message}"]
    line = lines.line(s.line) if lines is not None else None
    if line is not None:
        text = line.rstrip("\r")
        gutter = " " * len(str(s.line))
        # a span over several lines is underlined to the end of its first line
        end_col = s.end_col if s.end_line == s.line else len(text) + 1
        text, col, end_col = _window(text, s.col, end_col)
        width = max(1, end_col - col)
        # tabs keep their width so the caret lines up under the source text
        pad = "".join("\t" if ch == "\t" else " " for ch in text[: col - 1])
        label = f" {diag.label}" if diag.label else ""
        out += [f"{gutter} |", f"{s.line} | {text}", f"{gutter} | {pad}{'^' * width}{label}"]
    out += [f"  = hint: {h}" for h in diag.hints]
    return "\n".join(out)


_LONG_LINE = 400  # characters; a longer source line is shown around the caret
_CONTEXT = 80


def _window(text: str, col: int, end_col: int) -> tuple[str, int, int]:
    """``text`` and the span's columns in it, or for a line past ``_LONG_LINE``
    (a generated or hostile file: a huge literal, a thousand ``not``s) the
    ``2 * _CONTEXT`` characters around the span's start, cut with ``...``."""
    if len(text) <= _LONG_LINE:
        return text, col, end_col
    first = max(0, col - 1 - _CONTEXT)
    last = min(len(text), first + 2 * _CONTEXT)
    head = "..." if first else ""
    shown = head + text[first:last] + ("..." if last < len(text) else "")
    shift = len(head) - first
    return shown, col + shift, min(end_col, last + 1) + shift


def render_all(diags: Sequence[Diagnostic], sources: dict[str, str]) -> str:
    """All diagnostics, sorted by position, then a summary line."""
    wanted = {d.span.path for d in diags}
    indexes = {path: LineIndex(text) for path, text in sources.items() if path in wanted}
    blocks = [_render(d, indexes.get(d.span.path)) for d in sorted(diags, key=sort_key)]
    errors = sum(d.is_error for d in diags)
    warnings = len(diags) - errors
    if diags:
        blocks.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n\n".join(blocks)


def to_json(diags: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in sorted(diags, key=sort_key)], indent=2)
