#!/usr/bin/env python
"""What one RSSM training update costs on this machine, for the runs we would like to make.

    python benchmarks/rssm_update_cost.py                  # 1 thread; writes rssm_update_cost.json
    python benchmarks/rssm_update_cost.py --threads 2 --repeats 3
    python benchmarks/rssm_update_cost.py --compare --threads 2 --rounds 3   # before / after, side by side

Two questions it answers, each as seconds per update and hours of updates per run:

- Pixels. PlaNet's world model on 64x64 images with its batch of 50 x 50 frames, against
  the smaller batches a CPU demonstration run can afford (`planet_learning.py run --obs
  pixels --batch-size 8 --chunk-length 32`). The conv decoder dominates: its cost is
  proportional to the frames in the batch.
- The dreamer recipe (`training.planet_trainer.recipe_settings("dreamer", "actor")`): a
  world-model step with DreamerV3's options (`RSSMConfig.dreamerv3`) on 16 x 64 state
  sequences plus a DreamerV3 actor-critic step imagining 15 steps from all 1,024
  posterior states, 250 times per 500-step episode (train ratio 512), 25,000 times per
  100k env steps. It also counts
  the recipe's parameters, and what its weights with Adam's two moments weigh (the bulk
  of a training checkpoint), at our sizes and at V3's proprio sizes (GRU 512, 2 x 512).

Random weights and random batches: the work per update does not depend on what the model
has learned. Each setting runs `--warmup` untimed updates, then the median of `--repeats`.

`--compare` times the dreamer recipe's update several ways, each in its own fresh process,
interleaved round by round (machines drift, so the ways are measured side by side).
`--variants` picks them (default: the float32 and the bfloat16 actor-critic rows):

- "dense": the actor-critic's first layers as dense products over the one-hot latents
  (`BehaviorConfig(sparse_onehot=False)`, the implementation before `models.onehot_linear`);
- "gathering": the gathering first layers (the default);
- "gathering + kept memory": the same with `training.allocator.keep_freed_memory()`, as
  `run_planning.py train` runs on CPU: the float32 update a run makes;
- "gathering + kept memory + bfloat16 actor-critic": the same with the actor-critic under
  bfloat16 autocast (`--precision bfloat16`; the world model stays float32). Fast only on
  CPUs with AMX or AVX512-BF16 instructions.

`--baseline PATH` adds the "gathering + kept memory" row of another checkout (say, a
`git worktree` of an earlier revision), run by that checkout's own copy of this script:

    git worktree add /tmp/before <revision>
    python benchmarks/rssm_update_cost.py --compare --baseline /tmp/before --threads 2 --rounds 5

It writes `--out` (default rssm_update_cost_compare.json) with every sample, the medians
and the ratios to the first row.

`--gpu` times the dreamer recipe's whole update (`training.planet_trainer.
rssm_update_step`: world model, then actor-critic, as a run makes it) on a CUDA device,
every way side by side in one process: eager and recorded as one CUDA graph
(`training.update_graphs.CapturedUpdate`), each with the float32 and the bfloat16
actor-critic. Each way starts from the same weights and batch; the first update's
metrics of the graph are compared with eager's. Writes rssm_update_cost_gpu.json:

    python benchmarks/rssm_update_cost.py --gpu --repeats 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PIXEL_BATCHES = ((50, 50), (16, 50), (8, 32))  # (sequences, steps): PlaNet's first
# Updates per 50k env steps of cartpole at action repeat 8: 45 trained episodes x 100.
PIXEL_UPDATES_PER_50K = 4_500


def random_batch(obs_shape: tuple[int, ...], action_dim: int, batch: int, length: int, pixels: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if pixels:
        obs = torch.randint(0, 256, (batch, length, *obs_shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(batch, length, *obs_shape, generator=g)
    return {
        "obs": obs,
        "actions": 2 * torch.rand(batch, length, action_dim, generator=g) - 1,
        "rewards": torch.rand(batch, length, generator=g),
    }


def weights_with_adam_mb(*modules: torch.nn.Module) -> float:
    """Megabytes of float32 weights (4 bytes each, slow copies included) plus Adam's two
    moments of the trained ones (8 bytes each)."""
    weights = sum(parameter_count(m) for m in modules)
    trained = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
    return round((4 * weights + 8 * trained) / 1e6, 1)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def world_model_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], lr: float, eps: float):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=eps)

    def step() -> None:
        out = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    return step


# name: (sparse_onehot, keep_freed_memory, actor-critic precision)
VARIANTS = {
    "dense": (False, False, "float32"),
    "gathering": (True, False, "float32"),
    "gathering + kept memory": (True, True, "float32"),
    "gathering + kept memory + bfloat16 actor-critic": (True, True, "bfloat16"),
}
DEFAULT_COMPARED = ("gathering + kept memory", "gathering + kept memory + bfloat16 actor-critic")
BASELINE_VARIANT = "gathering + kept memory"


def dreamer_update_seconds(sparse_onehot: bool, warmup: int, repeats: int, precision: str = "float32") -> dict[str, float]:
    """Median seconds of the dreamer recipe's world-model step and actor-critic step."""
    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig
    from training.planet_trainer import recipe_settings

    recipe = recipe_settings("dreamer", "actor")
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.dreamerv3("state", (5,), 1, free_nats=recipe["free_nats"]))
    batch = random_batch((5,), 1, recipe["batch_size"], recipe["chunk_length"], pixels=False)
    learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(sparse_onehot=sparse_onehot, precision=precision))
    step = world_model_step(model, batch, recipe["lr"], recipe["adam_eps"])
    posterior = model.loss(batch).posterior.detach()
    world, behavior = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        learner.update(model, posterior)
        t2 = time.perf_counter()
        if i >= warmup:
            world.append(t1 - t0)
            behavior.append(t2 - t1)
    w, b = statistics.median(world), statistics.median(behavior)
    return {"world_model_s": round(w, 3), "actor_critic_s": round(b, 3), "update_s": round(w + b, 3)}


def gpu_rows(warmup: int, repeats: int, device_name: str = "cuda") -> dict[str, Any]:
    """Milliseconds per dreamer-recipe update on CUDA, eager against the recorded graph,
    float32 and bfloat16 actor-critic, from the same weights and batch. (On a CPU the
    "graph" ways run eagerly, with a warning.)"""
    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig
    from training.planet_trainer import PlaNetTrainConfig, recipe_settings, rssm_update_step
    from training.update_graphs import CapturedUpdate

    device = torch.device(device_name)
    recipe = recipe_settings("dreamer", "actor")
    torch.manual_seed(0)
    base_model = RSSM(RSSMConfig.dreamerv3("state", (5,), 1, free_nats=recipe["free_nats"])).to(device)
    batch = {k: v.to(device) for k, v in random_batch((5,), 1, recipe["batch_size"], recipe["chunk_length"],
                                                       pixels=False).items()}  # fmt: skip
    base_behavior = ActorCritic.for_model(base_model, BehaviorConfig.dreamerv3())
    rows: list[dict[str, Any]] = []
    first: dict[str, dict[str, float]] = {}
    for precision in ("float32", "bfloat16"):
        for graph in (False, True):
            model = RSSM(base_model.config).to(device)
            model.load_state_dict(base_model.state_dict())
            behavior = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(precision=precision))
            behavior.load_state_dict(base_behavior.state_dict())
            optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"], eps=recipe["adam_eps"])

            def step(b: dict[str, torch.Tensor], model: RSSM = model, optimizer: torch.optim.Optimizer = optimizer,
                     behavior: ActorCritic = behavior) -> dict[str, torch.Tensor]:  # fmt: skip
                return rssm_update_step(model, optimizer, behavior, b, grad_clip=PlaNetTrainConfig.grad_clip)

            update = CapturedUpdate(step, [model, behavior], [optimizer, behavior.actor_optimizer,
                                                              behavior.critic_optimizer], device) if graph else step  # fmt: skip
            torch.manual_seed(1)
            metrics = {k: float(v) for k, v in update(batch).items()}
            name = f"{'graph' if graph else 'eager'}, {precision} actor-critic"
            first[name] = metrics

            def timed(update: Any = update) -> None:
                update(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            seconds = median_seconds(timed, repeats, warmup)
            rows.append({"way": name, "ms_per_update": round(seconds * 1000, 2),
                         "captured": bool(getattr(update, "captured", False)),
                         "minutes_per_100k": round(seconds * recipe["collect_interval"] * 100 / 60, 1)})  # fmt: skip
            print(f"{name}: {rows[-1]['ms_per_update']} ms per update ({rows[-1]['minutes_per_100k']} min of updates "
                  f"per 100k env steps){'' if not graph or rows[-1]['captured'] else ' [graph not recorded: eager]'}",
                  flush=True)  # fmt: skip
    differences = {}
    for precision in ("float32", "bfloat16"):
        eager, graph = first[f"eager, {precision} actor-critic"], first[f"graph, {precision} actor-critic"]
        differences[precision] = {k: abs(graph[k] - eager[k]) / max(abs(eager[k]), 1e-8) for k in eager}
    return {"rows": rows, "first_update_metrics": first, "first_update_relative_difference": differences,
            "updates_per_100k": recipe["collect_interval"] * 100}  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    """The chosen VARIANTS (and the baseline checkout's row), each in a fresh process,
    interleaved over `--rounds` rounds."""
    rows_to_run: dict[str, tuple[Path, str]] = {}  # row name: (checkout, variant)
    if args.baseline:
        baseline = Path(args.baseline).resolve()
        if not (baseline / "benchmarks" / "rssm_update_cost.py").is_file():
            raise SystemExit(f"--baseline {args.baseline}: no benchmarks/rssm_update_cost.py there; pass a checkout")
        rows_to_run[f"baseline ({baseline.name}): {BASELINE_VARIANT}"] = (baseline, BASELINE_VARIANT)
    for name in args.variants:
        rows_to_run[name] = (ROOT, name)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in rows_to_run}
    for r in range(args.rounds):
        for name, (checkout, variant) in rows_to_run.items():
            cmd = [sys.executable, str(checkout / "benchmarks" / "rssm_update_cost.py"), "--one", variant,
                   "--threads", str(args.threads), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=checkout).stdout
            samples[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1}, {name}: {samples[name][-1]}", flush=True)
    rows = {}
    for name, runs in samples.items():
        rows[name] = {k: round(statistics.median(s[k] for s in runs), 3) for k in runs[0]}
    first = next(iter(rows))
    base = rows[first]["update_s"]
    for name, row in rows.items():
        row["speedup_vs_first"] = round(base / row["update_s"], 2)
        row["hours_per_100k"] = round(row["update_s"] * 25_000 / 3600, 1)
        print(f"{name}: {row}", flush=True)
    write_json_result(args.results_dir, args.out, {
        "command": "python benchmarks/rssm_update_cost.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "benchmark": ("the dreamer recipe's update (world model on 16 x 64 state sequences, then the actor-critic "
                      "imagining 15 steps from 1,024 starts), fresh process each, interleaved"),
        "settings": {"threads": args.threads, "rounds": args.rounds, "warmup": args.warmup, "repeats": args.repeats},
        "variants": {name: {"sparse_onehot": s, "keep_freed_memory": k, "actor_critic_precision": p}
                     for name, (s, k, p) in VARIANTS.items() if name in {v for _, v in rows_to_run.values()}},
        "baseline_checkout": str(args.baseline) if args.baseline else None,
        "samples": samples,
        "median": rows,
        "target": {"cpu_update_s": 1.5},
    })  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--compare", action="store_true", help="implementations of the dreamer update, side by side")
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(DEFAULT_COMPARED),
                   help="--compare: the rows of this checkout")
    p.add_argument("--baseline", help="--compare: a checkout of another revision, timed in the same rounds")
    p.add_argument("--out", default="rssm_update_cost_compare.json", help="--compare: the results file")
    p.add_argument("--rounds", type=int, default=3, help="--compare: interleaved rounds")
    p.add_argument("--gpu", action="store_true", help="the dreamer update on CUDA: eager against one CUDA graph")
    p.add_argument("--one", choices=tuple(VARIANTS), help=argparse.SUPPRESS)  # one --compare sample, as JSON
    args = p.parse_args()
    if args.warmup < 0 or args.repeats < 1 or args.threads < 1 or args.rounds < 1:
        p.error(f"--warmup {args.warmup} must be >= 0, --repeats {args.repeats}, --threads {args.threads} and "
                f"--rounds {args.rounds} >= 1")  # fmt: skip
    torch.set_num_threads(args.threads)
    if args.one:
        sparse, keep, precision = VARIANTS[args.one]
        if keep:
            from training.allocator import keep_freed_memory

            keep_freed_memory()
        print(json.dumps(dreamer_update_seconds(sparse, args.warmup, args.repeats, precision)))
        return
    if args.compare:
        compare(args)
        return
    if args.gpu:
        if not torch.cuda.is_available():
            p.error("--gpu needs a CUDA device; none is visible here")
        write_json_result(args.results_dir, "rssm_update_cost_gpu.json", {
            "machine": machine_info(),
            "benchmark": "the dreamer recipe's whole update on CUDA: eager against one recorded CUDA graph",
            "settings": {"warmup": args.warmup, "repeats": args.repeats},
            **gpu_rows(args.warmup, args.repeats),
        })  # fmt: skip
        return

    from models.behavior import ActorCritic, BehaviorConfig
    from models.rssm import RSSM, RSSMConfig
    from training.planet_trainer import recipe_settings

    torch.manual_seed(0)
    pixel_rows = []
    model = RSSM(RSSMConfig.planet("pixels", (3, 64, 64), 1))
    for sequences, steps in PIXEL_BATCHES:
        batch = random_batch((3, 64, 64), 1, sequences, steps, pixels=True)
        seconds = median_seconds(world_model_step(model, batch, 1e-3, 1e-4), args.repeats, args.warmup)
        pixel_rows.append({"batch": [sequences, steps], "frames": sequences * steps, "update_s": round(seconds, 3),
                           "hours_per_50k_cartpole": round(seconds * PIXEL_UPDATES_PER_50K / 3600, 2)})  # fmt: skip
        print(f"pixel world model, {sequences} x {steps} frames: {seconds:.2f} s per update "
              f"({pixel_rows[-1]['hours_per_50k_cartpole']} h per 50k cartpole env steps)", flush=True)

    recipe = recipe_settings("dreamer", "actor")
    obs_dim, action_dim = 5, 1  # cartpole-swingup
    model = RSSM(RSSMConfig.dreamerv3("state", (obs_dim,), action_dim, free_nats=recipe["free_nats"]))
    batch = random_batch((obs_dim,), action_dim, recipe["batch_size"], recipe["chunk_length"], pixels=False)
    model_s = median_seconds(world_model_step(model, batch, recipe["lr"], recipe["adam_eps"]), args.repeats, args.warmup)
    learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3())
    posterior = model.loss(batch).posterior.detach()
    behavior_s = median_seconds(lambda: learner.update(model, posterior), args.repeats, args.warmup)
    updates_per_100k = recipe["collect_interval"] * 100_000 // 1000  # one collect interval per 1000-env-step episode
    v3_model = RSSM(RSSMConfig.dreamerv3("state", (obs_dim,), action_dim, deter=512, hidden=512))
    v3_learner = ActorCritic.for_model(v3_model, BehaviorConfig.dreamerv3())
    sizes = {
        "ours": {"world_model_parameters": parameter_count(model), "actor_critic_parameters": parameter_count(learner),
                 "weights_with_adam_mb": weights_with_adam_mb(model, learner)},
        "v3_proprio_sizes": {"world_model_parameters": parameter_count(v3_model),
                             "actor_critic_parameters": parameter_count(v3_learner),
                             "weights_with_adam_mb": weights_with_adam_mb(v3_model, v3_learner)},
    }  # fmt: skip
    dreamer = {
        "recipe": recipe,
        "world_model_s": round(model_s, 3),
        "actor_critic_s": round(behavior_s, 3),
        "update_s": round(model_s + behavior_s, 3),
        "updates_per_100k": updates_per_100k,
        "hours_per_100k": round((model_s + behavior_s) * updates_per_100k / 3600, 1),
        "sizes": sizes,
    }
    print(f"dreamer recipe (cartpole, actor): world model {model_s:.2f} s + actor-critic {behavior_s:.2f} s per "
          f"update; {updates_per_100k} updates = {dreamer['hours_per_100k']} h per 100k env steps", flush=True)
    print(f"weights with Adam state: {sizes['ours']['weights_with_adam_mb']} MB at our sizes, "
          f"{sizes['v3_proprio_sizes']['weights_with_adam_mb']} MB at V3's proprio sizes", flush=True)

    write_json_result(args.results_dir, "rssm_update_cost.json", {
        "machine": machine_info(),
        "benchmark": "one RSSM training update: PlaNet pixels by batch size; the dreamer recipe's state update",
        "settings": {"warmup": args.warmup, "repeats": args.repeats},
        "pixels": pixel_rows,
        "dreamer_recipe": dreamer,
    })  # fmt: skip


if __name__ == "__main__":
    main()
