"""Goal-image MPC evaluation: DINO-WM's planning protocol (Zhou et al., 2024, "DINO-WM:
World Models on Pre-trained Visual Features enable Zero-shot Planning"), with the true
physics as a baseline on the same goals.

DINO-WM's evaluation (shared/ANCHORS.md section 2): a start and a goal taken from a
held-out trajectory (the goal 25 env steps after the start), the goal given as an image
only, CEM (horizon 5, 300 samples, top 30, 30 iterations) scoring candidate action
sequences by the distance between the predicted and the goal DINOv2 patch features,
receding-horizon execution, and success as the task defines it.

    goals = sample_goals(dataset, count=50, offset=25)            # held-out trajectories
    config = GoalEvalConfig.for_dataset(dataset, env_steps=50)
    records = evaluate_goals(model, goals, config, reset_seeds=goal_reset_seeds(goals, dataset))
    oracle = evaluate_goals("oracle", goals, config, reset_seeds=goal_reset_seeds(goals, dataset))
    summarise_goals(records), summarise_goals(oracle)

One goal, step by step:

1. The env is reset with the goal's trajectory seed (so per-episode scene edits, such as
   point_mass-goal's target marker, match the data set's pictures), then put in the
   start physics state (`env.set_physics_state`).
2. The goal is the `GoalSet`'s goal image (the data set's frame at the goal state) and,
   with `use_proprio`, its proprioception (DINO-WM encodes both; `alpha` weighs the
   proprio term of the objective).
3. `MPCController(model, planner, objective=make_goal_objective(alpha, mode))` plans in
   model steps; each model step executes `frameskip` env steps (the planned chunk of
   `frameskip` actions with `action_chunks`, as the paper, or one action repeated), and
   the controller's window latent is updated with every executed chunk (`observe`).
4. After `env_steps` env steps the episode ends. Success is judged at the end, as
   DINO-WM does; `reached` also records whether the goal was met at any step.

Success and the env's own goal. A `GoalDMCEnv` keeps its desired goal privately (drawn
at reset) and offers no way to set it, so `info["is_success"]` refers to the env's own
goal, not the sampled one. Success is therefore computed with the env's public helpers
against the goal state: `env.compute_success(achieved, goal_achieved)` and distance
`-env.compute_reward(achieved, goal_achieved)`, where `achieved` is `env.achieved_goal()`
as float32 (what the observation carries) and `goal_achieved` the `GoalSet`'s achieved
goal at the goal state (computed from the goal physics state when the set lacks it). The
thresholds are the env's (envs/goals.py): reacher-pose both joint errors < 0.1 rad,
point_mass-goal 0.025 m, reacher-target 0.06 m, finger-turn_goal 0.2313 rad.

Oracle baseline. `evaluate_goals("oracle", ...)` plans with `models.oracle.OracleModel`
(the simulator itself) on the same goals and envs: the objective is the env's goal
reward (minus the goal distance) against the goal state's achieved goal, averaged over
the horizon (`oracle_objective="all"`, the default) or at its end ("last"), over
`oracle_horizon` agent steps (25 by default: DINO-WM's horizon of 5 model steps x
frameskip 5). It replans every `replan_every` agent steps. "all" because the oracle is
the ceiling: with "last" it plans to be at the goal 25 steps ahead, at any speed, so the
reacher arm swings through the goal pose and does not stop there. What it cannot do is
what the learned model has to: see the goal only as a picture.

Shapes: K goals, A env action size, fs frameskip, S physics-state size, G goal size.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from envs.goals import GOAL_TASKS
from models.checkpoints import atomic_write
from models.goal_adapters import GoalConditionedDinoWM
from models.objectives import oracle_goal_objective
from planners import PLANNERS, MPCController, make_planner
from planners.controller import PRECISIONS
from training.datasets import GoalSet, OfflineDataset

__all__ = [
    "GoalEvalConfig",
    "GoalRecord",
    "dinowm_cem_settings",
    "DEFAULT_ALPHA",
    "describe_objective",
    "dinowm_cpu_budget",
    "evaluate_goals",
    "goal_reset_seeds",
    "make_goal_env",
    "summarise_goals",
    "write_goal_picture",
]

ObjectiveMode = Literal["last", "all"]
_IMAGE_MISMATCH = 2.0  # mean absolute pixel difference above which the start scene differs


def dinowm_cem_settings() -> dict[str, Any]:
    """DINO-WM's CEM planner (gaoyuezhou/dino_wm, planner "cem"): horizon 5 model steps,
    300 samples, top 30, 30 iterations (the paper reports 10-30), initial std 1
    (`var_scale`), execute the final mean. Keyword arguments for `planners.CEM`."""
    return {"horizon": 5, "num_samples": 300, "num_elites": 30, "iterations": 30, "init_std": 1.0, "output": "mean"}


def dinowm_cpu_budget(**explicit: int) -> dict[str, int]:
    """Our smaller CEM budget for CPUs: 100 samples, top 10, 10 iterations (the low end of
    the paper's 10-30), horizon 5 as the paper. About 9x less work than the paper's per
    call: ~12 s with the `cpu` preset on this 2-core CPU in bfloat16
    (benchmarks/dinowm_plan_time.py).

    `explicit` (a user's flags: horizon, num_samples, num_elites, iterations) win; fewer
    samples than the default elites shrink the elites with them unless those are explicit
    too. Returns overrides for `GoalEvalConfig`."""
    budget = {"num_samples": 100, "num_elites": 10, "iterations": 10, **explicit}
    if "num_elites" not in explicit:
        budget["num_elites"] = min(budget["num_elites"], budget["num_samples"])
    return budget


DEFAULT_ALPHA = 0.1  # GoalEvalConfig.alpha's default: descriptions name alpha only when it differs


@dataclass(frozen=True)
class GoalEvalConfig:
    """Goal-image MPC evaluation settings.

    Attributes:
        task: a goal task of `envs.make` ("reacher-pose", "point_mass-goal", ...).
        planner: "cem" (DINO-WM's), "mppi" or "icem".
        horizon, num_samples, num_elites, iterations: the planner's budget, in model steps
            (defaults: `dinowm_cem_settings()`).
        objective: "last" (distance of the last predicted frame to the goal, the paper's)
            or "all" (mean over the predicted frames).
        alpha: weight of the proprio term of the DINO-WM objective (only with use_proprio).
        env_steps: env (agent) steps each goal gets.
        num_goals: evaluate the first this many goals of the set (None: all).
        seed: seeds the planner (goal k uses seed + k) and the default env.
        replan_every: model steps (oracle: agent steps) executed per plan, at most horizon.
        action_chunks: plan the frameskip actions of each model step separately
            (A x fs numbers per step, the paper's action space); False plans one action
            per model step, repeated over the frameskip.
        use_proprio: give the model the env's proprioception (qpos, qvel: the data set's
            proprio) with every frame, and the goal's with the goal image.
        image_size: pixel observation side of the default env (the data set's).
        action_repeat: control steps per env step of the default env (the data set's;
            None: the env's preset).
        oracle_horizon: the oracle planner's horizon in agent steps.
        oracle_objective: the oracle's objective mode ("all" by default: with "last" over
            25 agent steps the true-physics planner steers the reacher arm through the goal
            pose without stopping there, meeting 6 of 50 reacher-pose goals at the end
            against 50 of 50 with "all"; see the README).
        oracle_threads: MuJoCo rollout threads of the oracle.
        goal_at_rest: give DINO-WM the goal's proprio with its joint velocities set to zero
            (the goal pose at rest) instead of the velocities the goal state had in the
            data. A goal drawn from a random-action trajectory is usually a pose the arm
            passed through at speed; asking for that speed asks the planner not to stop
            there. Only with use_proprio; the oracle's goal is a pose either way.
        proprio_positions: compare only the joint positions (the env's nq leading
            proprio entries) in DINO-WM's proprio term, read back from the predicted
            embeddings (`dino_goal_objective(proprio_dims=nq)`), so the goal's velocities
            play no part. Only with use_proprio; the oracle ignores it.
        precision: "float32" or "bfloat16" (the predictor's matrix products in bfloat16
            autocast while planning; see `MPCController`). The oracle ignores it.
    """

    task: str = "reacher-pose"
    planner: str = "cem"
    horizon: int = 5
    num_samples: int = 300
    num_elites: int = 30
    iterations: int = 30
    objective: ObjectiveMode = "last"
    alpha: float = DEFAULT_ALPHA
    env_steps: int = 50
    num_goals: int | None = None
    seed: int = 0
    replan_every: int = 1
    action_chunks: bool = True
    use_proprio: bool = True
    image_size: int = 112
    action_repeat: int | None = None
    oracle_horizon: int = 25
    oracle_objective: ObjectiveMode = "all"
    oracle_threads: int = 1
    goal_at_rest: bool = False
    proprio_positions: bool = False
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if self.task not in GOAL_TASKS:
            raise ValueError(f"task={self.task!r} is not a goal task; accepted: {sorted(GOAL_TASKS)}")
        if str(self.planner).lower() not in PLANNERS:
            raise ValueError(f"unknown planner {self.planner!r}; accepted: {sorted(PLANNERS)}")
        object.__setattr__(self, "planner", str(self.planner).lower())
        for name in ("objective", "oracle_objective"):
            if getattr(self, name) not in ("last", "all"):
                raise ValueError(f"{name}={getattr(self, name)!r} must be 'last' or 'all'")
        for name in ("horizon", "num_samples", "num_elites", "iterations", "env_steps", "replan_every", "image_size",
                     "oracle_horizon", "oracle_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        for name in ("num_goals", "action_repeat"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive int or None")
        if self.num_elites > self.num_samples:
            raise ValueError(f"num_elites={self.num_elites} exceeds num_samples={self.num_samples}")
        if self.replan_every > min(self.horizon, self.oracle_horizon):
            raise ValueError(f"replan_every={self.replan_every} must be at most horizon={self.horizon} and "
                             f"oracle_horizon={self.oracle_horizon}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha={self.alpha!r} must be a finite number >= 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0")
        for name in ("action_chunks", "use_proprio", "goal_at_rest", "proprio_positions"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")

    @property
    def objective_description(self) -> str:
        """DINO-WM's objective in words, as tables and logs show it (`describe_objective`)."""
        return describe_objective(self.objective, self.goal_at_rest, self.proprio_positions,
                                  self.alpha if self.use_proprio else None)

    @classmethod
    def for_dataset(cls, dataset: OfflineDataset, **overrides: Any) -> GoalEvalConfig:
        """Task, image size and action repeat of the data set's env; overrides on top."""
        settings: dict[str, Any] = {"task": dataset.env.get("task"), "image_size": dataset.image_size,
                                    "action_repeat": dataset.env.get("action_repeat")}
        settings.update(overrides)
        return cls(**settings)

    def planner_settings(self) -> dict[str, Any]:
        """Planner config fields (horizon excluded: it differs between model and oracle)."""
        settings: dict[str, Any] = {"num_samples": self.num_samples, "num_elites": self.num_elites,
                                    "iterations": self.iterations, "init_std": 1.0, "output": "mean"}
        if self.planner == "mppi":
            settings.pop("output")  # MPPI's own default output
        return settings

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GoalRecord:
    """One goal's outcome.

    Attributes:
        goal: index in the GoalSet; trajectory, start_step: where it came from.
        success: goal met at the end of the budget (the env's threshold).
        reached: goal met at any env step.
        start_distance, final_distance, min_distance: goal distance (the env's units).
        env_steps: env steps taken.
        plan_calls: controller calls that planned; mean_plan_ms / max_plan_ms their time
            (encoding the observation included).
        start_image_diff: mean absolute difference between the env's rendered start
            frame and the GoalSet's start image (0 when the scene matches; None when
            sizes differ or for the oracle).
        picture: the start | goal | final PNG, when written.
        wall_s: seconds the goal took (planning, env steps and rendering), so that the
            wall time of an evaluation that resumed is still the sum over its goals.
    """

    goal: int
    trajectory: int
    start_step: int
    success: bool
    reached: bool
    start_distance: float
    final_distance: float
    min_distance: float
    env_steps: int
    plan_calls: int
    mean_plan_ms: float
    max_plan_ms: float
    start_image_diff: float | None = None
    picture: str | None = None
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_goals(records: Sequence[GoalRecord]) -> dict[str, Any]:
    """Success rate (end of budget), reach rate (any step), distances and plan time."""
    if not records:
        raise ValueError("no records to summarise")
    return {
        "goals": len(records),
        "success_rate": float(np.mean([r.success for r in records])),
        "reached_rate": float(np.mean([r.reached for r in records])),
        "mean_start_distance": float(np.mean([r.start_distance for r in records])),
        "mean_final_distance": float(np.mean([r.final_distance for r in records])),
        "mean_plan_ms": float(np.mean([r.mean_plan_ms for r in records])),
    }


# --------------------------------------------------------------------------------------
# Envs and seeds
# --------------------------------------------------------------------------------------


def make_goal_env(config: GoalEvalConfig) -> Any:
    """The pixel goal env of `config` (single frames, time limit = the env-step budget)."""
    import envs  # here: the caller picks MUJOCO_GL before dm_control loads

    return envs.make(config.task, obs="pixels", image_size=config.image_size, action_repeat=config.action_repeat,
                     time_limit=config.env_steps, seed=config.seed)


def goal_reset_seeds(goals: GoalSet, dataset: OfflineDataset | None = None) -> np.ndarray:
    """The env reset seed of each goal's trajectory, int64 [K].

    With a data set: its recorded per-trajectory seeds (`collect` stores them). Without
    one: `goals.trajectories`, which for goals drawn from an env are the reset seeds.

    Raises:
        ValueError: the data set has no "seeds" array (made by `write_dataset` without it).
    """
    if dataset is None:
        return np.asarray(goals.trajectories, dtype=np.int64)
    if "seeds" not in dataset.keys:
        raise ValueError(f"the data set at {dataset.root} records no reset seeds; pass reset_seeds= yourself")
    return np.asarray(dataset.array("seeds"), dtype=np.int64)[np.asarray(goals.trajectories)]


def _proprio(env: Any) -> np.ndarray:
    """qpos then qvel, float32 [Pd]: the data set's proprio (training.datasets)."""
    physics = env.physics
    return np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float32)


def describe_objective(objective: str, goal_at_rest: bool = False, proprio_positions: bool = False,
                       alpha: float | None = None) -> str:
    """DINO-WM's objective settings in words: "last", "all, goal at rest", "all, proprio positions",
    "all, proprio positions, alpha 1", ... (alpha only when given and not the default 0.1)."""
    return (objective + (", goal at rest" if goal_at_rest else "") + (", proprio positions" if proprio_positions else "")
            + (f", alpha {alpha:g}" if alpha is not None and alpha != DEFAULT_ALPHA else ""))


def goal_proprio_at_rest(goal_proprio: np.ndarray, nq: int) -> np.ndarray:
    """The goal proprio (qpos then qvel, [..., Pd]) with its velocities set to zero.

    Raises:
        ValueError: a proprio shorter than nq (not this env's layout).
    """
    goal_proprio = np.array(goal_proprio, dtype=np.float32, copy=True)
    if goal_proprio.shape[-1] < nq:
        raise ValueError(f"the goal proprio has {goal_proprio.shape[-1]} numbers, fewer than the env's nq={nq} "
                         "positions; it is not qpos then qvel of this env")
    goal_proprio[..., nq:] = 0.0
    return goal_proprio


def _render(env: Any) -> np.ndarray:
    """The env's pixel observation of its current state, uint8 [3, H, W]."""
    from envs.observations import render_chw

    return render_chw(env.physics, env.config.image_size, env.camera)


def _goal_achieved(env: Any, goals: GoalSet, k: int) -> np.ndarray:
    if goals.goal_achieved is not None:
        return np.asarray(goals.goal_achieved[k], dtype=np.float32)
    from envs.physics_state import preserved_physics

    with preserved_physics(env.physics):
        env.set_physics_state(goals.goal_states[k])
        return env.achieved_goal().astype(np.float32)


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------


def evaluate_goals(
    model: Any,
    goals: GoalSet,
    config: GoalEvalConfig,
    env_factory: Callable[[], Any] | None = None,
    progress: bool = False,
    frames_dir: str | Path | None = None,
    reset_seeds: Sequence[int] | np.ndarray | None = None,
    resume_file: str | Path | None = None,
    run_identity: dict[str, Any] | None = None,
) -> list[GoalRecord]:
    """Receding-horizon MPC from each goal's start to its goal image.

    Goals are independent (goal k's controller is seeded with `config.seed + k`), so an
    evaluation can stop after any goal and go on later: with `resume_file`, each finished
    goal's record is written there atomically, and a later call with the same settings
    skips the goals already recorded. Records made with other settings (planner budget,
    goals, seeds, or a different `run_identity`, e.g. another model file) are discarded
    with a warning, since they would not belong to this evaluation.

    Args:
        model: a `DinoWM` (put in eval mode; plans on its device), or "oracle" for the
            true-physics baseline on the same goals.
        goals: start/goal pairs (`sample_goals`).
        config: planner, objective and budget.
        env_factory: returns a pixel goal env of `config.task` with single frames;
            default `make_goal_env(config)`. One env serves every goal.
        progress: show a tqdm bar over env steps.
        frames_dir: when given, write `goal-<k>.png` (start | goal | final) per goal.
        reset_seeds: env reset seed per goal (`goal_reset_seeds`); default
            `goals.trajectories` (right for goals drawn from an env, and for a data set
            collected with seed 0). Only the scene (markers) depends on it.
        resume_file: JSON file of the records finished so far (read, then rewritten
            after every goal); None keeps nothing between calls.
        run_identity: extra facts that must match for saved records to be reused
            (JSON-serialisable; for example the trained model's hash).

    Returns:
        One `GoalRecord` per goal, in order.

    Raises:
        ValueError: more goals asked for than the set holds, an env that is not a pixel
            goal env of `config.task`, or a model whose action size differs from the env's.
    """
    count = len(goals) if config.num_goals is None else config.num_goals
    if count > len(goals):
        raise ValueError(f"num_goals={config.num_goals} but the GoalSet holds {len(goals)} goals")
    seeds = np.asarray(goals.trajectories if reset_seeds is None else reset_seeds, dtype=np.int64)
    if len(seeds) < count:
        raise ValueError(f"reset_seeds has {len(seeds)} entries; {count} goals need one each")
    oracle = isinstance(model, str)
    if oracle and model != "oracle":
        raise ValueError(f"model={model!r}: pass a DinoWM or 'oracle'")
    env = make_goal_env(config) if env_factory is None else env_factory()
    base = getattr(env, "unwrapped", env)
    if not getattr(base, "is_goal_env", False) or base.config.obs != "pixels" or base.config.frame_stack != 1:
        raise ValueError(f"evaluate_goals needs a pixel goal env with single frames (envs.make({config.task!r}, "
                         f"obs='pixels')); got {type(base).__name__}")
    if base.task_id.name != config.task:
        raise ValueError(f"the env runs {base.task_id.name!r} but config.task={config.task!r}")
    action_dim = int(base.action_space.shape[0])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count * config.env_steps, unit="env step", desc="oracle" if oracle else "dinowm",
                   dynamic_ncols=True)
    oracle_model = None
    try:
        if oracle:
            from models.oracle import OracleModel

            oracle_model = OracleModel(base, num_threads=config.oracle_threads)
            planner = make_planner(config.planner, action_dim, horizon=config.oracle_horizon,
                                   **config.planner_settings())
            frameskip, plan_model, factory = 1, oracle_model, oracle_goal_objective(config.oracle_objective)
            device = torch.device("cpu")
        else:
            from models.objectives import make_goal_objective

            if int(model.config.action_dim) != action_dim:
                raise ValueError(f"the model has action_dim={model.config.action_dim}, the env {config.task} has "
                                 f"{action_dim}")
            model.eval()
            frameskip = int(model.config.frameskip)
            plan_dim = action_dim * frameskip if config.action_chunks else action_dim
            planner = make_planner(config.planner, plan_dim, horizon=config.horizon, **config.planner_settings())
            plan_model = GoalConditionedDinoWM(model, use_proprio=config.use_proprio)
            factory = make_goal_objective(alpha=config.alpha if config.use_proprio else 0.0, mode=config.objective,
                                          proprio_dims=int(base.physics.model.nq) if config.proprio_positions else None)
            device = model.action_mean.device
        identity = _evaluation_identity(config, goals, seeds[:count], oracle, count, run_identity)
        records = _load_partial_records(resume_file, identity)
        if bar is not None and records:
            bar.update(len(records) * config.env_steps)
        for k in range(len(records), count):
            controller = MPCController(plan_model, planner, objective=factory, replan_every=config.replan_every,
                                       device=device, seed=config.seed + k,
                                       precision="float32" if oracle else config.precision)
            records.append(_one_goal(base, controller, plan_model if not oracle else None, goals, k, int(seeds[k]),
                                     config, action_dim, frameskip, frames_dir, bar))
            if resume_file is not None:
                _save_partial_records(resume_file, identity, records)
    finally:
        if bar is not None:
            bar.close()
        if oracle_model is not None:
            oracle_model.close()
        if env_factory is None:
            env.close()
    return records


# GoalEvalConfig fields one method never reads, keyed by "is it the oracle": they are left
# out of its resume identity (and out of saved identities when comparing).
_OTHER_METHODS_FIELDS: dict[bool, frozenset[str]] = {
    False: frozenset({"oracle_horizon", "oracle_objective", "oracle_threads"}),
    True: frozenset({"horizon", "objective", "alpha", "action_chunks", "use_proprio", "goal_at_rest", "proprio_positions",
                     "precision"}),
}


def _evaluation_identity(config: GoalEvalConfig, goals: GoalSet, seeds: np.ndarray, oracle: bool, count: int,
                         extra: dict[str, Any] | None) -> dict[str, Any]:
    """What must match for saved per-goal records to continue an evaluation (JSON types):
    the settings that method uses (a change to the other method's settings keeps them)."""
    settings = {k: v for k, v in config.as_dict().items() if k not in _OTHER_METHODS_FIELDS[oracle]}
    return {
        "method": "oracle" if oracle else "dinowm",
        "config": json.loads(json.dumps(settings)),
        "trajectories": [int(t) for t in goals.trajectories[:count]],
        "start_steps": [int(t) for t in goals.start_steps[:count]],
        "reset_seeds": [int(t) for t in seeds],
        "run": json.loads(json.dumps(extra or {})),
    }


def _load_partial_records(path: str | Path | None, identity: dict[str, Any]) -> list[GoalRecord]:
    """The records saved at `path` by an evaluation with the same identity (else none)."""
    if path is None or not Path(path).is_file():
        return []
    try:
        saved = json.loads(Path(path).read_text())
        ignored = _OTHER_METHODS_FIELDS[identity["method"] == "oracle"]
        saved["identity"]["config"] = {k: v for k, v in saved["identity"]["config"].items() if k not in ignored}
        same = saved["identity"] == identity
        records = [GoalRecord(**r) for r in saved["records"]] if same else []
    except (ValueError, KeyError, TypeError) as error:
        warnings.warn(f"ignoring the unreadable partial evaluation {path} ({error}); starting over", UserWarning,
                      stacklevel=3)
        return []
    if not same:
        changed = sorted(k for k in identity if saved["identity"].get(k) != identity[k])
        warnings.warn(f"the partial evaluation {path} was made with other settings (changed: {', '.join(changed)}); "
                      "starting over", UserWarning, stacklevel=3)
        return []
    return records[: len(identity["trajectories"])]


def _save_partial_records(path: str | Path, identity: dict[str, Any], records: list[GoalRecord]) -> None:
    text = json.dumps({"identity": identity, "records": [r.as_dict() for r in records]}, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), suffix=".json")


def _one_goal(env: Any, controller: MPCController, adapter: GoalConditionedDinoWM | None, goals: GoalSet, k: int,
              seed: int, config: GoalEvalConfig, action_dim: int, frameskip: int, frames_dir: str | Path | None,
              bar: Any) -> GoalRecord:
    goal_start = time.perf_counter()
    env.reset(seed=seed)
    env.set_physics_state(goals.start_states[k])
    frame = _render(env)
    start_frame = frame
    target = _goal_achieved(env, goals, k)

    def measure() -> tuple[bool, float]:
        achieved = env.achieved_goal().astype(np.float32)
        return bool(env.compute_success(achieved, target)), float(-env.compute_reward(achieved, target))

    success, distance = measure()
    start_distance = min_distance = distance
    reached = success
    diff = None
    if adapter is not None and goals.start_images[k].shape == frame.shape:
        diff = float(np.abs(frame.astype(np.float32) - goals.start_images[k].astype(np.float32)).mean())
        if diff > _IMAGE_MISMATCH:
            warnings.warn(
                f"goal {k}: the env's start frame differs from the GoalSet's start image (mean |diff| {diff:.1f}); "
                "the scene (e.g. a goal marker) may differ: pass reset_seeds=goal_reset_seeds(goals, dataset)",
                UserWarning, stacklevel=3,
            )
    goal_proprio = goals.goal_proprio[k]
    if config.goal_at_rest:
        goal_proprio = goal_proprio_at_rest(goal_proprio, int(env.physics.model.nq))
    controller.reset()
    plan_ms: list[float] = []
    steps = 0
    ended = False
    while steps < config.env_steps and not ended:
        if adapter is None:
            obs_in, goal_in = env.get_physics_state(), goals.goal_states[k]
        else:
            adapter.set_proprio(_proprio(env), goal_proprio)
            obs_in, goal_in = frame, goals.goal_images[k]
        before = controller.last_result
        start = time.perf_counter()
        action = np.asarray(controller.act(obs_in, goal=goal_in), dtype=np.float32)
        elapsed = 1000 * (time.perf_counter() - start)
        if controller.last_result is not before:
            plan_ms.append(elapsed)
        if action.size == action_dim * frameskip:
            chunk = action.reshape(frameskip, action_dim)  # a_0 first, as the model's action chunk
        else:
            chunk = np.repeat(action.reshape(1, action_dim), frameskip, axis=0)
        for a in chunk:
            if steps >= config.env_steps:
                break
            obs, _, terminated, truncated, _ = env.step(a)
            steps += 1
            if bar is not None:
                bar.update(1)
            ok, distance = measure()
            reached = reached or ok
            min_distance = min(min_distance, distance)
            frame = obs["observation"]
            if terminated or truncated:
                ended = True
                break
    success, distance = measure()
    picture = None
    if frames_dir is not None:
        picture = str(write_goal_picture(Path(frames_dir) / f"goal-{k:03d}.png", start_frame, goals.goal_images[k],
                                         frame))
    return GoalRecord(
        goal=k, trajectory=int(goals.trajectories[k]), start_step=int(goals.start_steps[k]), success=success,
        reached=reached, start_distance=start_distance, final_distance=distance, min_distance=min_distance,
        env_steps=steps, plan_calls=len(plan_ms), mean_plan_ms=float(np.mean(plan_ms)) if plan_ms else 0.0,
        max_plan_ms=float(np.max(plan_ms)) if plan_ms else 0.0, start_image_diff=diff, picture=picture,
        wall_s=time.perf_counter() - goal_start,
    )


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------


def _hwc(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [3, H, W] or [H, W, 3] -> [size, size, 3] (nearest-neighbour resize)."""
    x = np.asarray(image)
    if x.ndim != 3:
        raise ValueError(f"expected an image [3, H, W] or [H, W, 3], got shape {x.shape}")
    if x.shape[0] == 3 and x.shape[-1] != 3:
        x = np.moveaxis(x, 0, -1)
    h, w = x.shape[:2]
    rows = (np.arange(size) * h // size).clip(0, h - 1)
    cols = (np.arange(size) * w // size).clip(0, w - 1)
    return np.ascontiguousarray(x[rows][:, cols]).astype(np.uint8)


def write_goal_picture(path: str | Path, start: np.ndarray, goal: np.ndarray, final: np.ndarray,
                       size: int | None = None) -> Path:
    """A PNG of start | goal | final frames side by side (4-pixel white gaps), written
    atomically.

    Args:
        path: the .png to write.
        start, goal, final: uint8 images, CHW or HWC (any sizes; resized to `size`).
        size: side of each panel; default the start frame's height, at least 96 px
            (small observations are scaled up so they can be seen).

    Returns:
        The path.
    """
    from training.video import side_by_side

    first = np.asarray(start)
    height = first.shape[1] if first.ndim == 3 and first.shape[0] == 3 else first.shape[0]
    side = size if size is not None else max(96, int(height))
    panels = [_hwc(x, side) for x in (start, goal, final)]
    picture = side_by_side(side_by_side(panels[0], panels[1]), panels[2])
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ImportError("writing PNGs needs imageio: pip install -e '.[video]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        imageio.imwrite(tmp, picture, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------
# The registry's planning entry point (models.registry, "dinowm")
# --------------------------------------------------------------------------------------


def prepare_planning(request: Any) -> Any:
    """Goal-image MPC with a trained DINO-WM, as the command line runs it: `episodes`
    goals, each 25 env steps of random actions away from its start (DINO-WM's protocol),
    success as the task defines it. A record's "return" is minus the final distance to
    the goal (the task's own measure)."""
    import envs
    from models.loading import load
    from models.planning import CHECKPOINT_DIR, PlanSetup, shipped_checkpoint
    from models.registry import get
    from training.datasets import sample_goals
    from training.evaluation import EpisodeRecord

    checkpoint = request.checkpoint
    source = str(checkpoint)
    if checkpoint is None:
        checkpoint = shipped_checkpoint(get("dinowm").shipped or "", request.task)
        source = f"the shipped checkpoint checkpoints/{checkpoint.name}"
        if not checkpoint.is_file():
            shipped = sorted(p.name for p in CHECKPOINT_DIR.glob("dinowm-*.pt"))
            raise ValueError(f"no DINO-WM checkpoint ships for {request.task} (shipped: {shipped}); pass --checkpoint "
                             "runs/<run>/model.pt (train one with `run_planning.py train --model dinowm`)")
    if request.goal is not None:
        raise ValueError("--goal files are not supported for dinowm yet; goals are drawn from the task (see --episodes)")
    model = load(checkpoint, device=request.device, expect="dinowm",
                 encoder_weights=request.options.get("encoder_weights"))  # fmt: skip
    # Flags win; then what the model file recommends (a shipped file records the goal
    # objective it was measured with); then the paper's defaults below.
    options = {**getattr(model, "planning", {}), **request.options}
    explicit = dict(request.overrides)
    # The paper's CEM (300 x 30) takes minutes per call on a CPU; flags still win.
    on_cpu = request.device.type == "cpu"
    overrides = dinowm_cpu_budget(**explicit) if on_cpu else explicit
    try:
        config = GoalEvalConfig(task=request.task, planner=request.planner, image_size=model.config.image_size,
                                env_steps=options.get("env_steps", 50), num_goals=request.episodes, seed=request.seed,
                                precision=request.precision, objective=options.get("goal_objective", "last"),
                                goal_at_rest=bool(options.get("goal_at_rest", False)),
                                proprio_positions=bool(options.get("proprio_positions", False)),
                                **({"alpha": options["goal_alpha"]} if "goal_alpha" in options else {}), **overrides)
    except TypeError as error:
        raise ValueError(str(error)) from None
    env = make_goal_env(config)
    # Goals come from a second env without the evaluation's time limit (25 steps ahead).
    goal_env = envs.make(request.task, obs="pixels", image_size=config.image_size, action_repeat=config.action_repeat)
    goals = sample_goals(goal_env, request.episodes, seed=1_000_000 + request.seed, offset=25)
    goal_env.close()
    budget_note = "; the CPU budget, the paper uses 300 x 30" if on_cpu and not explicit else ""
    description = (f"{request.episodes} goals, planner {config.planner} (horizon {config.horizon}, "
                   f"{config.num_samples} samples, {config.num_elites} elites, {config.iterations} iterations"
                   f"{budget_note}; objective {config.objective_description}), "
                   f"model dinowm ({model.config.image_size} px, {source})")
    out = request.out if request.out is not None else Path("runs") / f"{request.task}-{request.planner}-dinowm"

    def run(on_record: Callable[[Any], None]) -> list[Any]:
        goal_records = evaluate_goals(model, goals, config, env_factory=lambda: env, progress=request.progress,
                                      frames_dir=out / "goals")
        records = []
        for r in goal_records:
            records.append(EpisodeRecord(r.goal, 1_000_000 + request.seed + r.goal, -r.final_distance, r.success,
                                         r.env_steps, r.mean_plan_ms))
            on_record(records[-1])
        print(f"goals reached: {summarise_goals(goal_records)}", flush=True)
        return records

    return PlanSetup(env=env, controller=None, description=description, run=run)
