"""Acting with a Dreamer actor (Hafner et al., 2020) over an RSSM: alone
(`ActorController`, the interface of `MPCController`) or as the planner's guide policy
(`ActorGuidedModel`, TD-MPC2-style proposals and the critic as terminal value)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from models.behavior import Actor, ActorCritic
from models.rssm import RSSM

__all__ = ["ActorController", "ActorGuidedModel"]


def _actor_of(actor: Actor | ActorCritic) -> Actor:
    if isinstance(actor, ActorCritic):
        return actor.actor
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an Actor or ActorCritic, got {type(actor).__name__}")
    return actor


class ActorGuidedModel:
    """An RSSM whose `policy(z)` is the actor: the planner's guide policy (TD-MPC2 style).

    Forwards the planner-facing RSSM methods (`encode`, `observe`, `next`, `reward`,
    `rollout`, `rollout_with_rewards`) and adds `policy(z [M, F]) -> [M, A]` (the actor
    on the flat feature z) so `planners.objectives.policy_proposals` rolls the actor
    through the RSSM and `MPCController` passes those sequences as proposals. With a
    critic (an ActorCritic given as `actor`, and `use_value=True`) it also exposes
    `value(z)` as the planner's terminal value.

    Example:
        guided = ActorGuidedModel(rssm, ac)
        ctrl = MPCController(guided, CEM(action_dim=A, num_proposals=16))

    Args:
        model: the RSSM.
        actor: an Actor or an ActorCritic.
        deterministic: guide with the actor's mean instead of samples.
        use_value: expose the critic as `value` (only with an ActorCritic).
    """

    def __init__(
        self, model: RSSM, actor: Actor | ActorCritic, deterministic: bool = False, use_value: bool = False
    ) -> None:
        self.model = model
        self.actor = _actor_of(actor)
        self.deterministic = deterministic
        self.obs_shape = model.obs_shape
        self.obs_dtype = getattr(model, "obs_dtype", torch.float32)
        self.action_dim = model.action_dim
        if self.actor.action_dim != model.action_dim:
            raise ValueError(f"actor has action_dim {self.actor.action_dim}, but the model has {model.action_dim}")
        if use_value:
            if not isinstance(actor, ActorCritic):
                raise ValueError("use_value=True needs an ActorCritic (it has the critic)")
            critic = actor.critic
            # Only defined when asked for: the controller adds a value when `value` exists.
            self.value = lambda z: critic(z)

    def policy(self, z: Tensor) -> Tensor:
        """The actor's action on the RSSM feature. [M, F] -> [M, A]."""
        return self.actor.act(z, self.deterministic)

    def encode(self, obs: Tensor) -> Tensor:
        return self.model.encode(obs)

    def observe(self, z_prev: Tensor | None, action_prev: Tensor | None, obs: Tensor) -> Tensor:
        return self.model.observe(z_prev, action_prev, obs)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        return self.model.next(z, action)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        return self.model.reward(z, action)

    def rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        return self.model.rollout(z, actions)

    def rollout_with_rewards(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.rollout_with_rewards(z, actions)


class ActorController:
    """Acting with the actor alone (no planning), the interface of `MPCController`.

    Filters observations with the RSSM's `observe` (carrying the latent and the last
    action between steps) and returns the actor's action on the posterior feature.

    Example:
        ctrl = ActorController(rssm, ac)
        ctrl.reset()
        action = ctrl.act(obs)    # numpy [A] for one observation, [B, A] for a batch

    Args:
        model: the RSSM (anything with `observe` and `obs_shape`).
        actor: an Actor or an ActorCritic.
        deterministic: act with the mean (evaluation) or sample (exploration).
        device: "auto", "cpu", "cuda", ...; the model and actor are moved there.
    """

    def __init__(
        self, model: RSSM, actor: Actor | ActorCritic, deterministic: bool = True, device: str | torch.device = "auto"
    ) -> None:
        from planners.controller import resolve_device  # planners depends on torch only

        self.actor = _actor_of(actor)
        if self.actor.action_dim != model.action_dim:
            raise ValueError(f"actor has action_dim {self.actor.action_dim}, but the model has {model.action_dim}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.actor.to(self.device)
        self.deterministic = deterministic
        self.obs_ndim = len(model.obs_shape)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget the latent and the last action."""
        self._latent: Tensor | None = None
        self._last_action: Tensor | None = None
        self._batch_size: int | None = None

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor) -> np.ndarray:
        """obs [*obs] or [B, *obs] (numpy or torch) -> numpy float32 action [A] or [B, A]."""
        from planners.controller import as_observation_batch

        t, batched = as_observation_batch(obs, "obs", self.obs_ndim, torch.float32, self.device,
                                          tuple(self.model.obs_shape))
        if self._batch_size is not None and t.shape[0] != self._batch_size:
            raise ValueError(
                f"batch size changed from {self._batch_size} to {t.shape[0]} within an episode; call reset() first"
            )
        self._batch_size = t.shape[0]
        self._latent = self.model.observe(self._latent, self._last_action, t)
        action = self.actor.act(self._latent, self.deterministic)
        self._last_action = action
        out = action.to("cpu", torch.float32).numpy()
        return out if batched else out[0]
