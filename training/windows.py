"""DINO-WM training windows (Zhou et al., 2024): `history + 1` cached feature frames
`frameskip` env steps apart, with their proprio and the actions between them, for
`DinoWM.loss(features, proprio, actions)`.

    sampler = WindowSampler.for_model(dataset, features, model.config, trajectories=dataset.split()[0])
    model.set_normalization(**dataset.normalization())
    batch = sampler.sample(32)
    loss, parts = model.loss(batch.features, batch.proprio, batch.actions)

Shapes: B batch, Hh history, fs frameskip, P patches, D encoder width, Pd proprio size,
A action size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from training.datasets import OfflineDataset
from training.feature_cache import CachedFeatures

__all__ = ["WindowBatch", "WindowSampler"]


class WindowBatch(NamedTuple):
    """One training batch for `DinoWM.loss(features, proprio, actions)`.

    Shapes:
        features float32 [B, Hh+1, P, D]: frames t, t + fs, ..., t + Hh * fs.
        proprio  float32 [B, Hh+1, Pd]: raw (the model z-scores it).
        actions  float32 [B, Hh+1, A * fs]: raw env actions; row j is
            [a_{t+j fs}, ..., a_{t+j fs+fs-1}] concatenated (a_{t+j fs} first), leading
            from frame j to frame j + 1. The last row (which the loss ignores) is zero
            where it would run past the trajectory's end.
        trajectories, starts int64 [B]: where each window comes from.
    """

    features: Tensor
    proprio: Tensor
    actions: Tensor
    trajectories: Tensor
    starts: Tensor


class WindowSampler:
    """Random DINO-WM training windows: `history + 1` frames `frameskip` steps apart.

    Args:
        dataset: the data set.
        features: its feature cache.
        history: Hh, the predictor's window (3 in the paper).
        frameskip: fs, env steps per model step (5 in the paper).
        trajectories: the trajectories to draw from (e.g. `dataset.split()[0]`); all by
            default.
        seed: seeds the sampling.
        device: where the batches go.
    """

    def __init__(self, dataset: OfflineDataset, features: CachedFeatures, history: int = 3, frameskip: int = 5,
                 trajectories: Sequence[int] | np.ndarray | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if history < 1 or frameskip < 1:
            raise ValueError(f"history={history!r} and frameskip={frameskip!r} must be positive")
        span = history * frameskip
        if span > dataset.steps:
            raise ValueError(f"a window spans history * frameskip = {span} steps; the trajectories have "
                             f"T={dataset.steps}")
        if features.dataset is not dataset and features.dataset.root != dataset.root:
            raise ValueError("the features were cached from another data set")
        self.dataset, self.features = dataset, features
        self.history, self.frameskip = history, frameskip
        traj = np.arange(len(dataset)) if trajectories is None else np.asarray(trajectories, dtype=np.int64)
        if traj.size == 0:
            raise ValueError("no trajectories to sample from")
        dataset.locate(traj)  # range check
        self.trajectories = traj
        self.starts_per_trajectory = dataset.steps - span + 1  # t in [0, T - Hh * fs]
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        self._actions = dataset.array("actions")  # [N, T, A]
        self._proprio = dataset.array("proprio")  # [N, T+1, Pd]

    @classmethod
    def for_model(cls, dataset: OfflineDataset, features: CachedFeatures, config: Any, **kwargs: Any) -> WindowSampler:
        """History and frameskip from a `DinoWMConfig`."""
        return cls(dataset, features, history=config.history, frameskip=config.frameskip, **kwargs)

    @property
    def num_windows(self) -> int:
        return len(self.trajectories) * self.starts_per_trajectory

    def get(self, trajectories: np.ndarray | Sequence[int], starts: np.ndarray | Sequence[int]) -> WindowBatch:
        """The windows starting at step starts[b] of trajectory trajectories[b]."""
        traj = np.asarray(trajectories, dtype=np.int64)
        start = np.asarray(starts, dtype=np.int64)
        if start.shape != traj.shape or start.ndim != 1:
            raise ValueError(f"trajectories {traj.shape} and starts {start.shape} must be equal 1-D shapes")
        if start.size and (start.min() < 0 or start.max() >= self.starts_per_trajectory):
            raise ValueError(f"window starts must be in [0, {self.starts_per_trajectory}); got {start.min()}..{start.max()}")
        fs, t = self.frameskip, self.dataset.steps
        frames = start[:, None] + fs * np.arange(self.history + 1)  # [B, Hh+1]
        feats = self.features.gather(traj, frames).astype(np.float32)  # [B, Hh+1, P, D]
        proprio = self._proprio[traj[:, None], frames]  # [B, Hh+1, Pd]
        steps = frames[..., None] + np.arange(fs)  # [B, Hh+1, fs]: the env steps of each chunk
        valid = steps < t
        actions = self._actions[traj[:, None, None], np.minimum(steps, t - 1)]  # [B, Hh+1, fs, A]
        actions = np.where(valid[..., None], actions, 0.0).astype(np.float32)
        actions = actions.reshape(*actions.shape[:2], fs * self.dataset.action_dim)  # [B, Hh+1, fs * A], a_0 first
        def to(x: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        return WindowBatch(to(feats), to(proprio), to(actions), to(traj), to(start))

    def sample(self, batch_size: int) -> WindowBatch:
        """`batch_size` windows drawn uniformly (with replacement) from all valid windows."""
        pick = self.rng.integers(0, self.num_windows, size=batch_size)
        return self.get(self.trajectories[pick // self.starts_per_trajectory], pick % self.starts_per_trajectory)

    def epoch(self, batch_size: int) -> Iterator[WindowBatch]:
        """Every window once, shuffled (the last batch may be smaller)."""
        order = self.rng.permutation(self.num_windows)
        for i in range(0, len(order), batch_size):
            pick = order[i : i + batch_size]
            yield self.get(self.trajectories[pick // self.starts_per_trajectory], pick % self.starts_per_trajectory)
