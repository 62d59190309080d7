"""State coverage: how much of a task's state space a data set visits.

Plan2Explore (Sekar et al., 2020) is judged by the task returns its reward-free data
makes possible; coverage says why. Here a state is binned on the quantities that matter
for the task, and coverage is the number of bins visited:

- cartpole: cart position (20 bins over [-2, 2], the rail's reach) x pole angle (20 bins
  over [-pi, pi), from the observation's cosine and sine): 400 bins.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COVERAGE_TASKS", "state_bins", "coverage_curve"]

CART_BINS, ANGLE_BINS, CART_RANGE = 20, 20, 2.0
COVERAGE_TASKS = ("cartpole",)


def state_bins(task: str, obs: np.ndarray) -> np.ndarray:
    """The bin index of every observation.

    Args:
        task: a task name ("cartpole-swingup") or domain ("cartpole").
        obs: [T, S] state observations (cartpole: cart x, cos, sin, cart velocity,
            angular velocity).

    Returns:
        [T] int bin indices in [0, number of bins).

    Raises:
        ValueError: a domain without a binning, or observations of another size.
    """
    domain = task.split("-")[0]
    if domain not in COVERAGE_TASKS:
        raise ValueError(f"no state binning for task {task!r}; coverage is defined for {COVERAGE_TASKS}")
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != 5:
        raise ValueError(f"cartpole observations have shape [T, 5]; got {obs.shape}")
    x = np.clip((obs[:, 0] + CART_RANGE) / (2 * CART_RANGE), 0.0, 1.0 - 1e-9)
    angle = np.arctan2(obs[:, 2], obs[:, 1])  # [-pi, pi]
    a = np.clip((angle + np.pi) / (2 * np.pi), 0.0, 1.0 - 1e-9)
    return (x * CART_BINS).astype(np.int64) * ANGLE_BINS + (a * ANGLE_BINS).astype(np.int64)


def coverage_curve(task: str, obs: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
    """Visited bins after each `every` observations.

    Returns:
        counts [K] (observations seen) and visited [K] (distinct bins among them).
    """
    bins = state_bins(task, obs)
    seen: set[int] = set()
    counts, visited = [], []
    for start in range(0, len(bins), every):
        seen.update(bins[start : start + every].tolist())
        counts.append(min(start + every, len(bins)))
        visited.append(len(seen))
    return np.array(counts), np.array(visited)
