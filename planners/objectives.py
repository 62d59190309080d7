"""Objectives built from a world model: the functions a planner maximises.

A model here is anything with `next(z, a)` and `reward(z, a)` (and optionally `value`,
`policy`, `rollout`): our world models, the MuJoCo reference model, or a user's own torch
dynamics. This module depends on torch only, so `planners` stays usable without
`models`; `models.objectives` re-exports these functions.

Shapes:
    B problems, N candidates, H horizon, A action size, Z... latent shape,
    M = B * N (a flattened batch of rollouts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from planners.base import Objective

__all__ = ["rollout", "reward_objective", "goal_objective", "policy_proposals", "GoalMode"]

GoalMode = Literal["last", "all"]


def rollout(model: Any, z: Tensor, actions: Tensor) -> Tensor:
    """Latents after each action: z_1 .. z_H.

    Uses `model.rollout` when the model has one (a model may run its whole horizon in one
    call, for example a transformer over a frame window), else loops `model.next`.

    Shapes:
        z: [M, *Z]; actions: [M, H, A] -> [M, H, *Z]
    """
    own = getattr(model, "rollout", None)
    if callable(own):
        latents = own(z, actions)
        expected = (actions.shape[0], actions.shape[1], *z.shape[1:])
        if tuple(latents.shape) != expected:
            raise ValueError(f"{type(model).__name__}.rollout returned shape {tuple(latents.shape)}; expected {expected}")
        return latents
    steps = []
    for t in range(actions.shape[1]):
        z = model.next(z, actions[:, t])
        steps.append(z)
    return torch.stack(steps, dim=1)


def _expand_to_candidates(z0: Tensor, num_candidates: int) -> Tensor:
    """z0 [B, *Z] -> [B * N, *Z], each problem's latent repeated for its N candidates."""
    b = z0.shape[0]
    return z0.unsqueeze(1).expand(b, num_candidates, *z0.shape[1:]).reshape(b * num_candidates, *z0.shape[1:])


def _checked_reward(model: Any, z: Tensor, action: Tensor) -> Tensor:
    """model.reward(z [M, *Z], action [M, A]) -> [M], with the shape checked."""
    rewards = model.reward(z, action)
    if tuple(rewards.shape) != (z.shape[0],):
        raise ValueError(
            f"{type(model).__name__}.reward returned shape {tuple(rewards.shape)} for {z.shape[0]} "
            f"latent-action pairs; expected ({z.shape[0]},)"
        )
    return rewards


def _at_least_float32(t: Tensor) -> Tensor:
    """bfloat16/float16 -> float32; float32 and float64 unchanged."""
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t


def _check_actions(actions: Tensor, z0: Tensor) -> None:
    if actions.ndim != 4 or actions.shape[0] != z0.shape[0]:
        raise ValueError(
            f"actions have shape {tuple(actions.shape)}; expected (B, N, H, A) with B = {z0.shape[0]} "
            "(the batch of the initial latent)"
        )


def reward_objective(model: Any, z0: Tensor, discount: float = 0.99, use_value: bool = True) -> Objective:
    """The discounted predicted return of each candidate, plus a terminal value.

    R = sum_{t<H} discount^t reward(z_t, a_t) + discount^H value(z_H)   (TD-MPC, TD-MPC2).
    The value term is added when `use_value` and the model has `value`. PlaNet's
    objective is discount=1, use_value=False.

    Args:
        model: has `next` and `reward`; optionally `value`, `rollout`, or
            `rollout_with_rewards(z [M, *Z], actions [M, H, A]) -> (latents [M, H, *Z],
            rewards [M, H])` for models that predict rewards along with the latents.
        z0: [B, *Z] the current latent of each problem.
        discount: gamma in (0, 1].
        use_value: add the terminal value when the model provides one.

    Returns:
        objective(actions [B, N, H, A]) -> returns [B, N].
    """
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"discount={discount!r} must be in (0, 1]")
    value_fn = getattr(model, "value", None) if use_value else None

    def objective(actions: Tensor) -> Tensor:
        _check_actions(actions, z0)
        b, n, h, a = actions.shape
        z = _expand_to_candidates(z0, n)  # [M, *Z]
        flat_actions = actions.reshape(b * n, h, a)  # [M, H, A]
        with_rewards = getattr(model, "rollout_with_rewards", None)
        if callable(with_rewards):
            # Models whose reward needs more than (z_t, a_t), e.g. the physics reference
            # model summing rewards over action-repeat sub-steps, predict both at once.
            latents, rewards = with_rewards(z, flat_actions)  # [M, H, *Z], [M, H]
            if tuple(rewards.shape) != (b * n, h):
                raise ValueError(
                    f"{type(model).__name__}.rollout_with_rewards returned rewards of shape "
                    f"{tuple(rewards.shape)}; expected {(b * n, h)}"
                )
            last = latents[:, -1]
        elif callable(getattr(model, "rollout", None)):
            latents = rollout(model, z, flat_actions)  # [M, H, *Z]
            before = torch.cat([z.unsqueeze(1), latents[:, :-1]], dim=1).flatten(0, 1)  # [M * H, *Z]
            rewards = _checked_reward(model, before, flat_actions.flatten(0, 1)).view(b * n, h)
            last = latents[:, -1]
        else:
            # Step by step, reward beside dynamics: M-row matmuls stay in cache, where one
            # M * H-row reward call was measured slower per FLOP on CPU.
            step_rewards = []
            for t in range(h):
                step_rewards.append(_checked_reward(model, z, flat_actions[:, t]))
                z = model.next(z, flat_actions[:, t])
            rewards, last = torch.stack(step_rewards, dim=1), z  # [M, H], [M, *Z]
        # Sums in at least float32 even when the model ran in bfloat16 (MPCController
        # precision): the planner ranks candidates by small differences of these returns.
        # float64 (the physics model) stays float64.
        rewards = _at_least_float32(rewards)
        weights = discount ** torch.arange(h, device=rewards.device, dtype=rewards.dtype)  # [H]
        returns = (rewards * weights).sum(dim=1)  # [M]
        if value_fn is not None:
            returns = returns + discount**h * _at_least_float32(value_fn(last).reshape(b * n))
        return returns.view(b, n)

    return objective


def goal_objective(model: Any, z0: Tensor, z_goal: Tensor, mode: GoalMode = "last") -> Objective:
    """Negative mean squared latent distance to a goal latent (DINO-WM's objective).

    Args:
        model: has `next` (or `rollout`).
        z0: [B, *Z] current latents; z_goal: [B, *Z] (or [*Z], shared) goal latents.
        mode: "last" scores the final latent only; "all" averages over every step.

    Returns:
        objective(actions [B, N, H, A]) -> returns [B, N] (0 is the goal itself).
    """
    if mode not in ("last", "all"):
        raise ValueError(f"mode={mode!r} must be 'last' or 'all'")
    if z_goal.shape == z0.shape[1:]:
        z_goal = z_goal.unsqueeze(0).expand_as(z0)
    if z_goal.shape != z0.shape:
        raise ValueError(f"z_goal has shape {tuple(z_goal.shape)}; expected {tuple(z0.shape)} like z0 (or {tuple(z0.shape[1:])})")

    def objective(actions: Tensor) -> Tensor:
        _check_actions(actions, z0)
        b, n, h, a = actions.shape
        latents = rollout(model, _expand_to_candidates(z0, n), actions.reshape(b * n, h, a))  # [M, H, *Z]
        goal = _expand_to_candidates(z_goal, n).unsqueeze(1)  # [M, 1, *Z]
        if mode == "last":
            latents = latents[:, -1:]
        distance = (_at_least_float32(latents) - _at_least_float32(goal)).pow(2).flatten(2).mean(dim=2)  # [M, H or 1]
        return -distance.mean(dim=1).view(b, n)

    return objective


def policy_proposals(model: Any, z0: Tensor, horizon: int, num: int) -> Tensor:
    """Guide sequences from the model's policy, rolled through its dynamics (TD-MPC2).

    Shapes:
        z0: [B, *Z] -> proposals [B, num, H, A]
    """
    b = z0.shape[0]
    z = _expand_to_candidates(z0, num)
    actions = []
    for t in range(horizon):
        action = model.policy(z)  # [M, A]
        actions.append(action)
        if t < horizon - 1:
            z = model.next(z, action)
    return torch.stack(actions, dim=1).view(b, num, horizon, -1)

