"""``faulttrace explain --html``: the page opened in a real headless browser (Debian's chromium),
read through the DevTools protocol: what it draws, where, and that it fetches nothing."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from processor.cli import main
from tests.tools.test_explain_failed import traces  # noqa: F401  (the fixture: 3 + 2 failing, 5 healthy)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

# What the page looks like to a person, measured in the browser after layout.
PROBE = """(() => {
  const px = el => el.getBoundingClientRect();
  const bg = el => getComputedStyle(el).backgroundColor;
  return {
    resources: performance.getEntriesByType('resource').length,
    ranking: [...document.querySelectorAll('#ranking .svc')].map(s => ({
      service: s.dataset.service, fill: px(s.querySelector('.fill')).width, track: px(s.querySelector('.track')).width})),
    traces: [...document.querySelectorAll('section.trace')].map(t => ({
      id: t.id,
      rows: [...t.querySelectorAll('tr')].map(r => ({
        cls: r.className, label: r.querySelector('td.label').textContent,
        step: (r.querySelector('.step') || {}).textContent || null,
        bar: {w: px(r.querySelector('.bar')).width, x: px(r.querySelector('.bar')).left,
              lane: px(r.querySelector('td.lane')).left, color: bg(r.querySelector('.bar'))},
        evidence: r.querySelector('td.ev').textContent}))})),
  };
})()"""


async def _probe(page: Path, tmp: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
        f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,1000", page.as_uri(),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()  # type: ignore[union-attr]
            assert line, "the browser exited before listening"
            if m := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                port = int(m.group(1))
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                pages = [t for t in await (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
                         if t["type"] == "page" and t["url"].startswith("file:")]
                if pages:
                    break
                await asyncio.sleep(0.1)
            async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                for attempt in range(50):
                    await ws.send_json({"id": attempt, "method": "Runtime.evaluate", "params": {
                        "expression": f"location.protocol === 'file:' && document.readyState === 'complete' && {PROBE}", "returnByValue": True}})
                    reply = await ws.receive_json()
                    value = reply["result"]["result"].get("value")
                    if value:
                        return value
                    await asyncio.sleep(0.1)
        raise AssertionError("the page never finished loading")
    finally:
        proc.kill()
        await proc.wait()


@pytest.mark.skipif(BROWSER is None, reason="no headless browser: install Debian's chromium (apt-get install chromium)")
def test_the_page_draws_each_failed_trace_with_its_chain_and_the_ranking(
        traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    page = tmp_path / "review.html"
    assert main(["explain", "--html", str(page), str(traces)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{page}: 5 traces with a root cause")
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|url\(|@import|<script""", text)  # nothing to fetch, nothing to run
    drawn = asyncio.run(_probe(page, tmp_path))
    assert drawn["resources"] == 0

    ranking = drawn["ranking"]
    assert sorted(r["service"] for r in ranking) == ["gateway", "orders"]
    assert all(0 < r["fill"] <= r["track"] for r in ranking)
    assert ranking == sorted(ranking, key=lambda r: -r["fill"])  # most likely first, bars in proportion

    assert sorted(t["id"] for t in drawn["traces"]) == sorted(f"t{(bytes([n]) * 16).hex()}" for n in (1, 2, 3, 4, 5))
    for t in drawn["traces"]:
        rows = t["rows"]
        cause = [r for r in rows if "cause" in r["cls"].split()]
        assert len(cause) == 1, rows
        assert cause[0]["bar"]["color"] == "rgb(214, 39, 40)" and cause[0]["bar"]["w"] > 0
        assert cause[0]["step"] == "1" and "#1 cause, infrastructure" in cause[0]["evidence"]
        root = rows[0]  # tree order: the root span first, the cause below it
        assert root["step"] == "2" and "symptom" in root["cls"].split() and root["evidence"].startswith("symptom:")
        assert root["bar"]["color"] == "rgb(240, 160, 64)"
        # the cause ran inside the root span: its bar starts no earlier and is no wider
        assert cause[0]["bar"]["x"] >= root["bar"]["x"] and cause[0]["bar"]["w"] <= root["bar"]["w"]
        if t["id"] <= f"t{(bytes([3]) * 16).hex()}":
            assert cause[0]["label"].endswith("orders: INSERT orders")
            assert "infra.connection_refused" in cause[0]["evidence"]
        else:
            assert cause[0]["label"].endswith("gateway: GET")
            assert "infra.dependency_5xx" in cause[0]["evidence"]


def test_an_unwritable_page_is_an_error(traces: Path, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--html", str(tmp_path / "missing" / "x.html"), str(traces)]) == 2
    assert "error: --html" in capsys.readouterr().err


