"""Offline training of DINO-WM from cached frozen-encoder features (Zhou et al., 2024,
"DINO-WM: World Models on Pre-trained Visual Features enable Zero-shot Planning").

The paper's recipe (shared/ANCHORS.md section 2): a fixed data set of trajectories, the
frozen DINOv2 run once over every frame, then epochs of teacher-forced MSE on windows of
`history + 1` frames `frameskip` steps apart, batch 32, AdamW. Here:

    config = DinoWMTrainConfig(dataset="data/reacher", preset="cpu", epochs=100,
                               encoder_weights="dinov2_vits14_pretrain.pth")
    rows = DinoWMTrainer(config, "runs/dinowm-reacher", progress=True).run()
    model = load_trained_dinowm("runs/dinowm-reacher/model.pt")   # models.dino_wm

The command line builds its trainer with `make_trainer` (collect the data set, then train):

    python run_planning.py train --model dinowm --task point_mass-goal
    torchrun --nproc_per_node=2 run_planning.py train --model dinowm --task point_mass-goal

What happens, in order:

1. The data set's frames are encoded once by the frozen encoder into the float16 feature
   cache (`training.feature_cache.cache_features`, resumable, shared between runs of the
   same encoder). Training reads only that cache: the ViT never runs per step.
2. The data set's action and proprio statistics go into the model (`set_normalization`),
   so the checkpoint carries the z-scoring it was trained with.
3. Trajectories are split as `OfflineDataset.split(val_fraction)`: the last part is held
   out, and is also where `sample_goals` draws its evaluation goals.
4. Each epoch visits every training window once in an order fixed by (seed, epoch); the
   validation loss is measured on a fixed set of held-out windows (`val_windows` of them),
   so numbers are comparable across evaluations and runs.

Optimiser (our reading of the paper's released settings; the exact values are not in the
paper's text): one AdamW
with two parameter groups: the predictor, action encoder and proprio encoder at `lr`
(5e-4: DINO-WM's predictor and action-encoder learning rate) with `weight_decay` (0.01,
torch's AdamW default, which DINO-WM keeps), and the optional picture decoder at
`decoder_lr` (3e-4) without weight decay (DINO-WM trains it with Adam). No warm-up, no
schedule; gradient clipping only when `grad_clip` is set.

Files in `out_dir` (the .pt files are written atomically: temp file, then rename; the CSV
logs are appended to, and rewritten to agree with the checkpoint on resume):

    checkpoint.pt   everything needed to continue, under the header format_version,
                    model "dinowm", kind "training", task, obs: the run's settings, the
                    model (model_state), optimiser, step, epoch, RNG state, logs, wall
                    time (`torch.load(weights_only=True)`)
    model.pt        the DinoWM checkpoint alone (`models.dino_wm.load_trained_dinowm`)
    train.csv       step, epoch, mean losses since the previous row, wall time
    val.csv         step, epoch, validation losses, wall time

Starting the same run again resumes from `checkpoint.pt` with the same step count; the
result equals an uninterrupted run (same window order, same optimiser state). A
checkpoint from a run with other settings is refused, naming the differing fields.
Checkpoints from before the header (kind "dinowm-train", version 1) still resume.

Several processes (torchrun): torch.distributed DistributedDataParallel over the trained
modules, each rank on its own share of every step's windows (`DinoWMTrainer`); rank 0
alone collects, encodes, evaluates, logs and writes files.

Shapes: B batch, Hh history, P patches, D encoder width, Pd proprio size, A action size,
fs frameskip.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.dino_wm import DinoWM, DinoWMConfig, random_encoder
from models.dinov2 import build_dinov2
from planners.controller import resolve_device
from training.collection import POLICIES, CollectConfig, collect
from training.datasets import OfflineDataset
from training.feature_cache import ENCODER_PRECISIONS, cache_features, load_cached_features
from training.run_files import append_csv, atomic_torch_save, check_same_run, config_defaults, restore_logs
from training.windows import WindowSampler

__all__ = [
    "CHECKPOINT_VERSION",
    "PRESETS",
    "DinoWMTrainConfig",
    "DinoWMTrainer",
    "TRAIN_OPTIONS",
    "make_trainer",
]

CHECKPOINT_VERSION = 2  # 2: the header (format_version, model, kind, task, obs); the model under model_state
_MODEL_NAME = "dinowm"
PRESETS = ("cpu", "paper", "tiny")
# Settings that define what is being trained; a resume must match them exactly. The others
# (length of the run, logging cadence, device) may change between restarts.
_RUN_DEFINING = (
    "dataset", "preset", "batch_size", "lr", "decoder_lr", "weight_decay", "grad_clip", "seed", "val_fraction",
    "val_windows", "decoder", "encoder_weights", "model_overrides", "encoder_precision", "world_size",
)
# Config fields a preset fixes from the data set or from other training settings.
_NOT_OVERRIDABLE = ("action_dim", "proprio_dim", "decoder")
_DECODER_VAL_FRAMES = 64


@dataclass(frozen=True)
class DinoWMTrainConfig:
    """One offline DINO-WM training run.

    Attributes:
        dataset: folder of an `OfflineDataset` (from `collect` or `write_dataset`).
        preset: model size, a `DinoWMConfig` preset: "cpu" (ViT-S/14 at 112 px, patches
            pooled 2 x 2 into 16 tokens, history 1, depth-4 predictor), "paper" (196 px, depth 6, 16 heads; GPU) or "tiny" (tests).
        epochs: passes over the training windows (the paper: 100). Ignored when `steps`
            is set.
        steps: optimiser steps to train for instead of epochs (None: epochs decide).
        batch_size: windows per step (32).
        lr: AdamW learning rate of the predictor and the action / proprio encoders (5e-4).
        decoder_lr: learning rate of the picture decoder (3e-4; only with `decoder`).
        weight_decay: AdamW weight decay of the predictor and encoders (0.01).
        grad_clip: max global gradient norm; None: no clipping (the paper clips none).
        seed: seeds the model init, the random encoder (when no weights), window order
            and the validation windows.
        val_fraction: share of trajectories held out (the last ones; `OfflineDataset.split`).
        val_windows: held-out windows scored at each evaluation (a fixed random subset).
        eval_every: optimiser steps between validation evaluations (also at step 0 and at
            the end).
        checkpoint_every: optimiser steps between checkpoints (also at the end).
        log_every: optimiser steps per train.csv row (losses averaged over them).
        decoder: also train a `PatchDecoder` (pictures of latents; never shapes the latent).
        encoder_weights: the official DINOv2 weight file (`dinov2_vits14_pretrain.pth`),
            or None for a randomly initialised frozen encoder (seeded by `seed`; a warning
            says its features are not DINOv2's: for tests and smoke runs only).
        feature_batch_size: frames per encoder call when caching features.
        encoder_precision: "float32", or "bfloat16" to cache the features with the encoder
            in bfloat16 autocast (~2.5x faster for ViT-S/14 on CPUs with AMX; features
            within ~0.3%). Planning encodes in float32 either way.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        model_overrides: `DinoWMConfig` fields set on top of the preset (e.g.
            {"history": 2}); not action_dim, proprio_dim (from the data) or decoder.
    """

    dataset: str
    preset: str = "cpu"
    epochs: int = 100
    steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-4
    decoder_lr: float = 3e-4
    weight_decay: float = 0.01
    grad_clip: float | None = None
    seed: int = 0
    val_fraction: float = 0.1
    val_windows: int = 512
    eval_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    decoder: bool = False
    encoder_weights: str | None = None
    feature_batch_size: int = 64
    encoder_precision: str = "float32"
    device: str = "auto"
    model_overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; accepted: {list(PRESETS)}")
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(f"encoder_precision={self.encoder_precision!r} must be one of {ENCODER_PRECISIONS}")
        for name in ("epochs", "batch_size", "val_windows", "eval_every", "checkpoint_every", "log_every",
                     "feature_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1):
            raise ValueError(f"steps={self.steps!r} must be a positive int or None (then epochs decide)")
        for name in ("lr", "decoder_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}={value!r} must be a positive finite number")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip={self.grad_clip!r} must be a positive number or None")
        if not (isinstance(self.val_fraction, (int, float)) and 0.0 < self.val_fraction < 1.0):
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in (0, 1)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0")
        known = {f.name for f in dataclasses.fields(DinoWMConfig)} - set(_NOT_OVERRIDABLE)
        unknown = sorted(set(self.model_overrides) - known)
        if unknown:
            raise ValueError(f"unknown model_overrides {unknown}; accepted: {sorted(known)}")
        # A plain dict of primitives, so asdict() and the checkpoint stay weights_only-loadable.
        object.__setattr__(self, "model_overrides", dict(self.model_overrides))
        object.__setattr__(self, "dataset", str(self.dataset))
        if self.encoder_weights is not None:
            object.__setattr__(self, "encoder_weights", str(self.encoder_weights))

    def model_config(self, action_dim: int, proprio_dim: int) -> DinoWMConfig:
        """The `DinoWMConfig` this run trains for a task's action and proprio sizes."""
        preset = getattr(DinoWMConfig, self.preset)
        return preset(action_dim, proprio_dim, decoder=self.decoder, **self.model_overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DinoWMTrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# --------------------------------------------------------------------------------------
# Processes: one, or one per device under torchrun
# --------------------------------------------------------------------------------------

# Rank 0 may collect the data set and encode every frame while the other ranks wait; that
# can take hours, far past the default collective timeout, so those waits use a CPU group
# of their own with a long timeout (training's collectives keep the default one).
_PREPARATION_TIMEOUT = timedelta(hours=24)
# No buffer broadcast before each forward (newer torch names the switch forward_sync_buffers).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


@dataclass
class _Ranks:
    """Where this process stands among the training processes.

    Attributes:
        rank, world_size, local_rank: as torchrun sets them (0, 1, 0 for a single process).
        owns_group: this trainer initialised the process group (and destroys it after `run`).
        wait_group: a gloo group for barriers and small CPU exchanges (None alone).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    wait_group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.wait_group)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.wait_group)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _launched_by_torchrun() -> bool:
    env = os.environ
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")) and int(env["WORLD_SIZE"]) > 1


def _join_processes(device: torch.device) -> tuple[_Ranks, torch.device]:
    """Join (or initialise) the process group when there are several processes.

    Under torchrun (RANK, WORLD_SIZE and LOCAL_RANK set, WORLD_SIZE > 1) the group is
    initialised from torchrun's env:// rendezvous, with backend nccl on CUDA (each process
    on the GPU of its LOCAL_RANK) and gloo on CPU. A group the caller initialised already
    is used as it is. Otherwise: a single process, no group, as before.
    """
    if not dist.is_available():
        return _Ranks(), device
    owns = False
    if not dist.is_initialized():
        if not _launched_by_torchrun():
            return _Ranks(), device
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    world_size = dist.get_world_size()
    if world_size == 1:
        return _Ranks(owns_group=owns), device
    rank = dist.get_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    wait_group = dist.new_group(backend="gloo", timeout=_PREPARATION_TIMEOUT)
    return _Ranks(rank, world_size, local_rank, owns, wait_group), device


class _WindowLoss(nn.Module):
    """The training loss as a module's forward, so DistributedDataParallel can wrap it: the
    model's predictor loss on a window batch, plus the decoder loss when there is one.
    Only what gets gradients is trained (the frozen encoder has none)."""

    def __init__(self, model: DinoWM) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor,
                decoder_features: torch.Tensor | None = None,
                decoder_images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = self.model.loss(features, proprio, actions)
        out = {"loss": loss.detach(), "visual": parts["visual"], "proprio": parts["proprio"]}
        total = loss
        if decoder_features is not None:
            decoder_loss = self.model.decoder_loss(decoder_features, decoder_images)
            total = total + decoder_loss
            out["decoder"] = decoder_loss.detach()
        return total, out


# --------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------


class DinoWMTrainer:
    """Builds the model, feature cache and window samplers for a config; `run()` trains
    (or resumes).

    Over an existing data set (`collect=None`) the trainer is ready when constructed (data
    set, model, feature cache and a resumed checkpoint, as before). With `collect`, the
    data set is collected (resumably) into `config.dataset` by `run()`, so constructing is
    cheap; `prepare()` does that part alone.

    Several processes (`torchrun --nproc_per_node=N ...`): each process trains a replica
    under DistributedDataParallel (gradients averaged across processes) on its own part of
    each step's windows, `batch_size` of them, so one step consumes N * batch_size windows
    and an epoch has 1/N of the steps. Only rank 0 collects, encodes the feature cache,
    shows progress, logs, evaluates and writes files; the others wait for it at a barrier.
    Every rank resumes from the same checkpoint. A run resumes only on the same number of
    processes.

    Args:
        config: the run's settings.
        out_dir: where checkpoints and logs go; a `checkpoint.pt` there is resumed.
        progress: show tqdm bars (collection, feature caching and training steps).
        log: a function for one-line messages (print by default).
        collect: collect the data set into `config.dataset` first (in `run()`).

    Attributes:
        model: the `DinoWM` being trained (its frozen encoder included).
        dataset, features: the data set and its feature cache.
        step: optimiser steps completed.
        total_steps: where `run()` stops.
        train_rows, val_rows: the logs (also in train.csv / val.csv).
        rank, world_size: this process among the training processes (0 and 1 alone).

    Raises:
        FileNotFoundError: no data set at `config.dataset` (without `collect`), or
            `encoder_weights` names no file.
        ValueError: the model's window (history x frameskip) is longer than the
            trajectories, or `out_dir` holds a checkpoint of a run with other settings
            (each differing field named with both values).
    """

    def __init__(
        self,
        config: DinoWMTrainConfig,
        out_dir: str | os.PathLike[str],
        progress: bool = False,
        log: Callable[[str], None] = print,
        collect: CollectConfig | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.log = log
        self.collect_config = collect
        self.device = resolve_device(config.device)
        self.ranks = _Ranks()
        if config.encoder_weights is not None and not Path(config.encoder_weights).expanduser().is_file():
            raise FileNotFoundError(f"encoder_weights={config.encoder_weights!r}: no such file (the official "
                                    "DINOv2 checkpoint, e.g. dinov2_vits14_pretrain.pth)")
        self.prepared = False
        if collect is None:
            self.prepare()

    def prepare(self) -> None:
        """Join the other processes (if any), collect the data set (with `collect`), build
        the model, encode the feature cache and resume a checkpoint. Done once."""
        if self.prepared:
            return
        config = self.config
        self.ranks, self.device = _join_processes(self.device)
        main = self.ranks.is_main
        if not main:
            self.progress = False
            self.log = _quiet
        if self.collect_config is not None:
            if main:
                collect(self.collect_config, config.dataset, progress=self.progress)
            self.ranks.barrier()
        self.dataset = OfflineDataset(config.dataset)
        self.dataset_path = str(Path(config.dataset).resolve())
        model_config = config.model_config(self.dataset.action_dim, self.dataset.proprio_dim)
        if config.encoder_weights is None:
            encoder = random_encoder(model_config, config.seed, device=self.device)
        else:
            encoder = build_dinov2(model_config.encoder_config, config.encoder_weights, device=self.device)
        torch.manual_seed(config.seed)
        self.model = DinoWM(model_config, encoder=encoder, encoder_weights=config.encoder_weights).to(self.device)
        self.model.set_normalization(**{k: v.to(self.device) for k, v in self.dataset.normalization().items()})

        # 1. Encode every frame once; a finished cache is only checked, not recomputed.
        # Rank 0 writes it; the others open it when it is complete.
        if main:
            self.features = cache_features(self.dataset, self.model, batch_size=config.feature_batch_size,
                                           progress=self.progress, precision=config.encoder_precision)
        self.ranks.barrier()
        if not main:
            self.features = load_cached_features(self.dataset, encoder=self.model, precision=config.encoder_precision)
        train_traj, val_traj = self.dataset.split(config.val_fraction)
        self.train_trajectories, self.val_trajectories = train_traj, val_traj
        self.train_sampler = WindowSampler.for_model(self.dataset, self.features, model_config,
                                                     trajectories=train_traj, seed=config.seed, device=self.device)
        self.val_sampler = WindowSampler.for_model(self.dataset, self.features, model_config,
                                                   trajectories=val_traj, seed=config.seed, device=self.device)
        pick_rng = np.random.default_rng([config.seed, 1])
        count = min(config.val_windows, self.val_sampler.num_windows)
        self.val_window_ids = np.sort(pick_rng.choice(self.val_sampler.num_windows, size=count, replace=False))
        self.steps_per_epoch = math.ceil(self.train_sampler.num_windows / (config.batch_size * self.world_size))
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        # The decoder needs pixels; images are read a shard at a time, so its batches come
        # from one training shard at a time, rotating so that an epoch visits every shard.
        shard_of, _ = self.dataset.locate(train_traj)
        self.decoder_shards = sorted(set(shard_of.tolist()))
        self._train_shard_of = shard_of
        self.steps_per_decoder_shard = max(1, self.steps_per_epoch // len(self.decoder_shards))

        groups: list[dict[str, Any]] = [{
            "params": [p for name, p in self.model.named_parameters() if not name.startswith("decoder.")],
            "lr": config.lr, "weight_decay": config.weight_decay, "name": "predictor",
        }]
        if self.model.decoder is not None:
            groups.append({"params": list(self.model.decoder.parameters()), "lr": config.decoder_lr,
                           "weight_decay": 0.0, "name": "decoder"})
        # fused: one kernel over all parameters instead of a Python loop per tensor (the
        # loop was 10% of a CPU step of the cpu preset); same update, same state dict.
        self.optimizer = torch.optim.AdamW(groups, fused=True)
        self._loss = _WindowLoss(self.model)
        self._train_loss: nn.Module = self._loss
        if self.ranks.distributed:
            # Dropout masks differ between ranks (their windows do too); resumes restore each
            # rank's own generator state.
            torch.manual_seed(int(np.random.SeedSequence([config.seed, 4, self.rank]).generate_state(1)[0]))
            # Every buffer (normalisation statistics, the frozen encoder's) is the same on
            # all ranks, so there is nothing to broadcast at each step.
            self._train_loss = DistributedDataParallel(
                self._loss, device_ids=[self.device.index] if self.device.type == "cuda" else None, **_NO_BUFFER_SYNC,
            )  # fmt: skip

        self.step = 0
        self.train_rows: list[dict[str, Any]] = []
        self.val_rows: list[dict[str, Any]] = []
        self.wall_before = 0.0
        self._pending: dict[str, list[float]] = {}
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prepared = True
        self.resumed = self._maybe_resume()

    # -- facts ---------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.ranks.rank

    @property
    def world_size(self) -> int:
        return self.ranks.world_size

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return self.step // self.steps_per_epoch

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def model_path(self) -> Path:
        return self.out_dir / "model.pt"

    @property
    def task(self) -> str:
        if self.collect_config is not None:
            return self.collect_config.task
        return str(self.dataset.env.get("task"))

    def position(self) -> str:
        """Where the run stands, for messages: "update N (epoch E)"."""
        return f"update {self.step} (epoch {self.epoch})"

    def describe(self) -> str:
        """One line: the family, preset, image size, task and data."""
        image_size = getattr(DinoWMConfig, self.config.preset)(1, 1).image_size
        n = self.collect_config.num_trajectories if self.collect_config is not None else len(self.dataset)
        return f"dinowm ({self.config.preset}, {image_size} px) on {self.task} from {n} trajectories"

    # -- checkpoints ---------------------------------------------------------------------

    def _run_facts(self) -> dict[str, Any]:
        facts = self.config.to_dict()
        facts["dataset"] = self.dataset_path
        facts["world_size"] = self.world_size
        return facts

    def _maybe_resume(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        model_state = _training_state(self.checkpoint_path, state)
        check_same_run(self.checkpoint_path, state["run"], self._run_facts(), _RUN_DEFINING,
                       defaults={**config_defaults(DinoWMTrainConfig), "world_size": 1})
        self.model.load_checkpoint(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch_rng, cuda_rng = state["torch_rng"], state.get("cuda_rng")
        if self.ranks.distributed and len(state.get("rank_torch_rng") or []) == self.world_size:
            torch_rng = state["rank_torch_rng"][self.rank]
            cuda_rng = (state.get("rank_cuda_rng") or [cuda_rng] * self.world_size)[self.rank]
        torch.set_rng_state(torch_rng)
        if self.device.type == "cuda" and cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        self.train_rows = list(state["train_rows"])
        self.val_rows = list(state["val_rows"])
        self.wall_before = float(state["wall"])
        if self.ranks.is_main:
            restore_logs(self.out_dir, {"train.csv": self.train_rows, "val.csv": self.val_rows})
        self.log(f"resumed {self.out_dir} at step {self.step} (epoch {self.epoch})")
        return True

    def save_checkpoint(self, wall: float) -> None:
        """checkpoint.pt (everything to continue), then model.pt (the model alone); rank 0
        writes them (every rank calls this, to hand over its generator state)."""
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []
        rngs = self.ranks.gather((torch.get_rng_state(), cuda_rng))
        if not self.ranks.is_main:
            return
        state: dict[str, Any] = {
            "format_version": CHECKPOINT_VERSION,
            "model": _MODEL_NAME,
            "kind": "training",
            "task": str(self.dataset.env.get("task")),
            "obs": "pixels",
            "run": self._run_facts(),
            "model_state": self.model.checkpoint(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "torch_rng": rngs[0][0],
            "cuda_rng": rngs[0][1],
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "wall": wall,
        }
        if self.ranks.distributed:
            state["rank_torch_rng"] = [r[0] for r in rngs]
            state["rank_cuda_rng"] = [r[1] for r in rngs]
        atomic_torch_save(state, self.checkpoint_path)
        extra: dict[str, Any] = {"train_steps": self.step, "epochs": self.epoch, "dataset": self.dataset_path,
                                 "task": str(self.dataset.env.get("task")),
                                 "action_repeat": self.dataset.env.get("action_repeat"),
                                 "image_size": self.dataset.image_size}
        if self.config.encoder_weights is None:
            extra["random_encoder_seed"] = self.config.seed
        atomic_torch_save(self.model.checkpoint(**extra), self.model_path)

    # -- batches -------------------------------------------------------------------------

    def _window_order(self, epoch: int) -> np.ndarray:
        """The training windows of `epoch` in visiting order (a function of seed and epoch,
        so a resumed run visits them as an uninterrupted one)."""
        return np.random.default_rng([self.config.seed, 2, epoch]).permutation(self.train_sampler.num_windows)

    def _window_ids(self, step: int) -> np.ndarray:
        """This rank's windows of `step`: step `s` of an epoch takes positions
        [s W B, (s + 1) W B) of the epoch's order, rank r the r-th run of B of them (W
        processes, B = batch_size), so the ranks' batches, concatenated in rank order, are
        one process's batch of W B. Alone, the epoch's last batch may be smaller; with
        several ranks it wraps around to the epoch's first windows instead (as torch's
        DistributedSampler pads), so no rank gets an empty batch."""
        epoch, index = divmod(step, self.steps_per_epoch)
        order = self._window_order(epoch)
        b, w = self.config.batch_size, self.world_size
        first = (index * w + self.rank) * b
        if w == 1:
            return order[first : first + b]
        return order[np.arange(first, first + b) % len(order)]

    def _train_batch(self, step: int) -> Any:
        pick = self._window_ids(step)
        spt = self.train_sampler.starts_per_trajectory
        return self.train_sampler.get(self.train_trajectories[pick // spt], pick % spt)

    def _decoder_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [B, P, D], images [B, 3, H, W]) of random frames of one training shard."""
        shard = self.decoder_shards[(step // self.steps_per_decoder_shard) % len(self.decoder_shards)]
        pool = self.train_trajectories[self._train_shard_of == shard]
        rng = np.random.default_rng([self.config.seed, 3, step] + ([self.rank] if self.ranks.distributed else []))
        traj = pool[rng.integers(0, len(pool), size=self.config.batch_size)]
        steps = rng.integers(0, self.dataset.steps + 1, size=self.config.batch_size)
        return self._frames(traj, steps)

    def _frames(self, traj: np.ndarray, steps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features.gather(traj, steps[:, None])[:, 0].astype(np.float32)  # [B, P, D]
        images = self.dataset.images_at(traj, steps)  # [B, 3, H, W] uint8
        return torch.from_numpy(feats).to(self.device), torch.from_numpy(images).to(self.device)

    # -- one update and one evaluation ---------------------------------------------------

    def _update(self, step: int) -> dict[str, float]:
        """One AdamW step on the batch of `step` (gradients averaged over the ranks);
        returns this rank's losses."""
        self.model.train()
        batch = self._train_batch(step)
        decoder = self._decoder_batch(step) if self.model.decoder is not None else ()
        total, parts = self._train_loss(batch.features, batch.proprio, batch.actions, *decoder)
        out = {k: float(v) for k, v in parts.items()}
        if not torch.isfinite(total):
            raise FloatingPointError(f"the training loss is {float(total)} at step {step}; lower lr={self.config.lr}")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean losses over the fixed held-out windows (and decoder frames)."""
        self.model.eval()
        spt = self.val_sampler.starts_per_trajectory
        sums = {"loss": 0.0, "visual": 0.0, "proprio": 0.0}
        count = 0
        first = None
        for i in range(0, len(self.val_window_ids), self.config.batch_size):
            pick = self.val_window_ids[i : i + self.config.batch_size]
            batch = self.val_sampler.get(self.val_trajectories[pick // spt], pick % spt)
            loss, parts = self.model.loss(batch.features, batch.proprio, batch.actions)
            n = len(pick)
            sums["loss"] += float(loss) * n
            sums["visual"] += float(parts["visual"]) * n
            sums["proprio"] += float(parts["proprio"]) * n
            count += n
            if first is None:
                first = (batch.trajectories.cpu().numpy(), batch.starts.cpu().numpy())
        out = {k: v / max(count, 1) for k, v in sums.items()}
        if self.model.decoder is not None and first is not None:
            traj, starts = first[0][:_DECODER_VAL_FRAMES], first[1][:_DECODER_VAL_FRAMES]
            feats, images = self._frames(traj, starts)
            out["decoder"] = float(self.model.decoder_loss(feats, images))
        return out

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Collect the data set (with `collect`), then train to `total_steps` (resuming
        where a checkpoint left off).

        Returns:
            The val.csv rows, one per evaluation: step, epoch, val_loss, val_visual,
            val_proprio (val_decoder), wall_s (`train_rows` holds the train.csv rows).
            Rank 0 evaluates; on the other ranks, only rows restored from a checkpoint.
        """
        try:
            self.prepare()
            self._train()
            self.ranks.barrier()  # every rank returns once rank 0's files are written
        finally:
            self.ranks.close()
        self.model.eval()
        return self.val_rows

    def _train(self) -> None:
        c = self.config
        start = time.perf_counter()

        def wall() -> float:
            return self.wall_before + time.perf_counter() - start

        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=min(self.step, self.total_steps), unit="step",
                       desc="train dinowm", dynamic_ncols=True)
        try:
            if self.step == 0 and not self.val_rows:
                self._log_val(wall())  # the untrained model's loss, the baseline of the curve
            finished_before = self.step >= self.total_steps
            while self.step < self.total_steps:
                losses = self._update(self.step)
                self.step += 1
                for key, value in losses.items():
                    self._pending.setdefault(key, []).append(value)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses['loss']:.4f}")
                done = self.step == self.total_steps
                if self.step % c.log_every == 0 or done:
                    self._log_train(wall())
                if self.step % c.eval_every == 0 or done:
                    self._log_val(wall())
                if self.step % c.checkpoint_every == 0 or done:
                    self.save_checkpoint(wall())
            # A run finished before this call still ships model.pt (rank 0's view decides,
            # since every rank takes part in saving).
            if finished_before and not self.ranks.gather(self.model_path.is_file())[0]:
                self.save_checkpoint(wall())
        finally:
            if bar is not None:
                bar.close()

    def _log_train(self, wall: float) -> None:
        if not self._pending:
            return
        keys = [k for k in ("loss", "visual", "proprio", "decoder") if k in self._pending]
        means = [float(np.mean(self._pending[k])) for k in keys]
        if self.ranks.distributed:  # the mean over every rank's windows
            total = torch.tensor(means, dtype=torch.float64, device=self.device)
            dist.all_reduce(total)
            means = (total / self.world_size).tolist()
        row: dict[str, Any] = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3)}
        row.update({k: round(m, 6) for k, m in zip(keys, means)})
        row["wall_s"] = round(wall, 2)
        self._pending = {}
        self.train_rows.append(row)
        if self.ranks.is_main:
            append_csv(self.out_dir / "train.csv", row)

    def _log_val(self, wall: float) -> None:
        if not self.ranks.is_main:  # the others go on; they meet rank 0 at the next step's gradients
            return
        losses = self.evaluate()
        row: dict[str, Any] = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 3)}
        row.update({f"val_{k}": round(v, 6) for k, v in losses.items()})
        row["wall_s"] = round(wall, 2)
        self.val_rows.append(row)
        append_csv(self.out_dir / "val.csv", row)
        self.log(f"step {self.step} (epoch {row['epoch']:.2f}): val loss {losses['loss']:.5f}")


def _quiet(_: str) -> None:
    pass


def _training_state(path: Path, state: Any) -> Mapping[str, Any]:
    """The model checkpoint inside a training checkpoint (this layout or the one before
    headers: kind "dinowm-train", version 1, the model under "model").

    Raises:
        ValueError: not a DINO-WM training checkpoint (what it holds named).
    """
    if isinstance(state, Mapping):
        if (state.get("kind") == "training" and state.get("model") == _MODEL_NAME
                and state.get("format_version") == CHECKPOINT_VERSION):
            return state["model_state"]
        if state.get("kind") == "dinowm-train" and state.get("version") == 1:
            return state["model"]
    what = (f"model={state.get('model')!r}, kind={state.get('kind')!r}, "
            f"format_version={state.get('format_version', state.get('version'))!r}"
            if isinstance(state, Mapping) else type(state).__name__)
    raise ValueError(f"{path} is not a DINO-WM training checkpoint of format_version {CHECKPOINT_VERSION} ({what})")


# --------------------------------------------------------------------------------------
# The command line's factory
# --------------------------------------------------------------------------------------

# What `run_planning.py train --model dinowm` may set, and the defaults of the rest.
TRAIN_OPTIONS: dict[str, Any] = {
    "preset": "cpu",
    "trajectories": 3000,
    "trajectory_steps": 100,
    "policy": "random",
    "epochs": 100,
    "encoder_weights": None,
    "encoder_precision": "float32",
    "batch_size": 32,
}


def make_trainer(*, task: str, steps: int, obs: str, seed: int, out: str | None, device: str,
                 progress: bool, options: Mapping[str, Any]) -> DinoWMTrainer:
    """The trainer `run_planning.py train --model dinowm` runs: collect a data set of
    `task` into `<out>/data` (resumable), then train on it. Constructing is cheap; the
    collection happens in `run()`.

    Args:
        task: a goal task (`envs.list_tasks("goal")`).
        steps, obs: ignored (DINO-WM trains offline, for `epochs`, on pixels).
        seed: seeds the collection, the model and the window order.
        out: the run folder; None: runs/dinowm-<task>-<preset>-s<seed>.
        device: "auto", "cpu", "cuda", ...
        progress: show progress bars.
        options: what the user set of `TRAIN_OPTIONS` (preset, trajectories,
            trajectory_steps, policy, epochs, encoder_weights, encoder_precision,
            batch_size); absent ones take the defaults there.

    Raises:
        ValueError: a task that is not a goal task, an unknown option or a bad value (each
            named, with what is accepted).
        FileNotFoundError: `encoder_weights` names no file.
    """
    import envs

    del steps, obs  # offline, from pixels
    goal_tasks = envs.list_tasks("goal")
    if task not in goal_tasks:
        raise ValueError(f"dinowm trains on goal tasks {goal_tasks}, not {task!r}")
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown dinowm training options {unknown}; accepted: {sorted(TRAIN_OPTIONS)}")
    o = {**TRAIN_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    choices = {"preset": PRESETS, "policy": POLICIES, "encoder_precision": ENCODER_PRECISIONS}
    for name, accepted in choices.items():
        if o[name] not in accepted:
            raise ValueError(f"unknown dinowm {name} {o[name]!r}; accepted: {list(accepted)}")
    for name in ("trajectories", "trajectory_steps", "epochs", "batch_size"):
        if not isinstance(o[name], int) or isinstance(o[name], bool) or o[name] < 1:
            raise ValueError(f"dinowm {name}={o[name]!r} must be a positive int")
    preset = o["preset"]
    image_size = getattr(DinoWMConfig, preset)(1, 1).image_size
    out_dir = Path(out) if out else Path("runs") / f"dinowm-{task}-{preset}-s{seed}"
    collect_config = CollectConfig(task=task, num_trajectories=o["trajectories"], steps=o["trajectory_steps"],
                                   image_size=image_size, policy=o["policy"], seed=seed)
    config = DinoWMTrainConfig(dataset=str(out_dir / "data"), preset=preset, epochs=o["epochs"], seed=seed,
                               batch_size=o["batch_size"], encoder_weights=o["encoder_weights"],
                               encoder_precision=o["encoder_precision"], device=device)
    return DinoWMTrainer(config, out_dir, progress=progress, collect=collect_config)
