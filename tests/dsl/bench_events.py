"""Benchmark: what the event and link relations cost a batch, next to the
first-event reference (``s.event["retry"]``), as ratios of medians of
alternating repeats.

    .venv/bin/python -m tests.dsl.bench_events --spans 100000

The batch is built in DuckDB per the store contract: every span has three
``retry`` events (attempts 1..3) and every tenth span links to the span before
it; a seventh of the spans failed.  Not a timed test: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from dsl import AttrSource, AttrType, RuleSet, load_rules
from dsl.api import create_span_table
from dsl.projection import AttrRef

HEAD = 'title "t"\n  layer code\n  severity low\n  confidence 0.5\n'
RULES = {
    "first_event": 'e.event["retry"] and e.event["retry"]["attempt"]:int >= 1',
    "event_count": 'count(event x of e where x.name = "retry" and x.attr["attempt"]:int >= 1) >= 3',
    "event_time": "exists(event x of e where x.time - e.start > 2ms)",
    "link": "exists(link k of e where k.status = error)",
}


def _ruleset(where: str, tmp: Path) -> RuleSet:
    path = tmp / f"{abs(hash(where))}.rules"
    path.write_text(f"rule b.r {{\n  {HEAD}  match span e where {where}\n}}\n", encoding="utf-8")
    return load_rules([path])


def _value(ref: AttrRef) -> str:
    """SQL for ``ref``'s column of span ``i``."""
    if ref.source is AttrSource.EVENT:
        return "i % 2 = 0" if ref.type is AttrType.PRESENT else "CASE WHEN i % 2 = 0 THEN 1 END"
    if ref.source is AttrSource.EVENTS:
        if ref.key:
            return "[1, 2, 3]"
        return "[" + ", ".join(f"{{'name': 'retry', 'time': i * 1000000 + {k * 1000000}}}" for k in (1, 2, 3)) + "]"
    if ref.source is AttrSource.LINKS:
        return ("CASE WHEN i % 10 = 0 THEN [{'trace_id': ((i - 1) // 10)::VARCHAR::BLOB, "
                "'span_id': (i - 1)::VARCHAR::BLOB}] END")
    raise ValueError(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sets = {name: _ruleset(where, Path(tmp)) for name, where in RULES.items()}
    refs = sorted(set().union(*(r.projection for r in sets.values())))
    conn = duckdb.connect()
    create_span_table(conn, "batch", refs)
    conn.execute(
        f"INSERT INTO batch SELECT (i // 10)::VARCHAR::BLOB, i::VARCHAR::BLOB, "
        "CASE WHEN i % 10 = 0 THEN NULL ELSE ((i // 10) * 10)::VARCHAR::BLOB END, 'svc', 'op', 1, "
        "i * 1000000, i * 1000000 + 5000000, CASE WHEN i % 7 = 0 THEN 2 ELSE 0 END, '', "
        f"{', '.join(_value(r) for r in refs)} FROM range({args.spans}) AS t(i)")
    times: dict[str, list[float]] = {name: [] for name in sets}
    found: dict[str, int] = {}
    for _ in range(args.repeats):
        for name, rules in sets.items():
            start = time.perf_counter()
            found[name] = len(rules.evaluate(conn, "batch"))
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["first_event"])
    for name, spent in times.items():
        median = statistics.median(spent)
        print(f"{name:12s} {median * 1000:7.0f} ms  x{median / base:.2f}  findings {found[name]}")


if __name__ == "__main__":
    main()
