"""What the command line hands a model family, and what the family hands back, to plan.

The command line turns its flags into a `PlanRequest` (plain values, no argparse), asks the
family's `prepare` entry point (see `models.registry`) for a `PlanSetup`, and runs its
episodes. The pieces every family shares live here: the planner from a preset or a
budget with the user's flags on top, and the one-line description of a planner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from planners import SamplingPlanner, make_planner

__all__ = [
    "EnvShapes",
    "PlanRequest",
    "PlanSetup",
    "TinyCase",
    "build_planner",
    "describe_planner",
    "env_task",
    "shipped_checkpoint",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass(frozen=True)
class PlanRequest:
    """One planning run, as the user asked for it.

    Attributes:
        task: the task name ("cartpole-swingup", "point_mass-goal", "toy-pendulum").
        obs: "state" or "pixels".
        seed: seed of the first episode (then seed + 1, ...).
        device: where the model runs.
        checkpoint: the model file, or None (the family's shipped one, if any).
        planner: "cem", "mppi" or "icem".
        preset: a published planner setting of that planner, or None.
        overrides: planner config fields the user set (horizon, num_samples, ...).
        action_repeat: physics steps per agent step; None: the family's choice.
        max_steps: cut episodes after this many agent steps; None: the task's limit.
        precision: the model's matrix products while planning ("float32", "bfloat16").
        episodes: how many episodes (or goals).
        options: the family's own options the user set (see `ModelSpec.plan_options`).
        out: the results folder (a family may write pictures there).
        progress: show progress bars.
        goal: a goal-image file, for goal-conditioned models.
    """

    task: str
    obs: str = "state"
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint: Path | None = None
    planner: str = "icem"
    preset: str | None = None
    overrides: Mapping[str, int] = field(default_factory=dict)
    action_repeat: int | None = None
    max_steps: int | None = None
    precision: str = "float32"
    episodes: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    out: Path | None = None
    progress: bool = False
    goal: Path | None = None


@dataclass
class PlanSetup:
    """What a family plans with.

    Attributes:
        env: the environment (reset/step, `max_episode_steps`).
        controller: `MPCController` or anything with `reset()` and `act(obs)`.
        description: one line naming the task, planner and model settings.
        model_input: what the controller sees from `(env, obs)`: the observation itself,
            or e.g. the physics state for the true-physics model.
        goal_frame: `env -> image` of the goal, shown beside video frames, or None.
        controller_for_episode: `episode index -> controller`, for families that start
            every episode with a fresh controller (the toy systems); None: `controller`,
            reset at each episode.
        run: a family's own evaluation (DINO-WM's goals) instead of plain episodes:
            `(on_record) -> list[EpisodeRecord]`, calling `on_record` with each record.
    """

    env: Any
    controller: Any
    description: str
    model_input: Callable[[Any, Any], Any] | None = None
    goal_frame: Callable[[Any], Any] | None = None
    controller_for_episode: Callable[[int], Any] | None = None
    run: Callable[[Callable[[Any], None]], list[Any]] | None = None


@dataclass
class TinyCase:
    """A small instance of a family for the contract tests.

    Attributes:
        model: the planner-facing model.
        obs: one valid observation (what the controller's `act` takes).
        action_dim: A.
        objective: "reward" or "goal".
        goal: the goal observation for goal models.
        save: writes the model as a checkpoint file, or None for families without files.
        env: what `load(path, env=...)` checks the file against, or None.
        controller_kwargs: extra `MPCController` arguments the family plans with.
    """

    model: Any
    obs: Any
    action_dim: int
    objective: str = "reward"
    goal: Any = None
    save: Callable[[Path], None] | None = None
    env: Any = None
    controller_kwargs: dict[str, Any] = field(default_factory=dict)


def build_planner(request: PlanRequest, action_dim: int, budget: Mapping[str, Any] | None = None) -> SamplingPlanner:
    """The planner a request asks for: its preset with the user's overrides on top, or
    else the family's `budget` with the overrides on top.

    A `--samples` other than the budget's scales the budget's elites with it (the same
    fraction of the candidates, at least 1); explicit elites stay as given.

    Raises:
        ValueError: unknown planner or preset, a field that planner lacks, or bad values.
    """
    overrides = dict(request.overrides)
    if request.preset is None:
        overrides = {**(budget or {}), **overrides}
        budget_samples = (budget or {}).get("num_samples")
        if ("num_elites" not in request.overrides and "num_samples" in request.overrides
                and "num_elites" in overrides and budget_samples):
            fraction = overrides["num_elites"] / budget_samples
            overrides["num_elites"] = max(1, min(overrides["num_samples"], round(fraction * overrides["num_samples"])))
    try:
        return make_planner(request.planner, action_dim, preset=request.preset, **overrides)
    except TypeError as error:  # a config field the planner does not have
        raise ValueError(str(error)) from None


def describe_planner(planner: SamplingPlanner) -> str:
    c = planner.config
    return f"(horizon {c.horizon}, {c.num_samples} samples, {c.num_elites} elites, {c.iterations} iterations)"


def shipped_checkpoint(pattern: str, task: str, obs: str = "state") -> Path:
    """Where a family's checkpoint shipped with the repository lives: checkpoints/<pattern>,
    with "-pixels" before the suffix for pixel models."""
    name = pattern.format(task=task)
    if obs != "state":
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem}-{obs}{dot}{suffix}"
    return CHECKPOINT_DIR / name


class EnvShapes:
    """What a family's `load(path, env=...)` checks of an env: its spaces' shapes and task.
    For checking a file against shapes without building a simulator."""

    def __init__(self, obs_shape: tuple[int, ...], action_dim: int, task: str | None = None) -> None:
        self.observation_space = SimpleNamespace(shape=tuple(obs_shape))
        self.action_space = SimpleNamespace(shape=(int(action_dim),))
        self.task = task


def env_task(env: Any) -> str | None:
    """The task name of one of our envs (or of an `EnvShapes`), or None."""
    task_id = getattr(env, "task_id", None)
    return getattr(task_id, "name", None) or getattr(env, "task", None)

