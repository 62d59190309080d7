#!/usr/bin/env python
"""Quick looks at DINO-WM goal-MPC variants on the first few held-out goals of a task.

    python benchmarks/dinowm_goal_variants.py --objective all --goals 8                  # reacher-pose
    python benchmarks/dinowm_goal_variants.py --objective all --goals 8 --goal-at-rest   # goal velocities 0

Same model, goals, reset seeds, planner seeds (goal k: seed + k) and CEM budget as
`dinowm_goals.py evaluate` with the cpu preset and bfloat16, so goal k's record here is
comparable with goal k of the full evaluation (`runs/dinowm-<task>/eval-cem[-all][-rest]-<N>steps/records.json`).
`--goal-at-rest` (`GoalEvalConfig.goal_at_rest`) sets the goal's joint velocities to zero,
i.e. asks for the goal pose at rest instead of the pose at the speed it had in the data
(the full 50-goal run: `dinowm_goals.py evaluate --goal-at-rest`). Prints the summary and one line per goal
(goal, success, touched, final distance, closest distance). The outputs of the runs
quoted in the README are in benchmarks/results/:
    dinowm_goal_variants_all.log, _all_rest.log      reacher-pose, --objective all [--goal-at-rest]
    dinowm_goal_variants_pm_last_rest.log             --task point_mass-goal --objective last --goal-at-rest
    dinowm_goal_variants_pm_last_alpha1.log           ... --alpha 1 (no --goal-at-rest)
    dinowm_goal_variants_pm_last_rest_alpha1.log      ... --alpha 1 --goal-at-rest
    dinowm_goal_variants_pm_last_rest_alpha10.log     ... --alpha 10 --goal-at-rest
    dinowm_goal_variants_pm_all_rest.log              --task point_mass-goal --objective all --goal-at-rest
    dinowm_goal_variants_pm_all_rest_alpha1.log       ... --alpha 1
    dinowm_goal_variants_pm_all_positions.log         --task point_mass-goal --objective all --proprio-positions
    dinowm_goal_variants_all_positions_alpha1_15k.log reacher-pose, --objective all --proprio-positions --alpha 1,
                                                      goals 0-11, with the predictor trained to 15000 steps
Minutes per goal on this CPU: a quick look, not a benchmark row.
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import dinowm_goals as dg  # noqa: E402
from models.dino_wm import load_trained_dinowm  # noqa: E402
from training.goal_mpc import GoalEvalConfig, dinowm_cpu_budget, evaluate_goals, goal_reset_seeds, summarise_goals  # noqa: E402

torch.set_num_threads(1)
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--objective", default="all")
p.add_argument("--goals", type=int, default=6)
p.add_argument("--env-steps", type=int, default=50)
p.add_argument("--alpha", type=float, default=0.1)
p.add_argument("--task", default="reacher-pose")
p.add_argument("--start", type=int, default=0)
p.add_argument("--goal-at-rest", action="store_true")
p.add_argument("--proprio-positions", action="store_true",
               help="compare only the joint positions in the proprio term (GoalEvalConfig.proprio_positions)")
a = p.parse_args()
ns = argparse.Namespace(task=a.task, preset="cpu", seed=0, runs_dir=str(dg.RUNS), no_progress=True)
dataset = dg.open_dataset(ns)
model = load_trained_dinowm(dg.run_dir(ns) / "model.pt", device="cpu")
config = GoalEvalConfig.for_dataset(dataset, planner="cem", env_steps=a.env_steps, seed=0, precision="bfloat16",
                                    **dinowm_cpu_budget())
config = dataclasses.replace(config, objective=a.objective, alpha=a.alpha, goal_at_rest=a.goal_at_rest,
                             proprio_positions=a.proprio_positions)
goals, sel = dg.draw_goals(dataset, a.task, 50, 0, False)
seeds = goal_reset_seeds(goals, dataset)
idx = np.arange(a.start, a.start + a.goals)
sub = goals.subset(idx)
recs = evaluate_goals(model, sub, config, reset_seeds=seeds[idx])
print(vars(a), summarise_goals(recs))
for r in recs:
    print(r.goal, r.success, r.reached, round(r.final_distance, 3), round(r.min_distance, 3))
