"""Online TD-MPC2 training: collect with MPPI in the loop, one update per agent step.

The loop (Hansen et al., 2024, appendix; ANCHORS section 2):
- seed phase: `seed_steps` agent steps (2500 on DMC = 5 episodes) of uniform random
  actions; when it ends, as many updates as seed steps, then one update per agent step;
- after the seed phase, actions come from MPPI (TD-MPC2 preset: 24 policy proposals and
  the Q value at the horizon) plus exploration noise of the planner's final std;
- episodes enter the replay buffer when they end; subsequences of 3 transitions are
  sampled for updates;
- every `eval_every` env steps (and at step 0), `eval_episodes` episodes are run without
  exploration noise, all at once as a batch of planning problems. With
  `defer_evaluation` the loop only saves the model at those points
  (snapshots/model-<env step>.pt) and `evaluate_snapshots` runs the same evaluation later,
  in another process or on another machine: on a CPU an evaluation with the full MPPI
  preset costs as much as 10k env steps of training, and it need not hold training up.

Everything needed to continue is saved every `checkpoint_every` episodes and at every
evaluation: the model, optimisers, running scale, random generators, step counters, logs
and the replay buffer. Starting the same command again continues from there with the same
step count and buffer. Files in `out_dir`:

    checkpoint.pt          training state (torch.load(weights_only=True))
    replay-e<N>.npz        the buffer after N episodes (the one checkpoint.pt names)
    model.pt               the model alone, the file to ship and to plan with
    eval.csv, train.csv    evaluation returns; per-episode training statistics
    snapshots/             deferred evaluation: the model at each evaluation point
    eval-deferred.csv      deferred evaluation: the returns of the snapshots
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.told import TOLD, TOLDConfig, heuristic_discount, load_told
from planners import MPPI
from training.replay import EpisodeReplay
from training.run_files import append_csv, atomic_torch_save, check_same_run, config_defaults, evaluation_row, restore_logs, rewrite_csv
from training.told_agent import TOLDAgent, TOLDLossConfig

__all__ = ["TOLDTrainConfig", "TOLDTrainer", "atomic_torch_save", "evaluate_batched", "evaluate_snapshots"]

CHECKPOINT_VERSION = 1
DEFERRED_EVAL_CSV = "eval-deferred.csv"
_RUN_IDENTITY = ("task", "obs", "size", "seed", "action_repeat")  # settings a resumed run must share
LOSS_NAMES = ("consistency_loss", "reward_loss", "value_loss", "policy_loss", "total_loss", "grad_norm")


@dataclass(frozen=True)
class TOLDTrainConfig:
    """One online training run.

    Attributes:
        task: a DM Control task ("cartpole-swingup").
        steps: env steps to train for (simulator steps, action repeat included).
        obs: "state" or "pixels" (64x64, 3 stacked frames).
        size: TOLD size ("1M", "5M", "tiny").
        seed: run seed (env, weights, sampling).
        action_repeat: None for TD-MPC2's 2.
        seed_steps: random-action agent steps before planning; None = max(1000, 5 episodes).
        eval_every: env steps between evaluations; eval_episodes: episodes per evaluation.
        checkpoint_every: episodes between checkpoints.
        buffer_capacity: replay slots; None keeps the whole run.
        plan_iterations: MPPI iterations while collecting (None: the preset's 6); evaluation
            always uses the preset.
        batch_size, horizon: of the updates (256, 3).
        max_episode_steps: cut episodes short (tests); None: the task's limit.
        eval_at_start: also evaluate the untrained agent at step 0 (TD-MPC2 does; it
            costs as much as any other evaluation).
        defer_evaluation: save the model at each evaluation point instead of evaluating;
            `evaluate_snapshots` evaluates those files later with the same protocol.
    """

    task: str = "cartpole-swingup"
    steps: int = 100_000
    obs: str = "state"
    size: str = "1M"
    seed: int = 0
    action_repeat: int | None = None
    seed_steps: int | None = None
    eval_every: int = 10_000
    eval_episodes: int = 10
    checkpoint_every: int = 5
    buffer_capacity: int | None = None
    plan_iterations: int | None = None
    batch_size: int = 256
    horizon: int = 3
    max_episode_steps: int | None = None
    eval_at_start: bool = True
    defer_evaluation: bool = False

    def __post_init__(self) -> None:
        if self.obs not in ("state", "pixels"):
            raise ValueError(f"obs={self.obs!r} must be 'state' or 'pixels'")
        for name in ("steps", "eval_every", "eval_episodes", "checkpoint_every", "batch_size", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be at least 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TOLDTrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def evaluate_batched(agent: TOLDAgent, make_env: Callable[[], Any], episodes: int, seed: int, max_steps: int | None = None) -> list[float]:
    """Run `episodes` episodes at once, one batch of planning problems per step.

    DM Control episodes all last the time limit, so the envs stay in lockstep; an env that
    ends early keeps its return and is stepped no further. Returns one return per episode.
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


def make_task_env(config: TOLDTrainConfig) -> Any:
    """The run's environment (pixel runs stack 3 frames; no time limit beyond the task's)."""
    import envs  # here, not at import: the CLI picks MUJOCO_GL before dm_control loads

    return envs.make(
        config.task, obs=config.obs, seed=config.seed, action_repeat=config.action_repeat,
        frame_stack=3 if config.obs == "pixels" else 1, time_limit=None,
    )  # fmt: skip


def evaluation_seed(config: Any, env_step: int) -> int:
    """Seed of the first evaluation episode at `env_step` (the others follow it): fresh
    start states at every evaluation point, the same ones for inline and deferred runs.
    `config` is any run config with a `seed` (TOLD's, PlaNet's)."""
    return 10_000 * (config.seed + 1) + env_step


class TOLDTrainer:
    """Builds env, model, agent and buffer for a config; `run()` trains (or resumes).

    Args:
        config: the run's settings.
        out_dir: where checkpoints and logs go; an existing checkpoint there is resumed.
        device: torch device for the model.
        progress: show a tqdm bar.
        log: a function for one-line messages (print by default).
    """

    def __init__(
        self,
        config: TOLDTrainConfig,
        out_dir: str | Path,
        device: str = "cpu",
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.progress = progress
        self.log = log
        self._make_env = lambda: make_task_env(config)
        self.env = self._make_env()
        self.action_repeat = int(self.env.action_repeat)
        self.episode_length = int(self.env.max_episode_steps)
        if config.max_episode_steps is not None:
            self.episode_length = min(self.episode_length, config.max_episode_steps)
        obs_shape = tuple(self.env.observation_space.shape)
        action_dim = int(self.env.action_space.shape[0])
        self.total_agent_steps = math.ceil(config.steps / self.action_repeat)
        self.seed_steps = config.seed_steps if config.seed_steps is not None else max(1000, 5 * self.episode_length)
        torch.manual_seed(config.seed)
        model = TOLD(TOLDConfig(obs_shape=obs_shape, action_dim=action_dim, obs_type=config.obs, size=config.size, task=config.task))
        loss = TOLDLossConfig(batch_size=config.batch_size, horizon=config.horizon, discount=heuristic_discount(self.episode_length))
        overrides = {} if config.plan_iterations is None else {"iterations": config.plan_iterations}
        self.agent = TOLDAgent(model, loss, MPPI.tdmpc2(action_dim, **overrides), device=device, seed=config.seed)
        self.eval_agent_planner = MPPI.tdmpc2(action_dim)
        capacity = config.buffer_capacity or (self.total_agent_steps + math.ceil(self.total_agent_steps / self.episode_length) + 1)
        self.buffer = EpisodeReplay(
            max(capacity, self.episode_length + 1), obs_shape, action_dim,
            obs_dtype=np.uint8 if config.obs == "pixels" else np.float32, seed=config.seed,
        )  # fmt: skip
        self.rng = np.random.default_rng(config.seed)
        self.step = 0  # agent steps taken
        self.episode = 0  # episodes finished
        self.updates = 0
        self.eval_rows: list[dict[str, Any]] = []
        self.train_rows: list[dict[str, Any]] = []
        self.timers = {"env": 0.0, "plan": 0.0, "update": 0.0, "eval": 0.0}
        self.wall_before = 0.0  # wall time of earlier (interrupted) runs
        self.resumed = self._maybe_resume()

    # -- paths and checkpoints -------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _maybe_resume(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.checkpoint_path} has version {state.get('version')!r}; expected {CHECKPOINT_VERSION}")
        check_same_run(self.checkpoint_path, state["train_config"], asdict(self.config), _RUN_IDENTITY,
                       defaults=config_defaults(TOLDTrainConfig))
        self.agent.load_state(state["agent_state"])
        self.buffer = EpisodeReplay.load(self.out_dir / state["replay_file"], seed=self.config.seed)
        self.step, self.episode, self.updates = int(state["step"]), int(state["episode"]), int(state["updates"])
        self.rng.bit_generator.state = state["rng_state"]
        self.eval_rows = list(state["eval_rows"])
        self.train_rows = list(state["train_rows"])
        self.timers = dict(state["timers"])
        self.wall_before = float(state["wall"])
        restore_logs(self.out_dir, {"eval.csv": self.eval_rows, "train.csv": self.train_rows})
        self.log(f"resumed {self.out_dir} at env step {self.step * self.action_repeat} (episode {self.episode})")
        return True

    def save_checkpoint(self, wall: float) -> None:
        """Buffer first (a new file), then the checkpoint that names it, then tidy up: a kill
        at any moment leaves a checkpoint whose buffer file exists."""
        replay_file = f"replay-e{self.episode}.npz"
        self.buffer.save(self.out_dir / replay_file)
        state = {
            "version": CHECKPOINT_VERSION,
            "train_config": asdict(self.config),
            "agent_state": self.agent.state(),
            "replay_file": replay_file,
            "step": self.step,
            "episode": self.episode,
            "updates": self.updates,
            "rng_state": self.rng.bit_generator.state,
            "eval_rows": self.eval_rows,
            "train_rows": self.train_rows,
            "timers": self.timers,
            "wall": wall,
        }
        atomic_torch_save(state, self.checkpoint_path)
        atomic_torch_save(self.agent.model.checkpoint(train_steps=self.step * self.action_repeat), self.out_dir / "model.pt")
        for old in self.out_dir.glob("replay-e*.npz"):
            if old.name != replay_file:
                old.unlink(missing_ok=True)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Train to `config.steps` env steps; returns the evaluation rows."""
        c, ar = self.config, self.action_repeat
        start_wall = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=c.steps, initial=self.step * ar, unit="env step", dynamic_ncols=True)
        try:
            while self.step < self.total_agent_steps:
                self._maybe_evaluate(start_wall)
                self._train_episode(bar)
                if self.episode % c.checkpoint_every == 0:
                    self.save_checkpoint(self.wall_before + time.perf_counter() - start_wall)
            self._maybe_evaluate(start_wall, final=True)
            self.save_checkpoint(self.wall_before + time.perf_counter() - start_wall)
        finally:
            if bar is not None:
                bar.close()
        return self.eval_rows

    def snapshot_path(self, env_step: int) -> Path:
        return self.out_dir / "snapshots" / f"model-{env_step:07d}.pt"

    def _maybe_evaluate(self, start_wall: float, final: bool = False) -> None:
        env_step = self.step * self.action_repeat
        due = env_step // self.config.eval_every * self.config.eval_every
        if due == 0 and not final and not self.config.eval_at_start:
            return
        if self.config.defer_evaluation:
            # Named by the evaluation point it stands for; it records the exact env step
            # (the evaluation's row and seeds use that, as inline evaluation does).
            point = due if not final or due == env_step else env_step
            if self.snapshot_path(point).exists():
                return
            wall = self.wall_before + time.perf_counter() - start_wall
            snapshot = self.agent.model.checkpoint(
                train_steps=env_step, train_wall_s=round(wall, 1), train_config=asdict(self.config)
            )
            atomic_torch_save(snapshot, self.snapshot_path(point))
            # As after an inline evaluation: a resumed run never re-lives a saved point.
            self.save_checkpoint(wall)
            return
        done = {row["env_step"] for row in self.eval_rows}
        if due in done and not (final and env_step not in done):
            return
        t0 = time.perf_counter()
        self.agent.controller.planner = self.eval_agent_planner
        try:
            returns = evaluate_batched(
                self.agent, self._make_env, self.config.eval_episodes, seed=evaluation_seed(self.config, env_step),
                max_steps=self.config.max_episode_steps,
            )  # fmt: skip
        finally:
            self.agent.controller.planner = self.agent.planner
        self.timers["eval"] += time.perf_counter() - t0
        wall = self.wall_before + time.perf_counter() - start_wall
        row = evaluation_row(env_step, returns, wall)
        self.eval_rows.append(row)
        append_csv(self.out_dir / "eval.csv", row)
        self.log(f"eval @ {env_step} env steps: {row['mean_return']:.1f} ± {row['std_return']:.1f} ({wall / 60:.1f} min)")
        self.save_checkpoint(wall)

    def _update(self, count: int) -> dict[str, float]:
        """`count` updates on fresh batches; returns the last one's losses."""
        c = self.config
        t = time.perf_counter()
        for _ in range(count):
            losses = self.agent.update(self.buffer.sample(c.batch_size, c.horizon))
        self.updates += count
        self.timers["update"] += time.perf_counter() - t
        return losses

    def _train_episode(self, bar: Any) -> None:
        """One episode of collection with updates interleaved; the episode joins the buffer."""
        c, env, agent = self.config, self.env, self.agent
        t = time.perf_counter()
        obs, _ = env.reset(seed=c.seed * 100_003 + self.episode)
        self.timers["env"] += time.perf_counter() - t
        agent.reset()
        observations, actions, rewards = [obs], [], []
        losses: dict[str, float] = {}
        episode_start = time.perf_counter()
        for _ in range(self.episode_length):
            if self.step < self.seed_steps:
                action = self.rng.uniform(-1.0, 1.0, size=env.action_space.shape).astype(np.float32)
            else:
                t = time.perf_counter()
                action = agent.act(obs, explore=True)
                self.timers["plan"] += time.perf_counter() - t
            t = time.perf_counter()
            obs, reward, terminated, truncated, _ = env.step(action)
            self.timers["env"] += time.perf_counter() - t
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            self.step += 1
            if bar is not None:
                bar.update(self.action_repeat)
            if self.updates > 0:
                losses = self._update(1)
            if terminated or truncated or self.step >= self.total_agent_steps:
                break
        self.buffer.add_episode(np.stack(observations), np.stack(actions), np.asarray(rewards, np.float32))
        self.episode += 1
        if self.updates == 0 and self.step >= self.seed_steps:
            # The seed phase ends with as many updates as it had steps (TD-MPC2), once its
            # last episode is in the buffer.
            losses = self._update(self.seed_steps)
        row = {
            "episode": self.episode,
            "env_step": self.step * self.action_repeat,
            "episode_return": float(np.sum(rewards)),
            "updates": self.updates,
            "episode_s": round(time.perf_counter() - episode_start, 2),
            # The last update's losses; empty during the seed phase (fixed CSV columns).
            **{k: round(losses[k], 5) if k in losses else "" for k in LOSS_NAMES},
        }
        self.train_rows.append(row)
        append_csv(self.out_dir / "train.csv", row)
        if bar is not None:
            bar.set_postfix(ep_return=f"{row['episode_return']:.0f}")


def evaluate_snapshots(
    out_dir: str | Path,
    precision: str = "float32",
    log: Callable[[str], None] = print,
    env_steps: Collection[int] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate a deferred run's snapshots that have no result yet (resumable: a killed call
    loses only the evaluation in progress). Same protocol as inline evaluation: the full
    TD-MPC2 MPPI preset, `eval_episodes` episodes as one batch, the same episode seeds and
    discount, all taken from the env step and run settings stored in each snapshot (so
    `snapshots/` alone can be evaluated elsewhere). `precision` is the model's while
    planning (see `MPCController`). Writes `eval-deferred.csv` (float32;
    `eval-deferred-bfloat16.csv` for bfloat16) and returns all its rows, sorted by env step.
    `env_steps` limits the call to those evaluation points (None: every saved one), e.g. to
    evaluate the last model first, or to split the points between processes.

    Raises:
        FileNotFoundError: no run at `out_dir`.
        ValueError: an asked-for env step has no snapshot (the saved ones are named).
    """
    out_dir = Path(out_dir)
    paths = sorted((out_dir / "snapshots").glob("model-*.pt"))
    if not paths and not (out_dir / "checkpoint.pt").exists():
        raise FileNotFoundError(f"no training run at {out_dir} (no snapshots/ and checkpoint.pt is missing)")
    if env_steps is not None:
        wanted, saved = set(env_steps), {_snapshot_env_step(p) for p in paths}
        if missing := sorted(wanted - saved):
            raise ValueError(f"no snapshot at env step(s) {missing} in {out_dir / 'snapshots'}; saved: {sorted(saved)}")
        paths = [p for p in paths if _snapshot_env_step(p) in wanted]
    # float32 results are the run's curve; other precisions go beside it, for comparison.
    name = DEFERRED_EVAL_CSV if precision == "float32" else DEFERRED_EVAL_CSV.replace(".csv", f"-{precision}.csv")
    results = out_dir / name
    for path in paths:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
        env_step = int(snapshot.get("train_steps", _snapshot_env_step(path)))
        if env_step in {r["env_step"] for r in _read_deferred_rows(results)}:
            continue
        config = _snapshot_run_config(snapshot, out_dir)
        model = load_told(path, task=config.task)
        env = make_task_env(config)
        episode_length = int(env.max_episode_steps)
        env.close()
        if config.max_episode_steps is not None:
            episode_length = min(episode_length, config.max_episode_steps)
        loss = TOLDLossConfig(discount=heuristic_discount(episode_length))  # the planner's discount, as in training
        agent = TOLDAgent(model, loss, MPPI.tdmpc2(model.config.action_dim), seed=config.seed, precision=precision)
        t0 = time.perf_counter()
        returns = evaluate_batched(agent, lambda: make_task_env(config), config.eval_episodes, evaluation_seed(config, env_step),
                                   max_steps=config.max_episode_steps)  # fmt: skip
        row = {**evaluation_row(env_step, returns, float(snapshot.get("train_wall_s", 0.0))),
               "eval_s": round(time.perf_counter() - t0, 1), "precision": precision}  # fmt: skip
        # Re-read before writing: another process may have added rows meanwhile.
        rows = [r for r in _read_deferred_rows(results) if r["env_step"] != env_step] + [row]
        rewrite_csv(results, sorted(rows, key=lambda r: r["env_step"]))  # atomic, one header for all rows
        log(f"{out_dir.name}: eval @ {env_step} env steps: {row['mean_return']:.1f} ± {row['std_return']:.1f} "
            f"({row['eval_s'] / 60:.1f} min)")  # fmt: skip
    return sorted(_read_deferred_rows(results), key=lambda r: r["env_step"])


def _snapshot_env_step(path: Path) -> int:
    """The evaluation point a snapshot file stands for (its name: model-<env step>.pt)."""
    return int(path.stem.split("-")[1])


def _read_deferred_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open() as f:
        # Rows written before the precision column existed were float32 evaluations.
        return [{**r, "env_step": int(r["env_step"]), "mean_return": float(r["mean_return"]),
                 "std_return": float(r["std_return"]), "precision": r.get("precision") or "float32"}
                for r in csv.DictReader(f)]  # fmt: skip


def _snapshot_run_config(snapshot: dict[str, Any], out_dir: Path) -> TOLDTrainConfig:
    """The run settings a snapshot was saved with (older snapshots: from the run's checkpoint)."""
    if "train_config" in snapshot:
        return TOLDTrainConfig.from_dict(snapshot["train_config"])
    checkpoint = out_dir / "checkpoint.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(f"{out_dir}/snapshots holds models without their run settings and checkpoint.pt is missing")
    return TOLDTrainConfig.from_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["train_config"])
