#!/usr/bin/env python
"""Plan on a task from the command line and report what was achieved; train a world model.

    python run_planning.py                                   # the default: TOLD + MPPI on cartpole-swingup
    python run_planning.py --task reacher-easy --planner icem --episodes 5
    python run_planning.py --task point_mass-goal --video runs/goal.gif
    python run_planning.py --list                            # tasks, planners and models
    python run_planning.py train --model told --task cartpole-swingup

Each episode is one row of a table (return, success, mean plan time per step); the rows
are written as CSV and JSON to --out. Models, their options, their default planners and
their trainers come from the model registry (`models.registry`); this file names none.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

# MuJoCo picks its rendering back end when dm_control is first imported: choose it before
# anything imports dm_control. EGL renders headless on CPU machines too.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from models import CheckpointError, ModelSpec, registry  # noqa: E402
from models.loading import family_of  # noqa: E402
from models.planning import PlanRequest, PlanSetup, shipped_checkpoint  # noqa: E402
from models.tasks import list_tasks, task_kind  # noqa: E402
from planners import PLANNERS, PRESETS, resolve_device  # noqa: E402
from planners.controller import PRECISIONS  # noqa: E402
from training import EpisodeRecord, run_episode, summarise, write_video  # noqa: E402
from training.allocator import keep_freed_memory  # noqa: E402
from training.video import check_video_path  # noqa: E402

DEFAULT_TASK = "cartpole-swingup"
# Planner config fields the shared flags set.
PLANNER_FLAGS = {"horizon": "horizon", "samples": "num_samples", "elites": "num_elites", "iterations": "iterations"}
POSITIVE_FLAGS = ("episodes", "horizon", "samples", "elites", "iterations", "action_repeat", "max_steps", "steps")


class UserError(Exception):
    """A mistake in the command line: printed as one line, no traceback."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line, like every other user error."""

    def error(self, message: str) -> Any:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one and its help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def add_family_options(parser: argparse.ArgumentParser, kind: str) -> None:
    """The registered families' own flags ("plan" or "train"); each is None unless set."""
    group = parser.add_argument_group("model options (each for the models named)")
    for name, (option, families) in registry.all_options(kind).items():
        helps: dict[str, list[str]] = {}  # one help text, with the families that declare it so
        for family in families:
            spec = registry.get(family)
            own = next(o for o in (spec.plan_options if kind == "plan" else spec.train_options) if o.name == name)
            helps.setdefault(own.help, []).append(family)
        text = "; ".join(f"{', '.join(names)}: {help_text}" for help_text, names in helps.items())
        if option.switch and option.negatable:
            group.add_argument(option.flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif option.switch:
            group.add_argument(option.flag, dest=name, action="store_const", const=True, default=None, help=text)
        else:
            group.add_argument(option.flag, dest=name, type=option.type, choices=option.choices, default=None,
                               help=text)


def family_options(args: argparse.Namespace, spec: ModelSpec, kind: str) -> dict[str, Any]:
    """The family options the user set, as a plain dict; a flag of another family is refused."""
    own = {o.name for o in (spec.plan_options if kind == "plan" else spec.train_options)}
    chosen: dict[str, Any] = {}
    for name, (option, families) in registry.all_options(kind).items():
        value = getattr(args, name)
        if value is None:
            continue
        if name not in own:
            raise UserError(f"{option.flag} is an option of --model {' or '.join(families)}, not of --model {spec.name}")
        chosen[name] = value
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        description="Model-predictive control with sampling planners over world models. "
                    "Subcommand: `train` (see `run_planning.py train --help`).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help="task name (see --list)")
    parser.add_argument("--planner", default="auto",
                        help=f"one of {sorted(PLANNERS)}; auto: the model's own (see --list)")
    parser.add_argument("--preset", default=None, help=f"published planner settings: {sorted(PRESETS)}")
    parser.add_argument("--model", default="auto",
                        help=f"world model: {registry.names()}; auto: the one --checkpoint holds, else a model "
                             "whose checkpoint for the task ships in checkpoints/, else the true physics")
    parser.add_argument("--checkpoint", default=None, help="weights file of a learned model")
    parser.add_argument("--episodes", type=int, default=1, help="episodes (or goals) to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then seed + 1, ...)")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (agent steps)")
    parser.add_argument("--samples", type=int, default=None, help="candidates per iteration")
    parser.add_argument("--elites", type=int, default=None, help="candidates the sampling distribution is refit to")
    parser.add_argument("--iterations", type=int, default=None, help="planner iterations per step")
    parser.add_argument("--action-repeat", type=int, default=None, help="physics steps per agent step")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many agent steps")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="learned models: run the model's matrix products in bfloat16 while planning "
                             "(faster on CPUs with AMX/AVX512-BF16 and on GPUs)")
    parser.add_argument("--obs", default="state", choices=["state", "pixels"], help="observation type")
    parser.add_argument("--goal", default=None, help="goal-image file (.png/.npy) for goal-conditioned models")
    parser.add_argument("--video", default=None, help="write the first episode to this .gif (or .mp4)")
    parser.add_argument("--out", default=None, help="folder for CSV/JSON results (default runs/<task>-<planner>-<model>[-<acting option>...])")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list tasks, planners and models, then exit")
    add_family_options(parser, "plan")
    return parser


# -- choosing the pieces ----------------------------------------------------------------------


def choose_model(args: argparse.Namespace) -> tuple[ModelSpec, str | None]:
    """The family of --model, or for --model auto the one --checkpoint holds, else one
    whose checkpoint for the task ships, else the reference physics (with the reason)."""
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    if args.model != "auto":
        return registry.get(args.model), None
    if args.checkpoint is not None:
        return registry.get(family_of(args.checkpoint)), f"from {args.checkpoint}"
    if task_kind(args.task) == "suite" and args.goal is None:
        for spec in registry.list_models():
            if spec.shipped and shipped_checkpoint(spec.shipped, args.task, args.obs).is_file():
                name = shipped_checkpoint(spec.shipped, args.task, args.obs).name
                return spec, f"the shipped checkpoint checkpoints/{name}"
    spec = registry.reference_model()
    return spec, f"no learned checkpoint ships for {args.task}; {spec.description}"


def check_fits(args: argparse.Namespace, spec: ModelSpec) -> None:
    """What the family cannot take, refused before anything is built."""
    kind = task_kind(args.task)
    if not spec.plans_on(args.task, kind):
        fits = [s.name for s in registry.list_models() if s.plans_on(args.task, kind)]
        raise UserError(f"--model {spec.name} plans on {'/'.join(spec.tasks)} tasks; {args.task} is a {kind} task "
                        f"(models for it: {fits})")
    learned = spec.load is not None
    if args.checkpoint is not None and not learned:
        raise UserError(f"the {spec.name} model has no weights and takes no --checkpoint ({spec.description})")
    if args.precision != "float32" and not learned:
        raise UserError(f"--precision {args.precision} is for learned models; the {spec.name} "
                        f"(--model {args.model}) has no weights")
    if args.goal is not None and not (learned and "goal" in spec.observations):
        raise UserError(f"--goal images need a goal-conditioned learned model, not --model {spec.name}; "
                        f"{spec.name} plans to the task's own goal")


def default_results_folder(args: argparse.Namespace, spec: ModelSpec, options: dict[str, Any]) -> Path:
    """runs/<task>-<planner>-<model>, then the value of each family option the user set that
    names a way of acting (a choice, or a switch as its name or no_<name>), so e.g.
    `--mode actor` does not write over the results of planning with the same model."""
    parts = [args.task, args.planner, spec.name]
    for option in spec.plan_options:
        value = options.get(option.name)
        if value is None:
            continue
        if option.switch:
            parts.append(option.name if value else f"no_{option.name}")
        elif option.choices:
            parts.append(str(value))
    return Path("runs") / "-".join(parts)


def plan_request(args: argparse.Namespace, options: dict[str, Any], out: Path) -> PlanRequest:
    return PlanRequest(
        task=args.task, obs=args.obs, seed=args.seed, device=resolve_device(args.device),
        checkpoint=Path(args.checkpoint) if args.checkpoint else None, planner=args.planner.lower(),
        preset=args.preset, overrides={f: getattr(args, flag) for flag, f in PLANNER_FLAGS.items()
                                       if getattr(args, flag) is not None},
        action_repeat=args.action_repeat, max_steps=args.max_steps, precision=args.precision,
        episodes=args.episodes, options=options, out=out,
        progress=not args.no_progress, goal=Path(args.goal) if args.goal else None,
    )  # fmt: skip


# -- running ------------------------------------------------------------------------------------


def run_episodes(args: argparse.Namespace, setup: PlanSetup) -> list[EpisodeRecord]:
    """--episodes episodes with the family's controller, a printed row each."""
    env = setup.env
    steps = min(env.max_episode_steps, args.max_steps or env.max_episode_steps)
    print_header()  # before the bar, so that the bar never sits on the header's line
    progress = make_progress(args, steps * args.episodes)
    records = []
    for episode in range(args.episodes):
        controller = setup.controller if setup.controller_for_episode is None else setup.controller_for_episode(episode)
        frames = [] if args.video and episode == 0 else None
        record = run_episode(env, controller, seed=args.seed + episode, episode=episode,
                             model_input=setup.model_input or (lambda e, obs: obs), max_steps=args.max_steps,
                             frames=frames, goal_frame=setup.goal_frame, progress=progress)  # fmt: skip
        records.append(record)
        if progress is not None:
            progress.clear()
        print_row(record)
        if frames:
            save_video(args.video, frames, env)
    if progress is not None:
        progress.close()
    env.close()
    return records


def describe_task(args: argparse.Namespace, setup: PlanSetup) -> str:
    env = setup.env
    if setup.run is not None or not hasattr(env, "action_repeat"):
        return f"task {args.task}"
    steps = min(env.max_episode_steps, args.max_steps or env.max_episode_steps)
    return f"task {args.task} (action repeat {env.action_repeat}, {steps} agent steps)"


def make_progress(args: argparse.Namespace, total: int) -> Any:
    if args.no_progress or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", leave=False)


def save_video(path: str, frames: list[np.ndarray], env: Any) -> None:
    fps = max(1, round(1.0 / (env.control_timestep * env.action_repeat)))
    try:
        written = write_video(path, frames, fps=fps)
    except (ImportError, ValueError) as error:
        raise UserError(f"could not write the video: {error}") from None
    print(f"video: {written}", flush=True)


def print_header() -> None:
    print(f"{'episode':>7} {'seed':>5} {'return':>10} {'success':>8} {'steps':>6} {'plan ms':>8}", flush=True)


def print_row(r: EpisodeRecord) -> None:
    success = "-" if r.success is None else str(r.success)
    print(f"{r.episode:>7} {r.seed:>5} {r.episode_return:>10.2f} {success:>8} {r.steps:>6} {r.mean_plan_ms:>8.1f}",
          flush=True)


def write_results(out: Path, header: dict[str, Any], records: list[EpisodeRecord]) -> None:
    """Episodes as CSV and a JSON summary, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.as_dict() for r in records]
    tmp = out / "episodes.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "episodes.csv")
    summary = {**header, **summarise(records), "rows": rows}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")


def list_choices() -> None:
    print("DM Control tasks:", ", ".join(list_tasks("suite")))
    print("goal tasks:      ", ", ".join(list_tasks("goal")))
    print("toy tasks:       ", ", ".join(list_tasks("toy")))
    print("planners:        ", ", ".join(sorted(PLANNERS)))
    print("presets:         ", ", ".join(sorted(PRESETS)))
    print("models:")
    for spec in registry.list_models():
        trains = ", trains" if spec.trains else ""
        print(f"  {spec.name:<15} {spec.description} (planner {spec.default_planner}{trains})")


def plan_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        list_choices()
        return 0
    try:
        for flag in POSITIVE_FLAGS:
            value = getattr(args, flag, None)
            if value is not None and value < 1:
                raise UserError(f"--{flag.replace('_', '-')} {value} must be at least 1")
        spec, reason = choose_model(args)
        if reason is not None:
            print(f"model {spec.name} ({reason}; choose with --model)", flush=True)
        check_fits(args, spec)
        if args.planner == "auto":
            args.planner = spec.default_planner
        options = family_options(args, spec, "plan")
        out = Path(args.out) if args.out else default_results_folder(args, spec, options)
        if args.video:
            check_video_path(args.video)
        setup = spec.entry("prepare")(plan_request(args, options, out))
        if args.video and setup.run is None and not callable(getattr(setup.env, "render", None)):
            raise UserError(f"{args.task} has no renderer; --video works with DM Control tasks")
        print(f"{describe_task(args, setup)}, {setup.description}", flush=True)
        if setup.run is not None:
            print_header()
            records = setup.run(print_row)
        else:
            records = run_episodes(args, setup)
    except (UserError, CheckpointError, ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no results written", file=sys.stderr)
        return 130
    write_results(out, {"task": args.task, "planner": args.planner, "preset": args.preset, "model": spec.name,
                        "acting": setup.description}, records)
    summary = summarise(records)
    rate = "" if summary["success_rate"] is None else f", success {100 * summary['success_rate']:.0f}%"
    print(f"mean return {summary['mean_return']:.2f}{rate}, plan {summary['mean_plan_ms']:.0f} ms/step; "
          f"results in {out}/")
    return 0


# -- training -----------------------------------------------------------------------------------


def build_train_parser() -> argparse.ArgumentParser:
    trainable = [s.name for s in registry.list_models(trains=True)]
    parser = _Parser(
        prog="run_planning.py train",
        description="Train a world model (online with the planner in the loop, or offline from collected data). "
                    "Starting the same command again resumes the run from its folder.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", default=registry.default_trainable().name, help=f"model to train: {trainable}")
    parser.add_argument("--task", default=DEFAULT_TASK, help="task name (see run_planning.py --list)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps (action repeat included)")
    parser.add_argument("--obs", default="state", choices=["state", "pixels"], help="observation type")
    parser.add_argument("--seed", type=int, default=0, help="run seed")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", default=None, help="run folder (default runs/<model>-<task>-...-s<seed>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_family_options(parser, "train")
    return parser


def train_main(argv: list[str]) -> int:
    args = build_train_parser().parse_args(argv)
    try:
        if args.steps < 1:
            raise UserError(f"--steps {args.steps} must be at least 1")
        spec = registry.get(args.model)
        if not spec.trains:
            raise UserError(f"cannot train model {spec.name!r}; trainable: {[s.name for s in registry.list_models(trains=True)]}")
        device = resolve_device(args.device)
        trainer = spec.entry("trainer")(
            task=args.task, steps=args.steps, obs=args.obs, seed=args.seed, out=args.out,
            device=str(device), progress=not args.no_progress and sys.stderr.isatty(),
            options=family_options(args, spec, "train"),
        )  # fmt: skip
        if device.type == "cpu":
            # Large activations are reused instead of page-faulted anew each update
            # (benchmarks/rssm_update_cost.py --compare).
            keep_freed_memory()
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(trainer.out_dir)
    # Under torchrun every process runs this; one of them speaks.
    speaks = getattr(trainer, "rank", 0) == 0
    if speaks:
        print(f"training {trainer.describe()}; run folder {out}/", flush=True)
    try:
        rows = trainer.run()
    except KeyboardInterrupt:
        # Checkpoints are written atomically, so the last one is whole: nothing to undo.
        if speaks:
            print(f"interrupted at {trainer.position()}; the last checkpoint in {out}/ is kept: resume with the "
                  "same command", file=sys.stderr)
        return 130
    final = rows[-1] if rows else {}
    if not speaks:
        return 0
    if "mean_return" in final:
        print(f"final evaluation: {final['mean_return']:.1f} ± {final['std_return']:.1f}; model: {out / 'model.pt'}")
    else:
        print(f"model: {out / 'model.pt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    return plan_main(argv)


if __name__ == "__main__":
    sys.exit(main())
