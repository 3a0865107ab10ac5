"""Rule files as bytes: a byte order mark, binary data, an empty file; and
the small semantics issue 15 settled (``s.service`` of a span without
``service.name``, the hint for a count compared with a duration)."""

from __future__ import annotations

from dsl import check_paths
from dsl.diagnostics import render_all
from tests.dsl.test_compiler import names, rule
from tests.support.dsl_spans import Trace

RULE = rule("e.status = error", rid="t.bom")


def test_a_byte_order_mark_is_no_part_of_the_text(tmp_path, rules_from):
    path = tmp_path / "bom.rules"
    path.write_bytes(b"\xef\xbb\xbf" + RULE.encode())
    assert check_paths([path]) == []
    # positions after the mark are those an editor shows
    path.write_bytes(b"\xef\xbb\xbf" + RULE.replace("e.status = error", "e.status = eror").encode())
    [d] = check_paths([path])
    assert d.code == "E010" and (d.span.line, d.span.col) == (8, 33)


def test_binary_data_is_e042_at_1_1_with_a_plain_message(tmp_path):
    path = tmp_path / "image.rules"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    [d] = check_paths([path])
    assert d.code == "E042" and (d.span.line, d.span.col) == (1, 1)
    assert render_all([d], {}) == (
        f"{path}:1:1: error[E042]: `{path}` is not a UTF-8 text file: byte 0x89 at offset 0 is not UTF-8\n"
        "  = hint: rule files are UTF-8 text; re-save it as UTF-8, or leave it out of the paths\n\n"
        "1 error(s), 0 warning(s)")
    path.write_bytes(b"rule a\x00b")  # valid UTF-8, still not text
    [d] = check_paths([path])
    assert d.code == "E042" and d.message.endswith("a NUL byte at offset 6")


def test_an_empty_file_is_a_warning_and_loads(tmp_path, rules_from):
    for text in ("", "\n\n", "# only a comment\n"):
        path = tmp_path / "empty.rules"
        path.write_text(text, encoding="utf-8")
        [d] = check_paths([path])
        assert (d.code, d.is_error, d.span.line, d.span.col) == ("W008", False, 1, 1)
    assert len(rules_from("# nothing yet\n")) == 0  # a warning: the rule set still loads


def test_service_is_nil_when_service_name_is_missing(rules_from, run):
    t = Trace()
    root = t.span("root", service="")
    t.span("child", root, service="shop")
    nil = rules_from(rule("not exists(e.service) and e.service = e.resource[\"service.name\"] or "
                          "not exists(e.service) and not exists(e.resource[\"service.name\"])", rid="t.nil"))
    assert names(run(nil, t), t) == ["root"]
    root_nil = rules_from(rule("not exists(trace.root_service)", rid="t.root"))
    assert names(run(root_nil, t), t) == ["child", "root"]
    message = rules_from(rule("e.is_root", rid="t.msg", message='"in {e.service}"'))
    assert [f.message for f in run(message, t)] == ["in nil"]


def test_a_count_compared_with_a_duration_is_hinted_as_a_count(rules_from, tmp_path):
    path = tmp_path / "count.rules"
    path.write_text(rule("count(child c of e where c.status = error) > 2s", rid="t.count"), encoding="utf-8")
    [d] = check_paths([path])
    assert d.code == "E020" and d.hints == ("a count is a number of spans: compare it with a plain number such as `3`",)
    path.write_text(rule("e.duration > 250", rid="t.dur"), encoding="utf-8")
    [d] = check_paths([path])
    assert d.hints == ("write a duration literal such as `250ms` or `2s`",)
