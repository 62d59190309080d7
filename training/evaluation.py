"""Running a controller in an environment for whole episodes and recording what it did."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from planners import MPCController

__all__ = ["EpisodeRecord", "run_episode", "seeded_sampling", "summarise"]

# What the controller sees: (env, env observation) -> the model's observation.
ModelInput = Callable[[Any, Any], Any]


@dataclass
class EpisodeRecord:
    """One episode's outcome. `success` is None for tasks that define none."""

    episode: int
    seed: int
    episode_return: float
    success: bool | None
    steps: int
    mean_plan_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_episode(
    env: Any,
    controller: MPCController,
    seed: int,
    episode: int = 0,
    model_input: ModelInput = lambda env, obs: obs,
    goal_input: Callable[[Any], Any] | None = None,
    max_steps: int | None = None,
    frames: list[np.ndarray] | None = None,
    goal_frame: Callable[[Any], np.ndarray] | None = None,
    progress: Any = None,
) -> EpisodeRecord:
    """Reset `env` with `seed` and act with `controller` until the episode ends.

    Args:
        env: a Gymnasium env (ours: `envs.make`).
        controller: anything with `reset()` and `act(obs)` (`act(obs, goal=...)` for goal
            objectives), e.g. `MPCController`; acts on `model_input(env, obs)`; reset here.
        seed: the episode's reset seed.
        model_input: maps the env observation to what the model encodes (the physics
            state for the reference model, the "observation" entry for goal tasks).
        goal_input: env -> goal observation, for goal objectives; None for reward ones.
        max_steps: stop after this many agent steps (None: the env's own limit).
        frames: when a list, rendered frames (HWC uint8) are appended to it.
        goal_frame: env -> HWC image shown beside each frame (goal tasks).
        progress: a tqdm-like object with update(n), or None.

    Returns:
        The episode's record: return, success (info["is_success"] at the end, when the
        env reports it), steps and mean time of `controller.act`.
    """
    obs, info = env.reset(seed=seed)
    controller.reset()
    goal = goal_input(env) if goal_input is not None else None
    shown_goal = goal_frame(env) if goal_frame is not None and frames is not None else None
    total, steps, plan_seconds = 0.0, 0, 0.0
    success: bool | None = info.get("is_success")
    while max_steps is None or steps < max_steps:
        if frames is not None:
            frame = env.render()
            frames.append(frame if shown_goal is None else _beside(frame, shown_goal))
        start = time.perf_counter()
        model_obs = model_input(env, obs)
        # Controllers without goals (the Dreamer actor) take the observation alone.
        action = controller.act(model_obs) if goal is None else controller.act(model_obs, goal=goal)
        plan_seconds += time.perf_counter() - start
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        steps += 1
        success = info.get("is_success", success)
        if progress is not None:
            progress.update(1)
        if terminated or truncated:
            break
    return EpisodeRecord(episode, seed, total, success, steps, 1000 * plan_seconds / max(steps, 1))


@contextmanager
def seeded_sampling(seed: int, *samplers: Any) -> Iterator[None]:
    """Within the block, each sampler draws from its own generator seeded from `seed`.

    A sampler is anything with a `generator` attribute that its random draws use when it
    is set: an RSSM (posterior and prior latents), an Actor (action samples), an
    MPCController (the planner's candidates). The i-th sampler gets seed `seed + i`; on
    leaving, each gets back the generator it had (None: torch's global one).

    Why: without it, evaluation draws from torch's global generator, whose state depends
    on everything the process did before (training batches, earlier evaluations). The
    same weights on the same episode seeds then score differently in different
    processes: one 100k-step cartpole run's weights scored 153.9 in the run and 146.6 when
    evaluated again. With it, an evaluation is a function of the weights and the seed.

    Example:
        with seeded_sampling(1234, model, actor, controller):
            returns = evaluate_batched(controller, make_env, 10, seed=1234)
    """
    saved = []
    for i, sampler in enumerate(samplers):
        if not hasattr(sampler, "generator"):
            raise TypeError(f"sampler {i} ({type(sampler).__name__}) has no `generator` attribute to seed")
        saved.append(sampler.generator)
        sampler.generator = torch.Generator(device=_device_of(sampler)).manual_seed(seed + i)
    try:
        yield
    finally:
        for sampler, generator in zip(samplers, saved):
            sampler.generator = generator


def _device_of(sampler: Any) -> torch.device:
    """Where a sampler's tensors live: its `device` attribute, else its first parameter's."""
    device = getattr(sampler, "device", None)
    if device is not None:
        return torch.device(device)
    if isinstance(sampler, torch.nn.Module):
        for parameter in sampler.parameters():
            return parameter.device
    return torch.device("cpu")


def _beside(frame: np.ndarray, goal: np.ndarray) -> np.ndarray:
    from training.video import side_by_side

    return side_by_side(frame, goal)


def summarise(records: list[EpisodeRecord]) -> dict[str, Any]:
    """Mean return, success rate (over episodes that report success) and plan time."""
    returns = [r.episode_return for r in records]
    graded = [r.success for r in records if r.success is not None]
    return {
        "episodes": len(records),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "success_rate": float(np.mean(graded)) if graded else None,
        "mean_plan_ms": float(np.mean([r.mean_plan_ms for r in records])),
    }
