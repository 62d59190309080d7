#!/usr/bin/env python
"""State coverage of a reward-free Plan2Explore run against random actions at equal steps.

    python run_planning.py train --model ensemble --task cartpole-swingup --steps 100000 --explore --eval-every 50000 --epochs 10
    python benchmarks/exploration_coverage.py --run runs/ensemble-cartpole-swingup-state-explore-s0

Reads the run's replay buffer (its newest checkpoint's), collects the same number of env
steps with uniform random actions (same task, action repeat and episode length), and
counts the bins visited (`training.coverage`: cart position x pole angle for cartpole,
fingertip position for reacher) as the data grows. Also copies the run's zero-shot evaluations. Writes
benchmarks/results/exploration_coverage-<task>.json (-<task>-sincos.json for a model that read
joint angles as sin/cos) and a PNG of both curves.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BINS = {"cartpole": "cart position x pole angle (20 x 20 bins: cart over [-2, 2], angle over [-pi, pi))",
        "reacher": "fingertip position (20 x 20 bins over [-0.25, 0.25]^2)"}


def spread(task: str, obs: np.ndarray) -> dict[str, float]:
    """How the data lies within the bins: what position bins alone do not weigh."""
    if task.startswith("cartpole"):
        return {"upright_share (cos > 0.9)": round(float((obs[:, 1] > 0.9).mean()), 4),
                "pole_angular_velocity_std": round(float(obs[:, 4].std()), 2),
                "cart_near_wall_share (|x| > 1.5)": round(float((abs(obs[:, 0]) > 1.5).mean()), 4)}  # fmt: skip
    from training.coverage import fingertip

    radius = np.linalg.norm(fingertip(obs), axis=1)
    return {"fingertip_radius_mean": round(float(radius.mean()), 4),
            "joint_velocity_std": round(float(obs[:, 4:6].std()), 2)}  # fmt: skip


def random_observations(task: str, action_repeat: int, agent_steps: int, seed: int) -> np.ndarray:
    """Observations [T, S] of `agent_steps` uniform random actions, episodes back to back."""
    import envs

    env = envs.make(task, obs="state", seed=seed, action_repeat=action_repeat)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    episode = 0
    while len(seen) < agent_steps:
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        seen.append(obs)
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
            seen.append(obs)
    env.close()
    return np.asarray(seen[:agent_steps])


def main() -> None:
    from training.coverage import coverage_curve
    from training.replay import EpisodeReplay

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="the exploration run's folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-action data")
    parser.add_argument("--every", type=int, default=10_000, help="env steps between points of the curve")
    args = parser.parse_args()
    checkpoint = torch.load(args.run / "checkpoint.pt", map_location="cpu", weights_only=True)
    config = checkpoint["train_config"]
    task, repeat = config["task"], int(checkpoint["model_state"]["config"]["action_repeat"])
    # A model that read joint angles as (sin, cos) gets its own result files beside the raw-angle run's.
    angle_dims = list(checkpoint["model_state"]["config"].get("angle_dims") or [])
    result_name = f"exploration_coverage-{task}" + ("-sincos" if angle_dims else "")
    state = EpisodeReplay.load(args.run / checkpoint["replay_file"], seed=0).state()
    explored = np.asarray(state["obs"])  # [T, S]: every episode's observations, first one included
    env_steps = (len(explored) - int(state["num_episodes"])) * repeat
    random = random_observations(task, repeat, len(explored), args.seed)
    every = max(1, args.every // repeat)
    counts, visited = coverage_curve(task, explored, every)
    _, visited_random = coverage_curve(task, random, every)
    evals = list(csv.DictReader((args.run / "eval.csv").open())) if (args.run / "eval.csv").is_file() else []
    result = {
        "command": "python benchmarks/exploration_coverage.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "task": task,
        "action_repeat": repeat,
        "env_steps": env_steps,
        "bins": BINS[task.split("-")[0]],
        # Observations include each episode's first one: scale their count to env steps.
        "curve": [{"env_steps": round(int(c) * env_steps / len(explored)), "disagreement": int(v), "random": int(r)}
                  for c, v, r in zip(counts, visited, visited_random)],  # fmt: skip
        # How the data is spread within the bins: swing-up needs the upright states and
        # fast pole motion, which position x angle bins alone do not weigh.
        "spread": {name: spread(task, o) for name, o in (("disagreement", explored), ("random", random))},
        "zero_shot_evaluations": evals,
        "run_config": {**{k: config[k] for k in ("preset", "explore", "epochs", "horizon", "plan_beta") if k in config},
                       "angle_dims": angle_dims},
    }
    for row in result["curve"]:
        print(row)
    write_json_result(RESULTS, f"{result_name}.json", result)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plots]'): no plot")
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [r["env_steps"] for r in result["curve"]]
    ax.plot(steps, [r["disagreement"] for r in result["curve"]], label="Plan2Explore (disagreement)")
    ax.plot(steps, [r["random"] for r in result["curve"]], label="random actions")
    ax.set_xlabel("env steps")
    ax.set_ylabel("visited bins (of 400)")
    ax.set_title(f"{task}: {BINS[task.split('-')[0]].split(' (')[0]}")
    ax.legend()
    fig.tight_layout()
    path = RESULTS / f"{result_name}.png"
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
