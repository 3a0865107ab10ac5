"""dsl.diagnostics: spans, severities, text and JSON rendering."""

from __future__ import annotations

import json

from dsl.diagnostics import Diagnostic, Severity, SourceSpan, did_you_mean, render, render_all, to_json

SRC = "rule a.b {\n\tmatch span e where e.duraton > 1s\n}\n"


def diag(**kw) -> Diagnostic:
    span = SourceSpan.at("f.rules", SRC, SRC.index("duraton"), SRC.index("duraton") + 7)
    return Diagnostic(kw.pop("code", "E011"), "unknown span field `duraton`", span, ("did you mean `duration`?",), **kw)


def test_span_at_computes_lines_and_columns():
    s = SourceSpan.at("f", SRC, SRC.index("duraton"), SRC.index("duraton") + 7)
    assert (s.line, s.col, s.end_line, s.end_col) == (2, 23, 2, 30)


def test_severity_follows_the_code():
    assert diag().severity is Severity.ERROR and diag().is_error
    assert diag(code="W001").severity is Severity.WARNING


def test_render_caret_under_span_keeps_tabs():
    assert render(diag(label="here"), SRC) == (
        "f.rules:2:23: error[E011]: unknown span field `duraton`\n"
        "  |\n"
        "2 | \tmatch span e where e.duraton > 1s\n"
        "  | \t                     ^^^^^^^ here\n"
        "  = hint: did you mean `duration`?"
    )


def test_render_without_source_keeps_header_and_hints():
    assert render(diag(), None) == "f.rules:2:23: error[E011]: unknown span field `duraton`\n  = hint: did you mean `duration`?"


def test_multiline_span_underlines_to_end_of_first_line():
    span = SourceSpan.at("f", SRC, 0, len(SRC) - 1)
    text = render(Diagnostic("E001", "x", span), SRC)
    assert text.splitlines()[3] == "  | " + "^" * len("rule a.b {")


def test_render_all_sorts_and_summarises():
    late = Diagnostic("W003", "late", SourceSpan("f.rules", 3, 1, 3, 2))
    out = render_all([late, diag()], {"f.rules": SRC})
    assert out.index("E011") < out.index("W003")
    assert out.endswith("1 error(s), 1 warning(s)")


def test_json_form():
    (obj,) = json.loads(to_json([diag()]))
    assert obj == {
        "code": "E011", "severity": "error", "message": "unknown span field `duraton`", "path": "f.rules",
        "line": 2, "col": 23, "end_line": 2, "end_col": 30, "label": "", "hints": ["did you mean `duration`?"],
    }


def test_did_you_mean():
    assert did_you_mean("duraton", ["duration", "depth"]) == ("did you mean `duration`?",)
    assert did_you_mean("zzz", ["duration"]) == ()


def test_a_very_long_line_is_shown_around_the_caret():
    src = "x" * 1_000 + " BAD " + "y" * 1_000 + "\n"
    start = src.index("BAD")
    text = render(Diagnostic("E005", "m", SourceSpan.at("f", src, start, start + 3)), src)
    _, _, line, caret = text.splitlines()
    assert line.startswith("1 | ...x") and line.endswith("y...") and len(line) < 200
    assert line[caret.index("^"):].startswith("BAD") and caret.endswith("^^^")
