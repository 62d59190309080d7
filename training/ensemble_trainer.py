"""Online training of a dynamics ensemble, PETS style (Chua et al., 2018), on the shared
skeleton (`training.online`).

The loop:
- `seed_episodes` episodes of uniform random actions;
- after every episode from then on, one round of training on all the data so far
  (`models.ensemble.train_ensemble`): a held-out split, normalisers refitted, up to
  `epochs` epochs of bootstrapped minibatches per member, early stopping on the held-out
  loss, elites chosen by it;
- the next episode is collected with MPC in the loop: iCEM (default) or CEM over the
  trajectory-sampling objective (`models.objectives.trajectory_sampling_objective`), no
  exploration noise (PETS has none);
- every `eval_every` env steps, `eval_episodes` held-out episodes are planned as one batch.

With `explore=True` the run is reward-free (Plan2Explore, Sekar et al., 2020): episodes
are collected with the members' disagreement as the only objective and the reward heads
do not train. Each evaluation is zero-shot: a copy of the model gets reward heads fitted
to the data explored so far, labelled with the task reward the env recorded (no new env
steps), and plans on the task with them.

Checkpoints and resuming are the skeleton's; this module adds the model, optimiser,
controllers and their generators to it. Files in `out_dir`: checkpoint.pt,
replay-e<N>.npz, model.pt (plan with it: `python run_planning.py --model ensemble
--checkpoint <out_dir>/model.pt`), train.csv, eval.csv.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.ensemble import (
    ENSEMBLE_PRESETS,
    PROPAGATIONS,
    EnsembleDynamics,
    ensemble_config,
    fit_reward_head,
    pixels_refused,
    train_ensemble,
    transitions_from_replay,
)
from models.objectives import make_disagreement_objective, make_trajectory_sampling_objective
from planners import MPCController, SamplingPlanner, make_planner
from training.online import (
    OnlineTrainer,
    angle_dims,
    boolean,
    check_angle_reading,
    check_options,
    check_task_and_obs,
    default_run_dir,
    evaluate_batched,
    one_of,
    positive_int,
)
from training.run_files import atomic_torch_save

__all__ = ["EnsembleTrainConfig", "EnsembleTrainer", "make_trainer", "planner_settings"]

_RUN_IDENTITY = ("task", "obs", "preset", "ensemble_size", "seed", "action_repeat", "explore")
METRIC_NAMES = ("loss", "val_score", "epochs", "train_s")
PLANNERS_IN_THE_LOOP = ("icem", "cem")


@dataclass(frozen=True)
class EnsembleTrainConfig:
    """One online training run of an ensemble.

    Attributes:
        task: a DM Control task; steps: env steps (action repeat included); obs: "state".
        seed: run seed (env, weights, sampling).
        preset: the ensemble's architecture (`models.ensemble.ENSEMBLE_PRESETS`).
        ensemble_size: members (None: the preset's).
        particles, propagation, risk: the trajectory-sampling objective (PETS: 20, TS-inf).
        planner: "icem" or "cem" in the loop; horizon, plan_samples, plan_elites,
            plan_iterations: its budget (None: iCEM's published 40 -> 32 -> 25 samples,
            10 elites, 3 iterations, or PETS's CEM 400 / 40 and 5 iterations; horizon
            PlaNet's 12 at PlaNet's action repeat); plan_beta: iCEM's colored-noise
            exponent (0.25 for fast tasks such as cartpole-swingup, Pinneri et al.).
        explore: reward-free collection with the disagreement objective (Plan2Explore).
        raw_angles: feed the task's joint-angle observations (`envs.angle_observations`,
            e.g. reacher's) to the model as they are instead of as (sin, cos).
        epochs: most epochs per training round (25: PETS trains 5 epochs after each
            1000-step trial; at action repeat 8 an episode brings 125 transitions, so 5
            epochs per episode would be 8x fewer updates per transition); patience:
            epochs without a 1% gain before a round stops early; batch_size: rows per member per minibatch (PETS 32);
            lr, weight_decay: Adam's; val_fraction: share of the data held out.
        seed_episodes: random-action episodes first.
        action_repeat: None: PlaNet's per-domain value (cartpole 8).
        eval_every, eval_episodes, eval_at_start: the evaluation schedule.
        checkpoint_every: episodes between checkpoints; buffer_capacity: None keeps all.
        max_episode_steps: cut episodes short (tests); zero_shot_epochs: epochs of
            reward-head fitting before each evaluation of an exploration run.
    """

    task: str = "cartpole-swingup"
    steps: int = 50_000
    obs: str = "state"
    seed: int = 0
    preset: str = "pets"
    ensemble_size: int | None = None
    particles: int = 20
    propagation: str = "tsinf"
    risk: float = 0.0
    planner: str = "icem"
    horizon: int = 12
    plan_samples: int | None = None
    plan_elites: int | None = None
    plan_iterations: int | None = None
    plan_beta: float = 0.25
    explore: bool = False
    raw_angles: bool = False
    epochs: int = 25
    patience: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-5
    val_fraction: float = 0.1
    seed_episodes: int = 5
    action_repeat: int | None = None
    eval_every: int = 10_000
    eval_episodes: int = 10
    eval_at_start: bool = False
    checkpoint_every: int = 1
    buffer_capacity: int | None = None
    max_episode_steps: int | None = None
    zero_shot_epochs: int = 20

    def __post_init__(self) -> None:
        pixels_refused(self.obs)
        if self.preset not in ENSEMBLE_PRESETS:
            raise ValueError(f"preset={self.preset!r} is not one of {tuple(ENSEMBLE_PRESETS)}")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"propagation={self.propagation!r} is not one of {PROPAGATIONS}")
        if self.planner not in PLANNERS_IN_THE_LOOP:
            raise ValueError(f"planner={self.planner!r} is not one of {PLANNERS_IN_THE_LOOP}")
        for name in ("steps", "particles", "horizon", "epochs", "patience", "batch_size", "eval_every",
                     "eval_episodes", "checkpoint_every", "zero_shot_epochs"):  # fmt: skip
            positive_int(name, getattr(self, name))
        if self.seed_episodes < 1:
            raise ValueError(f"seed_episodes={self.seed_episodes!r} must be at least 1 (the model needs data first)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction!r} must be in [0, 1)")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleTrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def planner_settings(config: EnsembleTrainConfig) -> dict[str, Any]:
    """The planner budget of a run: iCEM's published one (Pinneri et al. 2020: 40 -> 32 ->
    25 samples, 10 elites, 3 iterations) or PETS's CEM (400 samples, 40 elites, 5
    iterations), at the run's horizon, with the run's overrides."""
    c = config
    if c.planner == "icem":
        settings = dict(horizon=c.horizon, num_samples=40, num_elites=10, iterations=3, noise_beta=c.plan_beta)
    else:
        settings = dict(horizon=c.horizon, num_samples=400, num_elites=40, iterations=5, momentum=0.1)
    overrides = {"num_samples": c.plan_samples, "num_elites": c.plan_elites, "iterations": c.plan_iterations}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings["num_elites"] = min(settings["num_elites"], settings["num_samples"])
    return settings


class EnsembleTrainer(OnlineTrainer):
    """PETS (or reward-free Plan2Explore) on the online skeleton; `run()` trains or resumes.

    Args:
        config: the run's settings.
        out_dir: where checkpoints and logs go; an existing checkpoint there is resumed.
        device: "auto" (CUDA when present, else CPU), "cpu", ...
        progress: show a tqdm bar.
        log: a function for one-line messages (print by default).
    """

    config: EnsembleTrainConfig
    model_name = "ensemble"
    run_identity = _RUN_IDENTITY
    act_timer = "plan"
    log_seed_phase = True
    metric_names = METRIC_NAMES

    def make_env(self) -> Any:
        import envs  # here, not at import: the CLI picks MUJOCO_GL before dm_control loads

        c = self.config
        return envs.make(c.task, obs="state", seed=c.seed, action_repeat=c.action_repeat,
                         action_repeat_preset="planet", time_limit=None)  # fmt: skip

    # -- model, optimiser, planner, controller -----------------------------------------------

    def build(self) -> None:
        c = self.config
        config = ensemble_config(c.preset, self.obs_shape[0], self.action_dim, task=c.task,
                                 action_repeat=self.action_repeat, ensemble_size=c.ensemble_size,
                                 angle_dims=angle_dims(c.task, c.raw_angles))  # fmt: skip
        self.model = EnsembleDynamics(config).to(self.device)
        self.model.planning = {"planner": c.planner, **planner_settings(c), "particles": c.particles,
                               "propagation": c.propagation}  # fmt: skip
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.planner = self.build_planner()
        self.model.generator = torch.Generator(device=self.device).manual_seed(c.seed + 1)
        objective = make_disagreement_objective() if c.explore else self.task_objective()
        self.controller = MPCController(self.model, self.planner, objective=objective, seed=c.seed, device=self.device)

    def build_planner(self) -> SamplingPlanner[Any]:
        settings = planner_settings(self.config)
        if self.config.planner == "cem":
            settings.pop("noise_beta", None)
        return make_planner(self.config.planner, self.action_dim, **settings)

    def task_objective(self) -> Any:
        c = self.config
        return make_trajectory_sampling_objective(particles=c.particles, propagation=c.propagation, risk=c.risk)

    # -- acting, updates, evaluation -----------------------------------------------------------

    def in_seed_phase(self) -> bool:
        return self.episode < self.config.seed_episodes

    def begin_episode(self) -> None:
        self.controller.reset()

    def explore(self, obs: np.ndarray) -> np.ndarray:
        return self.controller.act(obs)

    def updates_after_episode(self) -> dict[str, float] | None:
        if self.episode < self.config.seed_episodes:
            return None
        c = self.config
        t = time.perf_counter()
        data = transitions_from_replay(self.buffer.state())
        metrics = train_ensemble(self.model, self.optimizer, data, self.rng, epochs=c.epochs, batch_size=c.batch_size,
                                 val_fraction=c.val_fraction, patience=c.patience,
                                 reward=not c.explore)  # fmt: skip
        seconds = time.perf_counter() - t
        self.timers["update"] += seconds
        self.updates += 1
        return {**metrics, "train_s": seconds}

    def evaluate(self, episodes: int, seed: int) -> list[float]:
        """Returns of `episodes` held-out episodes planned as one batch on the task reward
        (zero-shot for an exploration run), with their own generators so that evaluating
        leaves the training run's random streams untouched."""
        c = self.config
        model = self.model
        if (c.explore or not bool(model.reward_fitted)) and self.buffer.num_steps >= 2:
            data = transitions_from_replay(self.buffer.state())
            model = fit_reward_head(self.model, data, np.random.default_rng(seed), epochs=c.zero_shot_epochs,
                                    batch_size=c.batch_size)  # fmt: skip
        saved = model.generator
        model.generator = torch.Generator(device=self.device).manual_seed(seed)
        try:
            controller = MPCController(model, self.planner, objective=self.task_objective(), seed=seed, device=self.device)
            return evaluate_batched(controller, self.make_env, episodes, seed=seed, max_steps=c.max_episode_steps)
        finally:
            model.generator = saved

    # -- checkpoints ---------------------------------------------------------------------------

    def family_state(self) -> dict[str, Any]:
        return {
            "model_state": self.model.checkpoint(),
            "optimizer_state": self.optimizer.state_dict(),
            "model_generator": self.model.generator.get_state(),
            "controller_generator": self.controller.generator.get_state(),
        }

    def load_family_state(self, state: dict[str, Any]) -> bool:
        # The saved model's own header says how it read the joint angles (a model saved
        # before angle features existed read them raw), whatever the table says today.
        check_angle_reading(self.checkpoint_path, state["model_state"]["config"].get("angle_dims"),
                            self.model.config.angle_dims)  # fmt: skip
        self.model.load_state_dict(state["model_state"]["state_dict"])
        self.model.generator.set_state(state["model_generator"])
        self.controller.generator.set_state(state["controller_generator"])
        if state.get("optimizer_state") is None:
            return False
        self.optimizer.load_state_dict(state["optimizer_state"])
        return True

    def save_model_files(self) -> None:
        wall = self.wall_before + time.perf_counter() - self._start_wall
        atomic_torch_save(self.model.checkpoint(train_steps=self.step * self.action_repeat, train_wall_s=round(wall, 1),
                                                planning=dict(self.model.planning)),
                          self.out_dir / "model.pt")  # fmt: skip

    def describe(self) -> str:
        c = self.config
        m = self.model.config
        kind = "probabilistic" if m.probabilistic else "deterministic"
        mode = "reward-free exploration (disagreement)" if c.explore else f"{c.propagation} x {c.particles} particles"
        return (f"ensemble ({c.preset}: {m.ensemble_size} x {m.layers} x {m.hidden} {kind}, {m.num_elites} elites) on "
                f"{c.task} for {c.steps} env steps (action repeat {self.action_repeat}), {c.planner} "
                f"{planner_settings(c)}, {mode}")


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r} must be a finite number >= 0")


_OPTION_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "preset": one_of(*ENSEMBLE_PRESETS),
    "ensemble_size": positive_int,
    "particles": positive_int,
    "propagation": one_of(*PROPAGATIONS),
    "planner": one_of(*PLANNERS_IN_THE_LOOP),
    "explore": boolean,
    "raw_angles": boolean,
    "epochs": positive_int,
    "seed_episodes": positive_int,
    "action_repeat": positive_int,
    "horizon": positive_int,
    "plan_samples": positive_int,
    "plan_iterations": positive_int,
    "plan_beta": _non_negative,
    "eval_every": positive_int,
    "eval_episodes": positive_int,
    "checkpoint_every": positive_int,
    "max_episode_steps": positive_int,
}


def make_trainer(*, task: str, steps: int, obs: str, seed: int, out: str | None, device: str, progress: bool,
                 options: Mapping[str, Any]) -> EnsembleTrainer:  # fmt: skip
    """The command line's ensemble trainer. `options` holds the options the user set
    (preset, ensemble_size, particles, propagation, planner, explore, raw_angles, epochs,
    seed_episodes, action_repeat, horizon, plan_samples, plan_iterations, plan_beta, eval_every,
    eval_episodes, checkpoint_every, max_episode_steps); the others keep
    `EnsembleTrainConfig`'s defaults. `out` None: runs/ensemble-<task>-state[-explore]-s<seed>.

    Raises:
        ValueError: pixels (the ensemble takes state only), an unknown task or option, or
            a bad value (named, with the accepted ones).
    """
    pixels_refused(obs)
    check_task_and_obs(task, obs)
    check_options("ensemble", options, _OPTION_CHECKS)
    positive_int("steps", steps)
    config = EnsembleTrainConfig(task=task, steps=steps, obs=obs, seed=seed, **dict(options))
    out_dir = Path(out) if out is not None else default_run_dir("ensemble", task, obs, seed,
                                                                 tag="explore" if config.explore else "")  # fmt: skip
    return EnsembleTrainer(config, out_dir, device=device, progress=progress)

