"""The true MuJoCo dynamics of a DM Control task, as a world model (the "oracle").

`OracleModel(env)` plans with the simulator itself: its latent is MuJoCo's full physics
state and `rollout_with_rewards` runs every candidate sequence through MuJoCo (Todorov
et al., 2012) in native code, on several threads, with `mujoco.rollout`. Rewards come
from the task's own definition (DM Control, Tassa et al., 2018), so the return a planner
computes for a sequence is the return the environment pays for it: bit for bit in our
tests when the rollout starts from the env's current state.

    env = envs.make("cartpole-swingup", seed=0)
    oracle = OracleModel(env)
    env.reset(seed=0)
    z = oracle.encode(env.get_physics_state()[None])      # [1, S] float64
    latents, rewards = oracle.rollout_with_rewards(z.expand(N, -1), actions)  # [N, H, A]

Observations. The oracle's observation is the physics state, not the env's observation:
pass `env.get_physics_state()` (float64 [S], mjSTATE_FULLPHYSICS: time, qpos, qvel,
act, ...; see `envs.physics_state`). A controller does this with
`ctrl.act(env.get_physics_state())`. Note that `MPCController` casts float64
observations to float32, so the start state it plans from is rounded to float32 (about
1e-7 relative); exact equality needs the float64 state passed to the model directly.

What one agent step is. `env.action_repeat` control steps with the action held, each
control step `n_sub_steps` physics steps (dm_control's control timestep, e.g. 10 for
walker); the action is clipped to [-1, 1] and mapped onto the actuator range exactly as
`env.to_control` does. The reward of an agent step is what `DMCEnv.step` returns: the
sum, in order, of the task reward after each control step, evaluated on the state as
dm_control holds it then (after `mj_step1`, with the applied control in `data.ctrl`).
For a goal-reaching env (`GoalDMCEnv`) it is the env's dense goal reward instead:
`env.compute_reward(achieved, desired)` on the float32 goals after the agent step
(minus the goal distance), so the ordinary reward objective plans towards the goal.

Rewards are computed by vectorised numpy functions for the tasks in
`models.oracle_rewards` (cartpole, reacher, point_mass, finger, cheetah, walker and
the four goal tasks). Any other task falls back to the generic path, which puts each
state into a scratch copy of the physics (replaying its last physics step, then
`mj_step1`, as dm_control's step leaves it) and calls `task.get_reward`: always
correct, but a Python call per state.

Episode-dependent model values (dm_control moves and resizes targets in the model at
`reset`) need no syncing: the oracle shares the env's `MjModel` (read-only) and reads
them, and a goal env's desired goal, on every call. So after `env.reset(seed=...)` the
oracle matches the new episode at once. It never writes to the env: rollouts run on
the oracle's own `MjData`.

Known differences from the env, by design: the episode's time limit (which shortens
the last agent step when the repeat does not divide it) and task termination (lqr
only) are ignored; a rollout that hits a MuJoCo warning (a diverging simulation) holds
its last state where dm_control would raise `PhysicsError`. The constraint solver's
warm start is not part of the state vector; by default the env's current one is used
(`warmstart="env"`), which is what makes a rollout from the env's current state
identical to `env.step` for contact-rich tasks; elsewhere it only changes results at the
solver's tolerance.

Shapes:
    M a flattened batch, H horizon, A action size, S physics-state size,
    G goal size.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from envs.dmc_env import DMCEnv
from envs.goal_env import GoalDMCEnv
from models.oracle_rewards import BatchFunction, StateBatch, vector_achieved_goal, vector_reward

if TYPE_CHECKING:
    import mujoco

__all__ = ["OracleModel"]

logger = logging.getLogger(__name__)
_FALLBACK_LOGGED: set[str] = set()


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OracleModel:
    """A DM Control task's MuJoCo simulator as a `WorldModel` (DESIGN section 3.4).

    Example:
        env = envs.make("reacher-easy", seed=0, action_repeat=4)
        oracle = OracleModel(env)
        ctrl = MPCController(oracle, MPPI(action_dim=2, horizon=12), discount=1.0)
        obs, _ = env.reset(seed=1)
        action = ctrl.act(env.get_physics_state())

    Args:
        env: an env from `envs.make` (a `DMCEnv` or `GoalDMCEnv`, Gymnasium wrappers
            allowed). The oracle keeps a reference and reads its model, task, action
            mapping, warm start and (goal tasks) desired goal on each call; it never
            changes the env's episode.
        num_threads: threads `mujoco.rollout` uses; default: every core this process
            may run on.
        vectorized: use the vectorised reward functions where a task has one; False
            forces the generic (per-state `task.get_reward`) path.
        warmstart: "env" starts each rollout's constraint solver from the env's current
            `qacc_warmstart` (exact continuation of the running episode); "zero" from
            zeros (a pure function of the state).

    Attributes:
        obs_shape: (S,), the shape of one observation (a physics state).
        state_size: S.
        action_dim: A.
        action_repeat: control steps per agent step (the env's).
        physics_steps_per_action: MuJoCo steps per agent step
            (action_repeat x dm_control's n_sub_steps).
        is_goal_task: whether rewards are the goal env's dense goal rewards.
        vectorized_reward: whether rewards (or achieved goals) use a vectorised function.

    Raises:
        TypeError: if `env` is not one of our DM Control envs.
        ValueError: on a bad `num_threads` or `warmstart`.
    """

    def __init__(
        self,
        env: Any,
        num_threads: int | None = None,
        vectorized: bool = True,
        warmstart: Literal["env", "zero"] = "env",
    ) -> None:
        import mujoco
        from mujoco import rollout as mj_rollout

        base = getattr(env, "unwrapped", env)
        if not isinstance(base, DMCEnv):
            raise TypeError(f"OracleModel needs an env from envs.make (a DMCEnv); got {type(env).__name__}")
        if warmstart not in ("env", "zero"):
            raise ValueError(f"warmstart={warmstart!r} must be 'env' or 'zero'")
        threads = _default_threads() if num_threads is None else num_threads
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"num_threads={num_threads!r} must be a positive int")
        self._mujoco = mujoco
        self.env: DMCEnv = base
        self.warmstart = warmstart
        self.num_threads = threads
        # Plan from the exact float64 state the env holds (see MPCController).
        self.obs_dtype = torch.float64
        self.task_name = base.task_id.name
        self.is_goal_task = isinstance(base, GoalDMCEnv)
        self.action_repeat = int(base.action_repeat)
        # dm_control's physics steps per control step (its control timestep / the model's).
        substeps = getattr(base.dmc_env, "_n_sub_steps", None)
        if substeps is None:
            substeps = round(base.dmc_env.control_timestep() / base.physics.timestep())
        self._substeps = int(substeps)
        self.physics_steps_per_action = self.action_repeat * self._substeps
        self._scale, self._offset = self._action_affine(base)
        self.action_dim = int(self._offset.shape[0])
        self._bind_model()
        self.state_size = int(mujoco.mj_stateSize(self._model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
        self.obs_shape: tuple[int, ...] = (self.state_size,)
        nq, nv = self._model.nq, self._model.nv
        self._qpos = slice(1, 1 + nq)  # FULLPHYSICS is time, qpos, qvel, act, history, plugin
        self._qvel = slice(1 + nq, 1 + nq + nv)
        # 0 threads: the pool is not started and rollouts run on the calling thread.
        self._pool = mj_rollout.Rollout(nthread=threads if threads > 1 else 0)

        self._vector: BatchFunction | None = None
        if vectorized:
            physics = base.physics
            if self.is_goal_task:
                self._vector = vector_achieved_goal(base.goal_task, physics)  # type: ignore[attr-defined]
            else:
                self._vector = vector_reward(base.dmc_env.task, physics)
        self.vectorized_reward = self._vector is not None
        if vectorized and self._vector is None and self.task_name not in _FALLBACK_LOGGED:
            _FALLBACK_LOGGED.add(self.task_name)
            logger.debug("OracleModel: no vectorised reward for %s; using task.get_reward per state", self.task_name)

    # ------------------------------------------------------------------ WorldModel API

    def encode(self, obs: Tensor | np.ndarray) -> Tensor:
        """Physics states as latents.

        Args:
            obs: [M, S] physics states (`env.get_physics_state()`, stacked); numpy or torch.

        Returns:
            float64 [M, S], on the input's device.

        Raises:
            ValueError: on a wrong shape or size, or NaN / inf.
        """
        t = obs.detach() if isinstance(obs, Tensor) else torch.as_tensor(np.asarray(obs))
        if t.ndim != 2 or t.shape[1] != self.state_size:
            given = t.shape[-1] if t.ndim else "scalar"
            raise ValueError(
                f"OracleModel.encode expects physics states of shape [M, {self.state_size}] "
                f"(env.get_physics_state() of {self.task_name}, mjSTATE_FULLPHYSICS); got shape "
                f"{tuple(t.shape)} (state size {given}, expected {self.state_size})"
            )
        t = t.to(torch.float64)
        if not bool(torch.isfinite(t).all()):
            raise ValueError("OracleModel.encode: the physics states contain NaN or inf")
        return t

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """One agent step. z [M, S], action [M, A] in [-1, 1] -> [M, S]."""
        self._check_step_action(action)
        return self.rollout(z, action.unsqueeze(1))[:, 0]

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        """The env's reward for taking `action` in `z`. z [M, S], action [M, A] -> float64 [M]."""
        self._check_step_action(action)
        return self.rollout_with_rewards(z, action.unsqueeze(1))[1][:, 0]

    def rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        """States after each agent step. z [M, S], actions [M, H, A] -> float64 [M, H, S]."""
        z_np, ctrl, device = self._inputs(z, actions)
        states, _ = self._simulate(z_np, ctrl, extra_step=False)
        return self._to_torch(self._agent_step_states(states, ctrl.shape[1]), device)

    def rollout_with_rewards(self, z: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """States and the env's rewards of each agent step, all candidates in one batch.

        Args:
            z: [M, S] start states (from `encode`).
            actions: [M, H, A] agent actions (clipped to [-1, 1] like the env does).

        Returns:
            latents float64 [M, H, S] (the state after each agent step) and rewards
            float64 [M, H] (what `env.step` would return for each step).

        Raises:
            ValueError: on wrong shapes or sizes, or NaN / inf.
        """
        z_np, ctrl, device = self._inputs(z, actions)
        m, h = ctrl.shape[:2]
        vector = self._vector
        needs_sensors = vector is not None and vector.needs_sensors
        states, sensors = self._simulate(z_np, ctrl, extra_step=needs_sensors)
        if not needs_sensors:
            sensors = None
        if self.is_goal_task:
            rewards = self._goal_rewards(z_np, states, sensors, ctrl)
        elif vector is not None:
            rewards = self._vector_task_rewards(states, sensors, ctrl, vector)
        else:
            rewards = self._generic_task_rewards(z_np, states, ctrl)
        return self._to_torch(self._agent_step_states(states, h), device), self._to_torch(rewards, device)

    # ------------------------------------------------------------------ goal tasks

    def achieved_goal(self, z: Tensor) -> Tensor:
        """The goal each state achieves (goal tasks only). z [M, S] -> float64 [M, G].

        Computed as the env does (`goal_task.achieved_goal`), before its float32 cast.
        """
        if not self.is_goal_task:
            raise ValueError(f"{self.task_name} is not a goal-reaching task; achieved_goal needs a GoalDMCEnv")
        z_np, device = self._states(z)
        self._bind_model()
        if self._vector is not None:
            sensors = None
            if self._vector.needs_sensors:
                # The sensors of a rollout's first step are those of its start state.
                ctrl = np.zeros((z_np.shape[0], 1, self._model.nu))
                _, sensors = self._simulate(z_np, ctrl, extra_step=False, substeps=1)
                sensors = sensors[:, 0]
            batch = StateBatch(z_np[:, self._qpos], z_np[:, self._qvel], np.zeros((z_np.shape[0], self._model.nu)), sensors)
            achieved = np.asarray(self._vector(batch), dtype=np.float64)
        else:
            goal_task = self.env.goal_task  # type: ignore[attr-defined]
            achieved = np.stack(
                [np.asarray(goal_task.achieved_goal(self._pose(s, np.zeros(self._model.nu))), np.float64) for s in z_np]
            )
        return self._to_torch(achieved, device)

    # ------------------------------------------------------------------ house-keeping

    def close(self) -> None:
        """Stops the rollout threads; safe to call twice."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        path = "vectorised" if self.vectorized_reward else "generic"
        return (
            f"OracleModel({self.task_name}, action_repeat={self.action_repeat}, S={self.state_size}, "
            f"A={self.action_dim}, threads={self.num_threads}, rewards={path})"
        )

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _action_affine(env: DMCEnv) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) of env.to_control: control = clip(a, -1, 1) * scale + offset."""
        scale = getattr(env, "_action_scale", None)
        offset = getattr(env, "_action_offset", None)
        if scale is None or offset is None:
            a = int(np.prod(env.action_space.shape))
            offset = env.to_control(np.zeros(a))
            scale = env.to_control(np.ones(a)) - offset
        return np.asarray(scale, np.float64).copy(), np.asarray(offset, np.float64).copy()

    def _bind_model(self) -> None:
        """(Re)binds to the env's MjModel; new MjData when dm_control replaced it."""
        model = self.env.physics.model.ptr
        if getattr(self, "_model", None) is model:
            return
        self._model: mujoco.MjModel = model
        self._datas = [self._mujoco.MjData(model) for _ in range(self.num_threads)]
        # A dm_control Physics of the domain's class over a copy of the data and the
        # shared model, for task.get_reward / goal_task.achieved_goal on single states.
        self._scratch = self.env.physics.copy(share_model=True)

    def _check_step_action(self, action: Tensor) -> None:
        if action.ndim != 2 or action.shape[1] != self.action_dim:
            raise ValueError(
                f"action has shape {tuple(action.shape)}; expected [M, A] with A = {self.action_dim} "
                f"(the action size of {self.task_name})"
            )

    def _states(self, z: Tensor | np.ndarray) -> tuple[np.ndarray, torch.device]:
        device = z.device if isinstance(z, Tensor) else torch.device("cpu")
        z_np = z.detach().to("cpu", torch.float64).numpy() if isinstance(z, Tensor) else np.asarray(z, np.float64)
        if z_np.ndim != 2 or z_np.shape[1] != self.state_size:
            raise ValueError(
                f"z has shape {tuple(z_np.shape)}; expected [M, {self.state_size}] physics states of "
                f"{self.task_name} (OracleModel.encode(env.get_physics_state()))"
            )
        if not np.all(np.isfinite(z_np)):
            raise ValueError("z contains NaN or inf")
        return np.ascontiguousarray(z_np), device

    def _inputs(self, z: Tensor, actions: Tensor) -> tuple[np.ndarray, np.ndarray, torch.device]:
        """Checked float64 start states [M, S] and dm_control controls [M, H, nu]."""
        z_np, device = self._states(z)
        a_np = actions.detach().to("cpu").numpy() if isinstance(actions, Tensor) else np.asarray(actions)
        if a_np.ndim != 3 or a_np.shape[2] != self.action_dim:
            raise ValueError(
                f"actions have shape {tuple(a_np.shape)}; expected [M, H, A] with A = {self.action_dim} "
                f"(the action size of {self.task_name})"
            )
        if a_np.shape[0] != z_np.shape[0]:
            raise ValueError(f"actions are for {a_np.shape[0]} rollouts but z holds {z_np.shape[0]} states")
        a_np = a_np.astype(np.float64)  # float32 -> float64 is exact, as in env.to_control
        if not np.all(np.isfinite(a_np)):
            raise ValueError("actions contain NaN or inf")
        self._bind_model()
        return z_np, np.clip(a_np, -1.0, 1.0) * self._scale + self._offset, device

    def _simulate(
        self, z: np.ndarray, ctrl: np.ndarray, extra_step: bool, substeps: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every physics step of every rollout, in native code.

        Args:
            z: [M, S] start states.
            ctrl: [M, H, nu] one control per agent step.
            extra_step: run one more physics step, so that sensors (which a rollout
                reports for the state each step starts from) exist for the last state.
            substeps: physics steps per entry of ctrl; default: per agent step.

        Returns:
            states [M, T, S] after each physics step and sensors [M, T, nsensordata]
            of the state before each step (T = H * substeps, plus 1 with extra_step),
            or None when no step ran.
        """
        per = self.physics_steps_per_action if substeps is None else substeps
        m, h = ctrl.shape[:2]
        steps = h * per + int(extra_step)
        if m == 0 or steps == 0:
            return np.empty((m, steps, self.state_size)), np.empty((m, steps, self._model.nsensordata))
        control = np.repeat(ctrl, per, axis=1)  # [M, H * per, nu]
        if extra_step:
            control = np.concatenate([control, control[:, -1:]], axis=1)
        warm = None
        if self.warmstart == "env":
            warm = np.array(self.env.physics.data.qacc_warmstart, dtype=np.float64)[None]  # [1, nv]
        states, sensors = self._pool.rollout(
            self._model, self._datas, z, np.ascontiguousarray(control), initial_warmstart=warm
        )
        return states, sensors

    def _agent_step_states(self, states: np.ndarray, horizon: int) -> np.ndarray:
        """[M, T, S] physics steps -> [M, H, S] the state after each agent step."""
        per = self.physics_steps_per_action
        return np.ascontiguousarray(states[:, per - 1 : horizon * per : per])

    def _control_step_batch(
        self, states: np.ndarray, sensors: np.ndarray | None, ctrl: np.ndarray, every: int, count: int
    ) -> StateBatch:
        """StateBatch [M, count] of the states after every `every`-th physics step."""
        index = np.arange(1, count + 1) * every - 1  # [count] physics-step indices
        picked = states[:, index]  # [M, count, S]
        reading = None if sensors is None else sensors[:, index + 1]
        return StateBatch(picked[..., self._qpos], picked[..., self._qvel], ctrl, reading)

    def _vector_task_rewards(
        self, states: np.ndarray, sensors: np.ndarray | None, ctrl: np.ndarray, vector: BatchFunction
    ) -> np.ndarray:
        m, h = ctrl.shape[:2]
        r = self.action_repeat
        per_control = np.repeat(ctrl, r, axis=1)  # [M, H * R, nu]
        batch = self._control_step_batch(states, sensors, per_control, self._substeps, h * r)
        rewards = np.asarray(vector(batch), dtype=np.float64).reshape(m, h, r)
        return self._sum_repeats(rewards)

    @staticmethod
    def _sum_repeats(rewards: np.ndarray) -> np.ndarray:
        """[M, H, R] -> [M, H], summed in the env's order (0.0 + r_1 + r_2 + ...)."""
        total = np.zeros(rewards.shape[:2])
        for k in range(rewards.shape[2]):
            total = total + rewards[..., k]
        return total

    def _pose(self, state: np.ndarray, control: np.ndarray, before: np.ndarray | None = None) -> Any:
        """The scratch physics as dm_control holds `state` after the physics step from `before`.

        dm_control's step ends with `mj_step1` (positions, velocities and their sensors
        of the new state); acceleration-stage fields are those of the step's start
        state, so that step is replayed first when `before` is given.
        """
        mj = self._mujoco
        full = mj.mjtState.mjSTATE_FULLPHYSICS
        data = self._scratch.data.ptr
        if before is not None:
            mj.mj_setState(self._model, data, before, full)
            data.qacc_warmstart[:] = 0.0  # the same result whatever ran before
            data.ctrl[:] = control
            mj.mj_step(self._model, data)
        mj.mj_setState(self._model, data, state, full)
        data.ctrl[:] = control
        mj.mj_step1(self._model, data)
        return self._scratch

    def _generic_task_rewards(self, z: np.ndarray, states: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
        """task.get_reward on each control-step state: [M, H]; a Python call per state."""
        m, h = ctrl.shape[:2]
        r, sub = self.action_repeat, self._substeps
        task = self.env.dmc_env.task
        rewards = np.empty((m, h, r))
        for i in range(m):
            for t in range(h):
                for k in range(r):
                    j = (t * r + k + 1) * sub - 1  # physics step that ends this control step
                    before = states[i, j - 1] if j > 0 else z[i]
                    rewards[i, t, k] = float(task.get_reward(self._pose(states[i, j], ctrl[i, t], before)))
        return self._sum_repeats(rewards)

    def _goal_rewards(self, z: np.ndarray, states: np.ndarray, sensors: np.ndarray | None, ctrl: np.ndarray) -> np.ndarray:
        """The goal env's reward after each agent step: [M, H]."""
        env: GoalDMCEnv = self.env  # type: ignore[assignment]
        m, h = ctrl.shape[:2]
        per = self.physics_steps_per_action
        if self._vector is not None:
            batch = self._control_step_batch(states, sensors, ctrl, per, h)
            achieved = np.asarray(self._vector(batch), dtype=np.float64)  # [M, H, G]
        else:
            rows = []
            for i in range(m):
                for t in range(h):
                    j = (t + 1) * per - 1
                    before = states[i, j - 1] if j > 0 else z[i]
                    rows.append(env.goal_task.achieved_goal(self._pose(states[i, j], ctrl[i, t], before)))
            achieved = np.asarray(rows, dtype=np.float64).reshape(m, h, -1)
        # The env rewards the float32 goals its observation carries.
        desired = env.desired_goal.astype(np.float32)
        return np.asarray(env.compute_reward(achieved.astype(np.float32), desired), dtype=np.float64)

    @staticmethod
    def _to_torch(array: np.ndarray, device: torch.device) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)


# -- the registry's entry points (models.registry) ------------------------------------------


def goal_image_frame(env: Any) -> Any:
    """The goal configuration rendered at video size, without disturbing the episode."""
    from envs.physics_state import preserved_physics

    goal_state = env.goal_physics_state()
    with preserved_physics(env.physics):
        env.set_physics_state(goal_state)
        return env.render()


def prepare_planning(request: Any) -> Any:
    """MPC over the true physics with the measured per-task action repeat and budget
    (`models.oracle_presets`); on a toy task, over the toy system's own dynamics."""
    import envs
    from models.oracle_presets import matched_planner, oracle_settings
    from models.planning import PlanSetup, build_planner, describe_planner
    from models.toy import TOY_TASKS
    from planners import MPCController

    if request.task in TOY_TASKS:  # a toy system is its own true dynamics
        from models.toy import prepare_planning as prepare_toy

        return prepare_toy(request, model_name="oracle")
    settings = oracle_settings(request.task)
    repeat = request.action_repeat if request.action_repeat is not None else settings["action_repeat"]
    env = envs.make(request.task, obs=request.obs, seed=request.seed, action_repeat=repeat)
    action_dim = int(env.action_space.shape[0])
    if request.preset is not None:
        planner = build_planner(request, action_dim)
    else:
        overrides = dict(request.overrides)
        horizon = overrides.pop("horizon", settings["horizon"])
        try:
            planner = matched_planner(request.planner, action_dim, horizon, settings["budget"], **overrides)
        except TypeError as error:
            raise ValueError(str(error)) from None
    model = OracleModel(env)
    controller = MPCController(model, planner, discount=1.0, use_value=False, seed=request.seed, device=request.device)
    return PlanSetup(
        env=env, controller=controller, description=f"planner {request.planner} {describe_planner(planner)}, model oracle",
        model_input=lambda e, obs: e.get_physics_state(),
        goal_frame=goal_image_frame if isinstance(env, envs.GoalDMCEnv) else None,
    )


def tiny_case() -> Any:
    """The physics of cartpole-swingup, planning from its physics state."""
    import envs
    from models.planning import TinyCase

    env = envs.make("cartpole-swingup", seed=0)
    env.reset(seed=0)
    return TinyCase(model=OracleModel(env), obs=env.get_physics_state(), action_dim=int(env.action_space.shape[0]),
                    controller_kwargs={"use_value": False, "discount": 1.0})
