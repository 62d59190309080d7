"""Tier 1: each planner solves analytic toy systems, and more samples do better."""

import math

import pytest
import torch

from models import Pendulum, PointMass
from tests.helpers import PLANNER_NAMES, run_episode, small_planner


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_point_mass_reaches_goal_within_30_steps_and_stays(name):
    system = PointMass()
    planner = small_planner(name, action_dim=2, horizon=15)
    _, success, reached_at = run_episode(system, planner, steps=50)
    assert bool(success.all())
    assert reached_at is not None and reached_at <= 30, reached_at


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_pendulum_swings_up_within_100_steps(name):
    system = Pendulum()
    planner = small_planner(name, action_dim=1, horizon=25)
    total, success, reached_at = run_episode(system, planner, steps=100)
    assert bool(success.all()), "pendulum is not upright and still after 100 steps"
    assert reached_at is not None and reached_at <= 100
    # Hanging still for 100 steps costs pi^2 * 100 ~ 987; a swing-up costs far less.
    assert float(total) > -500


def _rugged(actions: torch.Tensor) -> torch.Tensor:
    """A multi-modal (Rastrigin-like) return over the whole sequence, maximum 0 at 0.3."""
    x = actions - 0.3
    return -(x.pow(2) - 0.1 * torch.cos(6 * math.pi * x) + 0.1).sum(dim=(2, 3))


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_more_samples_give_better_mean_return_over_seeds(name):
    def mean_return(num_samples: int) -> float:
        values = []
        for seed in range(5):
            planner = small_planner(name, 3, 8, num_samples=num_samples, num_elites=4, iterations=3, output="best")
            # Eight problems in a batch are eight independent runs.
            result = planner.plan(_rugged, batch_size=8, generator=torch.Generator().manual_seed(seed))
            values.append(_rugged(result.actions.unsqueeze(1)).mean())
        return float(torch.stack(values).mean())

    few, many = mean_return(8), mean_return(256)
    assert many > few + 0.5, (few, many)
