#!/usr/bin/env python
"""Time of one TOLD update (model step + policy-prior step) eager against `torch.compile`.

    python benchmarks/told_update_speed.py --task cartpole-swingup --threads 1

Updates are most of the TOLD training loop on this CPU (README: about 83% at 1 thread),
so this is the number a compiled update has to move. The batch is the trainer's (256
subsequences of 3 transitions) drawn from a replay buffer of random transitions with the
task's observation and action sizes; the model is the 1M size. The two agents start from
the same weights and see the same batches, and the losses of their first updates are
compared so that a compiled update that computes something else is caught. Writes
benchmarks/results/told_update_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def make_batches(obs_dim: int, action_dim: int, count: int, batch: int, horizon: int, seed: int) -> list[dict]:
    """Time-major random subsequences shaped like `EpisodeReplay.sample`'s."""
    rng = np.random.default_rng(seed)
    return [
        {
            "obs": rng.normal(size=(horizon + 1, batch, obs_dim)).astype(np.float32),
            "action": rng.uniform(-1, 1, size=(horizon, batch, action_dim)).astype(np.float32),
            "reward": rng.uniform(0, 1, size=(horizon, batch)).astype(np.float32),
        }
        for _ in range(count)
    ]


def time_updates(compile: bool, state: dict, obs_dim: int, action_dim: int, args: argparse.Namespace) -> dict:
    from models.told import TOLD, TOLDConfig
    from training.told_agent import TOLDAgent, TOLDLossConfig

    model = TOLD(TOLDConfig(obs_shape=(obs_dim,), action_dim=action_dim, size=args.size, task=args.task))
    model.load_state_dict(state)
    agent = TOLDAgent(model, TOLDLossConfig(), device="cpu", seed=0, compile=compile)
    loss_cfg = agent.loss
    batches = make_batches(obs_dim, action_dim, args.warmup + args.updates, loss_cfg.batch_size, loss_cfg.horizon, seed=1)
    first_losses = []
    start = time.perf_counter()
    for batch in batches[: args.warmup]:  # compilation happens in the first of these
        first_losses.append(agent.update(batch))
    warmup_s = time.perf_counter() - start
    times = []
    for batch in batches[args.warmup :]:
        t = time.perf_counter()
        agent.update(batch)
        times.append(1000 * (time.perf_counter() - t))
    return {
        "compile": compile,
        "warmup_updates": args.warmup,
        "warmup_s": round(warmup_s, 1),
        "updates": args.updates,
        "median_ms": round(statistics.median(times), 1),
        "mean_ms": round(statistics.fmean(times), 1),
        "first_update_losses": {k: round(float(v), 5) for k, v in first_losses[0].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--size", default="1M")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--updates", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from envs import make
    from models.told import TOLD, TOLDConfig

    env = make(args.task)
    obs_dim, action_dim = int(env.observation_space.shape[0]), int(env.action_space.shape[0])
    torch.manual_seed(0)
    state = TOLD(TOLDConfig(obs_shape=(obs_dim,), action_dim=action_dim, size=args.size, task=args.task)).state_dict()
    results = [time_updates(c, state, obs_dim, action_dim, args) for c in (False, True)]
    eager, compiled = results
    out = {
        "machine": machine_info(),
        "task": args.task,
        "size": args.size,
        "eager": eager,
        "compiled": compiled,
        "speedup": round(eager["median_ms"] / compiled["median_ms"], 2),
        "note": "other processes may have shared the cores; see the README for the conditions",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "told_update_speed.json", json.dumps(out, indent=2) + "\n")
    for r in results:
        print(f"{'compiled' if r['compile'] else 'eager':9s} median {r['median_ms']} ms, mean {r['mean_ms']} ms "
              f"(warm-up {r['warmup_s']} s); first losses {r['first_update_losses']}")  # fmt: skip
    print(f"speed-up {out['speedup']}x")


if __name__ == "__main__":
    main()
