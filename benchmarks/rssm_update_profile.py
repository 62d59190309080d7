#!/usr/bin/env python
"""Where one dreamer-recipe RSSM update spends its time: torch's profiler over one update.

    python benchmarks/rssm_update_profile.py                 # 1 thread; writes rssm_update_profile.{json,txt}
    python benchmarks/rssm_update_profile.py --threads 2 --precision bfloat16
                                                             # writes rssm_update_profile-bfloat16-2threads.{json,txt}

One update is what `benchmarks/rssm_update_cost.py` times: a world-model step with
DreamerV3's options (`RSSMConfig.dreamerv3`) on 16 x 64 state sequences, then a DreamerV3
actor-critic step imagining 15 steps from all 1,024 posterior states. Random weights and
batches (the work does not depend on what the model has learned). The JSON has the
update's wall time, the share of matrix products (mm, addmm, bmm) and the share of time
outside any operator (Python and dispatch overhead), and the rate of one large float32
product (4096 x 4096 x 4096) on the same threads, this machine's practical matrix-product
peak: the update's GFLOP over it is a floor on its float32 time. The text file has the
profiler's tables by operator and by operator and input shape.

`--out-name NAME` writes NAME.{json,txt} instead of the default names (to keep profiles
of different machines side by side).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402
from benchmarks.rssm_update_cost import random_batch  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")


def matmul_peak_gflop_per_s(size: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of one large float32 product on torch's current threads (the median of
    `repeats` after two untimed ones)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / median_seconds(lambda: a @ b, repeats, warmup=2) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed updates (the wall time is their median)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                        help="the actor-critic's precision (the world model trains in float32)")
    parser.add_argument("--out-name", help="results file stem (default: from --threads and --precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from training.allocator import keep_freed_memory

    keep_freed_memory()  # as `run_planning.py train` runs on CPU

    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig
    from training.planet_trainer import recipe_settings

    recipe = recipe_settings("dreamer", "actor")
    obs_dim, action_dim = 5, 1  # cartpole-swingup
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.dreamerv3("state", (obs_dim,), action_dim, free_nats=recipe["free_nats"]))
    learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(precision=args.precision))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"], eps=recipe["adam_eps"])
    batch = random_batch((obs_dim,), action_dim, recipe["batch_size"], recipe["chunk_length"], pixels=False)

    def update() -> None:
        out = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        learner.update(model, out.posterior.detach())

    update()  # warm-up
    walls = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        update()
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        update()
    # Matrix-product FLOPs torch counts (mm, addmm, bmm; the gathered sums and sparse
    # products of models.onehot_linear are not counted, and they are small).
    with FlopCounterMode(display=False) as flops:
        update()
    peak = matmul_peak_gflop_per_s()
    by_op = prof.key_averages()
    operators_s = sum(e.self_cpu_time_total for e in by_op) / 1e6
    matmul_s = sum(e.self_cpu_time_total for e in by_op if e.key in MATMULS) / 1e6
    top = sorted(by_op, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
    result = {
        "command": "python benchmarks/rssm_update_profile.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "threads": args.threads,
        "actor_critic_precision": args.precision,
        "update_s": round(wall, 3),
        "update_s_samples": [round(w, 3) for w in walls],
        "operators_s": round(operators_s, 3),
        "matmul_s": round(matmul_s, 3),
        "matmul_share_of_operators": round(matmul_s / operators_s, 3),
        "matmul_gflop": round(flops.get_total_flops() / 1e9, 1),
        "matmul_gflop_per_s": round(flops.get_total_flops() / 1e9 / matmul_s, 1),
        "outside_operators_share": round(max(0.0, 1 - operators_s / wall), 3),
        "matmul_peak_gflop_per_s": round(peak, 1),
        "matmul_float32_floor_s": round(flops.get_total_flops() / 1e9 / peak, 3),
        "top_operators": [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "calls": e.count} for e in top],
    }
    default = args.threads == 1 and args.precision == "float32"
    name = args.out_name or ("rssm_update_profile" if default else f"rssm_update_profile-{args.precision}-{args.threads}threads")
    write_json_result(RESULTS, f"{name}.json", result)
    text = (by_op.table(sort_by="self_cpu_time_total", row_limit=25)
            + "\n\n" + prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))
    (RESULTS / f"{name}.txt").write_text(text)
    print(f"one update: {wall:.2f} s; matrix products {result['matmul_s']:.2f} s for {result['matmul_gflop']} GFLOP, "
          f"{100 * result['matmul_share_of_operators']:.0f}% of operator "
          f"time; outside operators {100 * result['outside_operators_share']:.0f}% of the wall time; "
          f"a 4096^3 float32 product runs at {result['matmul_peak_gflop_per_s']} GFLOP/s here, so the products "
          f"need at least {result['matmul_float32_floor_s']:.2f} s")


if __name__ == "__main__":
    main()
