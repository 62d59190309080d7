"""TOLD, TD-MPC2's world model (Hansen, Su and Wang, 2024, "TD-MPC2: Scalable, Robust World
Models for Continuous Control"; TD-MPC: Hansen, Wang and Su, 2022).

A decoder-free latent model: an encoder to a SimNorm latent, deterministic latent
dynamics, a reward head, an ensemble of Q heads and a tanh-Gaussian policy prior. Rewards
and values are categorical over 101 bins in symlog space ("two-hot"). The model is
trained by `training.told_trainer` with the losses of `told_losses`.

It meets the planner's WorldModel protocol (`encode`, `next`, `reward`) and adds `value`
(mean of two random Q heads at the policy's action: the terminal value of TD-MPC2's MPPI)
and `policy` (its 24 guide sequences).

Shapes: M a flattened batch, Z latent size, A action size, K bins, E ensemble members.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import CheckpointError, model_checkpoint, read_header
from models.layers import MLP, LinearEnsemble, simnorm, symexp, symlog

__all__ = [
    "heuristic_discount",
    "TOLDConfig",
    "TOLD",
    "TOLD_SIZES",
    "FORMAT_VERSION",
    "two_hot",
    "two_hot_inverse",
    "soft_cross_entropy",
    "load_told",
]

FORMAT_VERSION = 1

# Model sizes (TD-MPC2 Table of sizes; ANCHORS section 2): enc_dim, mlp_dim, latent_dim,
# num_q. "tiny" is ours, for tests.
TOLD_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(enc_dim=32, mlp_dim=32, latent_dim=16, num_q=2),
    "1M": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_q=2),
    "5M": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_q=5),
}


@dataclass(frozen=True)
class TOLDConfig:
    """Architecture of a TOLD model.

    Attributes:
        obs_shape: one observation: (D,) for states, (C, H, W) uint8 for pixels (C = 3
            frames x 3 channels with TD-MPC2's frame stack).
        action_dim: A.
        obs_type: "state" or "pixels".
        size: a key of TOLD_SIZES; explicit dims below override it when given.
        task: the task the model was trained on (checked when a checkpoint is loaded).
        num_bins, vmin, vmax: the two-hot support, in symlog space.
        simnorm_group: SimNorm group size (8).
        q_dropout: dropout on the first Q layer (1%).
        log_std_min, log_std_max: the policy's log-std range.
        num_channels: conv channels of the pixel encoder.
    """

    obs_shape: tuple[int, ...]
    action_dim: int
    obs_type: str = "state"
    size: str = "5M"
    task: str | None = None
    enc_dim: int = 0
    mlp_dim: int = 0
    latent_dim: int = 0
    num_q: int = 0
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    simnorm_group: int = 8
    q_dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    num_channels: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in self.obs_shape))
        if self.size not in TOLD_SIZES:
            raise ValueError(f"size={self.size!r} is not a TOLD size; choose one of {sorted(TOLD_SIZES)}")
        for name, value in TOLD_SIZES[self.size].items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, value)
        if self.obs_type not in ("state", "pixels"):
            raise ValueError(f"obs_type={self.obs_type!r} must be 'state' or 'pixels'")
        expected_ndim = 1 if self.obs_type == "state" else 3
        if len(self.obs_shape) != expected_ndim or min(self.obs_shape) <= 0:
            raise ValueError(f"obs_shape={self.obs_shape} does not fit obs_type={self.obs_type!r}: expected {expected_ndim} positive dims")
        if self.action_dim <= 0:
            raise ValueError(f"action_dim={self.action_dim!r} must be positive")
        if self.latent_dim % self.simnorm_group:
            raise ValueError(f"latent_dim={self.latent_dim} must be divisible by simnorm_group={self.simnorm_group}")
        if self.num_q < 2:
            raise ValueError(f"num_q={self.num_q} must be at least 2 (two random heads form the TD target)")
        if self.num_bins < 2 or not self.vmin < self.vmax:
            raise ValueError(f"num_bins={self.num_bins}, vmin={self.vmin}, vmax={self.vmax}: need >= 2 bins and vmin < vmax")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["obs_shape"] = list(self.obs_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TOLDConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TOLD config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{**d, "obs_shape": tuple(d["obs_shape"])})


# -- two-hot regression in symlog space (TD-MPC2 section 3; DreamerV3) ------------------------


def two_hot(x: Tensor, num_bins: int, vmin: float, vmax: float) -> Tensor:
    """Soft two-hot encoding of symlog(x) over `num_bins` evenly spaced points.

    The two neighbouring bins share the mass so that the expectation over the support is
    exactly symlog(x) (clamped to [vmin, vmax]). [...] -> [..., K]
    """
    bin_size = (vmax - vmin) / (num_bins - 1)
    x = symlog(x).clamp(vmin, vmax)
    position = (x - vmin) / bin_size
    low = position.floor().clamp(max=num_bins - 2)
    offset = (position - low).unsqueeze(-1)  # weight of the upper bin
    low = low.long().unsqueeze(-1)
    out = torch.zeros(*x.shape, num_bins, device=x.device, dtype=x.dtype)
    out.scatter_(-1, low, 1.0 - offset)
    out.scatter_add_(-1, low + 1, offset)
    return out


def two_hot_inverse(logits: Tensor, vmin: float, vmax: float) -> Tensor:
    """Expected value of the categorical, mapped back with symexp. [..., K] -> [...]"""
    support = torch.linspace(vmin, vmax, logits.shape[-1], device=logits.device, dtype=logits.dtype)
    return symexp(F.softmax(logits, dim=-1) @ support)


def soft_cross_entropy(logits: Tensor, target: Tensor, num_bins: int, vmin: float, vmax: float) -> Tensor:
    """Cross-entropy between predicted logits and the two-hot target. [..., K], [...] -> [...]"""
    return -(two_hot(target, num_bins, vmin, vmax) * F.log_softmax(logits, dim=-1)).sum(-1)


# -- modules -------------------------------------------------------------------------------


class _SimNormHead(nn.Module):
    """MLP whose output goes through LayerNorm and SimNorm: TD-MPC2's latent-producing layers."""

    def __init__(self, in_features: int, hidden: list[int], latent_dim: int, group: int) -> None:
        super().__init__()
        self.mlp = MLP(in_features, hidden, latent_dim)
        self.norm = nn.LayerNorm(latent_dim)
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        return simnorm(self.norm(self.mlp(x)), self.group)


class PixelEncoder(nn.Module):
    """TD-MPC2's conv encoder for 64x64 frames: random shift (3 px), 4 convs, SimNorm.

    uint8 [M, C, 64, 64] -> [M, Z]. The flattened conv output (32 x 4 x 4 = 512) is
    projected to the latent size when they differ (TD-MPC2 sets latent 512 for pixels).
    """

    def __init__(self, obs_shape: tuple[int, ...], channels: int, latent_dim: int, group: int, shift: int = 3) -> None:
        super().__init__()
        c, h, w = obs_shape
        self.shift = shift
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels, 7, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 5, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
        )  # fmt: skip
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c, h, w)).numel()
        self.project = None if flat == latent_dim else nn.Linear(flat, latent_dim)
        self.norm = nn.LayerNorm(latent_dim) if self.project is not None else None
        self.group = group

    def random_shift(self, x: Tensor) -> Tensor:
        """DrQ's augmentation: pad by `shift` (replicate) and crop back at a random offset per image."""
        m, _, h, w = x.shape
        padded = F.pad(x, (self.shift,) * 4, mode="replicate")
        eps = 1.0 / (h + 2 * self.shift)
        arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * self.shift, device=x.device)[:h]
        base = torch.stack(torch.meshgrid(arange, arange, indexing="xy"), dim=-1)  # [H, W, 2]
        offsets = torch.randint(0, 2 * self.shift + 1, (m, 1, 1, 2), device=x.device).float() * (2.0 / (h + 2 * self.shift))
        return F.grid_sample(padded, base.unsqueeze(0) + offsets, padding_mode="zeros", align_corners=False)

    def forward(self, obs: Tensor) -> Tensor:
        # The shift is applied always, as TD-MPC2 does (targets and acting included): the
        # encoder never sees an unshifted frame, so it is part of the function learned.
        x = obs.float()
        if self.shift > 0:
            x = self.random_shift(x)
        x = x / 255.0 - 0.5
        x = self.convs(x).flatten(1)
        if self.project is not None:
            x = self.norm(self.project(x))
        return simnorm(x, self.group)


class TOLD(nn.Module):
    """The TD-MPC2 world model (see module docstring).

    Example:
        model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=1, size="1M"))
        z = model.encode(obs)                  # [M, 5] -> [M, 128]
        planner = MPPI.tdmpc2(action_dim=1)
        controller = MPCController(model, planner)  # value + 24 policy proposals
    """

    def __init__(self, config: TOLDConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        za = c.latent_dim + c.action_dim
        hidden = [c.mlp_dim, c.mlp_dim]
        if c.obs_type == "state":
            self.encoder: nn.Module = _SimNormHead(c.obs_shape[0], [c.enc_dim], c.latent_dim, c.simnorm_group)
        else:
            self.encoder = PixelEncoder(c.obs_shape, c.num_channels, c.latent_dim, c.simnorm_group)
        self.dynamics = _SimNormHead(za, hidden, c.latent_dim, c.simnorm_group)
        self.reward_head = MLP(za, hidden, c.num_bins)
        self.policy_head = MLP(c.latent_dim, hidden, 2 * c.action_dim)
        self.q_heads = LinearEnsemble(c.num_q, za, hidden, c.num_bins, dropout=c.q_dropout)
        self._init_weights()
        # Polyak-averaged copy of the Q ensemble for TD targets; never trained directly.
        self.target_q_heads = copy.deepcopy(self.q_heads).requires_grad_(False)
        self.register_buffer("support", torch.linspace(c.vmin, c.vmax, c.num_bins), persistent=False)
        self.obs_shape = c.obs_shape
        self.obs_dtype = torch.float32
        # Set by the controller's owner for reproducible value/policy samples; None uses
        # torch's global generator.
        self.generator: torch.Generator | None = None

    def _init_weights(self) -> None:
        """TD-MPC2's initialisation: truncated normal (std 0.02) weights, zero biases, and
        zero output layers for reward and Q so that early predictions are exactly 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        for w, b in zip(self.q_heads.weights, self.q_heads.biases):
            nn.init.trunc_normal_(w, std=0.02)
            nn.init.zeros_(b)
        nn.init.zeros_(self.reward_head.out.weight)
        nn.init.zeros_(self.q_heads.weights[-1])

    # -- the WorldModel protocol ---------------------------------------------------------

    def encode(self, obs: Tensor) -> Tensor:
        """[M, *obs] -> [M, Z]; pixel observations are uint8 CHW."""
        expected = self.config.obs_shape
        if tuple(obs.shape[1:]) != expected:
            raise ValueError(f"observation has shape {tuple(obs.shape[1:])} (batch {obs.shape[0]}); this TOLD model expects {expected}")
        return self.encoder(obs)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """[M, Z], [M, A] -> [M, Z]"""
        return self.dynamics(torch.cat([z, action], dim=-1))

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """[M, Z], [M, A] -> [M]"""
        return self._decode(self.reward_head(torch.cat([z, action], dim=-1)))

    def policy(self, z: Tensor) -> Tensor:
        """A sampled (tanh-squashed) action of the policy prior. [M, Z] -> [M, A]"""
        return self.sample_policy(z)[0]

    def value(self, z: Tensor) -> Tensor:
        """TD-MPC2's terminal value: the mean of 2 random Q heads at a policy action. [M, Z] -> [M]"""
        return self.q_value(z, self.policy(z), kind="avg")

    # -- training-time pieces ------------------------------------------------------------

    def reward_logits(self, z: Tensor, action: Tensor) -> Tensor:
        """[M, Z], [M, A] -> [M, K]"""
        return self.reward_head(torch.cat([z, action], dim=-1))

    def q_logits(self, z: Tensor, action: Tensor, target: bool = False, members: Tensor | None = None) -> Tensor:
        """Logits of every (or the selected) Q head. [M, Z], [M, A] -> [E, M, K]"""
        heads = self.target_q_heads if target else self.q_heads
        return heads(torch.cat([z, action], dim=-1), members=members)

    def random_heads(self, device: torch.device | str) -> Tensor:
        """Indices of 2 distinct random Q heads. -> [2]"""
        return torch.randperm(self.config.num_q, generator=self.generator, device=device)[:2]

    def q_value(
        self,
        z: Tensor,
        action: Tensor,
        kind: str = "avg",
        target: bool = False,
        members: Tensor | None = None,
        detach_params: bool = False,
    ) -> Tensor:
        """Two random heads (or `members`), combined by "avg" (planning, policy loss) or "min"
        (TD target). `detach_params` freezes the heads (gradients reach z and action). -> [M]"""
        if members is None:
            members = self.random_heads(z.device)
        heads = self.target_q_heads if target else self.q_heads
        logits = heads(torch.cat([z, action], dim=-1), members=members, detach_params=detach_params)
        q = self._decode(logits)  # [2, M]
        return q.mean(dim=0) if kind == "avg" else q.min(dim=0).values

    def sample_policy(self, z: Tensor, eps: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Sample the tanh-Gaussian policy prior (TD-MPC2 `pi`).

        `eps` [M, A] is the standard normal noise to use (drawn here when None).

        Returns:
            action [M, A] in (-1, 1), its mean action tanh(mu) [M, A], and the entropy
            bonus of the sample [M]: -A log N(pre-tanh sample), TD-MPC2's "scaled entropy"
            (the Gaussian log-density scaled by the action size, so that one coefficient
            fits every action size; the tanh correction cancels out in its definition).
        """
        c = self.config
        mean, log_std = self.policy_head(z).chunk(2, dim=-1)
        # Squash the raw log-std into [log_std_min, log_std_max] smoothly.
        log_std = c.log_std_min + 0.5 * (c.log_std_max - c.log_std_min) * (torch.tanh(log_std) + 1.0)
        if eps is None:
            eps = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        pre_tanh = mean + eps * log_std.exp()
        gaussian_log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(pre_tanh), torch.tanh(mean), -c.action_dim * gaussian_log_prob

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """Polyak averaging of the target Q heads: target <- (1 - tau) target + tau online."""
        for target, online in zip(self.target_q_heads.parameters(), self.q_heads.parameters()):
            target.lerp_(online, tau)

    def _decode(self, logits: Tensor) -> Tensor:
        """Two-hot logits [..., K] -> scalars [...], always in float32: under bfloat16
        autocast the expectation over 101 bins would otherwise round values to ~3 digits."""
        with torch.autocast(logits.device.type, enabled=False):
            return symexp(F.softmax(logits.float(), dim=-1) @ self.support)

    # -- checkpoints ---------------------------------------------------------------------

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """A dict of tensors and primitives that `torch.load(weights_only=True)` accepts."""
        return model_checkpoint(self, "told", FORMAT_VERSION, self.config.to_dict(), **extra)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: dict[str, Any],
        task: str | None = None,
        obs_shape: tuple[int, ...] | None = None,
        action_dim: int | None = None,
    ) -> TOLD:
        """Rebuild a model, checking that it fits the task it is about to be used on."""
        config = TOLDConfig.from_dict(read_header(checkpoint, "told", FORMAT_VERSION))
        if task is not None and config.task is not None and task != config.task:
            raise ValueError(f"checkpoint was trained on task {config.task!r}, but the task is {task!r}")
        if obs_shape is not None and tuple(obs_shape) != config.obs_shape:
            raise ValueError(
                f"checkpoint expects observations of shape {config.obs_shape} ({config.obs_type}), "
                f"but the environment gives {tuple(obs_shape)}"
            )
        if action_dim is not None and action_dim != config.action_dim:
            raise ValueError(f"checkpoint has action_dim={config.action_dim}, but the environment has {action_dim}")
        model = cls(config)
        model.load_state_dict(checkpoint["state_dict"])
        return model


def heuristic_discount(episode_length: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's discount from the episode length in agent steps: 500 steps -> 0.99."""
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


def load_told(path: str | Path, **checks: Any) -> TOLD:
    """Load a TOLD checkpoint file (a training checkpoint or a shipped model file).

    `checks` are passed to `TOLD.from_checkpoint` (task, obs_shape, action_dim).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no TOLD checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("agent_state"), dict):
        checkpoint = checkpoint["agent_state"]["agent"]  # a training checkpoint.pt holds the model's own
    elif isinstance(checkpoint, dict) and "agent" in checkpoint:  # an agent's state() saved alone
        checkpoint = checkpoint["agent"]
    model = TOLD.from_checkpoint(checkpoint, **checks)
    return model.eval()


# -- the registry's entry points (models.registry) ------------------------------------------


def load_for_planning(path: str | Path, env: Any = None, device: str | torch.device = "auto") -> TOLD:
    """A TOLD model file (or training checkpoint) ready to plan with, checked against `env`
    (its task, observation shape and action size) when given.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file holds another model, or was trained for another task or shapes.
    """
    from planners import resolve_device

    checks: dict[str, Any] = {}
    if env is not None:
        checks = {"obs_shape": tuple(env.observation_space.shape), "action_dim": int(env.action_space.shape[0])}
        from models.planning import env_task

        if env_task(env) is not None:
            checks["task"] = env_task(env)
    try:
        model = load_told(path, **checks)
    except CheckpointError as error:  # another family or format: keep the error's kind
        raise CheckpointError(f"{path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model.to(resolve_device(device))


def planner_for_told(request: Any, action_dim: int, budget: dict[str, Any]) -> Any:
    """TD-MPC2's MPPI preset for MPPI; the other planners get its budget (flags on top).

    A `--samples` smaller than the preset's keeps at least half of the candidates for
    noise (the policy proposals take fixed slots among them)."""
    import dataclasses

    from models.planning import build_planner

    preset = request.preset
    if preset is None and request.planner == "mppi":
        preset = "tdmpc2"
    defaults: dict[str, Any] = {} if preset else dict(budget)
    if "num_samples" in request.overrides:
        defaults["num_proposals"] = min(24, request.overrides["num_samples"] // 2)
        if preset:
            preset = None
            defaults = {**budget, "num_proposals": defaults["num_proposals"]}
            if request.planner == "mppi":  # the rest of TD-MPC2's MPPI
                defaults.update(init_std=2.0, min_std=0.05, max_std=2.0, temperature=2.0, output="sample_elite")
    return build_planner(dataclasses.replace(request, preset=preset), action_dim, defaults)


def prepare_planning(request: Any) -> Any:
    """MPPI (TD-MPC2's preset) over a trained TOLD, with its Q value at the horizon and its
    policy's proposals; the shipped checkpoint for the task when none is given."""
    import envs
    from models import registry
    from models.planning import PlanSetup, describe_planner, shipped_checkpoint
    from planners import MPCController

    spec = registry.get("told")
    env = envs.make(request.task, obs=request.obs, seed=request.seed, action_repeat=request.action_repeat,
                    frame_stack=3 if request.obs == "pixels" else 1)
    path = request.checkpoint or shipped_checkpoint(spec.shipped, request.task, request.obs)
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no TOLD checkpoint for {request.task} ({request.obs}) at {path}; train one with "
            f"`python run_planning.py train --model told --task {request.task}` and pass --checkpoint runs/.../model.pt"
        )
    model = load_for_planning(path, env=env, device=request.device)
    planner = planner_for_told(request, int(env.action_space.shape[0]), spec.default_budget)
    model.generator = torch.Generator(device=request.device).manual_seed(request.seed)
    controller = MPCController(model, planner, discount=heuristic_discount(env.max_episode_steps), use_value=True,
                               seed=request.seed, device=request.device, precision=request.precision)
    description = (f"planner {request.planner} {describe_planner(planner)}, "
                   f"model told ({model.config.size}, {model.config.obs_type})")
    return PlanSetup(env=env, controller=controller, description=description)


def tiny_case() -> Any:
    """A tiny state TOLD for the contract tests."""
    from models.checkpoints import atomic_torch_save
    from models.planning import EnvShapes, TinyCase

    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task")).eval()
    env = EnvShapes((5,), 2, task="tiny-task")
    return TinyCase(model=model, obs=torch.linspace(-1, 1, 5), action_dim=2,
                    save=lambda path: atomic_torch_save(model.checkpoint(), path), env=env,
                    controller_kwargs={"use_value": True, "discount": 0.99})

