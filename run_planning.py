#!/usr/bin/env python
"""Plan on a task from the command line and report what was achieved.

    python run_planning.py                                  # the default demo
    python run_planning.py --task toy-point_mass --planner icem --episodes 3
    python run_planning.py --list                           # tasks, planners, models

Each episode is one row of a table (return, success, mean plan time); the rows are also
written as CSV and JSON to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# MuJoCo picks its rendering back end when dm_control is first imported: choose before
# anything imports it. EGL renders headless on CPU machines too.
os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from models import TOY_SYSTEMS  # noqa: E402
from planners import PLANNERS, PRESETS, MPCController, make_planner, resolve_device  # noqa: E402

TOY_TASKS = {f"toy-{name}": name for name in TOY_SYSTEMS}
# Episode lengths (agent steps) of the toy tasks.
TOY_STEPS = {"toy-pendulum": 100, "toy-point_mass": 50}
DEFAULT_TASK = "toy-pendulum"
MODELS = ("oracle",)  # the toy system's own dynamics


class UserError(Exception):
    """A mistake in the command line: printed as one line, no traceback."""


@dataclass
class EpisodeRecord:
    episode: int
    seed: int
    episode_return: float
    success: bool
    steps: int
    mean_plan_ms: float


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Model-predictive control with sampling planners over world models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help="task name (see --list)")
    parser.add_argument("--planner", default="mppi", help=f"one of {sorted(PLANNERS)}")
    parser.add_argument("--preset", default=None, help=f"published planner settings: {sorted(PRESETS)}")
    parser.add_argument("--model", default="oracle", help=f"world model: {list(MODELS)}")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (planner default if unset)")
    parser.add_argument("--samples", type=int, default=None, help="candidates per iteration")
    parser.add_argument("--elites", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=None, help="folder for CSV/JSON results (default runs/<task>-<planner>)")
    parser.add_argument("--list", action="store_true", help="list tasks, planners and models, then exit")
    return parser


def planner_overrides(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """Task defaults, with the command line's explicit values on top."""
    overrides = dict(defaults)
    for flag, field in (("horizon", "horizon"), ("samples", "num_samples"), ("elites", "num_elites"),
                        ("iterations", "iterations")):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    if "num_elites" in overrides and "num_samples" in overrides:
        overrides["num_elites"] = min(overrides["num_elites"], overrides["num_samples"])
    return overrides


def run_toy(args: argparse.Namespace) -> list[EpisodeRecord]:
    """MPC on a torch toy system that serves as its own (exact) model."""
    system = TOY_SYSTEMS[TOY_TASKS[args.task]]()
    device = resolve_device(args.device)
    defaults = {"horizon": 25 if args.task == "toy-pendulum" else 15, "num_samples": 200, "num_elites": 20,
                "iterations": 4}
    if args.preset is not None:
        defaults = {}
    try:
        planner = make_planner(args.planner, system.action_dim, preset=args.preset, **planner_overrides(args, defaults))
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None
    print_header()
    records = []
    steps = TOY_STEPS[args.task]
    for episode in range(args.episodes):
        seed = args.seed + episode
        controller = MPCController(system, planner, discount=1.0, seed=seed, device=device)
        state = system.initial_state(1, device=device)
        # Different episodes start from slightly different states.
        state = state + 0.05 * torch.randn(state.shape, generator=torch.Generator().manual_seed(seed)).to(device)
        total, plan_time = 0.0, 0.0
        for _ in range(steps):
            start = time.perf_counter()
            action = torch.as_tensor(controller.act(state[0]), device=device).view(1, -1)
            plan_time += time.perf_counter() - start
            total += float(system.reward(state, action))
            state = system.next(state, action)
        records.append(EpisodeRecord(episode, seed, total, bool(system.success(state)[0]), steps,
                                     1000 * plan_time / steps))
        print_row(records[-1])
    return records


def print_header() -> None:
    print(f"{'episode':>7} {'seed':>5} {'return':>10} {'success':>8} {'steps':>6} {'plan ms':>8}")


def print_row(r: EpisodeRecord) -> None:
    print(f"{r.episode:>7} {r.seed:>5} {r.episode_return:>10.2f} {str(r.success):>8} {r.steps:>6} "
          f"{r.mean_plan_ms:>8.1f}", flush=True)


def write_results(out: Path, args: argparse.Namespace, records: list[EpisodeRecord]) -> None:
    """CSV of the episodes and a JSON summary, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [asdict(r) for r in records]
    tmp = out / "episodes.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "episodes.csv")
    summary = {
        "task": args.task, "planner": args.planner, "preset": args.preset, "model": args.model,
        "episodes": rows,
        "mean_return": sum(r.episode_return for r in records) / len(records),
        "success_rate": sum(r.success for r in records) / len(records),
        "mean_plan_ms": sum(r.mean_plan_ms for r in records) / len(records),
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")


def list_choices() -> None:
    print("tasks:   ", ", ".join(sorted(TOY_TASKS)))
    print("planners:", ", ".join(sorted(PLANNERS)))
    print("presets: ", ", ".join(sorted(PRESETS)))
    print("models:  ", ", ".join(MODELS))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_choices()
        return 0
    try:
        if args.task not in TOY_TASKS:
            raise UserError(f"unknown task {args.task!r}; choose one of {sorted(TOY_TASKS)} (see --list)")
        if args.model not in MODELS:
            raise UserError(f"unknown model {args.model!r}; choose one of {list(MODELS)}")
        if args.episodes < 1:
            raise UserError(f"--episodes {args.episodes} must be at least 1")
        print(f"task {args.task}, planner {args.planner}, model {args.model}")
        records = run_toy(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / f"{args.task}-{args.planner}"
    write_results(out, args, records)
    mean_return = sum(r.episode_return for r in records) / len(records)
    successes = sum(r.success for r in records)
    print(f"mean return {mean_return:.2f}, success {successes}/{len(records)}; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
