"""Small objectives and episode runners shared by the planner tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from planners import CEM, ICEM, MPPI, MPCController, SamplingPlanner

PLANNER_NAMES = ("cem", "mppi", "icem")


def small_planner(name: str, action_dim: int, horizon: int, **overrides: object) -> SamplingPlanner:
    """A planner with a budget that solves the toy systems quickly on a CPU."""
    if name == "cem":
        settings = dict(num_samples=200, num_elites=20, iterations=4)
    elif name == "mppi":
        settings = dict(num_samples=200, num_elites=20, iterations=4, temperature=0.5)
    elif name == "icem":
        settings = dict(num_samples=100, num_elites=10, iterations=3, noise_beta=2.0)
    else:
        raise ValueError(name)
    settings.update(overrides)
    cls = {"cem": CEM, "mppi": MPPI, "icem": ICEM}[name]
    return cls(action_dim=action_dim, horizon=horizon, **settings)


def target_objective(target: Tensor) -> Callable[[Tensor], Tensor]:
    """Returns -||actions - target||^2 per candidate; target is [B, H, A]."""

    def objective(actions: Tensor) -> Tensor:
        return -(actions - target.unsqueeze(1)).pow(2).sum(dim=(2, 3))

    return objective


def run_episode(system, planner: SamplingPlanner, steps: int, seed: int = 0, batch_size: int = 1):
    """Closed-loop MPC on a toy system that is its own model.

    Returns:
        total reward [B], success at the end [B], the first step (1-based) from which
        every problem stayed successful to the end (None if never).
    """
    ctrl = MPCController(system, planner, discount=1.0, seed=seed, device="cpu")
    state = system.initial_state(batch_size)
    total = torch.zeros(batch_size)
    reached_at = None
    for step in range(steps):
        action = torch.as_tensor(ctrl.act(state)).reshape(batch_size, -1)
        total += system.reward(state, action)
        state = system.next(state, action)
        ok = bool(system.success(state).all())
        if ok and reached_at is None:
            reached_at = step + 1
        elif not ok:
            reached_at = None
    return total, system.success(state), reached_at
