"""Online PlaNet training (Hafner et al., 2019), with optional Dreamer behaviour learning.

PlaNet's data loop (ANCHORS section 2, "PlaNet RSSM"):
- `seed_episodes` (5) episodes of uniform random actions fill the replay buffer;
- then, repeatedly: `collect_interval` (100) model updates on batches of 50 sequences x
  50 steps sampled from the buffer, followed by one episode collected with the current
  model, Normal(0, 0.3) noise added to every executed action (clipped to [-1, 1]);
- the RSSM is trained on the negative ELBO (`RSSM.loss`: reconstruction, reward, KL with
  free nats) with Adam (lr 1e-3, eps 1e-4) and gradients clipped to norm 1000;
- action repeat from PlaNet's table (cartpole 8; reacher, cheetah, cup 4; finger,
  walker 2) unless `action_repeat` is given.

How to act (`mode`):
- "planner": CEM over the RSSM's predicted rewards (PlaNet: horizon 12, 1000 candidates,
  top 100, 10 iterations, no discount, no terminal value), the latent filtered with the
  posterior from step to step (`MPCController` with the RSSM's `observe`);
- "actor": the Dreamer actor alone (`ActorController`; Hafner et al., 2020), sampled
  while collecting and its mean when evaluating;
- "planner+actor": CEM with `num_proposals` of the candidates rolled out by the actor
  through the RSSM (`ActorGuidedModel`, TD-MPC2 style proposals); with `plan_value` the
  critic's value also ends every candidate (discounted with the actor-critic's gamma), so
  the plan looks past its horizon as TD-MPC's does.
With an actor, every model update is followed by one actor-critic update
(`ActorCritic.update`) imagining from the batch's posterior states, as in Dreamer.

Data convention. The replay (`EpisodeReplay`) stores slot i as (obs_i, the action taken
AT obs_i, the reward that followed); the RSSM wants actions[t] = the action that LED TO
obs[t] and rewards[t] received with obs[t]. `models.rssm.sequences_from_transitions`
does the mapping: a sampled chunk of L transitions becomes L steps (a_i, obs_{i+1},
r_i); the chunk's first observation is dropped and the filter starts from the zero state,
as for every chunk. (So an episode's reset observation is never a training target; the
controller still filters it, from the zero state with a zero action, like any chunk
start.) When collecting, the filter is given the action really executed (noise included)
as the action that led to the next observation, as PlaNet does, not the planner's
noise-free choice.

The loop, checkpoints and resuming are the shared skeleton's (`training.online`); this
module adds the RSSM (and actor-critic), their update, the controllers and the update
schedule. Everything needed to continue is saved every `checkpoint_every` episodes and at
every evaluation; starting the same run again continues with the same step count, buffer,
optimisers, behaviour learner, random generators and logs. Files in `out_dir`:

    checkpoint.pt          training state (torch.load(weights_only=True)); header
                           model "rssm", kind "training", format_version
    replay-e<N>.npz        the buffer after N episodes (the one checkpoint.pt names)
    model.pt               the RSSM checkpoint dict (`RSSM.load`)
    behavior.pt            the actor-critic (`ActorCritic.load`), in the actor modes
    train.csv              per episode: return, updates and the mean ELBO parts (and
                           actor-critic losses) of the updates before it
    eval.csv               evaluation returns
    pictures/              open-loop and reconstruction PNGs (`training.pictures`)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.actor_control import ActorController, ActorGuidedModel
from models.behavior import TINY_SIZES, ActorCritic, BehaviorConfig
from models.rssm import RSSM, RSSMConfig, sequences_from_transitions
from planners import CEM, MPCController
from planners.controller import PRECISIONS
from training.evaluation import seeded_sampling
from training.online import (
    OnlineTrainer,
    angle_dims,
    boolean,
    check_angle_reading,
    check_options,
    check_task_and_obs,
    default_run_dir,
    evaluate_batched,
    one_of,
    positive_int,
)
from training.update_graphs import CapturedUpdate, set_capturable

__all__ = ["BEHAVIOR_PRESETS", "MODEL_PRESETS", "MODES", "RECIPES", "PlaNetTrainConfig", "PlaNetTrainer", "make_trainer",
           "more_updates", "recipe_settings", "rssm_update_step"]

MODEL_PRESETS: tuple[str, ...] = ("planet", "dreamerv2", "dreamerv3", "tiny")
MODES: tuple[str, ...] = ("planner", "actor", "planner+actor")
# Actor-critic settings: Dreamer v1's (with DreamerV3's critic additions, the
# `BehaviorConfig` defaults) or DreamerV3's (`BehaviorConfig.dreamerv3`).
BEHAVIOR_PRESETS: tuple[str, ...] = ("dreamerv1", "dreamerv3")
# Named sets of settings for a whole run (`recipe_settings`).
RECIPES: tuple[str, ...] = ("planet", "dreamer")
OBS_TYPES: tuple[str, ...] = ("state", "pixels")
# Settings that define a run: resuming with any of them changed is refused.
_RUN_IDENTITY = ("task", "obs", "model", "seed", "action_repeat", "mode", "precision", "imagine_starts", "behavior",
                 "free_nats", "plan_value")
_BEHAVIOR_NAMES = ("actor_loss", "critic_loss", "entropy", "return_mean", "value_mean")


@dataclass(frozen=True)
class PlaNetTrainConfig:
    """One online PlaNet (or PlaNet + Dreamer actor) training run. Defaults are PlaNet's.

    Attributes:
        task: a DM Control task ("cartpole-swingup").
        steps: env steps to train for (simulator steps, action repeat included; PlaNet's
            reported returns are at 10^6).
        obs: "state" or "pixels" (64x64 RGB, one frame).
        model: RSSM preset: "planet" (Gaussian latents), "dreamerv2" (discrete latents,
            KL balancing, discount head), "dreamerv3" (those plus V3's LayerNorm + SiLU,
            symlog inputs, two-hot reward, 1% unimix, free bits and KL weights; see
            `RSSMConfig.dreamerv3`) or "tiny" (tests and smoke runs; small actor-critic
            as well).
        seed: run seed (env, weights, sampling).
        action_repeat: None for PlaNet's table (cartpole 8; reacher, cheetah, cup 4;
            finger, walker and others 2).
        mode: "planner", "actor" or "planner+actor" (see the module docstring). The
            actor modes train an actor-critic alongside the model.
        seed_episodes: random-action episodes before the first update (5).
        collect_interval: model updates per collected episode (100).
        batch_size, chunk_length: sequences per batch and transitions per sequence (50, 50).
        lr, adam_eps, grad_clip: the world model's Adam and gradient clipping (1e-3,
            1e-4, 1000).
        exploration_noise: std of the Gaussian noise added to executed actions while
            collecting (0.3).
        plan_horizon: CEM horizon (12).
        plan_samples, plan_elites, plan_iterations: CEM budget; None keeps PlaNet's
            1000 / 100 / 10. Elites default to a tenth of the samples when only the
            samples are given. Used for collection and evaluation alike.
        num_proposals: actor proposals among the candidates in "planner+actor"; None:
            one in twenty of the candidates (at least 1; TD-MPC2 uses 24 of 512).
        eval_every: env steps between evaluations; eval_episodes: episodes per evaluation
            (run as one batch); eval_at_start: also evaluate at step 0.
        checkpoint_every: episodes between checkpoints (also saved at every evaluation).
        picture_every: env steps between open-loop/reconstruction pictures; 0: none.
        buffer_capacity: replay slots; None keeps the whole run (as PlaNet).
        max_episode_steps: cut episodes to this many agent steps (tests); None: the
            task's limit (1000 env steps).
        precision: "float32", or "bfloat16" for the actor-critic's updates
            (`BehaviorConfig.precision`, as DreamerV3 computes) and the CEM's model calls
            (`MPCController(precision=)`). The world model always trains in float32
            (bfloat16 saved only ~15% there on this CPU; benchmarks/behavior_speed.py).
        imagine_starts: posterior states the actor-critic imagines from per update
            (`BehaviorConfig.imagine_starts`); None: all batch_size x chunk_length of
            them (Dreamer v1's 2500). DreamerV3 uses 1024.
        behavior: the actor-critic's settings, "dreamerv1" (`BehaviorConfig()`) or
            "dreamerv3" (`BehaviorConfig.dreamerv3()`); with the "tiny" model, on
            `models.behavior.TINY_SIZES` networks.
        free_nats: the KL's free nats; None keeps the model preset's (PlaNet 3,
            DreamerV2 0; DreamerV3's free bits are 1).
        plan_value: in "planner+actor", end every CEM candidate with the critic's value
            and discount its rewards by the actor-critic's gamma (PlaNet's objective, the
            undiscounted reward sum, otherwise).
        raw_angles: state runs feed the task's joint-angle observations
            (`envs.angle_observations`, reacher's two) to the model as they are instead
            of as (sin, cos) (`RSSMConfig.angle_dims`). Pixel runs have none.
        cuda_graph: on a GPU, record the whole update (world model and actor-critic,
            forward, backward and optimiser steps) as one CUDA graph and replay it
            (`training.update_graphs`); the same computation, launched at once. On a CPU
            updates run eagerly, with a warning.
    """

    task: str = "cartpole-swingup"
    steps: int = 1_000_000
    obs: str = "pixels"
    model: str = "planet"
    seed: int = 0
    action_repeat: int | None = None
    mode: str = "planner"
    seed_episodes: int = 5
    collect_interval: int = 100
    batch_size: int = 50
    chunk_length: int = 50
    lr: float = 1e-3
    adam_eps: float = 1e-4
    grad_clip: float = 1000.0
    exploration_noise: float = 0.3
    plan_horizon: int = 12
    plan_samples: int | None = None
    plan_elites: int | None = None
    plan_iterations: int | None = None
    num_proposals: int | None = None
    eval_every: int = 10_000
    eval_episodes: int = 10
    eval_at_start: bool = True
    checkpoint_every: int = 5
    picture_every: int = 10_000
    buffer_capacity: int | None = None
    max_episode_steps: int | None = None
    precision: str = "float32"
    imagine_starts: int | None = None
    behavior: str = "dreamerv1"
    free_nats: float | None = None
    plan_value: bool = False
    raw_angles: bool = False
    cuda_graph: bool = False

    def __post_init__(self) -> None:
        for name, accepted in (("obs", OBS_TYPES), ("model", MODEL_PRESETS), ("mode", MODES),
                               ("behavior", BEHAVIOR_PRESETS)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {accepted}")
        for name in ("steps", "collect_interval", "batch_size", "chunk_length", "plan_horizon", "eval_every",
                     "eval_episodes", "checkpoint_every"):  # fmt: skip
            _check_int(name, getattr(self, name), 1)
        _check_int("seed_episodes", self.seed_episodes, 1)
        _check_int("picture_every", self.picture_every, 0)
        for name in ("action_repeat", "plan_samples", "plan_elites", "plan_iterations", "buffer_capacity",
                     "max_episode_steps"):  # fmt: skip
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        if self.num_proposals is not None:
            _check_int("num_proposals", self.num_proposals, 1)
        if self.imagine_starts is not None:
            _check_int("imagine_starts", self.imagine_starts, 1)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} is not one of {PRECISIONS}")
        for name in ("lr", "adam_eps", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a finite number > 0")
        if self.free_nats is not None and not (
            isinstance(self.free_nats, (int, float)) and not isinstance(self.free_nats, bool)
            and math.isfinite(self.free_nats) and self.free_nats >= 0
        ):  # fmt: skip
            raise ValueError(f"free_nats={self.free_nats!r} must be None or a finite number >= 0")
        for name in ("plan_value", "raw_angles", "cuda_graph"):
            boolean(name, getattr(self, name))
        if self.plan_value and self.mode != "planner+actor":
            raise ValueError(
                f"plan_value=True needs mode='planner+actor' (the critic it plans with is trained there), not {self.mode!r}"
            )
        if not (math.isfinite(self.exploration_noise) and self.exploration_noise >= 0):
            raise ValueError(f"exploration_noise={self.exploration_noise!r} must be a finite number >= 0")
        samples, elites = self.planner_budget()
        if elites > samples:
            raise ValueError(f"plan_elites={elites} exceeds plan_samples={samples}; elites are chosen among samples")
        if self.uses_planner and self.uses_actor and self.proposals() >= samples:
            raise ValueError(
                f"num_proposals={self.proposals()} must be below plan_samples={samples} (proposals take candidate slots)"
            )

    @property
    def uses_actor(self) -> bool:
        """Whether an actor-critic is trained (the modes that act with it)."""
        return self.mode in ("actor", "planner+actor")

    @property
    def uses_planner(self) -> bool:
        return self.mode in ("planner", "planner+actor")

    @property
    def angle_dims(self) -> tuple[int, ...]:
        """The state entries the model reads as (sin, cos): the task's joint angles in a
        state run without `raw_angles`, else none (`RSSMConfig.angle_dims`)."""
        return angle_dims(self.task, self.raw_angles) if self.obs == "state" else ()

    def planner_budget(self) -> tuple[int, int]:
        """(candidates, elites) of the CEM: PlaNet's 1000 / 100 unless overridden."""
        samples = self.plan_samples if self.plan_samples is not None else 1000
        elites = self.plan_elites if self.plan_elites is not None else (
            100 if self.plan_samples is None else max(1, samples // 10)
        )  # fmt: skip
        return samples, elites

    def proposals(self) -> int:
        """Actor proposals per planning call in "planner+actor"."""
        if self.num_proposals is not None:
            return self.num_proposals
        return max(1, self.planner_budget()[0] // 20)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlaNetTrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def recipe_settings(recipe: str, mode: str, action_repeat: int | None = None) -> dict[str, Any]:
    """`PlaNetTrainConfig` settings of a recipe for one mode (the rest stays the trainer's).

    `action_repeat` replaces the recipe's; the dreamer recipe then keeps its train ratio
    (updates per episode follow the agent steps per 1000-step episode).

    "planet": PlaNet's model and loop, the trainer's defaults (Hafner et al., 2019), with
    Dreamer v1's actor-critic in the actor modes.

    "dreamer": DreamerV3's data regime and losses as far as our parts have them (Hafner
    et al., 2023; ANCHORS section 2): V3's world model on PlaNet's sizes
    (`RSSMConfig.dreamerv3`: 32 x 32 categoricals with a 1% uniform mix, LayerNorm +
    SiLU and the normalised GRU, symlog state inputs, a two-hot reward head, a discount
    head, KL weights 0.5 dynamics / 0.1 representation with 1 free nat per step); action repeat 2; batches of 16 x 64;
    world-model Adam lr 1e-4 (eps 1e-8); DreamerV3's actor-critic (`BehaviorConfig.
    dreamerv3`) imagining from all 1024 posterior states of a batch; 250 updates per
    500-step episode, V3's train ratio of 512 replayed steps per agent step; no action
    noise for the actor (it explores by sampling); and in "planner+actor" the critic's
    value ends every CEM candidate. Not carried over: V3's sizes (a 512-unit GRU and
    2 x 512 MLPs for proprio; PlaNet's 200 here, which keeps a run's checkpoint small),
    its learned initial state, weight
    initialisation and LayerNorm epsilon, and LayerNorm in the conv stacks (pixel runs).
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r} is not one of {RECIPES}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if action_repeat is not None:
        _check_int("action_repeat", action_repeat, 1)
    if recipe == "planet":
        return {} if action_repeat is None else {"action_repeat": action_repeat}
    batch_size, chunk_length, train_ratio = 16, 64, 512
    action_repeat = action_repeat or 2
    episode_agent_steps = math.ceil(1000 / action_repeat)  # DM Control episodes: 1000 env steps
    return {
        "model": "dreamerv3",
        "free_nats": 1.0,
        "action_repeat": action_repeat,
        "batch_size": batch_size,
        "chunk_length": chunk_length,
        "collect_interval": max(1, round(train_ratio * episode_agent_steps / (batch_size * chunk_length))),
        "lr": 1e-4,
        "adam_eps": 1e-8,
        "behavior": "dreamerv3",
        "exploration_noise": 0.0 if mode == "actor" else 0.3,
        "plan_value": mode == "planner+actor",
    }


_MODEL_BUILDERS = {
    "planet": RSSMConfig.planet,
    "dreamerv2": RSSMConfig.dreamerv2,
    "dreamerv3": RSSMConfig.dreamerv3,
    "tiny": RSSMConfig.tiny,
}


def rssm_update_step(
    model: RSSM, optimizer: torch.optim.Optimizer, behavior: ActorCritic | None, batch: dict[str, Tensor],
    grad_clip: float,
) -> dict[str, Tensor]:
    """One world-model step on the negative ELBO (gradients clipped to `grad_clip`) and,
    with `behavior`, one actor-critic step imagining from the batch's posterior states.

    No host synchronisation: the metrics come back as scalar tensors (the ELBO parts,
    "grad_norm", and the actor-critic's), so a CUDA graph can record the whole step.
    Shapes: batch "obs" [B, T, *obs], "actions" [B, T, A], "rewards" [B, T].
    """
    model.train()
    out = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    metrics = {"loss": out.loss.detach(), "grad_norm": grad_norm}
    metrics.update({k: v.detach() for k, v in out.parts.items()})
    if behavior is not None:
        metrics.update(behavior.update_tensors(model, out.posterior.detach()))
    return metrics


def _with_free_nats(config: dict[str, Any]) -> dict[str, Any]:
    """A run config with free_nats=None replaced by the model preset's value, so resuming
    compares the free nats used (None and the preset's own number are the same run)."""
    if config.get("free_nats") is not None:
        return config
    model = config.get("model", "planet")
    if model not in _MODEL_BUILDERS:
        return config  # an unknown preset: check_same_run reports the model itself
    return {**config, "free_nats": _MODEL_BUILDERS[model]("state", (1,), 1).free_nats}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")


class _ExecutedActionModel:
    """The model as the collecting controller sees it, except that `observe` is given the
    action really executed at the previous step (planner or actor output plus exploration
    noise, clipped), which the controller itself does not know.

    Every other attribute is forwarded to the wrapped RSSM. `executed` [1, A] is set by
    the trainer after each env step; at an episode start (`z_prev is None`) the
    controller's own (absent) action is used.
    """

    def __init__(self, model: RSSM) -> None:
        self.model = model
        self.executed: Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def to(self, device: Any) -> _ExecutedActionModel:
        self.model.to(device)
        return self

    def observe(self, z_prev: Tensor | None, action_prev: Tensor | None, obs: Tensor) -> Tensor:
        if z_prev is not None and self.executed is not None:
            action_prev = self.executed.to(device=z_prev.device, dtype=z_prev.dtype)
        return self.model.observe(z_prev, action_prev, obs)


class PlaNetTrainer(OnlineTrainer):
    """PlaNet (and Dreamer) on the online skeleton: builds the RSSM (and actor-critic),
    its optimiser and the controllers; `run()` trains or resumes.

    Args:
        config: the run's settings.
        out_dir: where checkpoints, logs and pictures go; an existing checkpoint there is
            resumed (with the same task, obs, model, seed, action repeat and mode).
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", ...
        progress: show a tqdm bar.
        log: a function for one-line messages (print by default).
        recipe: the name of the recipe the config came from, for `describe()` only.

    Raises:
        ValueError: an unknown task; episodes shorter than `chunk_length`; a checkpoint
            in `out_dir` from a run with other settings (both values named).
    """

    model_name = "rssm"
    run_identity = _RUN_IDENTITY
    act_timer = "act"
    log_seed_phase = True
    log_update_seconds = True

    def __init__(
        self,
        config: PlaNetTrainConfig,
        out_dir: str | Path,
        device: str = "auto",
        progress: bool = True,
        log: Callable[[str], None] = print,
        recipe: str | None = None,
    ) -> None:
        if not isinstance(config, PlaNetTrainConfig):
            raise TypeError(f"config must be a PlaNetTrainConfig, got {type(config).__name__}")
        self.recipe = recipe
        self._forced_random: bool | None = None  # collect_episode(random_actions=...) overrides the seed phase
        super().__init__(config, out_dir, device=device, progress=progress, log=log)

    def make_env(self) -> Any:
        import envs  # here, not at import: the CLI picks MUJOCO_GL before dm_control loads

        c = self.config
        return envs.make(c.task, obs=c.obs, seed=c.seed, action_repeat=c.action_repeat, action_repeat_preset="planet",
                         time_limit=c.max_episode_steps)  # fmt: skip

    def check_env(self) -> None:
        if self.config.chunk_length > self.episode_length:
            raise ValueError(
                f"chunk_length={self.config.chunk_length} is longer than the episodes ({self.episode_length} agent "
                "steps); sampled sequences must fit inside one episode"
            )

    # -- model, optimiser, actor-critic, controllers (override to build them elsewhere) ---------

    def build(self) -> None:
        self.model = self.build_model()
        self.optimizer = self.build_optimizer(self.model)
        self.behavior: ActorCritic | None = self.build_behavior(self.model)
        self._captured_update: CapturedUpdate | None = None  # recorded on the first update (cuda_graph)
        self.planner = self.build_planner()
        self._collect_model = _ExecutedActionModel(self.model)
        self.controller = self._build_controller(self._collect_model, explore=True)
        self.eval_controller = self._build_controller(self.model, explore=False)
        self.last_picture_step = -1  # env step of the last pictures
        self._pictures_possible = True  # False once a missing library made them skip
        names = ["loss", "reconstruction", "reward", "kl", "kl_value"]
        if self.model.discount_head is not None:
            names.append("discount")
        names.append("grad_norm")
        if self.behavior is not None:
            names += list(_BEHAVIOR_NAMES)
        self.metric_names = tuple(names)  # the train.csv loss columns (fixed per run)

    def build_model(self) -> RSSM:
        c = self.config
        overrides: dict[str, Any] = {} if c.free_nats is None else {"free_nats": float(c.free_nats)}
        if c.obs == "state":
            overrides["angle_dims"] = c.angle_dims
        return RSSM(_MODEL_BUILDERS[c.model](c.obs, self.obs_shape, self.action_dim, **overrides)).to(self.device)

    def build_optimizer(self, model: RSSM) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.config.lr, eps=self.config.adam_eps)

    def build_behavior(self, model: RSSM) -> ActorCritic | None:
        """The Dreamer actor-critic (with its optimisers) in the actor modes, else None."""
        c = self.config
        if not c.uses_actor:
            return None
        settings: dict[str, Any] = {"precision": c.precision, "imagine_starts": c.imagine_starts}
        if c.model == "tiny":  # the preset's settings on tiny networks
            settings = {**TINY_SIZES, **settings}
        preset = {"dreamerv1": BehaviorConfig, "dreamerv3": BehaviorConfig.dreamerv3}[c.behavior]
        return ActorCritic.for_model(model, preset(**settings))

    def build_planner(self) -> CEM:
        c = self.config
        samples, elites = c.planner_budget()
        overrides: dict[str, Any] = {"horizon": c.plan_horizon, "num_samples": samples, "num_elites": elites}
        if c.plan_iterations is not None:
            overrides["iterations"] = c.plan_iterations
        if c.uses_planner and c.uses_actor:
            overrides["num_proposals"] = c.proposals()
        return CEM.planet(self.action_dim, **overrides)

    def _build_controller(self, model: Any, explore: bool) -> Any:
        """A controller for the mode: an MPCController on the RSSM (or on the actor-guided
        RSSM), or an ActorController (sampling when exploring, the mean otherwise)."""
        c = self.config
        if c.mode == "actor":
            assert self.behavior is not None
            return ActorController(model, self.behavior, deterministic=not explore, device=self.device)
        if c.mode == "planner+actor":
            assert self.behavior is not None
            model = ActorGuidedModel(model, self.behavior, use_value=c.plan_value)
        # PlaNet's objective: the undiscounted sum of predicted rewards, no terminal value;
        # with plan_value, the actor-critic's discounted return, critic value at the end.
        discount = self.behavior.config.gamma if c.plan_value and self.behavior is not None else 1.0
        return MPCController(
            model, self.planner, objective="reward", discount=discount, use_value=c.plan_value, device=self.device,
            precision=c.precision,
        )  # fmt: skip

    # -- checkpoints ----------------------------------------------------------------------------

    def family_state(self) -> dict[str, Any]:
        return {
            "trainer": "planet",  # the earlier layout's marker, which its readers still look for
            "model_state": self.model.checkpoint(),
            "optimizer": self.optimizer.state_dict(),
            "behavior": None if self.behavior is None else self.behavior.checkpoint(include_optimizers=True),
            "last_picture_step": self.last_picture_step,
        }

    def load_family_state(self, state: dict[str, Any]) -> bool:
        # The saved model's own header says how it read the joint angles (one saved before
        # angle features existed read them raw), whatever the table says today.
        check_angle_reading(self.checkpoint_path, state["model_state"]["config"].get("angle_dims"),
                            self.model.config.angle_dims)  # fmt: skip
        self.model.load_checkpoint(state["model_state"])
        restored = state.get("optimizer") is not None
        if restored:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.behavior is not None:
            behavior = state["behavior"]
            self._use_saved_behavior_config(BehaviorConfig.from_dict(behavior["config"]))
            self.behavior.load_state_dict(behavior["state_dict"])
            if "optimizers" in behavior:
                self.behavior.actor_optimizer.load_state_dict(behavior["optimizers"]["actor"])
                self.behavior.critic_optimizer.load_state_dict(behavior["optimizers"]["critic"])
            else:
                restored = False
        self.last_picture_step = int(state["last_picture_step"])
        if not (self.config.cuda_graph and self.device.type == "cuda"):
            set_capturable(self._optimizers(), False)  # a run saved while recording graphs resumes eagerly
        return restored

    def upgrade_checkpoint(self, state: dict[str, Any]) -> dict[str, Any] | None:
        # Before the header: {"version": 1, "trainer": "planet", "model": the RSSM's dict, ...}.
        if state.get("version") == 1 and state.get("trainer") == "planet":
            return {**state, "model_state": state["model"]}
        return None

    def comparable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return _with_free_nats(config)

    def save_model_files(self) -> None:
        self.model.save(self.out_dir / "model.pt")
        if self.behavior is not None:
            self.behavior.save(self.out_dir / "behavior.pt")

    def _use_saved_behavior_config(self, saved: BehaviorConfig) -> None:
        """Resume the actor-critic with the settings it was trained with. A preset can
        change between versions (the dreamerv3 actor did) while the weights keep their
        shapes, so loading them into the current preset would silently change the
        algorithm mid-run; the checkpoint's own config wins, and the difference is logged."""
        assert self.behavior is not None
        current = self.behavior.config
        if saved == current:
            return
        now = current.to_dict()
        changed = {k: v for k, v in saved.to_dict().items() if now.get(k) != v}
        self.log(f"resuming with the run's own actor-critic settings {changed} (the preset now differs)")
        self.behavior = ActorCritic.for_model(self.model, saved)
        self.controller = self._build_controller(self._collect_model, explore=True)
        self.eval_controller = self._build_controller(self.model, explore=False)

    # -- learning ----------------------------------------------------------------------------

    def sample_batch(self, batch_size: int | None = None) -> dict[str, Tensor]:
        """A batch of `batch_size` (default: the config's) sequences of `chunk_length`
        steps in the RSSM's convention (see the module docstring).

        Shapes: "obs" [B, L, *obs], "actions" [B, L, A], "rewards" [B, L], on the device.
        """
        c = self.config
        raw = self.buffer.sample(batch_size or c.batch_size, c.chunk_length)
        batch = sequences_from_transitions(raw["obs"], raw["action"], raw["reward"])
        return {k: v.to(self.device) for k, v in batch.items()}

    def update(self) -> dict[str, float]:
        """One world-model step on the negative ELBO and, with an actor, one actor-critic
        step imagining from the batch's posterior states (Dreamer). Returns float metrics
        named as `metric_names` (the ELBO parts, the gradient norm, actor-critic losses).

        With `cuda_graph`, the step replays a recorded CUDA graph
        (`training.update_graphs.CapturedUpdate`), recorded on the first update."""
        batch = self.sample_batch()
        if self.config.cuda_graph:
            if self._captured_update is None:  # here, after a resume has loaded the optimisers
                self._captured_update = self._capture_update()
            tensors = self._captured_update(batch)
        else:
            tensors = self.update_step(batch)
        values = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()  # one host sync
        return dict(zip(tensors, values, strict=True))

    def update_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`update`'s work on a given batch (`rssm_update_step`), with its metrics as
        scalar tensors and no host synchronisation, so a CUDA graph can record it whole."""
        return rssm_update_step(self.model, self.optimizer, self.behavior, batch, self.config.grad_clip)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        if self.behavior is None:
            return [self.optimizer]
        return [self.optimizer, self.behavior.actor_optimizer, self.behavior.critic_optimizer]

    def _capture_update(self, capture: bool = True) -> CapturedUpdate:
        modules: list[torch.nn.Module] = [self.model] if self.behavior is None else [self.model, self.behavior]
        return CapturedUpdate(self.update_step, modules, self._optimizers(), self.device, capture=capture)

    def updates_before_episode(self) -> dict[str, float] | None:
        return self._train_interval() if self.episode >= self.config.seed_episodes else None

    def before_episode(self) -> None:
        if self.episode >= self.config.seed_episodes:
            self._maybe_pictures()

    def _train_interval(self, updates: int | None = None) -> dict[str, float]:
        """`updates` updates (default `collect_interval`); returns each metric's mean over them."""
        count = self.config.collect_interval if updates is None else updates
        sums: dict[str, float] = {}
        t = time.perf_counter()
        for _ in range(count):
            metrics = self.update()
            self.updates += 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
        self.timers["update"] += time.perf_counter() - t
        return {k: v / count for k, v in sums.items()}

    # -- acting ----------------------------------------------------------------------------------

    def in_seed_phase(self) -> bool:
        if self._forced_random is not None:
            return self._forced_random
        return self.episode < self.config.seed_episodes

    def begin_episode(self) -> None:
        self.controller.reset()
        self._collect_model.executed = None

    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The controller's action plus Normal(0, exploration_noise) noise, clipped to
        [-1, 1]; the filter is told the action executed."""
        action = self.controller.act(obs)
        noise = self.rng.normal(0.0, self.config.exploration_noise, size=self.action_dim)
        action = np.clip(action + noise, -1.0, 1.0).astype(np.float32)
        self._collect_model.executed = torch.as_tensor(action, device=self.device).unsqueeze(0)
        return action

    def collect_episode(
        self,
        random_actions: bool | None = None,
        metrics: dict[str, float] | None = None,
        update_s: float = 0.0,
        bar: Any = None,
    ) -> float:
        """One episode into the buffer: uniform random actions, or the controller's actions
        plus exploration noise (`random_actions` None: random in the seed episodes). Logs a
        train.csv row (with `metrics`, the updates' means, when given) and returns the
        episode return."""
        self._forced_random = random_actions
        try:
            return super().collect_episode(metrics=metrics, update_s=update_s, bar=bar)
        finally:
            self._forced_random = None

    def evaluate(self, episodes: int, seed: int) -> list[float]:
        """Returns of `episodes` episodes run as one batch with `eval_controller`, reset
        with seeds seed, seed + 1, ...

        Every random draw (the filter's latents, the actor's and the planner's samples)
        comes from generators seeded with `seed` (`training.evaluation.seeded_sampling`),
        so the returns depend on the weights and the seed alone: a resumed run, or
        `benchmarks/planet_more_updates.py` in another process, scores the same weights
        the same way. Training's own random stream is left where it was.
        """
        samplers: list[Any] = [self.model]
        if self.behavior is not None:
            samplers.append(self.behavior.actor)
        if hasattr(self.eval_controller, "generator"):  # MPCController; the ActorController has none
            samplers.append(self.eval_controller)
        with seeded_sampling(seed, *samplers):
            return evaluate_batched(self.eval_controller, self.make_env, episodes, seed=seed,
                                    max_steps=self.config.max_episode_steps)  # fmt: skip

    def _maybe_pictures(self) -> None:
        """Open-loop and reconstruction pictures of a few sampled sequences, every
        `picture_every` env steps (after that interval's updates)."""
        from training.pictures import write_model_pictures

        every = self.config.picture_every
        env_step = self.step * self.action_repeat
        if every == 0 or not self._pictures_possible:
            return
        if self.last_picture_step >= 0 and env_step // every <= self.last_picture_step // every:
            return
        batch = self.sample_batch(min(4, self.config.batch_size))
        written = write_model_pictures(self.out_dir / "pictures", self.model, batch, tag=f"{env_step:08d}", log=self.log)
        self._pictures_possible = bool(written)  # the skip note is logged once, not at every interval
        self.last_picture_step = env_step

    def describe(self) -> str:
        c = self.config
        recipe = f"{self.recipe} recipe, " if self.recipe else ""
        return (f"rssm ({recipe}{c.model}, {c.obs}, {c.mode}) on {c.task} for {c.steps} env steps "
                f"(action repeat {self.action_repeat})")  # fmt: skip


def more_updates(
    trainer: PlaNetTrainer, target_updates: int, every: int, after: Callable[[dict[str, float], int, float], None]
) -> None:
    """Updates on the trainer's buffer as it is (no new episodes) until it has made
    `target_updates`, `every` at a time; after each block, `after(means, count, seconds)`
    with the block's mean metrics, its update count and its wall time (to evaluate, log
    and save there)."""
    while trainer.updates < target_updates:
        count = min(target_updates - trainer.updates, every)
        t = time.perf_counter()
        means = trainer._train_interval(count)  # the trainer's own update loop
        after(means, count, time.perf_counter() - t)


_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "preset": one_of(*MODEL_PRESETS),
    "mode": one_of(*MODES),
    "recipe": one_of(*RECIPES),
    "raw_angles": boolean,
    "cuda_graph": boolean,
    **{name: positive_int for name in ("plan_samples", "plan_iterations", "batch_size", "chunk_length",
                                       "collect_interval", "eval_every", "eval_episodes", "checkpoint_every",
                                       "max_episode_steps")},
}  # fmt: skip


def make_trainer(*, task: str, steps: int, obs: str, seed: int, out: str | None, device: str, progress: bool,
                 options: Mapping[str, Any]) -> PlaNetTrainer:  # fmt: skip
    """The command line's RSSM trainer. `options` holds the options the user set: preset
    (the RSSM preset; default the recipe's), mode, recipe ("planet" or "dreamer", see
    `recipe_settings`), plan_samples, plan_iterations, batch_size, chunk_length,
    collect_interval (these four override the recipe's), eval_every, eval_episodes,
    checkpoint_every, max_episode_steps, raw_angles, cuda_graph. `out` None: runs/rssm-<task>-<obs>[-<recipe>]-s<seed>
    (the planet recipe has no tag; resuming across recipes is refused).

    Raises:
        ValueError: an unknown task or option, or a bad value (named, with the accepted ones).
    """
    options = {k: v for k, v in options.items() if v is not None}
    check_task_and_obs(task, obs)
    check_options("rssm", options, _OPTION_CHECKS)
    positive_int("steps", steps)
    recipe, mode = options.get("recipe", "planet"), options.get("mode", "planner")
    settings = recipe_settings(recipe, mode)
    for option, field_name in (("preset", "model"), ("batch_size", "batch_size"), ("chunk_length", "chunk_length"),
                               ("collect_interval", "collect_interval")):  # fmt: skip
        if option in options:
            settings[field_name] = options[option]
    run_settings = {k: options[k] for k in ("eval_every", "eval_episodes", "checkpoint_every", "plan_samples",
                                            "plan_iterations", "max_episode_steps", "raw_angles", "cuda_graph")
                    if k in options}  # fmt: skip
    config = PlaNetTrainConfig(task=task, steps=steps, obs=obs, seed=seed, mode=mode, **run_settings, **settings)
    out_dir = Path(out) if out is not None else default_run_dir("rssm", task, obs, seed, "" if recipe == "planet" else recipe)
    return PlaNetTrainer(config, out_dir, device=device, progress=progress, recipe=recipe)
