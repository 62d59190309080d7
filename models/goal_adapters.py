"""Goal-conditioned adapters: a world model as `MPCController` sees it when the goal and
the current frame carry more than an image."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["GoalConditionedDinoWM"]


class GoalConditionedDinoWM:
    """A `DinoWM` with proprioception supplied beside the images.

    `MPCController` hands a model images only (`observe(z, a, obs)`, `encode(goal)`);
    DINO-WM also embeds the proprio of every frame. This adapter holds the current
    frame's proprio and the goal's (set before each `act`) and passes them on; everything
    else (`config`, `predict_frames`, `goal_latent`, ...) is the wrapped model's.

    Args:
        model: the DinoWM.
        use_proprio: False feeds None (zeros), as for a goal known only as an image.
    """

    def __init__(self, model: Any, use_proprio: bool = True) -> None:
        self.model = model
        self.use_proprio = use_proprio
        self.proprio: Tensor | None = None  # [1, Pd] of the frame about to be observed
        self.goal_proprio: Tensor | None = None  # [1, Pd]

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set in __init__: delegate to the model.
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def set_proprio(self, proprio: np.ndarray | None, goal_proprio: np.ndarray | None = None) -> None:
        device = self.model.action_mean.device

        def to(x: np.ndarray | None) -> Tensor | None:
            if x is None or not self.use_proprio or self.model.config.proprio_dim == 0:
                return None
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device).reshape(1, -1)

        self.proprio = to(proprio)
        if goal_proprio is not None:
            self.goal_proprio = to(goal_proprio)

    @staticmethod
    def _batch(p: Tensor | None, m: int) -> Tensor | None:
        return None if p is None else p.expand(m, -1)

    def encode(self, obs: Tensor) -> Tensor:
        """Goal (or first) images with the goal's proprio. [M, 3, H, W] -> [M, Hh, P, C]."""
        return self.model.encode_obs(obs, self._batch(self.goal_proprio, obs.shape[0]))

    def observe(self, z_prev: Tensor | None, action_prev: Tensor | None, obs: Tensor) -> Tensor:
        return self.model.observe(z_prev, action_prev, obs, proprio=self._batch(self.proprio, obs.shape[0]))

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        return self.model.next(z, action)
