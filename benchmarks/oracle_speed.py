#!/usr/bin/env python
"""How fast does the MuJoCo oracle score candidate sequences?

    python benchmarks/oracle_speed.py           # writes benchmarks/results/oracle_speed.json
    python benchmarks/oracle_speed.py --quick   # fewer repeats (a smoke run)

For each task (cartpole-swingup at action repeat 8 and reacher-easy at 4, PlaNet's
settings, plus cheetah-run and walker-walk for scale), on whatever machine runs it:

1. One `OracleModel.rollout_with_rewards` call for M=512 candidates of horizon H=12
   (median wall time), with every available core and with one thread, and the share
   of it spent on rewards (the same call without rewards is `rollout`).
2. The simulated physics steps per second this gives (M x H x action repeat x
   dm_control's sub-steps per control step, divided by the time).
3. The baseline, in the same run and on the same simulation (the first 64 candidates,
   same start state and controls): a plain single-thread Python loop of
   `mujoco.mj_step(model, data)`, and MuJoCo's own C loop (`mj_step(model, data,
   nstep)` per agent step); the ratios oracle / baseline. Calls take turns, so that changes
   in the machine's load affect all of them alike.
4. The generic reward path (one `task.get_reward` per state) on a few candidates,
   scaled to M=512, to show what the vectorised rewards save.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")  # the entry point chooses, before dm_control loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import envs  # noqa: E402
from benchmarks.machine import machine_info  # noqa: E402
from models.oracle import OracleModel  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "oracle_speed.json"
TASKS = (("cartpole-swingup", 8), ("reacher-easy", 4), ("cheetah-run", 4), ("walker-walk", 2))
M, H = 512, 12


def interleaved_medians(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each call, the calls taking turns so that load changes hit all alike."""
    for fn in calls.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def raw_loops(env: envs.DMCEnv, oracle: OracleModel, z: torch.Tensor, actions: torch.Tensor) -> dict[str, Callable[[], None]]:
    """The same simulation as the oracle's, one thread, for the first candidates of the batch.

    "python": a Python loop of mujoco.mj_step(model, data), setting the control before
    every physics step. "c": MuJoCo's own loop, mj_step(model, data, nstep) per agent step.
    """
    import mujoco

    model = env.physics.model.ptr
    data = mujoco.MjData(model)
    full = mujoco.mjtState.mjSTATE_FULLPHYSICS
    states = z.numpy()
    controls = np.stack([[env.to_control(a) for a in row] for row in actions.numpy()])  # [K, H, nu]
    per = oracle.physics_steps_per_action

    def python_loop() -> None:
        for state, row in zip(states, controls):
            mujoco.mj_setState(model, data, state, full)
            for control in row:
                for _ in range(per):
                    data.ctrl[:] = control
                    mujoco.mj_step(model, data)

    def c_loop() -> None:
        for state, row in zip(states, controls):
            mujoco.mj_setState(model, data, state, full)
            for control in row:
                data.ctrl[:] = control
                mujoco.mj_step(model, data, per)

    return {"python": python_loop, "c": c_loop}


def bench_task(task: str, action_repeat: int, repeats: int) -> dict[str, Any]:
    env = envs.make(task, seed=0, action_repeat=action_repeat, render_mode=None)
    env.reset(seed=0)
    oracle = OracleModel(env)
    single = OracleModel(env, num_threads=1)
    generic = OracleModel(env, vectorized=False)
    z = oracle.encode(env.get_physics_state()[None]).expand(M, -1)
    actions = torch.rand(M, H, oracle.action_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    physics_steps = M * H * oracle.physics_steps_per_action
    few = 64  # candidates in the single-thread baselines (and 16 on the generic path)
    loops = raw_loops(env, oracle, z[:few], actions[:few])
    t = interleaved_medians(
        {
            "all": lambda: oracle.rollout_with_rewards(z, actions),
            "dynamics": lambda: oracle.rollout(z, actions),
            "one_thread": lambda: single.rollout_with_rewards(z, actions),
            "python": loops["python"],
            "c": loops["c"],
        },
        repeats,
    )
    t_generic = interleaved_medians({"g": lambda: generic.rollout_with_rewards(z[:16], actions[:16])}, 1)["g"] * M / 16
    python_rate = few * H * oracle.physics_steps_per_action / t["python"]
    c_rate = few * H * oracle.physics_steps_per_action / t["c"]
    result = {
        "task": task,
        "action_repeat": action_repeat,
        "physics_steps_per_action": oracle.physics_steps_per_action,
        "M": M,
        "H": H,
        "physics_steps_per_call": physics_steps,
        "vectorised_reward": oracle.vectorized_reward,
        "threads": oracle.num_threads,
        "rollout_with_rewards_ms": 1000 * t["all"],
        "rollout_only_ms": 1000 * t["dynamics"],
        "rollout_with_rewards_1_thread_ms": 1000 * t["one_thread"],
        "generic_rewards_ms_estimated": 1000 * t_generic,
        "oracle_steps_per_s": physics_steps / t["all"],
        "oracle_1_thread_steps_per_s": physics_steps / t["one_thread"],
        "raw_python_mj_step_loop_steps_per_s": python_rate,
        "raw_c_mj_step_loop_steps_per_s": c_rate,
        "speedup_vs_python_loop": physics_steps / t["all"] / python_rate,
        "speedup_vs_c_loop": physics_steps / t["all"] / c_rate,
    }
    for model in (oracle, single, generic):
        model.close()
    env.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    results = {"machine": machine_info(), "tasks": []}
    for task, action_repeat in TASKS:
        row = bench_task(task, action_repeat, repeats)
        results["tasks"].append(row)
        print(
            f"{task:18s} R={action_repeat}  M={M} H={H}: {row['rollout_with_rewards_ms']:7.1f} ms "
            f"({row['threads']} threads; 1 thread {row['rollout_with_rewards_1_thread_ms']:7.1f} ms; "
            f"no rewards {row['rollout_only_ms']:7.1f} ms; generic rewards ~{row['generic_rewards_ms_estimated']:.0f} ms)  "
            f"{row['oracle_steps_per_s'] / 1e3:6.1f} k steps/s vs python mj_step loop "
            f"{row['raw_python_mj_step_loop_steps_per_s'] / 1e3:6.1f} k ({row['speedup_vs_python_loop']:.2f}x)"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
