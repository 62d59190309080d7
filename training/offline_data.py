"""Offline data sets for DINO-WM (Zhou et al., 2024, "DINO-WM: World Models on Pre-trained
Visual Features enable Zero-shot Planning"): collection, loading, a frozen-encoder feature
cache, training windows and evaluation goals.

DINO-WM trains its predictor offline, on a fixed set of trajectories (Reacher: 3000 x 100
steps, shared/ANCHORS.md section 2), from the patch features of a frozen DINOv2 that are
computed once. This module provides each stage:

    config = CollectConfig(task="reacher-pose", num_trajectories=3000, steps=100)
    dataset = collect(config, "data/reacher")              # resumable
    features = cache_features(dataset, model, batch_size=256)  # resumable, float16
    sampler = WindowSampler.for_model(dataset, features, model.config, trajectories=dataset.split()[0])
    model.set_normalization(**dataset.normalization())
    batch = sampler.sample(32)
    loss, parts = model.loss(batch.features, batch.proprio, batch.actions)
    goals = sample_goals(dataset, count=50, seed=0, offset=25)  # held-out trajectories

Files (all written atomically: a temp file beside the target, then a rename, so a killed
run never leaves a half-written file under a final name):

    <root>/manifest.json       format_version, config, env facts, shard list, counts,
                               complete flag, normalisation statistics
    <root>/shard-00000.npz     np.savez_compressed, one row per trajectory:
        images         uint8   [N, T+1, 3, H, W]  the env's pixel observation of every step
        actions        float32 [N, T, A]          env actions in [-1, 1]; actions[:, t]
                                                  leads from frame t to frame t + 1
        proprio        float32 [N, T+1, Pd]       qpos then qvel of the MuJoCo model (below)
        states         float64 [N, T+1, S]        full physics state (mjSTATE_FULLPHYSICS,
                                                  `env.get_physics_state()`)
        achieved_goal  float32 [N, T+1, G]        the goal task's achieved goal per step
        desired_goal   float32 [N, G]             the episode's own goal (what the noisy
                                                  planner steers to; unused by DINO-WM)
        seeds          int64   [N]                the env reset seed of each trajectory
    <root>/features-<encoder-id>/features.json    encoder identity, dtype, shapes, shards
    <root>/features-<encoder-id>/shard-00000.npy  float16 [N, T+1, P, D] patch features

Proprio, per task: ``concat(qpos, qvel)`` read from the physics, which for the supported
goal tasks equals dm_control's "position" and "velocity" observation entries:
reacher-pose / reacher-target: [shoulder, wrist, shoulder velocity, wrist velocity]
(radians, rad/s; the shoulder angle is NOT wrapped, it grows past pi as the arm turns);
point_mass-goal: [x, y, vx, vy] (metres, m/s); finger-turn_goal: [proximal, distal,
hinge] angles then their velocities. The manifest's ``env.proprio`` records this.

Time steps. One step of the data set is one agent step of the env (``action_repeat``
control steps, recorded in the manifest); DINO-WM's model step covers ``frameskip`` of them.
Trajectory i is reset with seed ``config.seed + i`` and its actions come from a generator
seeded with ``(config.seed, i)``, so any shard can be rebuilt alone: a resumed collection
equals an uninterrupted one.

Shapes:
    N trajectories (in a shard or a set), T steps per trajectory, A action size, Pd proprio
    size, S physics-state size, G goal size, P patches, D encoder width, B batch,
    Hh history, fs frameskip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from planners.precision import warn_if_bfloat16_is_slow

__all__ = [
    "FORMAT_VERSION",
    "CachedFeatures",
    "CollectConfig",
    "EncoderIdentity",
    "GoalSet",
    "OfflineDataset",
    "WindowBatch",
    "WindowSampler",
    "cache_features",
    "collect",
    "encoder_identity",
    "load_cached_features",
    "sample_goals",
    "write_dataset",
]

FORMAT_VERSION = 1
ENCODER_PRECISIONS = ("float32", "bfloat16")  # of the frozen encoder when caching features
MANIFEST = "manifest.json"
FEATURES_INFO = "features.json"
_KIND = "wmpc-offline-dataset"
_FEATURES_KIND = "wmpc-feature-cache"
Policy = Literal["random", "noisy_planner"]
POLICIES = ("random", "noisy_planner")

# Per-trajectory layout of every shard array: (dtype, trailing shape with symbolic sizes).
# "T1" is T + 1 frames. Required arrays first; the rest are optional (hand-made data sets).
_LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "images": ("uint8", ("T1", "3", "H", "W")),
    "actions": ("float32", ("T", "A")),
    "proprio": ("float32", ("T1", "Pd")),
    "states": ("float64", ("T1", "S")),
    "achieved_goal": ("float32", ("T1", "G")),
    "desired_goal": ("float32", ("G",)),
    "seeds": ("int64", ()),
}
_REQUIRED = ("images", "actions", "proprio", "states")
_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, zlib.error)


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write through `write(file)` into a temp file beside `path`, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_savez_compressed(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    _atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def _atomic_save_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True), binary=False)


def _remove_temp_files(folder: Path) -> list[Path]:
    """Delete what a killed atomic write left behind (`.<name>.<random>.tmp`)."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# --------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectConfig:
    """What `collect` gathers.

    Attributes:
        task: a goal task of `envs.make` ("reacher-pose", "point_mass-goal", ...).
        num_trajectories: N (DINO-WM's Reacher set: 3000).
        steps: T agent steps per trajectory (DINO-WM: 100); frames are T + 1.
        image_size: side of the stored pixel observations (the model resizes them to its
            own `image_size`; render at 224 to feed the paper's 196 px).
        policy: "random" (uniform actions in [-1, 1], DINO-WM's) or "noisy_planner": iCEM
            over the true physics (`models.oracle.OracleModel`, small budget) steering to
            the episode's own goal, plus Gaussian noise of std `noise_std`, clipped to
            [-1, 1] (purposeful but varied data).
        noise_std: std of that noise (noisy_planner only).
        seed: trajectory i is reset with seed + i.
        shard_size: trajectories per shard file.
        action_repeat: control steps per agent step; None: the env's preset (recorded).
        planner_horizon: horizon of the noisy planner in agent steps; None: the task's
            `models.oracle_presets` horizon.
        planner_budget: candidates the noisy planner scores per step (over 3 iterations).
    """

    task: str = "reacher-pose"
    num_trajectories: int = 3000
    steps: int = 100
    image_size: int = 112
    policy: Policy = "random"
    noise_std: float = 0.3
    seed: int = 0
    shard_size: int = 100
    action_repeat: int | None = None
    planner_horizon: int | None = None
    planner_budget: int = 60

    def __post_init__(self) -> None:
        for name in ("num_trajectories", "steps", "image_size", "shard_size", "planner_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        for name in ("action_repeat", "planner_horizon"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive int or None")
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; accepted: {list(POLICIES)}")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std={self.noise_std!r} must be a finite number >= 0")
        if not isinstance(self.seed, int) or self.seed < 0 or self.seed + self.num_trajectories > 2**32:
            raise ValueError(f"seed={self.seed!r} must be an int >= 0 with seed + num_trajectories <= 2**32")

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_trajectories / self.shard_size)

    def shard_range(self, index: int) -> range:
        """The trajectory indices of shard `index`."""
        start = index * self.shard_size
        return range(start, min(start + self.shard_size, self.num_trajectories))


def _proprio_description(task: str, physics: Any) -> str:
    try:
        names = list(physics.named.data.qpos.axes.row.names)
    except AttributeError:  # pragma: no cover - dm_control always names them
        names = [f"q{i}" for i in range(physics.model.nq)]
    return (f"{task}: qpos {names} then qvel of the same joints (dm_control 'position' and "
            f"'velocity'; angles unwrapped, radians; positions in metres)")


def _proprio(physics: Any) -> np.ndarray:
    """qpos then qvel, float32 [Pd]."""
    return np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float32)


class _Collector:
    """One env (and, for noisy_planner, one oracle planner) reused for every trajectory."""

    def __init__(self, config: CollectConfig, num_threads: int) -> None:
        import envs

        self.config = config
        try:
            self.env = envs.make(config.task, obs="pixels", image_size=config.image_size, seed=config.seed,
                                 action_repeat=config.action_repeat, time_limit=config.steps)
        except ValueError as error:
            raise ValueError(f"CollectConfig.task={config.task!r}: {error}") from None
        if not getattr(self.env, "is_goal_env", False):
            self.env.close()
            raise ValueError(
                f"CollectConfig.task={config.task!r} is not a goal task; accepted: {sorted(envs.GOAL_TASKS)}"
            )
        self.action_dim = int(self.env.action_space.shape[0])
        self.oracle = None
        self.planner = None
        if config.policy == "noisy_planner":
            from models.oracle import OracleModel
            from models.oracle_presets import matched_planner, oracle_settings

            # "zero" warm start: a rollout is a pure function of the state, so a shard
            # collected alone (on resume) equals one collected after other trajectories.
            self.oracle = OracleModel(self.env, num_threads=num_threads, warmstart="zero")
            horizon = config.planner_horizon or oracle_settings(config.task)["horizon"]
            self.planner = matched_planner("icem", self.action_dim, horizon, config.planner_budget)

    def env_facts(self) -> dict[str, Any]:
        env = self.env
        physics = env.physics
        return {
            "task": env.task_id.name,
            "action_dim": self.action_dim,
            "proprio_dim": int(physics.model.nq + physics.model.nv),
            "state_size": int(env.physics_state_size),
            "goal_dim": int(env.observation_space["desired_goal"].shape[0]),
            "image_size": self.config.image_size,
            "action_repeat": int(env.action_repeat),
            "control_timestep": float(env.control_timestep),
            "proprio": _proprio_description(env.task_id.name, physics),
        }

    def trajectory(self, index: int) -> dict[str, np.ndarray]:
        """Roll out trajectory `index` (deterministic in config.seed and index)."""
        from planners import MPCController

        config, env = self.config, self.env
        reset_seed = config.seed + index
        rng = np.random.default_rng([config.seed, index])
        obs, _ = env.reset(seed=reset_seed)
        controller = None
        if self.oracle is not None:
            controller = MPCController(self.oracle, self.planner, discount=1.0, use_value=False,
                                       seed=reset_seed, device="cpu")
        images, proprio, states, achieved, actions = [], [], [], [], []
        for t in range(config.steps + 1):
            images.append(obs["observation"])
            proprio.append(_proprio(env.physics))
            states.append(env.get_physics_state())
            achieved.append(obs["achieved_goal"])
            if t == config.steps:
                break
            if controller is None:
                action = rng.uniform(-1.0, 1.0, size=self.action_dim)
            else:
                planned = controller.act(env.get_physics_state())
                action = np.clip(planned + config.noise_std * rng.standard_normal(self.action_dim), -1.0, 1.0)
            action = action.astype(np.float32)
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or (truncated and t + 1 < config.steps):
                raise RuntimeError(f"{config.task} ended after {t + 1} of {config.steps} steps")
        return {
            "images": np.stack(images).astype(np.uint8),
            "actions": np.stack(actions).astype(np.float32),
            "proprio": np.stack(proprio).astype(np.float32),
            "states": np.stack(states).astype(np.float64),
            "achieved_goal": np.stack(achieved).astype(np.float32),
            "desired_goal": env.desired_goal.astype(np.float32),
            "seeds": np.int64(reset_seed),
        }

    def close(self) -> None:
        if self.oracle is not None:
            self.oracle.close()
        self.env.close()


def _stack_trajectories(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} (existing) vs {new.get(k)!r} (requested)" for k in keys if old.get(k) != new.get(k)]


def _layout_sizes(env: Mapping[str, Any], steps: int) -> dict[str, int]:
    return {
        "T": steps, "T1": steps + 1, "3": 3, "H": env["image_size"], "W": env["image_size"],
        "A": env["action_dim"], "Pd": env["proprio_dim"], "S": env["state_size"], "G": env.get("goal_dim", 0),
    }


def collect(config: CollectConfig, out_dir: str | os.PathLike[str], progress: bool = True,
            num_threads: int = 1) -> OfflineDataset:
    """Collect (or finish collecting) a data set of pixel trajectories.

    Resumable: shards already in `out_dir` (written atomically, so present means complete)
    are kept, temp files of a killed write are deleted, and collection continues with the
    first missing shard. A shard that fails to read is collected again (with a warning).
    Because every trajectory is seeded by its index, the result equals an uninterrupted run.

    Args:
        config: what to collect.
        out_dir: the data set folder (created).
        progress: show a tqdm bar over trajectories.
        num_threads: MuJoCo rollout threads of the noisy planner.

    Returns:
        The finished `OfflineDataset`.

    Raises:
        ValueError: `out_dir` holds a data set with another config (the differing fields
            are named), or a bad task.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _remove_temp_files(root)
    manifest_path = root / MANIFEST
    old: dict[str, Any] | None = None
    if manifest_path.is_file():
        old = _read_json(manifest_path, "manifest")
        if old.get("config") != asdict(config):
            diffs = _config_differences(old.get("config") or {}, asdict(config))
            raise ValueError(
                f"{root} holds a data set collected with another config ({'; '.join(diffs)}); "
                "use another out_dir, or the same config to resume"
            )
    collector = _Collector(config, num_threads)
    try:
        env = collector.env_facts()
        if old is not None and old.get("env") != env:
            raise ValueError(f"{root}: the env differs from the one the data set was collected with: "
                             f"{old.get('env')} vs {env}")
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": _KIND, "config": asdict(config), "env": env,
            "steps": config.steps, "num_trajectories": config.num_trajectories, "shard_size": config.shard_size,
            "arrays": {k: {"dtype": d, "shape": ["N", *s]} for k, (d, s) in _LAYOUT.items()},
            "shards": [], "num_collected": 0, "complete": False, "stats": None,
        }
        sizes = _layout_sizes(env, config.steps)
        done: dict[int, dict[str, Any]] = {}
        for index in range(config.num_shards):
            path = root / _shard_name(index)
            if not path.is_file():
                continue
            entry = _shard_entry(index, config.shard_range(index))
            try:
                _check_shard_headers(path, sizes, entry["num_trajectories"], tuple(_LAYOUT))
                done[index] = entry
            except ValueError as error:
                warnings.warn(f"{error}; collecting it again", UserWarning, stacklevel=2)
                path.unlink()
        _write_manifest(root, manifest, done)
        todo = [i for i in range(config.num_shards) if i not in done]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=config.num_trajectories, initial=sum(e["num_trajectories"] for e in done.values()),
                       unit="traj", desc=f"collect {config.task}")
        for index in todo:
            rows = []
            for traj in config.shard_range(index):
                rows.append(collector.trajectory(traj))
                if bar is not None:
                    bar.update(1)
            _atomic_savez_compressed(root / _shard_name(index), _stack_trajectories(rows))
            done[index] = _shard_entry(index, config.shard_range(index))
            _write_manifest(root, manifest, done)
        if bar is not None:
            bar.close()
    finally:
        collector.close()
    dataset = OfflineDataset(root, allow_incomplete=True)
    manifest["complete"] = True
    manifest["stats"] = dataset.compute_stats()
    _write_manifest(root, manifest, done)
    return OfflineDataset(root)


def _shard_entry(index: int, trajectories: range) -> dict[str, Any]:
    return {"file": _shard_name(index), "index": index, "first_trajectory": trajectories.start,
            "num_trajectories": len(trajectories)}


def _write_manifest(root: Path, manifest: dict[str, Any], done: Mapping[int, dict[str, Any]]) -> None:
    manifest["shards"] = [done[i] for i in sorted(done)]
    manifest["num_collected"] = sum(e["num_trajectories"] for e in done.values())
    _atomic_save_json(root / MANIFEST, manifest)


def write_dataset(out_dir: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], shard_size: int,
                  env: Mapping[str, Any] | None = None) -> OfflineDataset:
    """Write arrays gathered elsewhere (your own robot, tests) in the data set format.

    Args:
        out_dir: a new or empty folder.
        arrays: at least images uint8 [N, T+1, 3, H, W], actions [N, T, A], proprio
            [N, T+1, Pd], states [N, T+1, S]; optionally achieved_goal, desired_goal, seeds.
        shard_size: trajectories per shard.
        env: extra facts for the manifest's "env" entry (task, action_repeat, proprio ...).

    Returns:
        The `OfflineDataset` (complete, with statistics).
    """
    root = Path(out_dir)
    if (root / MANIFEST).exists():
        raise ValueError(f"{root} already holds a data set; write into a new folder")
    missing = [k for k in _REQUIRED if k not in arrays]
    unknown = sorted(set(arrays) - set(_LAYOUT))
    if missing or unknown:
        raise ValueError(f"write_dataset needs arrays {list(_REQUIRED)} (optional: "
                         f"{[k for k in _LAYOUT if k not in _REQUIRED]}); missing {missing}, unknown {unknown}")
    data = {k: np.asarray(v, dtype=_LAYOUT[k][0]) for k, v in arrays.items()}
    images = data["images"]
    if images.ndim != 5 or images.shape[2] != 3 or images.shape[3] != images.shape[4]:
        raise ValueError(f"images have shape {images.shape}; expected [N, T+1, 3, H, H]")
    n, t1 = images.shape[:2]
    facts = {
        "task": "custom", "action_dim": int(data["actions"].shape[-1]), "proprio_dim": int(data["proprio"].shape[-1]),
        "state_size": int(data["states"].shape[-1]), "image_size": int(images.shape[-1]), "action_repeat": None,
        "goal_dim": int(data["achieved_goal"].shape[-1]) if "achieved_goal" in data else 0,
        "proprio": "given by the writer",
    }
    facts.update(env or {})
    keys = tuple(k for k in _LAYOUT if k in data)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "kind": _KIND, "config": None, "env": facts, "steps": t1 - 1,
        "num_trajectories": n, "shard_size": shard_size,
        "arrays": {k: {"dtype": _LAYOUT[k][0], "shape": ["N", *_LAYOUT[k][1]]} for k in keys},
        "shards": [], "num_collected": 0, "complete": False, "stats": None,
    }
    sizes = _layout_sizes(facts, t1 - 1)
    done = {}
    for index in range(math.ceil(n / shard_size)):
        rows = range(index * shard_size, min((index + 1) * shard_size, n))
        shard = {k: v[rows.start : rows.stop] for k, v in data.items()}
        for key, value in shard.items():
            expected = (len(rows), *_expected_shape(key, sizes))
            if value.shape != expected:
                raise ValueError(f"{key} has shape {(n, *value.shape[1:])}; expected {(n, *expected[1:])}")
        _atomic_savez_compressed(root / _shard_name(index), shard)
        done[index] = _shard_entry(index, rows)
    _write_manifest(root, manifest, done)
    manifest["complete"] = True
    manifest["stats"] = OfflineDataset(root, allow_incomplete=True).compute_stats()
    _write_manifest(root, manifest, done)
    return OfflineDataset(root)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is corrupt ({error}); it is not valid JSON") from error


def _expected_shape(key: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sizes[s] if s in sizes else int(s) for s in _LAYOUT[key][1])


def _corrupt(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"shard {path} is truncated or corrupt ({type(error).__name__}: {error}); delete it and run collect() "
        "again with the same config to rewrite it"
    )


def _check_shard_headers(path: Path, sizes: Mapping[str, int], n: int, keys: Sequence[str]) -> None:
    """Check a shard's arrays (names, dtypes, shapes) from the .npy headers alone (cheap:
    nothing is decompressed beyond the headers). Raises ValueError naming the file."""
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                shapes[name.removesuffix(".npy")] = (tuple(shape), dtype)
    except FileNotFoundError:
        raise FileNotFoundError(f"shard {path} listed in the manifest is missing; rerun collect() to rewrite it") from None
    except _READ_ERRORS as error:
        raise _corrupt(path, error) from error
    missing = [k for k in keys if k not in shapes]
    if missing:
        raise ValueError(f"shard {path} lacks arrays {missing} (has {sorted(shapes)}); it is truncated or corrupt")
    counts = {k: shapes[k][0][0] if shapes[k][0] else None for k in keys}
    if len(set(counts.values())) != 1:
        raise ValueError(f"shard {path}: arrays disagree on the number of trajectories N: {counts}")
    if counts[keys[0]] != n:
        raise ValueError(f"shard {path} holds {counts[keys[0]]} trajectories; the manifest says {n}")
    for key in keys:
        shape, dtype = shapes[key]
        expected = (n, *_expected_shape(key, sizes))
        if shape != expected or dtype != np.dtype(_LAYOUT[key][0]):
            raise ValueError(
                f"shard {path}: {key} is {dtype} {shape}, expected {_LAYOUT[key][0]} {expected} "
                f"(N={n}, T={sizes['T']} from the manifest; arrays must agree in N and T)"
            )


class OfflineDataset:
    """A data set written by `collect` or `write_dataset`, read lazily shard by shard.

    Small arrays (actions, proprio, states, achieved goals) are loaded for all trajectories
    on first use; images are read one shard at a time. Trajectory i is row
    i - first_trajectory of its shard.

    Args:
        root: the data set folder.
        allow_incomplete: open a data set whose collection has not finished (only its
            complete shards are visible).

    Raises:
        FileNotFoundError: no manifest.json in `root`.
        ValueError: another format version, an unfinished collection, or (on access) a
            truncated or corrupt shard, or one whose arrays disagree in N or T.
    """

    def __init__(self, root: str | os.PathLike[str], allow_incomplete: bool = False) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"no data set at {self.root}: {MANIFEST} is missing (write one with collect())")
        manifest = _read_json(path, "manifest")
        if manifest.get("kind") != _KIND or manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a data set of format_version {FORMAT_VERSION} "
                             f"(kind={manifest.get('kind')!r}, format_version={manifest.get('format_version')!r})")
        if not manifest.get("complete") and not allow_incomplete:
            raise ValueError(
                f"the data set at {self.root} is incomplete ({manifest.get('num_collected')} of "
                f"{manifest.get('num_trajectories')} trajectories); rerun collect() with the same config to finish it, "
                "or pass allow_incomplete=True"
            )
        self.manifest = manifest
        self.env: dict[str, Any] = manifest["env"]
        self.steps: int = int(manifest["steps"])
        self.keys: tuple[str, ...] = tuple(k for k in _LAYOUT if k in manifest["arrays"])
        self.shards: list[dict[str, Any]] = list(manifest["shards"])
        counts = [int(e["num_trajectories"]) for e in self.shards]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._sizes = _layout_sizes(self.env, self.steps)
        self._checked: set[int] = set()
        self._arrays: dict[str, np.ndarray] = {}
        self._image_cache: tuple[int, np.ndarray] | None = None

    # -- facts -----------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (f"OfflineDataset({str(self.root)!r}, task={self.env.get('task')!r}, N={len(self)}, T={self.steps}, "
                f"shards={len(self.shards)})")

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def action_dim(self) -> int:
        return int(self.env["action_dim"])

    @property
    def proprio_dim(self) -> int:
        return int(self.env["proprio_dim"])

    @property
    def image_size(self) -> int:
        return int(self.env["image_size"])

    def shard_path(self, shard: int) -> Path:
        return self.root / self.shards[shard]["file"]

    def shard_trajectories(self, shard: int) -> range:
        """The global indices of the trajectories in `shard`."""
        return range(int(self._offsets[shard]), int(self._offsets[shard + 1]))

    def locate(self, trajectories: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Global trajectory indices -> (shard, row within the shard)."""
        index = np.asarray(trajectories, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"trajectory indices must be in [0, {len(self)}); got {index.min()}..{index.max()}")
        shard = np.searchsorted(self._offsets, index, side="right") - 1
        return shard, index - self._offsets[shard]

    # -- reading ---------------------------------------------------------------------

    def check_shard(self, shard: int) -> None:
        """Names, dtypes and shapes of a shard against the manifest (headers only)."""
        if shard not in self._checked:
            n = int(self.shards[shard]["num_trajectories"])
            _check_shard_headers(self.shard_path(shard), self._sizes, n, self.keys)
            self._checked.add(shard)

    def load_shard(self, shard: int, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of one shard (all keys by default), fully read and checked.

        Raises:
            ValueError: the file is truncated or corrupt (named), or its shapes disagree.
        """
        self.check_shard(shard)
        path = self.shard_path(shard)
        wanted = self.keys if keys is None else tuple(keys)
        unknown = [k for k in wanted if k not in self.keys]
        if unknown:
            raise KeyError(f"unknown arrays {unknown}; this data set has {list(self.keys)}")
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in wanted}
        except _READ_ERRORS as error:
            raise _corrupt(path, error) from error

    def verify(self) -> None:
        """Read every shard in full (catches corruption inside compressed data)."""
        for shard in range(self.num_shards):
            self.load_shard(shard)

    def array(self, key: str) -> np.ndarray:
        """All trajectories of a small array (not images), cached: [N, ...]."""
        if key == "images":
            raise ValueError("images are read per shard (load_shard, images_at); they may not fit in memory")
        if key not in self._arrays:
            self._arrays[key] = np.concatenate([self.load_shard(s, [key])[key] for s in range(self.num_shards)])
        return self._arrays[key]

    def images_at(self, trajectories: np.ndarray | Sequence[int], steps: np.ndarray | Sequence[int]) -> np.ndarray:
        """Frames at (trajectory, step) pairs: uint8 [K, 3, H, W] (shards read one at a time)."""
        traj = np.asarray(trajectories, dtype=np.int64)
        step = np.asarray(steps, dtype=np.int64)
        shard, row = self.locate(traj)
        out = np.empty((len(traj), 3, self.image_size, self.image_size), dtype=np.uint8)
        for s in np.unique(shard):
            if self._image_cache is None or self._image_cache[0] != s:
                self._image_cache = (int(s), self.load_shard(int(s), ["images"])["images"])
            pick = shard == s
            out[pick] = self._image_cache[1][row[pick], step[pick]]
        return out

    # -- statistics and splits -------------------------------------------------------

    def compute_stats(self) -> dict[str, list[float]]:
        """Per-dimension mean and std (population) of the actions [A] and proprio [Pd]
        over every step of every trajectory (DINO-WM z-scores both)."""
        actions = self.array("actions").reshape(-1, self.action_dim).astype(np.float64)
        proprio = self.array("proprio").reshape(-1, self.proprio_dim).astype(np.float64)
        return {
            "action_mean": actions.mean(0).tolist(), "action_std": actions.std(0).tolist(),
            "proprio_mean": proprio.mean(0).tolist(), "proprio_std": proprio.std(0).tolist(),
        }

    @property
    def stats(self) -> dict[str, list[float]]:
        """The manifest's statistics (computed when the collection finished)."""
        return self.manifest.get("stats") or self.compute_stats()

    def normalization(self) -> dict[str, Tensor]:
        """Keyword arguments for `DinoWM.set_normalization` (float32 tensors)."""
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.stats.items()}

    def split(self, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """(train, held-out) trajectory indices: the last ceil(val_fraction * N)
        trajectories are held out (deterministic; goals come from them)."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction!r} must be in (0, 1)")
        n = len(self)
        held = min(n - 1, max(1, math.ceil(val_fraction * n)))
        return np.arange(n - held), np.arange(n - held, n)


# --------------------------------------------------------------------------------------
# Feature cache
# --------------------------------------------------------------------------------------


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
    _remove_temp_files(folder)
    info_path = folder / FEATURES_INFO
    info: dict[str, Any]
    if info_path.is_file():
        info = _read_json(info_path, "feature cache info")
        _check_identity(folder, info, identity)
        if info.get("dataset") != _dataset_facts(dataset):
            raise ValueError(f"the feature cache {folder} was made for another data set "
                             f"({info.get('dataset')} vs {_dataset_facts(dataset)})")
    else:
        info = {"format_version": FORMAT_VERSION, "kind": _FEATURES_KIND, "encoder": asdict(identity),
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
            except ValueError:
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
            _atomic_save_json(info_path, info)
        _atomic_save_npy(path, features)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not info_path.is_file():  # a data set without shards
        _atomic_save_json(info_path, info)
    return load_cached_features(dataset, folder, identity=identity)


def _dataset_facts(dataset: OfflineDataset) -> dict[str, Any]:
    return {"steps": dataset.steps, "shards": [int(e["num_trajectories"]) for e in dataset.shards],
            "image_size": dataset.image_size}


def _open_feature_shard(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"feature shard {path} is missing; rerun cache_features() to finish the cache") from None
    except _READ_ERRORS as error:
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
    info = _read_json(info_path, "feature cache info")
    if info.get("kind") != _FEATURES_KIND or info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{info_path} is not a feature cache of format_version {FORMAT_VERSION}")
    if identity is not None:
        _check_identity(folder, info, identity)
    if info.get("dataset") != _dataset_facts(dataset):
        raise ValueError(f"the feature cache {folder} was made for another data set "
                         f"({info.get('dataset')} vs {_dataset_facts(dataset)})")
    if info.get("feature_shape") is None:
        raise FileNotFoundError(f"the feature cache {folder} has no shards yet; run cache_features()")
    return CachedFeatures(dataset, folder, info)


# --------------------------------------------------------------------------------------
# Training windows
# --------------------------------------------------------------------------------------


class WindowBatch(NamedTuple):
    """One training batch for `DinoWM.loss(features, proprio, actions)`.

    Shapes:
        features float32 [B, Hh+1, P, D]: frames t, t + fs, ..., t + Hh * fs.
        proprio  float32 [B, Hh+1, Pd]: raw (the model z-scores it).
        actions  float32 [B, Hh+1, A * fs]: raw env actions; row j is
            [a_{t+j fs}, ..., a_{t+j fs+fs-1}] concatenated (a_{t+j fs} first), leading
            from frame j to frame j + 1. The last row (which the loss ignores) is zero
            where it would run past the trajectory's end.
        trajectories, starts int64 [B]: where each window comes from.
    """

    features: Tensor
    proprio: Tensor
    actions: Tensor
    trajectories: Tensor
    starts: Tensor


class WindowSampler:
    """Random DINO-WM training windows: `history + 1` frames `frameskip` steps apart.

    Args:
        dataset: the data set.
        features: its feature cache.
        history: Hh, the predictor's window (3 in the paper).
        frameskip: fs, env steps per model step (5 in the paper).
        trajectories: the trajectories to draw from (e.g. `dataset.split()[0]`); all by
            default.
        seed: seeds the sampling.
        device: where the batches go.
    """

    def __init__(self, dataset: OfflineDataset, features: CachedFeatures, history: int = 3, frameskip: int = 5,
                 trajectories: Sequence[int] | np.ndarray | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> None:
        if history < 1 or frameskip < 1:
            raise ValueError(f"history={history!r} and frameskip={frameskip!r} must be positive")
        span = history * frameskip
        if span > dataset.steps:
            raise ValueError(f"a window spans history * frameskip = {span} steps; the trajectories have "
                             f"T={dataset.steps}")
        if features.dataset is not dataset and features.dataset.root != dataset.root:
            raise ValueError("the features were cached from another data set")
        self.dataset, self.features = dataset, features
        self.history, self.frameskip = history, frameskip
        traj = np.arange(len(dataset)) if trajectories is None else np.asarray(trajectories, dtype=np.int64)
        if traj.size == 0:
            raise ValueError("no trajectories to sample from")
        dataset.locate(traj)  # range check
        self.trajectories = traj
        self.starts_per_trajectory = dataset.steps - span + 1  # t in [0, T - Hh * fs]
        self.rng = np.random.default_rng(seed)
        self.device = torch.device(device)
        self._actions = dataset.array("actions")  # [N, T, A]
        self._proprio = dataset.array("proprio")  # [N, T+1, Pd]

    @classmethod
    def for_model(cls, dataset: OfflineDataset, features: CachedFeatures, config: Any, **kwargs: Any) -> WindowSampler:
        """History and frameskip from a `DinoWMConfig`."""
        return cls(dataset, features, history=config.history, frameskip=config.frameskip, **kwargs)

    @property
    def num_windows(self) -> int:
        return len(self.trajectories) * self.starts_per_trajectory

    def get(self, trajectories: np.ndarray | Sequence[int], starts: np.ndarray | Sequence[int]) -> WindowBatch:
        """The windows starting at step starts[b] of trajectory trajectories[b]."""
        traj = np.asarray(trajectories, dtype=np.int64)
        start = np.asarray(starts, dtype=np.int64)
        if start.shape != traj.shape or start.ndim != 1:
            raise ValueError(f"trajectories {traj.shape} and starts {start.shape} must be equal 1-D shapes")
        if start.size and (start.min() < 0 or start.max() >= self.starts_per_trajectory):
            raise ValueError(f"window starts must be in [0, {self.starts_per_trajectory}); got {start.min()}..{start.max()}")
        fs, t = self.frameskip, self.dataset.steps
        frames = start[:, None] + fs * np.arange(self.history + 1)  # [B, Hh+1]
        feats = self.features.gather(traj, frames).astype(np.float32)  # [B, Hh+1, P, D]
        proprio = self._proprio[traj[:, None], frames]  # [B, Hh+1, Pd]
        steps = frames[..., None] + np.arange(fs)  # [B, Hh+1, fs]: the env steps of each chunk
        valid = steps < t
        actions = self._actions[traj[:, None, None], np.minimum(steps, t - 1)]  # [B, Hh+1, fs, A]
        actions = np.where(valid[..., None], actions, 0.0).astype(np.float32)
        actions = actions.reshape(*actions.shape[:2], fs * self.dataset.action_dim)  # [B, Hh+1, fs * A], a_0 first
        def to(x: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        return WindowBatch(to(feats), to(proprio), to(actions), to(traj), to(start))

    def sample(self, batch_size: int) -> WindowBatch:
        """`batch_size` windows drawn uniformly (with replacement) from all valid windows."""
        pick = self.rng.integers(0, self.num_windows, size=batch_size)
        return self.get(self.trajectories[pick // self.starts_per_trajectory], pick % self.starts_per_trajectory)

    def epoch(self, batch_size: int) -> Iterator[WindowBatch]:
        """Every window once, shuffled (the last batch may be smaller)."""
        order = self.rng.permutation(self.num_windows)
        for i in range(0, len(order), batch_size):
            pick = order[i : i + batch_size]
            yield self.get(self.trajectories[pick // self.starts_per_trajectory], pick % self.starts_per_trajectory)


# --------------------------------------------------------------------------------------
# Evaluation goals
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoalSet:
    """Start/goal pairs, the goal `offset` env steps after the start on one trajectory.

    Attributes (K goals):
        start_states, goal_states: float64 [K, S] physics states (`env.set_physics_state`).
        start_images, goal_images: uint8 [K, 3, H, W].
        start_proprio, goal_proprio: float32 [K, Pd].
        goal_achieved: float32 [K, G] the goal task's achieved goal at the goal state
            (success: `env.compute_success(achieved, goal_achieved)`); None without it.
        trajectories: int64 [K] data set trajectory (or env reset seed for an env source).
        start_steps: int64 [K] the start's step on that trajectory.
        offset: env steps from start to goal.
    """

    start_states: np.ndarray
    goal_states: np.ndarray
    start_images: np.ndarray
    goal_images: np.ndarray
    start_proprio: np.ndarray
    goal_proprio: np.ndarray
    goal_achieved: np.ndarray | None
    trajectories: np.ndarray
    start_steps: np.ndarray
    offset: int

    def __len__(self) -> int:
        return len(self.start_states)


def sample_goals(source: OfflineDataset | Any, count: int, seed: int = 0, offset: int = 25,
                 trajectories: Sequence[int] | np.ndarray | None = None) -> GoalSet:
    """DINO-WM's evaluation goals: the state `offset` env steps ahead on a held-out trajectory.

    Args:
        source: an `OfflineDataset` (start = a uniformly drawn step t of a held-out
            trajectory, goal = its step t + offset), or a pixel goal env from `envs.make`
            (goal k: reset with seed + k, `offset` uniform random actions; start = the
            reset state). With an env, pick seeds no training trajectory used (collection
            uses config.seed + i), and a time limit of at least `offset` steps.
        count: K.
        seed: seeds the draw (data set) or the resets and actions (env).
        offset: env steps between start and goal (25 in the paper).
        trajectories: data set only: which trajectories; default the held-out part of
            `source.split()`.

    Raises:
        ValueError: offset longer than the trajectories, or an env without pixels.
    """
    if count < 1 or offset < 1:
        raise ValueError(f"count={count!r} and offset={offset!r} must be positive")
    if isinstance(source, OfflineDataset):
        return _dataset_goals(source, count, seed, offset, trajectories)
    return _env_goals(source, count, seed, offset)


def _dataset_goals(dataset: OfflineDataset, count: int, seed: int, offset: int,
                   trajectories: Sequence[int] | np.ndarray | None) -> GoalSet:
    if offset > dataset.steps:
        raise ValueError(f"offset={offset} is longer than the trajectories (T={dataset.steps})")
    pool = dataset.split()[1] if trajectories is None else np.asarray(trajectories, dtype=np.int64)
    rng = np.random.default_rng(seed)
    traj = pool[rng.integers(0, len(pool), size=count)]
    start = rng.integers(0, dataset.steps - offset + 1, size=count)
    goal = start + offset
    order = np.argsort(traj, kind="stable")  # read each shard's images once
    images = np.empty((2, count, 3, dataset.image_size, dataset.image_size), dtype=np.uint8)
    images[0, order] = dataset.images_at(traj[order], start[order])
    images[1, order] = dataset.images_at(traj[order], goal[order])
    states, proprio = dataset.array("states"), dataset.array("proprio")
    achieved = dataset.array("achieved_goal")[traj, goal] if "achieved_goal" in dataset.keys else None
    return GoalSet(states[traj, start], states[traj, goal], images[0], images[1], proprio[traj, start],
                   proprio[traj, goal], achieved, traj, start, offset)


def _env_goals(env: Any, count: int, seed: int, offset: int) -> GoalSet:
    base = getattr(env, "unwrapped", env)
    if not hasattr(base, "get_physics_state"):
        raise TypeError(f"sample_goals needs an OfflineDataset or an env from envs.make, got {type(env).__name__}")
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("s0", "s1", "i0", "i1", "p0", "p1", "g")}
    action_dim = int(base.action_space.shape[0])
    for k in range(count):
        obs, _ = base.reset(seed=seed + k)
        frame = obs["observation"] if isinstance(obs, dict) else obs
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"sample_goals needs a pixel env with single frames (obs='pixels', frame_stack=1); "
                             f"its observation is {frame.dtype} {frame.shape}")
        rows["s0"].append(base.get_physics_state())
        rows["i0"].append(frame)
        rows["p0"].append(_proprio(base.physics))
        rng = np.random.default_rng([seed, k])
        for _ in range(offset):
            obs, *_ = base.step(rng.uniform(-1.0, 1.0, size=action_dim).astype(np.float32))
        rows["s1"].append(base.get_physics_state())
        rows["i1"].append(obs["observation"] if isinstance(obs, dict) else obs)
        rows["p1"].append(_proprio(base.physics))
        if isinstance(obs, dict):
            rows["g"].append(obs["achieved_goal"])
    stack = {k: np.stack(v) if v else None for k, v in rows.items()}
    return GoalSet(stack["s0"], stack["s1"], stack["i0"], stack["i1"], stack["p0"], stack["p1"], stack["g"],
                   seed + np.arange(count, dtype=np.int64), np.zeros(count, dtype=np.int64), offset)
