#!/usr/bin/env python
"""Is a DINO-WM miss the model's fault or the planner's? One planning call per goal, no env.

    python benchmarks/dinowm_plan_check.py --task point_mass-goal --goals 50

Every goal of `dinowm_goals.py evaluate` is the state 25 env steps after its start on a
held-out trajectory, so the trajectory's own 25 actions (= 5 model steps of 5 actions,
DINO-WM's horizon) reach the goal exactly. At each goal's start this script scores, with
the same objective the evaluation plans with (last-frame feature distance plus alpha x the
proprio embedding's, goal proprio included):

- J(true): the recorded actions that reach the goal;
- J(CEM): the best sequence CEM found with the evaluation's budget (100 x 10, horizon 5);
- J(start): doing nothing (zero actions), for scale.

If the model were right, J(true) would be near 0 and at least J(CEM). Where CEM found a
sequence the model scores above the true one (J(CEM) > J(true)), the model, not the
search, is what stops the plan: more samples would only find more such sequences. Where
J(true) > J(CEM), a larger budget could help. The split over goals says which to fix.

Writes benchmarks/results/dinowm_plan_check.json (entries per task, merged). Needs the
run folder of `dinowm_goals.py collect` and `train` for the task.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.dinowm_goals import OFFSET, draw_goals  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import read_json, write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
NAME = "dinowm_plan_check.json"


def true_actions(dataset: Any, goals: Any, k: int, frameskip: int, horizon: int) -> np.ndarray:
    """The recorded actions from goal k's start to its goal, as model-step chunks [H, fs * A]
    (a_0 first within a chunk, as the evaluation executes them)."""
    actions = dataset.array("actions")[goals.trajectories[k]]  # [T, A]
    start = int(goals.start_steps[k])
    chunk = actions[start : start + frameskip * horizon]
    if len(chunk) != frameskip * horizon:
        raise ValueError(f"goal {k}: {len(chunk)} recorded actions, expected {frameskip * horizon}")
    return chunk.reshape(horizon, -1).astype(np.float32)


def check(args: argparse.Namespace) -> dict[str, Any]:
    from models.dino_wm import load_trained_dinowm
    from models.goal_adapters import GoalConditionedDinoWM
    from models.objectives import make_goal_objective
    from planners import make_planner
    from training.datasets import OfflineDataset
    from training.goal_mpc import GoalEvalConfig, dinowm_cpu_budget

    folder = Path(args.runs_dir) / f"dinowm-{args.task}"
    dataset = OfflineDataset(folder / "data")
    model = load_trained_dinowm(folder / "model.pt").eval()
    config = GoalEvalConfig.for_dataset(dataset, planner="cem", seed=args.seed, **dinowm_cpu_budget())
    frameskip = int(model.config.frameskip)
    if frameskip * config.horizon != OFFSET:
        raise SystemExit(f"error: horizon {config.horizon} x frameskip {frameskip} != the goal offset {OFFSET}")
    goals, selection = draw_goals(dataset, args.task, args.goals, args.seed, include_reached=False)
    adapter = GoalConditionedDinoWM(model, use_proprio=config.use_proprio)
    factory = make_goal_objective(alpha=config.alpha if config.use_proprio else 0.0, mode=config.objective)
    plan_dim = model.config.action_dim * frameskip
    planner = make_planner("cem", plan_dim, horizon=config.horizon, **config.planner_settings())
    generator = torch.Generator().manual_seed(args.seed)

    rows = []
    for k in range(len(goals)):
        adapter.set_proprio(goals.start_proprio[k], goals.goal_proprio[k])
        with torch.no_grad():
            z0 = adapter.observe(None, None, torch.from_numpy(goals.start_images[k][None]))
            z_goal = adapter.encode(torch.from_numpy(goals.goal_images[k][None]))
            objective = factory(adapter, z0, z_goal)
            true = torch.from_numpy(true_actions(dataset, goals, k, frameskip, config.horizon))
            still = torch.zeros_like(true)
            j_true, j_still = objective(torch.stack([true, still])[None])[0].tolist()
        result = planner.plan(objective, generator=generator)
        with torch.no_grad():
            j_plan = float(objective(result.actions[:, None])[0, 0])
        rows.append({"goal": k, "j_true": j_true, "j_cem_best": float(result.best_return[0]), "j_cem_plan": j_plan,
                     "j_still": j_still})
        print(f"goal {k:2d}: J(true) {j_true:9.5f}  J(CEM best) {rows[-1]['j_cem_best']:9.5f}  J(still) {j_still:9.5f}",
              flush=True)

    j_true = np.array([r["j_true"] for r in rows])
    j_cem = np.array([r["j_cem_best"] for r in rows])
    j_still = np.array([r["j_still"] for r in rows])
    return {
        "task": args.task,
        "goals": len(rows),
        "goal_selection": selection,
        "planner": {k: getattr(config, k) for k in ("horizon", "num_samples", "num_elites", "iterations", "objective",
                                                    "alpha")},
        "model": {"run": folder.name, "frameskip": frameskip, "history": model.config.history},
        "fraction_cem_above_true": round(float((j_cem > j_true).mean()), 4),
        "fraction_true_above_still": round(float((j_true > j_still).mean()), 4),
        "median_j_true": float(np.median(j_true)),
        "median_j_cem_best": float(np.median(j_cem)),
        "median_j_still": float(np.median(j_still)),
        "note": ("J = minus the objective's distance (higher is better). fraction_cem_above_true: goals where CEM "
                 "found a sequence the model prefers to the recorded one that truly reaches the goal (model error "
                 "limits); the rest could gain from a larger search budget."),
        "per_goal": rows,
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=["point_mass-goal", "reacher-pose"])
    parser.add_argument("--goals", type=int, default=50, help="goals checked (the evaluation's first N)")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's seed (goal draw and planner)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--runs-dir", default=str(RUNS))
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args()
    if args.goals < 1:
        parser.error(f"--goals {args.goals} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    entry = check(args)
    print(f"{args.task}: CEM found a sequence the model prefers to the true one on "
          f"{entry['fraction_cem_above_true']:.0%} of {entry['goals']} goals; the model prefers the true sequence "
          f"to standing still on {entry['fraction_true_above_still']:.0%}")
    data = read_json(Path(args.results_dir) / NAME)
    data["benchmark"] = "DINO-WM objective of the recorded goal-reaching actions vs CEM's best, per goal"
    data.setdefault("entries", {})[args.task] = {k: v for k, v in entry.items()}
    write_json_result(args.results_dir, NAME, data)


if __name__ == "__main__":
    main()
