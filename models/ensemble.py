"""Ensembles of dynamics MLPs over state observations: PETS, Nagabandi's delta MLP and
Plan2Explore's disagreement.

- Chua et al. 2018, "Deep Reinforcement Learning in a Handful of Trials using
  Probabilistic Dynamics Models" (PETS): E probabilistic networks, each a Gaussian over
  the next-state delta with a learned log-variance softly bounded by learned limits,
  trained with the Gaussian NLL on bootstrapped batches; trajectory sampling (TS1,
  TS-inf) over particles in the planner's objective.
- Nagabandi et al. 2018, "Neural Network Dynamics for Model-Based Deep Reinforcement
  Learning with Model-Free Fine-Tuning": one deterministic MLP on normalised inputs
  predicting the normalised state delta, trained with MSE (the "deterministic" preset).
- Sekar et al. 2020, "Planning to Explore via Self-Supervised World Models"
  (Plan2Explore): the variance of the members' predictions as an intrinsic reward, and a
  reward head fitted afterwards to the explored data for zero-shot planning.

Members are vectorised: every layer holds one weight tensor [E, in, out] and runs as one
batched matmul, so no Python loop over members. Inputs (state, action) and targets
(delta, reward) are normalised with statistics fitted to the data and kept in the
state_dict, hence in the checkpoint. Every member has a reward head (its own small MLP on
the same normalised inputs, optionally with a termination logit) so that a particle's
reward comes from the member that moves it.

The planner-facing model meets the WorldModel protocol: the latent is the state itself
(`encode` is the identity), `next` and `reward` are the mean prediction of the elites.
The trajectory-sampling and disagreement objectives (`models.objectives`) use
`particle_rollout` and `disagreement_rollout`.

Shapes: E members, K elites, S state size, A action size, M a flattened batch of
rollouts, P particles, H horizon, R = M * P rows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import CheckpointError, model_checkpoint, read_header
from models.layers import AngleFeatures, check_angle_dims

__all__ = [
    "ENSEMBLE_PRESETS",
    "PROPAGATIONS",
    "EnsembleConfig",
    "EnsembleDynamics",
    "EnsembleLinear",
    "EnsembleMLP",
    "Normalizer",
    "Transitions",
    "ensemble_config",
    "fit_reward_head",
    "load_ensemble",
    "load_for_planning",
    "prepare_planning",
    "tiny_case",
    "train_ensemble",
    "transitions_from_replay",
]

FORMAT_VERSION = 1
PROPAGATIONS = ("ts1", "tsinf", "expectation")
ACTIVATIONS = {"silu": F.silu, "relu": F.relu}

# Architectures of the published systems (model only; the planners' budgets live with the
# trainer and the registry entry).
ENSEMBLE_PRESETS: dict[str, dict[str, Any]] = {
    # PETS (Chua et al. 2018): 5 probabilistic networks, all used for planning; the layer
    # sizes of mbrl-lib's PETS configs (4 x 200 SiLU, "swish" in the paper).
    "pets": dict(ensemble_size=5, num_elites=5, hidden=200, layers=4, activation="silu", probabilistic=True),
    # mbrl-lib's PETS / MBPO ensemble: 7 networks, the 5 with the lowest held-out loss plan.
    "mbrl": dict(ensemble_size=7, num_elites=5, hidden=200, layers=4, activation="silu", probabilistic=True),
    # Nagabandi et al. 2018: one deterministic MLP, 2 x 500 ReLU, MSE on normalised deltas.
    "deterministic": dict(ensemble_size=1, num_elites=1, hidden=500, layers=2, activation="relu", probabilistic=False),
    # For tests and quick checks.
    "tiny": dict(ensemble_size=3, num_elites=3, hidden=16, layers=2, reward_hidden=16, reward_layers=1,
                 activation="silu", probabilistic=True),
}


@dataclass(frozen=True)
class EnsembleConfig:
    """Architecture of an ensemble (see `ENSEMBLE_PRESETS` for the published ones).

    Attributes:
        obs_dim: S, the state size; action_dim: A.
        task: the task it was trained on (checked when loading), or None.
        action_repeat: physics steps per agent step it was trained with (None: unknown).
        ensemble_size: E members; num_elites: K members that plan (lowest held-out loss).
        hidden, layers: width and number of hidden layers of each member's dynamics MLP.
        activation: "silu" (PETS's swish) or "relu".
        probabilistic: Gaussian NLL with a learned bounded log-variance (PETS); False: MSE.
        reward_hidden, reward_layers: each member's reward head (an MLP on the same inputs).
        predict_termination: the reward head also predicts a termination logit.
        min_logvar_init, max_logvar_init: initial soft bounds of the log-variance (PETS:
            -10 and 0.5), learned afterwards.
        logvar_bound_penalty: weight of (sum max_logvar - sum min_logvar) in the loss
            (PETS: 0.01), which keeps the learned bounds tight.
        angle_dims: state entries that are joint angles in radians; the networks read
            each as (sin, cos) instead of its raw value (PETS's input preprocessing for
            angles), so an unlimited joint that winds through many turns stays one input
            range. The model still predicts and integrates the raw angle's delta.
    """

    obs_dim: int
    action_dim: int
    task: str | None = None
    action_repeat: int | None = None
    ensemble_size: int = 5
    num_elites: int = 5
    hidden: int = 200
    layers: int = 4
    activation: str = "silu"
    probabilistic: bool = True
    reward_hidden: int = 200
    reward_layers: int = 2
    predict_termination: bool = False
    min_logvar_init: float = -10.0
    max_logvar_init: float = 0.5
    logvar_bound_penalty: float = 0.01
    angle_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "angle_dims", check_angle_dims(self.angle_dims, self.obs_dim))
        for name in ("obs_dim", "action_dim", "ensemble_size", "num_elites", "hidden", "layers", "reward_hidden",
                     "reward_layers"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        if self.num_elites > self.ensemble_size:
            raise ValueError(f"num_elites={self.num_elites} exceeds ensemble_size={self.ensemble_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {tuple(ACTIVATIONS)}")
        if not self.min_logvar_init < self.max_logvar_init:
            raise ValueError(f"min_logvar_init={self.min_logvar_init} must be below max_logvar_init={self.max_logvar_init}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def ensemble_config(preset: str, obs_dim: int, action_dim: int, **overrides: Any) -> EnsembleConfig:
    """The config of a named preset for these sizes, with `overrides` on top (None values
    are ignored). A new `ensemble_size` without `num_elites` keeps the preset's share:
    all members when the preset plans with all of them, else at most its elite count.

    Raises:
        ValueError: an unknown preset (the accepted ones are named) or a bad value.
    """
    if preset not in ENSEMBLE_PRESETS:
        raise ValueError(f"preset={preset!r} is not one of {tuple(ENSEMBLE_PRESETS)}")
    base = dict(ENSEMBLE_PRESETS[preset])
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "ensemble_size" in overrides and "num_elites" not in overrides:
        all_members = base["num_elites"] == base["ensemble_size"]
        size = overrides["ensemble_size"]
        overrides["num_elites"] = size if all_members else min(base["num_elites"], size)
    return EnsembleConfig(obs_dim=obs_dim, action_dim=action_dim, **{**base, **overrides})


# -- building blocks ----------------------------------------------------------------------------


class Normalizer(nn.Module):
    """Per-feature z-scoring with statistics fitted to data (kept as buffers, so in the
    state_dict). Features with (almost) no spread keep std 1, so they pass unscaled.

    Shapes: x [..., D] -> [..., D].
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Statistics of x [T, D]."""
        x = x.reshape(-1, self.mean.shape[0]).to(self.mean)
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(torch.where(std < 1e-6, torch.ones_like(std), std))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


class EnsembleLinear(nn.Module):
    """E independent linear layers as one batched matmul: weight [E, in, out].

    Initialised as PETS: weights from a normal truncated at 2 std with std 1 / (2 sqrt(in)),
    biases zero.

    Shapes: x [E', R, in] -> [E', R, out], with E' = E or the number of members selected.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        std = 1.0 / (2.0 * math.sqrt(in_features))
        self.weight = nn.Parameter(nn.init.trunc_normal_(torch.empty(members, in_features, out_features), std=std,
                                                         a=-2 * std, b=2 * std))  # fmt: skip
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        return torch.baddbmm(self.bias if bias is None else bias, x, self.weight if weight is None else weight)


class EnsembleMLP(nn.Module):
    """E MLPs with `layers` hidden layers of `hidden` units, evaluated together.

    `member_params(members)` gathers the weights of a subset once (the elites, for a
    whole planning call), so that the hot loop does no gather per step.

    Shapes: x [E', R, in] -> [E', R, out].
    """

    def __init__(self, members: int, in_features: int, hidden: int, layers: int, out_features: int, activation: str) -> None:
        super().__init__()
        sizes = [in_features] + [hidden] * layers + [out_features]
        self.layers = nn.ModuleList(EnsembleLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = ACTIVATIONS[activation]

    def member_params(self, members: Tensor | None) -> list[tuple[Tensor, Tensor]] | None:
        """The (weight, bias) of each layer for `members` [K] (None: all members, no copy)."""
        if members is None:
            return None
        return [(layer.weight.index_select(0, members), layer.bias.index_select(0, members)) for layer in self.layers]

    def forward(self, x: Tensor, params: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if params is None else layer(x, *params[i])
            if i < last:
                x = self.activation(x)
        return x


@dataclass
class Transitions:
    """Transitions (s, a, r, s') as flat tensors.

    Shapes: obs [T, S], action [T, A], reward [T], next_obs [T, S], terminated [T] (0/1).
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def take(self, index: Tensor) -> Transitions:
        """Rows `index` (any shape [...]) -> tensors [..., *]."""
        term = None if self.terminated is None else self.terminated[index]
        return Transitions(self.obs[index], self.action[index], self.reward[index], self.next_obs[index], term)

    def to(self, device: torch.device | str) -> Transitions:
        term = None if self.terminated is None else self.terminated.to(device)
        return Transitions(self.obs.to(device), self.action.to(device), self.reward.to(device),
                           self.next_obs.to(device), term)  # fmt: skip


def transitions_from_replay(arrays: Mapping[str, np.ndarray]) -> Transitions:
    """Every transition of an episode replay buffer's saved arrays (`EpisodeReplay.state()`
    or its .npz file): slots with a following slot of the same episode.

    Episodes lie in consecutive slots, so the next observation of slot position i is at i + 1.
    The buffer records no terminations (DM Control tasks end by their time limit only).
    """
    used = np.asarray(arrays["slots"])
    steps_after = np.asarray(arrays["steps_after"])
    episode = np.asarray(arrays["episode_of"])
    order = np.argsort(used, kind="stable")  # consecutive slots, consecutive positions
    used, steps_after, episode = used[order], steps_after[order], episode[order]
    obs, action, reward = (np.asarray(arrays[k])[order] for k in ("obs", "action", "reward"))
    i = np.flatnonzero(steps_after[:-1] >= 1)
    i = i[(used[i + 1] == used[i] + 1) & (episode[i + 1] == episode[i])]
    as_t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)  # noqa: E731
    return Transitions(as_t(obs[i]), as_t(action[i]), as_t(reward[i]), as_t(obs[i + 1]))


# -- the model ----------------------------------------------------------------------------------


class EnsembleDynamics(nn.Module):
    """An ensemble of E dynamics MLPs over states, each with a reward head.

    Member e maps the normalised (s, a) to the normalised delta s' - s (a Gaussian mean and
    bounded log-variance when probabilistic) and its reward head to the normalised reward
    (and a termination logit when `predict_termination`).

    Example:
        model = EnsembleDynamics(ensemble_config("pets", obs_dim=5, action_dim=1))
        z = model.encode(obs)              # [M, 5]: the state itself
        z1 = model.next(z, action)         # [M, 5]: the elites' mean prediction
        r = model.reward(z, action)        # [M]

    Attributes:
        obs_shape: (S,), checked by the controller on every observation.
        generator: the torch.Generator trajectory sampling draws from (members, noise);
            None: torch's global generator.
    """

    def __init__(self, config: EnsembleConfig) -> None:
        super().__init__()
        self.config = c = config
        s, a = c.obs_dim, c.action_dim
        self.obs_shape = (s,)
        # Input features: the non-angle state entries, then (sin, cos) of each angle entry.
        self.angle_features = AngleFeatures(s, c.angle_dims)
        features = self.angle_features.out_features
        self.input_norm = Normalizer(features + a)
        self.delta_norm = Normalizer(s)
        self.reward_norm = Normalizer(1)
        self.dynamics = EnsembleMLP(c.ensemble_size, features + a, c.hidden, c.layers,
                                    2 * s if c.probabilistic else s, c.activation)  # fmt: skip
        self.reward_head = EnsembleMLP(c.ensemble_size, features + a, c.reward_hidden, c.reward_layers,
                                       2 if c.predict_termination else 1, c.activation)  # fmt: skip
        if c.probabilistic:
            # Shared by the members, one per state dimension (PETS).
            self.max_logvar = nn.Parameter(torch.full((s,), float(c.max_logvar_init)))
            self.min_logvar = nn.Parameter(torch.full((s,), float(c.min_logvar_init)))
        self.register_buffer("elites", torch.arange(c.num_elites))
        # Whether the reward heads were fitted (a reward-free exploration run leaves them untrained).
        self.register_buffer("reward_fitted", torch.tensor(False))
        self.generator: torch.Generator | None = None
        self.planning: dict[str, Any] = {}  # the planner settings of the run that trained it

    # -- the WorldModel protocol ------------------------------------------------------------

    def encode(self, obs: Tensor) -> Tensor:
        """[M, S] -> [M, S]: the latent is the state (normalisation happens inside)."""
        return obs.float()

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """The elites' mean prediction of the next state: [M, S], [M, A] -> [M, S]."""
        mean, _, _ = self._predict(z, action, self._elite_members())
        return z + self.delta_norm.denormalize(mean).mean(dim=0)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """The elites' mean predicted reward: [M, S], [M, A] -> [M]."""
        _, _, head = self._predict(z, action, self._elite_members())
        return self._reward_from_head(head).mean(dim=0)

    # -- pieces -----------------------------------------------------------------------------

    @property
    def num_elites(self) -> int:
        return int(self.elites.shape[0])

    def _elite_members(self) -> Tensor | None:
        """The elites' indices, or None when every member is an elite in order (no gather)."""
        e = self.config.ensemble_size
        if self.num_elites == e and bool((self.elites == torch.arange(e, device=self.elites.device)).all()):
            return None
        return self.elites

    def state_features(self, obs: Tensor) -> Tensor:
        """[..., S] -> [..., S + n_angles]: the non-angle entries, then sin and cos of
        each of `angle_dims` (the state itself when there are none)."""
        return self.angle_features(obs)

    def normalize_inputs(self, obs: Tensor, action: Tensor) -> Tensor:
        """[..., S], [..., A] -> [..., S + n_angles + A], the networks' z-scored input."""
        return self.input_norm.normalize(torch.cat([self.state_features(obs), action], dim=-1))

    def bounded_logvar(self, raw: Tensor) -> Tensor:
        """PETS's soft bounds: max - softplus(max - raw), then min + softplus(. - min)."""
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        s = self.config.obs_dim
        if not self.config.probabilistic:
            return out, None
        return out[..., :s], self.bounded_logvar(out[..., s:])

    def _predict(
        self, z: Tensor, action: Tensor, members: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Every selected member on every row.

        Shapes: z [M, S], action [M, A] -> normalised delta mean [K, M, S], log-variance
        [K, M, S] (or None), reward-head output [K, M, 1 or 2].
        """
        x = self.normalize_inputs(z.float(), action.float())
        k = self.config.ensemble_size if members is None else members.shape[0]
        x = x.unsqueeze(0).expand(k, *x.shape)
        mean, logvar = self._split(self.dynamics(x, self.dynamics.member_params(members)))
        return mean, logvar, self.reward_head(x, self.reward_head.member_params(members))

    def _reward_from_head(self, head: Tensor) -> Tensor:
        """[..., 1 or 2] -> [...], the reward in env units."""
        return self.reward_norm.denormalize(head[..., :1]).squeeze(-1)

    # -- rollouts for the objectives (models.objectives) ------------------------------------

    def particle_rollout(self, z: Tensor, actions: Tensor, particles: int, propagation: str) -> Tensor:
        """Predicted rewards of each candidate under trajectory sampling (PETS).

        - "ts1": at every step a fresh random permutation of all rows is split evenly
          among the elites (mbrl-lib's "random_model"): each particle's member is re-drawn
          every step, and every elite moves the same number of particles.
        - "tsinf": particle p of every candidate follows elite p mod K for the whole
          horizon. PETS draws this assignment at random; with P a multiple of K the even
          split gives every elite the same share of particles without assignment noise.
        - "expectation": one path per candidate through the elites' mean prediction (no
          sampling; `particles` is ignored and P = 1).

        Probabilistic members sample their next state from their Gaussian (PETS's TS);
        deterministic members move by their mean. A predicted termination (logit > 0) ends
        a particle's rewards.

        Shapes: z [M, S], actions [M, H, A] -> rewards [M, P, H].

        Raises:
            ValueError: an unknown propagation, or a particle count that is not a
                multiple of the number of elites for ts1/tsinf.
        """
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation={propagation!r} is not one of {PROPAGATIONS}")
        m, h, _ = actions.shape
        if propagation == "expectation":
            return self._expectation_rewards(z, actions).unsqueeze(1)
        k = self.num_elites
        if particles < 1 or particles % k:
            raise ValueError(f"particles={particles!r} must be a positive multiple of the number of elites ({k}) "
                             f"for propagation {propagation!r}, so every elite carries the same number of particles")
        r = m * particles
        gen = self.generator
        members = self._elite_members()
        dyn_params = self.dynamics.member_params(members)
        rew_params = self.reward_head.member_params(members)
        device = z.device
        # Row i of the flat batch is (candidate i // P, particle i % P). `order[j]` is the row
        # at position j; positions are grouped by member: [K, R / K].
        rows = torch.arange(r, device=device)
        order = rows.view(m, particles // k, k).permute(2, 0, 1).reshape(r)  # tsinf: p mod K -> block
        state = z.float().repeat_interleave(particles, dim=0)[order]  # [R, S] in position order
        rewards = torch.empty(h, r, device=device)
        alive = torch.ones(r, device=device)
        for t in range(h):
            if propagation == "ts1":
                shuffle = torch.randperm(r, generator=gen, device=device)
                order, state, alive = order[shuffle], state[shuffle], alive[shuffle]
            act = actions[order // particles, t]  # [R, A]
            x = self.normalize_inputs(state, act.float()).view(k, r // k, -1)
            mean, logvar = self._split(self.dynamics(x, dyn_params))
            if logvar is not None:
                noise = torch.randn(mean.shape, generator=gen, device=device)
                mean = mean + (0.5 * logvar).exp() * noise
            head = self.reward_head(x, rew_params)  # [K, R / K, 1 or 2]
            reward = self._reward_from_head(head).reshape(r) * alive
            rewards[t].index_copy_(0, order, reward)
            if self.config.predict_termination:
                alive = alive * (head[..., 1].reshape(r) <= 0).float()
            state = state + self.delta_norm.denormalize(mean).reshape(r, -1)
        return rewards.T.reshape(m, particles, h)

    def _expectation_rewards(self, z: Tensor, actions: Tensor) -> Tensor:
        """[M, S], [M, H, A] -> [M, H] along the elites' mean prediction."""
        members = self._elite_members()
        k = self.num_elites
        dyn_params = self.dynamics.member_params(members)
        rew_params = self.reward_head.member_params(members)
        state = z.float()
        alive = torch.ones(z.shape[0], device=z.device)
        rewards = []
        for t in range(actions.shape[1]):
            x = self.normalize_inputs(state, actions[:, t].float()).unsqueeze(0).expand(k, state.shape[0], -1)
            mean, _ = self._split(self.dynamics(x, dyn_params))
            head = self.reward_head(x, rew_params)
            rewards.append(self._reward_from_head(head).mean(dim=0) * alive)
            if self.config.predict_termination:
                alive = alive * (torch.sigmoid(head[..., 1]).mean(dim=0) <= 0.5).float()
            state = state + self.delta_norm.denormalize(mean).mean(dim=0)
        return torch.stack(rewards, dim=1)

    def disagreement(self, z: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Plan2Explore's intrinsic reward: the variance across all E members of their
        predicted (normalised) next-state deltas, averaged over state dimensions, and the
        members' mean next state. Zero when the members agree. Normalised units make the
        state dimensions comparable (a position and a velocity count alike).

        Shapes: z [M, S], action [M, A] -> (next state [M, S], disagreement [M]).
        """
        mean, _, _ = self._predict(z, action, None)  # [E, M, S]
        spread = mean.var(dim=0, unbiased=False).mean(dim=-1) if mean.shape[0] > 1 else mean.new_zeros(z.shape[0])
        return z + self.delta_norm.denormalize(mean).mean(dim=0), spread

    def disagreement_rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        """The disagreement at each step along the members' mean prediction.

        Shapes: z [M, S], actions [M, H, A] -> [M, H].
        """
        out = []
        state = z.float()
        for t in range(actions.shape[1]):
            state, spread = self.disagreement(state, actions[:, t])
            out.append(spread)
        return torch.stack(out, dim=1)

    # -- training -------------------------------------------------------------------------------

    def fit_normalizers(self, data: Transitions, inputs: bool = True, delta: bool = True, reward: bool = True) -> None:
        """Fit the normalisation statistics to `data` (PETS and mbrl-lib refit them to all
        data before every round of training)."""
        if inputs:
            device = self.input_norm.mean.device
            self.input_norm.fit(torch.cat([self.state_features(data.obs.to(device)), data.action.to(device)], dim=-1))
        if delta:
            self.delta_norm.fit(data.next_obs - data.obs)
        if reward:
            self.reward_norm.fit(data.reward.reshape(-1, 1))

    def member_outputs(self, batch: Transitions) -> tuple[Tensor, Tensor | None, Tensor]:
        """Each member on its own rows: batch tensors [E, T, *] -> delta mean [E, T, S],
        log-variance [E, T, S] or None, reward-head output [E, T, 1 or 2] (normalised)."""
        x = self.normalize_inputs(batch.obs, batch.action)
        mean, logvar = self._split(self.dynamics(x))
        return mean, logvar, self.reward_head(x)

    def loss(self, batch: Transitions, dynamics: bool = True, reward: bool = True) -> tuple[Tensor, dict[str, float]]:
        """The training loss of each member on its own (bootstrapped) rows, summed over
        members (each member's gradient is its own loss's).

        Dynamics: Gaussian NLL of the normalised delta (mean over rows and dimensions of
        (mu - y)^2 exp(-logvar) + logvar) plus `logvar_bound_penalty` x (sum max_logvar -
        sum min_logvar) when probabilistic (PETS); MSE otherwise (Nagabandi). Reward: MSE
        of the normalised reward; termination: binary cross-entropy.

        Shapes: batch tensors [E, T, *].
        """
        c = self.config
        mean, logvar, head = self.member_outputs(batch)
        total = mean.new_zeros(())
        metrics: dict[str, float] = {}
        if dynamics:
            target = self.delta_norm.normalize(batch.next_obs - batch.obs)
            mse = (mean - target).pow(2)
            if logvar is not None:
                nll = (mse * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
                total = total + nll + c.logvar_bound_penalty * (self.max_logvar.sum() - self.min_logvar.sum())
                metrics["nll"] = float(nll.detach()) / c.ensemble_size
            else:
                total = total + mse.mean(dim=(1, 2)).sum()
            metrics["dynamics_mse"] = float(mse.detach().mean())
        if reward:
            reward_target = self.reward_norm.normalize(batch.reward.unsqueeze(-1)).squeeze(-1)
            reward_mse = (head[..., 0] - reward_target).pow(2).mean(dim=1).sum()
            total = total + reward_mse
            metrics["reward_mse"] = float(reward_mse.detach()) / c.ensemble_size
            if c.predict_termination:
                term = batch.terminated if batch.terminated is not None else torch.zeros_like(batch.reward)
                bce = F.binary_cross_entropy_with_logits(head[..., 1], term.float(), reduction="none").mean(dim=1).sum()
                total = total + bce
        metrics["loss"] = float(total.detach())
        return total, metrics

    @torch.no_grad()
    def member_scores(self, data: Transitions, dynamics: bool = True, reward: bool = True) -> Tensor:
        """Held-out score of every member on all of `data` [T, *]: MSE of its mean
        prediction in normalised units (dynamics and/or reward), lower is better. [E]."""
        e = self.config.ensemble_size
        batch = Transitions(*(None if v is None else v.unsqueeze(0).expand(e, *v.shape)
                              for v in (data.obs, data.action, data.reward, data.next_obs, data.terminated)))  # fmt: skip
        mean, _, head = self.member_outputs(batch)
        score = mean.new_zeros(e)
        if dynamics:
            target = self.delta_norm.normalize(batch.next_obs - batch.obs)
            score = score + (mean - target).pow(2).mean(dim=(1, 2))
        if reward:
            target_r = self.reward_norm.normalize(batch.reward.unsqueeze(-1)).squeeze(-1)
            score = score + (head[..., 0] - target_r).pow(2).mean(dim=1)
        return score

    def member_parameters(self, dynamics: bool = True, reward: bool = True) -> dict[str, nn.Parameter]:
        """Parameters with a leading member dimension [E, ...], by name."""
        out = {}
        for name, p in self.named_parameters():
            if (dynamics and name.startswith("dynamics.")) or (reward and name.startswith("reward_head.")):
                out[name] = p
        return out

    # -- files --------------------------------------------------------------------------------

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """A dict of tensors and primitives that `torch.load(weights_only=True)` accepts."""
        return model_checkpoint(self, "ensemble", FORMAT_VERSION, asdict(self.config), **extra)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Mapping[str, Any],
        task: str | None = None,
        obs_shape: tuple[int, ...] | None = None,
        action_dim: int | None = None,
    ) -> EnsembleDynamics:
        """Rebuild a model, checking that it fits the task it is about to be used on.

        Raises:
            CheckpointError: another family or layout.
            ValueError: another task, observation shape or action size (both values named).
        """
        config = EnsembleConfig.from_dict(read_header(checkpoint, "ensemble", FORMAT_VERSION))
        if task is not None and config.task is not None and task != config.task:
            raise ValueError(f"checkpoint was trained on task {config.task!r}, but the task is {task!r}")
        if obs_shape is not None and tuple(obs_shape) != (config.obs_dim,):
            raise ValueError(f"checkpoint expects state observations of shape ({config.obs_dim},), but the "
                             f"environment gives {tuple(obs_shape)} (the ensemble takes state observations only)")
        if action_dim is not None and action_dim != config.action_dim:
            raise ValueError(f"checkpoint has action_dim={config.action_dim}, but the environment has {action_dim}")
        model = cls(config)
        model.load_state_dict(checkpoint["state_dict"])
        model.planning = dict(checkpoint.get("planning") or {})
        return model


# -- training loops (used by the trainer and by zero-shot planning) ----------------------------


def train_ensemble(
    model: EnsembleDynamics,
    optimizer: torch.optim.Optimizer,
    data: Transitions,
    rng: np.random.Generator,
    epochs: int = 5,
    batch_size: int = 32,
    val_fraction: float = 0.1,
    max_val: int = 5000,
    patience: int = 5,
    improvement: float = 0.01,
    dynamics: bool = True,
    reward: bool = True,
) -> dict[str, float]:
    """One round of training on all of `data`, PETS / mbrl-lib style.

    A random `val_fraction` of the transitions (at most `max_val`) is held out; the
    normalisers are fitted to the rest. Every epoch each member draws its own bootstrap
    of the training rows (with replacement) and walks it in minibatches of `batch_size`
    (the members' batches are stacked: [E, batch, *]). After each epoch every member is
    scored on the held-out rows; each member keeps its best weights, and training stops
    after `patience` epochs in which no member improved by more than `improvement`
    (relative; mbrl-lib's rule). The `num_elites` best members become the elites.
    With `dynamics=False` only the reward heads train (zero-shot reward fitting; the
    dynamics, its normalisers and the elites stay as they are).

    Returns:
        metrics of the round: loss (last batch), val_score (mean over the elites), epochs.
    """
    device = next(model.parameters()).device
    data = data.to(device)
    t = len(data)
    if t < 2:
        raise ValueError(f"train_ensemble needs at least 2 transitions, got {t}")
    perm = torch.as_tensor(rng.permutation(t), device=device)
    n_val = min(int(t * val_fraction), max_val) if t >= 20 else 0
    val, train = data.take(perm[:n_val]), data.take(perm[n_val:])
    model.fit_normalizers(train, inputs=dynamics, delta=dynamics, reward=reward)
    params = model.member_parameters(dynamics=dynamics, reward=reward)
    e = model.config.ensemble_size
    n = len(train)
    best = model.member_scores(val, dynamics, reward) if n_val else None
    best_weights = {k: p.detach().clone() for k, p in params.items()}
    since, done_epochs, metrics = 0, 0, {}
    model.train()
    for _ in range(epochs):
        boot = torch.as_tensor(rng.integers(0, n, size=(e, n)), device=device)  # [E, n]
        for start in range(0, n, batch_size):
            loss, metrics = model.loss(train.take(boot[:, start : start + batch_size]), dynamics=dynamics, reward=reward)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        done_epochs += 1
        if best is None:
            continue
        scores = model.member_scores(val, dynamics, reward)
        better = scores < best
        gain = ((best - scores) / best.abs().clamp_min(1e-12)).max()
        with torch.no_grad():
            for k, p in params.items():
                best_weights[k][better] = p.detach()[better]
        best = torch.where(better, scores, best)
        since = 0 if float(gain) > improvement else since + 1
        if since >= patience:
            break
    model.eval()
    if best is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(best_weights[k])
        if dynamics:
            model.elites = torch.sort(torch.argsort(best)[: model.num_elites]).values.to(model.elites)
        val_score = float(best[model.elites].mean())
    else:
        val_score = float("nan")
    if reward:
        model.reward_fitted.fill_(True)
    return {"loss": float(metrics.get("loss", float("nan"))), "val_score": val_score, "epochs": float(done_epochs)}


def fit_reward_head(
    model: EnsembleDynamics,
    data: Transitions,
    rng: np.random.Generator,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-3,
) -> EnsembleDynamics:
    """Zero-shot: a copy of `model` whose reward heads are re-initialised and fitted to
    `data` (the explored transitions labelled with the task reward), dynamics untouched
    (Plan2Explore's zero-shot adaptation, no new env steps). Returns the copy."""
    fitted = copy.deepcopy(model)
    fitted.generator = model.generator
    with torch.no_grad():
        for layer in fitted.reward_head.layers:
            fresh = EnsembleLinear(*layer.weight.shape[:1], layer.weight.shape[1], layer.weight.shape[2])
            layer.weight.copy_(fresh.weight)
            layer.bias.zero_()
    optimizer = torch.optim.Adam(fitted.reward_head.parameters(), lr=lr)
    train_ensemble(fitted, optimizer, data, rng, epochs=epochs, batch_size=batch_size, dynamics=False, reward=True)
    return fitted


# -- files and the registry's entry points (models.registry) --------------------------------


def load_ensemble(path: str | Path, **checks: Any) -> EnsembleDynamics:
    """An ensemble model file; `checks` (task, obs_shape, action_dim) as `from_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return EnsembleDynamics.from_checkpoint(checkpoint, **checks).eval()


def load_for_planning(path: str | Path, env: Any = None, device: str | torch.device = "auto") -> EnsembleDynamics:
    """An ensemble model file ready to plan with, checked against `env` (its task,
    observation shape and action size) when given.

    Raises:
        FileNotFoundError: no file at `path`.
        CheckpointError: the file holds another model.
        ValueError: the file was trained for another task or other shapes.
    """
    from models.planning import env_task
    from planners import resolve_device

    checks: dict[str, Any] = {}
    if env is not None:
        checks = {"obs_shape": tuple(env.observation_space.shape), "action_dim": int(env.action_space.shape[0])}
        if env_task(env) is not None:
            checks["task"] = env_task(env)
    try:
        model = load_ensemble(path, **checks)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model.to(resolve_device(device))


def pixels_refused(obs: str) -> None:
    """The ensemble models state vectors; a pixel request is refused by name."""
    if obs != "state":
        raise ValueError(f"obs={obs!r}: the ensemble takes state observations only (it models the state vector); "
                         "use --obs state, or --model told / rssm for pixels")


def run_transitions(checkpoint: Path) -> Transitions:
    """The transitions of the training run whose folder holds `checkpoint` (its replay
    buffer, the file the run's checkpoint.pt names)."""
    folder = Path(checkpoint).parent
    replay = None
    if (folder / "checkpoint.pt").is_file():
        state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)
        replay = folder / str(state.get("replay_file", ""))
    if replay is None or not replay.is_file():
        found = sorted(folder.glob("replay-e*.npz"))
        replay = found[-1] if found else None
    if replay is None:
        raise FileNotFoundError(f"no replay buffer (replay-e<N>.npz) beside {checkpoint}; --zero-shot fits the reward "
                                "head on the run's own data and needs the run folder")
    with np.load(replay) as arrays:
        return transitions_from_replay(arrays)


def prepare_planning(request: Any) -> Any:
    """MPC over a trained ensemble: trajectory sampling over particles (the run's planner
    budget and propagation unless the flags say otherwise), or the disagreement objective;
    `zero_shot` first fits the reward heads to the run's explored data."""
    import envs
    from models import registry
    from models.objectives import make_disagreement_objective, make_trajectory_sampling_objective
    from models.planning import PlanSetup, build_planner, describe_planner
    from planners import MPCController

    pixels_refused(request.obs)
    spec = registry.get("ensemble")
    if request.checkpoint is None:
        raise FileNotFoundError(f"--model ensemble needs --checkpoint: train one with `python run_planning.py train "
                                f"--model ensemble --task {request.task}` and pass --checkpoint runs/.../model.pt")
    header = load_ensemble(request.checkpoint)  # the run's action repeat and planner, before the env
    trained_repeat = header.config.action_repeat
    if request.action_repeat is not None and trained_repeat is not None and request.action_repeat != trained_repeat:
        raise ValueError(f"--action-repeat {request.action_repeat}: the model was trained with action repeat "
                         f"{trained_repeat}; plan with that (or leave --action-repeat out)")
    env = envs.make(request.task, obs="state", seed=request.seed, action_repeat=request.action_repeat or trained_repeat)
    model = load_for_planning(request.checkpoint, env=env, device=request.device)
    options = dict(request.options)
    objective_name = options.get("objective", "task")
    if objective_name not in ("task", "disagreement"):
        raise ValueError(f"objective={objective_name!r} is not one of ('task', 'disagreement')")
    note = ""
    if options.get("zero_shot"):
        data = run_transitions(Path(request.checkpoint))
        model = fit_reward_head(model, data, np.random.default_rng(request.seed))
        note = f", reward head fitted zero-shot to the run's {len(data)} transitions"
    elif objective_name == "task" and not bool(model.reward_fitted):
        raise ValueError(f"{request.checkpoint} comes from a reward-free exploration run (its reward head is "
                         "untrained): plan with --zero-shot (fits it to the run's data) or --objective disagreement")
    trained = dict(model.planning)
    budget = {k: trained[k] for k in ("horizon", "num_samples", "num_elites", "iterations") if k in trained}
    budget = budget or dict(spec.default_budget)
    if request.planner == "icem" and "noise_beta" in trained:
        budget["noise_beta"] = trained["noise_beta"]
    planner = build_planner(request, int(env.action_space.shape[0]), budget)
    default_particles = 20 if (model.config.probabilistic or model.num_elites > 1) else 1
    particles = int(options.get("particles", trained.get("particles", default_particles)))
    propagation = options.get("propagation", trained.get("propagation", "tsinf"))
    risk = float(options.get("risk", 0.0))
    model.generator = torch.Generator(device=request.device).manual_seed(request.seed)
    if objective_name == "disagreement":
        factory = make_disagreement_objective()
        what = "disagreement (Plan2Explore)"
    else:
        factory = make_trajectory_sampling_objective(particles=particles, propagation=propagation, risk=risk)
        what = f"{propagation} over {particles} particles" + (f", risk {risk:g}" if risk else "")
    controller = MPCController(model, planner, objective=factory, seed=request.seed, device=request.device,
                               precision=request.precision)  # fmt: skip
    c = model.config
    description = (f"planner {request.planner} {describe_planner(planner)}, model ensemble ({c.ensemble_size} x "
                   f"{c.layers} x {c.hidden}, {'probabilistic' if c.probabilistic else 'deterministic'}, "
                   f"{model.num_elites} elites), objective {what}{note}")
    return PlanSetup(env=env, controller=controller, description=description)


def tiny_case() -> Any:
    """A tiny probabilistic ensemble (3 members) on a made-up 5-D task for the contract
    tests, with normalisers fitted to random data and TS-inf over 3 particles."""
    from models.checkpoints import atomic_torch_save
    from models.objectives import make_trajectory_sampling_objective
    from models.planning import EnvShapes, TinyCase

    torch.manual_seed(0)
    model = EnsembleDynamics(ensemble_config("tiny", 5, 2, task="tiny-task"))
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 5, generator=g)
    data = Transitions(obs, torch.rand(64, 2, generator=g) * 2 - 1, torch.randn(64, generator=g),
                       obs + 0.1 * torch.randn(64, 5, generator=g))  # fmt: skip
    model.fit_normalizers(data)
    model.reward_fitted.fill_(True)
    model.eval()
    env = EnvShapes((5,), 2, task="tiny-task")
    return TinyCase(model=model, obs=torch.linspace(-1, 1, 5), action_dim=2,
                    save=lambda path: atomic_torch_save(model.checkpoint(), path), env=env,
                    controller_kwargs={"objective": make_trajectory_sampling_objective(particles=3, propagation="tsinf")})
