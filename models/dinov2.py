"""DINOv2 vision transformers (Oquab et al., 2023, "DINOv2: Learning Robust Visual Features
without Supervision"), written for this project and interchangeable with the official ones.

The modules have the official parameter names and shapes, so the released checkpoints
(`dinov2_vits14_pretrain.pth`, ...) load with strict key matching, and they compute the
same function: pre-norm ViT blocks with LayerScale, exact GELU MLPs (SwiGLU for ViT-g),
LayerNorm eps 1e-6, a learned position table for 518 px images (37 x 37 patches + CLS)
that is resized bicubically to the input's patch grid, and the official output dict of
`forward_features`. DINO-WM (Zhou et al., 2024) uses the ViT-S/14 patch tokens after the
final LayerNorm as its frozen latent (`patch_features`).

Example:
    encoder = dinov2_vits14(weights="dinov2_vits14_pretrain.pth")
    x = preprocess_images(frames_uint8, size=224)          # [B, 3, 224, 224], ImageNet-normalised
    tokens = encoder.patch_features(x)                      # [B, 256, 384]

Shapes: B images, C = 3 channels, H x W pixels (multiples of 14), P = (H/14) * (W/14)
patch tokens (row-major over the patch grid), D the embedding width, T = 1 + P tokens.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from planners.controller import resolve_device

__all__ = [
    "DINOV2_CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VITB14",
    "VITG14",
    "VITL14",
    "VITS14",
    "DINOv2Config",
    "DinoVisionTransformer",
    "build_dinov2",
    "dinov2_vitb14",
    "dinov2_vitg14",
    "dinov2_vitl14",
    "dinov2_vits14",
    "interpolate_pos_encoding",
    "load_dinov2_state_dict",
    "preprocess_images",
]

# The statistics DINOv2 was trained with (torchvision's ImageNet constants).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DINOv2Config:
    """Architecture of one DINOv2 ViT (the official hub settings, no register tokens).

    Attributes:
        name: human-readable architecture name, used in error messages.
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads; D must be divisible by it.
        mlp_ratio: FFN hidden width / D (before SwiGLU's 2/3 rescaling).
        ffn: "mlp" (fc1 -> GELU -> fc2) or "swiglu" (ViT-g: w12 -> SiLU gate -> w3).
        patch_size: square patch side in pixels.
        img_size: side of the square image the position table was trained for (518 ->
            a 37 x 37 grid; the table has 1 + 37 * 37 = 1370 rows).
        in_chans: image channels.
        layerscale_init: initial LayerScale gamma for a random init (DINOv2 training
            default 1e-5; pretrained weights overwrite it).
        norm_eps: LayerNorm epsilon.
        qkv_bias: bias in the qkv projection (the official models have it).
        interpolate_offset: the official work-around added to the target grid before
            turning it into a scale factor (0.1 for the models without registers; 0 means
            "interpolate to an explicit output size" instead).
        interpolate_antialias: antialias flag of the bicubic resize (False without
            registers).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    ffn: Literal["mlp", "swiglu"] = "mlp"
    patch_size: int = 14
    img_size: int = 518
    in_chans: int = 3
    layerscale_init: float = 1e-5
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    interpolate_offset: float = 0.1
    interpolate_antialias: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}"
            )
        if self.img_size % self.patch_size != 0:
            raise ValueError(
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.ffn not in ("mlp", "swiglu"):
            raise ValueError(f"unknown ffn {self.ffn!r}; accepted: 'mlp', 'swiglu'")

    @property
    def grid_size(self) -> int:
        """Side of the square patch grid the position table covers (37 for 518 / 14)."""
        return self.img_size // self.patch_size

    @property
    def num_pos_tokens(self) -> int:
        """Rows of the position table: CLS + grid_size**2 (1370 for the official models)."""
        return 1 + self.grid_size**2

    @property
    def ffn_hidden_dim(self) -> int:
        """FFN hidden width; SwiGLU keeps the parameter count of the MLP it replaces (2/3
        of the hidden width, rounded up to a multiple of 8, as in the official layer)."""
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.ffn == "swiglu":
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden


VITS14 = DINOv2Config(name="ViT-S/14", embed_dim=384, depth=12, num_heads=6)
VITB14 = DINOv2Config(name="ViT-B/14", embed_dim=768, depth=12, num_heads=12)
VITL14 = DINOv2Config(name="ViT-L/14", embed_dim=1024, depth=24, num_heads=16)
# ViT-g/14 ("giant2"): 1536 wide, 24 heads of 64, SwiGLU FFN.
VITG14 = DINOv2Config(name="ViT-g/14", embed_dim=1536, depth=40, num_heads=24, ffn="swiglu")

DINOV2_CONFIGS: dict[str, DINOv2Config] = {
    "vits14": VITS14,
    "vitb14": VITB14,
    "vitl14": VITL14,
    "vitg14": VITG14,
}


# --------------------------------------------------------------------------------------
# Position table
# --------------------------------------------------------------------------------------


def interpolate_pos_encoding(
    pos_embed: Tensor,
    grid_h: int,
    grid_w: int,
    *,
    offset: float = 0.1,
    antialias: bool = False,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Resize a [CLS + M x M] position table to a grid_h x grid_w patch grid, as DINOv2 does.

    The numbers equal the official `interpolate_pos_encoding`: when the grid is the
    table's own square grid the table is returned untouched (same tensor, same dtype).
    Otherwise the patch part is resized in float32 by bicubic `F.interpolate`; with a
    non-zero `offset` the target is given as a scale factor ((grid + offset) / M per
    axis) rather than a size. Bicubic interpolation maps output pixels back to input
    coordinates with that scale, so the offset changes the values slightly; it is kept
    because the released weights were evaluated this way (the offset originally avoided
    a floating-point rounding of the output size, DINO issue #8). `offset=0` asks for
    the explicit size instead (the official setting for the register models).
    The CLS row is never resized.

    Args:
        pos_embed: the table, [1, 1 + M*M, D].
        grid_h: patch rows of the input (H / patch size).
        grid_w: patch columns of the input (W / patch size).
        offset: the official `interpolate_offset` (0.1 for DINOv2 without registers).
        antialias: the official `interpolate_antialias` (False without registers).
        dtype: dtype of a resized result (the official code casts to the token dtype);
            None keeps `pos_embed.dtype`.

    Returns:
        [1, 1 + grid_h * grid_w, D], patch rows in row-major grid order.
    """
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise ValueError(f"position table has {n} patch rows, which is not a square grid")
    if grid_h == m and grid_w == m:
        return pos_embed
    out_dtype = pos_embed.dtype if dtype is None else dtype
    # float32 because bicubic resizing is not implemented for every low-precision dtype
    # and the official code resizes in float32 before casting back.
    table = pos_embed.float()
    cls_row = table[:, :1]
    grid = rearrange(table[:, 1:], "1 (gh gw) d -> 1 d gh gw", gh=m)  # [1, D, M, M], row-major patches
    if offset:
        resized = F.interpolate(
            grid,
            scale_factor=(float(grid_h + offset) / m, float(grid_w + offset) / m),
            mode="bicubic",
            antialias=antialias,
        )
    else:
        resized = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=antialias)
    if tuple(resized.shape[-2:]) != (grid_h, grid_w):  # guards the scale-factor rounding
        raise RuntimeError(
            f"position table resized to {tuple(resized.shape[-2:])}, expected {(grid_h, grid_w)}"
        )
    patch_rows = rearrange(resized, "1 d gh gw -> 1 (gh gw) d")  # [1, grid_h * grid_w, D]
    return torch.cat((cls_row, patch_rows), dim=1).to(out_dtype)


# --------------------------------------------------------------------------------------
# Layers (module and parameter names follow the official checkpoint layout)
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens with one strided convolution (`proj`).

    Shapes: [B, C, H, W] -> [B, P, D].
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h*w, D]


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    The qkv output is laid out as [3, heads, head_dim] along the feature axis (the
    official split), so pretrained qkv weights keep their meaning.

    Shapes: [B, T, D] -> [B, T, D].
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        qkv = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)  # each [B, heads, T, head_dim]
        # SDPA's default scale is head_dim ** -0.5, the ViT scale.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h t d -> b t (h d)"))  # heads merged: [B, T, D]


class LayerScale(nn.Module):
    """Per-channel residual scaling `gamma * x` (Touvron et al., 2021, CaiT)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2, the FFN of ViT-S/B/L."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU FFN of ViT-g (Shazeer, 2020): w3(SiLU(x1) * x2) with [x1, x2] = w12(x)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(ffn(norm2(x))).

    Stochastic depth and dropout are training-only (rate 0 in inference) and omitted.

    Shapes: [B, T, D] -> [B, T, D].
    """

    def __init__(self, config: DINOv2Config) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = Attention(dim, config.num_heads, qkv_bias=config.qkv_bias)
        self.ls1 = LayerScale(dim, config.layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        ffn_cls = SwiGLUFFN if config.ffn == "swiglu" else Mlp
        self.mlp = ffn_cls(dim, config.ffn_hidden_dim)
        self.ls2 = LayerScale(dim, config.layerscale_init)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------
# The vision transformer
# --------------------------------------------------------------------------------------


class DinoVisionTransformer(nn.Module):
    """A DINOv2 ViT (Oquab et al., 2023) with the official parameter layout and outputs.

    Parameters: `cls_token` [1, 1, D], `pos_embed` [1, 1 + M*M, D], `mask_token` [1, D],
    `patch_embed.proj`, `blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
    mlp.fc1, mlp.fc2 (or mlp.w12, mlp.w3), ls2.gamma}`, `norm`. `head` is the identity.

    Inputs are float images [B, 3, H, W], already normalised (see `preprocess_images`),
    with H and W multiples of the patch size.
    """

    def __init__(self, config: DINOv2Config) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        # Attribute names the official module exposes, for drop-in use.
        self.embed_dim = self.num_features = d
        self.patch_size = config.patch_size
        self.num_heads = config.num_heads
        self.n_blocks = config.depth
        self.num_tokens = 1
        self.num_register_tokens = 0
        self.interpolate_offset = config.interpolate_offset
        self.interpolate_antialias = config.interpolate_antialias

        self.patch_embed = PatchEmbed(config.patch_size, config.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_pos_tokens, d))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, d))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official (timm ViT) random init: truncated normal (std 0.02) for the
        position table and every Linear weight, zero Linear biases, CLS ~ N(0, 1e-6),
        zero mask token; the patch convolution keeps PyTorch's default init."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    # ---- tokens ---------------------------------------------------------------------

    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected images of shape [B, {self.config.in_chans}, H, W], got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"expected float images (normalised, see preprocess_images), got dtype {images.dtype}"
            )
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} (HxW) is not supported: height and width must each be a "
                f"multiple of {p} (the patch size), e.g. 224 or 196"
            )

    def interpolate_pos_encoding(self, x: Tensor, height: int, width: int) -> Tensor:
        """The position table for tokens `x` [B, 1 + P, D] of a `height` x `width` image
        (pixels), shaped [1, 1 + P, D]; see the module-level `interpolate_pos_encoding`."""
        return interpolate_pos_encoding(
            self.pos_embed,
            height // self.patch_size,
            width // self.patch_size,
            offset=self.interpolate_offset,
            antialias=self.interpolate_antialias,
            dtype=x.dtype,
        )

    def prepare_tokens_with_masks(self, images: Tensor, masks: Tensor | None = None) -> Tensor:
        """Patch tokens (optionally replaced by the mask token), CLS prepended, positions added.

        Shapes: images [B, C, H, W], masks [B, P] bool (True = masked) -> [B, 1 + P, D].
        """
        self._check_images(images)
        b, _, h, w = images.shape
        x = self.patch_embed(images)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)
        return x + self.interpolate_pos_encoding(x, h, w)

    # ---- outputs --------------------------------------------------------------------

    def forward_features(self, images: Tensor, masks: Tensor | None = None) -> dict[str, Tensor | None]:
        """All final features, in the official dict.

        Args:
            images: [B, C, H, W] normalised float images; H, W multiples of 14.
            masks: optional [B, P] bool, patches to replace by `mask_token` (iBOT-style).

        Returns:
            x_norm_clstoken [B, D], x_norm_regtokens [B, 0, D] (no registers),
            x_norm_patchtokens [B, P, D], x_prenorm [B, 1 + P, D] (before the final
            LayerNorm), masks (the argument, None by default).
        """
        x = self.prepare_tokens_with_masks(images, masks)
        for block in self.blocks:
            x = block(x)
        x_norm = self.norm(x)
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1:1],
            "x_norm_patchtokens": x_norm[:, 1:],
            "x_prenorm": x,
            "masks": masks,
        }

    def forward(
        self, images: Tensor, masks: Tensor | None = None, *, is_training: bool = False
    ) -> Tensor | dict[str, Tensor | None]:
        """CLS token after the final LayerNorm, [B, D] (the official head is the identity);
        with `is_training=True` the `forward_features` dict, as in the official module."""
        features = self.forward_features(images, masks)
        if is_training:
            return features
        return self.head(features["x_norm_clstoken"])

    def patch_features(self, images: Tensor) -> Tensor:
        """Patch tokens after the final LayerNorm, [B, P, D] with P = (H/14) * (W/14) in
        row-major grid order: the frozen latent of DINO-WM (Zhou et al., 2024)."""
        return self.forward_features(images)["x_norm_patchtokens"]  # type: ignore[return-value]

    def get_intermediate_layers(
        self,
        images: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple[Any, ...]:
        """Outputs of chosen blocks, as the official method.

        Args:
            images: [B, C, H, W].
            n: the last `n` blocks (int) or these block indices (sequence).
            reshape: return patch tokens as [B, D, H/14, W/14] maps instead of [B, P, D].
            return_class_token: pair each output with its CLS token [B, D].
            norm: apply the final LayerNorm to each output.

        Returns:
            one entry per chosen block, in block order.
        """
        depth = len(self.blocks)
        wanted = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        bad = sorted(i for i in wanted if not 0 <= i < depth)
        if bad:
            raise ValueError(f"block indices {bad} out of range for a {depth}-block model")
        x = self.prepare_tokens_with_masks(images)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                outputs.append(self.norm(x) if norm else x)
        class_tokens = [out[:, 0] for out in outputs]
        patches = [out[:, 1:] for out in outputs]
        if reshape:
            b, _, h, w = images.shape
            gh, gw = h // self.patch_size, w // self.patch_size
            patches = [p.reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous() for p in patches]
        if return_class_token:
            return tuple(zip(patches, class_tokens))
        return tuple(patches)


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")
# Official training checkpoints with `block_chunks > 0` nest blocks as blocks.{chunk}.{i}.
_CHUNKED_BLOCK_KEY = re.compile(r"^blocks\.\d+\.(\d+)\.")


def _describe(embed_dim: int | None, depth: int | None) -> str:
    for config in DINOV2_CONFIGS.values():
        if config.embed_dim == embed_dim and config.depth == depth:
            return f"{config.name} (embed_dim={embed_dim}, depth={depth})"
    return f"an unknown ViT (embed_dim={embed_dim}, depth={depth})"


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dict inside a checkpoint: raw, or under "model" / "state_dict"; chunked
    block keys (blocks.{chunk}.{i}.*) flattened to blocks.{i}.*."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"{path} is not a DINOv2 state dict: expected a dict of tensors (raw, or under "
            f"'model' or 'state_dict')"
        )
    state = dict(obj)
    if any(_CHUNKED_BLOCK_KEY.match(k) for k in state):
        state = {_CHUNKED_BLOCK_KEY.sub(r"blocks.\1.", k): v for k, v in state.items()}
    return state


def load_dinov2_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a DINOv2 checkpoint file (tensors only, `weights_only=True`) onto the CPU.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file holds no tensor dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"DINOv2 weights file not found: {path} (e.g. dinov2_vits14_pretrain.pth from the "
            f"official release)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; name the file.
        raise ValueError(f"could not read DINOv2 weights from {path}: {exc}") from exc
    return _unwrap_state_dict(obj, path)


def _check_architecture(state: Mapping[str, Tensor], config: DINOv2Config, path: Path) -> None:
    """Fail with both architectures named when the file was made for another ViT."""
    pos = state.get("pos_embed")
    embed_dim = int(pos.shape[-1]) if pos is not None and pos.dim() == 3 else None
    indices = [int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))]
    depth = max(indices) + 1 if indices else None
    if embed_dim != config.embed_dim or depth != config.depth:
        raise ValueError(
            f"weights in {path} are for {_describe(embed_dim, depth)}, but the model is "
            f"{config.name} (embed_dim={config.embed_dim}, depth={config.depth}); "
            f"use the matching dinov2_* constructor"
        )
    if any(k.startswith("register_tokens") for k in state):
        raise ValueError(
            f"weights in {path} have register tokens (a *_reg checkpoint); only DINOv2 "
            f"without registers is supported"
        )


def _load_into(model: DinoVisionTransformer, state: Mapping[str, Tensor], path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        raise ValueError(
            f"weights in {path} do not match the {model.config.name} layout; " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def build_dinov2(
    config: DINOv2Config,
    weights: str | Path | None = None,
    *,
    device: str | torch.device = "auto",
) -> DinoVisionTransformer:
    """A frozen (eval mode, no parameter requires grad) DINOv2 encoder.

    Args:
        config: the architecture (`VITS14`, ... or a custom `DINOv2Config`).
        weights: path of an official checkpoint (`dinov2_vits14_pretrain.pth`, ...) or
            of a dict holding one under "model" / "state_dict"; keys must match exactly.
            None gives a random init and a warning: its features are not DINOv2's.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda", ...

    Raises:
        FileNotFoundError: `weights` names no file.
        ValueError: the file is for another architecture (both are named) or its keys
            or shapes differ from the official layout.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        # Read and check before building: a mismatch fails fast, without a wasted init.
        state = load_dinov2_state_dict(path)
        _check_architecture(state, config, path)
        model = DinoVisionTransformer(config)
        _load_into(model, state, path)
    else:
        model = DinoVisionTransformer(config)
        warnings.warn(
            f"DINOv2 {config.name} encoder is randomly initialised (no weights file given): "
            f"its features are not pretrained DINOv2 features. Pass weights=<path to "
            f"the official *_pretrain.pth> for real features.",
            UserWarning,
            stacklevel=3,
        )
    model.requires_grad_(False)
    return model.eval().to(resolve_device(device))


def dinov2_vits14(
    weights: str | Path | None = None, *, device: str | torch.device = "auto"
) -> DinoVisionTransformer:
    """Frozen DINOv2 ViT-S/14 (384 wide, 12 blocks, 6 heads; 22M parameters), the DINO-WM
    encoder. See `build_dinov2` for the arguments and errors."""
    return build_dinov2(VITS14, weights, device=device)


def dinov2_vitb14(
    weights: str | Path | None = None, *, device: str | torch.device = "auto"
) -> DinoVisionTransformer:
    """Frozen DINOv2 ViT-B/14 (768 wide, 12 blocks, 12 heads). See `build_dinov2`."""
    return build_dinov2(VITB14, weights, device=device)


def dinov2_vitl14(
    weights: str | Path | None = None, *, device: str | torch.device = "auto"
) -> DinoVisionTransformer:
    """Frozen DINOv2 ViT-L/14 (1024 wide, 24 blocks, 16 heads). See `build_dinov2`."""
    return build_dinov2(VITL14, weights, device=device)


def dinov2_vitg14(
    weights: str | Path | None = None, *, device: str | torch.device = "auto"
) -> DinoVisionTransformer:
    """Frozen DINOv2 ViT-g/14 (1536 wide, 40 blocks, 24 heads, SwiGLU FFN with `mlp.w12`
    / `mlp.w3`). See `build_dinov2`."""
    return build_dinov2(VITG14, weights, device=device)


# --------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------

Normalization = Literal["imagenet", "minus_one_one"]
Interpolation = Literal["bilinear", "bicubic"]


def preprocess_images(
    images: Tensor,
    size: int | tuple[int, int] = 224,
    *,
    normalization: Normalization = "imagenet",
    interpolation: Interpolation = "bicubic",
    antialias: bool = True,
    patch_size: int = 14,
) -> Tensor:
    """Environment frames -> encoder input: resize, then normalise.

    `"imagenet"` subtracts the ImageNet mean and divides by the std per channel, the
    input statistics DINOv2 was trained with (Oquab et al., 2023). `"minus_one_one"`
    maps [0, 1] to [-1, 1] (x * 2 - 1), which is what DINO-WM does before its frozen
    DINOv2 encoder (196 x 196 images -> 14 x 14 = 196 patch tokens; see
    shared/ANCHORS.md), so use it to reproduce DINO-WM.

    Args:
        images: [..., 3, H, W] uint8 in [0, 255] or float in [0, 1] (any leading dims).
        size: output side, or (height, width); each a multiple of `patch_size`.
        normalization: "imagenet" or "minus_one_one".
        interpolation: "bicubic" or "bilinear" resizing; skipped when already at `size`.
        antialias: low-pass filter when downsampling (as PIL/torchvision resizing does),
            so small renders do not alias.
        patch_size: the encoder's patch size, to check `size`.

    Returns:
        float32 [..., 3, size_h, size_w].
    """
    if normalization not in ("imagenet", "minus_one_one"):
        raise ValueError(
            f"unknown normalization {normalization!r}; accepted: 'imagenet', 'minus_one_one'"
        )
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"unknown interpolation {interpolation!r}; accepted: 'bilinear', 'bicubic'")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if out_h % patch_size or out_w % patch_size:
        raise ValueError(
            f"size {out_h}x{out_w} is not supported: height and width must each be a multiple "
            f"of {patch_size} (the patch size), e.g. 224 or 196"
        )
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"expected images of shape [..., 3, H, W], got {tuple(images.shape)}")
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:])  # [M, 3, H, W]
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.is_floating_point():
        x = x.float()
    else:
        raise ValueError(f"expected uint8 or float images, got dtype {images.dtype}")
    if tuple(x.shape[-2:]) != (out_h, out_w):
        x = F.interpolate(
            x, size=(out_h, out_w), mode=interpolation, align_corners=False, antialias=antialias
        )
        # Bicubic overshoots at edges; the input range was [0, 1], keep it so.
        x = x.clamp_(0.0, 1.0)
    if normalization == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    else:
        x = x * 2.0 - 1.0
    return x.reshape(*lead, 3, out_h, out_w)
