"""Dreamer-style behaviour learning: an actor and a critic trained in imagination.

The actor-critic of Hafner et al. (2020), "Dream to Control: Learning Behaviors by Latent
Imagination" (Dreamer v1): from every (detached) posterior state of a training batch the
RSSM imagines `horizon` steps with the actor; the critic regresses lambda-returns of the
imagined rewards, and the actor maximises those returns by backpropagating them through
the learned dynamics, reward head and critic (the world model itself stays fixed).

DreamerV3 additions (Hafner et al., 2023, "Mastering Diverse Domains through World
Models"), each a config field:
    - returns scaled by max(1, P95 - P5) of the imagined returns, the percentiles tracked
      with an EMA of decay 0.99 (`ReturnNormalizer`);
    - a critic predicting a categorical over bins in symlog space, trained with two-hot
      targets (`critic_type="twohot"`; `"mse"` is Dreamer v1's plain regression);
    - a slow critic, an EMA of the critic (fraction 0.02 per update), that regularises
      the critic towards its own past predictions (and, with `bootstrap="slow"`, gives
      the lambda-return bootstrap, as DreamerV2's target network did);
    - entropy bonus 3e-4;
    - REINFORCE actor gradients (`actor_grad="reinforce"`) as an option;
    - V3's continuous actor (`actor_dist="normal"`, `TanhMeanNormal`): a Gaussian whose
      mean is tanh-bounded and whose std stays in [0.1, 1], its samples scaled into
      [-1, 1] before they reach the dynamics or the environment;
    - lambda-returns bootstrapped from the online critic (`bootstrap="online"`), the
      slow critic serving only as the regulariser's target;
    - the dynamics gradient of the advantage R_t - v(s_t) rather than of R_t
      (`dynamics_baseline`), as V3's code computes it for continuous actions.

As in DreamerV2's and V3's code, the actor reads stop-gradient states in imagination: its
gradient reaches it through the actions it takes, not through its own inputs.

Indexing convention (the RSSM's, see `models.rssm`): imagination from start states s_0
gives states s_1..s_H and actions a_0..a_{H-1}, a_t taken in s_t. The reward of a_t is
the reward head at s_{t+1}, r_t = reward(s_{t+1}); the discount of that transition is
gamma_t = gamma * P(continue | s_{t+1}) (gamma alone without a discount head); values
v_t = critic(s_t) (or slow_critic(s_t), see `bootstrap`) for t = 0..H. Then

    R_t = r_t + gamma_t ((1 - lam) v_{t+1} + lam R_{t+1}),   R_H = v_H,

and R_0..R_{H-1} are the critic's targets at s_0..s_{H-1} and what the actor maximises.
Each step is weighted by the (stop-gradient) probability-and-discount of reaching it,
w_0 = 1, w_t = prod_{k<t} gamma_k (DreamerV2/V3).

Keeping the world model fixed: `ActorCritic.update` switches `requires_grad` off on every
world-model parameter for the duration of the update (and restores each parameter's own
flag afterwards, also on errors). Gradients still flow through the model's activations
into the actions, but autograd never writes a `.grad` into a world-model parameter, so
an optimiser of the world model stepped later sees nothing from these losses.

Shapes:
    B start states (a flattened batch), H horizon, F RSSM feature size, A action size,
    K critic bins, M any flattened batch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import atomic_torch_save, model_checkpoint, read_header
from models.onehot_linear import OneHotFeature, apply_mlp
from models.rssm import RSSM, RSSMState
from models.told import soft_cross_entropy, two_hot_inverse
from planners.controller import PRECISIONS, resolve_device
from planners.precision import warn_if_bfloat16_is_slow

__all__ = [
    "BEHAVIOR_FORMAT_VERSION",
    "Actor",
    "ActorCritic",
    "BehaviorConfig",
    "Critic",
    "ReturnNormalizer",
    "TINY_SIZES",
    "TanhMeanNormal",
    "TanhNormal",
    "lambda_returns",
]

BEHAVIOR_FORMAT_VERSION = 1
_MODEL_NAME = "behavior"
_CRITIC_TYPES = ("twohot", "mse")
_ACTOR_GRADS = ("dynamics", "reinforce")
_ACTOR_DISTS = ("tanh_normal", "normal")
_BOOTSTRAPS = ("slow", "online")
_ACTIVATIONS: dict[str, type[nn.Module]] = {"elu": nn.ELU, "silu": nn.SiLU, "relu": nn.ReLU}


# ---------------------------------------------------------------------------- config


# The settings `BehaviorConfig.tiny` changes: small networks and a short horizon (tests).
TINY_SIZES: dict[str, Any] = {
    "horizon": 5,
    "actor_hidden": (32, 32),
    "critic_hidden": (32, 32),
    "critic_bins": 41,
    "actor_init_std": 1.0,
}


@dataclass(frozen=True)
class BehaviorConfig:
    """Settings of the actor-critic; defaults are Dreamer v1's with DreamerV3's additions.

    Paper values: Dreamer v1 (Hafner et al., 2020, appendix and danijar/dreamer): horizon
    15, gamma 0.99, lambda 0.95, Adam lr 8e-5 for both actor and value model (6e-4 for
    the world model), grad clip 100, ELU layers of 400 units (actor 4 layers, value 3),
    tanh-Gaussian actor with mean 5 tanh(mu / 5), std softplus(x + softplus^-1(5)) + 1e-4.
    DreamerV3 (Hafner et al., 2023): actor and critic lr 3e-5 (Adam eps 1e-5), LayerNorm +
    SiLU layers, 255 two-hot bins over symlog [-20, 20], zero-initialised critic output,
    slow critic fraction 0.02 with regulariser weight 1, return percentiles 5 / 95 with
    EMA decay 0.99 and floor 1, entropy 3e-4, actor std bounded in [0.1, 1]. See
    `BehaviorConfig.dreamerv3()`.

    Attributes:
        horizon: H, imagined steps per start state.
        gamma: the discount; multiplied by the discount head's continuation probability
            when the world model has one.
        lam: lambda of the lambda-return.
        actor_hidden, critic_hidden: hidden layer widths of the two MLPs.
        activation: "elu" (Dreamer v1), "silu" (DreamerV3) or "relu".
        layer_norm: LayerNorm before each hidden activation (DreamerV3).
        actor_lr, critic_lr: Adam learning rates.
        adam_eps: Adam's epsilon.
        grad_clip: the global gradient norm each network is clipped to.
        entropy_coef: weight of the actor's entropy bonus (eta).
        actor_grad: "dynamics" (backpropagate returns through the model; Dreamer v1) or
            "reinforce" (score-function gradient with the slow critic as baseline).
        actor_init_std: the actor's std at a zero pre-activation.
        actor_min_std: lower bound of the std.
        actor_max_std: None: std = softplus(x + softplus^-1(init - min)) + min, unbounded
            (Dreamer v1). A float: std = (max - min) sigmoid(x + 2) + min (DreamerV3;
            init_std is then unused).
        actor_mean_scale: pre-tanh mean = scale * tanh(mu / scale) (Dreamer v1: 5; only
            for actor_dist "tanh_normal").
        actor_dist: "tanh_normal" (a Gaussian squashed by tanh; Dreamer v1, `TanhNormal`)
            or "normal" (a Gaussian with mean tanh(mu), its samples scaled into [-1, 1];
            DreamerV3, `TanhMeanNormal`). The squashed one can saturate: with its
            pre-tanh mean far out, the action is +-1 whatever the std, the entropy
            estimate runs to minus infinity and the dynamics gradient through tanh
            vanishes. V3's keeps the std (>= actor_min_std) in action space.
        dynamics_baseline: with actor_grad "dynamics", maximise (R_t - v(s_t)) / S rather
            than R_t / S, v(s_t) (the bootstrap critic's) keeping its gradient through the
            imagined state s_t (DreamerV3's code does so). v(s_0) is a constant; for t > 0
            the term takes out the part of R_t's gradient that runs through the state
            the earlier actions led to.
        bootstrap: which critic's values enter the lambda-returns (and the REINFORCE
            baseline): "slow" (the slow critic; a target network as in DreamerV2) or
            "online" (the critic itself; DreamerV3, whose slow critic only regularises).
        critic_type: "twohot" (symlog two-hot categorical; DreamerV3) or "mse" (plain
            value regression; Dreamer v1).
        critic_bins, critic_low, critic_high: the two-hot support, in symlog space.
        slow_critic_fraction: slow <- (1 - f) slow + f critic after every update; 1.0
            makes the slow critic a copy of the critic (Dreamer v1 had none).
        slow_critic_reg: weight of the critic's loss towards the slow critic's
            prediction (DreamerV3: 1); 0 disables it.
        return_norm: scale returns by max(1, P_high - P_low) in the actor loss.
        return_norm_decay: EMA decay of the percentiles.
        return_norm_low, return_norm_high: the percentiles, as fractions.
        imagine_starts: None imagines from every posterior state of the batch (Dreamer v1:
            50 x 50 = 2500); an int imagines from that many of them drawn at random
            without replacement (DreamerV3 imagines from its 16 x 64 = 1024). The cost of
            an update is proportional to it.
        precision: "float32", or "bfloat16" to run the imagination and the actor and
            critic networks under bfloat16 autocast (DreamerV3 computes in bfloat16 by
            default). Rewards, values, returns, log-probabilities and the critic's logits
            are upcast to float32 before any sum, so only the matrix products lose
            precision. About 2.6x faster on a CPU with AMX (benchmarks/behavior_speed.py).
        sparse_onehot: with a discrete-latent world model, the first layers of the actor,
            critic, slow critic and the reward and continuation heads take the imagined
            states' one-hot part by gathering weight columns (`models.onehot_linear`)
            rather than by a dense product with a 97%-zero matrix. Values and gradients
            equal the dense ones up to float summation order; False computes them densely
            (the reference the fast path is tested against). Under bfloat16 the gathered
            sums stay float32, the remaining dense products run in bfloat16, and the
            first layers' outputs are float32 (the dense layers' would be bfloat16).
    """

    horizon: int = 15
    gamma: float = 0.99
    lam: float = 0.95
    actor_hidden: tuple[int, ...] = (400, 400, 400, 400)
    critic_hidden: tuple[int, ...] = (400, 400, 400)
    activation: str = "elu"
    layer_norm: bool = False
    actor_lr: float = 8e-5
    critic_lr: float = 8e-5
    adam_eps: float = 1e-5
    grad_clip: float = 100.0
    entropy_coef: float = 3e-4
    actor_grad: str = "dynamics"
    actor_init_std: float = 5.0
    actor_min_std: float = 1e-4
    actor_max_std: float | None = None
    actor_mean_scale: float = 5.0
    actor_dist: str = "tanh_normal"
    dynamics_baseline: bool = False
    bootstrap: str = "slow"
    critic_type: str = "twohot"
    critic_bins: int = 255
    critic_low: float = -20.0
    critic_high: float = 20.0
    slow_critic_fraction: float = 0.02
    slow_critic_reg: float = 1.0
    return_norm: bool = True
    return_norm_decay: float = 0.99
    return_norm_low: float = 0.05
    return_norm_high: float = 0.95
    imagine_starts: int | None = None
    precision: str = "float32"
    sparse_onehot: bool = True

    def __post_init__(self) -> None:
        for name in ("actor_hidden", "critic_hidden"):
            value = getattr(self, name)
            if isinstance(value, int) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ValueError(f"{name}={value!r} must be a sequence of ints >= 1")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        for name in ("horizon", "critic_bins"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "critic_bins" else 1):
                raise ValueError(f"{name}={value!r} must be an int >= {2 if name == 'critic_bins' else 1}")

        def finite(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} must be a finite number")
            return float(value)

        if not 0.0 < finite("gamma") <= 1.0:
            raise ValueError(f"gamma={self.gamma!r} must be in (0, 1]")
        if not 0.0 <= finite("lam") <= 1.0:
            raise ValueError(f"lam={self.lam!r} must be in [0, 1]")
        for name in ("actor_lr", "critic_lr", "adam_eps", "grad_clip", "actor_init_std", "actor_mean_scale"):
            if finite(name) <= 0.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("entropy_coef", "actor_min_std", "slow_critic_reg"):
            if finite(name) < 0.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")
        if self.actor_max_std is not None and not finite("actor_max_std") > self.actor_min_std:
            raise ValueError(
                f"actor_max_std={self.actor_max_std!r} must be None or > actor_min_std={self.actor_min_std!r}"
            )
        if self.actor_max_std is None and not self.actor_init_std > self.actor_min_std:
            raise ValueError(f"actor_init_std={self.actor_init_std!r} must be > actor_min_std={self.actor_min_std!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} must be one of {tuple(_ACTIVATIONS)}")
        if self.critic_type not in _CRITIC_TYPES:
            raise ValueError(f"critic_type={self.critic_type!r} must be one of {_CRITIC_TYPES}")
        if self.actor_grad not in _ACTOR_GRADS:
            raise ValueError(f"actor_grad={self.actor_grad!r} must be one of {_ACTOR_GRADS}")
        for name in ("layer_norm", "return_norm", "dynamics_baseline", "sparse_onehot"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.actor_dist not in _ACTOR_DISTS:
            raise ValueError(f"actor_dist={self.actor_dist!r} must be one of {_ACTOR_DISTS}")
        if self.bootstrap not in _BOOTSTRAPS:
            raise ValueError(f"bootstrap={self.bootstrap!r} must be one of {_BOOTSTRAPS}")
        if self.imagine_starts is not None and (
            isinstance(self.imagine_starts, bool) or not isinstance(self.imagine_starts, int) or self.imagine_starts < 1
        ):
            raise ValueError(f"imagine_starts={self.imagine_starts!r} must be None or an int >= 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if not finite("critic_low") < finite("critic_high"):
            raise ValueError(f"critic_low={self.critic_low!r} must be < critic_high={self.critic_high!r}")
        if not 0.0 < finite("slow_critic_fraction") <= 1.0:
            raise ValueError(f"slow_critic_fraction={self.slow_critic_fraction!r} must be in (0, 1]")
        if not 0.0 <= finite("return_norm_decay") < 1.0:
            raise ValueError(f"return_norm_decay={self.return_norm_decay!r} must be in [0, 1)")
        if not 0.0 <= finite("return_norm_low") < finite("return_norm_high") <= 1.0:
            raise ValueError(
                f"return_norm_low={self.return_norm_low!r} and return_norm_high={self.return_norm_high!r} "
                "must satisfy 0 <= low < high <= 1"
            )

    @classmethod
    def dreamerv3(cls, **overrides: Any) -> BehaviorConfig:
        """DreamerV3's behaviour settings (Hafner et al., 2023; its 2023 code's defaults
        for continuous actions): lr 3e-5, LayerNorm + SiLU, gamma 0.997 (its 1 - 1/333),
        a Gaussian actor with a tanh mean and std in [0.1, 1] on stop-gradient states,
        trained by backpropagating its normalised advantage R_t - v(s_t) through the
        dynamics, a two-hot critic bootstrapped from itself and regularised towards the
        slow critic, return normalisation, entropy 3e-4.
        Layers are 2 x 512 here (V3's sizes go from 2 x 512 to 5 x 1024 and up)."""
        settings: dict[str, Any] = {
            "gamma": 0.997,
            "actor_hidden": (512, 512),
            "critic_hidden": (512, 512),
            "activation": "silu",
            "layer_norm": True,
            "actor_lr": 3e-5,
            "critic_lr": 3e-5,
            "actor_min_std": 0.1,
            "actor_max_std": 1.0,
            "actor_dist": "normal",
            "dynamics_baseline": True,
            "bootstrap": "online",
        }
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def tiny(cls, **overrides: Any) -> BehaviorConfig:
        """Small networks and a short horizon for tests and smoke runs (`TINY_SIZES`)."""
        settings: dict[str, Any] = dict(TINY_SIZES)
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (tuples as lists), for checkpoints and JSON."""
        d = asdict(self)
        d["actor_hidden"] = list(self.actor_hidden)
        d["critic_hidden"] = list(self.critic_hidden)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BehaviorConfig:
        """The inverse of `to_dict`; unknown keys raise a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BehaviorConfig fields {unknown}; accepted: {sorted(known)}")
        return cls(**dict(values))


# ---------------------------------------------------------------------------- returns


def lambda_returns(rewards: Tensor, values: Tensor, discounts: Tensor, lam: float) -> Tensor:
    """TD(lambda) returns, computed backwards from a bootstrap value (Dreamer, eq. 6).

        R_t = r_t + gamma_t ((1 - lam) v_{t+1} + lam R_{t+1}),   R_H = v_H.

    Time-major, as the recursion runs over time. Index t pairs reward r_t and discount
    gamma_t of the transition LEAVING state t with v_t, the value OF state t: values has
    one more entry, v_H, the bootstrap at the last state. `discounts` already include
    gamma (and any continuation probability). lam = 0 gives one-step TD targets
    r_t + gamma_t v_{t+1}; lam = 1 the discounted sum of rewards plus the discounted v_H.

    Shapes:
        rewards [H, B], values [H + 1, B], discounts [H, B] -> returns [H, B]
        (any trailing batch dimensions work, as long as the three agree).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam!r} must be in [0, 1]")
    h = rewards.shape[0]
    if values.shape != (h + 1, *rewards.shape[1:]) or discounts.shape != rewards.shape:
        raise ValueError(
            f"lambda_returns got rewards {tuple(rewards.shape)}, values {tuple(values.shape)}, discounts "
            f"{tuple(discounts.shape)}; expected [H, B], [H + 1, B], [H, B]"
        )
    # Everything of the recursion except the R_{t+1} term, vectorised over t.
    inputs = rewards + discounts * (1.0 - lam) * values[1:]  # [H, B]
    out = []
    last = values[-1]
    for t in reversed(range(h)):
        last = inputs[t] + discounts[t] * lam * last
        out.append(last)
    return torch.stack(out[::-1], dim=0)


class ReturnNormalizer(nn.Module):
    """DreamerV3's return scale: S = max(1, EMA(P_high) - EMA(P_low)).

    Dividing returns (or advantages) by S makes the actor's entropy bonus meaningful
    across reward scales, while the floor of 1 keeps small returns from being blown up
    (amplifying noise in sparse-reward tasks). The percentiles of each batch of returns
    are averaged with an EMA; the first batch initialises the EMA (no bias towards 0).
    Buffers, so the state is saved with the module.
    """

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95, floor: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay!r} must be in [0, 1)")
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"low={low!r}, high={high!r} must satisfy 0 <= low < high <= 1")
        self.decay, self.low_q, self.high_q, self.floor = decay, low, high, floor
        self.register_buffer("low", torch.zeros(()))
        self.register_buffer("high", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # The quantile levels as a tensor made once (not per update), on the module's device.
        self.register_buffer("_levels", torch.tensor([low, high]), persistent=False)

    @torch.no_grad()
    def update(self, returns: Tensor) -> Tensor:
        """Folds a batch of returns (any shape) into the EMA; returns the new scale.

        No host synchronisation (the first batch is chosen with `torch.where`, not a
        Python branch on the count), so a CUDA graph can record it."""
        flat = returns.detach().reshape(-1).to(self.low.dtype)
        q = torch.quantile(flat, self._levels.to(flat.dtype))
        first = self.count == 0
        for ema, value in ((self.low, q[0]), (self.high, q[1])):
            ema.copy_(torch.where(first, value, torch.lerp(ema, value, 1.0 - self.decay)))
        self.count += 1
        return self.scale()

    def scale(self) -> Tensor:
        """max(floor, high - low), a scalar tensor (the floor before any update)."""
        return torch.clamp(self.high - self.low, min=self.floor)


# ---------------------------------------------------------------------------- networks


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Any:
    """Turn requires_grad off on every parameter of `module` for the block, then restore
    each parameter's own flag (also on errors). Gradients still flow through the
    module's activations; autograd just writes no .grad into its parameters."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _mlp(sizes: tuple[int, ...], in_features: int, out_features: int, activation: str, layer_norm: bool) -> nn.Sequential:
    """Hidden Linear (-> LayerNorm) -> act layers, then a Linear output. [M, in] -> [M, out]."""
    act = _ACTIVATIONS[activation]
    modules: list[nn.Module] = []
    size = in_features
    for width in sizes:
        modules.append(nn.Linear(size, width))
        if layer_norm:
            modules.append(nn.LayerNorm(width))
        modules.append(act())
        size = width
    modules.append(nn.Linear(size, out_features))
    return nn.Sequential(*modules)


def _log_one_minus_tanh_sq(u: Tensor) -> Tensor:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class _DiagonalGaussian:
    """What both actor distributions share: a diagonal Gaussian N(loc, scale) over raw
    samples, its reparameterised draws, log-density and entropy. Subclasses map a raw
    sample to an action (`action_from_raw`).

    Shapes: loc, scale [..., A]; raw samples [..., A]; log-densities and entropies [...].
    """

    def __init__(self, mean: Tensor, std: Tensor, generator: torch.Generator | None = None) -> None:
        self.loc, self.scale, self.generator = mean, std, generator

    def rsample_raw(self) -> Tensor:
        """A reparameterised raw sample x = loc + scale * eps."""
        eps = torch.randn(self.loc.shape, generator=self.generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.scale * eps

    def action_from_raw(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def rsample(self) -> Tensor:
        """A reparameterised action."""
        return self.action_from_raw(self.rsample_raw())

    def sample(self) -> Tensor:
        with torch.no_grad():
            return self.rsample()

    def gaussian_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; loc, scale) summed over the action dimensions. [..., A] -> [...]."""
        return (-0.5 * ((x - self.loc) / self.scale).pow(2) - self.scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def gaussian_entropy(self) -> Tensor:
        """The Gaussian's entropy, summed over the action dimensions. [...]."""
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()).sum(-1)


class TanhNormal(_DiagonalGaussian):
    """A diagonal Gaussian squashed by tanh: actions in (-1, 1) (Dreamer v1's actor).
    Its raw samples are the pre-tanh values.

    Shapes: mean, std [..., A]; actions [..., A]; log-probs and entropies [...].
    """

    def rsample_pre_tanh(self) -> Tensor:
        """A reparameterised pre-tanh sample u = loc + scale * eps."""
        return self.rsample_raw()

    def action_from_raw(self, u: Tensor) -> Tensor:
        return torch.tanh(u)

    def log_prob_raw(self, u: Tensor) -> Tensor:
        return self.log_prob_pre_tanh(u)

    @property
    def mean(self) -> Tensor:
        """tanh of the Gaussian's mean: the deterministic action (an approximation of the
        mode, which Dreamer v1 estimates from 100 samples)."""
        return torch.tanh(self.loc)

    @property
    def mode(self) -> Tensor:
        return self.mean

    def log_prob_pre_tanh(self, u: Tensor) -> Tensor:
        """log p(tanh(u)) given the pre-tanh value (exact, no atanh)."""
        return self.gaussian_log_prob(u) - _log_one_minus_tanh_sq(u).sum(-1)

    def log_prob(self, action: Tensor) -> Tensor:
        """log p(action); actions at +-1 are pulled inside by 1e-6 before atanh."""
        u = torch.atanh(action.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return self.log_prob_pre_tanh(u)

    def entropy(self, u: Tensor | None = None) -> Tensor:
        """A one-sample estimate: H(Normal) + E[log(1 - tanh(u)^2)] (no closed form exists),
        with the Gaussian part exact. `u`: the pre-tanh sample to use (one is drawn if None)."""
        if u is None:
            u = self.rsample_pre_tanh()
        return self.gaussian_entropy() + _log_one_minus_tanh_sq(u).sum(-1)


class Actor(nn.Module):
    """The policy pi(a | s) on the RSSM feature: a tanh-Gaussian (Dreamer v1) or a
    Gaussian with a tanh mean (DreamerV3), by `BehaviorConfig.actor_dist`.

    Example:
        dist = actor(feature)          # TanhNormal or TanhMeanNormal
        action = dist.rsample()        # [M, A], differentiable
        action = actor.act(feature, deterministic=True)
    """

    def __init__(self, config: BehaviorConfig, feature_size: int, action_dim: int) -> None:
        super().__init__()
        self.config, self.feature_size, self.action_dim = config, feature_size, action_dim
        self.net = _mlp(config.actor_hidden, feature_size, 2 * action_dim, config.activation, config.layer_norm)
        # softplus(x + shift) + min = init_std at x = 0.
        self._std_shift = math.log(math.expm1(config.actor_init_std - config.actor_min_std))
        self.generator: torch.Generator | None = None

    def forward(self, feature: Tensor | OneHotFeature) -> ActionDistribution:
        """feature [M, F] (dense, or a `OneHotFeature`) -> a distribution over actions [M, A]."""
        c = self.config
        mu, raw_std = apply_mlp(self.net, feature).chunk(2, dim=-1)
        if c.actor_max_std is None:
            std = F.softplus(raw_std + self._std_shift) + c.actor_min_std
        else:
            std = (c.actor_max_std - c.actor_min_std) * torch.sigmoid(raw_std + 2.0) + c.actor_min_std
        if c.actor_dist == "normal":
            # float32 under autocast too (as V3 casts its distributions' inputs): the
            # REINFORCE log-density needs (x - loc) / std finer than bfloat16's 3 digits.
            return TanhMeanNormal(torch.tanh(mu.float()), std.float(), generator=self.generator)
        mean = c.actor_mean_scale * torch.tanh(mu / c.actor_mean_scale)
        return TanhNormal(mean, std, generator=self.generator)

    def act(self, feature: Tensor, deterministic: bool = False) -> Tensor:
        """An action [M, A] in [-1, 1]: the mean, or a (reparameterised) sample."""
        dist = self(feature)
        return dist.mean if deterministic else dist.rsample()


def scale_into_unit_box(action: Tensor) -> Tensor:
    """a * stop_grad(1 / max(1, |a|)) per element: the value of clipping to [-1, 1], but
    the gradient of a scaling, so an action beyond the bound still learns (DreamerV3's
    `action_clip` in its RSSM). [..., A] -> [..., A]."""
    return action * (1.0 / action.detach().abs().clamp(min=1.0))


class TanhMeanNormal(_DiagonalGaussian):
    """DreamerV3's continuous actor: Normal(tanh(mu), std) with std in [min_std, max_std],
    its samples scaled into [-1, 1] (`scale_into_unit_box`) before they act.

    Unlike `TanhNormal` its entropy is the Gaussian's, bounded below by the min std's, so
    the policy cannot collapse to a deterministic +-1; the log-probability and entropy
    are of the raw (unscaled) sample, as in V3.

    Shapes: mean (already tanh-bounded), std [..., A]; actions [..., A]; log-probs and
    entropies [...].
    """

    def action_from_raw(self, x: Tensor) -> Tensor:
        """The raw sample (which may leave [-1, 1]) scaled into the box."""
        return scale_into_unit_box(x)

    @property
    def mean(self) -> Tensor:
        """The Gaussian's mean, tanh(mu), in (-1, 1): the deterministic action."""
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    def log_prob_raw(self, x: Tensor) -> Tensor:
        """The Gaussian log-density of a raw sample. [..., A] -> [...]."""
        return self.gaussian_log_prob(x)

    def log_prob(self, action: Tensor) -> Tensor:
        """The Gaussian log-density at `action` (`log_prob_raw`). For an action that was
        scaled into the box this is not its true law, which has point masses at +-1;
        learning uses the raw samples."""
        return self.log_prob_raw(action)

    def entropy(self, x: Tensor | None = None) -> Tensor:
        """The Gaussian's exact entropy (`x` is accepted for the common interface and
        ignored). [...]."""
        return self.gaussian_entropy()


ActionDistribution = TanhNormal | TanhMeanNormal


class Critic(nn.Module):
    """v(s) on the RSSM feature: a symlog two-hot categorical (DreamerV3) or a scalar
    regressed with MSE (Dreamer v1). [M, F] -> [M]."""

    def __init__(self, config: BehaviorConfig, feature_size: int) -> None:
        super().__init__()
        self.config = config
        out = config.critic_bins if config.critic_type == "twohot" else 1
        self.net = _mlp(config.critic_hidden, feature_size, out, config.activation, config.layer_norm)
        if config.critic_type == "twohot":
            # DreamerV3 zero-initialises the output: the first predictions are exactly 0,
            # so early bootstraps do not inject large random values into the returns.
            last = self.net[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, feature: Tensor | OneHotFeature) -> Tensor:
        """The value estimate. [..., F] (dense, or a `OneHotFeature`) -> [...] (float32,
        also under autocast)."""
        out = apply_mlp(self.net, feature).float()
        c = self.config
        if c.critic_type == "twohot":
            # The expectation over 255 bins is a matrix product, which autocast would
            # round to bfloat16 (~3 digits); it stays float32.
            with torch.autocast(out.device.type, enabled=False):
                return two_hot_inverse(out, c.critic_low, c.critic_high)
        return out.squeeze(-1)

    def loss(self, feature: Tensor | OneHotFeature, target: Tensor) -> Tensor:
        """Per-sample loss towards `target` (not reduced). [..., F], [...] -> [...].

        Two-hot: cross-entropy to the two-hot encoding of symlog(target). MSE:
        0.5 (v - target)^2.
        """
        return self.losses(feature, (target,))[0]

    def losses(self, feature: Tensor | OneHotFeature, targets: Sequence[Tensor]) -> list[Tensor]:
        """`loss` towards each of several targets from one forward pass of the network.

        The critic's update has two targets for the same features (the returns and the
        slow critic's values); one pass instead of two saves a forward and a backward pass
        of the critic over every imagined state. [..., F], k x [...] -> k x [...].
        """
        out = apply_mlp(self.net, feature).float()
        c = self.config
        if c.critic_type == "twohot":
            with torch.autocast(out.device.type, enabled=False):
                return [soft_cross_entropy(out, t.detach(), c.critic_bins, c.critic_low, c.critic_high) for t in targets]
        value = out.squeeze(-1)
        return [0.5 * (value - t.detach()).pow(2) for t in targets]


# ---------------------------------------------------------------------------- actor-critic


class ActorCritic(nn.Module):
    """Actor, critic, slow critic, return scale and their optimisers.

    Example:
        ac = ActorCritic(BehaviorConfig(), rssm.config.feature_size, rssm.action_dim)
        out = rssm.loss(batch); ...                       # world-model step
        metrics = ac.update(rssm, out.posterior)          # behaviour step
        action = ac.policy(rssm.encode(obs), deterministic=True)

    Args:
        config: a BehaviorConfig.
        feature_size: F of the world model's feature.
        action_dim: A.
    """

    def __init__(self, config: BehaviorConfig, feature_size: int, action_dim: int) -> None:
        super().__init__()
        if not isinstance(config, BehaviorConfig):
            raise TypeError(f"config must be a BehaviorConfig, got {type(config).__name__}")
        for name, value in (("feature_size", feature_size), ("action_dim", action_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        self.config, self.feature_size, self.action_dim = config, feature_size, action_dim
        self.actor = Actor(config, feature_size, action_dim)
        self.critic = Critic(config, feature_size)
        self.slow_critic = copy.deepcopy(self.critic)
        self.slow_critic.requires_grad_(False)
        self.return_norm = ReturnNormalizer(config.return_norm_decay, config.return_norm_low, config.return_norm_high)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, eps=config.adam_eps)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, eps=config.adam_eps)

    @classmethod
    def for_model(cls, world_model: RSSM, config: BehaviorConfig | None = None) -> ActorCritic:
        """An actor-critic sized for an RSSM, on its device."""
        ac = cls(config or BehaviorConfig(), world_model.config.feature_size, world_model.action_dim)
        return ac.to(next(world_model.parameters()).device)

    # ------------------------------------------------------------------ acting

    def policy(self, feature: Tensor, deterministic: bool = False) -> Tensor:
        """feature [M, F] -> action [M, A] in [-1, 1]."""
        return self.actor.act(feature, deterministic)

    def value(self, feature: Tensor) -> Tensor:
        """The critic's value. [M, F] -> [M]."""
        return self.critic(feature)

    # ------------------------------------------------------------------ learning

    def imagine(self, world_model: RSSM, start_states: RSSMState) -> dict[str, Any]:
        """Imagined trajectories with their rewards, discounts, values and lambda-returns.

        The world model must be frozen by the caller for training (see `update`).

        Shapes (time-major, as `lambda_returns`):
            features [H + 1, B, F] (s_0..s_H), rewards [H, B], discounts [H, B],
            values [H + 1, B] (the bootstrap critic's), slow_values [H + 1, B] (the slow
            critic's; the same tensor with bootstrap "slow"), returns [H, B], weights [H + 1, B]
            (stop-gradient), log_probs / entropies [H, B] of a_0..a_{H-1}.
        """
        c = self.config
        start = self.select_starts(start_states.detach().flatten_batch())
        dists: list[ActionDistribution] = []
        raw_samples: list[Tensor] = []

        def policy_fn(feature: Tensor | OneHotFeature) -> Tensor:
            # The actor reads stop-gradient states (as DreamerV2 and V3 do): its gradient
            # reaches it through the actions it takes, not through its own inputs.
            dist = self.actor(feature.detach())
            u = dist.rsample_raw()
            dists.append(dist)
            raw_samples.append(u)
            action = dist.action_from_raw(u)
            # REINFORCE needs no gradient through the dynamics; cutting it saves the work.
            return action.detach() if c.actor_grad == "reinforce" else action

        parts = c.sparse_onehot and start.index is not None
        with self.autocast():
            states, _ = world_model.imagine_with_policy(start, policy_fn, c.horizon, feature_parts=parts, time_major=True)
            if parts:
                imagined = states.feature_parts()  # [H, B, F] in parts
                features = OneHotFeature.cat([start.feature_parts().map(lambda t: t.unsqueeze(0)), imagined])
            else:
                imagined = states.feature()  # [H, B, F]
                features = torch.cat([start.feature().unsqueeze(0).to(imagined.dtype), imagined], dim=0)  # [H + 1, B, F]
            # Sums over time (returns) and over the batch want float32 whatever the precision.
            rewards = world_model.predict_reward(imagined).float()  # [H, B], r_t = reward(s_{t+1})
            if getattr(world_model, "discount_head", None) is not None:
                discounts = c.gamma * torch.sigmoid(world_model.discount_logits(imagined).float())
            else:
                discounts = torch.full_like(rewards, c.gamma)
            if c.bootstrap == "online":
                # Frozen for this pass: the actor's loss reaches the features through the
                # critic, but must not write into the critic's .grad.
                with _frozen(self.critic):
                    values = self.critic(features)  # [H + 1, B], float32
                with torch.no_grad():  # only the regulariser's target
                    slow_values = self.slow_critic(features.detach())
            else:
                values = slow_values = self.slow_critic(features)
        returns = lambda_returns(rewards, values, discounts, c.lam)
        with torch.no_grad():
            weights = torch.cumprod(torch.cat([torch.ones_like(discounts[:1]), discounts], dim=0), dim=0)
        if c.actor_grad == "reinforce":
            log_probs = torch.stack([d.log_prob_raw(u.detach()) for d, u in zip(dists, raw_samples)])
        else:
            log_probs = torch.stack([d.log_prob_raw(u) for d, u in zip(dists, raw_samples)])
        entropies = torch.stack([d.entropy(u) for d, u in zip(dists, raw_samples)])
        log_probs, entropies = log_probs.float(), entropies.float()
        return {
            "features": features,
            "rewards": rewards,
            "discounts": discounts,
            "values": values,
            "slow_values": slow_values,
            "returns": returns,
            "weights": weights,
            "log_probs": log_probs,
            "entropies": entropies,
        }

    def critic_loss(
        self, features: Tensor | OneHotFeature, returns: Tensor, weights: Tensor | None = None, slow_values: Tensor | None = None
    ) -> Tensor:
        """The critic's scalar loss: towards the (detached) returns, plus `slow_critic_reg`
        times the loss towards the slow critic's prediction, weighted and averaged.

        Shapes: features [..., F] (detached here), returns [...], weights [...] or None,
        slow_values [...] or None: the slow critic's values of these features when the
        caller has them already (`imagine` does), which saves its forward pass.
        """
        features = features.detach()
        with self.autocast():
            if self.config.slow_critic_reg > 0:
                if slow_values is None:
                    with torch.no_grad():
                        slow_values = self.slow_critic(features)
                to_returns, to_slow = self.critic.losses(features, (returns.detach(), slow_values.detach()))
                per_sample = to_returns + self.config.slow_critic_reg * to_slow
            else:
                per_sample = self.critic.loss(features, returns.detach())
        if weights is not None:
            per_sample = per_sample * weights.detach()
        return per_sample.mean()

    def select_starts(self, states: RSSMState) -> RSSMState:
        """`imagine_starts` of the flat states [N, ...], drawn without replacement from
        torch's global generator (all N when it is None or >= N)."""
        n, k = states.deter.shape[0], self.config.imagine_starts
        if k is None or k >= n:
            return states
        return states[torch.randperm(n, device=states.deter.device)[:k]]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of the networks' forward passes (none for float32)."""
        if self.config.precision == "float32":
            return contextlib.nullcontext()
        device = next(self.parameters()).device
        warn_if_bfloat16_is_slow(device.type)
        # A CUDA graph must not keep autocast's cache of cast weights (PyTorch's CUDA-graph
        # notes): the recorded casts then run on every replay, after each optimiser step.
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(device.type, dtype=getattr(torch, self.config.precision), cache_enabled=not capturing)

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """slow <- (1 - f) slow + f critic (DreamerV3's fraction 0.02 per update)."""
        f = self.config.slow_critic_fraction
        for slow, online in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(online, f)

    def update(self, world_model: RSSM, start_states: RSSMState) -> dict[str, float]:
        """One actor and one critic step on imagination from `start_states`
        (`update_tensors`, with its metrics as floats)."""
        return {k: float(v) for k, v in self.update_tensors(world_model, start_states).items()}

    def update_tensors(self, world_model: RSSM, start_states: RSSMState) -> dict[str, Tensor]:
        """One actor and one critic step on imagination from `start_states`, without a
        host synchronisation (so a CUDA graph can record it with the world model's step).

        Args:
            world_model: the RSSM (not updated: its parameters' requires_grad is off
                during the call and restored after; no .grad is written to them).
            start_states: posterior states [B, ...] or [B, T, ...] (e.g.
                `rssm.loss(batch).posterior`); detached, flattened and cut to
                `imagine_starts` here.

        Returns:
            scalar tensors: actor_loss, critic_loss, entropy, return_mean, return_scale,
            value_mean, reward_mean, discount_mean, actor_grad_norm, critic_grad_norm.
        """
        c = self.config
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        # The graph is built inside; backward needs no requires_grad on these leaves.
        with _frozen(world_model):
            traj = self.imagine(world_model, start_states)

        returns, weights = traj["returns"], traj["weights"][:-1]  # [H, B] each
        scale = self.return_norm.update(returns) if c.return_norm else torch.ones((), device=returns.device)
        if c.actor_grad == "dynamics":
            objective = (returns - traj["values"][:-1]) / scale if c.dynamics_baseline else returns / scale
        else:
            advantage = (returns - traj["values"][:-1]).detach() / scale
            objective = traj["log_probs"] * advantage
        entropy = traj["entropies"]
        actor_loss = -(weights * (objective + c.entropy_coef * entropy)).mean()
        actor_loss.backward()
        actor_norm = nn.utils.clip_grad_norm_(self.actor.parameters(), c.grad_clip)
        self.actor_optimizer.step()

        critic_loss = self.critic_loss(traj["features"][:-1], returns, weights, slow_values=traj["slow_values"][:-1])
        critic_loss.backward()
        critic_norm = nn.utils.clip_grad_norm_(self.critic.parameters(), c.grad_clip)
        self.critic_optimizer.step()
        self.update_slow_critic()

        return {
            "actor_loss": actor_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "entropy": entropy.detach().mean(),
            "return_mean": returns.detach().mean(),
            "return_scale": scale.detach(),
            "value_mean": traj["values"].detach().mean(),
            "reward_mean": traj["rewards"].detach().mean(),
            "discount_mean": traj["discounts"].detach().mean(),
            "actor_grad_norm": actor_norm,
            "critic_grad_norm": critic_norm,
        }

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, include_optimizers: bool = False) -> dict[str, Any]:
        """{format_version, model: "behavior", config, feature_size, action_dim,
        state_dict[, optimizers]}: tensors and primitives only, so it loads with
        `torch.load(..., weights_only=True)`. The state_dict holds the actor, critic,
        slow critic and the return normaliser's EMA."""
        ckpt = model_checkpoint(
            self, _MODEL_NAME, BEHAVIOR_FORMAT_VERSION, self.config.to_dict(),
            feature_size=self.feature_size, action_dim=self.action_dim,
        )  # fmt: skip
        if include_optimizers:
            ckpt["optimizers"] = {
                "actor": self.actor_optimizer.state_dict(),
                "critic": self.critic_optimizer.state_dict(),
            }
        return ckpt

    def save(self, path: str | os.PathLike[str], include_optimizers: bool = False) -> None:
        """Writes `checkpoint()` atomically."""
        atomic_torch_save(self.checkpoint(include_optimizers), path)

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any],
        feature_size: int | None = None,
        action_dim: int | None = None,
        device: torch.device | str = "cpu",
    ) -> ActorCritic:
        """Rebuilds an actor-critic from `checkpoint()`.

        Args:
            ckpt: the checkpoint dict.
            feature_size, action_dim: what the caller's world model and task need.
            device: where the model goes: "cpu" (the default, as for every checkpoint
                loader here), "cuda", or "auto" (CUDA when available, else CPU).

        Raises:
            ValueError: not a behaviour checkpoint, another format version, or a feature
                size / action size other than the caller's (both named).
        """
        config = BehaviorConfig.from_dict(read_header(ckpt, _MODEL_NAME, BEHAVIOR_FORMAT_VERSION))
        for name, want in (("feature_size", feature_size), ("action_dim", action_dim)):
            if want is not None and ckpt[name] != want:
                raise ValueError(f"checkpoint has {name} {ckpt[name]}, but the caller needs {want}")
        ac = cls(config, int(ckpt["feature_size"]), int(ckpt["action_dim"]))
        ac.load_state_dict(ckpt["state_dict"])
        ac = ac.to(resolve_device(device))
        if "optimizers" in ckpt:
            ac.actor_optimizer.load_state_dict(ckpt["optimizers"]["actor"])
            ac.critic_optimizer.load_state_dict(ckpt["optimizers"]["critic"])
        return ac

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> ActorCritic:
        """`from_checkpoint(torch.load(path, weights_only=True), **kwargs)`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no behaviour checkpoint at {str(path)!r}")
        return cls.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True), **kwargs)
