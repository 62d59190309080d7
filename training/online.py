"""The online-training skeleton shared by the trainers that collect with the model in the loop.

`OnlineTrainer` owns everything that is the same for every family (stable-baselines3's
`BaseAlgorithm` pattern): set-up of the env, replay buffer, random generators and
counters; the loop (seed phase of random actions, episode collection, updates on the
family's schedule, evaluation every `eval_every` env steps); atomic checkpoints and
resuming after a kill; the CSV logs; timers, wall time and the progress bar.

A family subclass supplies only what is its own:

    make_env()                    the run's environment
    build()                       its model/agent, optimisers and controllers
    explore(obs)                  one collecting action (`in_seed_phase()`: random instead)
    evaluate(episodes, seed)      the returns of one evaluation, run as one batch
    updates_before_episode()      \
    updates_after_step()           > its update schedule; each returns the metrics logged
    updates_after_episode()       /  in train.csv, or None when it made no update
    family_state() / load_family_state(state)   what its checkpoint adds and restores
    save_model_files()            model.pt (and what else the run ships)
    metric_names                  its train.csv metric columns

TD-MPC2 updates once per agent step after a burst at the end of the seed phase
(`updates_after_step`, `updates_after_episode`); PlaNet makes `collect_interval` updates
before each episode (`updates_before_episode`).

Files in `out_dir`:

    checkpoint.pt          training state (torch.load(weights_only=True)), with the header
                           format_version, model (the family) and kind "training"
    replay-e<N>.npz        the buffer after N episodes (the one checkpoint.pt names)
    model.pt               the model alone (each family's own checkpoint dict)
    train.csv, eval.csv    per-episode training statistics; evaluation returns
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from planners.controller import resolve_device
from training.replay import EpisodeReplay
from training.run_files import (
    append_csv,
    atomic_torch_save,
    check_same_run,
    config_defaults,
    evaluation_row,
    restore_logs,
)

__all__ = ["CHECKPOINT_FORMAT", "OnlineTrainer", "angle_dims", "boolean", "check_angle_reading", "check_options",
           "check_task_and_obs", "default_run_dir", "evaluate_batched", "evaluation_seed", "one_of", "positive_int"]

# Layout of training checkpoints. 1: the layouts from before the header (TOLD's `version`
# 1, PlaNet's `trainer: "planet"`), still read; 2: the header beside the same fields.
CHECKPOINT_FORMAT = 2


class _DamagedCheckpoint(Exception):
    """A checkpoint file, or the buffer file it names, that cannot be read."""


def evaluate_batched(agent: Any, make_env: Callable[[], Any], episodes: int, seed: int, max_steps: int | None = None) -> list[float]:
    """Run `episodes` episodes at once, one batch of planning problems per step.

    `agent` has `reset()` and `act(obs [E, *obs]) -> [E, A]` (a `TOLDAgent`, a
    controller). DM Control episodes all last the time limit, so the envs stay in
    lockstep; an env that ends early keeps its return and is stepped no further. Returns
    one return per episode; episode i is reset with seed `seed + i`.
    """
    envs_ = [make_env() for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs_)])
    agent.reset()
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    steps = 0
    while alive.any() and (max_steps is None or steps < max_steps):
        actions = agent.act(obs)  # [E, A]
        for i, env in enumerate(envs_):
            if not alive[i]:
                continue
            o, r, terminated, truncated, _ = env.step(actions[i])
            obs[i] = o
            returns[i] += float(r)
            alive[i] = not (terminated or truncated)
        steps += 1
    for env in envs_:
        env.close()
    return returns.tolist()


def evaluation_seed(config: Any, env_step: int) -> int:
    """Seed of the first evaluation episode at `env_step` (the others follow it): fresh
    start states at every evaluation point, the same ones for inline and deferred runs.
    `config` is any run config with a `seed`."""
    return 10_000 * (config.seed + 1) + env_step


class OnlineTrainer:
    """The loop, files and bookkeeping of one online training run; subclasses add a family.

    Args:
        config: the run's settings, a frozen dataclass with at least task, steps, obs,
            seed, eval_every, eval_episodes, eval_at_start, checkpoint_every,
            buffer_capacity and max_episode_steps.
        out_dir: where checkpoints and logs go; an existing checkpoint there is resumed
            (refused when the settings in `run_identity` differ).
        device: "auto" (CUDA when present, else CPU), "cpu", "cuda", ...
        progress: show a tqdm bar.
        log: a function for one-line messages (print by default).
    """

    model_name: ClassVar[str]  # the family, as checkpoint headers and the registry name it
    run_identity: ClassVar[tuple[str, ...]]  # settings a resumed run must share
    act_timer: ClassVar[str] = "act"  # the timer of `explore` (a key of `timers`)
    log_seed_phase: ClassVar[bool] = False  # train.csv column "random" (1 in the seed phase)
    log_update_seconds: ClassVar[bool] = False  # train.csv column "update_s" (updates before the episode)
    metric_names: tuple[str, ...] = ()  # train.csv metric columns, fixed for a run

    def __init__(
        self,
        config: Any,
        out_dir: str | Path,
        device: str = "auto",
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = c = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(device)
        self.progress = progress
        self.log = log
        self.env = self.make_env()
        self.action_repeat = int(self.env.action_repeat)
        self.episode_length = int(self.env.max_episode_steps)
        if c.max_episode_steps is not None:
            self.episode_length = min(self.episode_length, c.max_episode_steps)
        self.obs_shape = tuple(int(d) for d in self.env.observation_space.shape)
        self.action_dim = int(self.env.action_space.shape[0])
        self.total_agent_steps = math.ceil(c.steps / self.action_repeat)
        self.check_env()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(c.seed)
        self.build()
        self.buffer = self.build_buffer()
        self.rng = np.random.default_rng(c.seed)  # random seed-phase actions (and the family's noise)
        self.step = 0  # agent steps taken
        self.episode = 0  # episodes finished
        self.updates = 0  # updates made
        self.eval_rows: list[dict[str, Any]] = []
        self.train_rows: list[dict[str, Any]] = []
        self.timers = {"env": 0.0, self.act_timer: 0.0, "update": 0.0, "eval": 0.0}
        self.wall_before = 0.0  # wall time of the run's earlier (interrupted) processes
        self._start_wall = time.perf_counter()
        self._bar: Any = None  # the progress bar while `run` runs
        self._kept_replay_file: str | None = None  # the buffer file the newest checkpoint names
        self.resumed = self._maybe_resume()

    # -- what a family supplies ------------------------------------------------------------

    def make_env(self) -> Any:
        """A new env of the run's task (also called for every evaluation episode)."""
        raise NotImplementedError

    def check_env(self) -> None:
        """Refuse settings the env cannot serve (called before anything is built or written)."""

    def build(self) -> None:
        """Build the model (or agent), its optimisers and controllers (torch is seeded)."""
        raise NotImplementedError

    def build_buffer(self) -> EpisodeReplay:
        """The replay buffer (and batch sampler): the whole run by default."""
        c = self.config
        episodes = math.ceil(self.total_agent_steps / self.episode_length)
        capacity = c.buffer_capacity or (self.total_agent_steps + episodes + 1)
        return EpisodeReplay(
            max(capacity, self.episode_length + 1), self.obs_shape, self.action_dim,
            obs_dtype=np.uint8 if c.obs == "pixels" else np.float32, seed=c.seed,
        )  # fmt: skip

    def in_seed_phase(self) -> bool:
        """Whether the next action is a uniform random one (checked at every agent step)."""
        raise NotImplementedError

    def begin_episode(self) -> None:
        """Reset the acting state for a new episode (after the env's reset)."""

    def before_episode(self) -> None:
        """Anything after `updates_before_episode` and before the env's reset (pictures)."""

    def explore(self, obs: np.ndarray) -> np.ndarray:
        """The collecting action at `obs` [*obs] -> [A] float32, exploration included."""
        raise NotImplementedError

    def evaluate(self, episodes: int, seed: int) -> list[float]:
        """Returns of `episodes` evaluation episodes reset with seeds seed, seed + 1, ..."""
        raise NotImplementedError

    def updates_before_episode(self) -> dict[str, float] | None:
        return None

    def updates_after_step(self) -> dict[str, float] | None:
        return None

    def updates_after_episode(self) -> dict[str, float] | None:
        return None

    def family_state(self) -> dict[str, Any]:
        """The family's part of checkpoint.pt (tensors and primitives only)."""
        raise NotImplementedError

    def load_family_state(self, state: dict[str, Any]) -> bool:
        """Restore the family's part of a checkpoint; returns False when it held no
        optimiser state (the run then continues with fresh Adam moments)."""
        raise NotImplementedError

    def save_model_files(self) -> None:
        """Write model.pt (and the family's other acting files) into `out_dir`."""
        raise NotImplementedError

    def upgrade_checkpoint(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """A checkpoint written before the header, in the current layout; None if it is
        not this family's."""
        return None

    def comparable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A run config as compared on resume (a family may fill in preset values)."""
        return config

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def previous_checkpoint_path(self) -> Path:
        """The checkpoint before the newest, kept (with its buffer file) as the fallback
        when the newest cannot be read."""
        return self.out_dir / "checkpoint-previous.pt"

    def wall(self) -> float:
        """Wall time of the run so far, earlier (interrupted) processes included."""
        return self.wall_before + time.perf_counter() - self._start_wall

    def _read_checkpoint(self, path: Path | None = None) -> dict[str, Any]:
        """A checkpoint file's state, checked to be this family's.

        Raises:
            _DamagedCheckpoint: the file (or the buffer file it names) cannot be read.
            ValueError: another family's or another layout's checkpoint.
        """
        path = self.checkpoint_path if path is None else path
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - truncated, corrupted: all mean "damaged"
            raise _DamagedCheckpoint(f"{path.name} cannot be read ({type(error).__name__})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a training checkpoint; use another --out folder")
        if "format_version" not in state:
            upgraded = self.upgrade_checkpoint(state)
            if upgraded is not None:
                return upgraded
        header = {k: state.get(k) for k in ("model", "kind", "format_version")}
        if header != {"model": self.model_name, "kind": "training", "format_version": CHECKPOINT_FORMAT}:
            raise ValueError(
                f"{path} is not a {self.model_name} training checkpoint of format_version "
                f"{CHECKPOINT_FORMAT} (model={header['model']!r}, kind={header['kind']!r}, "
                f"format_version={header['format_version']!r}); use another --out folder"
            )
        return state

    def _last_good_checkpoint(self) -> tuple[dict[str, Any], EpisodeReplay] | None:
        """The newest checkpoint that reads whole, with its buffer; the previous one (and a
        one-line warning) when the newest is damaged; None for a new run."""
        candidates = [p for p in (self.checkpoint_path, self.previous_checkpoint_path) if p.exists()]
        for i, path in enumerate(candidates):
            try:
                state = self._read_checkpoint(path)
                try:
                    buffer = EpisodeReplay.load(self.out_dir / state["replay_file"], seed=self.config.seed)
                except Exception as error:  # noqa: BLE001 - a missing or damaged buffer file
                    raise _DamagedCheckpoint(f"the buffer file {state['replay_file']} it names cannot be read "
                                             f"({type(error).__name__})") from None
            except _DamagedCheckpoint as damage:
                if i + 1 == len(candidates):
                    raise ValueError(f"{self.out_dir}: no readable checkpoint to resume from ({damage}); "
                                     "use another --out folder") from None
                self.log(f"warning: {damage}; resuming from the previous checkpoint, {candidates[i + 1].name}")
                continue
            self._kept_replay_file = str(state["replay_file"])
            return state, buffer
        return None

    def _maybe_resume(self) -> bool:
        found = self._last_good_checkpoint()
        if found is None:
            return False
        state, self.buffer = found
        check_same_run(self.checkpoint_path, self.comparable_config(state["train_config"]),
                       self.comparable_config(asdict(self.config)), self.run_identity,
                       defaults=config_defaults(type(self.config)))  # fmt: skip
        optimizers_restored = self.load_family_state(state)
        self.step, self.episode, self.updates = int(state["step"]), int(state["episode"]), int(state["updates"])
        self.rng.bit_generator.state = state["rng_state"]
        if state.get("torch_rng_state") is not None:
            torch.set_rng_state(state["torch_rng_state"])
        if self.device.type == "cuda" and state.get("cuda_rng_state") is not None:
            torch.cuda.set_rng_state(state["cuda_rng_state"], self.device)
        self.eval_rows = list(state["eval_rows"])
        self.train_rows = list(state["train_rows"])
        self.timers = dict(state["timers"])
        self.wall_before = float(state["wall"])
        restore_logs(self.out_dir, {"eval.csv": self.eval_rows, "train.csv": self.train_rows})
        self.log(f"resumed {self.out_dir} at env step {self.step * self.action_repeat} (episode {self.episode})")
        if not optimizers_restored:
            self.log("the checkpoint carries no optimiser state: Adam restarts from zero moments here")
        return True

    def save_checkpoint(self, wall: float) -> None:
        """Buffer first (a new file), then the checkpoint that names it, then the model
        files, then tidy up: a kill at any moment leaves a checkpoint whose buffer exists.
        The checkpoint it replaces stays as `previous_checkpoint_path`, with its buffer."""
        replay_file = f"replay-e{self.episode}.npz"
        self.buffer.save(self.out_dir / replay_file)
        state = {
            "format_version": CHECKPOINT_FORMAT,
            "model": self.model_name,
            "kind": "training",
            "train_config": asdict(self.config),
            **self.family_state(),
            "replay_file": replay_file,
            "step": self.step,
            "episode": self.episode,
            "updates": self.updates,
            "rng_state": self.rng.bit_generator.state,
            "torch_rng_state": torch.get_rng_state(),
            "cuda_rng_state": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "eval_rows": self.eval_rows,
            "train_rows": self.train_rows,
            "timers": self.timers,
            "wall": wall,
        }
        if self.checkpoint_path.exists():
            os.replace(self.checkpoint_path, self.previous_checkpoint_path)
        atomic_torch_save(state, self.checkpoint_path)
        self.save_model_files()
        keep = {replay_file, self._kept_replay_file}
        for old in self.out_dir.glob("replay-e*.npz"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        self._kept_replay_file = replay_file  # the next save's previous checkpoint names it

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Train to `config.steps` env steps (or continue a resumed run); returns the
        evaluation rows, each with env_step, mean_return and std_return."""
        c = self.config
        self._start_wall = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.steps, initial=min(c.steps, self.step * self.action_repeat), unit="env step",
                       dynamic_ncols=True)  # fmt: skip
        self._bar = bar
        try:
            while self.step < self.total_agent_steps:
                self._maybe_evaluate()
                self._train_episode(bar)
                if self.episode % c.checkpoint_every == 0:
                    self.save_checkpoint(self.wall())
            self._maybe_evaluate(final=True)
            self.save_checkpoint(self.wall())
        finally:
            if bar is not None:
                bar.close()
            self._bar = None
        return self.eval_rows

    def position(self) -> str:
        """Where the run stands, for messages: "env step N"."""
        return f"env step {self.step * self.action_repeat}"

    def evaluation_seed(self, env_step: int) -> int:
        """Reset seed of the first evaluation episode at `env_step` (the others follow it)."""
        return evaluation_seed(self.config, env_step)

    def _maybe_evaluate(self, final: bool = False) -> None:
        """Evaluate when the run has reached an evaluation point not evaluated yet (and at
        the end, at the final env step), then save a checkpoint."""
        c = self.config
        env_step = self.step * self.action_repeat
        due = env_step // c.eval_every * c.eval_every
        if due == 0 and not final and not c.eval_at_start:
            return
        done = {row["env_step"] for row in self.eval_rows}
        if due in done and not (final and env_step not in done):
            return
        bar = self._bar
        what = f"evaluating at env step {env_step} ({c.eval_episodes} episodes)"
        if bar is not None:
            bar.set_description(what)
        else:
            self.log(f"{what} ...")
        t0 = time.perf_counter()
        returns = self.evaluate(self.config.eval_episodes, seed=self.evaluation_seed(env_step))
        took = time.perf_counter() - t0
        self.timers["eval"] += took
        if bar is not None:
            bar.set_description("")
            # The bar's rate and ETA count training steps only: an evaluation (minutes on a
            # CPU, and the first one comes before any step) is not a slow step.
            bar.start_t += took
        wall = self.wall()
        row = evaluation_row(env_step, returns, wall)
        self.eval_rows.append(row)
        append_csv(self.out_dir / "eval.csv", row)
        self.log(f"eval @ {env_step} env steps: {row['mean_return']:.1f} ± {row['std_return']:.1f} ({wall / 60:.1f} min)")
        self.save_checkpoint(wall)

    def _train_episode(self, bar: Any) -> None:
        """The updates due before an episode, then the episode (`collect_episode`)."""
        t = time.perf_counter()
        metrics = self.updates_before_episode()
        update_s = time.perf_counter() - t
        self.before_episode()
        self.collect_episode(metrics=metrics, update_s=update_s, bar=bar)

    def collect_episode(self, metrics: dict[str, float] | None = None, update_s: float = 0.0, bar: Any = None) -> float:
        """One episode of collection with the updates due after each step; the episode joins
        the buffer, then the updates due after it. Logs a train.csv row (the latest
        update metrics: `metrics` or those of later updates) and returns the episode return."""
        metrics = metrics or {}
        seed_episode = self.in_seed_phase()
        env = self.env
        t = time.perf_counter()
        obs, _ = env.reset(seed=self.config.seed * 100_003 + self.episode)
        self.timers["env"] += time.perf_counter() - t
        self.begin_episode()
        observations, actions, rewards = [obs], [], []
        episode_start = time.perf_counter()
        for _ in range(self.episode_length):
            if self.in_seed_phase():
                action = self.rng.uniform(-1.0, 1.0, size=self.action_dim).astype(np.float32)
            else:
                t = time.perf_counter()
                action = self.explore(obs)
                self.timers[self.act_timer] += time.perf_counter() - t
            t = time.perf_counter()
            obs, reward, terminated, truncated, _ = env.step(action)
            self.timers["env"] += time.perf_counter() - t
            observations.append(obs)
            actions.append(action)
            rewards.append(float(reward))
            self.step += 1
            if bar is not None:
                bar.update(self.action_repeat)
            metrics = self.updates_after_step() or metrics
            if terminated or truncated or self.step >= self.total_agent_steps:
                break
        self.buffer.add_episode(np.stack(observations), np.stack(actions), np.asarray(rewards, np.float32))
        self.episode += 1
        metrics = self.updates_after_episode() or metrics
        row: dict[str, Any] = {"episode": self.episode, "env_step": self.step * self.action_repeat,
                               "episode_return": float(np.sum(rewards))}  # fmt: skip
        if self.log_seed_phase:
            row["random"] = int(seed_episode)
        row.update(updates=self.updates, episode_s=round(time.perf_counter() - episode_start, 2))
        if self.log_update_seconds:
            row["update_s"] = round(update_s, 2)
        # Empty before the first update, so the CSV columns stay fixed.
        row.update({k: round(metrics[k], 5) if k in metrics else "" for k in self.metric_names})
        self.train_rows.append(row)
        append_csv(self.out_dir / "train.csv", row)
        if bar is not None:
            bar.set_postfix(ep_return=f"{row['episode_return']:.0f}")
        return row["episode_return"]


# -- command-line factories -------------------------------------------------------------------


def check_options(family: str, options: Mapping[str, Any], accepted: Mapping[str, Callable[[str, Any], None]]) -> None:
    """Refuse options a family does not take, and values its checks reject.

    `accepted` maps each option name to a check `(name, value) -> None` that raises
    ValueError naming the value and what is accepted.
    """
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{family} does not take the option(s) {unknown}; accepted: {sorted(accepted)}")
    for name, value in options.items():
        accepted[name](name, value)


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be True or False")


def one_of(*choices: str) -> Callable[[str, Any], None]:
    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not one of {choices}")

    return check


def check_task_and_obs(task: str, obs: str) -> None:
    """A DM Control task and an observation type the online trainers take."""
    import envs  # here, not at import: the CLI picks MUJOCO_GL before dm_control loads

    tasks = envs.list_tasks("suite")
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}; choose one of the DM Control tasks: {', '.join(tasks)}")
    if obs not in ("state", "pixels"):
        raise ValueError(f"obs={obs!r} is not one of ('state', 'pixels')")


def angle_dims(task: str, raw_angles: bool) -> tuple[int, ...]:
    """The state entries a model reads as (sin, cos): the task's joint angles
    (`envs.angle_observations`: reacher's two), or none with `raw_angles`."""
    from envs.observations import angle_observations

    return () if raw_angles else angle_observations(task)


def check_angle_reading(checkpoint: Path, saved: Sequence[int] | None, ours: Sequence[int]) -> None:
    """Refuse to resume a run whose model read the joint angles otherwise than this run's
    would. `saved` is the saved model's own `angle_dims` (None or absent in files written
    before angle features existed: those read the angles raw), not today's table.

    Raises:
        ValueError: naming both readings and the flag (`--raw-angles`) that matches the run.
    """
    before, now = tuple(saved or ()), tuple(ours)
    if before != now:
        raise ValueError(f"{checkpoint}: the run's model {_angle_reading(before)}, but this run's model "
                         f"{_angle_reading(now)}; resume it {'without' if before else 'with'} --raw-angles, or use "
                         "another --out folder")  # fmt: skip


def _angle_reading(dims: tuple[int, ...]) -> str:
    return f"reads state entries {list(dims)} as (sin, cos)" if dims else "reads the joint angles raw"


def default_run_dir(model: str, task: str, obs: str, seed: int, tag: str = "") -> Path:
    """runs/<model>-<task>-<obs>[-<tag>]-s<seed>, the run folder when --out is not given."""
    return Path("runs") / f"{model}-{task}-{obs}{'-' + tag if tag else ''}-s{seed}"
