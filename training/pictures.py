"""Pictures of what an RSSM has learned, written as PNGs during training (PlaNet-style).

Two views of a batch of real sequences (PlaNet, Hafner et al., 2019, figures 4-5 and its
TensorBoard summaries):

- open-loop prediction: the posterior filters the first `context` frames (5 in PlaNet),
  then the prior imagines the rest of the sequence from the last posterior state with
  the real actions, and every state is decoded. Real frames above, predictions below.
  This shows how far the model can predict without seeing observations, which is what
  the planner relies on.
- reconstruction: the posterior filters the whole sequence and every posterior state is
  decoded (real above, reconstruction below). This shows what the latent keeps.

Pixel models give image grids (`openloop-<tag>.png`, `recon-<tag>.png`); state models
give one plot of real vs reconstructed vs open-loop predicted state dimensions over time
(`states-<tag>.png`). Images are written through imageio, or matplotlib when imageio is
missing; plots need matplotlib. Both are imported lazily (optional extras): when the
needed one is missing, the picture is skipped with a logged note, never an error.
Every file is written to a temporary name beside its target and then renamed.

Shapes:
    B sequences, T time steps, A action size, C x 64 x 64 images, D state size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.checkpoints import atomic_write
from models.rssm import RSSM

__all__ = ["image_grid", "predict_sequences", "write_model_pictures"]

_GAP = 2  # white pixels between frames and between rows of a grid


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Runs `write(tmp)` on a temporary .png beside `path` (imageio reads the format from
    the suffix), then renames it to `path`."""
    atomic_write(path, write, suffix=".png")


@torch.no_grad()
def predict_sequences(model: RSSM, batch: Mapping[str, Tensor], context: int = 5) -> dict[str, Tensor]:
    """Posterior reconstructions and open-loop predictions of real sequences.

    Uses the means of the latent distributions (modes for discrete latents), not samples,
    so the pictures show the model's expectation.

    Args:
        model: the RSSM.
        batch: sequences in the RSSM's convention (see `models.rssm`): "obs" [B, T, *obs]
            (uint8 images or float states) and "actions" [B, T, A] (actions[:, t] led to
            obs[:, t]).
        context: frames the posterior sees before open-loop prediction starts; clamped
            to [1, T - 1] so at least one step is predicted.

    Returns:
        "real" [B, T, *obs] (the model's input space: floats in [-0.5, 0.5) for images),
        "recon" [B, T, *obs] (decoded posteriors of all steps), "openloop" [B, T, *obs]
        (decoded posteriors for t < context, decoded priors after), and "context" (a
        0-d tensor).
    """
    obs, actions = batch["obs"], batch["actions"].float()
    b, t = obs.shape[:2]
    if t < 2:
        raise ValueError(f"sequences of {t} step(s) are too short for open-loop pictures; need at least 2")
    context = max(1, min(int(context), t - 1))
    real = model.preprocess(obs.flatten(0, 1), noise=False)  # [B * T, *obs]
    embeds = model.encoder(real).unflatten(0, (b, t))  # [B, T, E]
    post, _ = model.observe_sequence(embeds, actions, sample=False)  # [B, T, ...]
    recon = model.decode(post.feature().flatten(0, 1)).unflatten(0, (b, t))
    last = post[:, context - 1]  # the posterior after the context frames
    prior = model.imagine(last, actions[:, context:], sample=False)  # [B, T - context, ...]
    imagined = model.decode(prior.feature().flatten(0, 1)).unflatten(0, (b, t - context))
    openloop = torch.cat([recon[:, :context], imagined], dim=1)
    return {"real": real.unflatten(0, (b, t)), "recon": recon, "openloop": openloop, "context": torch.tensor(context)}


def _to_rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., C, H, W] -> [..., H, W, 3]: grey is repeated, stacked frames (C a
    multiple of 3) show their last frame."""
    c = frames.shape[-3]
    if c == 1:
        frames = np.repeat(frames, 3, axis=-3)
    elif c % 3 == 0:
        frames = frames[..., c - 3 :, :, :]
    else:
        raise ValueError(f"images with {c} channels cannot be shown; expected 1 or a multiple of 3")
    return np.moveaxis(frames, -3, -1)


def image_grid(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of frames -> one uint8 HWC image with white gaps.

    Shapes: each row [T, C, H, W] uint8 (equal shapes) -> [R (H + gap) - gap, T (W + gap) - gap, 3].
    """
    hwc = [_to_rgb(np.asarray(r)) for r in rows]
    _, h, w, _ = hwc[0].shape
    t = max(len(r) for r in hwc)
    out = np.full((len(hwc) * (h + _GAP) - _GAP, t * (w + _GAP) - _GAP, 3), 255, dtype=np.uint8)
    for i, row in enumerate(hwc):
        for j, frame in enumerate(row):
            out[i * (h + _GAP) : i * (h + _GAP) + h, j * (w + _GAP) : j * (w + _GAP) + w] = frame
    return out


def _image_writer() -> Callable[[str, np.ndarray], None] | None:
    """A function writing a uint8 HWC image to a .png path, or None if no library is there."""
    try:
        import imageio.v2 as imageio

        return lambda path, image: imageio.imwrite(path, image, format="png")
    except ImportError:
        pass
    try:
        from matplotlib.image import imsave

        return lambda path, image: imsave(path, image, format="png")
    except ImportError:
        return None


def _write_pixel_pictures(
    out_dir: Path, model: RSSM, pred: dict[str, Tensor], tag: str, max_sequences: int, max_frames: int, log: Callable[[str], None]
) -> list[Path]:
    writer = _image_writer()
    if writer is None:
        log("pictures skipped: writing PNGs needs imageio or matplotlib (pip install -e '.[video]' or '.[plots]')")
        return []
    n, t = min(max_sequences, pred["real"].shape[0]), min(max_frames, pred["real"].shape[1])

    def uint8(x: Tensor) -> np.ndarray:
        return model.postprocess(x[:n, :t]).cpu().numpy()  # [n, t, C, H, W]

    real, recon, openloop = uint8(pred["real"]), uint8(pred["recon"]), uint8(pred["openloop"])
    written = []
    for name, predicted in (("openloop", openloop), ("recon", recon)):
        rows = [row for i in range(n) for row in (real[i], predicted[i])]  # real above, model below
        path = out_dir / f"{name}-{tag}.png"
        grid = image_grid(rows)
        _atomic_write(path, lambda tmp, grid=grid: writer(tmp, grid))
        written.append(path)
    return written


def _write_state_plot(
    out_dir: Path, pred: dict[str, Tensor], tag: str, max_dims: int, log: Callable[[str], None], symlog: bool = False
) -> list[Path]:
    """One figure of real vs posterior vs open-loop state dimensions, in the model's input
    space (symlog units when the model squashes its inputs)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log("state pictures skipped: plotting needs matplotlib (pip install -e '.[plots]')")
        return []
    real, recon, openloop = (pred[k][0].cpu().numpy() for k in ("real", "recon", "openloop"))  # [T, D]
    context = int(pred["context"])
    dims = min(max_dims, real.shape[1])
    cols = min(4, dims)
    rows = -(-dims // cols)
    fig = Figure(figsize=(3.2 * cols, 2.2 * rows), layout="constrained")
    steps = np.arange(real.shape[0])
    for d in range(dims):
        ax = fig.add_subplot(rows, cols, d + 1)
        ax.plot(steps, real[:, d], color="black", lw=1.5, label="real")
        ax.plot(steps, recon[:, d], color="tab:blue", ls="--", lw=1, label="posterior")
        ax.plot(steps[context - 1 :], openloop[context - 1 :, d], color="tab:red", lw=1, label="open loop")
        ax.axvline(context - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"symlog state dim {d}" if symlog else f"state dim {d}", fontsize=8)
        ax.tick_params(labelsize=7)
        if d == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"real vs predicted states ({context} context steps, then open loop) @ {tag}", fontsize=9)
    path = out_dir / f"states-{tag}.png"
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    return [path]


def write_model_pictures(
    out_dir: str | Path,
    model: RSSM,
    batch: Mapping[str, Tensor],
    tag: str,
    context: int = 5,
    max_sequences: int = 4,
    max_frames: int = 50,
    max_dims: int = 12,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Writes the open-loop and reconstruction pictures of `batch` into `out_dir`.

    Args:
        out_dir: the folder (created when missing).
        model: the RSSM.
        batch: "obs" [B, T, *obs], "actions" [B, T, A] in the RSSM's convention.
        tag: names the files (e.g. the zero-padded env step).
        context: posterior frames before open-loop prediction (PlaNet shows 5).
        max_sequences, max_frames: the grid's rows (pairs) and columns (pixel models).
        max_dims: state dimensions plotted (state models).
        log: receives the note when a picture is skipped.

    Returns:
        the paths written; empty when the needed library is not installed.
    """
    out_dir = Path(out_dir)
    was_training = model.training
    model.eval()
    try:
        pred = predict_sequences(model, batch, context)
    finally:
        model.train(was_training)
    if model.config.obs_type == "pixels":
        return _write_pixel_pictures(out_dir, model, pred, tag, max_sequences, max_frames, log)
    return _write_state_plot(out_dir, pred, tag, max_dims, log, symlog=model.config.symlog_obs)
