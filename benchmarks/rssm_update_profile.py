#!/usr/bin/env python
"""Where one dreamer-recipe RSSM update spends its time: torch's profiler over one update.

    python benchmarks/rssm_update_profile.py                 # 1 thread; writes rssm_update_profile.{json,txt}
    python benchmarks/rssm_update_profile.py --threads 2

One update is what `benchmarks/rssm_update_cost.py` times: a world-model step with
DreamerV3's options (`RSSMConfig.dreamerv3`) on 16 x 64 state sequences, then a DreamerV3
actor-critic step imagining 15 steps from all 1,024 posterior states. Random weights and
batches (the work does not depend on what the model has learned). The JSON has the
update's wall time, the share of matrix products (mm, addmm, bmm) and the share of time
outside any operator (Python and dispatch overhead); the text file has the profiler's
tables by operator and by operator and input shape.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402
from benchmarks.rssm_update_cost import random_batch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig
    from training.planet_trainer import recipe_settings

    recipe = recipe_settings("dreamer", "actor")
    obs_dim, action_dim = 5, 1  # cartpole-swingup
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.dreamerv3("state", (obs_dim,), action_dim, free_nats=recipe["free_nats"]))
    learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3())
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"], eps=recipe["adam_eps"])
    batch = random_batch((obs_dim,), action_dim, recipe["batch_size"], recipe["chunk_length"], pixels=False)

    def update() -> None:
        out = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        learner.update(model, out.posterior.detach())

    update()  # warm-up
    start = time.perf_counter()
    update()
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        update()
    by_op = prof.key_averages()
    operators_s = sum(e.self_cpu_time_total for e in by_op) / 1e6
    matmul_s = sum(e.self_cpu_time_total for e in by_op if e.key in MATMULS) / 1e6
    top = sorted(by_op, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    result = {
        "command": "python benchmarks/rssm_update_profile.py" + (f" --threads {args.threads}" if args.threads != 1 else ""),
        "machine": machine_info(),
        "threads": args.threads,
        "update_s": round(wall, 3),
        "operators_s": round(operators_s, 3),
        "matmul_share_of_operators": round(matmul_s / operators_s, 3),
        "outside_operators_share": round(max(0.0, 1 - operators_s / wall), 3),
        "top_operators": [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in top],
    }
    write_json_result(RESULTS, "rssm_update_profile.json", result)
    text = (by_op.table(sort_by="self_cpu_time_total", row_limit=25)
            + "\n\n" + prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))
    (RESULTS / "rssm_update_profile.txt").write_text(text)
    print(f"one update: {wall:.2f} s; matrix products {100 * result['matmul_share_of_operators']:.0f}% of operator "
          f"time; outside operators {100 * result['outside_operators_share']:.0f}% of the wall time")


if __name__ == "__main__":
    main()
