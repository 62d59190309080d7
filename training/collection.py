"""Collecting DINO-WM's offline data set (Zhou et al., 2024, "DINO-WM: World Models on
Pre-trained Visual Features enable Zero-shot Planning"): pixel trajectories of a goal task
under a random or a noisy-planner policy, written in the format of `training.datasets`.

    config = CollectConfig(task="reacher-pose", num_trajectories=3000, steps=100)
    dataset = collect(config, "data/reacher")              # resumable

Time steps. One step of the data set is one agent step of the env (``action_repeat``
control steps, recorded in the manifest); DINO-WM's model step covers ``frameskip`` of them.
Trajectory i is reset with seed ``config.seed + i`` and its actions come from a generator
seeded with ``(config.seed, i)``, so any shard can be rebuilt alone: a resumed collection
equals an uninterrupted one.

Shapes: T steps per trajectory, A action size, Pd proprio size, S physics-state size.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from training.datasets import (
    DATASET_KIND,
    FORMAT_VERSION,
    LAYOUT,
    MANIFEST,
    OfflineDataset,
    check_shard_headers,
    describe_proprio,
    layout_sizes,
    proprio_of,
    read_json,
    remove_temp_files,
    save_npz_atomic,
    shard_entry,
    shard_name,
    write_manifest,
)

__all__ = ["POLICIES", "CollectConfig", "Policy", "collect"]

Policy = Literal["random", "noisy_planner"]
POLICIES = ("random", "noisy_planner")


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
            "proprio": describe_proprio(env.task_id.name, physics),
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
            proprio.append(proprio_of(env.physics))
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
    remove_temp_files(root)
    manifest_path = root / MANIFEST
    old: dict[str, Any] | None = None
    if manifest_path.is_file():
        old = read_json(manifest_path, "manifest")
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
            "format_version": FORMAT_VERSION, "kind": DATASET_KIND, "config": asdict(config), "env": env,
            "steps": config.steps, "num_trajectories": config.num_trajectories, "shard_size": config.shard_size,
            "arrays": {k: {"dtype": d, "shape": ["N", *s]} for k, (d, s) in LAYOUT.items()},
            "shards": [], "num_collected": 0, "complete": False, "stats": None,
        }
        sizes = layout_sizes(env, config.steps)
        done: dict[int, dict[str, Any]] = {}
        for index in range(config.num_shards):
            path = root / shard_name(index)
            if not path.is_file():
                continue
            entry = shard_entry(index, config.shard_range(index))
            try:
                check_shard_headers(path, sizes, entry["num_trajectories"], tuple(LAYOUT))
                done[index] = entry
            except ValueError as error:
                warnings.warn(f"{error}; collecting it again", UserWarning, stacklevel=2)
                path.unlink()
        write_manifest(root, manifest, done)
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
            save_npz_atomic(root / shard_name(index), _stack_trajectories(rows))
            done[index] = shard_entry(index, config.shard_range(index))
            write_manifest(root, manifest, done)
        if bar is not None:
            bar.close()
    finally:
        collector.close()
    dataset = OfflineDataset(root, allow_incomplete=True)
    manifest["complete"] = True
    manifest["stats"] = dataset.compute_stats()
    write_manifest(root, manifest, done)
    return OfflineDataset(root)
