"""Our DINOv2 ViTs (models/dinov2.py) against independent restatements of the official ones.

The references here are written from the official facts (Oquab et al., 2023; the
facebookresearch/dinov2 checkpoint layout and `interpolate_pos_encoding` formula), not by
calling the module under test, so a regression in the module shows up as a mismatch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.dinov2 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VITB14,
    VITG14,
    VITL14,
    DINOv2Config,
    DinoVisionTransformer,
    build_dinov2,
    dinov2_vits14,
    interpolate_pos_encoding,
    preprocess_images,
)

PATCH = 14
# Tiny but complete: 2 heads, LayerScale, a 7 x 7 position table to resize.
TINY = DINOv2Config(name="tiny", embed_dim=32, depth=2, num_heads=2, img_size=98)


def vits14_official_shapes() -> dict[str, tuple[int, ...]]:
    """The key -> shape table of dinov2_vits14_pretrain.pth, written out by hand."""
    d, hidden, depth = 384, 4 * 384, 12
    table: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + 37 * 37, d),
        "mask_token": (1, d),
        "patch_embed.proj.weight": (d, 3, 14, 14),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        table.update(
            {
                p + "norm1.weight": (d,),
                p + "norm1.bias": (d,),
                p + "attn.qkv.weight": (3 * d, d),
                p + "attn.qkv.bias": (3 * d,),
                p + "attn.proj.weight": (d, d),
                p + "attn.proj.bias": (d,),
                p + "ls1.gamma": (d,),
                p + "norm2.weight": (d,),
                p + "norm2.bias": (d,),
                p + "mlp.fc1.weight": (hidden, d),
                p + "mlp.fc1.bias": (hidden,),
                p + "mlp.fc2.weight": (d, hidden),
                p + "mlp.fc2.bias": (d,),
                p + "ls2.gamma": (d,),
            }
        )
    return table


def official_pos_encoding(pos_embed: torch.Tensor, h: int, w: int, offset: float = 0.1) -> torch.Tensor:
    """The official resizing restated: identity at the native square grid, else bicubic
    F.interpolate of the float32 patch table with scale_factor (grid + offset) / M."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    gh, gw = h // PATCH, w // PATCH
    if gh * gw == n and h == w:
        return pos_embed
    table = pos_embed.float()
    dim = table.shape[-1]
    grid = table[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid, scale_factor=(float(gh + offset) / m, float(gw + offset) / m), mode="bicubic", antialias=False
    )
    assert out.shape[-2:] == (gh, gw)
    return torch.cat((table[:, :1], out.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)), dim=1)


def randomise(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Non-trivial values everywhere (LN affine, biases, LayerScale far from 1e-5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


def reference_forward(sd: dict[str, torch.Tensor], images: torch.Tensor, depth: int, heads: int) -> dict:
    """A plain restatement of the DINOv2 ViT forward from state-dict tensors."""

    def ln(x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-6) * sd[prefix + ".weight"] + sd[prefix + ".bias"]

    def linear(x, prefix):
        return x @ sd[prefix + ".weight"].T + sd[prefix + ".bias"]

    b, c, h, w = images.shape
    gh, gw = h // PATCH, w // PATCH
    # Patch embedding as a matmul over unfolded patches (not a convolution).
    patches = images.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)  # [B, C, gh, gw, 14, 14]
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, gh * gw, c * PATCH * PATCH)
    wconv = sd["patch_embed.proj.weight"]
    x = patches @ wconv.reshape(wconv.shape[0], -1).T + sd["patch_embed.proj.bias"]
    x = torch.cat([sd["cls_token"].expand(b, 1, -1), x], dim=1)
    x = x + official_pos_encoding(sd["pos_embed"], h, w)
    d = x.shape[-1]
    hd = d // heads
    for i in range(depth):
        p = f"blocks.{i}."
        y = linear(ln(x, p + "norm1"), p + "attn.qkv")  # [B, T, 3D] laid out (3, heads, hd)
        q, k, v = y.reshape(b, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + sd[p + "ls1.gamma"] * linear(o, p + "attn.proj")
        y = linear(ln(x, p + "norm2"), p + "mlp.fc1")
        y = 0.5 * y * (1.0 + torch.erf(y / math.sqrt(2.0)))  # exact GELU
        x = x + sd[p + "ls2.gamma"] * linear(y, p + "mlp.fc2")
    xn = ln(x, "norm")
    return {"x_norm_clstoken": xn[:, 0], "x_norm_patchtokens": xn[:, 1:], "x_prenorm": x}


@pytest.fixture(scope="module")
def tiny() -> DinoVisionTransformer:
    model = DinoVisionTransformer(TINY).eval()
    randomise(model)
    return model


# ---- 1. checkpoint layout --------------------------------------------------------------


def test_vits14_loads_an_official_layout_state_dict_strictly(tmp_path):
    shapes = vits14_official_shapes()
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)

    model = dinov2_vits14(weights=path, device="cpu")
    loaded = model.state_dict()
    assert {k: tuple(v.shape) for k, v in loaded.items()} == shapes
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    assert sum(v.numel() for v in loaded.values()) == 22_056_576  # ViT-S/14's 22M

    out = model.forward_features(torch.randn(1, 3, 28, 28))
    assert out["x_norm_patchtokens"].shape == (1, 4, 384)
    assert out["x_norm_clstoken"].shape == (1, 384)


def test_checkpoint_under_model_key_loads(tmp_path, tiny):
    path = tmp_path / "wrapped.pth"
    torch.save({"model": tiny.state_dict(), "step": 3}, path)
    model = build_dinov2(TINY, path, device="cpu")
    for k, v in tiny.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


@pytest.mark.parametrize(
    "config, params_millions",
    [(VITB14, 86.6), (VITL14, 304.4), (VITG14, 1136.5)],
)
def test_larger_configs_have_the_published_sizes(config, params_millions):
    with torch.device("meta"):  # shapes only, no memory
        model = DinoVisionTransformer(config)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e6 - params_millions) < 0.1
    assert model.pos_embed.shape == (1, 1370, config.embed_dim)
    keys = set(model.state_dict())
    ffn = ["mlp.w12.weight", "mlp.w3.weight"]
    if config.ffn == "mlp":
        ffn = ["mlp.fc1.weight", "mlp.fc2.weight"]
    assert {f"blocks.{config.depth - 1}.{k}" for k in ffn} <= keys


# ---- 2. output shapes --------------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(14, 14), (28, 42), (56, 56), (224, 224)])
def test_output_shapes(tiny, h, w):
    x = torch.randn(2, 3, h, w)
    out = tiny.forward_features(x)
    p = (h // 14) * (w // 14)
    assert out["x_norm_clstoken"].shape == (2, 32)
    assert out["x_norm_regtokens"].shape == (2, 0, 32)
    assert out["x_norm_patchtokens"].shape == (2, p, 32)
    assert out["x_prenorm"].shape == (2, 1 + p, 32)
    assert out["masks"] is None
    assert torch.equal(tiny(x), out["x_norm_clstoken"])
    assert torch.equal(tiny.patch_features(x), out["x_norm_patchtokens"])


def test_intermediate_layers_reshape_to_maps(tiny):
    x = torch.randn(1, 3, 28, 42)
    (last,) = tiny.get_intermediate_layers(x, n=1, reshape=True)
    assert last.shape == (1, 32, 2, 3)
    assert torch.allclose(last.flatten(2).transpose(1, 2), tiny.patch_features(x))


def test_masked_patches_become_the_mask_token(tiny):
    x = torch.randn(1, 3, 28, 28)
    masks = torch.tensor([[True, False, False, True]])
    tokens = tiny.prepare_tokens_with_masks(x, masks)
    pos = tiny.interpolate_pos_encoding(tokens, 28, 28)
    assert torch.allclose(tokens[0, 1] - pos[0, 1], tiny.mask_token[0], atol=1e-6)
    assert torch.allclose(tokens[0, 4] - pos[0, 4], tiny.mask_token[0], atol=1e-6)
    assert not torch.allclose(tokens[0, 2] - pos[0, 2], tiny.mask_token[0], atol=1e-6)


# ---- 3. position table resizing ----------------------------------------------------------


def test_pos_encoding_is_the_table_itself_at_the_native_grid():
    pos = torch.randn(1, 1370, 8)
    assert interpolate_pos_encoding(pos, 37, 37) is pos
    assert torch.equal(official_pos_encoding(pos, 518, 518), pos)


@pytest.mark.parametrize("h, w", [(224, 224), (196, 196), (28, 42), (518, 504), (14, 700)])
def test_pos_encoding_matches_the_official_formula(h, w):
    pos = torch.randn(1, 1370, 8, generator=torch.Generator().manual_seed(2))
    ours = interpolate_pos_encoding(pos, h // 14, w // 14)
    assert ours.shape == (1, 1 + (h // 14) * (w // 14), 8)
    assert torch.allclose(ours, official_pos_encoding(pos, h, w), atol=1e-6)
    # The 0.1 offset matters numerically: an explicit-size resize gives other numbers.
    by_size = interpolate_pos_encoding(pos, h // 14, w // 14, offset=0.0)
    assert not torch.allclose(ours, by_size, atol=1e-4)


def test_pos_encoding_of_the_module_casts_to_the_token_dtype(tiny):
    tokens = torch.zeros(1, 5, 32, dtype=torch.float64)
    pos = tiny.interpolate_pos_encoding(tokens, 28, 28)
    assert pos.dtype == torch.float64
    assert torch.allclose(pos.float(), official_pos_encoding(tiny.pos_embed, 28, 28))


# ---- 4. the whole forward -----------------------------------------------------------------


@pytest.mark.parametrize("h, w", [(28, 42), (98, 98), (70, 56)])
def test_forward_features_equals_an_independent_reference(tiny, h, w):
    sd = tiny.state_dict()
    assert not torch.allclose(sd["blocks.0.ls1.gamma"], torch.full((32,), 1e-5))
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(3))
    ours = tiny.forward_features(x)
    ref = reference_forward(sd, x, depth=2, heads=2)
    for key, expected in ref.items():
        assert torch.allclose(ours[key], expected, atol=1e-5, rtol=1e-5), key


# ---- 5. errors -----------------------------------------------------------------------------


def test_weights_for_another_architecture_name_both(tmp_path):
    state = {"pos_embed": torch.zeros(1, 1370, 768)}
    state.update({f"blocks.{i}.norm1.weight": torch.zeros(768) for i in range(12)})
    path = tmp_path / "dinov2_vitb14_pretrain.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"ViT-B/14.*ViT-S/14"):
        dinov2_vits14(weights=path, device="cpu")


def test_weights_with_wrong_keys_are_a_clear_error(tmp_path, tiny):
    state = tiny.state_dict()
    del state["blocks.1.ls2.gamma"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing: blocks\.1\.ls2\.gamma.*unexpected: extra\.weight"):
        build_dinov2(TINY, path, device="cpu")


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere" / "dinov2_vits14_pretrain.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dinov2_vits14(weights=path, device="cpu")


@pytest.mark.parametrize("h, w", [(30, 28), (28, 100)])
def test_image_size_not_a_multiple_of_14(tiny, h, w):
    with pytest.raises(ValueError, match=rf"{h}x{w}.*multiple of 14.*224 or 196"):
        tiny.forward_features(torch.randn(1, 3, h, w))


# ---- 6. frozen, with a warning when random -------------------------------------------------


def test_random_init_warns_and_is_frozen_in_eval_mode():
    with pytest.warns(UserWarning, match="randomly initialised.*not pretrained DINOv2"):
        model = build_dinov2(TINY, device="cpu")
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert torch.allclose(model.blocks[0].ls1.gamma, torch.full((32,), 1e-5))


# ---- preprocessing --------------------------------------------------------------------------


def test_preprocess_normalisations():
    frames = torch.full((2, 5, 3, 28, 28), 255, dtype=torch.uint8)  # [B, T, 3, H, W]
    frames[..., 0, :, :] = 0
    out = preprocess_images(frames, size=28, normalization="minus_one_one")
    assert out.shape == (2, 5, 3, 28, 28) and out.dtype == torch.float32
    assert torch.all(out[..., 0, :, :] == -1.0) and torch.all(out[..., 1:, :, :] == 1.0)

    img = torch.rand(1, 3, 64, 48)
    out = preprocess_images(img, size=(56, 42), interpolation="bilinear")
    resized = F.interpolate(img, size=(56, 42), mode="bilinear", antialias=True).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(out, (resized - mean) / std, atol=1e-6)


def test_preprocess_rejects_bad_arguments():
    img = torch.zeros(1, 3, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="'imagenet', 'minus_one_one'"):
        preprocess_images(img, normalization="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"200x200.*multiple of 14"):
        preprocess_images(img, size=200)
