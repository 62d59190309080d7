#!/usr/bin/env python
"""Plan on a task from the command line and report what was achieved.

    python run_planning.py                                   # the default: TOLD + MPPI on cartpole-swingup
    python run_planning.py --task reacher-easy --planner icem --episodes 5
    python run_planning.py --task point_mass-goal --video runs/goal.mp4
    python run_planning.py --list                            # tasks, planners, models

Each episode is one row of a table (return, success, mean plan time per step); the rows
are written as CSV and JSON to --out.
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
import torch  # noqa: E402

import envs  # noqa: E402  (does not import dm_control until an env is made)
from models import TOY_SYSTEMS  # noqa: E402
from planners import PLANNERS, PRESETS, MPCController, make_planner, resolve_device  # noqa: E402
from planners.controller import PRECISIONS  # noqa: E402
from training import EpisodeRecord, run_episode, summarise, write_video  # noqa: E402
from models.oracle_presets import matched_planner, oracle_settings  # noqa: E402
from training.planet_trainer import RECIPES as RSSM_RECIPES  # noqa: E402

DEFAULT_TASK = "cartpole-swingup"
# With no --planner, each model gets the planner its paper uses: MPPI (TD-MPC2) over TOLD,
# CEM over PlaNet's RSSM and DINO-WM, and iCEM over the physics (our measured best).
DEFAULT_PLANNERS = {"told": "mppi", "rssm": "cem", "dinowm": "cem", "oracle": "icem"}
MODELS = ("oracle", "told", "rssm", "dinowm")
AVAILABLE_MODELS = ("oracle", "told", "rssm", "dinowm")
ACT_MODES = ("planner", "actor", "planner+actor")
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
# TD-MPC2's planning budget, used for every planner over TOLD unless flags say otherwise
# (MPPI takes the full TD-MPC2 preset).
TOLD_PLANNER_DEFAULTS = {"horizon": 3, "num_samples": 512, "num_elites": 64, "iterations": 6, "num_proposals": 24}
# PlaNet's CEM budget (horizon 12, 1000 candidates, top 100, 10 iterations) for any planner
# over an RSSM; --preset planet gives the exact CEM preset.
RSSM_PLANNER_DEFAULTS = {"horizon": 12, "num_samples": 1000, "num_elites": 100, "iterations": 10}
TOY_TASKS = {f"toy-{name}": name for name in TOY_SYSTEMS}

TOY_PLANNER_DEFAULTS = {
    "toy-pendulum": {"horizon": 25, "num_samples": 200, "num_elites": 20, "iterations": 4},
    "toy-point_mass": {"horizon": 15, "num_samples": 200, "num_elites": 20, "iterations": 4},
}
TOY_STEPS = {"toy-pendulum": 100, "toy-point_mass": 50}


class UserError(Exception):
    """A mistake in the command line: printed as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Model-predictive control with sampling planners over world models.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", default=DEFAULT_TASK, help="task name (see --list)")
    parser.add_argument("--planner", default="auto",
                        help=f"one of {sorted(PLANNERS)}; auto: the model's own ({DEFAULT_PLANNERS})")
    parser.add_argument("--preset", default=None, help=f"published planner settings: {sorted(PRESETS)}")
    parser.add_argument("--model", default="auto",
                        help=f"world model: {list(MODELS)}; auto: the one --checkpoint holds, else TOLD where a "
                             "checkpoint for the task ships in checkpoints/, else the oracle")
    parser.add_argument("--checkpoint", default=None, help="weights file of a learned model")
    parser.add_argument("--mode", default="planner", choices=ACT_MODES,
                        help="rssm: plan, act with the Dreamer actor, or plan with the actor's proposals")
    parser.add_argument("--plan-value", action=argparse.BooleanOptionalAction, default=None,
                        help="rssm --mode planner+actor: end every CEM candidate with the critic's value, "
                             "discounted by its gamma, as dreamer-recipe runs plan (default: as the run beside "
                             "--checkpoint trained, else no)")
    parser.add_argument("--encoder-weights", default=None,
                        help="dinowm: the DINOv2 weight file (e.g. dinov2_vits14_pretrain.pth); nothing is downloaded")
    parser.add_argument("--env-steps", type=int, default=50, help="dinowm: env steps each goal gets")
    parser.add_argument("--goal-objective", default="last", choices=("last", "all"),
                        help="dinowm: feature distance to the goal at the last predicted frame (the paper's) or "
                             "averaged over the predicted frames (better on reacher-pose: 58%% vs 2%% in our benchmark)")
    parser.add_argument("--goal-at-rest", action="store_true",
                        help="dinowm: ask for the goal pose at rest (the goal's joint velocities set to zero)")
    parser.add_argument("--proprio-positions", action="store_true",
                        help="dinowm: compare only the joint positions in the proprio term of the goal objective, "
                             "not the velocities")
    parser.add_argument("--goal-alpha", type=float, default=None,
                        help="dinowm: weight of the proprio term against the visual one in the goal objective "
                             "(default 0.1, DINO-WM's alpha)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (then seed + 1, ...)")
    parser.add_argument("--horizon", type=int, default=None, help="planning horizon (agent steps)")
    parser.add_argument("--samples", type=int, default=None, help="candidates per iteration")
    parser.add_argument("--elites", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--action-repeat", type=int, default=None, help="physics steps per agent step")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes after this many agent steps")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="float32", choices=PRECISIONS,
                        help="learned models: run the model's matrix products in bfloat16 while planning "
                             "(faster on CPUs with AMX/AVX512-BF16 and on GPUs)")
    parser.add_argument("--obs", default="state", choices=["state", "pixels"], help="observation type")
    parser.add_argument("--goal", default=None, help="goal-image file (.png/.npy) for goal-conditioned models")
    parser.add_argument("--video", default=None, help="write the first episode to this .mp4 or .gif")
    parser.add_argument("--out", default=None, help="folder for CSV/JSON results (default runs/<task>-<planner>-<model>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list tasks, planners and models, then exit")
    return parser


# -- building the pieces -----------------------------------------------------------------


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Planner config fields set explicitly on the command line."""
    overrides = {}
    for flag, field in (("horizon", "horizon"), ("samples", "num_samples"), ("elites", "num_elites"),
                        ("iterations", "iterations")):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    return overrides


def planner_for(args: argparse.Namespace, action_dim: int, defaults: dict[str, Any]):
    """The planner: a preset, or the task's defaults, with explicit flags on top."""
    overrides = flag_overrides(args)
    if args.preset is None:
        overrides = {**defaults, **overrides}
        # A smaller --samples shrinks the default elites with it; explicit --elites stays.
        if args.elites is None and "num_elites" in overrides and "num_samples" in overrides:
            overrides["num_elites"] = min(overrides["num_elites"], overrides["num_samples"])
    try:
        return make_planner(args.planner, action_dim, preset=args.preset, **overrides)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None


def oracle_planner(args: argparse.Namespace, action_dim: int) -> Any:
    """The true-physics planner: a preset, or the measured per-task budget (flags on top)."""
    if args.preset is not None:
        return planner_for(args, action_dim, {})
    settings = oracle_settings(args.task)
    overrides = flag_overrides(args)
    horizon = overrides.pop("horizon", settings["horizon"])
    try:
        return matched_planner(args.planner, action_dim, horizon, settings["budget"], **overrides)
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None


def resolve_model_and_planner(args: argparse.Namespace) -> None:
    """Fill in --model auto and --planner auto (see their help), saying what was chosen."""
    args.model_flag = args.model  # as given, for messages
    if args.model == "auto":
        if args.checkpoint is not None:
            args.model = model_in_checkpoint(Path(args.checkpoint))
            reason = f"from {args.checkpoint}"
        elif args.task not in TOY_TASKS and args.goal is None and shipped_checkpoint("told", args.task, args.obs).is_file():
            args.model = "told"
            reason = f"the shipped checkpoint checkpoints/{shipped_checkpoint('told', args.task, args.obs).name}"
        else:
            args.model = "oracle"
            reason = f"no learned checkpoint ships for {args.task}; the true physics"
        print(f"model {args.model} ({reason}; choose with --model)", flush=True)
    if args.planner == "auto":
        args.planner = DEFAULT_PLANNERS.get(args.model, "icem")


def model_in_checkpoint(path: Path) -> str:
    """Which model a checkpoint file holds: a model file's `model` field, or a TOLD training
    checkpoint (which `load_told` reads too). Other training checkpoints are refused with
    the model file to use instead."""
    import torch

    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file torch cannot read: say which and why, in one line
        raise UserError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if isinstance(ckpt, dict):
        name = ckpt.get("model")
        if isinstance(name, str) and name in MODELS:
            return name
        agent_state = ckpt.get("agent_state")
        if isinstance(agent_state, dict) and isinstance(agent_state.get("agent"), dict):
            return "told"
        if ckpt.get("trainer") == "planet" or ckpt.get("kind") == "dinowm-train":
            raise UserError(f"{path} is a training checkpoint (the state to resume training); plan with the model "
                            f"file beside it: {path.with_name('model.pt')}")
    raise UserError(f"cannot tell which model {path} holds; pass --model ({', '.join(m for m in MODELS if m != 'oracle')})")


def check_model(args: argparse.Namespace) -> None:
    if args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}; choose one of {list(MODELS)}")
    if args.model not in AVAILABLE_MODELS:
        raise UserError(f"model {args.model!r} is not available in this version yet; available: {list(AVAILABLE_MODELS)}")
    if args.model == "oracle" and args.checkpoint is not None:
        raise UserError("the oracle model is the true physics and takes no --checkpoint")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    if args.precision != "float32" and args.model == "oracle":
        raise UserError(f"--precision {args.precision} is for learned models; the oracle (--model {args.model_flag}) "
                        "plans with MuJoCo in float64")
    if args.goal is not None and args.model == "oracle":
        raise UserError("--goal images need a goal-conditioned learned model; the oracle plans to the task's own goal")


def make_env(args: argparse.Namespace, seed: int):
    # The physics model plans with the measured per-task action repeat; learned models
    # use the envs' default (TD-MPC2's 2), the repeat they are trained with.
    repeat = args.action_repeat
    if repeat is None and args.model == "oracle":
        repeat = oracle_settings(args.task)["action_repeat"]
    try:
        return envs.make(args.task, obs=args.obs, seed=seed, action_repeat=repeat)
    except ValueError as error:
        raise UserError(str(error)) from None


def oracle_model(env: Any) -> Any:
    """The true-physics model of `env`."""
    from models.oracle import OracleModel  # after MUJOCO_GL is set (imports mujoco lazily)

    return OracleModel(env)


def goal_image_frame(env: Any) -> np.ndarray:
    """The goal configuration rendered at video size, without disturbing the episode."""
    from envs.physics_state import preserved_physics

    goal_state = env.goal_physics_state()
    with preserved_physics(env.physics):
        env.set_physics_state(goal_state)
        return env.render()


# -- running ---------------------------------------------------------------------------------


def shipped_checkpoint(model: str, task: str, obs: str = "state") -> Path:
    """Where a checkpoint shipped with the repository lives: checkpoints/<model>-<task>[-pixels].pt"""
    suffix = "" if obs == "state" else f"-{obs}"
    return CHECKPOINT_DIR / f"{model}-{task}{suffix}.pt"


def load_told_for(args: argparse.Namespace, env: Any) -> Any:
    """The TOLD model of --checkpoint (or the shipped one for the task), checked against env."""
    from models.told import load_told

    path = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint("told", args.task, args.obs)
    if not path.is_file():
        raise UserError(
            f"no TOLD checkpoint for {args.task} ({args.obs}) at {path}; train one with "
            f"`python run_planning.py train --model told --task {args.task}` and pass --checkpoint runs/.../model.pt"
        )
    try:
        return load_told(path, task=args.task, obs_shape=env.observation_space.shape, action_dim=env.action_space.shape[0])
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None


def told_planner(args: argparse.Namespace, action_dim: int) -> Any:
    """TD-MPC2's MPPI preset for --planner mppi; other planners get its budget (flags on top)."""
    if args.preset is None and args.planner.lower() == "mppi":
        args = argparse.Namespace(**{**vars(args), "preset": "tdmpc2"})
    defaults = {} if args.preset else dict(TOLD_PLANNER_DEFAULTS)
    if args.samples is not None:
        # Policy proposals take fixed slots among the samples: keep at least half for noise.
        defaults["num_proposals"] = min(24, args.samples // 2)
        if args.preset:
            args = argparse.Namespace(**{**vars(args), "preset": None})
            defaults = {**TOLD_PLANNER_DEFAULTS, "num_proposals": defaults["num_proposals"]}
            if args.planner.lower() == "mppi":
                defaults.update(init_std=2.0, min_std=0.05, max_std=2.0, temperature=2.0, output="sample_elite")
    return planner_for(args, action_dim, defaults)


def run_dmc(args: argparse.Namespace) -> list[EpisodeRecord]:
    check_model(args)
    if args.model == "told":
        return run_told(args)
    if args.model == "rssm":
        return run_rssm(args)
    if args.model == "dinowm":
        return run_dinowm(args)
    env = make_env(args, args.seed)
    device = resolve_device(args.device)
    model = oracle_model(env)
    planner = oracle_planner(args, env.action_space.shape[0])
    controller = MPCController(model, planner, discount=1.0, use_value=False, seed=args.seed, device=device)
    is_goal_task = isinstance(env, envs.GoalDMCEnv)
    steps = min(env.max_episode_steps, args.max_steps or env.max_episode_steps)
    print(f"task {args.task} (action repeat {env.action_repeat}, {steps} agent steps), planner {args.planner} "
          f"{describe(planner)}, model {args.model}", flush=True)
    return run_episodes(args, env, controller, steps, model_input=lambda e, obs: e.get_physics_state(),
                        goal_frame=goal_image_frame if is_goal_task else None)


def run_episodes(
    args: argparse.Namespace,
    env: Any,
    controller: Any,
    steps: int,
    model_input: Any = lambda env, obs: obs,
    goal_frame: Any = None,
) -> list[EpisodeRecord]:
    """--episodes episodes, a printed row each (model_input: what the model sees, e.g. the
    physics state for the oracle; goal_frame: the goal image shown beside video frames)."""
    progress = make_progress(args, steps * args.episodes)
    records = []
    print_header()
    for episode in range(args.episodes):
        frames = [] if args.video and episode == 0 else None
        record = run_episode(env, controller, seed=args.seed + episode, episode=episode, model_input=model_input,
                             max_steps=args.max_steps, frames=frames, goal_frame=goal_frame, progress=progress)
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


def run_told(args: argparse.Namespace) -> list[EpisodeRecord]:
    """Plan with a trained TOLD model (value and policy proposals included)."""
    from models.told import heuristic_discount

    try:
        env = envs.make(args.task, obs=args.obs, seed=args.seed, action_repeat=args.action_repeat,
                        frame_stack=3 if args.obs == "pixels" else 1)
    except ValueError as error:
        raise UserError(str(error)) from None
    device = resolve_device(args.device)
    model = load_told_for(args, env).to(device)
    planner = told_planner(args, env.action_space.shape[0])
    discount = heuristic_discount(env.max_episode_steps)
    model.generator = torch.Generator(device=device).manual_seed(args.seed)
    controller = MPCController(model, planner, discount=discount, use_value=True, seed=args.seed, device=device,
                               precision=args.precision)
    steps = min(env.max_episode_steps, args.max_steps or env.max_episode_steps)
    print(f"task {args.task} (action repeat {env.action_repeat}, {steps} agent steps), planner {args.planner} "
          f"{describe(planner)}, model told ({model.config.size}, {model.config.obs_type})", flush=True)
    return run_episodes(args, env, controller, steps)


def rssm_controller(args: argparse.Namespace, env: Any, device: torch.device) -> Any:
    """The RSSM of --checkpoint acting by --mode: CEM, the Dreamer actor, or CEM + actor proposals."""
    from models.actor_control import ActorController, ActorGuidedModel
    from models.behavior import ActorCritic
    from models.rssm import RSSM

    if args.checkpoint is None:
        raise UserError("--model rssm needs --checkpoint runs/<run>/model.pt (train one with `run_planning.py train --model rssm`)")
    try:
        model = RSSM.load(args.checkpoint, obs_shape=env.observation_space.shape, action_dim=env.action_space.shape[0])
    except ValueError as error:
        raise UserError(f"{args.checkpoint}: {error}") from None
    model = model.to(device).eval()
    model.generator = torch.Generator(device=device).manual_seed(args.seed)
    actor = None
    if args.plan_value and args.mode != "planner+actor":
        raise UserError(f"--plan-value plans with the critic, so it needs --mode planner+actor, not {args.mode}")
    if args.mode != "planner":
        behavior_path = Path(args.checkpoint).with_name("behavior.pt")
        if not behavior_path.is_file():
            raise UserError(f"--mode {args.mode} needs the actor-critic beside the model: {behavior_path} is missing "
                            "(train with --mode actor or planner+actor)")
        actor = ActorCritic.load(behavior_path).to(device).eval()
    if args.mode == "actor":
        return ActorController(model, actor, deterministic=True, device=device)
    planner = planner_for(args, env.action_space.shape[0], {} if args.preset else RSSM_PLANNER_DEFAULTS)
    if args.mode == "planner+actor":
        proposals = max(1, planner.config.num_samples // 20)
        # PlaNet's objective (undiscounted reward sum), or with --plan-value the critic's
        # discounted return with its value at the end (the dreamer recipe's planning).
        discount = actor.config.gamma if args.plan_value else 1.0
        return MPCController(ActorGuidedModel(model, actor, use_value=args.plan_value), planner, discount=discount,
                             use_value=args.plan_value, num_proposals=proposals, seed=args.seed, device=device,
                             precision=args.precision)
    return MPCController(model, planner, discount=1.0, use_value=False, seed=args.seed, device=device,
                         precision=args.precision)


def rssm_training_settings(model_path: Path) -> dict[str, Any]:
    """The settings of the PlaNet training run whose folder holds `model_path` (its
    checkpoint.pt's train_config: action repeat, plan_value, ...), or of a shipped model
    (the train_config.json that `planet_learning.py ship` writes beside it), or {} when
    there is neither (a model file on its own)."""
    shipped = model_path.with_name("train_config.json")
    if shipped.is_file():
        try:
            return dict(json.loads(shipped.read_text())["train_config"])
        except (ValueError, KeyError, TypeError) as error:
            print(f"note: could not read {shipped} ({type(error).__name__}); using the flags' action repeat and "
                  "--plan-value", file=sys.stderr)
            return {}
    checkpoint = model_path.with_name("checkpoint.pt")
    if model_path.name == "checkpoint.pt" or not checkpoint.is_file():
        return {}
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - not ours or unreadable: act on the flags alone
        print(f"note: could not read {checkpoint} ({type(error).__name__}); using the flags' action repeat and "
              "--plan-value", file=sys.stderr)
        return {}
    if not isinstance(state, dict) or state.get("trainer") != "planet":
        return {}
    return dict(state.get("train_config") or {})


def run_rssm(args: argparse.Namespace) -> list[EpisodeRecord]:
    """Act with a trained PlaNet RSSM (and its Dreamer actor) in the env it was trained on."""
    from envs.action_repeat import action_repeat_for

    domain = args.task.split("-")[0]
    trained = rssm_training_settings(Path(args.checkpoint)) if args.checkpoint else {}
    if args.plan_value is None:  # plan as the run did (its critic value is for planner+actor only)
        args.plan_value = bool(trained.get("plan_value", False)) and args.mode == "planner+actor"
    repeat = args.action_repeat if args.action_repeat is not None else trained.get("action_repeat")
    if repeat is None:
        try:
            repeat = action_repeat_for(domain, "planet")  # PlaNet's table, as the trainer uses
        except ValueError as error:
            raise UserError(str(error)) from None
    try:
        env = envs.make(args.task, obs=args.obs, seed=args.seed, action_repeat=repeat)
    except ValueError as error:
        raise UserError(str(error)) from None
    device = resolve_device(args.device)
    controller = rssm_controller(args, env, device)
    steps = min(env.max_episode_steps, args.max_steps or env.max_episode_steps)
    what = "actor only" if args.mode == "actor" else f"planner {args.planner} {describe(controller.planner)}"
    print(f"task {args.task} (action repeat {env.action_repeat}, {steps} agent steps), {what}, model rssm "
          f"({args.mode})", flush=True)
    return run_episodes(args, env, controller, steps)


def run_dinowm(args: argparse.Namespace) -> list[EpisodeRecord]:
    """Goal-image MPC with a trained DINO-WM: --episodes goals, each 25 env steps of random
    actions away from its start (DINO-WM's protocol), success as the task defines it."""
    from models.dino_wm import load_trained_dinowm
    from training.goal_mpc import GoalEvalConfig, dinowm_cpu_budget, evaluate_goals, make_goal_env, summarise_goals
    from training.datasets import sample_goals

    if args.checkpoint is None:
        raise UserError("--model dinowm needs --checkpoint runs/<run>/model.pt (train one with `run_planning.py train --model dinowm`)")
    if args.task not in envs.list_tasks("goal"):
        raise UserError(f"--model dinowm plans to goal images: choose a goal task {envs.list_tasks('goal')}, not {args.task!r}")
    if args.goal is not None:
        raise UserError("--goal files are not supported for dinowm yet; goals are drawn from the task (see --episodes)")
    device = resolve_device(args.device)
    try:
        model = load_trained_dinowm(args.checkpoint, encoder_weights=args.encoder_weights, device=device)
        explicit = flag_overrides(args)
        # The paper's CEM (300 x 30) takes minutes per call on a CPU; flags still win.
        overrides = dinowm_cpu_budget(**explicit) if device.type == "cpu" else explicit
        config = GoalEvalConfig(task=args.task, planner=args.planner, image_size=model.config.image_size,
                                env_steps=args.env_steps, num_goals=args.episodes, seed=args.seed,
                                precision=args.precision, objective=args.goal_objective,
                                goal_at_rest=args.goal_at_rest, proprio_positions=args.proprio_positions,
                                **({} if args.goal_alpha is None else {"alpha": args.goal_alpha}), **overrides)
    except (ValueError, FileNotFoundError, TypeError) as error:
        raise UserError(str(error)) from None
    env = make_goal_env(config)
    # Goals come from a second env without the evaluation's time limit (25 steps ahead).
    goal_env = envs.make(args.task, obs="pixels", image_size=config.image_size, action_repeat=config.action_repeat)
    goals = sample_goals(goal_env, args.episodes, seed=1_000_000 + args.seed, offset=25)
    goal_env.close()
    print(f"task {args.task}, {args.episodes} goals, planner {config.planner} (horizon {config.horizon}, "
          f"{config.num_samples} samples, {config.num_elites} elites, {config.iterations} iterations"
          f"{'; the CPU budget, the paper uses 300 x 30' if device.type == 'cpu' and not explicit else ''}; "
          f"objective {config.objective_description}), "
          f"model dinowm ({model.config.image_size} px)", flush=True)
    out = Path(args.out) if args.out else Path("runs") / f"{args.task}-{args.planner}-dinowm"
    goal_records = evaluate_goals(model, goals, config, env_factory=lambda: env, progress=not args.no_progress,
                                  frames_dir=out / "goals")
    print_header()
    records = []
    for r in goal_records:
        # The "return" column is minus the final distance to the goal (the task's own measure).
        records.append(EpisodeRecord(r.goal, 1_000_000 + args.seed + r.goal, -r.final_distance, r.success,
                                     r.env_steps, r.mean_plan_ms))
        print_row(records[-1])
    print(f"goals reached: {summarise_goals(goal_records)}", flush=True)
    return records


class ToyEnv:
    """A torch toy system behind the reset/step interface `run_episode` uses."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.system = TOY_SYSTEMS[TOY_TASKS[name]]()
        self.max_episode_steps = TOY_STEPS[name]
        self.device = device

    def reset(self, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
        noise = torch.randn(self.system.state_dim, generator=torch.Generator().manual_seed(seed))
        self.state = self.system.initial_state(1, self.device) + 0.05 * noise.to(self.device)
        self.steps = 0
        return self.state[0], {}

    def step(self, action: np.ndarray) -> tuple[torch.Tensor, float, bool, bool, dict[str, Any]]:
        a = torch.as_tensor(action, device=self.device).view(1, -1)
        reward = float(self.system.reward(self.state, a))
        self.state = self.system.next(self.state, a)
        self.steps += 1
        info = {"is_success": bool(self.system.success(self.state)[0])}
        return self.state[0], reward, False, self.steps >= self.max_episode_steps, info


def run_toy(args: argparse.Namespace) -> list[EpisodeRecord]:
    if args.model != "oracle":
        raise UserError(f"toy tasks use their own dynamics: pass --model oracle, not {args.model!r}")
    if args.video:
        raise UserError("toy tasks have no renderer; --video works with DM Control tasks")
    device = resolve_device(args.device)
    env = ToyEnv(args.task, device)
    planner = planner_for(args, env.system.action_dim, TOY_PLANNER_DEFAULTS[args.task])
    print(f"task {args.task}, planner {args.planner} {describe(planner)}, model {args.model}", flush=True)
    print_header()
    records = []
    for episode in range(args.episodes):
        controller = MPCController(env.system, planner, discount=1.0, seed=args.seed + episode, device=device)
        records.append(run_episode(env, controller, seed=args.seed + episode, episode=episode, max_steps=args.max_steps))
        print_row(records[-1])
    return records


def describe(planner: Any) -> str:
    c = planner.config
    return f"(horizon {c.horizon}, {c.num_samples} samples, {c.num_elites} elites, {c.iterations} iterations)"


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


def write_results(out: Path, args: argparse.Namespace, records: list[EpisodeRecord]) -> None:
    """Episodes as CSV and a JSON summary, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.as_dict() for r in records]
    tmp = out / "episodes.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "episodes.csv")
    summary = {"task": args.task, "planner": args.planner, "preset": args.preset, "model": args.model,
               **summarise(records), "rows": rows}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")


def list_choices() -> None:
    print("DM Control tasks:", ", ".join(envs.list_tasks("suite")))
    print("goal tasks:      ", ", ".join(envs.list_tasks("goal")))
    print("toy tasks:       ", ", ".join(sorted(TOY_TASKS)))
    print("planners:        ", ", ".join(sorted(PLANNERS)))
    print("presets:         ", ", ".join(sorted(PRESETS)))
    print("models:          ", ", ".join(f"{m}{'' if m in AVAILABLE_MODELS else ' (not yet)'}" for m in MODELS))


# -- training ----------------------------------------------------------------------------------

TRAINABLE_MODELS = ("told", "rssm", "dinowm")


def build_train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_planning.py train",
        description="Train a world model online with the planner in the loop (resumes from --out).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="told", help=f"model to train: {list(TRAINABLE_MODELS)}")
    parser.add_argument("--task", default=DEFAULT_TASK, help="DM Control task")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps (action repeat included)")
    parser.add_argument("--obs", default="state", choices=["state", "pixels"])
    parser.add_argument("--size", default="1M", help="TOLD size: tiny, 1M or 5M")
    parser.add_argument("--preset", default=None,
                        help="rssm: planet (default), dreamerv2, dreamerv3 or tiny; dinowm: cpu (default), paper or tiny")
    parser.add_argument("--mode", default="planner", choices=ACT_MODES,
                        help="rssm: act with CEM, the Dreamer actor, or CEM with actor proposals")
    parser.add_argument("--recipe", default="planet", choices=RSSM_RECIPES,
                        help="rssm: PlaNet's model and loop, or DreamerV3's regime (discrete latents, action repeat "
                             "2, 16 x 64 batches, train ratio 512, V3 actor-critic, critic value in the plan); "
                             "--preset and the batch flags override it")
    parser.add_argument("--plan-samples", type=int, default=None, help="rssm: CEM candidates (default PlaNet's 1000)")
    parser.add_argument("--trajectories", type=int, default=3000, help="dinowm: trajectories to collect (DINO-WM: 3000)")
    parser.add_argument("--trajectory-steps", type=int, default=100, help="dinowm: env steps per trajectory")
    parser.add_argument("--policy", default="random", choices=["random", "noisy_planner"],
                        help="dinowm: data collection policy (noisy_planner: iCEM over the physics plus noise)")
    parser.add_argument("--epochs", type=int, default=100, help="dinowm: training epochs")
    parser.add_argument("--encoder-weights", default=None, help="dinowm: DINOv2 weight file (default: random frozen encoder)")
    parser.add_argument("--encoder-precision", default="float32", choices=("float32", "bfloat16"),
                        help="dinowm: run the frozen encoder in bfloat16 autocast when caching features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=10_000, help="env steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--checkpoint-every", type=int, default=5, help="episodes between checkpoints")
    parser.add_argument("--seed-steps", type=int, default=None, help="random-action agent steps first (default 5 episodes)")
    parser.add_argument("--plan-iterations", type=int, default=None, help="MPPI iterations while collecting (default 6)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: told 256 subsequences, rssm 50 chunks")
    parser.add_argument("--chunk-length", type=int, default=None, help="rssm: transitions per training chunk (50)")
    parser.add_argument("--collect-interval", type=int, default=None, help="rssm: model updates per episode (100)")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="cut episodes (agent steps), for quick checks")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=None,
                        help="run folder (default runs/<model>-<task>-<obs>-s<seed>; rssm --recipe dreamer: "
                             "runs/rssm-<task>-<obs>-dreamer-s<seed>)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def train_main(argv: list[str]) -> int:
    args = build_train_parser().parse_args(argv)
    try:
        if args.model not in TRAINABLE_MODELS:
            raise UserError(f"cannot train model {args.model!r} yet; trainable: {list(TRAINABLE_MODELS)}")
        if args.recipe != "planet" and args.model != "rssm":
            raise UserError(f"--recipe {args.recipe} is a recipe for --model rssm, not {args.model}")
        if args.model == "dinowm":
            trainer, what = build_dinowm_trainer(args, progress=not args.no_progress and sys.stderr.isatty())
            out = Path(trainer.out_dir)
            print(f"training {what}; run folder {out}/", flush=True)
            trainer.run()
            print(f"model: {out / 'model.pt'}")
            return 0
        if args.task not in envs.list_tasks("suite"):
            raise UserError(f"unknown task {args.task!r}; choose one of the DM Control tasks (see --list)")
        # Runs of another rssm recipe get their own default folder (resuming across recipes is refused).
        recipe = f"-{args.recipe}" if args.model == "rssm" and args.recipe != "planet" else ""
        out = Path(args.out) if args.out else Path("runs") / f"{args.model}-{args.task}-{args.obs}{recipe}-s{args.seed}"
        progress = not args.no_progress and sys.stderr.isatty()
        if args.model == "rssm":
            from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer, recipe_settings

            settings = recipe_settings(args.recipe, args.mode)
            settings.update({k: v for k, v in (("model", args.preset), ("batch_size", args.batch_size),
                                               ("chunk_length", args.chunk_length),
                                               ("collect_interval", args.collect_interval)) if v is not None})
            config = PlaNetTrainConfig(
                task=args.task, steps=args.steps, obs=args.obs, seed=args.seed, mode=args.mode,
                eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                plan_samples=args.plan_samples, plan_iterations=args.plan_iterations,
                max_episode_steps=args.max_episode_steps, **settings,
            )  # fmt: skip
            trainer: Any = PlaNetTrainer(config, out, device=str(resolve_device(args.device)), progress=progress)
            what = f"rssm ({args.recipe} recipe, {config.model}, {args.obs}, {args.mode})"
        else:
            trainer, what = build_told_trainer(args, out, progress), f"told ({args.size}, {args.obs})"
    except (UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return finish_training(args, trainer, out, what)


def build_dinowm_trainer(args: argparse.Namespace, progress: bool) -> tuple[Any, str]:
    """Collect the offline data set (resumable), then build the trainer over it."""
    from models.dino_wm import DinoWMConfig
    from training.dino_wm_trainer import DinoWMTrainConfig, DinoWMTrainer
    from training.collection import CollectConfig, collect

    if args.task not in envs.list_tasks("goal"):
        raise UserError(f"dinowm trains on goal tasks {envs.list_tasks('goal')}, not {args.task!r}")
    preset = args.preset or "cpu"
    if preset not in ("cpu", "paper", "tiny"):
        raise UserError(f"unknown dinowm preset {preset!r}; choose cpu, paper or tiny")
    image_size = getattr(DinoWMConfig, preset)(1, 1).image_size
    out = Path(args.out) if args.out else Path("runs") / f"dinowm-{args.task}-{preset}-s{args.seed}"
    data = out / "data"
    collect(CollectConfig(task=args.task, num_trajectories=args.trajectories, steps=args.trajectory_steps,
                          image_size=image_size, policy=args.policy, seed=args.seed), data, progress=progress)
    config = DinoWMTrainConfig(dataset=str(data), preset=preset, epochs=args.epochs, seed=args.seed,
                               batch_size=args.batch_size or 32, encoder_weights=args.encoder_weights,
                               encoder_precision=args.encoder_precision, device=str(resolve_device(args.device)))
    trainer = DinoWMTrainer(config, out, progress=progress)
    return trainer, f"dinowm ({preset}, {image_size} px) on {args.task} from {args.trajectories} trajectories"


def build_told_trainer(args: argparse.Namespace, out: Path, progress: bool) -> Any:
    from training.told_trainer import TOLDTrainConfig, TOLDTrainer

    config = TOLDTrainConfig(
        task=args.task, steps=args.steps, obs=args.obs, size=args.size, seed=args.seed,
        seed_steps=args.seed_steps, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        checkpoint_every=args.checkpoint_every, plan_iterations=args.plan_iterations,
        batch_size=args.batch_size or 256, max_episode_steps=args.max_episode_steps,
    )  # fmt: skip
    return TOLDTrainer(config, out, device=str(resolve_device(args.device)), progress=progress)


def finish_training(args: argparse.Namespace, trainer: Any, out: Path, what: str) -> int:
    print(f"training {what} on {args.task} for {args.steps} env steps (action repeat {trainer.action_repeat}); "
          f"run folder {out}/", flush=True)
    rows = trainer.run()
    print(f"final evaluation: {rows[-1]['mean_return']:.1f} ± {rows[-1]['std_return']:.1f}; model: {out / 'model.pt'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list:
        list_choices()
        return 0
    try:
        for flag in ("episodes", "horizon", "samples", "elites", "iterations", "action_repeat", "max_steps"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise UserError(f"--{flag.replace('_', '-')} {value} must be at least 1")
        resolve_model_and_planner(args)
        records = run_toy(args) if args.task in TOY_TASKS else run_dmc(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / f"{args.task}-{args.planner}-{args.model}"
    write_results(out, args, records)
    summary = summarise(records)
    rate = "" if summary["success_rate"] is None else f", success {100 * summary['success_rate']:.0f}%"
    print(f"mean return {summary['mean_return']:.2f}{rate}, plan {summary['mean_plan_ms']:.0f} ms/step; "
          f"results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
