"""Value functions (len, lower, upper, substr, split, json) and any(...) over
an array's elements: what they compute, nil in and nil out, over real DuckDB."""

from __future__ import annotations

import pytest

from dsl import check_paths
from tests.dsl.test_compiler import names, rule
from tests.support.dsl_spans import Trace


@pytest.fixture
def trace() -> Trace:
    t = Trace()
    root = t.span("GET /api/items", attrs={"app.result": '{"rows": 0, "err": {"code": "E7"}}',
                                           "app.tags": ["beta", "eu"], "app.path": "/v1/admin/users"})
    t.span("SELECT items", root, attrs={"app.result": "not json", "app.tags": ["prod"], "app.path": ""})
    t.span("no attributes", root)
    return t


@pytest.mark.parametrize(("where", "expected"), [
    ('len(e.name) = 14', ["GET /api/items"]),
    ('len(e.attr["app.tags"]:string[]) = 2', ["GET /api/items"]),
    ('lower(e.name) starts_with "select"', ["SELECT items"]),
    ('upper(e.name) = "GET /API/ITEMS"', ["GET /api/items"]),
    ('substr(e.name, 1, 3) = "GET"', ["GET /api/items"]),
    ('substr(e.name, 8) = "items"', ["SELECT items"]),
    ('split(e.attr["app.path"], "/") contains "admin"', ["GET /api/items"]),
    ('len(split(e.name, " ")) = 2', ["GET /api/items", "SELECT items", "no attributes"]),
    ('json(e.attr["app.result"], "$.rows") = "0"', ["GET /api/items"]),
    ('json(e.attr["app.result"], "$.err.code") = "E7"', ["GET /api/items"]),
    ('exists(json(e.attr["app.result"], "$.rows"))', ["GET /api/items"]),  # not JSON, or absent: nil
    ('any(e.attr["app.tags"]:string[] =~ "^be")', ["GET /api/items"]),
    ('any(e.attr["app.tags"]:string[] = "prod")', ["SELECT items"]),
    ('not any(e.attr["app.tags"]:string[] starts_with "p")', ["GET /api/items", "no attributes"]),
    ('exists(lower(e.attr["app.missing"]))', []),
])
def test_functions_compute_and_are_nil_safe(rules_from, run, trace, where, expected):
    assert names(run(rules_from(rule(where)), trace), trace) == expected


def test_functions_in_messages(rules_from, run, trace):
    rs = rules_from(rule("e.is_root", message="\"{len(e.name)} {upper(substr(e.name, 1, 3))} "
                                              "{json(e.attr['app.result'], '$.err.code')}\""))
    assert [f.message for f in run(rs, trace)] == ["14 GET E7"]


@pytest.mark.parametrize(("where", "code", "text"), [
    ("len(e.name, 2) > 1", "E014", "`len` takes 1 argument(s), got 2"),
    ("substr(e.name) = \"x\"", "E014", "`substr` takes 2 or 3 argument(s), got 1"),
    ("lower(e.duration) = \"x\"", "E028", "`lower` takes string here, not duration"),
    ("json(e.name, \"rows\") = \"0\"", "E028", "`json` takes a JSON path literal starting with `$`"),
    ("any(e.name =~ \"x\")", "E028", "`any` compares the elements of an array, not a string"),
    ("any(e.name)", "E014", "`any` takes one comparison of an array's elements"),
    ("lowr(e.name) = \"x\"", "E013", "unknown macro `lowr`"),
])
def test_function_errors(tmp_path, where, code, text):
    path = tmp_path / "f.rules"
    path.write_text(rule(where), encoding="utf-8")
    [d] = check_paths([path])
    assert (d.code, d.message) == (code, text)
