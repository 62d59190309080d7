"""The frozen-encoder feature cache of DINO-WM (Zhou et al., 2024, "DINO-WM: World Models
on Pre-trained Visual Features enable Zero-shot Planning"): the patch features of a frozen
DINOv2, computed once over every frame of an `OfflineDataset`, so training never runs the ViT.

    features = cache_features(dataset, model, batch_size=256)  # resumable, float16
    features = load_cached_features(dataset, encoder=model)    # later runs

Files (written atomically, like the data set's):

    <root>/features-<encoder-id>/features.json    encoder identity, dtype, shapes, shards
    <root>/features-<encoder-id>/shard-00000.npy  float16 [N, T+1, P, D] patch features

Shapes: N trajectories (in a shard), T steps per trajectory, P patches, D encoder width,
M frames, B batch, F frames per item.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from planners.precision import warn_if_bfloat16_is_slow
from training.datasets import (
    READ_ERRORS,
    OfflineDataset,
    read_json,
    remove_temp_files,
    save_json_atomic,
    save_npy_atomic,
)

__all__ = [
    "ENCODER_PRECISIONS",
    "FORMAT_VERSION",
    "CachedFeatures",
    "EncoderIdentity",
    "cache_features",
    "encoder_identity",
    "load_cached_features",
]

FORMAT_VERSION = 1  # of features.json and its shards
ENCODER_PRECISIONS = ("float32", "bfloat16")  # of the frozen encoder when caching features
FEATURES_INFO = "features.json"
FEATURES_KIND = "wmpc-feature-cache"


@dataclass(frozen=True)
class EncoderIdentity:
    """What determines a frozen encoder's features (recorded with a cache).

    Attributes:
        name: architecture ("vits14", "tiny", or your function's name).
        image_size: side the encoder resizes frames to.
        weights: weight file name (not its folder), or "random-init".
        normalization: pixel normalisation before the encoder.
        fingerprint: sha256 prefix of the encoder's parameters ("" when unknown); tells
            two random inits, or two files of the same name, apart.
        precision: "float32", or "bfloat16" when the encoder ran in bfloat16 autocast
            (features differ by ~0.3%; caches of the two are kept apart).
        patch_pool: k when k x k patches were averaged into one (`DinoWMConfig.patch_pool`).
    """

    name: str
    image_size: int
    weights: str
    normalization: str = ""
    fingerprint: str = ""
    precision: str = "float32"
    patch_pool: int = 1

    @property
    def slug(self) -> str:
        """A folder-name-safe id: features-<slug>."""
        parts = [self.name, f"{self.image_size}px", Path(self.weights).stem, self.fingerprint[:8],
                 "" if self.precision == "float32" else self.precision,
                 "" if self.patch_pool == 1 else f"pool{self.patch_pool}"]  # fmt: skip
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p))

    def describe(self) -> str:
        return (f"{self.name} at {self.image_size} px, weights {self.weights}, normalization "
                f"{self.normalization or '?'}, fingerprint {self.fingerprint or '?'}, {self.precision}"
                f"{'' if self.patch_pool == 1 else f', patches pooled {self.patch_pool} x {self.patch_pool}'}")


def _fingerprint(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def encoder_identity(model: Any) -> EncoderIdentity:
    """The identity of a `DinoWM`'s frozen encoder (builds it if needed)."""
    c = model.config
    weights = Path(model.encoder_weights).name if model.encoder_weights else "random-init"
    return EncoderIdentity(name=c.encoder_name, image_size=c.image_size, weights=weights,
                           normalization=c.normalization, fingerprint=_fingerprint(model.encoder),
                           patch_pool=c.patch_pool)


def _encoder_fn(
    encoder: Any, identity: EncoderIdentity | None, precision: str = "float32"
) -> tuple[Callable[[Tensor], Tensor], EncoderIdentity]:
    """The function images -> features (run in `precision`) and the identity it caches under."""
    if precision not in ENCODER_PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {ENCODER_PRECISIONS}")
    if hasattr(encoder, "encode_features") and hasattr(encoder, "config"):
        own = encoder_identity(encoder)
        device = encoder.encoder.pos_embed.device  # resize and normalise there too (GPU)
        fn, identity = (lambda images: encoder.encode_features(images.to(device))), identity or own
    elif callable(encoder):
        if identity is None:
            raise TypeError("an encoder function needs identity=EncoderIdentity(...) naming it (name, image size, "
                            "weights), so its cache can be told from another encoder's")
        fn, device = encoder, None  # wherever the function runs
    else:
        fn = None
    if fn is not None:
        if precision == "float32":
            return fn, dataclasses.replace(identity, precision="float32")

        # A function may move the images anywhere: autocast every device it could use.
        device_types = [device.type] if device is not None else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if device_types[0] == "cpu":
            warn_if_bfloat16_is_slow("cpu")

        def reduced(images: Tensor) -> Tensor:
            # bfloat16 matrix products (AMX on recent CPUs, tensor cores on GPUs): ~2.5x
            # faster for ViT-S/14 on this CPU; LayerNorm and softmax stay float32.
            with contextlib.ExitStack() as stack:
                for device_type in device_types:
                    stack.enter_context(torch.autocast(device_type, dtype=torch.bfloat16))
                return fn(images).float()

        return reduced, dataclasses.replace(identity, precision=precision)
    raise TypeError(f"encoder must be a DinoWM or a function images -> features, got {type(encoder).__name__}")


def _features_dir(dataset: OfflineDataset, identity: EncoderIdentity, out_dir: str | os.PathLike[str] | None) -> Path:
    return Path(out_dir) if out_dir is not None else dataset.root / f"features-{identity.slug}"


def _check_identity(folder: Path, info: Mapping[str, Any], identity: EncoderIdentity) -> None:
    recorded = EncoderIdentity(**info["encoder"])
    if recorded != identity:
        raise ValueError(
            f"the feature cache {folder} was made by encoder [{recorded.describe()}], not by this encoder "
            f"[{identity.describe()}]; use another folder or the matching encoder"
        )


def cache_features(
    dataset: OfflineDataset,
    encoder: Any,
    out_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    identity: EncoderIdentity | None = None,
    progress: bool = False,
    precision: str = "float32",
) -> CachedFeatures:
    """Run the frozen encoder once over every frame and store the patch features.

    Features are stored as float16 (half the space of float32: 2 bytes x P x D per frame,
    about 150 kB for ViT-S/14 at 196 px, so the paper's Reacher set needs about 45 GB;
    DINOv2's final-LayerNorm features are O(1) to O(10), where float16 keeps about 3
    significant digits, far below the model's prediction error). One `.npy` per shard,
    written atomically; rerunning skips finished shards.

    Args:
        dataset: the data set.
        encoder: a `DinoWM` (its `encode_features`; identity from its config and encoder
            weights), or a function uint8 images [M, 3, H, W] -> features [M, P, D]
            (then `identity` is required).
        out_dir: the cache folder; default `<dataset>/features-<identity.slug>`.
        batch_size: frames per encoder call.
        identity: overrides / supplies the encoder's identity.
        progress: show a tqdm bar over shards.
        precision: "float32", or "bfloat16" to run the encoder in bfloat16 autocast
            (recorded in the identity, so the cache folder differs).

    Returns:
        The cache, loaded (`load_cached_features`).

    Raises:
        ValueError: `out_dir` holds features of another encoder (both named), or the
            encoder's output is not [M, P, D] or overflows float16.
    """
    fn, identity = _encoder_fn(encoder, identity, precision)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be positive")
    folder = _features_dir(dataset, identity, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    remove_temp_files(folder)
    info_path = folder / FEATURES_INFO
    info: dict[str, Any]
    if info_path.is_file():
        info = read_json(info_path, "feature cache info")
        _check_identity(folder, info, identity)
        if info.get("dataset") != _dataset_facts(dataset):
            raise ValueError(f"the feature cache {folder} was made for another data set "
                             f"({info.get('dataset')} vs {_dataset_facts(dataset)})")
    else:
        info = {"format_version": FORMAT_VERSION, "kind": FEATURES_KIND, "encoder": asdict(identity),
                "dtype": "float16", "feature_shape": None, "dataset": _dataset_facts(dataset)}
    shards = range(dataset.num_shards)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=dataset.num_shards, unit="shard", desc="encode")
    for shard in shards:
        path = folder / f"shard-{shard:05d}.npy"
        n = len(dataset.shard_trajectories(shard))
        if path.is_file() and info.get("feature_shape") is not None:
            try:
                _open_feature_shard(path, (n, dataset.steps + 1, *info["feature_shape"]))
                if bar is not None:
                    bar.update(1)
                continue
            except ValueError as error:
                # Written atomically, so a bad shard was damaged after the fact: encode it again.
                found = str(error).split("; delete it")[0]  # the advice is what happens here
                warnings.warn(f"{found}; encoding it again", UserWarning, stacklevel=2)
                path.unlink()
        images = dataset.load_shard(shard, ["images"])["images"]  # [n, T+1, 3, H, W]
        flat = images.reshape(-1, *images.shape[2:])  # [n * (T+1), 3, H, W]
        chunks = []
        with torch.no_grad():
            for start in range(0, len(flat), batch_size):
                out = fn(torch.from_numpy(flat[start : start + batch_size]))
                if out.dim() != 3 or out.shape[0] != min(batch_size, len(flat) - start):
                    raise ValueError(f"the encoder returned shape {tuple(out.shape)}; expected [M, P, D]")
                chunks.append(out.detach().to("cpu", torch.float32).numpy().astype(np.float16))
        features = np.concatenate(chunks).reshape(n, dataset.steps + 1, *chunks[0].shape[1:])
        if not np.isfinite(features).all():
            raise ValueError(f"encoder features of shard {shard} are not finite in float16 (overflow past 65504?)")
        shape = list(features.shape[2:])
        if info.get("feature_shape") not in (None, shape):
            raise ValueError(f"the encoder returned features {shape}; the cache holds {info['feature_shape']}")
        if info.get("feature_shape") is None:
            info["feature_shape"] = shape
            save_json_atomic(info_path, info)
        save_npy_atomic(path, features)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not info_path.is_file():  # a data set without shards
        save_json_atomic(info_path, info)
    return load_cached_features(dataset, folder, identity=identity)


def _dataset_facts(dataset: OfflineDataset) -> dict[str, Any]:
    return {"steps": dataset.steps, "shards": [int(e["num_trajectories"]) for e in dataset.shards],
            "image_size": dataset.image_size}


def _open_feature_shard(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"feature shard {path} is missing; rerun cache_features() to finish the cache") from None
    except READ_ERRORS as error:
        raise ValueError(f"feature shard {path} is truncated or corrupt ({type(error).__name__}: {error}); delete it "
                         "and rerun cache_features()") from error
    if array.shape != tuple(shape) or array.dtype != np.float16:
        raise ValueError(f"feature shard {path} is {array.dtype} {array.shape}; expected float16 {tuple(shape)}")
    return array


class CachedFeatures:
    """Cached patch features, one memory-mapped float16 array [n, T+1, P, D] per shard."""

    def __init__(self, dataset: OfflineDataset, folder: Path, info: Mapping[str, Any]) -> None:
        self.dataset = dataset
        self.folder = folder
        self.identity = EncoderIdentity(**info["encoder"])
        self.feature_shape: tuple[int, int] = tuple(info["feature_shape"])  # type: ignore[assignment]
        self.shards = [
            _open_feature_shard(folder / f"shard-{s:05d}.npy",
                                (len(dataset.shard_trajectories(s)), dataset.steps + 1, *self.feature_shape))
            for s in range(dataset.num_shards)
        ]

    @property
    def num_patches(self) -> int:
        return self.feature_shape[0]

    @property
    def embed_dim(self) -> int:
        return self.feature_shape[1]

    def trajectory(self, index: int) -> np.ndarray:
        """float16 [T+1, P, D] (a memory map)."""
        shard, row = self.dataset.locate([index])
        return self.shards[int(shard[0])][int(row[0])]

    def gather(self, trajectories: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Features at trajectories [B] and steps [B, F] -> float16 [B, F, P, D]."""
        shard, row = self.dataset.locate(trajectories)
        return np.stack([self.shards[s][r, t] for s, r, t in zip(shard.tolist(), row.tolist(), steps)])


def load_cached_features(
    dataset: OfflineDataset,
    path: str | os.PathLike[str] | None = None,
    encoder: Any = None,
    identity: EncoderIdentity | None = None,
    precision: str = "float32",
) -> CachedFeatures:
    """Open a feature cache of `dataset`.

    Args:
        dataset: the data set the cache was made from.
        path: the cache folder; default: from the encoder's identity.
        encoder / identity: when given, the cache must have been made by this encoder.
        precision: with `encoder`, the precision the cache was made in.

    Raises:
        FileNotFoundError: no cache there, or a shard missing (unfinished cache).
        ValueError: made by another encoder (both named), for another data set, or a
            corrupt shard.
    """
    if encoder is not None and identity is None:
        _, identity = _encoder_fn(encoder, None, precision)
    if path is None and identity is None:
        raise ValueError("load_cached_features needs the cache folder (path=) or the encoder (encoder= or identity=)")
    folder = Path(path) if path is not None else _features_dir(dataset, identity, None)  # type: ignore[arg-type]
    info_path = folder / FEATURES_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"no feature cache at {folder} ({FEATURES_INFO} is missing); run cache_features()")
    info = read_json(info_path, "feature cache info")
    if info.get("kind") != FEATURES_KIND or info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{info_path} is not a feature cache of format_version {FORMAT_VERSION}")
    if identity is not None:
        _check_identity(folder, info, identity)
    if info.get("dataset") != _dataset_facts(dataset):
        raise ValueError(f"the feature cache {folder} was made for another data set "
                         f"({info.get('dataset')} vs {_dataset_facts(dataset)})")
    if info.get("feature_shape") is None:
        raise FileNotFoundError(f"the feature cache {folder} has no shards yet; run cache_features()")
    return CachedFeatures(dataset, folder, info)
