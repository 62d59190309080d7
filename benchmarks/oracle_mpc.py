#!/usr/bin/env python
"""MPC with the true MuJoCo physics: the ceiling our learned models are measured against.

    python benchmarks/oracle_mpc.py                      # the table (resumes if interrupted)
    python benchmarks/oracle_mpc.py --sweep              # samples needed per planner
    python benchmarks/oracle_mpc.py --tasks cartpole-swingup --episodes 2 --out /tmp/x.json

For each task and planner (CEM, MPPI, iCEM at a matched budget of scored candidates per
plan call): episode returns (and success on goal tasks), plan time per agent step, and
simulated physics steps per second during planning against a raw single-thread
`mj_step` loop measured in the same run. Results are written after every episode to
benchmarks/results/oracle_mpc.json; a rerun skips the episodes already there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


import envs  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from models.oracle import OracleModel  # noqa: E402
from models.oracle_presets import matched_planner, oracle_settings  # noqa: E402
from planners import MPCController  # noqa: E402
from training import run_episode  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_mpc.json"
TASKS = ("reacher-easy", "point_mass-easy", "reacher-pose", "point_mass-goal", "reacher-target", "cartpole-swingup",
         "finger-spin", "cheetah-run", "walker-walk", "finger-turn_goal")
PLANNERS = ("cem", "mppi", "icem")
def raw_step_rate(env: Any, seconds: float = 1.0) -> float:
    """Single-thread `mj_step` calls per second on this task's model."""
    import mujoco

    model = env.physics.model.ptr
    data = mujoco.MjData(model)
    mujoco.mj_copyData(data, model, env.physics.data.ptr)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            mujoco.mj_step(model, data)
        count += 200
    return count / (time.perf_counter() - start)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def save(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)


def run_cell(task: str, planner_name: str, budget: int, episodes: int, report: dict[str, Any], key: str,
             out: Path) -> dict[str, Any]:
    """Episodes of one (task, planner, budget), resuming from what `report` already has."""
    cell = report.setdefault("runs", {}).setdefault(key, {"task": task, "planner": planner_name, "budget": budget,
                                                            "episodes": []})
    settings = oracle_settings(task)
    env = envs.make(task, seed=0, action_repeat=settings["action_repeat"])
    model = OracleModel(env)
    planner = matched_planner(planner_name, env.action_space.shape[0], settings["horizon"], budget)
    cell["planner_config"] = str(planner.config)
    cell["candidates_per_call"] = planner.candidates_per_call()
    cell["action_repeat"] = env.action_repeat
    cell["physics_steps_per_action"] = model.physics_steps_per_action
    if "raw_mj_step_per_s" not in cell:
        cell["raw_mj_step_per_s"] = raw_step_rate(env)
    for episode in range(len(cell["episodes"]), episodes):
        controller = MPCController(model, planner, discount=1.0, use_value=False, seed=episode, device="cpu")
        start = time.perf_counter()
        record = run_episode(env, controller, seed=1000 + episode, episode=episode,
                             model_input=lambda e, obs: e.get_physics_state())
        wall = time.perf_counter() - start
        row = record.as_dict()
        # Physics steps simulated while planning, per second of planning time.
        simulated = record.steps * cell["candidates_per_call"] * planner.config.horizon * model.physics_steps_per_action
        row["planning_sim_steps_per_s"] = simulated / (record.mean_plan_ms * record.steps / 1000)
        row["wall_s"] = wall
        cell["episodes"].append(row)
        save(out, report)
        success = "" if row["success"] is None else f" success {row['success']}"
        print(f"  {key} ep {episode}: return {row['episode_return']:.1f}{success}, "
              f"{row['mean_plan_ms']:.0f} ms/step, {wall:.0f} s", flush=True)
    env.close()
    returns = [e["episode_return"] for e in cell["episodes"]]
    graded = [e["success"] for e in cell["episodes"] if e["success"] is not None]
    cell["summary"] = {
        "mean_return": statistics.mean(returns),
        "std_return": statistics.pstdev(returns),
        "success_rate": statistics.mean(graded) if graded else None,
        "mean_plan_ms": statistics.mean(e["mean_plan_ms"] for e in cell["episodes"]),
        "planning_sim_steps_per_s": statistics.mean(e["planning_sim_steps_per_s"] for e in cell["episodes"]),
        "speedup_over_raw_mj_step": statistics.mean(e["planning_sim_steps_per_s"] for e in cell["episodes"])
        / cell["raw_mj_step_per_s"],
    }
    save(out, report)
    return cell


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS))
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--budget", type=int, default=None, help="candidates scored per plan call (default: per task)")
    parser.add_argument("--sweep", action="store_true", help="returns against budget on --sweep-task")
    parser.add_argument("--sweep-task", default="reacher-easy")
    parser.add_argument("--sweep-budgets", type=int, nargs="+", default=[30, 60, 120, 250])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = load(args.out)
    report["machine"] = machine_info()
    if args.sweep:
        for budget in args.sweep_budgets:
            for name in args.planners:
                key = f"sweep/{args.sweep_task}/{name}/{budget}"
                cell = run_cell(args.sweep_task, name, budget, args.episodes, report, key, args.out)
                print(f"{key}: {cell['summary']['mean_return']:.1f}", flush=True)
        return 0
    for task in args.tasks:
        for name in args.planners:
            budget = args.budget or oracle_settings(task)["budget"]
            key = f"{task}/{name}/{budget}"
            cell = run_cell(task, name, budget, args.episodes, report, key, args.out)
            s = cell["summary"]
            success = "" if s["success_rate"] is None else f", success {100 * s['success_rate']:.0f}%"
            print(f"{key}: return {s['mean_return']:.1f} +- {s['std_return']:.1f}{success}, "
                  f"{s['mean_plan_ms']:.0f} ms/step, {s['speedup_over_raw_mj_step']:.1f}x raw mj_step", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
