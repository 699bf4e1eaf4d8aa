#!/usr/bin/env python3
"""Renders the main panels of deploy/observability/grafana-dashboard.json from a Prometheus
server's data (query_range over the last run) into one PNG: what the dashboard shows, without
Grafana (no Debian or PyPI package of it is reachable here).

usage: dashboard-snapshot.py PROMETHEUS_URL START END OUT.png
"""
import json
import sys
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

prom, start, end, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
with open("deploy/observability/grafana-dashboard.json") as f:
    dashboard = json.load(f)

WANTED = [
    "Open WebSocket sessions",
    "Turns per second by outcome",
    "Time to first token",
    "Inter-token gap",
    "Embedding and retrieval (ragchat's own share of TTFT)",
    "Tokens per second",
    "Record path",
    "CPU and memory",
]
panels = [p for title in WANTED for p in dashboard["panels"] if p["title"] == title]


def query_range(expr):
    expr = (expr.replace('{instance=~"$instance"}', "").replace(',instance=~"$instance"', "")
            .replace("$__rate_interval", "15s"))
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 2})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}") as r:
        return json.load(r)["data"]["result"]


def label(fmt, metric):
    for k, v in metric.items():
        fmt = fmt.replace("{{" + k + "}}", v)
    return fmt


fig, axes = plt.subplots(4, 2, figsize=(14, 13))
for ax, panel in zip(axes.flat, panels):
    unit = panel["fieldConfig"]["defaults"]["unit"]
    scale, shown = (1000.0, "ms") if unit == "s" else (1.0, {"reqps": "per second"}.get(unit, ""))
    for target in panel["targets"]:
        for series in query_range(target["expr"]):
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) * scale if v not in ("NaN", "+Inf") else float("nan") for _, v in series["values"]]
            ax.plot(xs, ys, label=label(target["legendFormat"], series["metric"]))
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("seconds into the run", fontsize=8)
    if shown:
        ax.set_ylabel(shown, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
fig.suptitle("ragchat dashboard panels, from Prometheus (rendered; see docs/observability.md)")
fig.tight_layout()
fig.savefig(out, dpi=80)
print(f"wrote {out}")
