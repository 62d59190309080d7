#!/usr/bin/env python
"""PlaNet's RSSM learning online, acting by CEM, by the Dreamer actor, or by both.

State observations, 100k env steps (the benchmark; ANCHORS sections 2-3):

    python benchmarks/planet_learning.py run --task cartpole-swingup --mode planner        # train (resumes)
    python benchmarks/planet_learning.py run --task cartpole-swingup --mode actor
    python benchmarks/planet_learning.py run --task cartpole-swingup --mode planner+actor
    python benchmarks/planet_learning.py run --task reacher-easy --mode planner            # ... and so on
    python benchmarks/planet_learning.py report                                            # curves, table, speed
    python benchmarks/planet_learning.py plan-time --run runs/rssm-cartpole-swingup-state-planner-s0
    python benchmarks/planet_learning.py ship --run runs/rssm-cartpole-swingup-state-actor-s0   # -> checkpoints/

`run` trains the PlaNet-sized RSSM with PlaNet's loop (`training.planet_trainer`: 5 random
seed episodes, 100 updates on 50 x 50 chunks per collected episode, exploration noise 0.3,
PlaNet's action repeats: cartpole 8, reacher 4) and evaluates 10 episodes every 10k env
steps. Runs live in <runs-dir>/rssm-<task>-<obs>-<mode>-s<seed>/ and resume after a kill.
--plan-samples / --plan-iterations shrink the CEM (used for collection and evaluation alike;
the report records what each run used). --threads sets torch's threads.

`run --recipe dreamer` trains DreamerV3's regime instead (`training.planet_trainer.
recipe_settings`: V3's world model on PlaNet's sizes, action repeat 2, 16 x 64 batches, 250
updates per episode for V3's train ratio of 512, V3's actor-critic, and in planner+actor
the critic's value at the end of every CEM candidate), in .../rssm-<task>-<obs>-<mode>-
dreamer-s<seed>/. PlaNet's recipe levels off near 400 on cartpole-swingup; this is the one
meant for DreamerV3's targets. An update costs about 2.2 s on 2 CPU cores in float32 and
1.6 s with `--precision bfloat16` on a CPU with AMX (benchmarks/rssm_update_cost.py
--compare), 11-15 h of updates per 100k env steps; on a GPU:

    python benchmarks/planet_learning.py run --task cartpole-swingup --mode actor --recipe dreamer --device cuda
    python benchmarks/planet_learning.py run --task cartpole-swingup --mode planner+actor --recipe dreamer --device cuda

`report` reads every run there and writes <results-dir>/planet_learning.{csv,json,png}: one
panel per task with one curve per mode, DreamerV3's published 100k state returns (677
cartpole-swingup, 872 reacher-easy) as reference lines, the best mode's return at 100k
against that target, training throughput (env steps per second of training wall time,
evaluation excluded) and the trainer's wall-time split (env, act, update, eval, other), and
the status of any pixel run (env steps, latest return, reconstruction loss first vs latest,
pictures written) with its reconstruction-loss curve in an extra panel.

`plan-time` times one planning step of PlaNet's CEM preset (1000 candidates x 10 iterations
x horizon 12, whatever budget the run trained with) on a trained RSSM on this machine:
the median over --steps steps of a real episode, after --warmup steps; stored under
"plan_time" (keyed by run name, with `machine_info()`) in planet_learning.json.

Pixels. PlaNet's reference is 1M env steps from 64x64 pixels (cartpole-swingup 821,
reacher-easy 832; ANCHORS section 3). The full-budget command, for a GPU machine:

    python benchmarks/planet_learning.py run --task cartpole-swingup --obs pixels --mode planner \
        --steps 1000000 --device cuda
    python benchmarks/planet_learning.py run --task reacher-easy --obs pixels --mode planner \
        --steps 1000000 --device cuda

On this CPU, a shorter pixel run shows the model learning: the reconstruction loss falling
(train.csv, and the report's panel), the return rising (eval.csv), and the open-loop /
reconstruction pictures the trainer writes every 10k env steps into <run>/pictures/. Its
batches are 8 x 32 frames, not PlaNet's 50 x 50: one update on 50 x 50 frames takes 27 s
here against 2 s (benchmarks/rssm_update_cost.py), 34 h of updates per 50k env steps:

    python benchmarks/planet_learning.py run --task cartpole-swingup --obs pixels --mode planner \
        --steps 50000 --plan-samples 500 --plan-iterations 5 --batch-size 8 --chunk-length 32 --threads 1

Quick checks of the machinery only (numbers meaningless; never into runs/):

    python benchmarks/planet_learning.py run --task cartpole-swingup --mode planner+actor --model tiny \
        --steps 400 --max-episode-steps 25 --chunk-length 10 --batch-size 4 --collect-interval 2 \
        --seed-episodes 1 --eval-every 200 --eval-episodes 2 --plan-samples 20 --plan-iterations 2 \
        --runs-dir /tmp/planet-smoke
    python benchmarks/planet_learning.py report --runs-dir /tmp/planet-smoke --results-dir /tmp/planet-smoke/results
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_write_text, read_json  # noqa: E402
from training.planet_trainer import MODES, RECIPES, PlaNetTrainConfig, recipe_settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
CHECKPOINTS = ROOT / "checkpoints"
NAME = "planet_learning"

# DreamerV3's published state-based returns at 100k env steps (ANCHORS section 3): the targets.
DREAMERV3_100K = {"cartpole-swingup": 677.0, "reacher-easy": 872.0}
# PlaNet's published pixel returns at 1M env steps (ANCHORS section 3): the pixel references.
PLANET_PIXELS_1M = {"cartpole-swingup": 821.0, "reacher-easy": 832.0}
TASKS = tuple(DREAMERV3_100K)
OBS = ("state", "pixels")
TARGET_STEP = 100_000
TIMER_NAMES = ("env", "act", "update", "eval")


# -- files -------------------------------------------------------------------------------------


def run_dir(runs_dir: Path, task: str, obs: str, mode: str, seed: int, recipe: str = "planet",
            sincos: bool = False) -> Path:  # fmt: skip
    """<runs>/rssm-<task>-<obs>-<mode>-s<seed>/ for PlaNet's recipe, ...-<mode>-<recipe>-s<seed>/
    otherwise; ...-sincos-s<seed>/ when the model reads the task's joint angles as (sin, cos)
    (runs that read them raw keep the folders they had)."""
    tag = ("" if recipe == "planet" else f"-{recipe}") + ("-sincos" if sincos else "")
    return runs_dir / f"rssm-{task}-{obs}-{mode}{tag}-s{seed}"


def reads_sincos(task: str, obs: str, raw_angles: bool) -> bool:
    """Whether a run's model reads joint angles as (sin, cos) (`PlaNetTrainConfig.angle_dims`)."""
    return bool(PlaNetTrainConfig(task=task, obs=obs, raw_angles=raw_angles).angle_dims)


def label(mode: str, recipe: str) -> str:
    """How a run is named in the report: the mode, with any recipe but PlaNet's in brackets."""
    return mode if recipe == "planet" else f"{mode} ({recipe})"


def progress_wanted(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# -- run -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    from training.allocator import keep_freed_memory
    from training.planet_trainer import PlaNetTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        keep_freed_memory()  # as `run_planning.py train` does on CPU
    try:
        settings = recipe_settings(args.recipe, args.mode, args.action_repeat)
        # Flags given explicitly override the recipe (quick checks).
        settings.update({k: getattr(args, k) for k in ("model", "collect_interval", "batch_size", "chunk_length",
                                                       "seed_episodes", "max_episode_steps")
                         if getattr(args, k) is not None})  # fmt: skip
        config = PlaNetTrainConfig(
            task=args.task, steps=args.steps, obs=args.obs, seed=args.seed, mode=args.mode,
            plan_samples=args.plan_samples, plan_iterations=args.plan_iterations, eval_every=args.eval_every,
            eval_episodes=args.eval_episodes, precision=args.precision, imagine_starts=args.imagine_starts,
            eval_at_start=False,  # the untrained agent's return is not worth a full evaluation here
            raw_angles=args.raw_angles, cuda_graph=args.cuda_graph, **settings,
        )  # fmt: skip
        out = run_dir(Path(args.runs_dir), args.task, args.obs, args.mode, args.seed, args.recipe,
                      reads_sincos(args.task, args.obs, args.raw_angles))  # fmt: skip
        trainer = PlaNetTrainer(config, out, device=args.device, progress=progress_wanted(args))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    samples, elites = config.planner_budget()
    print(f"training rssm ({args.recipe} recipe: {config.model}, {args.obs}, {args.mode}) on {args.task} to "
          f"{args.steps} env steps "
          f"(action repeat {trainer.action_repeat}, CEM {samples}/{elites} x "
          f"{trainer.planner.config.iterations} it x horizon {config.plan_horizon}; {config.precision}"
          f"{'' if not config.uses_actor else f', imagining from {config.imagine_starts or config.batch_size * config.chunk_length} starts'}"
          f"); run folder {out}/", flush=True)
    rows = trainer.run()
    if rows:
        print(f"final evaluation: {rows[-1]['mean_return']:.1f} ± {rows[-1]['std_return']:.1f} at "
              f"{rows[-1]['env_step']} env steps", flush=True)


# -- reading runs ----------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_run(path: Path) -> dict[str, Any] | None:
    """The eval curve, training curve and checkpoint facts of one run (None: nothing yet)."""
    checkpoint = path / "checkpoint.pt"
    evals = [{"env_step": int(r["env_step"]), "mean_return": float(r["mean_return"]),
              "std_return": float(r["std_return"]), "returns": r["returns"], "wall_s": float(r["wall_s"])}
             for r in _read_csv(path / "eval.csv")]  # fmt: skip
    train = [{"env_step": int(r["env_step"]), "episode_return": float(r["episode_return"]),
              "reconstruction": _float(r.get("reconstruction")), "loss": _float(r.get("loss"))}
             for r in _read_csv(path / "train.csv")]  # fmt: skip
    if not evals and not train and not checkpoint.is_file():
        return None
    info: dict[str, Any] = {"run": path.name, "evals": evals, "train": train}
    if checkpoint.is_file():
        # The replay buffer is a separate .npz; the checkpoint holds weights, optimisers and logs.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = dict(state["train_config"])
        timers = {k: float(v) for k, v in dict(state["timers"]).items()}
        wall = float(state["wall"])
        train_rows = state.get("train_rows") or []
        env_steps = int(train_rows[-1]["env_step"]) if train_rows else 0
        action_repeat = config.get("action_repeat")
        if action_repeat is None and train_rows and int(state["step"]) > 0:
            action_repeat = env_steps // int(state["step"])
        train_wall = max(wall - timers.get("eval", 0.0), 1e-9)
        other = max(wall - sum(timers.values()), 0.0)
        split = {**{k: round(v, 1) for k, v in timers.items()}, "other": round(other, 1)}
        samples = config.get("plan_samples") or 1000
        info.update(
            config=config,
            model=config.get("model"),
            action_repeat=action_repeat,
            env_steps=env_steps,
            episodes=int(state["episode"]),
            updates=int(state["updates"]),
            wall_h=round(wall / 3600, 3),
            env_steps_per_s=round(env_steps / train_wall, 2),
            split_s=split,
            split_fraction={k: round(v / wall, 3) if wall > 0 else None for k, v in split.items()},
            plan_budget={"samples": samples, "iterations": config.get("plan_iterations") or 10,
                         "horizon": config.get("plan_horizon", 12)},
            batch=[config.get("batch_size", 50), config.get("chunk_length", 50)],  # sequences x steps
            # Budget settings that differ from the papers' (older runs predate them: defaults).
            precision=config.get("precision", "float32"),
            imagine_starts=config.get("imagine_starts"),
            # State entries the model read as (sin, cos); absent in older models: raw.
            angle_dims=list((state.get("model_state") or state.get("model") or {}).get("config", {}).get("angle_dims")
                            or []),
        )
    pictures = path / "pictures"
    info["pictures"] = sorted(p.name for p in pictures.glob("*.png")) if pictures.is_dir() else []
    return info


def _at(rows: list[dict[str, Any]], step: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["env_step"] == step), None)


def _recon_summary(train: list[dict[str, Any]]) -> dict[str, Any]:
    values = [(r["env_step"], r["reconstruction"]) for r in train if r["reconstruction"] is not None]
    if not values:
        return {"first": None, "latest": None}
    k = max(1, len(values) // 10)  # means over the first and last tenth of the logged episodes
    return {"first": round(float(np.mean([v for _, v in values[:k]])), 3),
            "latest": round(float(np.mean([v for _, v in values[-k:]])), 3),
            "first_env_step": values[0][0], "latest_env_step": values[-1][0]}


# -- report ----------------------------------------------------------------------------------


# Settings a recipe fixes; a run that changed any of them is not that recipe's benchmark.
RECIPE_KEYS = ("model", "action_repeat", "batch_size", "chunk_length", "collect_interval", "lr", "adam_eps",
               "free_nats", "behavior", "plan_value", "exploration_noise", "seed_episodes", "max_episode_steps")


def recipe_differences(config: dict[str, Any], recipe: str, mode: str) -> dict[str, Any]:
    """The run's settings that differ from its recipe's (quick-check or demonstration flags),
    as {name: the run's value}. Settings a checkpoint does not record count as the defaults."""
    from training.run_files import config_defaults

    defaults = config_defaults(PlaNetTrainConfig)
    expected = {**defaults, **recipe_settings(recipe, mode)}
    used = {k: config.get(k, defaults[k]) for k in RECIPE_KEYS}
    return {k: v for k, v in used.items() if v != expected[k]}


def budget_note(info: dict[str, Any]) -> str:
    """'' for the papers' settings, else what the run changed (precision, imagination
    starts, joint angles read as (sin, cos))."""
    notes = []
    if info.get("precision", "float32") != "float32":
        notes.append(f"{info['precision']} actor-critic/planning")
    if info.get("imagine_starts") is not None:
        notes.append(f"{info['imagine_starts']} imagination starts")
    if info.get("angle_dims"):
        notes.append("joint angles as (sin, cos)")
    return f" [{', '.join(notes)}]" if notes else ""


RunKey = tuple[str, str, str, str]  # (task, obs, mode, recipe)


def _settings(info: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (info.get("differs_from_recipe") or {}).items()) or "other settings"


def earlier_state_runs(results: Path) -> dict[RunKey, dict[str, Any]]:
    """The state runs of the last report (planet_learning.json and .csv), as `read_run`
    returns them but with no training rows.

    A run folder can be missing here while its results stand (runs/ is not in git);
    `report` keeps such a run rather than dropping it. Each keeps the machine it was
    measured on. Pixel runs are not kept this way (their report needs the training log).
    """
    previous = read_json(results / f"{NAME}.json")
    evals: dict[RunKey, list[dict[str, Any]]] = {}
    for r in _read_csv(results / f"{NAME}.csv"):
        # Reports from before recipes had no recipe column: those runs are PlaNet's.
        evals.setdefault((r["task"], r["obs"], r["mode"], r.get("recipe") or "planet"), []).append(
            {"env_step": int(r["env_step"]), "mean_return": float(r["mean_return"]),
             "std_return": float(r["std_return"]), "returns": r["returns"], "wall_s": float(r["wall_s"])})  # fmt: skip
    runs = {}
    for task, summary in (previous.get("tasks") or {}).items():
        for name, m in (summary.get("modes") or {}).items():
            mode, recipe = m.get("mode", name), m.get("recipe", "planet")
            info = {k: v for k, v in m.items() if k not in ("latest_env_step", "latest_return", "return_100k")}
            info.setdefault("machine", previous.get("machine"))
            key = (task, "state", mode, recipe)
            info.update(evals=sorted(evals.get(key, []), key=lambda r: r["env_step"]), train=[], pictures=[])
            runs[key] = info
    return runs


def report(args: argparse.Namespace) -> None:
    runs_dir, results = Path(args.runs_dir), Path(args.results_dir)
    runs: dict[RunKey, dict[str, Any]] = {}
    earlier = earlier_state_runs(results)
    for task in TASKS:
        for obs in OBS:
            for recipe in RECIPES:
                for mode in MODES:
                    key = (task, obs, mode, recipe)
                    # A run reading the joint angles as (sin, cos) stands for the task when there is one.
                    info = None
                    if reads_sincos(task, obs, raw_angles=False):
                        info = read_run(run_dir(runs_dir, task, obs, mode, args.seed, recipe, sincos=True))
                    info = info or read_run(run_dir(runs_dir, task, obs, mode, args.seed, recipe))
                    if info is not None:
                        if info.get("config"):
                            info["differs_from_recipe"] = recipe_differences(info["config"], recipe, mode)
                            info["benchmark_configuration"] = not info["differs_from_recipe"]
                        runs[key] = info
                    elif key in earlier:
                        runs[key] = earlier[key]
                        print(f"{task} {obs} {label(mode, recipe)}: no run folder under {runs_dir}; kept the "
                              "earlier report's results")
    if not runs:
        raise SystemExit(f"error: no runs under {runs_dir} (looked for rssm-<task>-<obs>-<mode>[-<recipe>]-s{args.seed}/); "
                         "start one with `python benchmarks/planet_learning.py run --task ... --mode ...`")

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["task", "obs", "mode", "env_step", "mean_return", "std_return", "returns", "wall_s", "recipe"])
    for (task, obs, mode, recipe), info in runs.items():
        for r in info["evals"]:
            writer.writerow([task, obs, mode, r["env_step"], r["mean_return"], r["std_return"], r["returns"],
                             r["wall_s"], recipe])

    tasks: dict[str, Any] = {}
    for task in TASKS:
        modes: dict[str, Any] = {}  # keyed by label(mode, recipe)
        for (t, obs, mode, recipe), info in runs.items():
            if t != task or obs != "state":
                continue
            last = info["evals"][-1] if info["evals"] else None
            at = _at(info["evals"], TARGET_STEP)
            modes[label(mode, recipe)] = {
                "mode": mode,
                "recipe": recipe,
                "latest_env_step": None if last is None else last["env_step"],
                "latest_return": None if last is None else round(last["mean_return"], 1),
                "return_100k": None if at is None else round(at["mean_return"], 1),
                **{k: v for k, v in info.items() if k not in ("evals", "train", "config", "pictures")},
                "config": info.get("config"),
            }
        pixels: dict[str, Any] = {}
        for (t, obs, mode, recipe), info in runs.items():
            if t != task or obs != "pixels":
                continue
            last = info["evals"][-1] if info["evals"] else None
            pixels[label(mode, recipe)] = {
                "status": "finished" if info.get("config") and info.get("env_steps", 0) >= info["config"]["steps"]
                else "in progress",
                "env_steps": info.get("env_steps"),
                "target_steps": (info.get("config") or {}).get("steps"),
                "latest_return": None if last is None else round(last["mean_return"], 1),
                "returns": [(r["env_step"], round(r["mean_return"], 1)) for r in info["evals"]],
                "reconstruction_loss": _recon_summary(info["train"]),
                "pictures": len(info["pictures"]),
                "latest_pictures": info["pictures"][-2:],
                "planet_1m_reference": PLANET_PIXELS_1M[task],
                **{k: info.get(k) for k in ("env_steps_per_s", "wall_h", "split_fraction", "plan_budget", "batch",
                                              "differs_from_recipe")},
            }
        if not modes and not pixels:
            continue
        done = {m: s["return_100k"] for m, s in modes.items() if s["return_100k"] is not None}
        best = max(done, key=lambda m: done[m]) if done else None
        target = DREAMERV3_100K[task]
        tasks[task] = {
            "dreamerv3_100k": target,
            "best_mode_100k": best,
            "best_return_100k": None if best is None else done[best],
            "fraction_of_dreamerv3": None if best is None else round(done[best] / target, 3),
            "meets_dreamerv3": None if best is None else done[best] >= target,
            "modes": modes,
            "pixels": pixels,
        }

    results.mkdir(parents=True, exist_ok=True)
    json_path = results / f"{NAME}.json"
    previous = read_json(json_path)
    here = machine_info()
    for summary in tasks.values():
        for m in summary["modes"].values():
            m.setdefault("machine", here)  # carried-over runs keep the machine they ran on
    out = {
        "machine": here,
        "benchmark": "PlaNet RSSM (state, 100k env steps) acting by CEM, Dreamer actor, or CEM + actor proposals",
        "references": {"dreamerv3_state_100k": DREAMERV3_100K, "planet_pixels_1m": PLANET_PIXELS_1M},
        "tasks": tasks,
    }
    if "plan_time" in previous:
        out["plan_time"] = previous["plan_time"]  # written by `plan-time`; kept
    atomic_write_text(results / f"{NAME}.csv", buffer.getvalue())
    atomic_write_text(json_path, json.dumps(out, indent=2) + "\n")
    picture = plot(runs, results / f"{NAME}.png")
    for task, s in tasks.items():
        for mode, m in s["modes"].items():
            print(f"{task:17s} state  {mode:24s} {m['latest_return'] if m['latest_return'] is not None else '-':>7} "
                  f"at {m['latest_env_step'] or 0:>6} env steps; {m.get('env_steps_per_s', '?')} env steps/s"
                  f"{'' if m.get('benchmark_configuration', True) else ' (not the benchmark: ' + _settings(m) + ')'}"
                  f"{budget_note(m)}")
        for mode, p in s["pixels"].items():
            recon = p["reconstruction_loss"]
            print(f"{task:17s} pixels {mode:24s} {p['latest_return'] if p['latest_return'] is not None else '-':>7} "
                  f"at {p['env_steps']} of {p['target_steps']} env steps ({p['status']}); reconstruction "
                  f"{recon['first']} -> {recon['latest']}; {p['pictures']} pictures"
                  f"{'; ' + _settings(p) if p.get('differs_from_recipe') else ''}")
        best = s["best_mode_100k"]
        verdict = "no run at 100k yet" if best is None else (
            f"best {best} {s['best_return_100k']:.1f} = {s['fraction_of_dreamerv3']:.2f} x DreamerV3")
        print(f"{task:17s} DreamerV3 at 100k: {s['dreamerv3_100k']:.0f}; {verdict}")
    written = [f"{NAME}.csv", f"{NAME}.json"] + ([picture.name] if picture else [])
    print(f"wrote {', '.join(written)} in {results}/")


def plot(runs: dict[RunKey, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[plots]); skipped the PNG")
        return None
    tasks = [t for t in TASKS if any(k[0] == t for k in runs)]
    pixel_runs = {k: v for k, v in runs.items() if k[1] == "pixels" and any(r["reconstruction"] for r in v["train"])}
    panels = len(tasks) + (1 if pixel_runs else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.5), squeeze=False)
    colours = dict(zip(MODES, ("C0", "C1", "C2")))
    for ax, task in zip(axes[0], tasks):
        right = TARGET_STEP
        for (t, obs, mode, recipe), info in runs.items():
            if t != task or not info["evals"]:
                continue
            steps = [r["env_step"] / 1000 for r in info["evals"]]
            means = [r["mean_return"] for r in info["evals"]]
            right = max(right, info["evals"][-1]["env_step"])
            style = ":" if obs == "pixels" else ("-" if recipe == "planet" else "--")
            marker = "o" if recipe == "planet" else "s"
            ax.plot(steps, means, style, marker=marker, markersize=3, color=colours[mode],
                    label=label(mode, recipe) if obs == "state" else f"{label(mode, recipe)} (pixels)")
            if obs == "state":
                stds = [r["std_return"] for r in info["evals"]]
                ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=colours[mode], alpha=0.15)
        ax.axhline(DREAMERV3_100K[task], color="k", linestyle="--", linewidth=1, label="DreamerV3 state, 100k")
        if any(k[0] == task and k[1] == "pixels" for k in runs):
            ax.axhline(PLANET_PIXELS_1M[task], color="grey", linestyle=":", linewidth=1, label="PlaNet pixels, 1M")
        ax.set_title(f"{task} (PlaNet RSSM)")
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylim(0, 1000)
        ax.set_xlim(0, right / 1000)
        ax.legend(loc="upper left", fontsize=7)
    # Runs may evaluate on different episode counts (quick checks use fewer); name them all.
    episode_counts = sorted({int(info["config"]["eval_episodes"]) for info in runs.values()
                             if (info.get("config") or {}).get("eval_episodes")})  # fmt: skip
    counts = " or ".join(str(n) for n in episode_counts) or "10"
    axes[0][0].set_ylabel(f"evaluation return ({counts} episodes)")
    if pixel_runs:
        ax = axes[0][-1]
        for (task, _, mode, recipe), info in pixel_runs.items():
            points = [(r["env_step"] / 1000, r["reconstruction"]) for r in info["train"] if r["reconstruction"]]
            ax.plot(*zip(*points), marker=".", label=f"{task} {label(mode, recipe)}")
        ax.set_title("pixel runs: reconstruction loss")
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylabel("per-episode mean of the updates")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


# -- plan time -------------------------------------------------------------------------------


def plan_time(args: argparse.Namespace) -> None:
    import envs
    from models.rssm import RSSM
    from planners import CEM, MPCController

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.run)
    state = _training_state(folder)
    config = dict(state["train_config"])
    env = envs.make(config["task"], obs=config["obs"], seed=args.seed, action_repeat=config.get("action_repeat"),
                    action_repeat_preset="planet")  # fmt: skip
    action_dim = int(env.action_space.shape[0])
    try:  # the checkpoint's own copy of the model (a folder may hold checkpoint.pt alone)
        model = RSSM.from_checkpoint(state["model_state"], obs_shape=tuple(env.observation_space.shape), action_dim=action_dim)
    except ValueError as error:
        raise SystemExit(f"error: {folder / 'checkpoint.pt'}: {error}") from None
    model = model.eval()
    planner = CEM.planet(action_dim)  # PlaNet's preset, whatever budget the run trained with
    controller = MPCController(model, planner, objective="reward", discount=1.0, use_value=False, device="cpu",
                               seed=args.seed, precision=args.precision)  # fmt: skip
    obs, _ = env.reset(seed=args.seed)
    controller.reset()
    times: list[float] = []
    bar = None
    if progress_wanted(args):
        from tqdm import tqdm

        bar = tqdm(total=args.warmup + args.steps, unit="plan", desc="plan-time")
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            action = controller.act(obs)
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times.append(elapsed)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset(seed=args.seed + i + 1)
                controller.reset()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    env.close()
    c = planner.config
    ms = sorted(1000 * t for t in times)
    entry = {
        "run": folder.name,
        "task": config["task"],
        "obs": config["obs"],
        "model": config.get("model"),
        "model_env_steps": int(state["train_rows"][-1]["env_step"]) if state.get("train_rows") else 0,
        "planner": {"name": "CEM.planet", "num_samples": c.num_samples, "num_elites": c.num_elites,
                    "iterations": c.iterations, "horizon": c.horizon},
        "precision": args.precision,
        "steps_timed": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p10_ms": round(ms[len(ms) // 10], 1),
        "p90_ms": round(ms[min(len(ms) - 1, (9 * len(ms)) // 10)], 1),
        "mean_ms": round(float(np.mean(ms)), 1),
        "machine": machine_info(),
    }
    results = Path(args.results_dir)
    json_path = results / f"{NAME}.json"
    data = read_json(json_path)
    key = folder.name if args.precision == "float32" else f"{folder.name}/{args.precision}"
    data.setdefault("plan_time", {})[key] = entry
    atomic_write_text(json_path, json.dumps(data, indent=2) + "\n")
    print(f"{key}: CEM {c.num_samples} x {c.iterations} it x horizon {c.horizon} ({args.precision}): median "
          f"{entry['median_ms']} ms per planning step over {len(ms)} steps (p10 {entry['p10_ms']}, p90 "
          f"{entry['p90_ms']}; {entry['machine']['torch_threads']} threads); into {json_path}")


# -- export ----------------------------------------------------------------------------------


def _training_state(folder: Path) -> dict[str, Any]:
    """A run folder's checkpoint.pt, checked to be an RSSM training checkpoint."""
    from training.run_export import read_training_checkpoint

    try:
        return read_training_checkpoint(folder, model="rssm")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def export(args: argparse.Namespace) -> None:
    """Write model.pt (and behavior.pt, for the actor modes) from a run's checkpoint.pt, as
    the trainer does at every save (`training.run_export.write_acting_files`), for a folder
    that holds checkpoint.pt alone; `run_planning.py --model rssm` acts from those files."""
    from training.run_export import env_steps, write_acting_files

    state = _training_state(Path(args.run))
    written = write_acting_files(state, Path(args.run))
    print(f"wrote {', '.join(str(w) for w in written)} (the model at {env_steps(state)} env steps)")


def ship(args: argparse.Namespace) -> None:
    """Copy a run's model (and actor-critic) into checkpoints/rssm-<task>/ with the run's
    settings in train_config.json (`training.run_export.ship_rssm_run`), which
    `run_planning.py --model rssm` reads for the action repeat and --plan-value."""
    from training.run_export import ship_rssm_run

    _training_state(Path(args.run))  # a clear error for a folder that is not an RSSM run
    written = ship_rssm_run(args.run, args.checkpoints_dir,
                            command=f"python benchmarks/planet_learning.py ship --run {args.run}")  # fmt: skip
    sizes = ", ".join(f"{w.name} {w.stat().st_size / 1e6:.1f} MB" for w in written)
    print(f"{written[0].parent}: {sizes}")


# -- command line ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("run", help="train (or resume) one task, observation type and mode", formatter_class=fmt)
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--mode", required=True, choices=MODES,
                   help="act by CEM over the RSSM, by the Dreamer actor, or by CEM with the actor's proposals")
    p.add_argument("--obs", default="state", choices=OBS)
    p.add_argument("--recipe", default="planet", choices=RECIPES,
                   help="planet: PlaNet's model and loop; dreamer: DreamerV3's regime (discrete latents, action "
                        "repeat 2, 16 x 64 batches, train ratio 512, V3 actor-critic, critic value in CEM); "
                        "runs of other recipes live in their own folders")
    p.add_argument("--action-repeat", type=int, default=None,
                   help="env steps per agent step (default: the recipe's: PlaNet's table, or 2)")
    p.add_argument("--steps", type=int, default=TARGET_STEP, help="env steps (action repeat included)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plan-samples", type=int, default=None, help="CEM candidates (default PlaNet's 1000, top 10%%)")
    p.add_argument("--plan-iterations", type=int, default=None, help="CEM iterations (default PlaNet's 10)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="actor-critic updates and CEM model calls (the world model trains in float32)")
    p.add_argument("--imagine-starts", type=int, default=None,
                   help="actor-critic imagination starts per update (default all 2500, Dreamer v1; DreamerV3: 1024)")
    p.add_argument("--eval-every", type=int, default=10_000, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--raw-angles", action="store_true",
                   help="state runs: the task's joint angles (reacher's) as they are, not as (sin, cos)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--cuda-graph", action="store_true",
                   help="on a GPU, record the whole update as one CUDA graph (training.update_graphs)")
    p.add_argument("--runs-dir", default=str(RUNS), help="where run folders live")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")
    quick = p.add_argument_group("quick checks only (the benchmark uses the defaults)")
    quick.add_argument("--model", default=None, choices=("planet", "dreamerv2", "dreamerv3", "tiny"),
                       help="RSSM preset (default: the recipe's)")
    quick.add_argument("--max-episode-steps", type=int, default=None, help="cut episodes to this many agent steps")
    quick.add_argument("--collect-interval", type=int, default=None, help="updates per episode (PlaNet: 100)")
    quick.add_argument("--batch-size", type=int, default=None, help="sequences per batch (PlaNet: 50)")
    quick.add_argument("--chunk-length", type=int, default=None, help="steps per sequence (PlaNet: 50)")
    quick.add_argument("--seed-episodes", type=int, default=None, help="random episodes first (PlaNet: 5)")

    p = sub.add_parser("report", help="curves, table, throughput and pixel-run status from the runs",
                       formatter_class=fmt)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", default=str(RUNS))
    p.add_argument("--results-dir", default=str(RESULTS))

    p = sub.add_parser("plan-time", help="time PlaNet's CEM preset on a trained RSSM", formatter_class=fmt)
    p.add_argument("--run", required=True, help="a run folder (with checkpoint.pt)")
    p.add_argument("--steps", type=int, default=20, help="planning steps timed")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="the RSSM's matrix products while planning (MPCController precision)")
    p.add_argument("--warmup", type=int, default=2, help="planning steps run first and not timed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("export", help="write model.pt (and behavior.pt) from a run's checkpoint.pt",
                       formatter_class=fmt)
    p.add_argument("--run", required=True, help="a run folder (with checkpoint.pt)")

    p = sub.add_parser("ship", help="copy a run's model (and actor-critic) to checkpoints/rssm-<task>/",
                       formatter_class=fmt)
    p.add_argument("--run", required=True, help="a run folder (with checkpoint.pt)")
    p.add_argument("--checkpoints-dir", default=str(CHECKPOINTS))

    args = parser.parse_args()
    for name in ("steps", "warmup", "plan_samples", "plan_iterations", "eval_every", "eval_episodes", "action_repeat"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} {value} must be at least {0 if name == 'warmup' else 1}")
    {"run": run, "report": report, "plan-time": plan_time, "export": export, "ship": ship}[args.command](args)


if __name__ == "__main__":
    main()
