"""examples/grafana: the dashboard is one importable Grafana JSON model (what serve exposes is
checked against a running serve in tests/e2e/test_telemetry.py)."""

from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "faulttrace-dashboard.json"


def test_the_dashboard_is_a_grafana_model_on_a_chosen_prometheus() -> None:
    d = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert d["uid"] == "faulttrace" and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = d["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and 'job=~"$job"' in t["expr"], (p["title"], t)
    # panels do not overlap: no two cover the same grid cell
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine
