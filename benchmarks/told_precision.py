#!/usr/bin/env python
"""Planning with a trained TOLD in float32 against bfloat16 autocast: time per MPPI call and
evaluation returns on the same episodes.

    python benchmarks/told_precision.py --task cartpole-swingup     # timings + returns table

Timings: the full TD-MPC2 MPPI preset (6 iterations, 512 samples + 24 policy proposals,
horizon 3) on one problem (acting) and on 10 at once (a batched evaluation), from a
model the TOLD benchmark saved (runs/told-<task>-state-s0/snapshots/). Returns: the rows
`told_learning.py evaluate` and `evaluate --precision bfloat16` wrote for the same
snapshots, same episode seeds. Writes benchmarks/results/told_precision.json.
"""

from __future__ import annotations

import argparse
import csv
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


def time_plan_calls(model_path: Path, precision: str, batch: int, calls: int, seed: int = 0) -> dict:
    """Median and mean wall ms of one MPPI call (a fresh episode each, no warm start)."""
    from models.told import load_told
    from planners import MPPI, MPCController

    model = load_told(model_path)
    ctrl = MPCController(model, MPPI.tdmpc2(model.config.action_dim), discount=0.99, use_value=True, seed=seed,
                         device="cpu", precision=precision)  # fmt: skip
    obs = np.random.default_rng(seed).normal(size=(batch, *model.config.obs_shape)).astype(np.float32)
    ctrl.reset()
    ctrl.act(obs)  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(calls):
        ctrl.reset()
        t = time.perf_counter()
        ctrl.act(obs)
        times.append(1000 * (time.perf_counter() - t))
    return {"median_ms": round(statistics.median(times), 1), "mean_ms": round(statistics.fmean(times), 1), "calls": calls}


def read_rows(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    with path.open() as f:
        return {int(r["env_step"]): r for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole-swingup")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot", type=int, default=None, help="env step of the model to time (default: latest)")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = ROOT / "runs" / f"told-{args.task}-state-s{args.seed}"
    snapshots = sorted((run / "snapshots").glob("model-*.pt"))
    if not snapshots:
        raise SystemExit(f"no saved models under {run}/snapshots; run `python benchmarks/told_learning.py run --task {args.task}`")
    model_path = snapshots[-1] if args.snapshot is None else run / "snapshots" / f"model-{args.snapshot:07d}.pt"
    timings = {}
    for batch in (1, 10):
        for precision in ("float32", "bfloat16"):
            timings[f"batch{batch}-{precision}"] = time_plan_calls(model_path, precision, batch, args.calls)
            print(f"batch {batch:2d} {precision:8s}: {timings[f'batch{batch}-{precision}']['median_ms']:.0f} ms per call")
    exact, reduced = read_rows(run / "eval-deferred.csv"), read_rows(run / "eval-deferred-bfloat16.csv")
    returns = [
        {"env_step": step, "float32": float(exact[step]["mean_return"]), "bfloat16": float(reduced[step]["mean_return"]),
         "float32_eval_s": float(exact[step]["eval_s"]), "bfloat16_eval_s": float(reduced[step]["eval_s"])}
        for step in sorted(set(exact) & set(reduced))
    ]  # fmt: skip
    for row in returns:
        print(f"{row['env_step']:6d} env steps: return {row['float32']:.1f} (float32) vs {row['bfloat16']:.1f} (bfloat16); "
              f"evaluation {row['float32_eval_s'] / 60:.1f} vs {row['bfloat16_eval_s'] / 60:.1f} min")
    out = {
        "machine": machine_info(),
        "threads": args.threads,
        "task": args.task,
        "model": str(model_path.relative_to(ROOT)),
        "plan_call": timings,
        "speedup_batch1": round(timings["batch1-float32"]["median_ms"] / timings["batch1-bfloat16"]["median_ms"], 2),
        "speedup_batch10": round(timings["batch10-float32"]["median_ms"] / timings["batch10-bfloat16"]["median_ms"], 2),
        "returns_same_snapshots": returns,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "told_precision.json", json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'told_precision.json'}")


if __name__ == "__main__":
    main()
