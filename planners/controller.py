"""Receding-horizon control: encode the observation, plan, execute, repeat.

`MPCController` turns a world model and a planner into a policy. It keeps what must
persist between steps (the warm start, the plan being executed, a filtering model's
latent) and nothing else; `reset()` drops all of it at the start of an episode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from planners.base import Objective, PlanResult, SamplingPlanner, WarmStart
from planners.compile import compile_model
from planners.graphs import PlanGraphs
from planners.objectives import goal_objective, policy_proposals, reward_objective
from planners.precision import warn_if_bfloat16_is_slow

__all__ = ["MPCController", "PLANNING_PRECISIONS", "PRECISIONS", "as_observation_batch", "resolve_device"]

# Precisions of model arithmetic that training (autocast) and planning share.
PRECISIONS = ("float32", "bfloat16")
# Planning also takes TF32 tensor-core matrix products (CUDA only; float32 on a CPU).
PLANNING_PRECISIONS = ("float32", "tf32", "bfloat16")

# A custom objective: (model, z [B, *Z], z_goal [B, *Z] or None) -> objective.
ObjectiveFactory = Callable[[Any, Tensor, "Tensor | None"], Objective]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given.

    Raises:
        ValueError: an unknown device name, or CUDA asked for where there is none.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CUDA requested (device={str(device)!r}) but not available; use device 'auto' or 'cpu'")
    return resolved


def as_observation_batch(
    x: np.ndarray | Tensor,
    name: str,
    obs_ndim: int,
    dtype: torch.dtype,
    device: torch.device,
    obs_shape: tuple[int, ...] | None = None,
) -> tuple[Tensor, bool]:
    """One observation [*obs] or a batch [B, *obs] (numpy or torch) -> ([B, *obs] tensor on
    `device`, whether the input was batched). Floating inputs become `dtype` (float32 at the
    boundary unless the model asks for more: the physics model plans from the exact float64
    state); uint8 images stay uint8 for the encoder.

    Raises:
        ValueError: a shape with neither `obs_ndim` nor `obs_ndim` + 1 dimensions, one
            that differs from `obs_shape` (the model's, when it declares one), or NaN/inf.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.is_floating_point():
        t = t.to(dtype)
    t = t.to(device)
    if t.ndim == obs_ndim:
        t, batched = t.unsqueeze(0), False
    elif t.ndim == obs_ndim + 1:
        batched = True
    else:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected {obs_ndim} dimensions for one "
            f"observation or {obs_ndim + 1} for a batch (obs_ndim={obs_ndim})"
        )
    if obs_shape is not None and tuple(t.shape[1:]) != tuple(obs_shape):
        raise ValueError(
            f"{name} has shape {tuple(np.shape(x))}; the model takes observations of shape {tuple(obs_shape)} "
            f"(or a batch [B, {', '.join(map(str, obs_shape))}])"
        )
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t, batched


@contextlib.contextmanager
def tf32_matmuls() -> Any:
    """CUDA float32 matrix products and convolutions on TensorFloat-32 tensor cores (10-bit
    mantissa inputs, float32 accumulation) inside the block; the previous settings after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


class MPCController:
    """Model-predictive control over any model with `encode`, `next` and `reward`.

    Example:
        ctrl = MPCController(model, MPPI(action_dim=2), objective="reward")
        ctrl.reset()
        action = ctrl.act(obs)      # numpy [A] for one observation, [B, A] for a batch

    Args:
        model: a world model (see `models.base.WorldModel`) or any object with
            `encode(obs)`, `next(z, a)`, `reward(z, a)`; optional `value(z)`,
            `policy(z)`, `rollout(z, actions)`, `observe(z_prev, a_prev, obs)` and an
            `obs_shape` attribute.
        planner: a CEM, MPPI or ICEM instance.
        objective: "reward" (discounted return plus terminal value), "goal" (negative
            latent distance to `model.encode(goal)`), or a factory
            `(model, z, z_goal) -> objective`.
        replan_every: execute this many actions of each plan before planning again
            (1 is classic MPC); at most the planner's horizon.
        discount: gamma of the reward objective.
        use_value: add the model's terminal value to the reward objective.
        goal_mode: "last" or "all" steps for the goal objective.
        num_proposals: guide sequences drawn from `model.policy` per call; defaults to the
            planner config's `num_proposals` when the model has a policy, else 0.
        obs_ndim: dimensions of ONE observation (1 for state vectors, 3 for CHW images);
            defaults to len(model.obs_shape) when the model has it, else 1. An input
            with one more dimension is a batch.
        device: "auto", "cpu", "cuda", ...; observations are moved there.
        seed: seeds the controller's own random generator (reproducible actions);
            None uses torch's global generator.
        compile: run the model's hot methods through `torch.compile` (opt-in; the first
            plan call pays the compile time). See `planners.compile_model`.
        precision: "float32"; "tf32" to let CUDA matrix products use TensorFloat-32
            tensor cores while planning (no effect on a CPU); or "bfloat16" to run the
            model's matrix products in bfloat16 autocast while planning (encoding, the
            planner's own arithmetic and the objective's sums stay float32). bfloat16 pays
            for large batches: TOLD's MPPI over 10 problems (5360 candidates) ran 1.65x
            faster on an AMX CPU, one problem (536) ~10% slower (benchmarks/told_precision.py).
        cuda_graph: record each planning call as a CUDA graph, one per input signature,
            and replay it (`planners.graphs.PlanGraphs`): one launch instead of hundreds
            per call. The same generator state gives the same actions as eager planning.
            On a CPU, or where recording fails, planning runs eagerly with a one-time
            warning. The model's parameters must keep their storage (in-place updates,
            such as an optimiser's or `load_state_dict`, are seen by the replays).
    """

    def __init__(
        self,
        model: Any,
        planner: SamplingPlanner[Any],
        objective: str | ObjectiveFactory = "reward",
        replan_every: int = 1,
        discount: float = 0.99,
        use_value: bool = True,
        goal_mode: str = "last",
        num_proposals: int | None = None,
        obs_ndim: int | None = None,
        device: str | torch.device = "auto",
        seed: int | None = None,
        compile: bool = False,
        precision: str = "float32",
        cuda_graph: bool = False,
    ) -> None:
        if precision not in PLANNING_PRECISIONS:
            raise ValueError(f"precision={precision!r} must be one of {PLANNING_PRECISIONS}")
        for method in ("next", "reward") if objective == "reward" else ("next",):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model {type(model).__name__} has no {method}() method; a model needs encode, next and reward")
        if not isinstance(planner, SamplingPlanner):
            raise TypeError(f"planner must be a CEM, MPPI or ICEM instance, got {type(planner).__name__}")
        if isinstance(objective, str) and objective not in ("reward", "goal"):
            raise ValueError(f"objective={objective!r} must be 'reward', 'goal' or a callable (model, z, z_goal) -> objective")
        horizon = planner.config.horizon
        if not isinstance(replan_every, int) or not 1 <= replan_every <= horizon:
            raise ValueError(f"replan_every={replan_every!r} must be an int in [1, horizon={horizon}]")
        self.model = compile_model(model) if compile else model
        self.precision = precision
        self.planner = planner
        self.objective = objective
        self.replan_every = replan_every
        self.discount = discount
        self.use_value = use_value
        self.goal_mode = goal_mode
        has_policy = callable(getattr(model, "policy", None))
        if num_proposals is None:
            num_proposals = planner.config.num_proposals if has_policy else 0
        if num_proposals > 0 and not has_policy:
            raise ValueError(f"num_proposals={num_proposals} needs a model with policy(); {type(model).__name__} has none")
        self.num_proposals = num_proposals
        shape = getattr(model, "obs_shape", None)
        self.obs_ndim = obs_ndim if obs_ndim is not None else (len(shape) if shape is not None else 1)
        # Checked at every act() when the model declares it, so a wrong observation fails
        # loudly instead of planning from garbage.
        self.obs_shape: tuple[int, ...] | None = tuple(shape) if shape is not None and obs_ndim is None else None
        self.obs_dtype: torch.dtype = getattr(model, "obs_dtype", torch.float32)
        self.device = resolve_device(device)
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.last_result: PlanResult | None = None
        self.graphs: PlanGraphs | None = None
        if cuda_graph:
            model_generator = getattr(model, "generator", None)
            self.graphs = PlanGraphs(
                planner, self._planning_objective, self.generator, self.device,
                model_generators=(model_generator,) if isinstance(model_generator, torch.Generator) else (),
            )  # fmt: skip
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget the warm start, the current plan and the latent."""
        self._warm_start: WarmStart | None = None
        self._plan: Tensor | None = None  # [B, H, A]
        self._step_in_plan = 0
        self._latent: Tensor | None = None
        self._last_action: Tensor | None = None
        self._batch_size: int | None = None

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor, goal: np.ndarray | Tensor | None = None) -> np.ndarray:
        """The action to execute for an observation (or a batch of them).

        Args:
            obs: one observation [*obs] or a batch [B, *obs]; numpy or torch.
            goal: goal observation(s) in the same form, for objective="goal".

        Returns:
            numpy float32 action [A], or [B, A] for a batched input.
        """
        obs_t, batched = self._as_batch(obs, "obs")
        b = obs_t.shape[0]
        if self._batch_size is not None and b != self._batch_size:
            raise ValueError(f"batch size changed from {self._batch_size} to {b} within an episode; call reset() first")
        self._batch_size = b
        z = self._encode(obs_t)
        if self._plan is None or self._step_in_plan >= self.replan_every:
            self._replan(z, goal, b)
        assert self._plan is not None
        action = self._plan[:, self._step_in_plan]  # [B, A]
        self._step_in_plan += 1
        self._last_action = action
        out = action.detach().to("cpu", torch.float32).numpy()
        return out if batched else out[0]

    # -- pieces of act ------------------------------------------------------------------

    def _as_batch(self, x: np.ndarray | Tensor, name: str) -> tuple[Tensor, bool]:
        return as_observation_batch(x, name, self.obs_ndim, self.obs_dtype, self.device, self.obs_shape)

    def _encode(self, obs: Tensor) -> Tensor:
        """The latent [B, *Z] of this step; filtering models also see the last action."""
        observe = getattr(self.model, "observe", None)
        if callable(observe):
            self._latent = observe(self._latent, self._last_action, obs)
            return self._latent
        encode = getattr(self.model, "encode", None)
        return encode(obs) if callable(encode) else obs

    def _replan(self, z: Tensor, goal: np.ndarray | Tensor | None, b: int) -> None:
        z_goal = None
        if goal is not None:
            goal_t, _ = self._as_batch(goal, "goal")
            if goal_t.shape[0] == 1 and b > 1:
                goal_t = goal_t.expand(b, *goal_t.shape[1:])
            encode = getattr(self.model, "encode", None)
            z_goal = encode(goal_t) if callable(encode) else goal_t
        proposals = None
        if self.num_proposals > 0:
            with self._model_precision():
                proposals = policy_proposals(self.model, z, self.planner.config.horizon, self.num_proposals)
            if self.precision != "float32":
                proposals = proposals.float()
        if self.graphs is not None:
            result = self.graphs.plan(z, z_goal, warm_start=self._warm_start, proposals=proposals)
        else:
            result = self.planner.plan(
                self._planning_objective(z, z_goal),
                batch_size=b,
                warm_start=self._warm_start,
                proposals=proposals,
                generator=self.generator,
                device=self.device,
            )
        self.last_result = result
        self._plan = result.actions
        self._step_in_plan = 0
        self._warm_start = None if result.warm_start is None else result.warm_start.shift(self.replan_every - 1)

    def _planning_objective(self, z: Tensor, z_goal: Tensor | None) -> Objective:
        """The objective of one call, run in the controller's precision."""
        objective = self._build_objective(z, z_goal)
        return objective if self.precision == "float32" else self._in_model_precision(objective)

    def _model_precision(self) -> contextlib.AbstractContextManager[Any]:
        """The context the model runs in while planning: none for float32, TF32 matrix
        products for tf32, bfloat16 autocast for bfloat16."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        if self.precision == "tf32":
            return tf32_matmuls()
        warn_if_bfloat16_is_slow(self.device.type)
        return torch.autocast(self.device.type, dtype=getattr(torch, self.precision))

    def _in_model_precision(self, objective: Objective) -> Objective:
        def reduced(actions: Tensor) -> Tensor:
            with self._model_precision():
                return objective(actions).float()

        return reduced

    def _build_objective(self, z: Tensor, z_goal: Tensor | None) -> Objective:
        if callable(self.objective):
            return self.objective(self.model, z, z_goal)
        if self.objective == "goal":
            if z_goal is None:
                raise ValueError("objective='goal' needs act(obs, goal=...) with a goal observation")
            return goal_objective(self.model, z, z_goal, mode=self.goal_mode)  # type: ignore[arg-type]
        return reward_objective(self.model, z, discount=self.discount, use_value=self.use_value)
