"""deploy/grafana/sipmesh-dashboard.json queries only statistics sipmesh exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sipmesh.observe.stats import kamailio_name

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sipmesh-dashboard.json"


def test_dashboard_is_valid_grafana_json_with_known_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "sipmesh-main"
    panels = dash["panels"]
    assert len(panels) >= 10
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    names = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names.update(re.findall(r"\bsipmesh_[A-Za-z0-9_]+", target["expr"]))
    unknown = sorted(n for n in names if not kamailio_name(n))
    assert unknown == []
    assert {"sipmesh_rcv_requests_total", "sipmesh_accepted_regs_total"} <= names
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "service", "instance"}
