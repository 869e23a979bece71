#!/usr/bin/env python3
"""PNG charts for a fleet run: `charts.py <results folder>` reads results.json, writes the charts
next to it and prints their file names. Needs matplotlib (fleet.py installs it in a venv)."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def admitted_vs_limit(scenarios, out_dir):
    """Scenario 1's paced 2x overload: admitted so far against what the limit allows so far, and
    the difference between the two (over-admission would climb above zero)."""
    runs = [r for r in scenarios["request_limits"] if "paced" in r]
    if not runs:
        return None
    figure, (total, difference) = plt.subplots(1, 2, figsize=(11, 4.5))
    limit, seconds = runs[0]["limit_per_minute"], runs[0]["paced"]["seconds"]
    allowed = [second * limit / 60 for second in range(1, seconds + 1)]
    for r in runs:
        counts = r["paced"]["admitted_by_second"]
        label = f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''}"
        total.plot(range(1, len(counts) + 1), counts, label=f"admitted, {label}")
        difference.plot(range(1, len(counts) + 1), [c - a for c, a in zip(counts, allowed)], label=label)
    total.plot(range(1, seconds + 1), allowed, "k--", label=f"limit ({limit}/min)")
    offered = runs[0]["paced"]["rate_per_second"]
    total.set(xlabel="seconds", ylabel="requests (cumulative)",
              title=f"Paced overload ({offered:g}/s offered): admitted vs limit")
    total.legend(fontsize="small")
    difference.axhline(0, color="black", linewidth=0.8)
    difference.set(xlabel="seconds", ylabel="admitted − allowed so far", ylim=(-5, 5),
                   title="Difference (whole requests)")
    difference.legend(fontsize="small")
    figure.tight_layout()
    return save(figure, out_dir, "admitted_vs_limit.png")


def latency_vs_replicas(scenarios, out_dir):
    """Scenario 5: Sluice's latency percentiles by replica count, nginx's as dashed lines."""
    runs = scenarios["throughput"]
    if not runs:
        return None
    figure, axes = plt.subplots(figsize=(8, 4.5))
    replicas = [r["replicas"] for r in runs]
    baseline = next((r["nginx"] for r in runs if "nginx" in r), None)
    for (name, color) in (("p50_ms", "tab:blue"), ("p99_ms", "tab:orange"), ("p999_ms", "tab:red")):
        axes.plot(replicas, [r["sluice"].get(name) for r in runs], "o-", color=color, label=f"Sluice {name[:-3]}")
        if baseline and baseline.get(name) is not None:
            axes.axhline(baseline[name], color=color, linestyle="--", label=f"nginx {name[:-3]}")
    axes.set(xlabel="replicas", ylabel="ms", xticks=replicas, title="Latency vs replicas (128 connections, limits on)")
    axes.legend(fontsize="small")
    return save(figure, out_dir, "latency_vs_replicas.png")


def redis_trouble(scenarios, out_dir):
    """Scenario 6: per second, admitted and refused requests and the slowest one, with the
    Redis events shaded."""
    runs = scenarios["redis_trouble"]
    if not runs:
        return None
    figure, rows = plt.subplots(len(runs), 1, figsize=(8, 3 * len(runs)), squeeze=False)
    for axes, r in zip(rows[:, 0], runs):
        seconds = [row[0] for row in r["per_second"]]
        # Bar n covers requests started in [n, n + 1).
        axes.bar(seconds, [row[1] for row in r["per_second"]], width=0.9, align="edge", color="tab:green", label="admitted")
        axes.bar(seconds, [row[2] for row in r["per_second"]], bottom=[row[1] for row in r["per_second"]], width=0.9,
                 align="edge", color="tab:red", label="refused or failed")
        for name, (begin, end) in r["events"].items():
            axes.axvspan(begin, max(end, begin + 0.3), color="grey", alpha=0.3)
            axes.text(begin, axes.get_ylim()[1] * 0.92, name.replace("_", " "), fontsize="small")
        slowest = axes.twinx()
        slowest.plot([s + 0.5 for s in seconds], [row[3] for row in r["per_second"]], "k.-", label="slowest ms")
        slowest.set_ylabel("slowest request, ms")
        axes.set(ylabel="requests per second", title=f"Redis trouble, policy {r['policy']}")
        axes.legend(loc="lower left", fontsize="small")
    rows[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    return save(figure, out_dir, "redis_trouble.png")


def save(figure, out_dir, name):
    figure.savefig(os.path.join(out_dir, name), dpi=100, bbox_inches="tight")
    plt.close(figure)
    return name


if __name__ == "__main__":
    folder = sys.argv[1]
    with open(os.path.join(folder, "results.json")) as f:
        scenarios = json.load(f)["scenarios"]
    names = [chart(scenarios, folder) for chart in (admitted_vs_limit, latency_vs_replicas, redis_trouble)]
    print(" ".join(name for name in names if name))
