"""Planner settings for MPC with the true physics (`models.oracle.OracleModel`).

One table serves the command line and `benchmarks/oracle_mpc.py`, so that what a user
runs is what was measured. Per domain: the action repeat, the horizon in agent steps
(about a second of simulated time) and a budget of candidates scored per plan call.
Walker's 10 physics sub-steps per control step make it the costliest domain, so it gets
a smaller budget. `matched_planner` spends the same budget with each planner.
"""

from __future__ import annotations

from typing import Any

from planners import CEM, ICEM, MPPI, SamplingPlanner

__all__ = ["ORACLE_SETTINGS", "oracle_settings", "matched_planner"]

ORACLE_SETTINGS: dict[str, dict[str, int]] = {
    "cartpole": {"action_repeat": 4, "horizon": 24, "budget": 250},
    "reacher": {"action_repeat": 4, "horizon": 12, "budget": 250},
    "point_mass": {"action_repeat": 4, "horizon": 25, "budget": 250},  # sparse reward: look 2 s ahead
    "finger": {"action_repeat": 2, "horizon": 12, "budget": 250},
    "cheetah": {"action_repeat": 4, "horizon": 12, "budget": 250},
    "walker": {"action_repeat": 2, "horizon": 10, "budget": 150},
    "default": {"action_repeat": 2, "horizon": 12, "budget": 250},
}
ITERATIONS = 3
ICEM_DECAY = 1.25


def oracle_settings(task: str) -> dict[str, int]:
    """The settings of a task's domain (task names are "<domain>-<task>")."""
    return ORACLE_SETTINGS.get(task.split("-")[0], ORACLE_SETTINGS["default"])


def matched_planner(name: str, action_dim: int, horizon: int, budget: int, **overrides: Any) -> SamplingPlanner:
    """A CEM, MPPI or iCEM that scores about `budget` candidates per call in 3 iterations.

    CEM and MPPI sample white noise (std 1, as PlaNet); iCEM its colored noise (beta 2)
    with a population decaying by 1.25 per iteration plus kept elites and the mean.
    """
    per_iteration = max(8, budget // ITERATIONS)
    elites = max(4, per_iteration // 10)
    settings: dict[str, Any] = dict(action_dim=action_dim, horizon=horizon, num_elites=elites, iterations=ITERATIONS)
    if name == "cem":
        settings.update(num_samples=per_iteration, init_std=1.0)
        return CEM(**{**settings, **overrides})
    if name == "mppi":
        settings.update(num_samples=per_iteration, init_std=1.0, temperature=0.1)
        return MPPI(**{**settings, **overrides})
    if name != "icem":
        raise ValueError(f"unknown planner {name!r}; choose one of ['cem', 'icem', 'mppi']")
    keep = int(0.3 * elites)
    first = round((budget - ITERATIONS * keep - 1) / sum(ICEM_DECAY**-i for i in range(ITERATIONS)))
    settings.update(num_samples=max(2 * elites, first), noise_beta=2.0, init_std=0.5, population_decay=ICEM_DECAY)
    return ICEM(**{**settings, **overrides})

