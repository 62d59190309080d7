#!/usr/bin/env python
"""TD-MPC2 learning curves with our TOLD, MPPI and trainer, beside the published returns.

    python benchmarks/told_learning.py run --task cartpole-swingup       # train (resumes)
    python benchmarks/told_learning.py evaluate --task cartpole-swingup  # its evaluations
    python benchmarks/told_learning.py evaluate --task cartpole-swingup --at 100000  # one point first
    python benchmarks/told_learning.py report                            # curves, table, speed
    python benchmarks/told_learning.py ship --task cartpole-swingup  # copy the model to checkpoints/

`run` trains state-based TOLD (1M size) for 100k env steps with TD-MPC2's settings and
evaluates 10 episodes every 10k env steps (ANCHORS sections 2-3). Evaluation is deferred:
`run` saves the model at each 10k point and `evaluate` runs the 10 evaluation episodes
with the full MPPI preset on those files, whenever (and wherever) there is compute for it;
on this CPU one evaluation costs about as much as 10k env steps of training, so this lets
training reach 100k sooner. The protocol is the same as evaluating inline. Runs live in
runs/told-<task>-state-s<seed>/ and resume after a kill. `report` reads every run there
and writes benchmarks/results/told_learning.{csv,json,png}: the curves, the return at
100k against TD-MPC2's published 100k returns (839, 937, 962), training throughput in env
steps per second and the split of wall time between planning, updates, env and evaluation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_copy, atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
CHECKPOINTS = ROOT / "checkpoints"

# TD-MPC2's published state-based returns at 100k env steps (mean of 3 seeds; ANCHORS 3).
PUBLISHED_100K = {"cartpole-swingup": 839.0, "reacher-easy": 937.0, "walker-walk": 962.0}
TASKS = tuple(PUBLISHED_100K)
# MPPI iterations while collecting; evaluation always uses the full TD-MPC2 preset (6).
# Collection planning is a third of the loop's time at 6 iterations on this CPU; see README.
COLLECT_ITERATIONS = 2


def run_dir(task: str, seed: int) -> Path:
    return RUNS / f"told-{task}-state-s{seed}"


def run(args: argparse.Namespace) -> None:
    from training.told_trainer import TOLDTrainConfig, TOLDTrainer

    config = TOLDTrainConfig(
        task=args.task, steps=args.steps, size=args.size, seed=args.seed, plan_iterations=args.collect_iterations,
        eval_at_start=False,  # the untrained agent's return is not worth a full evaluation here
        defer_evaluation=True,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = TOLDTrainer(config, run_dir(args.task, args.seed), progress=sys.stderr.isatty())
    trainer.run()


def evaluate(args: argparse.Namespace) -> None:
    from training.told_trainer import evaluate_snapshots

    if args.threads:
        torch.set_num_threads(args.threads)
    for task in args.task:
        if not (run_dir(task, args.seed) / "checkpoint.pt").exists():
            print(f"{task}: no run under {run_dir(task, args.seed)}; skipped")
            continue
        try:
            evaluate_snapshots(run_dir(task, args.seed), precision=args.precision, env_steps=args.at)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None


def read_run(path: Path) -> dict | None:
    from training.told_trainer import DEFERRED_EVAL_CSV

    if not (path / "checkpoint.pt").exists():
        return None
    rows = []
    for name in ("eval.csv", DEFERRED_EVAL_CSV):  # inline and deferred evaluations
        if (path / name).exists():
            with (path / name).open() as f:
                rows += [{"env_step": int(r["env_step"]), "mean_return": float(r["mean_return"]),
                          "std_return": float(r["std_return"]), "returns": r["returns"], "wall_s": float(r["wall_s"]),
                          "eval_s": float(r["eval_s"]) if r.get("eval_s") else None}
                         for r in csv.DictReader(f)]  # fmt: skip
    rows.sort(key=lambda r: r["env_step"])
    snapshots = sorted(int(p.stem.split("-")[1]) for p in (path / "snapshots").glob("model-*.pt"))
    info: dict = {"rows": rows, "snapshots_not_evaluated": [s for s in snapshots if s not in {r["env_step"] for r in rows}]}
    checkpoint = path / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        timers, config = dict(state["timers"]), dict(state["train_config"])
        action_repeat = 2 if config.get("action_repeat") is None else int(config["action_repeat"])
        env_steps = int(state["step"]) * action_repeat
        wall = float(state["wall"])
        train_wall = max(wall - timers["eval"], 1e-9)
        info.update(
            config=config,
            env_steps=env_steps,
            wall_h=round(wall / 3600, 2),
            env_steps_per_s=round(env_steps / train_wall, 2),
            split_s={k: round(v, 1) for k, v in timers.items()},
            split_fraction={k: round(v / wall, 3) for k, v in timers.items()},
            updates=int(state["updates"]),
            evaluations=len(rows),
            eval_s_per_evaluation=_mean_eval_s(rows, timers["eval"], len(state["eval_rows"])),
            update_ms=round(1000 * timers["update"] / max(int(state["updates"]), 1), 1),
            plan_ms_per_agent_step=round(1000 * timers["plan"] / max(int(state["step"]) - int(
                state["train_config"].get("seed_steps") or 2500), 1), 1),
        )
    return info


def _mean_eval_s(rows: list[dict], inline_eval_s: float, inline_count: int) -> float | None:
    """Wall seconds per evaluation: from the deferred rows' own timings, else the trainer's."""
    timed = [r["eval_s"] for r in rows if r["eval_s"] is not None]
    if timed:
        return round(sum(timed) / len(timed), 1)
    return round(inline_eval_s / inline_count, 1) if inline_count else None


def earlier_report() -> dict[str, dict]:
    """The tasks of the last report (told_learning.json and .csv), as `read_run` returns them.

    A run folder can be absent while its results stand (runs/ is not in git). `report`
    keeps such a task's results rather than dropping them. Its models that were saved and
    never evaluated are absent with the folder: they move from `snapshots_not_evaluated`
    to `snapshots_lost`, and the task keeps the machine it was measured on.
    """
    json_path, csv_path = RESULTS / "told_learning.json", RESULTS / "told_learning.csv"
    if not json_path.exists() or not csv_path.exists():
        return {}
    old = json.loads(json_path.read_text())
    rows: dict[str, list[dict]] = {}
    with csv_path.open() as f:
        for r in csv.DictReader(f):
            rows.setdefault(r["task"], []).append({
                "env_step": int(r["env_step"]), "mean_return": float(r["mean_return"]), "std_return": float(r["std_return"]),
                "returns": r["returns"], "wall_s": float(r["wall_s"]), "eval_s": None})  # fmt: skip
    tasks = {}
    for task, summary in old.get("tasks", {}).items():
        info = {k: v for k, v in summary.items() if k not in _SUMMARY_ONLY}
        info["snapshots_lost"] = sorted(set(info.pop("snapshots_not_evaluated", [])) | set(info.get("snapshots_lost", [])))
        info["snapshots_not_evaluated"] = []
        info.setdefault("machine", old.get("machine"))
        info["rows"] = sorted(rows.get(task, []), key=lambda r: r["env_step"])
        tasks[task] = info
    return tasks


# Keys `report` derives from the rows (recomputed, so not carried over from an earlier report).
_SUMMARY_ONLY = ("published_100k", "latest_eval_env_step", "latest_return", "return_100k", "fraction_of_published")


def report(args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {}
    earlier = earlier_report()
    for task in TASKS:
        info = read_run(run_dir(task, args.seed))
        if info is not None:
            runs[task] = info
        elif task in earlier:
            runs[task] = earlier[task]
            print(f"{task}: no run under {run_dir(task, args.seed)}; kept the earlier report's results")
    if not runs:
        raise SystemExit(f"no runs under {RUNS}; start one with `python benchmarks/told_learning.py run --task ...`")
    with (RESULTS / "told_learning.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "env_step", "mean_return", "std_return", "returns", "wall_s"])
        for task, info in runs.items():
            for r in info["rows"]:
                writer.writerow([task, r["env_step"], r["mean_return"], r["std_return"], r["returns"], r["wall_s"]])
    summary = {}
    for task, info in runs.items():
        last = info["rows"][-1] if info["rows"] else None
        at_100k = next((r for r in info["rows"] if r["env_step"] == 100_000), None)
        published = PUBLISHED_100K[task]
        summary[task] = {
            "published_100k": published,
            "latest_eval_env_step": None if last is None else last["env_step"],
            "latest_return": None if last is None else round(last["mean_return"], 1),
            "return_100k": None if at_100k is None else round(at_100k["mean_return"], 1),
            "fraction_of_published": None if at_100k is None else round(at_100k["mean_return"] / published, 3),
            **{k: v for k, v in info.items() if k != "rows"},
        }
    here = machine_info()
    for task in summary:
        summary[task].setdefault("machine", here)  # carried-over tasks keep the machine they ran on
    out = {"machine": here, "collect_iterations": COLLECT_ITERATIONS, "tasks": summary}
    atomic_write_text(RESULTS / "told_learning.json", json.dumps(out, indent=2) + "\n")
    table = markdown_table(runs, summary)
    atomic_write_text(RESULTS / "told_learning.md", table + "\n")
    print(table)
    plot(runs)
    for task, s in summary.items():
        latest = "no evaluation yet" if s["latest_return"] is None else (
            f"{s['latest_return']:.1f} at {s['latest_eval_env_step']} env steps")
        print(f"{task:18s} {latest} (TD-MPC2 at 100k: {s['published_100k']:.0f}); trained to "
              f"{s.get('env_steps', '?')} env steps at {s.get('env_steps_per_s', '?')} env steps/s")


def markdown_table(runs: dict, summary: dict) -> str:
    """Evaluation returns (mean +- std over 10 episodes) at each 10k point, as the README shows them."""
    points = list(range(10_000, 100_001, 10_000))
    lines = ["| task | " + " | ".join(f"{p // 1000}k" for p in points) + " | TD-MPC2 100k | trained to | train h |",
             "|---|" + "---|" * len(points) + "---|---|---|"]  # fmt: skip
    for task, info in runs.items():
        by_step = {r["env_step"]: r for r in info["rows"]}
        cells = []
        for point in points:
            if point in by_step:
                cells.append(f"{by_step[point]['mean_return']:.0f} +- {by_step[point]['std_return']:.0f}")
            elif point in info["snapshots_not_evaluated"]:
                cells.append("saved")  # the model at this point is saved, its evaluation not run yet
            elif point in info.get("snapshots_lost", []):
                cells.append("-")  # saved once, its file absent before it was evaluated
            else:
                cells.append("-")
        s = summary[task]
        train_h = "?" if s.get("wall_h") is None else f"{s['wall_h']:.1f}"
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {s['published_100k']:.0f} | {s.get('env_steps', '?')} | {train_h} |")
    return "\n".join(lines)


def plot(runs: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e .[plots]); skipped the PNG")
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, (task, info) in zip(axes[0], runs.items()):
        steps = [r["env_step"] / 1000 for r in info["rows"]]
        means = [r["mean_return"] for r in info["rows"]]
        stds = [r["std_return"] for r in info["rows"]]
        ax.plot(steps, means, marker="o", label="ours (TOLD 1M, MPPI)")
        ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.2)
        ax.axhline(PUBLISHED_100K[task], color="k", linestyle="--", label="TD-MPC2 at 100k")
        ax.set_title(task)
        ax.set_xlabel("env steps (thousands)")
        ax.set_ylim(0, 1000)
        ax.set_xlim(0, 100)
    axes[0][0].set_ylabel("evaluation return (10 episodes)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "told_learning.png", dpi=110)
    plt.close(fig)


def ship(args: argparse.Namespace) -> None:
    """Copy a run's model file to checkpoints/told-<task>.pt (model weights only)."""
    info = read_run(run_dir(args.task, args.seed))
    source = run_dir(args.task, args.seed) / "model.pt"
    if info is None or not source.exists():
        raise SystemExit(f"no finished run for {args.task} under {run_dir(args.task, args.seed)}")
    if info.get("env_steps", 0) < 100_000 and not args.partial:
        raise SystemExit(f"the {args.task} run is at {info.get('env_steps')} env steps; pass --partial to ship it anyway")
    CHECKPOINTS.mkdir(exist_ok=True)
    target = CHECKPOINTS / f"told-{args.task}.pt"
    atomic_copy(source, target)
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB) from {source}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train (or resume) one task")
    p_run.add_argument("--task", required=True, choices=TASKS)
    p_run.add_argument("--steps", type=int, default=100_000)
    p_run.add_argument("--size", default="1M")
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--collect-iterations", type=int, default=COLLECT_ITERATIONS)
    p_run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p_eval = sub.add_parser("evaluate", help="evaluate the saved 10k-point models that have no result yet")
    p_eval.add_argument("--task", nargs="+", default=list(TASKS), choices=TASKS)
    p_eval.add_argument("--seed", type=int, default=0)
    p_eval.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p_eval.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                        help="the model's precision while planning (float32 is TD-MPC2's protocol)")
    p_eval.add_argument("--at", type=int, nargs="+", default=None, metavar="ENV_STEP",
                        help="evaluate only these points (e.g. --at 100000 first); default: all without a result")
    p_report = sub.add_parser("report", help="curves, table and throughput from the runs")
    p_report.add_argument("--seed", type=int, default=0)
    p_ship = sub.add_parser("ship", help="copy a finished run's model to checkpoints/")
    p_ship.add_argument("--task", required=True, choices=TASKS)
    p_ship.add_argument("--seed", type=int, default=0)
    p_ship.add_argument("--partial", action="store_true", help="ship a run that has not reached 100k")
    args = parser.parse_args()
    {"run": run, "evaluate": evaluate, "report": report, "ship": ship}[args.command](args)


if __name__ == "__main__":
    main()
