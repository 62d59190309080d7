"""The on-disk offline data set of DINO-WM (Zhou et al., 2024, "DINO-WM: World Models on
Pre-trained Visual Features enable Zero-shot Planning"): its file format, `write_dataset`
for data gathered elsewhere, `OfflineDataset`, which reads it lazily, and the evaluation
goals drawn from its held-out trajectories (`sample_goals`).

DINO-WM trains its predictor offline, on a fixed set of trajectories (Reacher: 3000 x 100
steps, shared/ANCHORS.md section 2). The stages live beside this module:

    dataset = collect(CollectConfig(task="reacher-pose"), "data/reacher")    # training.collection
    features = cache_features(dataset, model, batch_size=256)              # training.feature_cache
    sampler = WindowSampler.for_model(dataset, features, model.config)     # training.windows
    goals = sample_goals(dataset, count=50, seed=0, offset=25)             # held-out trajectories

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
    <root>/features-<encoder-id>/...             the feature cache (training.feature_cache)

Proprio, per task: ``concat(qpos, qvel)`` read from the physics, which for the supported
goal tasks equals dm_control's "position" and "velocity" observation entries:
reacher-pose / reacher-target: [shoulder, wrist, shoulder velocity, wrist velocity]
(radians, rad/s; the shoulder angle is NOT wrapped, it grows past pi as the arm turns);
point_mass-goal: [x, y, vx, vy] (metres, m/s); finger-turn_goal: [proximal, distal,
hinge] angles then their velocities. The manifest's ``env.proprio`` records this.

Shapes:
    N trajectories (in a shard or a set), T steps per trajectory, A action size, Pd proprio
    size, S physics-state size, G goal size, K goals.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.checkpoints import atomic_write as checkpoints_atomic_write

__all__ = ["FORMAT_VERSION", "MANIFEST", "GoalSet", "OfflineDataset", "proprio_of", "sample_goals", "sample_unmet_goals",
           "write_dataset"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATASET_KIND = "wmpc-offline-dataset"

# Per-trajectory layout of every shard array: (dtype, trailing shape with symbolic sizes).
# "T1" is T + 1 frames. Required arrays first; the rest are optional (hand-made data sets).
LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "images": ("uint8", ("T1", "3", "H", "W")),
    "actions": ("float32", ("T", "A")),
    "proprio": ("float32", ("T1", "Pd")),
    "states": ("float64", ("T1", "S")),
    "achieved_goal": ("float32", ("T1", "G")),
    "desired_goal": ("float32", ("G",)),
    "seeds": ("int64", ()),
}
REQUIRED = ("images", "actions", "proprio", "states")
READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, zlib.error)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"




# --------------------------------------------------------------------------------------
# Atomic writes (also used by the collection and the feature cache)
# --------------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    """Write through `write(file)` into a temp file beside `path`, synced to disk, then
    rename (`models.checkpoints.atomic_write`, which writers by path use)."""

    def write_synced(tmp: str) -> None:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    checkpoints_atomic_write(path, write_synced)


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def save_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True), binary=False)


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete what a killed atomic write left behind (`.<name>.<random>.tmp`)."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# --------------------------------------------------------------------------------------
# Writing the format (also used by training.collection)
# --------------------------------------------------------------------------------------


def describe_proprio(task: str, physics: Any) -> str:
    try:
        names = list(physics.named.data.qpos.axes.row.names)
    except AttributeError:  # pragma: no cover - dm_control always names them
        names = [f"q{i}" for i in range(physics.model.nq)]
    return (f"{task}: qpos {names} then qvel of the same joints (dm_control 'position' and "
            f"'velocity'; angles unwrapped, radians; positions in metres)")


def proprio_of(physics: Any) -> np.ndarray:
    """qpos then qvel, float32 [Pd]."""
    return np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float32)


def layout_sizes(env: Mapping[str, Any], steps: int) -> dict[str, int]:
    return {
        "T": steps, "T1": steps + 1, "3": 3, "H": env["image_size"], "W": env["image_size"],
        "A": env["action_dim"], "Pd": env["proprio_dim"], "S": env["state_size"], "G": env.get("goal_dim", 0),
    }


def shard_entry(index: int, trajectories: range) -> dict[str, Any]:
    return {"file": shard_name(index), "index": index, "first_trajectory": trajectories.start,
            "num_trajectories": len(trajectories)}


def write_manifest(root: Path, manifest: dict[str, Any], done: Mapping[int, dict[str, Any]]) -> None:
    manifest["shards"] = [done[i] for i in sorted(done)]
    manifest["num_collected"] = sum(e["num_trajectories"] for e in done.values())
    save_json_atomic(root / MANIFEST, manifest)


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
    missing = [k for k in REQUIRED if k not in arrays]
    unknown = sorted(set(arrays) - set(LAYOUT))
    if missing or unknown:
        raise ValueError(f"write_dataset needs arrays {list(REQUIRED)} (optional: "
                         f"{[k for k in LAYOUT if k not in REQUIRED]}); missing {missing}, unknown {unknown}")
    data = {k: np.asarray(v, dtype=LAYOUT[k][0]) for k, v in arrays.items()}
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
    keys = tuple(k for k in LAYOUT if k in data)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "kind": DATASET_KIND, "config": None, "env": facts, "steps": t1 - 1,
        "num_trajectories": n, "shard_size": shard_size,
        "arrays": {k: {"dtype": LAYOUT[k][0], "shape": ["N", *LAYOUT[k][1]]} for k in keys},
        "shards": [], "num_collected": 0, "complete": False, "stats": None,
    }
    sizes = layout_sizes(facts, t1 - 1)
    done = {}
    for index in range(math.ceil(n / shard_size)):
        rows = range(index * shard_size, min((index + 1) * shard_size, n))
        shard = {k: v[rows.start : rows.stop] for k, v in data.items()}
        for key, value in shard.items():
            expected = (len(rows), *_expected_shape(key, sizes))
            if value.shape != expected:
                raise ValueError(f"{key} has shape {(n, *value.shape[1:])}; expected {(n, *expected[1:])}")
        save_npz_atomic(root / shard_name(index), shard)
        done[index] = shard_entry(index, rows)
    write_manifest(root, manifest, done)
    manifest["complete"] = True
    manifest["stats"] = OfflineDataset(root, allow_incomplete=True).compute_stats()
    write_manifest(root, manifest, done)
    return OfflineDataset(root)


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is corrupt ({error}); it is not valid JSON") from error


def _expected_shape(key: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(sizes[s] if s in sizes else int(s) for s in LAYOUT[key][1])


def _corrupt(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"shard {path} is truncated or corrupt ({type(error).__name__}: {error}); delete it and run collect() "
        "again with the same config to rewrite it"
    )


def check_shard_headers(path: Path, sizes: Mapping[str, int], n: int, keys: Sequence[str]) -> None:
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
    except READ_ERRORS as error:
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
        if shape != expected or dtype != np.dtype(LAYOUT[key][0]):
            raise ValueError(
                f"shard {path}: {key} is {dtype} {shape}, expected {LAYOUT[key][0]} {expected} "
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
        manifest = read_json(path, "manifest")
        if manifest.get("kind") != DATASET_KIND or manifest.get("format_version") != FORMAT_VERSION:
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
        self.keys: tuple[str, ...] = tuple(k for k in LAYOUT if k in manifest["arrays"])
        self.shards: list[dict[str, Any]] = list(manifest["shards"])
        counts = [int(e["num_trajectories"]) for e in self.shards]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._sizes = layout_sizes(self.env, self.steps)
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
            check_shard_headers(self.shard_path(shard), self._sizes, n, self.keys)
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
        except READ_ERRORS as error:
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

    def subset(self, index: np.ndarray | Sequence[int]) -> GoalSet:
        """The goals at `index` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return GoalSet(**{k: v[index] if isinstance(v, np.ndarray) else v for k, v in values.items()})


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


def sample_unmet_goals(dataset: OfflineDataset, count: int, seed: int = 0, offset: int = 25,
                       include_met: bool = False, task: str | None = None) -> tuple[GoalSet, dict[str, Any]]:
    """`count` distinct held-out goals (`sample_goals`) that are not already met at their
    start, unless `include_met` (the paper's protocol counts those too).

    Draws a pool of 4 x `count` goals, growing it 4-fold (up to 64 x `count`) until enough
    distinct (trajectory, start) pairs whose start does not already succeed are found; the
    first `count` of them are kept, in the order drawn.

    Args:
        dataset: the data set (it must record achieved goals).
        count, seed, offset: as `sample_goals`.
        include_met: keep goals met at the start.
        task: the goal task that judges success; default the data set's.

    Returns:
        (the goals, how they were chosen: pool size, the share of the pool met at the
        start, whether filtered, how many kept goals start met).

    Raises:
        ValueError: no achieved goals recorded, an unknown task, or too few such goals.
    """
    from envs.goals import GOAL_TASKS

    task = task or str(dataset.env.get("task"))
    if task not in GOAL_TASKS:
        raise ValueError(f"task {task!r} is not a goal task; accepted: {sorted(GOAL_TASKS)}")
    if "achieved_goal" not in dataset.keys:
        raise ValueError(f"the data set at {dataset.root} records no achieved goals; cannot tell which goals "
                         "start met (pass include_met=True)")
    goal_task = GOAL_TASKS[task]()
    achieved = dataset.array("achieved_goal")
    pool = count if include_met else 4 * count
    while True:
        goals = sample_goals(dataset, count=pool, seed=seed, offset=offset)
        start_achieved = achieved[goals.trajectories, goals.start_steps].astype(np.float32)
        met = np.asarray(goal_task.is_success(start_achieved, goals.goal_achieved.astype(np.float32)), dtype=bool)
        _, first = np.unique(np.stack([goals.trajectories, goals.start_steps], 1), axis=0, return_index=True)
        distinct = np.zeros(pool, dtype=bool)
        distinct[first] = True
        keep = np.flatnonzero(distinct & (include_met | ~met))
        if len(keep) >= count or pool >= 64 * count:
            break
        pool *= 4
    if len(keep) < count:
        raise ValueError(f"only {len(keep)} distinct goals that do not start met among {pool} draws from "
                         f"{len(dataset.split()[1])} held-out trajectories; collect more trajectories or ask for "
                         "fewer goals")
    keep = keep[:count]
    info = {
        "pool": int(pool),
        "pool_already_reached_fraction": round(float(met.mean()), 4),
        "filtered": not include_met,
        "evaluated_already_reached": int(met[keep].sum()),
    }
    return goals.subset(keep), info


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
        rows["p0"].append(proprio_of(base.physics))
        rng = np.random.default_rng([seed, k])
        for _ in range(offset):
            obs, *_ = base.step(rng.uniform(-1.0, 1.0, size=action_dim).astype(np.float32))
        rows["s1"].append(base.get_physics_state())
        rows["i1"].append(obs["observation"] if isinstance(obs, dict) else obs)
        rows["p1"].append(proprio_of(base.physics))
        if isinstance(obs, dict):
            rows["g"].append(obs["achieved_goal"])
    stack = {k: np.stack(v) if v else None for k, v in rows.items()}
    return GoalSet(stack["s0"], stack["s1"], stack["i0"], stack["i1"], stack["p0"], stack["p1"], stack["g"],
                   seed + np.arange(count, dtype=np.int64), np.zeros(count, dtype=np.int64), offset)
