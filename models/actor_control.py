"""How a trained RSSM acts: CEM over its predicted rewards (PlaNet), the Dreamer actor alone
(Hafner et al., 2020; `ActorController`, the interface of `MPCController`), or CEM with the
actor as the planner's guide policy (`ActorGuidedModel`, TD-MPC2-style proposals and the
critic as terminal value). `prepare_planning` is the RSSM family's planning entry point
(`models.registry`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.behavior import Actor, ActorCritic
from models.rssm import RSSM

__all__ = ["ActorController", "ActorGuidedModel", "plan_controller", "prepare_planning", "training_settings"]


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


# -- the RSSM family's planning entry point (models.registry) ----------------------------------


def training_settings(model_path: Path) -> dict[str, Any]:
    """The settings of the training run that made `model_path` (action repeat,
    plan_value, ...): from the `train_config.json` a shipped model carries beside it, or
    from the run folder's checkpoint.pt; {} for a model file on its own."""
    import json
    import warnings

    from models.checkpoints import read_family

    shipped = model_path.with_name("train_config.json")
    if shipped.is_file():
        try:
            return dict(json.loads(shipped.read_text())["train_config"])
        except (ValueError, KeyError, TypeError) as error:
            warnings.warn(f"could not read {shipped} ({type(error).__name__}); using the flags' action repeat and "
                          "--plan-value", stacklevel=2)
            return {}
    checkpoint = model_path.with_name("checkpoint.pt")
    if model_path.name == "checkpoint.pt" or not checkpoint.is_file():
        return {}
    try:
        family, state = read_family(checkpoint)
    except (ValueError, OSError) as error:  # not ours or unreadable: act on the flags alone
        warnings.warn(f"could not read {checkpoint} ({error}); using the flags' action repeat and --plan-value",
                      stacklevel=2)
        return {}
    return dict(state.get("train_config") or {}) if family == "rssm" else {}


def prepare_planning(request: Any) -> Any:
    """CEM over a trained RSSM (PlaNet), the Dreamer actor alone, or CEM with the actor's
    proposals (`options["mode"]`), in the env the run trained in (its action repeat)."""
    import envs
    from envs.action_repeat import action_repeat_for
    from models.loading import load
    from models.planning import PlanSetup

    if request.checkpoint is None:
        raise ValueError("--model rssm needs --checkpoint runs/<run>/model.pt (train one with "
                         "`run_planning.py train --model rssm`)")
    mode = request.options.get("mode", "planner")
    plan_value = request.options.get("plan_value")
    trained = training_settings(Path(request.checkpoint))
    if plan_value is None:  # plan as the run did (its critic value is for planner+actor only)
        plan_value = bool(trained.get("plan_value", False)) and mode == "planner+actor"
    repeat = request.action_repeat if request.action_repeat is not None else trained.get("action_repeat")
    if repeat is None:
        repeat = action_repeat_for(request.task.split("-")[0], "planet")  # PlaNet's table, as the trainer uses
    env = envs.make(request.task, obs=request.obs, seed=request.seed, action_repeat=repeat)
    model = load(request.checkpoint, env=env, device=request.device, expect="rssm")
    model.generator = torch.Generator(device=request.device).manual_seed(request.seed)
    controller, description = plan_controller(model, env, request, mode, plan_value)
    return PlanSetup(env=env, controller=controller, description=description)


def plan_controller(model: RSSM, env: Any, request: Any, mode: str, plan_value: bool) -> tuple[Any, str]:
    """The controller of `mode` over a loaded RSSM (and the actor-critic beside its file),
    with its one-line description."""
    from models import registry
    from models.planning import build_planner, describe_planner
    from planners import MPCController

    if plan_value and mode != "planner+actor":
        raise ValueError(f"--plan-value plans with the critic, so it needs --mode planner+actor, not {mode}")
    actor = None
    if mode != "planner":
        behavior_path = Path(request.checkpoint).with_name("behavior.pt")
        if not behavior_path.is_file():
            raise ValueError(f"--mode {mode} needs the actor-critic beside the model: {behavior_path} is missing "
                             "(train with --mode actor or planner+actor)")
        actor = ActorCritic.load(behavior_path).to(request.device).eval()
    if mode == "actor":
        return ActorController(model, actor, deterministic=True, device=request.device), f"actor only, model rssm ({mode})"
    budget = registry.get("rssm").default_budget
    planner = build_planner(request, int(env.action_space.shape[0]), budget)
    if mode == "planner+actor":
        proposals = max(1, planner.config.num_samples // 20)
        # PlaNet's objective (the undiscounted reward sum), or with plan_value the critic's
        # discounted return with its value at the end (the dreamer recipe's planning).
        discount = actor.config.gamma if plan_value else 1.0
        controller: Any = MPCController(ActorGuidedModel(model, actor, use_value=plan_value), planner,
                                        discount=discount, use_value=plan_value, num_proposals=proposals,
                                        seed=request.seed, device=request.device, precision=request.precision)
    else:
        controller = MPCController(model, planner, discount=1.0, use_value=False, seed=request.seed,
                                   device=request.device, precision=request.precision)
    return controller, f"planner {request.planner} {describe_planner(planner)}, model rssm ({mode})"
