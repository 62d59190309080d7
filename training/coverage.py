"""State coverage: how much of a task's state space a data set visits.

Plan2Explore (Sekar et al., 2020) is judged by the task returns its reward-free data
makes possible; coverage says why. Here a state is binned on the quantities that matter
for the task, and coverage is the number of bins visited:

- cartpole: cart position (20 bins over [-2, 2], the rail's reach) x pole angle (20 bins
  over [-pi, pi), from the observation's cosine and sine): 400 bins.
- reacher: fingertip position, 20 x 20 bins over [-0.25, 0.25]^2 (the arm reaches 0.24),
  from the joint angles by forward kinematics (two links of 0.12, as in DM Control's
  reacher.xml): 400 bins, of which the reachable ring touches 332.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COVERAGE_TASKS", "state_bins", "coverage_curve"]

CART_BINS, ANGLE_BINS, CART_RANGE = 20, 20, 2.0
FINGER_BINS, FINGER_RANGE, LINK = 20, 0.25, 0.12
COVERAGE_TASKS = ("cartpole", "reacher")


def fingertip(obs: np.ndarray) -> np.ndarray:
    """Reacher's fingertip position [T, 2] from its observations [T, 6] (shoulder and wrist
    angles first): forward kinematics of two 0.12-long links."""
    shoulder, elbow = obs[:, 0], obs[:, 0] + obs[:, 1]
    return LINK * np.stack([np.cos(shoulder) + np.cos(elbow), np.sin(shoulder) + np.sin(elbow)], axis=1)


def _bin(x: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:
    return (np.clip((x - low) / (high - low), 0.0, 1.0 - 1e-9) * bins).astype(np.int64)


def state_bins(task: str, obs: np.ndarray) -> np.ndarray:
    """The bin index of every observation.

    Args:
        task: a task name ("cartpole-swingup") or domain ("cartpole").
        obs: [T, S] state observations (cartpole: cart x, cos, sin, cart velocity,
            angular velocity; reacher: shoulder and wrist angles, to-target, velocities).

    Returns:
        [T] int bin indices in [0, number of bins).

    Raises:
        ValueError: a domain without a binning, or observations of another size.
    """
    domain = task.split("-")[0]
    if domain not in COVERAGE_TASKS:
        raise ValueError(f"no state binning for task {task!r}; coverage is defined for {COVERAGE_TASKS}")
    obs = np.asarray(obs, dtype=np.float64)
    size = {"cartpole": 5, "reacher": 6}[domain]
    if obs.ndim != 2 or obs.shape[1] != size:
        raise ValueError(f"{domain} observations have shape [T, {size}]; got {obs.shape}")
    if domain == "reacher":
        tip = fingertip(obs)
        return _bin(tip[:, 0], -FINGER_RANGE, FINGER_RANGE, FINGER_BINS) * FINGER_BINS + _bin(
            tip[:, 1], -FINGER_RANGE, FINGER_RANGE, FINGER_BINS)
    angle = np.arctan2(obs[:, 2], obs[:, 1])  # [-pi, pi]
    return _bin(obs[:, 0], -CART_RANGE, CART_RANGE, CART_BINS) * ANGLE_BINS + _bin(angle, -np.pi, np.pi, ANGLE_BINS)


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
