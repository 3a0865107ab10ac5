"""Every condition shown in docs/rules.md compiles (and runs) as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text(encoding="utf-8")
PRELUDE = '''
macro failed(s) = s.status = error
macro is_db(s) = exists(s.attr["db.system.name"])
macro over(value, limit) = value > limit
list critical_services = ["checkout"]
list empty_results = ["", "[]"]
const slow_query = 1s
'''


def _blocks() -> list[str]:
    return re.findall(r"```\n(.*?)```", DOC, re.S)


def _conditions() -> list[str]:
    """Lines of the doc's code blocks that are a whole condition on `e`, `c`, `l`, `q`, `p`."""
    out = []
    for block in _blocks():
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("where "):
                line = line[6:]
            if re.match(r"^(not )?(exists|count|max|min|avg|sum|e\.|c\.|l\.|q\.)", line) and "..." not in line:
                out.append(line)
    return out


CONDITIONS = _conditions()


def test_the_doc_has_examples():
    assert len(CONDITIONS) > 30


@pytest.mark.parametrize("cond", CONDITIONS)
def test_condition_compiles(rules_from, cond):
    inner = set(re.findall(r"\b(?:child|parent|descendant|ancestor|sibling|span) (\w+)", cond))
    outer = [v for v in "eclqp" if v not in inner]
    used = " and ".join(f"exists({v}.name)" for v in outer)
    text = (PRELUDE + "rule doc.example {\n title \"t\"\n layer code\n severity low\n confidence 0.5\n"
            f"  match {', '.join('span ' + v for v in outer)}\n  where exists({cond}) and {used}\n"
            "  message \"{failed(e)}{is_db(e)}{over(1, 2)}{e.name in critical_services}{e.name in empty_results}{slow_query}\"\n}\n")
    rs = rules_from(text)
    assert len(rs) == 1


@pytest.mark.parametrize("block", [b for b in _blocks() if b.lstrip().startswith("rule ") and "..." not in b])
def test_whole_rules_compile(rules_from, block):
    assert len(rules_from(PRELUDE + block)) == 1
