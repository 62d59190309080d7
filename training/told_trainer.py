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

The loop, checkpoints and resuming are the shared skeleton's (`training.online`); this
module adds the model, its agent (update and acting), the update schedule and deferred
evaluation. Everything needed to continue is saved every `checkpoint_every` episodes and
at every evaluation: the model, optimisers, running scale, random generators, step
counters, logs and the replay buffer. Starting the same command again continues from
there with the same step count and buffer. Files in `out_dir`:

    checkpoint.pt          training state (torch.load(weights_only=True)); header
                           model "told", kind "training", format_version
    replay-e<N>.npz        the buffer after N episodes (the one checkpoint.pt names)
    model.pt               the model alone, the file to ship and to plan with
    eval.csv, train.csv    evaluation returns; per-episode training statistics
    snapshots/             deferred evaluation: the model at each evaluation point
    eval-deferred.csv      deferred evaluation: the returns of the snapshots
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.told import TOLD, TOLD_SIZES, TOLDConfig, heuristic_discount, load_told
from planners import MPPI
from training.online import (
    OnlineTrainer,
    check_options,
    check_task_and_obs,
    default_run_dir,
    evaluate_batched,
    evaluation_seed,
    one_of,
    positive_int,
)
from training.run_files import atomic_torch_save, evaluation_row, rewrite_csv
from training.told_agent import TOLDAgent, TOLDLossConfig

__all__ = ["TOLDTrainConfig", "TOLDTrainer", "atomic_torch_save", "evaluate_batched", "evaluate_snapshots",
           "evaluation_seed", "make_trainer"]

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


def make_task_env(config: TOLDTrainConfig) -> Any:
    """The run's environment (pixel runs stack 3 frames; no time limit beyond the task's)."""
    import envs  # here, not at import: the CLI picks MUJOCO_GL before dm_control loads

    return envs.make(
        config.task, obs=config.obs, seed=config.seed, action_repeat=config.action_repeat,
        frame_stack=3 if config.obs == "pixels" else 1, time_limit=None,
    )  # fmt: skip


class TOLDTrainer(OnlineTrainer):
    """TD-MPC2 on the online skeleton: builds the TOLD model and its agent; `run()` trains
    (or resumes).

    Args:
        config: the run's settings.
        out_dir: where checkpoints and logs go; an existing checkpoint there is resumed.
        device: torch device for the model ("auto": CUDA when present, else CPU).
        progress: show a tqdm bar.
        log: a function for one-line messages (print by default).
    """

    config: TOLDTrainConfig
    model_name = "told"
    run_identity = _RUN_IDENTITY
    act_timer = "plan"
    metric_names = LOSS_NAMES

    def make_env(self) -> Any:
        return make_task_env(self.config)

    # -- model and agent (override to build them elsewhere) ------------------------------------

    def build(self) -> None:
        c = self.config
        self.seed_steps = c.seed_steps if c.seed_steps is not None else max(1000, 5 * self.episode_length)
        self.agent = self.build_agent(self.build_model())
        self.eval_agent_planner = MPPI.tdmpc2(self.action_dim)

    def build_model(self) -> TOLD:
        c = self.config
        return TOLD(TOLDConfig(obs_shape=self.obs_shape, action_dim=self.action_dim, obs_type=c.obs, size=c.size,
                               task=c.task))  # fmt: skip

    def build_agent(self, model: TOLD) -> TOLDAgent:
        """The agent: the model's optimisers, its update and the collecting MPPI."""
        c = self.config
        loss = TOLDLossConfig(batch_size=c.batch_size, horizon=c.horizon, discount=heuristic_discount(self.episode_length))
        overrides = {} if c.plan_iterations is None else {"iterations": c.plan_iterations}
        return TOLDAgent(model, loss, MPPI.tdmpc2(self.action_dim, **overrides), device=self.device, seed=c.seed)

    # -- acting, updates, evaluation ------------------------------------------------------------

    def in_seed_phase(self) -> bool:
        return self.step < self.seed_steps

    def begin_episode(self) -> None:
        self.agent.reset()

    def explore(self, obs: np.ndarray) -> np.ndarray:
        return self.agent.act(obs, explore=True)

    def updates_after_step(self) -> dict[str, float] | None:
        return self._update(1) if self.updates > 0 else None

    def updates_after_episode(self) -> dict[str, float] | None:
        # The seed phase ends with as many updates as it had steps (TD-MPC2), once its last
        # episode is in the buffer.
        if self.updates == 0 and self.step >= self.seed_steps:
            return self._update(self.seed_steps)
        return None

    def _update(self, count: int) -> dict[str, float]:
        """`count` updates on fresh batches; returns the last one's losses."""
        c = self.config
        t = time.perf_counter()
        for _ in range(count):
            losses = self.agent.update(self.buffer.sample(c.batch_size, c.horizon))
        self.updates += count
        self.timers["update"] += time.perf_counter() - t
        return losses

    def evaluate(self, episodes: int, seed: int) -> list[float]:
        """Returns of `episodes` episodes without exploration noise, with the full TD-MPC2
        MPPI preset, run as one batch."""
        self.agent.controller.planner = self.eval_agent_planner
        try:
            return evaluate_batched(self.agent, self.make_env, episodes, seed=seed, max_steps=self.config.max_episode_steps)
        finally:
            self.agent.controller.planner = self.agent.planner

    def snapshot_path(self, env_step: int) -> Path:
        return self.out_dir / "snapshots" / f"model-{env_step:07d}.pt"

    def _maybe_evaluate(self, final: bool = False) -> None:
        c = self.config
        if not c.defer_evaluation:
            super()._maybe_evaluate(final)
            return
        env_step = self.step * self.action_repeat
        due = env_step // c.eval_every * c.eval_every
        if due == 0 and not final and not c.eval_at_start:
            return
        # Named by the evaluation point it stands for; it records the exact env step (the
        # evaluation's row and seeds use that, as inline evaluation does).
        point = due if not final or due == env_step else env_step
        if self.snapshot_path(point).exists():
            return
        wall = self.wall()
        snapshot = self.agent.model.checkpoint(train_steps=env_step, train_wall_s=round(wall, 1), train_config=asdict(c))
        atomic_torch_save(snapshot, self.snapshot_path(point))
        # As after an inline evaluation: a resumed run never re-lives a saved point.
        self.save_checkpoint(wall)

    # -- checkpoints ----------------------------------------------------------------------------

    def family_state(self) -> dict[str, Any]:
        return {"agent_state": self.agent.state()}

    def load_family_state(self, state: dict[str, Any]) -> bool:
        self.agent.load_state(state["agent_state"])
        return True

    def upgrade_checkpoint(self, state: dict[str, Any]) -> dict[str, Any] | None:
        # Before the header: {"version": 1, "agent_state": ..., the same fields}.
        return state if state.get("version") == 1 and "agent_state" in state else None

    def save_model_files(self) -> None:
        atomic_torch_save(self.agent.model.checkpoint(train_steps=self.step * self.action_repeat), self.out_dir / "model.pt")

    def describe(self) -> str:
        c = self.config
        return f"told ({c.size}, {c.obs}) on {c.task} for {c.steps} env steps (action repeat {self.action_repeat})"


_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "size": one_of(*TOLD_SIZES),
    "seed_steps": positive_int,
    "eval_every": positive_int,
    "eval_episodes": positive_int,
    "checkpoint_every": positive_int,
    "plan_iterations": positive_int,
    "batch_size": positive_int,
    "max_episode_steps": positive_int,
}


def make_trainer(*, task: str, steps: int, obs: str, seed: int, out: str | None, device: str, progress: bool,
                 options: Mapping[str, Any]) -> TOLDTrainer:  # fmt: skip
    """The command line's TOLD trainer: `options` holds the TOLD options the user set
    (size, seed_steps, eval_every, eval_episodes, checkpoint_every, plan_iterations,
    batch_size, max_episode_steps); the others keep `TOLDTrainConfig`'s defaults. `out`
    None: runs/told-<task>-<obs>-s<seed>.

    Raises:
        ValueError: an unknown task or option, or a bad value (named, with the accepted ones).
    """
    check_task_and_obs(task, obs)
    check_options("told", options, _OPTION_CHECKS)
    positive_int("steps", steps)
    config = TOLDTrainConfig(task=task, steps=steps, obs=obs, seed=seed, **dict(options))
    out_dir = Path(out) if out is not None else default_run_dir("told", task, obs, seed)
    return TOLDTrainer(config, out_dir, device=device, progress=progress)


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
        returns = evaluate_batched(agent, lambda config=config: make_task_env(config), config.eval_episodes, evaluation_seed(config, env_step),
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
