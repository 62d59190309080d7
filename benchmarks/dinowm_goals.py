#!/usr/bin/env python
"""DINO-WM goal-image MPC (Zhou et al., 2024) on our goal tasks, beside the true-physics oracle.

    python benchmarks/dinowm_goals.py collect --task reacher-pose              # 3000 x 100 steps (resumes)
    python benchmarks/dinowm_goals.py train --task reacher-pose \
        --encoder-weights dinov2_vits14_pretrain.pth                           # cpu preset, 100 epochs (resumes)
    python benchmarks/dinowm_goals.py evaluate --task reacher-pose             # 50 held-out goals, CEM
    python benchmarks/dinowm_goals.py collect --task point_mass-goal
    python benchmarks/dinowm_goals.py train --task point_mass-goal --encoder-weights dinov2_vits14_pretrain.pth
    python benchmarks/dinowm_goals.py evaluate --task point_mass-goal
    python benchmarks/dinowm_goals.py report                                   # markdown table from the JSON

`collect` writes DINO-WM's offline data set (`training.collection.collect`: pixel
trajectories; uniform random actions as the paper for reacher-pose, a noisy planner for
point_mass-goal, see below) into
<runs-dir>/dinowm-<task>/data/ (resumable shard by shard; images rendered at the preset's
size: cpu 112 px, paper 196 px). `train` trains the predictor on the frozen encoder's
cached features (`training.dino_wm_trainer`, resumable) into <runs-dir>/dinowm-<task>/
(model.pt, checkpoint.pt, train.csv, val.csv); presets other than cpu use
<runs-dir>/dinowm-<task>-<preset>/. Without --encoder-weights the frozen encoder is a
randomly initialised ViT-S/14 (NOT DINOv2's features; the results say so). Nothing is
downloaded: the official `dinov2_vits14_pretrain.pth` must be a local file.

`evaluate` draws held-out goals with `sample_goals(dataset, offset=25)` (a start and the
state 25 env steps later on a held-out trajectory, the paper's protocol), resets each env
with its trajectory's seed (`goal_reset_seeds`), and runs receding-horizon MPC to the
goal image with DINO-WM (CEM, horizon 5: the paper's 300 samples, top 30, 30 iterations
with --preset paper; our CPU budget of 100 samples, top 10, 10 iterations with the cpu
preset, `training.goal_mpc.dinowm_cpu_budget`; flags override either; DINO-WM's feature
distance at the last predicted frame, the paper's, or averaged over the frames with
--objective all) and with the oracle (`evaluate_goals("oracle")`: the simulator itself,
same planner budget, horizon 25 agent steps, the goal distance averaged over the horizon:
--oracle-objective all) on the SAME goals. It records the success rate (goal met at the
end of --env-steps), the reach rate, the mean plan time per planning call, the encoder
used, and writes <results-dir>/dinowm_goals.json (entries keyed
"<task>/<planner>[/all][/rest][/pos][/a<alpha>]/<N>steps": "/all" for --objective all, "/rest" for
--goal-at-rest, "/pos" for --proprio-positions, "/a1" for --alpha 1 (the default 0.1 adds nothing),
N the predictor's training steps, read from the model file; other entries
kept), dinowm_goals.csv (one row per entry and method) and
dinowm_goal_<task>[-all][-rest][-pos][-a<alpha>]-<N>steps.png (start | goal | final of one goal DINO-WM
reached; the per-goal pictures and records stay in <run>/eval-<planner><same suffix>/).
Training a model further (`train` again with a larger --train-steps) therefore adds rows
instead of replacing them; copy model.pt first to keep the shorter-trained predictor for
`evaluate --model`. --goal-at-rest gives DINO-WM the goal's proprio
with zero joint velocities (the goal pose at rest, not the speed the arm had there in the
random-action data). `evaluate` resumes: every finished goal is saved in
<run>/eval-<planner><suffix>/partial-dinowm.json (the oracle's in
<run>/eval-<planner>-oracle/partial-oracle.json, shared by every variant), and running the
same command again goes on from the next goal (records made with another model file or
other settings are discarded, with a warning). References: DINO-WM's published 0.92
on Reach (= reacher-pose; DreamerV3 0.64 there) and our targets for the CPU configuration:
>= 0.9 on point_mass-goal, >= 0.8 on reacher-pose.

Goals already reached at the start, and point_mass data (our choices, documented). With
uniform random actions the point mass barely moves: in a smoke data set (30 x 30 steps)
93% of (t, t + 25) pairs were within the 0.025 m success threshold (median 1.2 cm), so most
"goals" are met by doing nothing, and the rest only just miss. Therefore:
- point_mass-goal is collected with `--policy noisy_planner` by default (iCEM over the
  physics steering to each episode's own goal, plus Normal(0, 0.3) noise): 0% of pairs
  started within the threshold (median 8.6 cm), at about twice the collection time of
  random actions (~55 vs ~30 ms per step on this CPU). reacher-pose keeps the paper's
  random policy (its arm moves enough: 0 of 120 pairs of a smoke data set started reached).
- `evaluate` draws a larger pool, reports the fraction of the pool that starts already
  reached (success at the start state, the env's own test) and evaluates on the first
  --goals goals that do NOT, for both tasks and for DINO-WM and the oracle alike
  (--include-reached keeps the paper's unfiltered draw).

Quick check of the machinery (tiny model, numbers meaningless; never into runs/):

    python benchmarks/dinowm_goals.py collect --task reacher-pose --preset tiny --trajectories 20 --steps 30 \
        --runs-dir /tmp/dinowm-smoke
    python benchmarks/dinowm_goals.py train --task reacher-pose --preset tiny --train-steps 20 --runs-dir /tmp/dinowm-smoke
    python benchmarks/dinowm_goals.py evaluate --task reacher-pose --preset tiny --goals 3 --env-steps 10 \
        --samples 16 --elites 4 --iterations 2 --runs-dir /tmp/dinowm-smoke --results-dir /tmp/dinowm-smoke/results
    python benchmarks/dinowm_goals.py report --results-dir /tmp/dinowm-smoke/results
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_copy, atomic_write_text, read_json  # noqa: E402
from training.goal_mpc import DEFAULT_ALPHA  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
NAME = "dinowm_goals"
TASKS = ("point_mass-goal", "reacher-pose")
PRESETS = ("cpu", "paper", "tiny")
PLANNERS = ("cem", "mppi", "icem")
OFFSET = 25  # env steps from start to goal (the paper's)
# Success-rate targets for our CPU configuration (cpu preset and CPU CEM budget).
TARGETS = {"point_mass-goal": 0.9, "reacher-pose": 0.8}
# Published success rates (ANCHORS section 2): DINO-WM and DreamerV3 on "Reach" (DMC reacher,
# whole-arm pose) = our reacher-pose. DINO-WM has no DMC point_mass task (its PointMaze, 0.98,
# is another environment).
# Collection policy per task (see the module docstring: random point_mass data barely moves).
DEFAULT_POLICY = {"point_mass-goal": "noisy_planner", "reacher-pose": "random"}
PUBLISHED = {"reacher-pose": {"dinowm": 0.92, "dreamerv3": 0.64}}


# -- files -------------------------------------------------------------------------------------


def run_dir(args: argparse.Namespace) -> Path:
    suffix = "" if args.preset == "cpu" else f"-{args.preset}"
    return Path(args.runs_dir) / f"dinowm-{args.task}{suffix}"


def progress_wanted(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def open_dataset(args: argparse.Namespace) -> Any:
    from training.datasets import OfflineDataset

    data = run_dir(args) / "data"
    try:
        return OfflineDataset(data)
    except FileNotFoundError:
        raise SystemExit(f"error: no data set at {data}; collect it first: python benchmarks/dinowm_goals.py "
                         f"collect --task {args.task} --preset {args.preset} --runs-dir {args.runs_dir}") from None
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


# -- collect -----------------------------------------------------------------------------------


def collect_data(args: argparse.Namespace) -> None:
    from models.dino_wm import DinoWMConfig
    from training.collection import CollectConfig, collect

    image_size = getattr(DinoWMConfig, args.preset)(1, 1).image_size
    data = run_dir(args) / "data"
    policy = args.policy or DEFAULT_POLICY[args.task]
    try:
        config = CollectConfig(task=args.task, num_trajectories=args.trajectories, steps=args.steps,
                               image_size=image_size, policy=policy, seed=args.seed)  # fmt: skip
        print(f"collecting {args.trajectories} x {args.steps} steps of {args.task} ({policy} policy, "
              f"{image_size} px) into {data}/", flush=True)
        start = time.perf_counter()
        dataset = collect(config, data, progress=progress_wanted(args))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"{dataset} complete ({time.perf_counter() - start:.0f} s this call)")


# -- train ---------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> None:
    from training.dino_wm_trainer import DinoWMTrainConfig, DinoWMTrainer

    set_threads(args)
    dataset = open_dataset(args)
    out = run_dir(args)
    try:
        config = DinoWMTrainConfig(dataset=str(dataset.root), preset=args.preset, epochs=args.epochs,
                                   steps=args.train_steps, batch_size=args.batch_size, seed=args.seed,
                                   encoder_weights=args.encoder_weights, device=args.device,
                                   encoder_precision=args.encoder_precision)  # fmt: skip
        trainer = DinoWMTrainer(config, out, progress=progress_wanted(args))
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    encoder = Path(args.encoder_weights).name if args.encoder_weights else "random frozen encoder (not DINOv2's)"
    print(f"training dinowm ({args.preset}) on {dataset}: {trainer.total_steps} steps "
          f"({trainer.steps_per_epoch} per epoch), encoder {encoder}; run folder {out}/", flush=True)
    rows = trainer.run()
    val = rows[-1] if rows else {}
    print(f"done: step {trainer.step}, val loss {val.get('val_loss')}; model {trainer.model_path}")


# -- evaluate ------------------------------------------------------------------------------------


def draw_goals(dataset: Any, task: str, count: int, seed: int, include_reached: bool) -> tuple[Any, dict[str, Any]]:
    """`count` held-out goals (OFFSET steps ahead), dropping the ones met at the start
    unless `include_reached` (`training.datasets.sample_unmet_goals`); returns the goals
    and how they were chosen."""
    from training.datasets import sample_unmet_goals

    try:
        goals, chosen = sample_unmet_goals(dataset, count, seed=seed, offset=OFFSET, include_met=include_reached,
                                           task=task)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    info = {
        "source": "sample_goals(dataset, offset=25): held-out trajectories (last 10%)",
        "offset": OFFSET,
        "seed": seed,
        "pool": chosen["pool"],
        "pool_already_reached_fraction": chosen["pool_already_reached_fraction"],
        "filtered": chosen["filtered"],
        "note": ("goals met at the start (success at the start state) are left out; the pool fraction says how "
                 "many the paper's protocol would count" if not include_reached else
                 "unfiltered, as the paper; goals met at the start are counted"),
        "evaluated_already_reached": chosen["evaluated_already_reached"],
    }
    return goals, info


def encoder_description(model_path: Path, override: str | None) -> dict[str, Any]:
    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    encoder = ckpt.get("encoder") or {}
    weights = override or encoder.get("weights")
    if weights:
        return {"kind": "DINOv2 weights", "weights": Path(weights).name, "name": encoder.get("name")}
    return {"kind": "random frozen", "weights": None, "name": encoder.get("name"),
            "seed": ckpt.get("random_encoder_seed"), "note": "randomly initialised ViT: not DINOv2's features"}


def _summary(records: list[Any]) -> dict[str, Any]:
    from training.goal_mpc import summarise_goals

    s = summarise_goals(records)
    calls = sum(r.plan_calls for r in records)
    s["plan_calls"] = calls
    s["mean_plan_ms_per_call"] = round(sum(r.mean_plan_ms * r.plan_calls for r in records) / calls, 1) if calls else None
    s["mean_min_distance"] = float(np.mean([r.min_distance for r in records]))
    s["wall_s"] = round(sum(r.wall_s for r in records), 1)  # summed per goal: right after a resume too
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()}


def evaluate(args: argparse.Namespace) -> None:
    from models.dino_wm import load_trained_dinowm
    from training.goal_mpc import GoalEvalConfig, dinowm_cpu_budget, evaluate_goals, goal_reset_seeds

    set_threads(args)
    folder = run_dir(args)
    model_path = Path(args.model) if args.model else folder / "model.pt"
    if not model_path.is_file():
        raise SystemExit(f"error: no trained model at {model_path}; train it first: python benchmarks/dinowm_goals.py "
                         f"train --task {args.task} --preset {args.preset} --runs-dir {args.runs_dir}")
    train_steps = model_train_steps(model_path)
    dataset = open_dataset(args)
    try:
        model = load_trained_dinowm(model_path, encoder_weights=args.encoder_weights, device=args.device)
        budget = {k: getattr(args, k) for k in ("horizon", "num_samples", "num_elites", "iterations")
                  if getattr(args, k) is not None}  # fmt: skip
        if args.preset == "cpu":  # our CPU budget (100 x 10) unless flags say otherwise
            budget = dinowm_cpu_budget(**budget)
        config = GoalEvalConfig.for_dataset(
            dataset, planner=args.planner, env_steps=args.env_steps, seed=args.seed, precision=args.precision,
            objective=args.objective, oracle_objective=args.oracle_objective, goal_at_rest=args.goal_at_rest,
            proprio_positions=args.proprio_positions, alpha=args.alpha, **budget,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    goals, selection = draw_goals(dataset, args.task, args.goals, args.seed, args.include_reached)
    seeds = goal_reset_seeds(goals, dataset)
    encoder = encoder_description(model_path, args.encoder_weights)
    # DINO-WM's records per objective ("last", the paper's, adds nothing to the names), goal
    # variant and predictor training length, so a longer-trained model gets rows of its own;
    # the oracle's depend on none of them, so every variant shares them.
    suffix = variant_suffix(config.objective, config.goal_at_rest, config.proprio_positions, train_steps, config.alpha)
    out = folder / f"eval-{args.planner}{suffix}"
    oracle_partial = folder / f"eval-{args.planner}-oracle" / "partial-oracle.json"
    print(f"{args.task}: {len(goals)} goals ({selection['pool_already_reached_fraction']:.0%} of a pool of "
          f"{selection['pool']} start already reached{'; left out' if selection['filtered'] else ''}), planner "
          f"{config.planner} ({config.num_samples} samples, {config.iterations} it, horizon {config.horizon}, objective "
          f"{config.objective_description}), "
          f"{config.env_steps} env steps each, encoder {encoder['weights'] or 'random frozen'}, predictor "
          f"{model_path} ({train_steps} training steps)", flush=True)

    # Each finished goal is saved in <out>/partial-<method>.json, so a killed evaluation goes
    # on from the next goal (the records are kept only if the model file and settings match).
    model_hash = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    records = evaluate_goals(model, goals, config, progress=progress_wanted(args), frames_dir=out / "frames",
                             reset_seeds=seeds, resume_file=out / "partial-dinowm.json",
                             run_identity={"model_sha256": model_hash})  # fmt: skip
    results = {"dinowm": _summary(records)}
    per_goal = {"dinowm": [r.as_dict() for r in records]}
    if not args.no_oracle:
        oracle = evaluate_goals("oracle", goals, config, progress=progress_wanted(args), reset_seeds=seeds,
                                resume_file=oracle_partial)  # fmt: skip
        results["oracle"] = _summary(oracle)
        per_goal["oracle"] = [r.as_dict() for r in oracle]
    atomic_write_text(out / "records.json", json.dumps(per_goal, indent=1) + "\n")

    # The picture: the first goal DINO-WM met at the end (else one it touched, else goal 0).
    pick = next((r for r in records if r.success), None) or next((r for r in records if r.reached), records[0])
    if not pick.success:
        print(f"note: DINO-WM met no goal at the end; the picture shows goal {pick.goal} "
              f"({'touched on the way' if pick.reached else 'not reached'})")
    results_dir = Path(args.results_dir)
    picture = results_dir / f"dinowm_goal_{args.task}{suffix}.png"
    if pick.picture:
        atomic_copy(Path(pick.picture), picture)

    state_path = folder / "checkpoint.pt"
    run_facts = {}
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        # The validation loss at the evaluated model's step (the run may have gone on since).
        val = [row for row in state["val_rows"] if int(row["step"]) == train_steps]
        run_facts = {"preset": state["run"].get("preset"), "val_loss": val[-1].get("val_loss") if val else None}
    collect_config = dataset.manifest.get("config", {})
    entry = {
        "task": args.task,
        "planner": config.planner,
        "goals": len(goals),
        "dinowm": results["dinowm"],
        "oracle": results.get("oracle"),
        "target": TARGETS[args.task],
        "meets_target": results["dinowm"]["success_rate"] >= TARGETS[args.task],
        "published": PUBLISHED.get(args.task),
        "encoder": encoder,
        "model": {"run": folder.name, "file": str(model_path), **run_facts, "train_steps": train_steps,
                  "image_size": model.config.image_size,
                  "frameskip": model.config.frameskip, "history": model.config.history},
        "dataset": {k: collect_config.get(k) for k in ("num_trajectories", "steps", "policy", "image_size", "seed")},
        "goal_selection": selection,
        "eval_config": config.as_dict(),
        "picture": {"file": picture.name if pick.picture else None, "goal": pick.goal, "success": pick.success,
                    "reached": pick.reached},
        "records": str(out / "records.json"),
        "machine": machine_info(),
    }
    json_path = results_dir / f"{NAME}.json"
    data = read_json(json_path)
    data.update({"benchmark": "DINO-WM goal-image MPC vs the true-physics oracle on the same held-out goals",
                 "targets_cpu_configuration": TARGETS, "published": PUBLISHED})
    data.setdefault("entries", {})[f"{args.task}/{config.planner}{suffix.replace('-', '/')}"] = entry
    atomic_write_text(json_path, json.dumps(data, indent=2) + "\n")
    atomic_write_text(results_dir / f"{NAME}.csv", entries_csv(data["entries"]))
    print(markdown_table(data["entries"]))
    print(f"wrote {NAME}.json, {NAME}.csv{', ' + picture.name if pick.picture else ''} in {results_dir}/; "
          f"per-goal records and pictures in {out}/")


# -- tables ---------------------------------------------------------------------------------------


CSV_COLUMNS = ("task", "planner", "objective", "train_steps", "method", "goals", "success_rate", "reached_rate", "mean_start_distance",
               "mean_final_distance", "mean_plan_ms_per_call", "wall_s", "encoder", "target",
               "pool_already_reached_fraction")


def model_train_steps(model_path: Path) -> int:
    """The optimiser steps the predictor in `model_path` (a trainer's model.pt) was trained for."""
    ckpt = torch.load(model_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "train_steps" not in ckpt:
        raise SystemExit(f"error: {model_path} records no train_steps; pass a model.pt written by "
                         "`dinowm_goals.py train` (training.dino_wm_trainer)")
    return int(ckpt["train_steps"])


def variant_suffix(objective: str, goal_at_rest: bool, proprio_positions: bool, train_steps: int,
                   alpha: float = DEFAULT_ALPHA) -> str:
    """What names an evaluation's folder, picture and entry key apart from the task and planner:
    "[-all][-rest][-pos][-a<alpha>]-<N>steps" ("last", the paper's objective, and the default
    alpha 0.1 add nothing, so the names of earlier results stay as they were)."""
    return (("" if objective == "last" else f"-{objective}") + ("-rest" if goal_at_rest else "")
            + ("-pos" if proprio_positions else "") + ("" if alpha == DEFAULT_ALPHA else f"-a{alpha:g}")
            + f"-{train_steps}steps")


def entries_csv(entries: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in entries.values():
        for method in ("dinowm", "oracle"):
            s = e.get(method)
            if not s:
                continue
            objective = objective_label(e, method)
            steps = e["model"]["train_steps"] if method == "dinowm" else ""  # the oracle has no predictor
            writer.writerow([e["task"], e["planner"], objective, steps, method, s["goals"], s["success_rate"], s["reached_rate"],
                             s["mean_start_distance"], s["mean_final_distance"], s["mean_plan_ms_per_call"],
                             s["wall_s"], e["encoder"]["weights"] or "random frozen",
                             e["target"] if method == "dinowm" else "",
                             e["goal_selection"]["pool_already_reached_fraction"]])
    return buffer.getvalue()


def objective_label(entry: dict[str, Any], method: str = "dinowm") -> str:
    """An entry's objective as the table shows it: "last", "all", "all, goal at rest",
    "all, proprio positions"."""
    if method != "dinowm":
        return entry["eval_config"].get("oracle_objective", "last")
    from training.goal_mpc import describe_objective

    settings = entry["eval_config"]
    return describe_objective(settings.get("objective", "last"), bool(settings.get("goal_at_rest")),
                              bool(settings.get("proprio_positions")),
                              settings.get("alpha") if settings.get("use_proprio", True) else None)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown_table(entries: dict[str, Any]) -> str:
    lines = [
        "| task | planner | objective | predictor steps | encoder | goals | DINO-WM success | oracle success | DINO-WM plan ms/call "
        "| target (CPU) | published DINO-WM | start reached (pool) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries.values():
        oracle = e.get("oracle") or {}
        published = (e.get("published") or {}).get("dinowm")
        lines.append(
            f"| {e['task']} | {e['planner']} | {objective_label(e)} | {e['model']['train_steps']} "
            f"| {e['encoder']['weights'] or 'random frozen'} | {e['goals']} "
            f"| {_pct(e['dinowm']['success_rate'])} | {_pct(oracle.get('success_rate'))} "
            f"| {e['dinowm']['mean_plan_ms_per_call']} | >= {_pct(e['target'])} "
            f"| {_pct(published) if published is not None else 'n/a'} "
            f"| {_pct(e['goal_selection']['pool_already_reached_fraction'])}"
            f"{' (left out)' if e['goal_selection']['filtered'] else ''} |"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace) -> None:
    path = Path(args.results_dir) / f"{NAME}.json"
    data = read_json(path)
    if not data.get("entries"):
        raise SystemExit(f"error: no evaluations in {path}; run `python benchmarks/dinowm_goals.py evaluate --task ...`")
    print(markdown_table(data["entries"]))
    machines = {e["machine"].get("cpu") for e in data["entries"].values()}
    print(f"\nReach (reacher-pose) published: DINO-WM 0.92, DreamerV3 0.64. Machine(s): {', '.join(sorted(machines))}.")


# -- command line ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", required=True, choices=TASKS)
        p.add_argument("--preset", default="cpu", choices=PRESETS,
                       help="model size (cpu: 112 px pooled to 16 tokens, history 1, depth 4; paper: 196 px, "
                       "history 3, depth 6, for a GPU; tiny: checks)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--runs-dir", default=str(RUNS), help="where run folders live")
        p.add_argument("--no-progress", action="store_true", help="no progress bars (shown only on a terminal)")

    p = sub.add_parser("collect", help="collect the offline data set (resumes)", formatter_class=fmt)
    common(p)
    p.add_argument("--trajectories", type=int, default=3000, help="trajectories (DINO-WM's Reacher set: 3000)")
    p.add_argument("--steps", type=int, default=100, help="agent steps per trajectory (DINO-WM: 100)")
    p.add_argument("--policy", default=None, choices=("random", "noisy_planner"),
                   help="random (the paper's) or noisy_planner (iCEM over the physics plus noise); default: "
                   + ", ".join(f"{t} {p}" for t, p in DEFAULT_POLICY.items()))

    p = sub.add_parser("train", help="train the predictor on cached frozen-encoder features (resumes)",
                       formatter_class=fmt)
    common(p)
    p.add_argument("--epochs", type=int, default=100, help="passes over the training windows (the paper: 100)")
    p.add_argument("--train-steps", type=int, default=None, help="optimiser steps instead of epochs (quick checks)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--encoder-weights", default=None,
                   help="local dinov2_vits14_pretrain.pth (default: a random frozen encoder, not DINOv2's features)")
    p.add_argument("--encoder-precision", default="float32", choices=("float32", "bfloat16"),
                   help="run the frozen encoder in bfloat16 autocast when caching features (~2.5x faster on AMX CPUs)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")

    p = sub.add_parser("evaluate", help="DINO-WM and the oracle on the same held-out goals", formatter_class=fmt)
    common(p)
    p.add_argument("--goals", type=int, default=50, help="goals evaluated (the paper: 50)")
    p.add_argument("--planner", default="cem", choices=PLANNERS)
    p.add_argument("--env-steps", type=int, default=50, help="env steps each goal gets")
    p.add_argument("--horizon", type=int, default=None, help="model steps planned (default DINO-WM's 5)")
    p.add_argument("--samples", dest="num_samples", type=int, default=None,
                   help="candidates (default: paper preset 300, cpu preset 100)")
    p.add_argument("--elites", dest="num_elites", type=int, default=None,
                   help="elites (default: paper preset 30, cpu preset 10)")
    p.add_argument("--iterations", type=int, default=None,
                   help="planner iterations (default: paper preset 30, cpu preset 10)")
    p.add_argument("--include-reached", action="store_true",
                   help="keep goals already met at the start (the paper's unfiltered draw)")
    p.add_argument("--objective", default="last", choices=("last", "all"),
                   help="DINO-WM's feature distance at the last predicted frame (the paper's) or averaged over them")
    p.add_argument("--goal-at-rest", action="store_true",
                   help="give DINO-WM the goal's proprio with zero joint velocities (the goal pose at rest)")
    p.add_argument("--proprio-positions", action="store_true",
                   help="compare only the joint positions in DINO-WM's proprio term (read back from the predicted "
                   "embeddings), not the velocities")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help="weight of DINO-WM's proprio term against the visual one; a value other than the default "
                   "is named in the results' folder, key and table")
    p.add_argument("--no-oracle", action="store_true", help="skip the oracle baseline")
    p.add_argument("--oracle-objective", default="all", choices=("all", "last"),
                   help="the oracle's goal distance: averaged over its horizon (all) or at its end (last)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                   help="the predictor's precision while planning (bfloat16 autocast; the oracle is unaffected)")
    p.add_argument("--encoder-weights", default=None, help="the weight file the model was trained with, if moved")
    p.add_argument("--model", default=None,
                   help="the predictor file to evaluate (default <run>/model.pt; e.g. a copy kept before training on)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--results-dir", default=str(RESULTS))

    p = sub.add_parser("report", help="print the markdown table from the JSON", formatter_class=fmt)
    p.add_argument("--results-dir", default=str(RESULTS))

    args = parser.parse_args()
    for name in ("trajectories", "steps", "epochs", "train_steps", "batch_size", "goals", "env_steps", "horizon",
                 "num_samples", "num_elites", "iterations"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = {"num_samples": "samples", "num_elites": "elites"}.get(name, name).replace("_", "-")
            parser.error(f"--{flag} {value} must be at least 1")
    commands = {"collect": collect_data, "train": train, "evaluate": evaluate, "report": report}
    commands[args.command](args)


if __name__ == "__main__":
    main()
