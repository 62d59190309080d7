#!/usr/bin/env python
"""Markdown tables of benchmarks/results/oracle_mpc.json, as the README shows them.

    python benchmarks/oracle_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_mpc.json"
PLANNERS = ("cem", "mppi", "icem")


def main_table(runs: dict) -> list[str]:
    rows = {}
    for key, cell in runs.items():
        if key.startswith("sweep/") or "summary" not in cell:
            continue
        rows.setdefault(cell["task"], {})[cell["planner"]] = cell
    lines = ["| task (action repeat, horizon, candidates/call) | CEM | MPPI | iCEM | plan ms/step (CEM, MPPI, iCEM) | sim steps/s vs raw mj_step |",
             "|---|---|---|---|---|---|"]
    for task, cells in rows.items():
        any_cell = next(iter(cells.values()))
        horizon = any_cell["planner_config"].split("horizon=")[1].split(",")[0]
        scores, times, speed = [], [], []
        for name in PLANNERS:
            cell = cells.get(name)
            if cell is None:
                scores.append("-"), times.append("-")
                continue
            s = cell["summary"]
            text = f"{s['mean_return']:.1f} +- {s['std_return']:.1f}"
            if s["success_rate"] is not None:
                text += f" ({100 * s['success_rate']:.0f}% success)"
            scores.append(text)
            times.append(f"{s['mean_plan_ms']:.0f}")
            speed.append(s["speedup_over_raw_mj_step"])
        counts = sorted({len(c["episodes"]) for c in cells.values()})
        episodes = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        lines.append(f"| {task} ({any_cell['action_repeat']}, {horizon}, {any_cell['budget']}; {episodes} episodes) | "
                     + " | ".join(scores) + f" | {', '.join(times)} | {min(speed):.1f}-{max(speed):.1f}x |")
    return lines


def sweep_table(runs: dict) -> list[str]:
    cells = [c for k, c in runs.items() if k.startswith("sweep/") and "summary" in c]
    if not cells:
        return []
    task = cells[0]["task"]
    budgets = sorted({c["budget"] for c in cells})
    lines = [f"Return on {task} against candidates scored per plan call ({len(cells[0]['episodes'])} episodes each):",
             "", "| planner | " + " | ".join(str(b) for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in PLANNERS:
        by_budget = {c["budget"]: c["summary"]["mean_return"] for c in cells if c["planner"] == name}
        lines.append(f"| {name} | " + " | ".join(f"{by_budget[b]:.0f}" if b in by_budget else "-" for b in budgets) + " |")
    return lines


def main() -> int:
    runs = json.loads(RESULTS.read_text())["runs"]
    print("\n".join(main_table(runs)))
    print()
    print("\n".join(sweep_table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
