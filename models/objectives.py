"""Objectives built from a world model (DESIGN section 3.4).

The generic ones (`reward_objective`, `goal_objective`, `policy_proposals`, `rollout`)
live in `planners.objectives` so that `planners` (and its `MPCController`) stay
independent of this package; they are re-exported here beside the model-specific ones:

- `dino_goal_objective` / `make_goal_objective`: DINO-WM's feature distance to a goal
  image (Zhou et al., 2024);
- `oracle_goal_objective`: the env's own goal reward over the true physics;
- `trajectory_sampling_objective` / `make_trajectory_sampling_objective`: PETS's
  trajectory sampling over particles (Chua et al., 2018), for models with
  `particle_rollout` (the ensemble);
- `disagreement_objective` / `make_disagreement_objective`: Plan2Explore's intrinsic
  reward, the variance of the members' predictions (Sekar et al., 2020), for models with
  `disagreement_rollout`.

These take the model by duck typing, so this module imports no model family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from planners.objectives import goal_objective, policy_proposals, reward_objective, rollout

if TYPE_CHECKING:
    from planners.base import Objective

__all__ = [
    "PROPAGATIONS",
    "dino_goal_objective",
    "disagreement_objective",
    "goal_objective",
    "make_disagreement_objective",
    "make_goal_objective",
    "make_trajectory_sampling_objective",
    "oracle_goal_objective",
    "policy_proposals",
    "reward_objective",
    "rollout",
    "trajectory_sampling_objective",
]

GoalMode = Literal["last", "all"]
PROPAGATIONS = ("ts1", "tsinf", "expectation")

def dino_goal_objective(
    model: Any,
    z0: Tensor,
    z_goal: Tensor | None,
    alpha: float = 0.0,
    mode: GoalMode = "last",
    proprio_dims: int | None = None,
) -> Objective:
    """DINO-WM's planning objective: -(MSE(visual latent, goal visual latent) + alpha x
    MSE(proprio embedding, goal proprio embedding)), on the last predicted frame ("last",
    the paper's) or averaged over every predicted frame ("all").

    With `proprio_dims=k` (our option, not the paper's) the proprio term compares only the
    first k z-scored proprio entries (the joint positions, k = nq), read back from the
    predicted embeddings through the pseudo-inverse of the linear proprio encoder (the
    encoder's bias cancels in the difference). The embedding MSE mixes positions with
    velocities; asking for the goal's velocities (or for rest) competes with getting there.

    Its signature is the controller's objective factory: `MPCController(model, planner,
    objective=dino_goal_objective)`; use `make_goal_objective(alpha, mode)` for other
    settings. alpha defaults to 0 because a goal given as an image alone has no proprio
    (encode() takes it as zeros); pass alpha > 0 only with a goal encoded with its proprio.

    Args:
        model: a DinoWM (anything with `predict_frames`, `goal_latent` and `config`).
        z0: [B, history, P, C] current latents.
        z_goal: goal windows [B or 1, history, P, C] (from `encode`), or goal frames
            [B or 1, P, L or C].
        alpha: weight of the proprio term.
        mode: "last" or "all".
        proprio_dims: None (the embedding MSE, DINO-WM's) or how many leading proprio
            entries to compare (1 <= k <= proprio_dim).

    Returns:
        objective(actions [B, N, H, A or A * fs]) -> [B, N] (0 at the goal, higher is better).
    """
    if z_goal is None:
        raise ValueError("dino_goal_objective needs a goal: act(obs, goal=goal_image)")
    if mode not in ("last", "all"):
        raise ValueError(f"mode={mode!r} must be 'last' or 'all'")
    if alpha < 0:
        raise ValueError(f"alpha={alpha!r} must be >= 0")
    c = model.config
    readback = None
    if proprio_dims is not None:
        if not c.proprio_emb_dim or not (1 <= proprio_dims <= c.proprio_dim):
            raise ValueError(f"proprio_dims={proprio_dims!r} must be between 1 and the model's proprio_dim="
                             f"{c.proprio_dim} (and the model must embed proprio)")
        # [proprio_emb_dim, proprio_dim] -> its pseudo-inverse, cut to the first k rows: [k, E].
        readback = torch.linalg.pinv(model.proprio_encoder.weight.detach().float())[:proprio_dims].to(z0.device)
    goal = model.goal_latent(z_goal) if z_goal.dim() == 4 else z_goal[..., : c.frame_dim]  # [B or 1, P, L]
    if goal.dim() != 3 or tuple(goal.shape[1:]) != (c.num_patches, c.frame_dim) or goal.shape[0] not in (1, z0.shape[0]):
        raise ValueError(
            f"z_goal has shape {tuple(z_goal.shape)}; expected a window [B, {c.history}, {c.num_patches}, {c.token_dim}] "
            f"or a frame [B, {c.num_patches}, {c.frame_dim}] with B = 1 or {z0.shape[0]}"
        )
    goal = goal.unsqueeze(1).unsqueeze(1)  # [B, 1, 1, P, L]: broadcast over candidates and steps
    d = c.embed_dim

    def objective(actions: Tensor) -> Tensor:
        if actions.dim() != 4 or actions.shape[0] != z0.shape[0]:
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected [B={z0.shape[0]}, N, H, A]")
        b, n, h, a = actions.shape
        z = z0.unsqueeze(1).expand(b, n, *z0.shape[1:]).reshape(b * n, *z0.shape[1:])  # [M, Hh, P, C]
        frames = model.predict_frames(z, actions.reshape(b * n, h, a))  # [M, H, P, L]
        if mode == "last":
            frames = frames[:, -1:]
        frames = frames.view(b, n, frames.shape[1], *frames.shape[2:])  # [B, N, H', P, L]
        diff = (frames - goal).pow(2)
        cost = diff[..., :d].mean(dim=(-2, -1))  # [B, N, H']
        if c.proprio_emb_dim and readback is None:
            cost = cost + alpha * diff[..., d:].mean(dim=(-2, -1))
        elif c.proprio_emb_dim:
            # The proprio embedding is tiled onto every patch; its patch mean is the prediction.
            gap = (frames[..., d:] - goal[..., d:]).float().mean(dim=-2)  # [B, N, H', E]
            cost = cost + alpha * (gap @ readback.T).pow(2).mean(dim=-1)
        return -cost.mean(dim=-1)

    return objective


def make_goal_objective(
    alpha: float = 0.0, mode: GoalMode = "last", proprio_dims: int | None = None
) -> Callable[[Any, Tensor, Tensor | None], Objective]:
    """An MPCController objective factory `(model, z, z_goal) -> objective` with these
    settings of `dino_goal_objective`."""

    def factory(model: Any, z0: Tensor, z_goal: Tensor | None) -> Objective:
        return dino_goal_objective(model, z0, z_goal, alpha=alpha, mode=mode, proprio_dims=proprio_dims)

    return factory


def oracle_goal_objective(mode: GoalMode = "all") -> Callable[[Any, Tensor, Tensor | None], Any]:
    """An `MPCController` objective factory for `OracleModel` on a goal given as a physics
    state: the env's goal reward (minus the goal distance, `env.compute_reward`) of the
    states a candidate reaches, against the goal state's achieved goal; averaged over
    the horizon ("all", the dense reward) or at its last step ("last").

    Shapes: z [B, S], z_goal [B or 1, S]; objective(actions [B, N, H, A]) -> [B, N].
    """
    if mode not in ("last", "all"):
        raise ValueError(f"mode={mode!r} must be 'last' or 'all'")

    def factory(model: Any, z0: Tensor, z_goal: Tensor | None) -> Callable[[Tensor], Tensor]:
        if z_goal is None:
            raise ValueError("the oracle goal objective needs act(state, goal=goal_physics_state)")
        env = model.env
        goal = model.achieved_goal(z_goal).cpu().numpy().astype(np.float32)  # [B or 1, G]

        def objective(actions: Tensor) -> Tensor:
            b, n, h, a = actions.shape
            z = z0.unsqueeze(1).expand(b, n, z0.shape[-1]).reshape(b * n, z0.shape[-1])  # [M, S]
            states = model.rollout(z, actions.reshape(b * n, h, a))  # [M, H, S]
            if mode == "last":
                states = states[:, -1:]
            achieved = model.achieved_goal(states.reshape(-1, states.shape[-1])).cpu().numpy()  # [M * H', G]
            achieved = achieved.reshape(b, n, states.shape[1], -1).astype(np.float32)
            reward = env.compute_reward(achieved, goal[:, None, None, :])  # [B, N, H']
            return torch.as_tensor(reward.mean(axis=-1), dtype=torch.float32, device=actions.device)

        return objective

    return factory


# -- ensembles: trajectory sampling and disagreement -------------------------------------------


def _candidate_rows(z0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """z0 [B, *Z], actions [B, N, H, A] -> z [B * N, *Z], actions [B * N, H, A]."""
    if actions.dim() != 4 or actions.shape[0] != z0.shape[0]:
        raise ValueError(f"actions have shape {tuple(actions.shape)}; expected (B, N, H, A) with B = {z0.shape[0]}")
    b, n, h, a = actions.shape
    z = z0.unsqueeze(1).expand(b, n, *z0.shape[1:]).reshape(b * n, *z0.shape[1:])
    return z, actions.reshape(b * n, h, a)


def _discounts(h: int, discount: float, like: Tensor) -> Tensor:
    return discount ** torch.arange(h, device=like.device, dtype=like.dtype)  # [H]


def _check_discount(discount: float) -> None:
    if not 0.0 < discount <= 1.0:
        raise ValueError(f"discount={discount!r} must be in (0, 1]")


def trajectory_sampling_objective(
    model: Any,
    z0: Tensor,
    particles: int = 20,
    propagation: str = "tsinf",
    risk: float = 0.0,
    discount: float = 1.0,
) -> Objective:
    """PETS's objective (Chua et al., 2018): every candidate is rolled out as P particles
    through the ensemble and scored by the mean of their (discounted) returns, minus
    `risk` x their standard deviation (risk > 0 is risk-averse, 0 is PETS).

    `propagation` is "ts1" (each particle's member re-drawn every step), "tsinf" (member
    fixed per particle) or "expectation" (the elites' mean prediction, one path, no
    spread); see `EnsembleDynamics.particle_rollout` for the exact assignment. All
    candidates and particles run as one batch.

    Args:
        model: has `particle_rollout(z [M, *Z], actions [M, H, A], particles, propagation)
            -> rewards [M, P, H]`.
        z0: [B, *Z] current latents.
        particles: P per candidate (a multiple of the model's elites for ts1/tsinf).
        propagation: "ts1", "tsinf" or "expectation".
        risk: k in mean - k * std over particles.
        discount: gamma in (0, 1]; PETS sums rewards (1).

    Returns:
        objective(actions [B, N, H, A]) -> [B, N].
    """
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation={propagation!r} is not one of {PROPAGATIONS}")
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles={particles!r} must be an int >= 1")
    if not np.isfinite(risk):
        raise ValueError(f"risk={risk!r} must be a finite number (0: the mean over particles)")
    _check_discount(discount)
    if not callable(getattr(model, "particle_rollout", None)):
        raise TypeError(f"{type(model).__name__} has no particle_rollout(); trajectory sampling needs an ensemble")

    def objective(actions: Tensor) -> Tensor:
        b, n = actions.shape[:2]
        z, flat = _candidate_rows(z0, actions)
        rewards = model.particle_rollout(z, flat, particles, propagation).float()  # [M, P, H]
        returns = (rewards * _discounts(rewards.shape[-1], discount, rewards)).sum(dim=-1)  # [M, P]
        score = returns.mean(dim=1)
        if risk and returns.shape[1] > 1:
            score = score - risk * returns.std(dim=1, unbiased=False)
        return score.view(b, n)

    return objective


def make_trajectory_sampling_objective(
    particles: int = 20, propagation: str = "tsinf", risk: float = 0.0, discount: float = 1.0
) -> Callable[[Any, Tensor, Tensor | None], Objective]:
    """An `MPCController` objective factory `(model, z, z_goal) -> objective` with these
    settings of `trajectory_sampling_objective` (checked now, not at the first plan)."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation={propagation!r} is not one of {PROPAGATIONS}")
    if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
        raise ValueError(f"particles={particles!r} must be an int >= 1")

    def factory(model: Any, z0: Tensor, z_goal: Tensor | None) -> Objective:
        return trajectory_sampling_objective(model, z0, particles=particles, propagation=propagation, risk=risk,
                                             discount=discount)  # fmt: skip

    return factory


def disagreement_objective(model: Any, z0: Tensor, discount: float = 1.0) -> Objective:
    """Plan2Explore's exploration objective (Sekar et al., 2020): the (discounted) sum over
    the horizon of the ensemble's disagreement, the variance across members of their
    predicted next states, along the members' mean prediction. No task reward enters.

    Args:
        model: has `disagreement_rollout(z [M, *Z], actions [M, H, A]) -> [M, H]`.
        z0: [B, *Z] current latents.
        discount: gamma in (0, 1].

    Returns:
        objective(actions [B, N, H, A]) -> [B, N] (higher: where the members disagree).
    """
    _check_discount(discount)
    if not callable(getattr(model, "disagreement_rollout", None)):
        raise TypeError(f"{type(model).__name__} has no disagreement_rollout(); disagreement needs an ensemble")

    def objective(actions: Tensor) -> Tensor:
        b, n = actions.shape[:2]
        z, flat = _candidate_rows(z0, actions)
        spread = model.disagreement_rollout(z, flat).float()  # [M, H]
        return (spread * _discounts(spread.shape[-1], discount, spread)).sum(dim=-1).view(b, n)

    return objective


def make_disagreement_objective(discount: float = 1.0) -> Callable[[Any, Tensor, Tensor | None], Objective]:
    """An `MPCController` objective factory for `disagreement_objective`."""
    _check_discount(discount)

    def factory(model: Any, z0: Tensor, z_goal: Tensor | None) -> Objective:
        return disagreement_objective(model, z0, discount=discount)

    return factory
