#!/usr/bin/env python
"""Cost of one Dreamer update on the PlaNet-sized state RSSM: the world-model step and the
actor-critic step, by precision and by the number of imagination starts.

    python benchmarks/behavior_speed.py                    # 1 thread, cartpole's sizes
    python benchmarks/behavior_speed.py --threads 2 --repeats 5

Why it matters: `planet_learning.py run --mode actor` does 100 such updates per collected
episode (PlaNet's collect interval), about 9,500 over a 100k-step run. With Dreamer v1's
imagination from all 50 x 50 posterior states of the batch and float32, the actor-critic
step dominates (the critic and the horizon-15 imagination over 2,500 starts). The
options timed here are `BehaviorConfig.precision` ("bfloat16" autocast, as DreamerV3
computes) and `BehaviorConfig.imagine_starts` (DreamerV3 imagines from 1024 starts).

Random weights and a random batch (timing only: the work per update does not depend on
what the model has learned). Each setting runs `--warmup` updates, then the median of
`--repeats` timed ones. Writes benchmarks/results/behavior_speed.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
UPDATES_PER_100K = 9_500  # 95 trained episodes x 100 updates (cartpole, action repeat 8)


def random_batch(obs_dim: int, action_dim: int, batch: int, length: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "obs": torch.randn(batch, length, obs_dim, generator=g),
        "actions": 2 * torch.rand(batch, length, action_dim, generator=g) - 1,
        "rewards": torch.rand(batch, length, generator=g),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--obs-dim", type=int, default=5, help="state size (cartpole-swingup: 5)")
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--starts", type=int, nargs="+", default=[2500, 1024, 512], help="imagination starts")
    p.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=("float32", "bfloat16"))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig

    torch.manual_seed(0)
    model = RSSM(RSSMConfig.planet("state", (args.obs_dim,), args.action_dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    batch = random_batch(args.obs_dim, args.action_dim, 50, 50)

    def world_model_step() -> None:
        out = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    world_model_s = median_seconds(world_model_step, args.repeats, args.warmup)
    print(f"world-model update (float32, 50 x 50): {world_model_s:.2f} s", flush=True)
    posterior = model.loss(batch).posterior.detach()

    rows = []
    for starts in args.starts:
        for precision in args.precisions:
            learner = ActorCritic.for_model(model, BehaviorConfig(precision=precision, imagine_starts=starts))
            seconds = median_seconds(lambda learner=learner: learner.update(model, posterior), args.repeats, args.warmup)
            per_update = world_model_s + seconds
            rows.append({
                "imagine_starts": starts, "precision": precision, "actor_critic_s": round(seconds, 3),
                "update_s": round(per_update, 3),
                "hours_per_100k_cartpole": round(per_update * UPDATES_PER_100K / 3600, 2),
            })  # fmt: skip
            print(f"actor-critic update, {starts:5d} starts, {precision:8s}: {seconds:.2f} s "
                  f"(+ world model = {per_update:.2f} s; {rows[-1]['hours_per_100k_cartpole']} h of updates "
                  f"per 100k cartpole env steps)", flush=True)  # fmt: skip

    out = {
        "machine": machine_info(),
        "benchmark": "one Dreamer update (PlaNet RSSM, state, batch 50 x 50, horizon 15): world model + actor-critic",
        "world_model_update_s": round(world_model_s, 3),
        "updates_per_100k_cartpole": UPDATES_PER_100K,
        "settings": {"warmup": args.warmup, "repeats": args.repeats, "obs_dim": args.obs_dim,
                     "action_dim": args.action_dim},  # fmt: skip
        "rows": rows,
    }
    write_json_result(args.results_dir, "behavior_speed.json", out)


if __name__ == "__main__":
    main()
