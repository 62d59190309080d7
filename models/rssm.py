"""PlaNet's recurrent state-space model (RSSM) with DreamerV2's latent options.

The model of Hafner et al. (2019), "Learning Latent Dynamics for Planning from Pixels"
(PlaNet): a deterministic GRU path `h` and a stochastic state `s`, trained as a sequential
VAE (the ELBO: reconstruction + reward likelihood - KL(posterior || prior), KL with free
nats, optional latent overshooting). Options from Hafner et al. (2021), "Mastering Atari
with Discrete World Models" (DreamerV2): 32 categoricals of 32 classes with
straight-through gradients, KL balancing, ELU activations and a discount head. Options
from Hafner et al. (2023), "Mastering Diverse Domains through World Models" (DreamerV3):
LayerNorm + SiLU layers and a normalised GRU, symlog-squashed state observations, a
two-hot symlog reward head, a 1% uniform mix in the categoricals, and free nats clamped
per step ("free bits") with separate dynamics / representation weights.

Time convention (the one every method here and every data pipeline feeding it follows):

    obs[t]     the observation at step t
    actions[t] the action taken BEFORE obs[t], i.e. the action that led to obs[t]
               (zeros at an episode start, where no action led to the first observation)
    rewards[t] the reward received with obs[t], i.e. for taking actions[t]
    discounts[t] 1 while the episode continues after obs[t], 0 at a terminal obs[t]

`sequences_from_transitions` maps a replay's (obs_i, action at obs_i, reward that followed)
samples onto this convention.

So the posterior at t filters obs[0..t] and actions[0..t], and the reward head at the
state of step t predicts rewards[t]. In planning, the reward of taking `a` in `z` is the
reward head at the state reached from `z` by `a` (PlaNet scores the rewards predicted at
the imagined states after each action).

Shapes:
    B batch, T time, H horizon, A action size, D deter size, S stochastic size
    (S = stoch for Gaussian latents, stoch * classes for discrete ones, flattened),
    F = D + S the feature size, E the embedding size, M any flattened batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import CheckpointError, atomic_torch_save, model_checkpoint, read_header
from models.layers import AngleFeatures, check_angle_dims, symlog
from models.onehot_linear import OneHotFeature, apply_mlp
from models.told import soft_cross_entropy, two_hot_inverse
from planners.controller import resolve_device

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "RSSM",
    "RSSMConfig",
    "RSSMLossOutput",
    "RSSMState",
    "categorical_by_inverse_cdf",
    "exponential_noise",
    "postprocess_images",
    "preprocess_images",
    "sequences_from_transitions",
]

CHECKPOINT_FORMAT_VERSION = 1
_MODEL_NAME = "rssm"
_OBS_TYPES = ("state", "pixels")
_LATENTS = ("gaussian", "discrete")
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}
_REWARD_HEADS = ("gaussian", "twohot")
# DreamerV3's two-hot support for rewards: 255 bins over [-20, 20] in symlog space.
REWARD_TWOHOT_RANGE = (-20.0, 20.0)
# PlaNet's conv architecture is built for 64x64 images: 4 stride-2 convs of kernel 4 take
# 64 -> 31 -> 14 -> 6 -> 2, and the transposed convs (kernels 5, 5, 6, 6) take 1 -> 64.
_IMAGE_SIZE = 64
# Config fields that shape the network or its outputs (a checkpoint must match them).
_ARCHITECTURE_FIELDS = (
    "obs_type",
    "obs_shape",
    "action_dim",
    "deter",
    "stoch",
    "classes",
    "hidden",
    "embed",
    "cnn_depth",
    "mlp_layers",
    "min_std",
    "activation",
    "latent",
    "discount_head",
    "bit_depth",
    "layer_norm",
    "symlog_obs",
    "reward_head",
    "reward_bins",
    "unimix",
    "angle_dims",
)


# ---------------------------------------------------------------------------- sampling

# Dtypes for which the vectorised draw below reproduces `Tensor.exponential_` on the CPU.
# The vectorised and the scalar float64 log1p differ in the last bit for some inputs; once
# rounded to float32 or bfloat16 that almost never shows (no difference in the tests'
# tens of millions of draws), but in float64 it would, so float64 keeps exponential_.
_FAST_EXPONENTIAL_DTYPES = (torch.float32, torch.bfloat16)


def exponential_noise(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Exp(1) draws, the same numbers `torch.empty(shape).exponential_(generator)` gives.

    On the CPU, `exponential_` draws one float64 uniform u per entry and returns
    -log1p(-u), one entry at a time; for the categorical draws of a DreamerV3 update that
    serial loop took a fifth of the update's time. The same uniforms from `torch.rand`
    (the same stream, in the same order) and a vectorised log1p give the same values in
    float32 and bfloat16 (except, in principle, a last-bit difference where the two log1p
    implementations round differently at a float32 rounding boundary: rarer than one in
    10^8 draws), several times faster. `tests/test_rssm_fast_update.py` checks the values
    and the generator's state after. Elsewhere this is `exponential_`.
    """
    device = torch.device(device)
    if device.type != "cpu" or dtype not in _FAST_EXPONENTIAL_DTYPES:
        return torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator)
    uniform = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return uniform.neg_().log1p_().neg_().to(dtype)


def categorical_by_inverse_cdf(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """Class indices drawn from the categoricals `probs` [..., K]: one uniform u per
    categorical, the first class whose cumulative probability reaches u times the total.

    The same distribution as the exponential race argmax(p / E) with K times fewer random
    numbers. A planner's thousands of imagined steps draw their discrete latents this way:
    on a CPU the race's Exp(1) draws (from torch's serial generator) took about half of a
    CEM step's time. Training keeps the race, whose noise `_draw_noise` can draw ahead.
    Accumulated in float32 at least, so the cumulative sums are not rounded to bfloat16.
    Class k owns [cdf_{k-1}, cdf_k), so a class of probability 0 is never drawn.
    -> [...] int64.
    """
    cdf = probs.detach().to(torch.promote_types(probs.dtype, torch.float32)).cumsum(dim=-1)
    u = torch.rand((*cdf.shape[:-1], 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
    index = torch.searchsorted(cdf, (u * cdf[..., -1:]).contiguous(), right=True)
    # u * total < total, so only rounding could pass the last class.
    return index.squeeze(-1).clamp_(max=probs.shape[-1] - 1)


# ---------------------------------------------------------------------------- config


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RSSMConfig:
    """Settings of an RSSM; defaults are PlaNet's (Hafner et al., 2019).

    Attributes:
        obs_type: "state" (a flat float vector; MLP encoder/decoder) or "pixels" (uint8
            CHW images of 64x64; PlaNet's conv encoder/decoder).
        obs_shape: the shape of one observation: (obs_dim,) or (C, 64, 64).
        action_dim: A.
        deter: GRU size (200 in PlaNet).
        stoch: Gaussian: the stochastic state size (30). Discrete: the number of
            categorical variables (32 in DreamerV2).
        classes: classes per categorical for latent="discrete" (32 in DreamerV2).
        hidden: width of the dense layers of the transition and of the MLP heads (200).
        embed: the observation embedding size. For pixels the conv stack gives
            32 * cnn_depth features (1024 for PlaNet's depth 32); a linear projection is
            added only when `embed` differs.
        cnn_depth: channels of the first conv (convs have 1, 2, 4, 8 times this).
        mlp_layers: hidden layers of the state encoder/decoder and of the reward and
            discount heads.
        min_std: added to softplus(std) of Gaussian latents (0.1 in PlaNet).
        activation: "relu" (PlaNet), "elu" (DreamerV2) or "silu" (DreamerV3).
        layer_norm: LayerNorm between every hidden Linear and its activation, and the
            GRU replaced by DreamerV3's normalised GRU (one Linear on [x, h] -> LayerNorm
            -> gates, update gate biased by -1).
        latent: "gaussian" (PlaNet) or "discrete" (DreamerV2: stoch x classes one-hot
            samples with straight-through gradients).
        free_nats: the KL term is max(KL, free_nats) with KL averaged over batch and
            time first (PlaNet: 3.0), or per step with `free_nats_per_step`.
        free_nats_per_step: clamp each step's KL before averaging, mean(max(KL_bt,
            free_nats)) (DreamerV3's "free bits", 1.0), instead of PlaNet's clamp of the mean.
        kl_balance: None, or alpha in (0, 1): alpha * KL(sg(post) || prior) +
            (1 - alpha) * KL(post || sg(prior)) (DreamerV2: 0.8).
        kl_scale: the weight of the KL term in the loss (beta).
        reconstruction_scale: the weight of the reconstruction term. Ours is
            0.5 * squared error (a unit-variance Gaussian's NLL); DreamerV3's symlog MSE
            has no 0.5, so its preset sets 2.0 to keep V3's balance against the KL.
        overshooting: latent overshooting distance D (PlaNet, section 4): the KL term is
            the average over distances 1..D of KL(sg(posterior) || d-step prior). 0 or 1
            is the standard one-step KL (the final PlaNet agent uses none).
        discount_head: predict Bernoulli logits of episode continuation (DreamerV2).
        bit_depth: images are quantised to this many bits (PlaNet: 5).
        symlog_obs: state observations enter the encoder, and are reconstructed, as
            symlog(obs) (DreamerV3), so large velocities do not dominate the loss. State
            observations only.
        reward_head: "gaussian" (a unit-variance Gaussian mean; PlaNet) or "twohot" (a
            categorical over `reward_bins` bins in symlog space, trained by cross-entropy
            to the two-hot target, output layer zero-initialised; DreamerV3).
        reward_bins: bins of the two-hot reward head (DreamerV3: 255 over [-20, 20]).
        unimix: discrete latents only: each categorical is (1 - unimix) * softmax(logits)
            + unimix / classes (DreamerV3: 0.01), so no class has probability 0 and the KL
            stays bounded.
        angle_dims: state entries that are joint angles in radians
            (`envs.angle_observations`). The encoder reads, and the decoder reconstructs,
            the other entries then sin and cos of each angle (`AngleFeatures`), so an
            unlimited joint that winds through many turns stays one input range. State
            observations only; () reads every entry as it is.
    """

    obs_type: str = "state"
    obs_shape: tuple[int, ...] = (4,)
    action_dim: int = 1
    deter: int = 200
    stoch: int = 30
    classes: int = 32
    hidden: int = 200
    embed: int = 1024
    cnn_depth: int = 32
    mlp_layers: int = 2
    min_std: float = 0.1
    activation: str = "relu"
    latent: str = "gaussian"
    free_nats: float = 3.0
    kl_balance: float | None = None
    kl_scale: float = 1.0
    reconstruction_scale: float = 1.0
    overshooting: int = 0
    discount_head: bool = False
    bit_depth: int = 5
    layer_norm: bool = False
    free_nats_per_step: bool = False
    symlog_obs: bool = False
    reward_head: str = "gaussian"
    reward_bins: int = 255
    unimix: float = 0.0
    angle_dims: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Lists come back from JSON/CLI; a tuple keeps the config hashable and comparable.
        object.__setattr__(self, "obs_shape", tuple(int(d) for d in self.obs_shape))
        if not isinstance(self.angle_dims, (tuple, list)):
            raise ValueError(f"angle_dims={self.angle_dims!r} must be a tuple of state indices")
        object.__setattr__(self, "angle_dims", tuple(self.angle_dims))
        if self.obs_type not in _OBS_TYPES:
            raise ValueError(f"obs_type={self.obs_type!r} must be one of {_OBS_TYPES}")
        if self.obs_type == "state" and (len(self.obs_shape) != 1 or self.obs_shape[0] < 1):
            raise ValueError(f"obs_shape={self.obs_shape} for obs_type='state' must be (obs_dim,) with obs_dim >= 1")
        if self.obs_type == "pixels" and (
            len(self.obs_shape) != 3 or self.obs_shape[0] < 1 or self.obs_shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE)
        ):
            raise ValueError(
                f"obs_shape={self.obs_shape} for obs_type='pixels' must be (C, {_IMAGE_SIZE}, {_IMAGE_SIZE}) "
                "(PlaNet's conv encoder and decoder are built for 64x64 images)"
            )
        for name in ("action_dim", "deter", "stoch", "hidden", "embed", "cnn_depth", "mlp_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be an int >= 1")
        if self.latent not in _LATENTS:
            raise ValueError(f"latent={self.latent!r} must be one of {_LATENTS}")
        if not isinstance(self.classes, int) or self.classes < 2:
            raise ValueError(f"classes={self.classes!r} must be an int >= 2")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} must be one of {tuple(_ACTIVATIONS)}")
        if not (math.isfinite(self.min_std) and self.min_std >= 0.0):
            raise ValueError(f"min_std={self.min_std!r} must be a finite float >= 0")
        if not (math.isfinite(self.free_nats) and self.free_nats >= 0.0):
            raise ValueError(f"free_nats={self.free_nats!r} must be a finite float >= 0")
        if self.kl_balance is not None and not 0.0 < self.kl_balance < 1.0:
            raise ValueError(f"kl_balance={self.kl_balance!r} must be None or in (0, 1) (DreamerV2 uses 0.8)")
        for name in ("kl_scale", "reconstruction_scale"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}={value!r} must be a finite float >= 0")
        if not isinstance(self.overshooting, int) or isinstance(self.overshooting, bool) or self.overshooting < 0:
            raise ValueError(f"overshooting={self.overshooting!r} must be an int >= 0 (0 = off)")
        if not isinstance(self.bit_depth, int) or not 1 <= self.bit_depth <= 8:
            raise ValueError(f"bit_depth={self.bit_depth!r} must be an int in [1, 8]")
        for name in ("layer_norm", "free_nats_per_step", "symlog_obs", "discount_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.symlog_obs and self.obs_type != "state":
            raise ValueError(
                "symlog_obs=True applies to obs_type='state' only; images are already scaled to [-0.5, 0.5)"
            )
        if self.reward_head not in _REWARD_HEADS:
            raise ValueError(f"reward_head={self.reward_head!r} must be one of {_REWARD_HEADS}")
        if not isinstance(self.reward_bins, int) or isinstance(self.reward_bins, bool) or self.reward_bins < 2:
            raise ValueError(f"reward_bins={self.reward_bins!r} must be an int >= 2")
        if not (_is_number(self.unimix) and math.isfinite(self.unimix) and 0.0 <= self.unimix < 1.0):
            raise ValueError(f"unimix={self.unimix!r} must be a float in [0, 1) (DreamerV3 uses 0.01)")
        if self.unimix > 0.0 and self.latent != "discrete":
            raise ValueError(f"unimix={self.unimix!r} applies to latent='discrete' only (latent={self.latent!r})")
        if self.angle_dims:
            if self.obs_type != "state":
                raise ValueError(f"angle_dims={self.angle_dims!r} applies to obs_type='state' only "
                                 f"(obs_type={self.obs_type!r})")
            check_angle_dims(self.angle_dims, self.obs_shape[0])

    @property
    def input_size(self) -> int:
        """State observations: the size of the encoder's input and the decoder's output,
        obs_dim + len(angle_dims) (see `angle_dims`)."""
        return self.obs_shape[0] + len(self.angle_dims)

    @property
    def stoch_size(self) -> int:
        """S, the flat size of the stochastic state."""
        return self.stoch * self.classes if self.latent == "discrete" else self.stoch

    @property
    def feature_size(self) -> int:
        """F = D + S, the size of the latent the planners see."""
        return self.deter + self.stoch_size

    @classmethod
    def planet(cls, obs_type: str, obs_shape: tuple[int, ...], action_dim: int, **overrides: Any) -> RSSMConfig:
        """PlaNet's RSSM (Hafner et al., 2019): GRU 200, Gaussian 30 (min std 0.1),
        hidden 200, ReLU, 1024 conv embedding, 3 free nats, no overshooting."""
        return cls(obs_type=obs_type, obs_shape=tuple(obs_shape), action_dim=action_dim, **overrides)

    @classmethod
    def dreamerv2(cls, obs_type: str, obs_shape: tuple[int, ...], action_dim: int, **overrides: Any) -> RSSMConfig:
        """DreamerV2's latent options (Hafner et al., 2021): 32 categoricals of 32 classes,
        ELU, KL balancing 0.8, a discount head, no free nats; sizes stay PlaNet's unless
        overridden (DreamerV2's Atari agent uses 600-unit GRU and layers)."""
        settings: dict[str, Any] = dict(
            latent="discrete", stoch=32, classes=32, activation="elu", kl_balance=0.8, free_nats=0.0, discount_head=True
        )
        settings.update(overrides)
        return cls(obs_type=obs_type, obs_shape=tuple(obs_shape), action_dim=action_dim, **settings)

    @classmethod
    def dreamerv3(cls, obs_type: str, obs_shape: tuple[int, ...], action_dim: int, **overrides: Any) -> RSSMConfig:
        """DreamerV3's world-model options (Hafner et al., 2023) on PlaNet's sizes:
        32 x 32 categoricals with a 1% uniform mix, LayerNorm + SiLU and the normalised
        GRU, symlog state inputs and targets, a 255-bin two-hot reward head, a discount
        head, and V3's KL weights: 0.5 on the dynamics term KL(sg(post) || prior) and 0.1
        on the representation term KL(post || sg(prior)), each clamped at 1 free nat per
        step. In our balance form that is kl_scale 0.6 with kl_balance 0.5 / 0.6 = 5/6;
        reconstruction_scale 2 turns our 0.5 * squared error into V3's plain one.
        Not carried over: V3's learned initial state (zeros here, as in PlaNet), its
        weight initialisation and LayerNorm epsilon, and LayerNorm in the conv stacks.
        V3's own proprio sizes (a 512 GRU, 2 x 512 layers) are an override away
        (deter=512, hidden=512); the defaults keep PlaNet's 200 to stay cheap."""
        settings: dict[str, Any] = dict(
            latent="discrete", stoch=32, classes=32, unimix=0.01, activation="silu", layer_norm=True,
            kl_balance=5.0 / 6.0, kl_scale=0.6, reconstruction_scale=2.0, free_nats=1.0, free_nats_per_step=True,
            discount_head=True, symlog_obs=obs_type == "state", reward_head="twohot", reward_bins=255,
        )  # fmt: skip
        settings.update(overrides)
        return cls(obs_type=obs_type, obs_shape=tuple(obs_shape), action_dim=action_dim, **settings)

    @classmethod
    def tiny(cls, obs_type: str, obs_shape: tuple[int, ...], action_dim: int, **overrides: Any) -> RSSMConfig:
        """A few-thousand-parameter model for tests and smoke runs."""
        settings: dict[str, Any] = dict(deter=16, stoch=4, classes=4, hidden=16, embed=16, cnn_depth=4)
        settings.update(overrides)
        return cls(obs_type=obs_type, obs_shape=tuple(obs_shape), action_dim=action_dim, **settings)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RSSMConfig:
        """The inverse of `dataclasses.asdict`; unknown keys raise a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown RSSMConfig fields {unknown}; accepted: {sorted(known)}")
        return cls(**dict(values))


# ---------------------------------------------------------------------------- images


def preprocess_images(
    images: Tensor, bit_depth: int = 5, noise: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """uint8 images -> float32 in [-0.5, 0.5), quantised to `bit_depth` bits (PlaNet).

    PlaNet reduces images to 5 bits and adds uniform noise of one quantisation bin, so the
    decoder's continuous density is fit to a dequantised signal, not to a few spikes.
    Without noise (planning, evaluation) the bin centre is used, the mean of that noise,
    so the encoder sees what it saw on average in training.

    Shapes:
        images: [..., C, H, W] uint8 (any float input is taken as 0..255) -> same shape float32.
    """
    bins = 2**bit_depth
    q = torch.floor(images.float() / 2 ** (8 - bit_depth))  # integer bin in [0, bins)
    if noise:
        offset = torch.rand(q.shape, generator=generator, device=q.device, dtype=q.dtype)
    else:
        offset = torch.full_like(q, 0.5)
    return (q + offset) / bins - 0.5


def postprocess_images(x: Tensor, bit_depth: int = 5) -> Tensor:
    """float images in [-0.5, 0.5] -> uint8 (the bin centres), for pictures and videos.

    The inverse of `preprocess_images` up to quantisation: out-of-range values (a
    decoder's mean can overshoot) are clipped to the first and last bins.

    Shapes: [..., C, H, W] float -> same shape uint8.
    """
    bins = 2**bit_depth
    q = torch.clamp(torch.floor((x + 0.5) * bins), 0, bins - 1)
    step = 2 ** (8 - bit_depth)
    return (q * step + step // 2).to(torch.uint8)


def sequences_from_transitions(obs: Any, action: Any, reward: Any) -> dict[str, Tensor]:
    """Time-major transitions (obs_i, the action taken at obs_i, the reward that followed)
    -> the batch-first sequences `RSSM.loss` takes, in its convention.

    Drops obs_0: step t of the result is (action_t, obs_{t+1}, reward_t), so actions[:, t]
    is the action that led to obs[:, t] and rewards[:, t] came with it; the filter starts
    from the zero state, as it does for every sampled subsequence.

    Shapes:
        obs [L + 1, B, *obs], action [L, B, A], reward [L, B] (numpy or torch) ->
        {"obs": [B, L, *obs], "actions": [B, L, A], "rewards": [B, L]}
    """
    obs_t, action_t, reward_t = (torch.as_tensor(x) for x in (obs, action, reward))
    if obs_t.shape[0] != action_t.shape[0] + 1 or tuple(reward_t.shape) != tuple(action_t.shape[:2]):
        raise ValueError(
            f"transitions obs {tuple(obs_t.shape)}, action {tuple(action_t.shape)}, reward {tuple(reward_t.shape)} "
            "do not fit obs [L + 1, B, *obs], action [L, B, A], reward [L, B]"
        )
    return {
        "obs": obs_t[1:].transpose(0, 1),
        "actions": action_t.float().transpose(0, 1),
        "rewards": reward_t.float().transpose(0, 1),
    }


# ---------------------------------------------------------------------------- state


@dataclass
class RSSMState:
    """One model state, or a batch/sequence of them (any leading dimensions `...`).

    Attributes:
        deter: [..., D] the GRU state h.
        stoch: [..., S] a sample of the stochastic state s (one-hot groups, flattened, for
            discrete latents; with straight-through gradients).
        mean, std: [..., stoch] the Gaussian's parameters (latent="gaussian").
        logits: [..., stoch, classes] the categoricals' logits (latent="discrete").
        index: [..., stoch] int64, the class each one-hot group of a discrete sample
            selects (None for Gaussian latents and for states not drawn by the model).
        The distribution fields are None for a state rebuilt from a flat latent
        (`RSSM.split`), which only needs deter and stoch to step on.
    """

    deter: Tensor
    stoch: Tensor
    mean: Tensor | None = None
    std: Tensor | None = None
    logits: Tensor | None = None
    index: Tensor | None = None

    def feature(self) -> Tensor:
        """[..., F] = concat(deter, stoch): the latent z the planners and heads see."""
        return torch.cat([self.deter, self.stoch], dim=-1)

    def feature_parts(self) -> Tensor | OneHotFeature:
        """The feature as a `OneHotFeature` (deter, one-hot stoch, index) when the state is
        a discrete sample, which the heads' first layers take without the one-hot matrix
        product (`models.onehot_linear`); else the dense `feature()`. [..., F]."""
        if self.index is None:
            return self.feature()
        return OneHotFeature(self.deter, self.stoch, self.index)

    def map(self, fn: Callable[[Tensor], Tensor]) -> RSSMState:
        """Applies `fn` to every tensor field (None stays None)."""
        fields = (self.deter, self.stoch, self.mean, self.std, self.logits, self.index)
        return RSSMState(*(None if t is None else fn(t) for t in fields))  # type: ignore[arg-type]

    def detach(self) -> RSSMState:
        return self.map(Tensor.detach)

    def flatten_batch(self) -> RSSMState:
        """Merges the leading dimensions: [B, T, ...] -> [B * T, ...] (for imagination
        from every posterior state, as Dreamer does)."""
        lead = self.deter.dim() - 1
        return self.map(lambda t: t.flatten(0, lead - 1) if lead > 1 else t)

    def __getitem__(self, index: Any) -> RSSMState:
        """Indexes the leading dimensions, e.g. `states[:, t]`."""
        return self.map(lambda t: t[index])

    @staticmethod
    def stack(states: list[RSSMState], dim: int = 1) -> RSSMState:
        """Stacks states along a new leading-side dimension (time)."""
        first = states[0]
        fields = []
        for name in ("deter", "stoch", "mean", "std", "logits", "index"):
            if getattr(first, name) is None:
                fields.append(None)
            else:
                fields.append(torch.stack([getattr(s, name) for s in states], dim=dim))
        return RSSMState(*fields)  # type: ignore[arg-type]


class RSSMLossOutput(NamedTuple):
    """What `RSSM.loss` returns.

    loss: the scalar to minimise. parts: its terms (scalars, still in the graph; call
    `.item()` to log). posterior: the posterior states [B, T, ...] (detach before starting
    imagination from them, as Dreamer does).
    """

    loss: Tensor
    parts: dict[str, Tensor]
    posterior: RSSMState


# ---------------------------------------------------------------------------- networks


def _dense(in_features: int, out_features: int, act: type[nn.Module], layer_norm: bool) -> list[nn.Module]:
    """One hidden layer: Linear (-> LayerNorm) -> act. The Linear has no bias under
    LayerNorm, whose own shift makes it redundant (as in DreamerV3)."""
    if layer_norm:
        return [nn.Linear(in_features, out_features, bias=False), nn.LayerNorm(out_features), act()]
    return [nn.Linear(in_features, out_features), act()]


def _mlp(
    in_features: int, hidden: int, layers: int, out_features: int, act: type[nn.Module], layer_norm: bool = False
) -> nn.Sequential:
    """`layers` hidden layers (`_dense`), then a Linear output. [M, in] -> [M, out]."""
    modules: list[nn.Module] = []
    size = in_features
    for _ in range(layers):
        modules += _dense(size, hidden, act, layer_norm)
        size = hidden
    modules.append(nn.Linear(size, out_features))
    return nn.Sequential(*modules)


class _NormGRUCell(nn.Module):
    """DreamerV3's GRU: one Linear on [x, h] -> LayerNorm -> reset, candidate and update
    parts; h' = u * tanh(r * c) + (1 - u) * h with u = sigmoid(update - 1), the -1 making
    the cell keep its state early in training. Same call as nn.GRUCell.

    Shapes: x [M, I], h [M, D] -> [M, D].
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size + hidden_size, 3 * hidden_size, bias=False)
        self.norm = nn.LayerNorm(3 * hidden_size)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, candidate, update = self.norm(self.linear(torch.cat([x, h], dim=-1))).chunk(3, dim=-1)
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * h


class _ConvEncoder(nn.Module):
    """PlaNet's image encoder: 4 convs (depth x 1, 2, 4, 8), kernel 4, stride 2.

    [M, C, 64, 64] -> [M, 32 * depth] (8 * depth channels on a 2x2 grid; 1024 for depth 32).
    """

    def __init__(self, channels: int, depth: int, act: type[nn.Module]) -> None:
        super().__init__()
        sizes = [channels, depth, 2 * depth, 4 * depth, 8 * depth]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Conv2d(a, b, kernel_size=4, stride=2), act()]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _ConvDecoder(nn.Module):
    """PlaNet's image decoder: dense to 32 * depth, then 4 transposed convs (kernels
    5, 5, 6, 6, stride 2) from 1x1 to 64x64. [M, F] -> [M, C, 64, 64] (the mean)."""

    def __init__(self, features: int, channels: int, depth: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.width = 32 * depth
        # No activation after the dense layer, as in PlaNet: it only reshapes the feature.
        self.dense = nn.Linear(features, self.width)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(self.width, 4 * depth, kernel_size=5, stride=2),  # 1 -> 5
            act(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, kernel_size=5, stride=2),  # 5 -> 13
            act(),
            nn.ConvTranspose2d(2 * depth, depth, kernel_size=6, stride=2),  # 13 -> 30
            act(),
            nn.ConvTranspose2d(depth, channels, kernel_size=6, stride=2),  # 30 -> 64
        )

    def forward(self, feature: Tensor) -> Tensor:
        return self.net(self.dense(feature).view(-1, self.width, 1, 1))


# ---------------------------------------------------------------------------- model


class RSSM(nn.Module):
    """PlaNet's RSSM: encoder, transition (prior and posterior), decoders, reward head.

    Meets the planners' WorldModel contract (DESIGN 3.4) with the flat latent
    z = concat(deter, stoch), [M, F]: `encode`, `observe` (filtering), `next`, `reward`,
    `rollout` and `rollout_with_rewards` (reward of the state each action reaches).

    Randomness: latents are sampled with `self.generator` when it is set, else with
    torch's global RNG. `plan_with_samples` (default True, as PlaNet's planner samples
    the prior) chooses samples or means (modes for discrete latents) in `encode`,
    `observe`, `next`, `reward`, `rollout` and `rollout_with_rewards`; there, without
    gradients, discrete latents are drawn by inverse CDF (one uniform per categorical).
    Training (`loss`, `imagine*`) always samples, with reparameterised/straight-through
    gradients, by the exponential race.

    Example:
        model = RSSM(RSSMConfig.planet("pixels", (3, 64, 64), action_dim=6))
        out = model.loss({"obs": obs, "actions": actions, "rewards": rewards})
        out.loss.backward()
    """

    def __init__(self, config: RSSMConfig) -> None:
        super().__init__()
        if not isinstance(config, RSSMConfig):
            raise TypeError(f"config must be an RSSMConfig, got {type(config).__name__}")
        self.config = config
        c = config
        act = _ACTIVATIONS[c.activation]
        self.obs_shape: tuple[int, ...] = c.obs_shape
        self.obs_dtype = torch.float32
        self.action_dim = c.action_dim
        self.generator: torch.Generator | None = None
        self.plan_with_samples = True
        self._plan_draws = False  # set inside the planning interface (`_planning_draws`)
        feat = c.feature_size
        stats = 2 * c.stoch if c.latent == "gaussian" else c.stoch * c.classes

        if c.obs_type == "pixels":
            conv = _ConvEncoder(c.obs_shape[0], c.cnn_depth, act)
            conv_out = 32 * c.cnn_depth
            self.encoder: nn.Module = conv if conv_out == c.embed else nn.Sequential(conv, nn.Linear(conv_out, c.embed))
            self.decoder: nn.Module = _ConvDecoder(feat, c.obs_shape[0], c.cnn_depth, act)
        else:
            # The last layer has an activation too: the embedding is a hidden layer's output,
            # like the conv encoder's (which ends in a ReLU).
            # (The nested form keeps PlaNet-config checkpoints' parameter names.)
            # No parameters, so checkpoints keep their names; with no angles it is the identity.
            self.angle_features = AngleFeatures(c.obs_shape[0], c.angle_dims)
            mlp = _mlp(c.input_size, c.hidden, c.mlp_layers, c.embed, act, c.layer_norm)
            norm = [nn.LayerNorm(c.embed)] if c.layer_norm else []
            self.encoder = nn.Sequential(mlp, *norm, act())
            self.decoder = _mlp(feat, c.hidden, c.mlp_layers, c.input_size, act, c.layer_norm)

        # Transition (PlaNet, section 3): h_t = GRU(h_{t-1}, dense([s_{t-1}, a])); prior
        # p(s_t | h_t) from dense(h_t); posterior q(s_t | h_t, o_t) from dense([h_t, e_t]).
        # LayerNorm, when on, covers these dense layers and the GRU; the conv stacks keep
        # PlaNet's form.
        self.img_in = nn.Sequential(*_dense(c.stoch_size + c.action_dim, c.hidden, act, c.layer_norm))
        self.gru: nn.Module = _NormGRUCell(c.hidden, c.deter) if c.layer_norm else nn.GRUCell(c.hidden, c.deter)
        self.prior_hidden = nn.Sequential(*_dense(c.deter, c.hidden, act, c.layer_norm))
        self.prior_out = nn.Linear(c.hidden, stats)
        self.post_hidden = nn.Sequential(*_dense(c.deter + c.embed, c.hidden, act, c.layer_norm))
        self.post_out = nn.Linear(c.hidden, stats)

        reward_out = c.reward_bins if c.reward_head == "twohot" else 1
        self.reward_head = _mlp(feat, c.hidden, c.mlp_layers, reward_out, act, c.layer_norm)
        if c.reward_head == "twohot":
            # Zero logits predict a reward of 0 at the start, not a random one (DreamerV3).
            nn.init.zeros_(self.reward_head[-1].weight)
            nn.init.zeros_(self.reward_head[-1].bias)
        self.discount_head = _mlp(feat, c.hidden, c.mlp_layers, 1, act, c.layer_norm) if c.discount_head else None

    # ------------------------------------------------------------------ distributions

    def _draw_noise(self, lead: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
        """The noise that sampling states [*lead, ...] consumes, drawn with `self.generator`
        on `like`'s device and dtype: Gaussian eps [*lead, stoch] or Exp(1) race times
        [*lead, stoch, classes]."""
        c = self.config
        if c.latent == "gaussian":
            return torch.randn((*lead, c.stoch), generator=self.generator, device=like.device, dtype=like.dtype)
        return exponential_noise((*lead, c.stoch, c.classes), self.generator, like.device, like.dtype)

    def _state_from_stats(self, deter: Tensor, stats: Tensor, sample: bool, noise: Tensor | None = None) -> RSSMState:
        """Builds a state from the dense layer's output, drawing (or taking the mode of) s.

        Gaussian: std = softplus + min_std (PlaNet); s = mean + std * eps (rsample).
        Discrete: logits [..., stoch, classes]; s = one_hot + probs - sg(probs)
        (straight-through, DreamerV2), flattened to [..., stoch * classes]. With unimix
        the probabilities are mixed with the uniform first and the state's logits are
        their logs, so sampling, the straight-through gradient and the KL all see the
        mixed categorical (DreamerV3).

        `noise` (from `_draw_noise`) replaces the draw when sampling, so a caller can draw
        in one order and build the states in another.

        Inside the planning interface (`observe`, `next`, `rollout`: `_planning_draws`)
        with no gradient recorded, no straight-through path is needed: a discrete s is then
        drawn by inverse CDF (`categorical_by_inverse_cdf`), one uniform per categorical
        instead of one Exp(1) per class, the same distribution from a different random
        stream, and the state is the bare one-hot without logits (planning reads only the
        feature). Everything else (`loss`, `imagine*`, with or without gradients) draws by
        the race and keeps the logits.
        """
        c = self.config
        if c.latent == "gaussian":
            mean, raw_std = stats.chunk(2, dim=-1)
            std = F.softplus(raw_std) + c.min_std
            if sample and noise is None:
                noise = self._draw_noise(mean.shape[:-1], mean)
            stoch = mean + std * noise if sample else mean
            return RSSMState(deter=deter, stoch=stoch, mean=mean, std=std)
        logits = stats.unflatten(-1, (c.stoch, c.classes))
        probs = logits.softmax(dim=-1)
        if c.unimix > 0.0:
            probs = (1.0 - c.unimix) * probs + c.unimix / c.classes
        if sample and noise is None and self._plan_draws and not torch.is_grad_enabled():
            index = categorical_by_inverse_cdf(probs, self.generator)
            # The one-hot made in the state's dtype (F.one_hot makes int64, then a cast).
            stoch = torch.zeros_like(probs).scatter_(-1, index.unsqueeze(-1), 1.0).flatten(-2)
            # No logits: the planning interface returns only the feature.
            return RSSMState(deter=deter, stoch=stoch, index=index)
        if c.unimix > 0.0:
            logits = probs.log()
        if sample:
            # Exponential race: argmax(p / E), E ~ Exp(1), is a categorical draw; the
            # generator keeps it reproducible (torch.distributions takes none). E has the
            # probabilities' dtype (float32 under CUDA autocast, where the logits are not).
            if noise is None:
                noise = self._draw_noise(probs.shape[:-2], probs)
            index = (probs.detach() / noise).argmax(dim=-1)
        else:
            index = probs.argmax(dim=-1)
        one_hot = F.one_hot(index, c.classes).to(probs.dtype)
        # (probs - sg(probs)) is exactly 0 in the forward pass, so samples stay exactly one-hot.
        stoch = (one_hot + (probs - probs.detach())).flatten(-2)
        return RSSMState(deter=deter, stoch=stoch, logits=logits, index=index)

    def kl_divergence(self, lhs: RSSMState, rhs: RSSMState) -> Tensor:
        """KL(lhs || rhs) summed over the latent dimensions. [...] per state.

        Gaussian: the closed form for diagonal Gaussians. Discrete: sum over the
        categoricals of sum_k p_k (log p_k - log q_k).
        """
        if self.config.latent == "gaussian":
            assert lhs.mean is not None and lhs.std is not None and rhs.mean is not None and rhs.std is not None
            var_ratio = (lhs.std / rhs.std).pow(2)
            mahalanobis = ((lhs.mean - rhs.mean) / rhs.std).pow(2)
            return 0.5 * (var_ratio + mahalanobis - 1.0 - var_ratio.log()).sum(dim=-1)
        assert lhs.logits is not None and rhs.logits is not None
        log_p = lhs.logits.log_softmax(dim=-1)
        log_q = rhs.logits.log_softmax(dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=(-2, -1))

    # ------------------------------------------------------------------ transition

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> RSSMState:
        """The all-zero state that starts every sequence (PlaNet). [batch, ...]."""
        c = self.config
        device = device if device is not None else self.prior_out.weight.device
        dtype = self.prior_out.weight.dtype
        deter = torch.zeros(batch, c.deter, device=device, dtype=dtype)
        stoch = torch.zeros(batch, c.stoch_size, device=device, dtype=dtype)
        if c.latent == "gaussian":
            mean = torch.zeros(batch, c.stoch, device=device, dtype=dtype)
            return RSSMState(deter, stoch, mean=mean, std=torch.ones_like(mean))
        return RSSMState(deter, stoch, logits=torch.zeros(batch, c.stoch, c.classes, device=device, dtype=dtype))

    def img_step(self, state: RSSMState, action: Tensor, sample: bool = True) -> RSSMState:
        """One prior step p(s_t | h_t), h_t = GRU(h_{t-1}, dense([s_{t-1}, a_t])).

        Shapes:
            state: [M, ...]; action: [M, A] (the action taken after that state) -> [M, ...].
        """
        deter = self._next_deter(state, action)
        return self._state_from_stats(deter, self._prior_stats(deter), sample)

    def _next_deter(self, state: RSSMState, action: Tensor) -> Tensor:
        """h_t = GRU(h_{t-1}, dense([s_{t-1}, a_t])). [M, ...], [M, A] -> [M, D]."""
        return self.gru(self.img_in(torch.cat([state.stoch, action], dim=-1)), state.deter)

    def _prior_stats(self, deter: Tensor) -> Tensor:
        """The prior's distribution parameters from h_t. [..., D] -> [..., stats]."""
        return self.prior_out(self.prior_hidden(deter))

    def _posterior_stats(self, deter: Tensor, embed: Tensor) -> Tensor:
        """The posterior's distribution parameters from h_t and e_t. [M, D], [M, E] -> [M, stats]."""
        return self.post_out(self.post_hidden(torch.cat([deter, embed], dim=-1)))

    def obs_step(
        self, state: RSSMState, action: Tensor, embed: Tensor, sample: bool = True
    ) -> tuple[RSSMState, RSSMState]:
        """The prior step, then the posterior q(s_t | h_t, e_t) given the new observation.

        Shapes:
            state: [M, ...] the previous (posterior) state; action: [M, A] the action that
            led to the observation; embed: [M, E] its embedding -> (posterior, prior) [M, ...].
        """
        prior = self.img_step(state, action, sample)
        return self._state_from_stats(prior.deter, self._posterior_stats(prior.deter, embed), sample), prior

    def observe_sequence(
        self, embeds: Tensor, actions: Tensor, state0: RSSMState | None = None, sample: bool = True
    ) -> tuple[RSSMState, RSSMState]:
        """Filters a sequence: posteriors and one-step priors at every step.

        `actions[:, t]` is the action that led to `obs[:, t]` (see the module docstring);
        it is used as given, so at an episode start `actions[:, 0]` should be zeros.
        `state0` (default: the zero state) is the state before step 0.

        The same states as `obs_step` at every step (to float rounding), computed faster:
        the recurrence needs only the GRU and the posterior at each step, so the prior's
        layers run once over all steps after the scan. The prior's noise is still drawn at
        its step, before the posterior's, so the random stream and every sample match the
        step-by-step filter (`tests/test_rssm_fast_update.py`). It calls the layers
        directly, not `img_step` / `obs_step`: a subclass that overrides those changes
        planning and imagination, not this filter.

        Shapes:
            embeds: [B, T, E]; actions: [B, T, A] -> (posterior, prior), each [B, T, ...].
        """
        b, t = embeds.shape[:2]
        state = self.initial_state(b, embeds.device) if state0 is None else state0
        posts, deters, prior_noise = [], [], []
        for i in range(t):
            deter = self._next_deter(state, actions[:, i])
            if sample:
                # The prior's draw comes first, as in obs_step; its stats are not needed yet.
                prior_noise.append(self._draw_noise(deter.shape[:-1], deter))
            state = self._state_from_stats(deter, self._posterior_stats(deter, embeds[:, i]), sample)
            posts.append(state)
            deters.append(deter)
        deter_seq = torch.stack(deters, dim=1)  # [B, T, D]
        noise = torch.stack(prior_noise, dim=1) if sample else None
        prior = self._state_from_stats(deter_seq, self._prior_stats(deter_seq), sample, noise)
        return RSSMState.stack(posts, dim=1), prior

    def imagine(self, state: RSSMState, actions: Tensor, sample: bool = True) -> RSSMState:
        """Prior states after each of the given actions (open loop).

        Shapes:
            state: [B, ...]; actions: [B, H, A] -> [B, H, ...] (the states reached by
            actions[:, 0], ..., actions[:, H-1]).
        """
        states = []
        for i in range(actions.shape[1]):
            state = self.img_step(state, actions[:, i], sample)
            states.append(state)
        return RSSMState.stack(states, dim=1)

    def imagine_with_policy(
        self,
        state: RSSMState,
        policy_fn: Callable[[Tensor], Tensor],
        horizon: int,
        detach_policy_input: bool = True,
        feature_parts: bool = False,
        time_major: bool = False,
    ) -> tuple[RSSMState, Tensor]:
        """Closed-loop imagination for behaviour learning (Dreamer).

        Gradients flow from the imagined states back through the dynamics into the
        actions (reparameterised Gaussian samples, straight-through discrete samples), so
        an actor can be trained by backpropagating imagined returns (Dreamer v1).
        By default the policy sees sg(feature), as in Dreamer: the gradient then reaches
        earlier actions through the dynamics only, not through later policy inputs.

        Args:
            state: [B, ...] start states (e.g. `loss(...).posterior.detach().flatten_batch()`).
            policy_fn: feature [B, F] -> action [B, A] (may sample with rsample).
            horizon: H.
            feature_parts: hand policy_fn `state.feature_parts()` (a `OneHotFeature` for
                discrete samples) instead of the dense feature.
            time_major: stack the results [H, B, ...] instead of [B, H, ...] (saves the
                transposing copy for consumers that scan over time).

        Returns:
            states [B, H, ...] (the H states after each action; the start is not
            included) and actions [B, H, A] (action i taken in the state before states[:, i]).
        """
        states, actions = [], []
        for _ in range(horizon):
            feature = state.feature_parts() if feature_parts else state.feature()
            action = policy_fn(feature.detach() if detach_policy_input else feature)
            state = self.img_step(state, action, sample=True)
            states.append(state)
            actions.append(action)
        dim = 0 if time_major else 1
        return RSSMState.stack(states, dim=dim), torch.stack(actions, dim=dim)

    # ------------------------------------------------------------------ heads

    def embed(self, obs: Tensor, noise: bool = False) -> Tensor:
        """Observations -> embeddings. [M, *obs] -> [M, E].

        Pixel observations may be uint8 (quantised here; `noise` adds PlaNet's
        dequantisation noise) or float already from `preprocess`.
        """
        return self.encoder(self.preprocess(obs, noise=noise))

    def preprocess(self, obs: Tensor, noise: bool = False) -> Tensor:
        """Observations -> the model's input space, which is also what the decoder
        reconstructs: uint8 images -> centred 5-bit floats (see `preprocess_images`);
        state vectors [..., S] -> their angle features [..., S + len(angle_dims)] (the
        state itself without `angle_dims`), then symlog with `symlog_obs`; float images
        (preprocessed already) pass unchanged."""
        if self.config.obs_type == "pixels":
            if not obs.is_floating_point():
                return preprocess_images(obs, self.config.bit_depth, noise=noise, generator=self.generator)
            return obs.float()
        x = self.angle_features(obs.float())
        return symlog(x) if self.config.symlog_obs else x

    def postprocess(self, x: Tensor) -> Tensor:
        """Decoded (or preprocessed) images -> uint8 for pictures. [..., C, H, W]."""
        return postprocess_images(x, self.config.bit_depth)

    def decode(self, feature: Tensor) -> Tensor:
        """The mean of p(o | s) (unit variance) in the model's input space (see
        `preprocess`: images in [-0.5, 0.5), states as angle features, symlog with
        `symlog_obs`). [M, F] -> [M, *obs] (states: [M, input_size])."""
        return self.decoder(feature)

    def predict_reward(self, feature: Tensor | OneHotFeature) -> Tensor:
        """The predicted reward: the mean of p(r | s) (unit-variance Gaussian), or the
        two-hot categorical's expectation in symlog space mapped back by symexp.
        [..., F] (a dense feature or a `OneHotFeature`) -> [...]."""
        out = apply_mlp(self.reward_head, feature)
        if self.config.reward_head == "twohot":
            # The expectation over 255 bins, then symexp, loses about 1% in bfloat16, so it
            # runs in float32 even under autocast (as the two-hot critic does).
            with torch.autocast(out.device.type, enabled=False):
                return two_hot_inverse(out.float(), *REWARD_TWOHOT_RANGE)
        return out.squeeze(-1)

    def reward_loss(self, feature: Tensor, rewards: Tensor) -> Tensor:
        """-log p(r | s) averaged over [...]: 0.5 (mean - r)^2 for the Gaussian head (no
        constant), the cross-entropy to the two-hot encoding of symlog(r) for "twohot".
        feature [..., F], rewards [...] -> a scalar."""
        if self.config.reward_head == "twohot":
            logits = self.reward_head(feature)
            return soft_cross_entropy(logits, rewards.to(logits.dtype), self.config.reward_bins,
                                      *REWARD_TWOHOT_RANGE).mean()  # fmt: skip
        return 0.5 * (self.predict_reward(feature) - rewards.float()).pow(2).mean()

    def discount_logits(self, feature: Tensor | OneHotFeature) -> Tensor:
        """Bernoulli logits of continuing after this state (DreamerV2). [..., F] (dense
        or a `OneHotFeature`) -> [...]."""
        if self.discount_head is None:
            raise ValueError("this RSSM has no discount head; build it with RSSMConfig(discount_head=True)")
        return apply_mlp(self.discount_head, feature).squeeze(-1)

    # ------------------------------------------------------------------ training

    def _kl_term(self, post: RSSMState, prior: RSSMState) -> tuple[Tensor, Tensor]:
        """The KL loss term and the plain KL (for logging), both scalars.

        Free nats as PlaNet applies them: max(mean over batch and time of the KL summed
        over latent dimensions, free_nats), so the term (and its gradient) vanishes while
        the average KL is below the allowance; with `free_nats_per_step` (DreamerV3's free
        bits) each step's KL is clamped before the mean, so only the steps under the
        allowance lose their gradient. With balancing (DreamerV2) each of the two
        stop-gradient terms is clamped the same way.
        """
        c = self.config

        def clamped(kl_steps: Tensor) -> Tensor:
            if c.free_nats_per_step:
                return kl_steps.clamp(min=c.free_nats).mean()
            return kl_steps.mean().clamp(min=c.free_nats)

        kl_steps = self.kl_divergence(post, prior)
        if c.kl_balance is None:
            return clamped(kl_steps), kl_steps.mean().detach()
        train_prior = clamped(self.kl_divergence(post.detach(), prior))
        train_post = clamped(self.kl_divergence(post, prior.detach()))
        return c.kl_balance * train_prior + (1.0 - c.kl_balance) * train_post, kl_steps.mean().detach()

    def _overshooting_terms(self, post: RSSMState, prior: RSSMState, actions: Tensor) -> list[Tensor]:
        """Clamped KLs of d-step priors, d = 2..D, to the stop-gradient posteriors
        (latent overshooting, PlaNet eq. 7). Distances beyond the sequence are skipped.

        Shapes: post, prior [B, T, ...]; actions [B, T, A].
        """
        c = self.config
        t = actions.shape[1]
        terms = []
        reach = prior[:, 1:]  # one-step priors of steps 1..T-1, from the posteriors before
        target = post.detach()
        for d in range(2, min(c.overshooting, t - 1) + 1):
            # reach[:, i] predicts step i + d - 1; one more action moves each to i + d.
            start = reach[:, :-1]
            b, n = start.deter.shape[:2]
            stepped = self.img_step(start.flatten_batch(), actions[:, d:].flatten(0, 1))
            reach = stepped.map(lambda x, b=b, n=n: x.unflatten(0, (b, n)))  # [B, T - d, ...]
            kl_steps = self.kl_divergence(target[:, d:], reach)
            terms.append(kl_steps.clamp(min=c.free_nats).mean() if c.free_nats_per_step
                         else kl_steps.mean().clamp(min=c.free_nats))  # fmt: skip
        return terms

    def loss(self, batch: Mapping[str, Tensor]) -> RSSMLossOutput:
        """The negative ELBO of a batch of sequences (PlaNet, eq. 3), with options.

        loss = reconstruction_scale * reconstruction + reward + kl_scale * kl (+ discount), where
        reconstruction = -log p(o_t | s_t) summed over observation dims (pixels),
        reward = -log p(r_t | s_t) (`reward_loss`), the Gaussians unit-variance and
        written without the constant 0.5 log(2 pi) per dimension (so 0 is a perfect
        prediction), averaged over batch and time; reconstruction targets are in the
        model's input space (`preprocess`); kl is `_kl_term` (free nats, balancing) or, with
        overshooting D >= 2, the average of that and the d-step terms d = 2..D;
        discount = Bernoulli NLL of `discounts` (DreamerV2), when the head is on.

        Args:
            batch: "obs" [B, T, *obs] (uint8 or float pixels, float states), "actions"
                [B, T, A] (actions[:, t] led to obs[:, t]), "rewards" [B, T] (received
                with obs[:, t]), optional "discounts" [B, T] in [0, 1] (ones when absent:
                DM Control episodes never terminate).

        Returns:
            RSSMLossOutput(loss, parts, posterior). parts: "reconstruction", "reward",
            "kl" (the term before kl_scale), "kl_value" (the plain mean one-step KL),
            and "overshooting" / "discount" when on.

        Raises:
            ValueError: on missing keys or inconsistent shapes.
        """
        c = self.config
        for key in ("obs", "actions", "rewards"):
            if key not in batch:
                raise ValueError(
                    f"batch has no {key!r}; expected keys 'obs', 'actions', 'rewards' (optional 'discounts')"
                )
        obs, actions, rewards = batch["obs"], batch["actions"], batch["rewards"]
        if obs.dim() != 2 + len(c.obs_shape) or tuple(obs.shape[2:]) != c.obs_shape:
            raise ValueError(f"obs has shape {tuple(obs.shape)}; expected (B, T, *{c.obs_shape})")
        b, t = obs.shape[:2]
        if tuple(actions.shape) != (b, t, c.action_dim):
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected {(b, t, c.action_dim)}")
        if tuple(rewards.shape) != (b, t):
            raise ValueError(f"rewards have shape {tuple(rewards.shape)}; expected {(b, t)}")

        # PlaNet dequantises the images fed to the encoder and used as targets alike.
        target = self.preprocess(obs.flatten(0, 1), noise=True)  # [B * T, *obs]
        embeds = self.encoder(target).unflatten(0, (b, t))  # [B, T, E]
        post, prior = self.observe_sequence(embeds, actions.float())
        feature = post.feature()  # [B, T, F]

        recon = self.decoder(feature.flatten(0, 1))
        reconstruction = 0.5 * (recon - target).pow(2).flatten(1).sum(dim=1).mean()
        reward = self.reward_loss(feature, rewards.float())
        kl, kl_value = self._kl_term(post, prior)
        parts: dict[str, Tensor] = {"reconstruction": reconstruction, "reward": reward}
        if c.overshooting >= 2:
            extra = self._overshooting_terms(post, prior, actions.float())
            if extra:
                parts["overshooting"] = torch.stack(extra).mean()
                kl = (kl + torch.stack(extra).sum()) / (1 + len(extra))
        parts["kl"] = kl
        parts["kl_value"] = kl_value
        total = c.reconstruction_scale * reconstruction + reward + c.kl_scale * kl
        if self.discount_head is not None:
            discounts = batch.get("discounts")
            if discounts is None:
                discounts = torch.ones_like(rewards, dtype=feature.dtype)
            elif tuple(discounts.shape) != (b, t):
                raise ValueError(f"discounts have shape {tuple(discounts.shape)}; expected {(b, t)}")
            parts["discount"] = F.binary_cross_entropy_with_logits(self.discount_logits(feature), discounts.float())
            total = total + parts["discount"]
        return RSSMLossOutput(total, parts, post)

    # ------------------------------------------------------------------ planning API

    def split(self, z: Tensor) -> RSSMState:
        """A flat latent back into a state: [M, F] -> deter [M, D], stoch [M, S]."""
        return RSSMState(deter=z[..., : self.config.deter], stoch=z[..., self.config.deter :])

    def _check_obs(self, obs: Tensor) -> None:
        if tuple(obs.shape[1:]) != self.obs_shape or obs.dim() != 1 + len(self.obs_shape):
            raise ValueError(f"obs has shape {tuple(obs.shape)}; this RSSM expects [M, *{self.obs_shape}]")

    @contextlib.contextmanager
    def _planning_draws(self) -> Iterator[None]:
        """Inside: discrete latents drawn without gradients take the planner's cheap draw
        (see `_state_from_stats`). The planning interface's own calls only, so a subclass
        that overrides `img_step` / `obs_step` plans with them as before."""
        previous, self._plan_draws = self._plan_draws, True
        try:
            yield
        finally:
            self._plan_draws = previous

    def encode(self, obs: Tensor) -> Tensor:
        """The posterior latent of a single observation, from the zero state and a zero
        previous action (what `observe(None, None, obs)` gives).

        Shapes: obs [M, *obs] (uint8 or float images, float states) -> z [M, F].
        """
        return self.observe(None, None, obs)

    def observe(self, z_prev: Tensor | None, action_prev: Tensor | None, obs: Tensor) -> Tensor:
        """One filtering step for the controller: q(s_t | h_t, o_t) with h_t from the
        previous latent and action. `z_prev is None` starts an episode (zero state);
        a missing action counts as zeros.

        Shapes: z_prev [M, F] or None; action_prev [M, A] or None; obs [M, *obs] -> [M, F].
        """
        self._check_obs(obs)
        m = obs.shape[0]
        state = self.initial_state(m, obs.device) if z_prev is None else self.split(z_prev)
        if action_prev is None:
            action_prev = torch.zeros(m, self.action_dim, device=obs.device, dtype=state.deter.dtype)
        embed = self.embed(obs, noise=False)
        with self._planning_draws():
            post, _ = self.obs_step(state, action_prev.to(state.deter.dtype), embed, sample=self.plan_with_samples)
        return post.feature()

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """One prior step. z [M, F], action [M, A] -> [M, F]."""
        with self._planning_draws():
            return self.img_step(self.split(z), action, sample=self.plan_with_samples).feature()

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """The predicted reward of taking `action` in `z`: the reward head at the state
        it reaches (a fresh draw of it when sampling). z [M, F], action [M, A] -> [M]."""
        return self.predict_reward(self.next(z, action))

    def rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        """Latents after each action. z [M, F], actions [M, H, A] -> [M, H, F]."""
        state = self.split(z)
        m, horizon = actions.shape[:2]
        d = self.config.deter
        latents: Tensor | None = None
        # Only the features are kept, each part written once into its place: stacking the
        # distribution parameters of every candidate and step, or concatenating and then
        # stacking the features, would cost memory traffic the planner never uses.
        with self._planning_draws():
            for t in range(horizon):
                state = self.img_step(state, actions[:, t], sample=self.plan_with_samples)
                if latents is None:  # feature()'s dtype: torch.cat's promotion of the two parts
                    dtype = torch.promote_types(state.deter.dtype, state.stoch.dtype)
                    latents = state.deter.new_empty((m, horizon, d + state.stoch.shape[-1]), dtype=dtype)
                latents[:, t, :d] = state.deter
                latents[:, t, d:] = state.stoch
        if latents is None:
            raise ValueError(f"actions has shape {tuple(actions.shape)}; a rollout needs at least one step")
        return latents

    def rollout_with_rewards(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Latents and rewards of each step, for `reward_objective`.

        rewards[:, t] is the reward head at latents[:, t], the state reached by
        actions[:, t] (PlaNet's planning objective sums these).

        Shapes: z [M, F], actions [M, H, A] -> latents [M, H, F], rewards [M, H].
        """
        latents = self.rollout(z, actions)
        return latents, self.predict_reward(latents)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> dict[str, Any]:
        """{format_version, model, config, state_dict}: tensors and primitives only, so it
        loads with `torch.load(..., weights_only=True)`."""
        return model_checkpoint(self, _MODEL_NAME, CHECKPOINT_FORMAT_VERSION, asdict(self.config))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes `checkpoint()` atomically."""
        atomic_torch_save(self.checkpoint(), path)

    @staticmethod
    def _check_checkpoint(ckpt: Mapping[str, Any]) -> RSSMConfig:
        return RSSMConfig.from_dict(read_header(ckpt, _MODEL_NAME, CHECKPOINT_FORMAT_VERSION))

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any],
        obs_shape: tuple[int, ...] | None = None,
        action_dim: int | None = None,
        device: torch.device | str = "cpu",
    ) -> RSSM:
        """Rebuilds a model from `checkpoint()` (or `torch.load` of a `save`d file).

        Args:
            ckpt: the checkpoint dict.
            obs_shape, action_dim: what the caller's task needs; a checkpoint trained for
                something else raises.
            device: where the model goes: "cpu" (the default, as for every checkpoint
                loader here), "cuda", or "auto" (CUDA when available, else CPU).

        Raises:
            ValueError: a checkpoint of another model, another format version, or a
                different observation shape / action size (both named).
        """
        config = cls._check_checkpoint(ckpt)
        if obs_shape is not None and tuple(obs_shape) != config.obs_shape:
            raise ValueError(f"checkpoint has obs_shape {config.obs_shape}, but the task gives {tuple(obs_shape)}")
        if action_dim is not None and action_dim != config.action_dim:
            raise ValueError(f"checkpoint has action_dim {config.action_dim}, but the task gives {action_dim}")
        model = cls(config)
        model.load_state_dict(ckpt["state_dict"])
        return model.to(resolve_device(device))

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> RSSM:
        """`from_checkpoint(torch.load(path, weights_only=True), **kwargs)`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no RSSM checkpoint at {str(path)!r}")
        return cls.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True), **kwargs)

    def load_checkpoint(self, ckpt: Mapping[str, Any]) -> None:
        """Loads weights into this model; the checkpoint's config must build the same one.

        Raises:
            ValueError: another model, or a config whose architecture differs (the
                differing fields named).
        """
        config = self._check_checkpoint(ckpt)
        if config.obs_shape != self.config.obs_shape:
            raise ValueError(f"checkpoint has obs_shape {config.obs_shape}, but this model has {self.config.obs_shape}")
        # Loss settings (free nats, KL weights, overshooting) may differ: fine-tuning with
        # other settings is legitimate. What builds or evaluates the network may not.
        differ = {n for n in _ARCHITECTURE_FIELDS if getattr(config, n) != getattr(self.config, n)}
        if config.reward_head == self.config.reward_head == "gaussian":
            differ.discard("reward_bins")  # unused by a Gaussian head
        if differ:
            pairs = ", ".join(f"{n}: {getattr(config, n)!r} vs {getattr(self.config, n)!r}" for n in sorted(differ))
            raise ValueError(f"checkpoint config differs from this model's (checkpoint vs model): {pairs}")
        self.load_state_dict(ckpt["state_dict"])


# -- the registry's entry points (models.registry) ------------------------------------------


def load_for_planning(path: str | os.PathLike[str], env: Any = None, device: str | torch.device = "auto") -> RSSM:
    """An RSSM model file ready to plan with (eval mode), checked against `env`'s
    observation shape and action size when given.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: another model, or another observation shape / action size.
    """
    checks: dict[str, Any] = {}
    if env is not None:
        checks = {"obs_shape": tuple(env.observation_space.shape), "action_dim": int(env.action_space.shape[0])}
    try:
        model = RSSM.load(path, device=device, **checks)
    except CheckpointError as error:  # another family or format: keep the error's kind
        raise CheckpointError(f"{path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return model.eval()


def tiny_case() -> Any:
    """A tiny state RSSM for the contract tests."""
    from models.planning import EnvShapes, TinyCase

    torch.manual_seed(0)
    model = RSSM(RSSMConfig.tiny("state", (5,), 2)).eval()
    return TinyCase(model=model, obs=torch.linspace(-1, 1, 5), action_dim=2, save=model.save,
                    env=EnvShapes((5,), 2), controller_kwargs={"use_value": False, "discount": 1.0})
