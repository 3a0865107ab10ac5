"""``faulttrace explain --html OUT.html``: one self-contained page for incident review.

Each trace given a root cause as a waterfall (one row per span, in tree order, its bar placed
by start and duration), the cause and its symptoms marked, the chain from the cause to what the
user saw numbered, and the evidence beside each marked span; above them the window's service
ranking as a bar chart.  Nothing is fetched when the page is viewed: styles are inline, the
bars are plain elements, there is no script.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

from processor.analysis.verdict import Candidate, Symptom, TraceVerdict
from processor.tools.explain import Chain, Row, TraceSpans, _rows_by_trace, _trace_order, chains, summary_line
from processor.tools.offline import OfflineResult

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d1d1f;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin:28px 0 6px}
.summary{color:#444}.ranking{margin:12px 0 24px;max-width:720px}
.svc{display:flex;align-items:center;margin:2px 0}.svc .name{width:200px;overflow:hidden;text-overflow:ellipsis}
.svc .track{flex:1;background:#f0f0f3}.svc .fill{height:14px;background:#5470c6}
.svc .p{width:56px;text-align:right;font-variant-numeric:tabular-nums}
.trace{border-top:1px solid #ddd;padding-top:4px}.sentence{margin:4px 0 10px}
table.wf{border-collapse:collapse;width:100%;table-layout:fixed}
.wf td{padding:2px 4px;vertical-align:top;border-bottom:1px solid #f3f3f3}
.wf td.label{width:30%;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.wf td.lane{width:40%;position:relative}.wf td.ev{width:30%;font-size:12px;color:#333}
.bar{position:relative;height:12px;margin-top:3px;background:#b8c4d6;min-width:2px}
.bar.error{background:#e8a0a0}.bar.symptom{background:#f0a040}.bar.cause{background:#d62728}
tr.chain td.label{font-weight:600}.step{display:inline-block;min-width:18px;padding:0 4px;margin-right:4px;
border-radius:8px;background:#d62728;color:#fff;font-size:11px;text-align:center}
tr.symptom .step{background:#f0a040}.ev .src{font-family:ui-monospace,monospace;color:#555}
"""


def write_html(result: OfflineResult, out: Path, title: str) -> int:
    """Write the page to ``out``; returns how many traces it shows (those given a root cause)."""
    parts, shown = _page(result, title)
    out.write_text("".join(parts), encoding="utf-8")
    return shown


def _page(result: OfflineResult, title: str) -> tuple[list[str], int]:
    e = html.escape
    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
             f"<title>faulttrace: {e(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>faulttrace explain: {e(title)}</h1>", f"<p class=summary>{e(summary_line(result))}</p>"]
    parts += _ranking(result)
    by_trace = _rows_by_trace(result.spans)
    shown = 0
    for trace_id in _trace_order(result.spans):
        v = result.verdict.traces.get(trace_id)
        if v is None or v.top is None:
            continue
        shown += 1
        parts += _trace(v, result.verdict.symptoms.get(trace_id, ()), by_trace[trace_id])
    if not shown:
        parts.append("<p>No trace was given a root cause.</p>")
    parts.append("</body></html>\n")
    return parts, shown


def _ranking(result: OfflineResult) -> list[str]:
    """The window's services, most likely origin first, as bars of their probability."""
    services = result.verdict.services
    if not services:
        return []
    out = ["<h2>Services, most likely origin first</h2><div class=ranking id=ranking>"]
    for r in services:
        out.append(f"<div class=svc data-service='{html.escape(r.service, quote=True)}'>"
                   f"<span class=name>{html.escape(r.service)}</span><span class=track>"
                   f"<div class=fill style='width:{100 * max(0.0, min(1.0, r.probability)):.1f}%'></div></span>"
                   f"<span class=p>{r.probability:.2f}</span></div>")
    out.append("</div>")
    return out


def _trace(v: TraceVerdict, symptoms: tuple[Symptom, ...], rows: list[Row]) -> Iterator[str]:
    spans = TraceSpans.of(rows, v.root_span_id)
    found, _ = chains(v, symptoms, spans)
    top_chain = found[0] if found else None
    steps = _steps(top_chain)
    blamed = {c.span_id: c for c in v.candidates}
    marks = {s.span_id: s for s in symptoms}
    start = min(r["start_ns"] for r in rows)
    span_ns = max(1, max(r["end_ns"] for r in rows) - start)
    top = v.top
    assert top is not None
    yield f"<section class=trace id='t{v.trace_id.hex()}'><h2>trace {v.trace_id.hex()}</h2>"
    yield (f"<p class=sentence>Root cause <b>{html.escape(top.service)}: {html.escape(top.name)}</b> "
           f"({html.escape(top.layer or 'no layer')}, confidence {top.confidence:.2f})"
           f"{'; it explains ' + str(len(steps) - 1) + ' span(s) up to what the user saw' if len(steps) > 1 else ''}"
           ".</p><table class=wf>")
    for row, depth in _walk(spans):
        sid = row["span_id"]
        c, s = blamed.get(sid), marks.get(sid)
        kind = "cause" if c is not None else "symptom" if s is not None else ("error" if row["status_code"] == 2
                                                                           else "")
        step = steps.get(sid)
        classes = " ".join(x for x in (kind, "chain" if step else "") if x)
        left = 100 * (row["start_ns"] - start) / span_ns
        width = max(0.2, 100 * (row["end_ns"] - row["start_ns"]) / span_ns)
        label = f"{row['service']}: {row['name']}"
        yield (f"<tr class='{classes}' data-span='{sid.hex()}'>"
               f"<td class=label style='padding-left:{4 + 14 * depth}px' title='{html.escape(label, quote=True)}'>"
               f"{f'<span class=step>{step}</span>' if step else ''}{html.escape(label)}</td>"
               f"<td class=lane><div class='bar {kind}' style='left:{left:.2f}%;width:{min(width, 100 - left):.2f}%'"
               f" title='{(row['end_ns'] - row['start_ns']) / 1e6:.1f} ms'></div></td>"
               f"<td class=ev>{_evidence(c, s)}</td></tr>")
    yield "</table></section>"


def _steps(chain: Chain | None) -> dict[bytes, int]:
    """The top cause's chain, numbered from the cause (1) out to what the user saw."""
    if chain is None:
        return {}
    order = [chain.cause.span_id, *(row["span_id"] for row, _ in chain.explains)]
    if chain.user_saw is not None and chain.user_saw_symptom is not None:
        order.append(chain.user_saw["span_id"])
    return {sid: n for n, sid in enumerate(dict.fromkeys(order), 1)}


def _walk(spans: TraceSpans) -> Iterator[tuple[Row, int]]:
    """Spans depth first in start order, with their depth (a cycle or a repeat is not followed)."""
    seen: set[bytes] = set()
    stack = [(r, 0) for r in reversed(spans.children[None])]
    while stack:
        row, depth = stack.pop()
        if row["span_id"] in seen:
            continue
        seen.add(row["span_id"])
        yield row, depth
        stack += [(child, depth + 1) for child in reversed(spans.children.get(row["span_id"], []))]


def _evidence(c: Candidate | None, s: Symptom | None) -> str:
    if c is not None:
        items = "".join(f"<li><span class=src>{html.escape(e.source)}</span> {html.escape(e.message)}</li>"
                        for e in c.evidence)
        return f"<b>#{c.rank} cause</b>, {html.escape(c.layer or 'no layer')}, {c.confidence:.2f}<ul>{items}</ul>"
    if s is not None:
        return f"symptom: {html.escape(s.reason or 'no reason given')}"
    return ""
