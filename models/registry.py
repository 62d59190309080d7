"""The registry of world-model families: one `ModelSpec` per family, looked up by name.

It reads like Gymnasium's env registry:

    from models import registry, load

    registry.list_models()              # every ModelSpec, sorted by name
    spec = registry.get("told")         # unknown names raise an error naming the closest ones
    model = load("checkpoints/told-cartpole-swingup.pt", device="cpu")  # dispatches on the header
    registry.register(ModelSpec(...))   # a user's own family, the way ours are registered

A spec is data plus entry points (`"module:attribute"` strings resolved on first use), so
importing the registry imports no family's code, no trainer and no simulator. The command
line, `--list` and the contract tests read everything they need from here; no code outside
a family's own module and this file names a family.

A family supplies, through its spec:
- `prepare`: `(PlanRequest) -> PlanSetup`, the env, model and controller the command line
  plans with (`models.planning` has the shared pieces, `models.tasks` the task kinds);
- `load`: `(path, env=None, device="auto") -> model`, for checkpoint files that name it;
- `trainer` (optional): `make_trainer(*, task, steps, obs, seed, out, device, progress,
  options) -> trainer` with `out_dir`, `describe()` and `run()`;
- `tiny` (optional): `() -> TinyCase`, a small instance for the contract tests;
- the options it takes on the command line, beside the shared flags.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ModelSpec",
    "Option",
    "get",
    "list_models",
    "names",
    "default_trainable",
    "reference_model",
    "register",
    "resolve",
]


@dataclass(frozen=True)
class Option:
    """A family's own command-line option (`--name-with-dashes`), given to the family as
    `options[name]` only when the user sets it.

    Attributes:
        name: Python name ("encoder_weights"); the flag is "--encoder-weights".
        help: one line for `--help`.
        type: converts the flag's text (int, float, str); ignored for switches.
        choices: the accepted values, if a closed set.
        switch: an on/off flag (`--goal-at-rest`, or `--plan-value/--no-plan-value` when
            `negatable`).
        negatable: a switch that also has a `--no-` form.
    """

    name: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    switch: bool = False
    negatable: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class ModelSpec:
    """One world-model family.

    Attributes:
        name: what `--model` and checkpoint headers call it ("told").
        description: one line for `--list`.
        observations: what it plans from: "state", "pixels", "goal" (a goal image).
        tasks: what it plans on: kinds of task, "suite" (DM Control), "goal" (goal-reaching
            tasks), "toy" (the analytic toy systems; see `models.tasks.list_tasks`), or
            single task names.
        prepare: entry point of `(PlanRequest) -> PlanSetup`.
        load: entry point of `(path, env=None, device="auto") -> model`; None for a
            family with no checkpoint files (the physics).
        default_planner: what `--planner auto` picks (its paper's planner).
        default_preset: the planner preset used when `--planner` is the default one and
            no `--preset` is given (None: the budget below).
        default_budget: planner config fields for planning with this family when no
            preset applies (horizon, num_samples, ...).
        plan_options: its own flags of the planning command.
        trainer: entry point of its `make_trainer`, or None if it does not train.
        train_options: its own flags of `train`.
        tiny: entry point of `() -> TinyCase` for the contract tests.
        shipped: checkpoint file name pattern in checkpoints/ ("told-{task}.pt"), or None.
        loads_training_checkpoints: whether `load` also reads its trainer's checkpoint.pt
            (otherwise that file is refused with the model file to use).
        reference: the family the command line plans with when no learned model is at
            hand (the true physics).
        default_for_training: the family `train` trains when no --model is given.
        legacy_training_field: (key, value) that marks this family's training checkpoints
            written before they carried a `model` header (value None: the key's presence).
    """

    name: str
    description: str
    observations: tuple[str, ...]
    tasks: tuple[str, ...]
    prepare: str
    load: str | None = None
    default_planner: str = "icem"
    default_preset: str | None = None
    default_budget: dict[str, int] = field(default_factory=dict)
    plan_options: tuple[Option, ...] = ()
    trainer: str | None = None
    train_options: tuple[Option, ...] = ()
    tiny: str | None = None
    shipped: str | None = None
    loads_training_checkpoints: bool = False
    reference: bool = False
    default_for_training: bool = False
    legacy_training_field: tuple[str, str | None] | None = None

    @property
    def trains(self) -> bool:
        return self.trainer is not None

    def plans_on(self, task: str, kind: str) -> bool:
        """Whether it plans on `task`, a task of `kind`."""
        return kind in self.tasks or task in self.tasks

    def entry(self, field_name: str) -> Callable[..., Any]:
        """The callable one of the entry-point fields names, imported now."""
        target = getattr(self, field_name)
        if target is None:
            raise ValueError(f"model {self.name!r} has no {field_name}")
        return resolve(target)


def resolve(entry_point: str) -> Callable[..., Any]:
    """`"package.module:attribute"` -> the attribute, importing the module."""
    module, _, attribute = entry_point.partition(":")
    return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add a family. Re-registering a name raises unless `replace`."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model {spec.name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    """The spec of `name`.

    Raises:
        ValueError: unknown name; the message suggests the closest and lists all.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; choose one of {names()}")


def names() -> list[str]:
    return sorted(_REGISTRY)


def list_models(observations: str | None = None, trains: bool | None = None) -> list[ModelSpec]:
    """Registered specs sorted by name, optionally only those taking `observations` or
    (not) training."""
    specs = [_REGISTRY[n] for n in names()]
    if observations is not None:
        specs = [s for s in specs if observations in s.observations]
    if trains is not None:
        specs = [s for s in specs if s.trains == trains]
    return specs


def reference_model() -> ModelSpec:
    """The family to plan with when no learned model is at hand (see `ModelSpec.reference`)."""
    return _flagged("reference")


def default_trainable() -> ModelSpec:
    """The family `train` trains by default (see `ModelSpec.default_for_training`)."""
    return _flagged("default_for_training")


def _flagged(flag: str) -> ModelSpec:
    for spec in list_models():
        if getattr(spec, flag):
            return spec
    raise ValueError(f"no registered model has {flag}=True")


def all_options(kind: str, specs: Iterable[ModelSpec] | None = None) -> dict[str, tuple[Option, list[str]]]:
    """Every family option of `kind` ("plan" or "train") by name, with the families that
    take it (the first family's declaration gives the help text)."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for spec in specs if specs is not None else list_models():
        for option in spec.plan_options if kind == "plan" else spec.train_options:
            if option.name in found:
                found[option.name][1].append(spec.name)
            else:
                found[option.name] = (option, [spec.name])
    return found


# -- our families ------------------------------------------------------------------------------

_TOLD_SIZES = ("tiny", "1M", "5M")
_EVAL_OPTIONS = (
    Option("eval_every", "env steps between evaluations (default 10000)", int),
    Option("eval_episodes", "episodes per evaluation (default 10)", int),
    Option("checkpoint_every", "episodes between checkpoints (default 5)", int),
    Option("max_episode_steps", "cut episodes to this many agent steps, for quick checks", int),
)

register(ModelSpec(
    name="told",
    description="TD-MPC2's world model (TOLD): latent dynamics, reward, Q ensemble and policy prior",
    observations=("state", "pixels"),
    tasks=("suite",),
    prepare="models.told:prepare_planning",
    load="models.told:load_for_planning",
    default_planner="mppi",
    default_preset="tdmpc2",
    # TD-MPC2's planning budget for the other planners (MPPI takes the whole preset).
    default_budget={"horizon": 3, "num_samples": 512, "num_elites": 64, "iterations": 6, "num_proposals": 24},
    trainer="training.told_trainer:make_trainer",
    train_options=(
        Option("size", "TOLD size: tiny, 1M or 5M (default 1M)", choices=_TOLD_SIZES),
        Option("seed_steps", "random-action agent steps first (default 5 episodes)", int),
        Option("plan_iterations", "MPPI iterations while collecting (default 6)", int),
        Option("batch_size", "subsequences per update (default 256)", int),
        *_EVAL_OPTIONS,
    ),
    tiny="models.told:tiny_case",
    shipped="told-{task}.pt",
    loads_training_checkpoints=True,
    default_for_training=True,
    legacy_training_field=("agent_state", None),
))

register(ModelSpec(
    name="rssm",
    description="PlaNet's recurrent state-space model, with an optional Dreamer actor-critic",
    observations=("state", "pixels"),
    tasks=("suite",),
    prepare="models.actor_control:prepare_planning",
    load="models.rssm:load_for_planning",
    default_planner="cem",
    # PlaNet's CEM budget for any planner (--preset planet gives the exact CEM preset).
    default_budget={"horizon": 12, "num_samples": 1000, "num_elites": 100, "iterations": 10},
    plan_options=(
        Option("mode", "act by planning, with the Dreamer actor alone, or plan with the actor's proposals",
               choices=("planner", "actor", "planner+actor")),
        Option("plan_value", "--mode planner+actor: end every candidate with the critic's value, discounted by "
               "its gamma (default: as the run beside --checkpoint trained)", switch=True, negatable=True),
    ),
    trainer="training.planet_trainer:make_trainer",
    train_options=(
        Option("preset", "RSSM preset: planet (default), dreamerv2, dreamerv3 or tiny"),
        Option("mode", "act with CEM, the Dreamer actor, or CEM with actor proposals (default planner)",
               choices=("planner", "actor", "planner+actor")),
        Option("recipe", "PlaNet's model and loop (default), or DreamerV3's regime (discrete latents, action "
               "repeat 2, 16 x 64 batches, train ratio 512, V3 actor-critic, critic value in the plan)",
               choices=("planet", "dreamer")),
        Option("plan_samples", "CEM candidates (default PlaNet's 1000)", int),
        Option("plan_iterations", "CEM iterations (default PlaNet's 10)", int),
        Option("batch_size", "sequences per update (default 50)", int),
        Option("chunk_length", "transitions per training sequence (default 50)", int),
        Option("collect_interval", "model updates per collected episode (default 100)", int),
        Option("raw_angles", "state runs: feed the task's joint angles (reacher's) to the model as they are, not as "
               "(sin, cos)", switch=True),
        Option("cuda_graph", "on a GPU, record the whole update (world model and actor-critic) as one CUDA graph and "
               "replay it", switch=True),
        *_EVAL_OPTIONS,
    ),
    tiny="models.rssm:tiny_case",
    legacy_training_field=("trainer", "planet"),
))

register(ModelSpec(
    name="dinowm",
    description="DINO-WM: a ViT predictor over frozen DINOv2 patch features, planning to goal images",
    observations=("pixels", "goal"),
    tasks=("goal",),
    prepare="training.goal_mpc:prepare_planning",
    load="models.dino_wm:load_for_planning",
    default_planner="cem",
    shipped="dinowm-{task}.pt",
    plan_options=(
        Option("encoder_weights", "the DINOv2 weight file (e.g. dinov2_vits14_pretrain.pth); nothing is downloaded"),
        Option("env_steps", "env steps each goal gets (default 50)", int),
        Option("goal_objective", "feature distance to the goal at the last predicted frame (the paper's, default) "
               "or averaged over the predicted frames", choices=("last", "all")),
        Option("goal_at_rest", "ask for the goal pose at rest (the goal's joint velocities set to zero)", switch=True),
        Option("proprio_positions", "compare only the joint positions in the proprio term of the goal objective",
               switch=True),
        Option("goal_alpha", "weight of the proprio term against the visual one (default 0.1, DINO-WM's alpha)", float),
    ),
    trainer="training.dino_wm_trainer:make_trainer",
    train_options=(
        Option("preset", "DINO-WM preset: cpu (default), paper or tiny"),
        Option("trajectories", "trajectories to collect (default 3000, DINO-WM's)", int),
        Option("trajectory_steps", "env steps per trajectory (default 100)", int),
        Option("policy", "data collection policy (noisy_planner: iCEM over the physics plus noise)",
               choices=("random", "noisy_planner")),
        Option("epochs", "training epochs (default 100)", int),
        Option("encoder_weights", "the DINOv2 weight file (default: a random frozen encoder)"),
        Option("encoder_precision", "run the frozen encoder in bfloat16 autocast when caching features",
               choices=("float32", "bfloat16")),
        Option("batch_size", "windows per update (default 32)", int),
    ),
    tiny="models.dino_wm:tiny_case",
    legacy_training_field=("kind", "dinowm-train"),
))

register(ModelSpec(
    name="oracle",
    description="the true dynamics, MuJoCo's physics or a toy system's equations: the planners' reference",
    observations=("state", "goal"),
    tasks=("suite", "goal", "toy"),
    prepare="models.oracle:prepare_planning",
    default_planner="icem",
    tiny="models.oracle:tiny_case",
    reference=True,
))

for _toy in ("pendulum", "point_mass"):
    register(ModelSpec(
        name=f"toy-{_toy}",
        description=f"the analytic {_toy.replace('_', ' ')} in torch (exact, differentiable; no MuJoCo)",
        observations=("state",),
        tasks=(f"toy-{_toy}",),
        prepare="models.toy:prepare_planning",
        default_planner="icem",
        tiny=f"models.toy:tiny_{_toy}",
    ))

register(ModelSpec(
    name="ensemble",
    description="an ensemble of dynamics MLPs over states (PETS, Nagabandi's delta MLP, Plan2Explore's disagreement)",
    observations=("state",),
    tasks=("suite",),
    prepare="models.ensemble:prepare_planning",
    load="models.ensemble:load_for_planning",
    default_planner="icem",
    # iCEM's published budget at PlaNet's horizon; a trained model plans with its run's own.
    default_budget={"horizon": 12, "num_samples": 40, "num_elites": 10, "iterations": 3},
    plan_options=(
        Option("particles", "particles per candidate (default: the run's, PETS's 20)", int),
        Option("propagation", "trajectory sampling: member re-drawn every step (ts1), fixed per particle (tsinf), "
               "or the mean prediction (expectation) (default: the run's)", choices=("ts1", "tsinf", "expectation")),
        Option("risk", "score = mean - risk x std of the particles' returns (default 0)", float),
        Option("objective", "plan on the task reward or on the members' disagreement (Plan2Explore)",
               choices=("task", "disagreement")),
        Option("zero_shot", "first fit the reward head to the run's explored data, labelled with the task reward "
               "(no new env steps)", switch=True),
    ),
    trainer="training.ensemble_trainer:make_trainer",
    train_options=(
        Option("preset", "ensemble preset: pets (default), mbrl, deterministic or tiny"),
        Option("ensemble_size", "members (default: the preset's)", int),
        Option("particles", "particles per candidate while planning (default 20)", int),
        Option("propagation", "trajectory sampling: ts1, tsinf (default) or expectation",
               choices=("ts1", "tsinf", "expectation")),
        Option("planner", "planner in the loop (default icem)", choices=("icem", "cem")),
        Option("explore", "reward-free: collect with the members' disagreement alone (Plan2Explore); "
               "evaluations plan zero-shot", switch=True),
        Option("raw_angles", "feed the task's joint angles (reacher's) to the model as they are, not as (sin, cos)",
               switch=True),
        Option("epochs", "most training epochs per episode (default 25, early stopping)", int),
        Option("seed_episodes", "episodes of random actions first (default 5)", int),
        Option("action_repeat", "physics steps per agent step (default PlaNet's: cartpole 8, reacher/cheetah/cup 4, "
               "others 2)", int),
        Option("horizon", "planning horizon in agent steps (default 12)", int),
        Option("plan_samples", "candidates in the planner's first iteration (default 40 for icem, 400 for cem)", int),
        Option("plan_iterations", "planner iterations (default 3 for icem, 5 for cem)", int),
        Option("plan_beta", "iCEM's colored-noise exponent (default 0.25, for fast tasks such as cartpole; "
               "2 gives smoother, farther-reaching action sequences)", float),
        *_EVAL_OPTIONS,
    ),
    tiny="models.ensemble:tiny_case",
))
