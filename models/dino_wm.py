"""DINO-WM: a world model over frozen DINOv2 patch features (Zhou et al., 2024, "DINO-WM:
World Models on Pre-trained Visual Features enable Zero-shot Planning"), our own
implementation of the paper's design (numbers in shared/ANCHORS.md section 2).

The model, in the paper's terms:

- Observation encoder: a frozen DINOv2 ViT-S/14; a frame's latent is its P patch tokens
  after the final LayerNorm (no CLS), [P, D] (196 x 384 at 196 px). It is never trained
  and never stored in our checkpoints (it comes from the official weight file).
- Action encoder: one Linear from the z-scored env actions of one model step (the
  `frameskip` env actions concatenated) to `action_emb_dim` (10). Proprio encoder: one
  Linear from the z-scored proprioception to `proprio_emb_dim` (10). Both embeddings are
  tiled onto every patch and concatenated with the visual token: token width
  D + 10 + 10 = 404.
- Predictor: a ViT over `history` frames x P tokens with a learned position embedding and
  a frame-causal attention mask (every token of frame t attends to all tokens of frames
  <= t). Its output at frame t is the prediction of frame t + 1's visual and proprio
  embedding; the action part of the output is not predicted (the paper's loss covers
  visual + proprio embeddings only). Training is teacher-forced MSE over every frame of
  the window at once (`DinoWM.loss`), and works from cached encoder features.
- Planning: CEM over action sequences, scored by the MSE between the last predicted
  visual latent and the goal's, plus alpha x the proprio MSE (`dino_goal_objective`).

Latent layout (what the planners carry; `DinoWM.latent_shape`):

    z: [M, history, P, C] with C = D + Ep + Ea (the predictor's token width)
       z[..., :D]        visual patch features of each frame in the window (oldest first)
       z[..., D:D+Ep]    proprio embedding (tiled over patches for encoded frames; the
                         per-token prediction for predicted frames)
       z[..., D+Ep:]     embedding of the action taken FROM that frame (tiled); zeros in the
                         last frame, whose action is not chosen yet

A window of frames is the state because the predictor conditions on the last `history`
frames; the action slots are part of it because the predictor needs the actions taken
from the earlier frames of the window (the executed ones, which `observe` receives), and
the latent is the only thing the controller carries between steps. The goal comparison
uses only the last frame's first D + Ep channels (`goal_latent`).

Actions: one model step covers `frameskip` env steps. Every method taking actions accepts
either the full chunk, A * frameskip values laid out as [a_0, a_1, ..., a_{fs-1}] (each A
wide), or A values that are repeated over the frameskip (an action repeat, so a planner can
search the smaller space). Actions are raw env actions; the model z-scores them with
`action_mean` / `action_std` (set from the data set with `set_normalization`).

Shapes:
    M a flattened batch, B batch, T time, H horizon, A env action size, fs frameskip,
    Hh history, P patches, D encoder width, Ep / Ea proprio / action embedding widths,
    L = D + Ep (a predicted frame), C = L + Ea (a token, one frame of the latent).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoints import atomic_torch_save, model_checkpoint, read_header
from models.dinov2 import (
    DINOV2_CONFIGS,
    DINOv2Config,
    DinoVisionTransformer,
    build_dinov2,
    preprocess_images,
)
from planners.controller import resolve_device

if TYPE_CHECKING:
    pass

__all__ = [
    "FORMAT_VERSION",
    "TINY_ENCODER",
    "DinoWM",
    "DinoWMConfig",
    "FrameCausalPredictor",
    "PatchDecoder",
    "frame_causal_mask",
]

FORMAT_VERSION = 1
_MODEL_NAME = "dinowm"

# A DINOv2-shaped encoder small enough for unit tests (28 px -> 2 x 2 patches). Random
# weights: its features are a fixed function of the image, not DINOv2's.
TINY_ENCODER = DINOv2Config(name="tiny", embed_dim=32, depth=1, num_heads=2, img_size=28)

Normalization = Literal["minus_one_one", "imagenet"]
GoalMode = Literal["last", "all"]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DinoWMConfig:
    """Architecture of a DINO-WM model. Use the presets `paper`, `cpu` and `tiny`.

    Attributes:
        action_dim: A, the env's action size.
        proprio_dim: size of the proprioceptive vector; 0 for none (then proprio_emb_dim
            must be 0 too).
        image_size: side of the square encoder input in pixels, a multiple of the
            encoder's patch size (14); frames of any size are resized to it.
        encoder: a key of `models.dinov2.DINOV2_CONFIGS` ("vits14", the paper's) or a
            custom `DINOv2Config` (tests).
        normalization: pixel normalisation before the encoder; DINO-WM scales to [-1, 1].
        frameskip: env steps per model step (5 in the paper); the action encoder sees
            the fs actions of a step concatenated.
        history: frames in the predictor's window (3 in the paper).
        action_emb_dim, proprio_emb_dim: widths of the tiled embeddings (10 each).
        depth, num_heads, head_dim, mlp_dim, dropout: the predictor ViT (6, 16, 64, 2048,
            0.1 in the paper).
        decoder: add a `PatchDecoder` for pictures of latents (trained on detached
            features; it never shapes the latent).
        decoder_channels: width of the decoder.
        patch_pool: average k x k neighbouring patch features into one token after the
            frozen encoder (1: none, the paper's). Ours, for CPUs: the encoder still sees
            the full image (small objects stay visible), while the predictor, whose cost
            grows with the token count, sees k^2 times fewer tokens
            (benchmarks/dinowm_plan_time.py). Must divide the encoder's patch grid.
    """

    action_dim: int
    proprio_dim: int
    image_size: int = 196
    encoder: str | DINOv2Config = "vits14"
    normalization: Normalization = "minus_one_one"
    frameskip: int = 5
    history: int = 3
    action_emb_dim: int = 10
    proprio_emb_dim: int = 10
    depth: int = 6
    num_heads: int = 16
    head_dim: int = 64
    mlp_dim: int = 2048
    dropout: float = 0.1
    decoder: bool = False
    decoder_channels: int = 64
    patch_pool: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.encoder, str):
            if self.encoder not in DINOV2_CONFIGS:
                raise ValueError(f"unknown encoder {self.encoder!r}; accepted: {sorted(DINOV2_CONFIGS)} or a DINOv2Config")
        elif not isinstance(self.encoder, DINOv2Config):
            raise TypeError(f"encoder must be a name or a DINOv2Config, got {type(self.encoder).__name__}")
        patch = self.encoder_config.patch_size
        if not isinstance(self.image_size, int) or self.image_size <= 0 or self.image_size % patch:
            raise ValueError(
                f"image_size={self.image_size!r} must be a positive multiple of the encoder's patch size "
                f"{patch} (e.g. 196 or 224)"
            )
        for name in ("action_dim", "frameskip", "history", "action_emb_dim", "depth", "num_heads", "head_dim", "mlp_dim",
                     "decoder_channels", "patch_pool"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        for name in ("proprio_dim", "proprio_emb_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative int")
        if self.proprio_dim == 0 and self.proprio_emb_dim != 0:
            raise ValueError(f"proprio_emb_dim={self.proprio_emb_dim} must be 0 when proprio_dim=0 (nothing to embed)")
        if self.proprio_dim > 0 and self.proprio_emb_dim == 0:
            raise ValueError(f"proprio_emb_dim=0 would ignore proprio_dim={self.proprio_dim}; give it a width (10)")
        if self.encoder_grid_size % self.patch_pool:
            raise ValueError(
                f"patch_pool={self.patch_pool} must divide the encoder's patch grid of {self.encoder_grid_size} x "
                f"{self.encoder_grid_size} (image_size={self.image_size} / patch size {patch})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        if self.normalization not in ("minus_one_one", "imagenet"):
            raise ValueError(f"unknown normalization {self.normalization!r}; accepted: 'minus_one_one', 'imagenet'")

    # -- derived sizes ---------------------------------------------------------------

    @property
    def encoder_config(self) -> DINOv2Config:
        return DINOV2_CONFIGS[self.encoder] if isinstance(self.encoder, str) else self.encoder

    @property
    def encoder_name(self) -> str:
        return self.encoder if isinstance(self.encoder, str) else self.encoder.name

    @property
    def patch_size(self) -> int:
        return self.encoder_config.patch_size

    @property
    def encoder_grid_size(self) -> int:
        """The encoder's patches per side: image_size / patch_size (14 at 196 px)."""
        return self.image_size // self.patch_size

    @property
    def grid_size(self) -> int:
        """The model's tokens per side: encoder_grid_size / patch_pool."""
        return self.encoder_grid_size // self.patch_pool

    @property
    def num_patches(self) -> int:
        """P = grid_size ** 2 (196 at 196 px, 64 at 112 px, 16 at 112 px with patch_pool 2)."""
        return self.grid_size**2

    @property
    def embed_dim(self) -> int:
        """D, the encoder's width (384 for ViT-S/14)."""
        return self.encoder_config.embed_dim

    @property
    def frame_dim(self) -> int:
        """L = D + Ep: what the predictor predicts per patch."""
        return self.embed_dim + self.proprio_emb_dim

    @property
    def token_dim(self) -> int:
        """C = D + Ep + Ea: the predictor's token width (404 in the paper)."""
        return self.frame_dim + self.action_emb_dim

    @property
    def action_chunk_dim(self) -> int:
        """A * frameskip: the action encoder's input."""
        return self.action_dim * self.frameskip

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(history, P, C), the shape of one latent."""
        return (self.history, self.num_patches, self.token_dim)

    # -- presets ---------------------------------------------------------------------

    @classmethod
    def paper(cls, action_dim: int, proprio_dim: int, **overrides: Any) -> DinoWMConfig:
        """The paper's model: ViT-S/14 at 196 px (196 patches), history 3, frameskip 5,
        predictor depth 6, 16 heads of 64, MLP 2048, dropout 0.1 (about 20M parameters).
        Meant for GPU machines."""
        settings: dict[str, Any] = {"proprio_emb_dim": 10 if proprio_dim > 0 else 0}
        settings.update(overrides)
        return cls(action_dim=action_dim, proprio_dim=proprio_dim, **settings)

    @classmethod
    def cpu(cls, action_dim: int, proprio_dim: int, **overrides: Any) -> DinoWMConfig:
        """A CPU-sized variant (ours): ViT-S/14 sees the frame at 112 px (8 x 8 patches),
        whose features are averaged 2 x 2 (`patch_pool`) into 4 x 4 = 16 tokens; a window
        of 1 frame (history 1: the proprio embedding carries the velocities); predictor
        depth 4, 8 heads of 32, MLP 1024; embeddings and frameskip as the paper.

        Why (benchmarks/dinowm_plan_time.py, this 2-core CPU, bfloat16): one CEM call of
        100 samples x 10 iterations x horizon 5 takes about 12 s, so a 50-goal evaluation
        is under 2 h; with 64 patches and history 3 the same call took over 2 minutes
        (48.6 s at a budget of 64 x 5)."""
        settings: dict[str, Any] = {
            "image_size": 112, "patch_pool": 2, "history": 1, "depth": 4, "num_heads": 8, "head_dim": 32,
            "mlp_dim": 1024, "proprio_emb_dim": 10 if proprio_dim > 0 else 0,
        }
        settings.update(overrides)
        return cls(action_dim=action_dim, proprio_dim=proprio_dim, **settings)

    @classmethod
    def tiny(cls, action_dim: int, proprio_dim: int, **overrides: Any) -> DinoWMConfig:
        """A model for unit tests: `TINY_ENCODER` at 28 px (2 x 2 patches of 32), a 2-block
        predictor, frameskip 2, no dropout."""
        settings: dict[str, Any] = {
            "image_size": 28, "encoder": TINY_ENCODER, "frameskip": 2, "action_emb_dim": 4,
            "proprio_emb_dim": 4 if proprio_dim > 0 else 0,
            "depth": 2, "num_heads": 2, "head_dim": 16, "mlp_dim": 64, "dropout": 0.0, "decoder_channels": 8,
        }
        settings.update(overrides)
        return cls(action_dim=action_dim, proprio_dim=proprio_dim, **settings)

    # -- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Primitives only (a custom encoder becomes a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DinoWMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DinoWM config fields {sorted(unknown)}; known: {sorted(known)}")
        values = dict(d)
        if isinstance(values.get("encoder"), Mapping):
            values["encoder"] = DINOv2Config(**values["encoder"])
        return cls(**values)


# --------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------


def pool_patches(features: Tensor, grid_size: int, pool: int) -> Tensor:
    """Average each pool x pool block of a row-major patch grid (`DinoWMConfig.patch_pool`).

    Shapes: features [M, g * g, D] -> [M, (g / pool)^2, D], still row-major.
    """
    if pool == 1:
        return features
    m, p, d = features.shape
    if p != grid_size * grid_size or grid_size % pool:
        raise ValueError(f"features with {p} patches are not a {grid_size} x {grid_size} grid divisible by pool={pool}")
    grid = features.transpose(1, 2).reshape(m, d, grid_size, grid_size)  # [M, D, g, g]
    return F.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)


def frame_causal_mask(num_frames: int, num_patches: int) -> Tensor:
    """Boolean attention mask, True where attention is allowed: token i (of frame
    i // P) sees token j iff frame(j) <= frame(i) (DINO-WM's frame-causal mask).

    Shapes: -> [num_frames * P, num_frames * P].
    """
    frame = torch.arange(num_frames * num_patches) // num_patches
    return frame.unsqueeze(1) >= frame.unsqueeze(0)


class _Attention(nn.Module):
    """Multi-head self-attention with an inner width heads x head_dim that differs from the
    token width (16 x 64 = 1024 vs 404 in the paper). Shapes: [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class FrameCausalPredictor(nn.Module):
    """DINO-WM's predictor: a ViT over a window of frames, each P tokens wide.

    A learned position embedding [1, history * P, C] marks both the patch and the frame
    of every token; the frame-causal mask (buffer `mask`, derived from the config, so not
    saved) lets a token see only its own and earlier frames, which makes the output at
    frame t a prediction of frame t + 1 that uses no later frame: one pass trains on
    every frame of the window (teacher forcing). A final LayerNorm ends the stack.

    Shapes: tokens [B, F * P, C] with F <= history -> [B, F * P, C].
    """

    def __init__(self, config: DinoWMConfig) -> None:
        super().__init__()
        self.num_patches, self.history = config.num_patches, config.history
        dim = config.token_dim
        self.pos_embed = nn.Parameter(torch.zeros(1, config.history * config.num_patches, dim))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            _Block(dim, config.num_heads, config.head_dim, config.mlp_dim, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("mask", frame_causal_mask(config.history, config.num_patches), persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """ViT init: truncated normal (std 0.02) position table and Linear weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        n = tokens.shape[1]
        if n % self.num_patches or not 0 < n <= self.history * self.num_patches:
            raise ValueError(
                f"predictor got {n} tokens; expected F * {self.num_patches} with 1 <= F <= history={self.history}"
            )
        x = self.drop(tokens + self.pos_embed[:, :n])
        mask = self.mask[:n, :n]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


# --------------------------------------------------------------------------------------
# Decoder (pictures only)
# --------------------------------------------------------------------------------------


class PatchDecoder(nn.Module):
    """Patch features back to an image, to look at what a latent holds.

    A 3x3 conv mixes neighbouring patches, a transposed conv with kernel = stride = patch
    size paints each patch's pixel block, and a final 3x3 conv smooths block edges.
    Sigmoid output in [0, 1]. Trained on detached features (`DinoWM.decoder_loss`), so it
    never changes the latent (the paper's decoder is likewise separate from the loss).

    Shapes: features [B, P, D] (row-major grid) -> images [B, 3, S, S].
    """

    def __init__(self, embed_dim: int, grid_size: int, patch_size: int, channels: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.net = nn.Sequential(
            nn.Conv2d(embed_dim, 2 * channels, 3, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(2 * channels, channels, kernel_size=patch_size, stride=patch_size),
            nn.GELU(),
            nn.Conv2d(channels, 3, 3, padding=1),
        )

    def forward(self, features: Tensor) -> Tensor:
        b, _, d = features.shape
        grid = features.transpose(1, 2).reshape(b, d, self.grid_size, self.grid_size)  # [B, D, g, g]
        return torch.sigmoid(self.net(grid))


# --------------------------------------------------------------------------------------
# The world model
# --------------------------------------------------------------------------------------


class DinoWM(nn.Module):
    """DINO-WM (Zhou et al., 2024): frozen DINOv2 patch features, tiled action and proprio
    embeddings, and a frame-causal ViT predicting the next frame's features.

    Planner protocol (DESIGN 3.4): `encode`, `observe`, `next`, `rollout`; no `reward`
    (goal-reaching only: plan with `dino_goal_objective` as the controller's objective
    factory). See the module docstring for the latent layout.

    The frozen encoder is held outside the module tree: it is not in `parameters()` or
    `state_dict()`, `train()` never touches it, and `.to()` moves it along. It is built on
    first use from `encoder_weights` (a DINOv2 weight file; None gives a random encoder
    with a warning) unless an `encoder` module is given; training from cached features
    never builds it.

    Args:
        config: the architecture.
        encoder: an already built frozen DINOv2 matching `config.encoder`.
        encoder_weights: path of the official DINOv2 checkpoint for `config.encoder`.

    Example:
        model = DinoWM(DinoWMConfig.cpu(action_dim=2, proprio_dim=0), encoder_weights="dinov2_vits14_pretrain.pth")
        ctrl = MPCController(model.eval(), CEM(action_dim=2, horizon=5), objective=dino_goal_objective)
        action = ctrl.act(frame_uint8, goal=goal_frame_uint8)
    """

    def __init__(
        self,
        config: DinoWMConfig,
        encoder: DinoVisionTransformer | None = None,
        encoder_weights: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        c = config
        self.action_encoder = nn.Linear(c.action_chunk_dim, c.action_emb_dim)
        self.proprio_encoder = nn.Linear(c.proprio_dim, c.proprio_emb_dim) if c.proprio_dim > 0 else None
        self.predictor = FrameCausalPredictor(c)
        # A pooled token covers patch_pool x patch_pool patches: the decoder paints that many pixels.
        self.decoder = (
            PatchDecoder(c.embed_dim, c.grid_size, c.patch_size * c.patch_pool, c.decoder_channels) if c.decoder else None
        )
        # Data-set statistics for z-scoring (the paper normalises actions and proprio);
        # saved with the model because the embeddings were trained on them.
        self.register_buffer("action_mean", torch.zeros(c.action_dim))
        self.register_buffer("action_std", torch.ones(c.action_dim))
        self.register_buffer("proprio_mean", torch.zeros(c.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(c.proprio_dim))
        self.encoder_weights = None if encoder_weights is None else str(encoder_weights)
        if encoder is not None:
            self._check_encoder(encoder)
            encoder.requires_grad_(False).eval()
        # Written into __dict__ so nn.Module does not register it as a child (keeps it out
        # of parameters(), state_dict() and train()).
        self.__dict__["_encoder"] = encoder
        # For MPCController: one observation is a CHW image (any H, W; resized).
        self.obs_shape = (3, c.image_size, c.image_size)

    # -- encoder ---------------------------------------------------------------------

    def _check_encoder(self, encoder: DinoVisionTransformer) -> None:
        cfg = self.config.encoder_config
        got = (int(encoder.embed_dim), int(encoder.patch_size))
        if got != (cfg.embed_dim, cfg.patch_size):
            raise ValueError(
                f"encoder has embed_dim={got[0]}, patch_size={got[1]}, but the config's encoder "
                f"{cfg.name} has embed_dim={cfg.embed_dim}, patch_size={cfg.patch_size}"
            )

    @property
    def encoder(self) -> DinoVisionTransformer:
        """The frozen DINOv2 (built from `encoder_weights` on first access)."""
        enc = self.__dict__["_encoder"]
        if enc is None:
            enc = build_dinov2(self.config.encoder_config, self.encoder_weights, device=self.action_mean.device)
            self.__dict__["_encoder"] = enc
        return enc

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DinoWM:  # type: ignore[override]
        # Device and dtype moves (.to(), .float(), ...) go through _apply; move the unregistered encoder too.
        super()._apply(fn, recurse)
        enc = self.__dict__.get("_encoder")
        if enc is not None:
            enc._apply(fn)
        return self

    @torch.no_grad()
    def encode_features(self, images: Tensor) -> Tensor:
        """Frozen patch features of frames: resize to image_size, normalise, DINOv2.

        Use it to cache a data set's features once, so training never runs the ViT.

        Shapes: images [..., 3, H, W] (uint8, or float in [0, 1]) -> [..., P, D].
        """
        if images.dim() < 3 or images.shape[-3] != 3:
            raise ValueError(f"expected images of shape [..., 3, H, W], got {tuple(images.shape)}")
        lead = images.shape[:-3]
        encoder = self.encoder
        x = preprocess_images(
            images.reshape(-1, *images.shape[-3:]), size=self.config.image_size,
            normalization=self.config.normalization, patch_size=self.config.patch_size,
        )
        features = encoder.patch_features(x.to(encoder.pos_embed.device, encoder.pos_embed.dtype))  # [M, Pe, D]
        features = pool_patches(features, self.config.encoder_grid_size, self.config.patch_pool)  # [M, P, D]
        return features.reshape(*lead, self.config.num_patches, self.config.embed_dim)

    # -- embeddings ------------------------------------------------------------------

    def action_chunk(self, actions: Tensor) -> Tensor:
        """Raw env actions of one model step -> z-scored chunk [..., A * fs].

        Accepts [..., A * fs] (fs actions concatenated, a_0 first) or [..., A] (repeated
        over the frameskip).
        """
        c = self.config
        size = actions.shape[-1]
        if size == c.action_chunk_dim:
            per_step = actions.reshape(*actions.shape[:-1], c.frameskip, c.action_dim)
        elif size == c.action_dim:
            per_step = actions.unsqueeze(-2).expand(*actions.shape[:-1], c.frameskip, c.action_dim)
        else:
            raise ValueError(
                f"actions have size {size} in their last dimension; expected action_dim={c.action_dim} (repeated "
                f"over frameskip={c.frameskip}) or action_dim * frameskip={c.action_chunk_dim}"
            )
        z = (per_step - self.action_mean) / self.action_std
        return z.reshape(*actions.shape[:-1], c.action_chunk_dim)

    def embed_actions(self, actions: Tensor) -> Tensor:
        """Shapes: raw actions [..., A or A * fs] -> [..., Ea]."""
        return self.action_encoder(self.action_chunk(actions))

    def embed_proprio(self, proprio: Tensor | None, lead: tuple[int, ...]) -> Tensor:
        """Shapes: raw proprio [*lead, Pd] (None: zeros) -> [*lead, Ep] ([*lead, 0] without proprio)."""
        c = self.config
        if self.proprio_encoder is None:
            return self.action_mean.new_zeros(*lead, 0)
        if proprio is None:
            proprio = self.action_mean.new_zeros(*lead, c.proprio_dim)
        if tuple(proprio.shape) != (*lead, c.proprio_dim):
            raise ValueError(f"proprio has shape {tuple(proprio.shape)}; expected {(*lead, c.proprio_dim)}")
        return self.proprio_encoder((proprio.to(self.proprio_mean.dtype) - self.proprio_mean) / self.proprio_std)

    def make_frames(self, features: Tensor, proprio: Tensor | None) -> Tensor:
        """Visual features and proprio -> predicted-frame layout (no action slot).

        Shapes: features [..., P, D], proprio [..., Pd] or None -> [..., P, L].
        """
        lead = tuple(features.shape[:-2])
        emb = self.embed_proprio(proprio, lead)  # [..., Ep]
        emb = emb.unsqueeze(-2).expand(*lead, features.shape[-2], emb.shape[-1])  # tiled over patches
        return torch.cat([features.to(emb.dtype), emb], dim=-1)

    def _with_action(self, frames: Tensor, action_emb: Tensor | None) -> Tensor:
        """[..., P, L] + [..., Ea] (None: the zero 'not chosen yet' slot) -> [..., P, C]."""
        shape = (*frames.shape[:-1], self.config.action_emb_dim)
        slot = frames.new_zeros(shape) if action_emb is None else action_emb.unsqueeze(-2).expand(shape)
        return torch.cat([frames, slot], dim=-1)

    @torch.no_grad()
    def set_normalization(
        self,
        action_mean: Tensor,
        action_std: Tensor,
        proprio_mean: Tensor | None = None,
        proprio_std: Tensor | None = None,
    ) -> None:
        """Set the z-scoring statistics (per env action dim [A], per proprio dim [Pd])
        from the training data; stds are floored at 1e-6."""
        self.action_mean.copy_(action_mean)
        self.action_std.copy_(action_std.clamp_min(1e-6))
        if proprio_mean is not None:
            self.proprio_mean.copy_(proprio_mean)
        if proprio_std is not None:
            self.proprio_std.copy_(proprio_std.clamp_min(1e-6))

    # -- planner protocol ------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(history, P, C)."""
        return self.config.latent_shape

    def _check_images(self, images: Tensor, name: str = "obs") -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} has shape {tuple(images.shape)}; expected images [M, 3, H, W]")

    def _check_latent(self, z: Tensor) -> None:
        if z.dim() != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"latent has shape {tuple(z.shape)}; expected [M, {', '.join(map(str, self.latent_shape))}]")

    def encode_frame(self, images: Tensor, proprio: Tensor | None = None) -> Tensor:
        """One frame's latent (action slot empty). Shapes: [M, 3, H, W], [M, Pd] -> [M, P, C]."""
        self._check_images(images)
        return self._with_action(self.make_frames(self.encode_features(images), proprio), None)

    def encode_obs(self, images: Tensor, proprio: Tensor | None = None) -> Tensor:
        """A fresh window: the frame repeated `history` times, the earlier copies holding
        the embedding of a zero env action (standing still fits a static, repeated frame).

        Shapes: images [M, 3, H, W] (uint8 or float [0, 1]), proprio [M, Pd] or None
        (zeros) -> z [M, history, P, C].
        """
        frame = self.encode_frame(images, proprio)  # [M, P, C]
        return self._start_window(frame)

    def _start_window(self, frame: Tensor) -> Tensor:
        m, hh = frame.shape[0], self.config.history
        still = self.embed_actions(frame.new_zeros(m, self.config.action_dim))  # [M, Ea]
        past = self._with_action(frame[..., : self.config.frame_dim], still)  # [M, P, C]
        return torch.cat([past.unsqueeze(1).expand(m, hh - 1, *past.shape[1:]), frame.unsqueeze(1)], dim=1)

    def latent_from_features(self, features: Tensor, proprio: Tensor | None, actions: Tensor) -> Tensor:
        """A latent from cached features of `history` consecutive frames, e.g. to evaluate
        open-loop predictions on a data set without running the encoder.

        Shapes: features [M, history, P, D], proprio [M, history, Pd] or None, actions
        [M, history - 1, A or A * fs] (actions[:, t] leads from frame t to t + 1)
        -> z [M, history, P, C].
        """
        c = self.config
        if features.dim() != 4 or tuple(features.shape[1:]) != (c.history, c.num_patches, c.embed_dim):
            raise ValueError(
                f"features have shape {tuple(features.shape)}; expected [M, {c.history}, {c.num_patches}, {c.embed_dim}]"
            )
        if actions.dim() != 3 or tuple(actions.shape[:2]) != (features.shape[0], c.history - 1):
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected [M={features.shape[0]}, {c.history - 1}, A]")
        frames = self.make_frames(features, proprio)  # [M, Hh, P, L]
        past = self._with_action(frames[:, :-1], self.embed_actions(actions))
        return torch.cat([past, self._with_action(frames[:, -1:], None)], dim=1)

    def encode(self, obs: Tensor) -> Tensor:
        """Images only (proprio taken as zeros; see `encode_obs`).

        Shapes: obs [M, 3, H, W] -> z [M, history, P, C].
        """
        return self.encode_obs(obs, None)

    def observe(self, z_prev: Tensor | None, action_prev: Tensor | None, obs: Tensor,
                proprio: Tensor | None = None) -> Tensor:
        """Slide the window: record the executed action in the last frame, append the new
        frame, drop the oldest. `z_prev` None (episode start) gives `encode_obs(obs)`.

        Shapes: z_prev [M, history, P, C], action_prev [M, A or A * fs], obs [M, 3, H, W]
        -> z [M, history, P, C].
        """
        if z_prev is None:
            return self.encode_obs(obs, proprio)
        if action_prev is None:
            raise ValueError("observe needs action_prev (the action executed since z_prev) when z_prev is given")
        self._check_latent(z_prev)
        frame = self.encode_frame(obs, proprio)  # [M, P, C]
        done = self._with_action(z_prev[:, -1, :, : self.config.frame_dim], self.embed_actions(action_prev))
        # Keep the newest `history` frames; with history 1 that is the new frame alone.
        window = torch.cat([z_prev[:, :-1], done.unsqueeze(1), frame.unsqueeze(1)], dim=1)
        return window[:, -self.config.history :]

    def _step(self, z: Tensor, action_emb: Tensor) -> tuple[Tensor, Tensor]:
        """One model step: fill the last frame's action slot, predict, slide.

        Shapes: z [M, Hh, P, C], action_emb [M, Ea] -> (window [M, Hh, P, C], frame [M, P, L]).
        """
        p, fd = self.config.num_patches, self.config.frame_dim
        last = self._with_action(z[:, -1, :, :fd], action_emb)  # [M, P, C]
        tokens = torch.cat([z[:, :-1], last.unsqueeze(1)], dim=1)  # [M, Hh, P, C]
        out = self.predictor(tokens.flatten(1, 2))  # [M, Hh * P, C]
        # The output at the last frame predicts the next frame; its action part is unused.
        frame = out[:, -p:, :fd]  # [M, P, L]
        window = torch.cat([tokens[:, 1:], self._with_action(frame, None).unsqueeze(1)], dim=1)
        return window, frame

    def _unroll(self, z: Tensor, actions: Tensor, keep_windows: bool) -> Tensor:
        self._check_latent(z)
        if actions.dim() != 3 or actions.shape[0] != z.shape[0]:
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected [M={z.shape[0]}, H, A]")
        emb = self.embed_actions(actions)  # [M, H, Ea]: all steps embedded at once
        outputs = []
        for t in range(actions.shape[1]):  # all candidates batched; only the horizon loops
            z, frame = self._step(z, emb[:, t])
            outputs.append(z if keep_windows else frame)
        return torch.stack(outputs, dim=1)

    def rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        """Autoregressive prediction of H model steps for all M rows at once.

        Shapes: z [M, history, P, C], actions [M, H, A or A * fs] -> windows
        [M, H, history, P, C] (windows[:, t] is the latent after actions[:, t]).
        """
        return self._unroll(z, actions, keep_windows=True)

    def predict_frames(self, z: Tensor, actions: Tensor) -> Tensor:
        """Like `rollout`, but only the predicted frames (much less memory: no windows).

        Shapes: z [M, history, P, C], actions [M, H, A or A * fs] -> [M, H, P, L].
        """
        return self._unroll(z, actions, keep_windows=False)

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """Shapes: z [M, history, P, C], action [M, A or A * fs] -> [M, history, P, C]."""
        return self.rollout(z, action.unsqueeze(1))[:, 0]

    def goal_latent(self, z: Tensor) -> Tensor:
        """What the goal objective compares: the last frame's visual + proprio channels.

        Shapes: [..., history, P, C] -> [..., P, L].
        """
        return z[..., -1, :, : self.config.frame_dim]

    # -- training --------------------------------------------------------------------

    def loss(self, features: Tensor, proprio: Tensor | None, actions: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced prediction loss (DINO-WM section 3): frames 0..T-2 in, one pass of
        the frame-causal predictor, MSE against frames 1..T-1's visual features and
        proprio embeddings. Targets are detached (stop-gradient, our choice) so the proprio
        encoder is shaped by being a useful input rather than by moving its own targets.

        Args:
            features: cached encoder features [B, T, P, D], 2 <= T <= history + 1.
            proprio: raw proprio [B, T, Pd] (None when proprio_dim is 0).
            actions: raw env actions [B, T or T - 1, A * fs or A]; actions[:, t] leads
                from frame t to frame t + 1 (a last one is ignored).

        Returns:
            total (visual + proprio), and the detached parts {"visual", "proprio"}.
        """
        c = self.config
        if features.dim() != 4 or tuple(features.shape[2:]) != (c.num_patches, c.embed_dim):
            raise ValueError(f"features have shape {tuple(features.shape)}; expected [B, T, {c.num_patches}, {c.embed_dim}]")
        b, t = features.shape[:2]
        if not 2 <= t <= c.history + 1:
            raise ValueError(f"features have T={t} frames; expected 2 <= T <= history + 1 = {c.history + 1}")
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[1] not in (t, t - 1):
            raise ValueError(f"actions have shape {tuple(actions.shape)}; expected [B={b}, T={t} or T-1, A]")
        frames = self.make_frames(features, proprio)  # [B, T, P, L]
        emb = self.embed_actions(actions[:, : t - 1])  # [B, T-1, Ea]
        tokens = self._with_action(frames[:, :-1], emb)  # [B, T-1, P, C]
        out = self.predictor(tokens.flatten(1, 2)).view(b, t - 1, c.num_patches, c.token_dim)
        target = frames[:, 1:].detach()  # [B, T-1, P, L]
        d = c.embed_dim
        visual = F.mse_loss(out[..., :d], target[..., :d])
        if c.proprio_emb_dim:
            proprio_loss = F.mse_loss(out[..., d : c.frame_dim], target[..., d:])
        else:
            proprio_loss = visual.new_zeros(())
        total = visual + proprio_loss
        return total, {"visual": visual.detach(), "proprio": proprio_loss.detach()}

    def decode(self, features: Tensor) -> Tensor:
        """Shapes: patch features [B, P, D] -> images [B, 3, S, S] in [0, 1]."""
        if self.decoder is None:
            raise ValueError("this model has no decoder; build it with DinoWMConfig(decoder=True)")
        return self.decoder(features)

    def decoder_loss(self, features: Tensor, images: Tensor) -> Tensor:
        """Pixel MSE of decoding detached features (pictures only; no gradient reaches
        the latent or the predictor).

        Shapes: features [B, P, D] (encoded or predicted), images [B, 3, H, W] (uint8 or
        float [0, 1]; resized to image_size) -> scalar.
        """
        self._check_images(images, "images")
        target = preprocess_images(images, size=self.config.image_size, normalization="minus_one_one",
                                   patch_size=self.config.patch_size)
        target = (target + 1.0) / 2.0  # [0, 1], as the decoder's sigmoid
        return F.mse_loss(self.decode(features.detach()), target.to(features.device))

    # -- checkpoints -----------------------------------------------------------------

    def checkpoint(self, **extra: Any) -> dict[str, Any]:
        """{format_version, model, config, state_dict, encoder}: tensors and primitives only
        (`torch.load(weights_only=True)`). The frozen encoder is not stored: `encoder`
        names it and the weight file it was built from."""
        return model_checkpoint(
            self, _MODEL_NAME, FORMAT_VERSION, self.config.to_dict(),
            encoder={
                "name": self.config.encoder_name,
                "weights": self.encoder_weights,
                "note": "frozen DINOv2, not stored here; load it with encoder_weights=<official weight file>",
            },
            **extra,
        )  # fmt: skip

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes `checkpoint()` atomically."""
        atomic_torch_save(self.checkpoint(), path)

    @staticmethod
    def _read_config(ckpt: Mapping[str, Any]) -> DinoWMConfig:
        return DinoWMConfig.from_dict(read_header(ckpt, _MODEL_NAME, FORMAT_VERSION))

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: Mapping[str, Any],
        encoder: DinoVisionTransformer | None = None,
        encoder_weights: str | os.PathLike[str] | None = None,
        action_dim: int | None = None,
        proprio_dim: int | None = None,
        device: str | torch.device = "cpu",
    ) -> DinoWM:
        """Rebuild a model (in eval mode) from `checkpoint()`.

        Args:
            ckpt: the checkpoint dict.
            encoder / encoder_weights: the frozen DINOv2, or its weight file; with neither,
                the path recorded in the checkpoint is used when that file exists.
            action_dim, proprio_dim: what the caller's task has; a mismatch raises.
            device: where the model goes: "cpu" (the default, as for every checkpoint
                loader here), "cuda", or "auto" (CUDA when available, else CPU).

        Raises:
            ValueError: another model, another format version, or a task mismatch (both
                values named).
        """
        config = cls._read_config(ckpt)
        for name, wanted in (("action_dim", action_dim), ("proprio_dim", proprio_dim)):
            if wanted is not None and wanted != getattr(config, name):
                raise ValueError(f"checkpoint has {name}={getattr(config, name)}, but the task has {name}={wanted}")
        if encoder is None and encoder_weights is None:
            recorded = (ckpt.get("encoder") or {}).get("weights")
            if recorded and Path(recorded).is_file():
                encoder_weights = recorded
            elif recorded:
                warnings.warn(
                    f"the checkpoint's encoder weights {recorded!r} are not there; pass encoder_weights=",
                    UserWarning, stacklevel=2,
                )
        model = cls(config, encoder=encoder, encoder_weights=encoder_weights)
        model.load_state_dict(ckpt["state_dict"])
        return model.to(resolve_device(device)).eval()

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> DinoWM:
        """`from_checkpoint(torch.load(path, weights_only=True), **kwargs)`."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"no DINO-WM checkpoint at {str(path)!r}")
        return cls.from_checkpoint(torch.load(path, map_location="cpu", weights_only=True), **kwargs)

    def load_checkpoint(self, ckpt: Mapping[str, Any]) -> None:
        """Load weights into this model; the checkpoint's config must build the same
        network (dropout may differ).

        Raises:
            ValueError: another model, or differing config fields (each named with the
                checkpoint's and this model's value).
        """
        config = self._read_config(ckpt)
        theirs, ours = config.to_dict(), self.config.to_dict()
        differ = sorted(k for k in ours if k != "dropout" and theirs[k] != ours[k])
        if differ:
            pairs = ", ".join(f"{k}: {theirs[k]!r} vs {ours[k]!r}" for k in differ)
            raise ValueError(f"checkpoint config differs from this model's (checkpoint vs model): {pairs}")
        self.load_state_dict(ckpt["state_dict"])


# --------------------------------------------------------------------------------------
# Loading a model trained by training.dino_wm_trainer
# --------------------------------------------------------------------------------------


def random_encoder(config: DinoWMConfig, seed: int, device: str | torch.device = "cpu") -> DinoVisionTransformer:
    """A randomly initialised frozen DINOv2 of `config.encoder`, a pure function of `seed`.

    Built on the CPU under a private RNG (the global RNG is left as it was), then moved, so
    the same seed gives the same encoder on any device: a run, its resume and a later
    `load_trained_dinowm` all see the same features. Warns that the features are not
    DINOv2's (the warning comes from `build_dinov2`).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_dinov2(config.encoder_config, None, device="cpu")
    return encoder.to(resolve_device(device))


def load_trained_dinowm(
    path: str | os.PathLike[str],
    encoder_weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> DinoWM:
    """Load a `model.pt` written by `training.dino_wm_trainer.DinoWMTrainer` (in eval mode).

    A model trained on the official encoder needs its weight file: `encoder_weights`, or
    the path recorded in the checkpoint when that file exists. A model trained on a random
    encoder rebuilds that same encoder from the recorded seed (`random_encoder`). The
    file's `planning` entry, when it has one, becomes `model.planning` (the goal
    objective's settings to use where no flag says otherwise).

    Args:
        path: the model file.
        encoder_weights: the official DINOv2 weight file, when not the recorded one.
        device: "cpu" (the default), "cuda", or "auto" (CUDA when available, else CPU).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: not a DINO-WM checkpoint (see `DinoWM.from_checkpoint`).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no DINO-WM checkpoint at {str(path)!r}")
    device = resolve_device(device)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    recorded = (ckpt.get("encoder") or {}).get("weights") if isinstance(ckpt, Mapping) else None
    encoder = None
    if (encoder_weights is None and recorded is None and isinstance(ckpt, Mapping) and "random_encoder_seed" in ckpt
            and ckpt.get("model") == _MODEL_NAME and "config" in ckpt):
        config = DinoWMConfig.from_dict(ckpt["config"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the checkpoint says so; the trainer warned at training time
            encoder = random_encoder(config, int(ckpt["random_encoder_seed"]), device=device)
    model = DinoWM.from_checkpoint(ckpt, encoder=encoder, encoder_weights=encoder_weights, device=device)
    # The goal-objective settings this file plans best with (a shipped file records them;
    # see training.run_export.ship_dinowm); command-line flags override them.
    model.planning = dict(ckpt.get("planning") or {})
    return model


# -- the registry's entry points (models.registry) ------------------------------------------


def load_for_planning(
    path: str | os.PathLike[str],
    env: Any = None,
    device: str | torch.device = "auto",
    encoder_weights: str | os.PathLike[str] | None = None,
) -> DinoWM:
    """`load_trained_dinowm`, checked against `env`'s action size when given (the planner
    plans `frameskip` env actions per model step)."""
    model = load_trained_dinowm(path, encoder_weights=encoder_weights, device=device)
    if env is not None and int(env.action_space.shape[0]) != model.config.action_dim:
        raise ValueError(f"{path}: checkpoint has action_dim {model.config.action_dim}, but the task gives "
                         f"{int(env.action_space.shape[0])}")
    return model


def tiny_case() -> Any:
    """A tiny DINO-WM (random frozen encoder, 28 px, no proprio) planning to a goal image.
    Saved with the seed of its random encoder, so `load` rebuilds the same encoder."""
    from models.checkpoints import atomic_torch_save
    from models.objectives import dino_goal_objective
    from models.planning import EnvShapes, TinyCase

    torch.manual_seed(0)
    config = DinoWMConfig.tiny(2, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random encoder is what the tiny case wants
        model = DinoWM(config, encoder=random_encoder(config, seed=0)).eval()
    frames = torch.randint(0, 256, (2, 3, config.image_size, config.image_size),
                           generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return TinyCase(model=model, obs=frames[0], goal=frames[1], action_dim=config.action_chunk_dim, objective="goal",
                    save=lambda path: atomic_torch_save(model.checkpoint(random_encoder_seed=0), path),
                    env=EnvShapes(model.obs_shape, config.action_dim),
                    controller_kwargs={"objective": dino_goal_objective})
