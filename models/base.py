"""The world-model interface every planner works with, and a wrapper for plain functions.

Shapes:
    M any flattened batch, A action size, Z... latent shape, obs... observation shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["WorldModel", "FunctionModel"]


@runtime_checkable
class WorldModel(Protocol):
    """What a planner needs from a model (DESIGN section 3.4).

    Required: `encode`, `next`, `reward`. Optional, used when present:
    `value(z) -> [M]` (terminal value), `policy(z) -> [M, A]` (guide actions),
    `rollout(z [M, *Z], actions [M, H, A]) -> [M, H, *Z]` (a faster multi-step
    prediction), `rollout_with_rewards(z, actions) -> (latents [M, H, *Z], rewards
    [M, H])` (when a step's reward needs more than (z_t, a_t)), and `observe(z_prev, a_prev, obs) -> z` for models whose latent filters
    the history (the controller then carries the latent between steps).
    """

    def encode(self, obs: Tensor) -> Tensor:
        """[M, *obs] -> [M, *Z]."""
        ...

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """[M, *Z], [M, A] -> [M, *Z]."""
        ...

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """[M, *Z], [M, A] -> [M], the reward of taking `action` in `z`."""
        ...


class FunctionModel:
    """A world model made of plain torch functions, for a user's own dynamics.

    Example:
        model = FunctionModel(next=lambda z, a: z + 0.1 * a, reward=lambda z, a: -z.norm(dim=-1))

    Args:
        next: (z [M, *Z], a [M, A]) -> z' [M, *Z].
        reward: (z [M, *Z], a [M, A]) -> r [M].
        encode: obs [M, *obs] -> z [M, *Z]; identity (float32) when omitted.
        value: z [M, *Z] -> v [M], optional terminal value.
        policy: z [M, *Z] -> a [M, A], optional guide policy.
        obs_shape: the shape of one observation, so a controller can tell a single
            observation from a batch.
    """

    def __init__(
        self,
        next: Callable[[Tensor, Tensor], Tensor],
        reward: Callable[[Tensor, Tensor], Tensor],
        encode: Callable[[Tensor], Tensor] | None = None,
        value: Callable[[Tensor], Tensor] | None = None,
        policy: Callable[[Tensor], Tensor] | None = None,
        obs_shape: tuple[int, ...] | None = None,
    ) -> None:
        for name, fn in (("next", next), ("reward", reward), ("encode", encode), ("value", value), ("policy", policy)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self._next = next
        self._reward = reward
        self._encode = encode
        self.obs_shape = obs_shape
        # Optional methods exist only when given, so `hasattr(model, "value")` tells.
        if value is not None:
            self.value = value
        if policy is not None:
            self.policy = policy

    def encode(self, obs: Tensor) -> Tensor:
        if self._encode is None:
            return obs.float()
        return self._encode(obs)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        return self._next(z, action)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        return self._reward(z, action)

