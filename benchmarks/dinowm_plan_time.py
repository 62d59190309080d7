#!/usr/bin/env python
"""Seconds per DINO-WM planning call on this machine, by model configuration and planner
budget: what a goal-image evaluation costs before any model is trained.

    python benchmarks/dinowm_plan_time.py                  # the default grid, 1 thread
    python benchmarks/dinowm_plan_time.py --calls 3 --threads 2

One planning call is CEM over `dino_goal_objective` ("last" frame, as the paper): every
iteration rolls `samples` candidate action sequences through the frame-causal predictor for
`horizon` model steps. The cost depends on the configuration, not on the weights, so the
models here are untrained (random predictor; the frozen encoder is not used: the start and
goal latents are random tensors of the right shape).

Rows: 112 px = 64 patches, history 3, depth 4 (the first `cpu` preset) and smaller variants
(history 1, fewer layers, and `patch_pool=2`: 2 x 2 patches averaged into 16 tokens), each with DINO-WM's CEM budget (300 samples x
30 iterations x horizon 5; the paper's) and with smaller budgets, in float32 and bfloat16
autocast. For each row: the median seconds per call over `--calls` calls, and the projected
hours of a 50-goal evaluation with 50 env steps per goal and one plan per model step
(frameskip 5: 10 calls per goal), which is `dinowm_goals.py evaluate`'s default protocol.
Writes benchmarks/results/dinowm_plan_time.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOALS, CALLS_PER_GOAL = 50, 10  # dinowm_goals.py evaluate: 50 goals x (50 env steps / frameskip 5)

# (name, DinoWMConfig.cpu overrides). point_mass-goal's sizes: 2 actions, 4 proprio values.
# Every setting spelled out, so a row's name stays true when the `cpu` preset changes.
BASE = {"image_size": 112, "depth": 4, "history": 3, "patch_pool": 1}
MODELS: list[tuple[str, dict[str, Any]]] = [
    ("112 px, history 3, depth 4", {}),
    ("112 px, history 1, depth 2", {"history": 1, "depth": 2}),
    ("112 px pooled 2x2, history 3, depth 4", {"patch_pool": 2}),
    ("112 px pooled 2x2, history 1, depth 4", {"patch_pool": 2, "history": 1}),
    ("112 px pooled 2x2, history 1, depth 2", {"patch_pool": 2, "history": 1, "depth": 2}),
]
# (name, CEM settings): the paper's and smaller budgets.
BUDGETS: list[tuple[str, dict[str, int]]] = [
    ("paper CEM 300 x 30 it", {"num_samples": 300, "num_elites": 30, "iterations": 30}),
    ("CEM 100 x 10 it", {"num_samples": 100, "num_elites": 10, "iterations": 10}),
    ("CEM 64 x 5 it", {"num_samples": 64, "num_elites": 8, "iterations": 5}),
]


def seconds_per_call(model: Any, budget: dict[str, int], precision: str, calls: int) -> float:
    from models.objectives import dino_goal_objective
    from planners import CEM

    c = model.config
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(1, *c.latent_shape, generator=g)
    goal = torch.randn(1, *c.latent_shape, generator=g)
    planner = CEM(action_dim=c.action_dim * c.frameskip, horizon=5, init_std=1.0, **budget)
    objective = dino_goal_objective(model, z0, goal, mode="last")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
    times = []
    with torch.no_grad(), autocast:
        for k in range(calls):
            start = time.perf_counter()
            planner.plan(lambda a: objective(a).float(), generator=torch.Generator().manual_seed(k))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=1, help="timed planning calls per row (the median is kept)")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help="skip a row's bfloat16 twin and larger budgets when float32 took longer than this")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from models.dino_wm import DinoWM, DinoWMConfig

    rows = []
    for model_name, overrides in MODELS:
        torch.manual_seed(0)
        model = DinoWM(DinoWMConfig.cpu(action_dim=2, proprio_dim=4, **{**BASE, **overrides})).eval()
        # Smallest budget first: a row too slow at a small budget skips the larger ones.
        for index, (budget_name, budget) in enumerate(reversed(BUDGETS)):
            for precision in ("float32", "bfloat16"):
                seconds = seconds_per_call(model, budget, precision, args.calls)
                hours = seconds * GOALS * CALLS_PER_GOAL / 3600
                rows.append({"model": model_name, "settings": {**BASE, **overrides}, "budget": budget_name, **budget,
                             "precision": precision, "seconds_per_call": round(seconds, 2),
                             "hours_per_50_goals": round(hours, 2)})  # fmt: skip
                print(f"{model_name:34s} {budget_name:22s} {precision:8s} {seconds:8.2f} s per call; "
                      f"{hours:6.2f} h per 50 goals", flush=True)
            last_budget = index == len(BUDGETS) - 1
            if not last_budget and min(r["seconds_per_call"] for r in rows[-2:]) > args.max_seconds:
                print(f"{model_name}: over {args.max_seconds:.0f} s per call; larger budgets skipped", flush=True)
                break

    out = {
        "machine": machine_info(),
        "benchmark": "seconds per DINO-WM CEM planning call (untrained weights; point_mass-goal sizes), "
        f"and hours per {GOALS}-goal evaluation at {CALLS_PER_GOAL} calls per goal",
        "rows": rows,
    }
    write_json_result(args.results_dir, "dinowm_plan_time.json", out)


if __name__ == "__main__":
    main()
