"""A DM Control suite task behind the Gymnasium 1.x API.

:class:`DMCEnv` owns one dm_control ``control.Environment`` and adds what the rest of the
toolkit expects: actions in ``[-1, 1]``, action repeat, float32 state vectors or uint8
CHW pixels, frame stacking, a time limit reported as ``truncated``, exact seeding, and
access to the physics for reference-physics models.

Time limit. dm_control is loaded with an infinite time limit and the episode length is
counted here in control steps, because dm_control's own counter compares against a
float (``time_limit / control_timestep``) and cannot express a limit in agent steps.
The default is 1000 control steps, every suite domain's own limit (lqr has none in
dm_control; it gets 1000 too). With action repeat ``R`` that is ``ceil(1000 / R)`` agent
steps; when ``R`` does not divide the limit the last agent step repeats fewer times.
An episode ends with ``terminated=True`` only when dm_control's task ends it (only lqr
does, on reaching the origin).

Seeding. ``reset(seed=s)`` re-seeds the task's ``numpy.random.RandomState``
(``task.random``) in place, so an episode equals the one of
``suite.load(domain, task, task_kwargs={"random": s})`` step for step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.action_repeat import action_repeat_for
from envs.config import EnvConfig
from envs.observations import (
    FrameStack,
    default_camera,
    flatten_observation,
    render_chw,
    render_hwc,
)
from envs.physics_state import get_physics_state, physics_state_size, set_physics_state
from envs.tasks import TaskId, resolve_task

if TYPE_CHECKING:
    from dm_control.mujoco import Physics
    from dm_control.rl.control import Environment

SUITE_CONTROL_STEP_LIMIT = 1000
# dm_control declares lqr's actions as +-1e10, i.e. unbounded. Mapping [-1, 1] onto that
# range would make every action enormous, so bounds this wide are left unscaled.
_UNBOUNDED = 1e6


class DMCEnv(gym.Env):
    """A DM Control task as a Gymnasium environment.

    Build it with :func:`envs.make`. Observations are float32 ``[k * D]`` (state) or
    uint8 ``[3k, H, W]`` (pixels) for frame stack ``k``; actions are float32 ``[A]`` in
    ``[-1, 1]``, clipped there and mapped affinely onto the task's action bounds.
    ``step`` returns the reward summed over the repeated control steps.

    Attributes:
        config: The validated :class:`~envs.config.EnvConfig`.
        task_id: The resolved task name.
        action_repeat: Control steps per agent step.
        camera: Camera used for pixels and ``render()``.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 50}
    is_goal_env: ClassVar[bool] = False

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.task_id: TaskId = resolve_task(config.task)
        if self.task_id.is_goal != self.is_goal_env:
            raise ValueError(
                f"{type(self).__name__} cannot run task {self.task_id.name!r}; build it with "
                "envs.make(), which picks DMCEnv or GoalDMCEnv."
            )
        self.render_mode = config.render_mode
        self.action_repeat = (
            config.action_repeat
            if config.action_repeat is not None
            else action_repeat_for(self.task_id.domain, config.action_repeat_preset)
        )
        self._dmc = self._load_dmc_env(config.seed)
        self.camera = self._check_camera(config.camera)
        self._check_render_size(config.image_size, config.image_size, "image_size")
        self._check_render_size(*config.render_hw, "render_size")

        self._control_step_limit = (
            config.time_limit * self.action_repeat
            if config.time_limit is not None
            else self._default_control_step_limit()
        )
        self._obs_keys = self._observation_keys()
        self._action_scale, self._action_offset = self._action_affine()
        self.action_space = spaces.Box(
            -1.0, 1.0, shape=self._action_offset.shape, dtype=np.float32
        )
        self.observation_space = self._build_observation_space()
        control_dt = self._dmc.control_timestep() * self.action_repeat
        self.metadata = {**type(self).metadata, "render_fps": max(1, round(1.0 / control_dt))}

        self._frames = FrameStack(config.frame_stack)
        self._pending_seed = config.seed
        self._control_steps = 0
        self._needs_reset = True
        self._closed = False

    # ----------------------------------------------------------------- public API

    @property
    def physics(self) -> Physics:
        """The dm_control physics (``dm_control.mujoco.Physics`` subclass of the domain)."""
        return self._dmc.physics

    @property
    def dmc_env(self) -> Environment:
        """The wrapped dm_control ``control.Environment`` (loaded without a time limit)."""
        return self._dmc

    @property
    def max_episode_steps(self) -> int:
        """Episode length in agent steps (when the task does not terminate earlier)."""
        return math.ceil(self._control_step_limit / self.action_repeat)

    @property
    def control_timestep(self) -> float:
        """Seconds of simulated time per agent step (control timestep x action repeat)."""
        return self._dmc.control_timestep() * self.action_repeat

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Starts an episode.

        Args:
            seed: Re-seeds the task's random state, so the episode is reproducible.
                ``None`` continues the random stream (the first reset uses the seed
                given to :func:`envs.make`).
            options: Unused; accepted for the Gymnasium API.

        Returns:
            ``(observation, info)``.
        """
        if seed is None:
            seed = self._pending_seed
        elif not (isinstance(seed, int | np.integer) and 0 <= seed < 2**32):
            raise ValueError(f"seed must be an int in [0, 2**32 - 1] or None, got {seed!r}.")
        self._pending_seed = None
        super().reset(seed=seed)
        if seed is not None:
            # In place: the task keeps its own reference to this RandomState.
            self._dmc.task.random.seed(seed)
        timestep = self._dmc.reset()
        self._control_steps = 0
        self._needs_reset = False
        observation = self._on_episode_start(timestep.observation)
        stacked = self._frames.reset(self._frame(observation))
        return self._observation(stacked), self._info()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Applies an action for ``action_repeat`` control steps.

        Args:
            action: Array of shape ``[A]`` in ``[-1, 1]`` (values outside are clipped).

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``reward`` is the sum
            of the dm_control rewards of the repeated steps (goal tasks: see
            :class:`~envs.goal_env.GoalDMCEnv`).

        Raises:
            ValueError: If the action has the wrong shape or holds NaN / infinity.
            RuntimeError: If the episode has ended (or never started) without ``reset``.
        """
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task_id.name}: step() called before reset() or after the episode "
                "ended (terminated or truncated); call reset() first."
            )
        control = self.to_control(action)
        total = 0.0
        terminated = False
        for _ in range(self.action_repeat):
            timestep = self._dmc.step(control)
            total += float(timestep.reward)
            self._control_steps += 1
            # The time limit lives here (dm_control has none), so LAST means the task
            # itself ended the episode.
            if timestep.last():
                terminated = True
                break
            if self._control_steps >= self._control_step_limit:
                break
        truncated = not terminated and self._control_steps >= self._control_step_limit
        self._needs_reset = terminated or truncated
        stacked = self._frames.push(self._frame(timestep.observation))
        observation = self._observation(stacked)
        return observation, self._reward(total), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        """Returns the current frame, uint8 ``[H, W, 3]`` at ``render_size``.

        Returns ``None`` (with a warning) when the env was made with ``render_mode=None``.
        """
        if self.render_mode is None:
            gym.logger.warn(
                "render() called with render_mode=None; make the env with "
                "render_mode='rgb_array'."
            )
            return None
        height, width = self.config.render_hw
        return render_hwc(self.physics, height, width, self.camera)

    def close(self) -> None:
        """Frees the MuJoCo data and rendering contexts; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._dmc.physics.free()

    def get_physics_state(self) -> np.ndarray:
        """Returns MuJoCo's full physics state, float64 ``[S]`` (:mod:`envs.physics_state`)."""
        return get_physics_state(self.physics)

    def set_physics_state(self, state: np.ndarray) -> None:
        """Sets the full physics state (``[S]``) and recomputes derived quantities.

        The episode's step counter, frame history and, for goal tasks, the goal are
        unchanged; the next ``step`` continues from the new state.
        """
        set_physics_state(self.physics, state)

    @property
    def physics_state_size(self) -> int:
        """Length ``S`` of the physics state vector."""
        return physics_state_size(self.physics)

    def to_control(self, action: np.ndarray) -> np.ndarray:
        """Maps an agent action to the dm_control control that ``step`` applies.

        Clips to ``[-1, 1]`` and maps affinely onto the task's action bounds (identity
        for ``[-1, 1]`` bounds and for lqr's unbounded ones). A reference-physics model
        applies this, then ``action_repeat`` control steps.

        Args:
            action: Array of shape ``[A]``.

        Returns:
            float64 array of shape ``[A]``.

        Raises:
            ValueError: On a wrong shape, NaN or infinity.
        """
        array = np.asarray(action, dtype=np.float64)
        if array.shape != self._action_offset.shape:
            raise ValueError(
                f"{self.task_id.name}: action has shape {array.shape}, expected "
                f"{self._action_offset.shape}."
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{self.task_id.name}: action contains NaN or infinity: {array}.")
        return np.clip(array, -1.0, 1.0) * self._action_scale + self._action_offset

    # ---------------------------------------------------- hooks for subclasses

    def _dmc_task(self) -> tuple[str, str]:
        """The dm_control ``(domain, task)`` to load."""
        return self.task_id.domain, self.task_id.task

    def _default_control_step_limit(self) -> int:
        return SUITE_CONTROL_STEP_LIMIT

    def _observation_keys(self) -> tuple[str, ...]:
        """dm_control observation entries of the state vector, in spec order."""
        return tuple(self._dmc.observation_spec().keys())

    def _on_episode_start(self, observation: dict[str, Any]) -> dict[str, Any]:
        """Runs after dm_control's reset; returns the observation to start from."""
        return observation

    def _observation(self, stacked: np.ndarray) -> Any:
        return stacked

    def _reward(self, task_reward: float) -> float:
        return task_reward

    def _info(self) -> dict[str, Any]:
        return {}

    def _build_observation_space(self) -> spaces.Space:
        return self._frame_space()

    # ------------------------------------------------------------- internals

    def _load_dmc_env(self, seed: int | None) -> Environment:
        from dm_control import suite  # lazily: importing it fixes the GL back end

        domain, task = self._dmc_task()
        task_kwargs = {"random": seed, "time_limit": float("inf")}
        return suite.load(domain, task, task_kwargs=task_kwargs)

    def _frame_space(self) -> spaces.Box:
        """Space of the stacked frames ``[3k, H, W]`` or ``[kD]``."""
        k = self.config.frame_stack
        if self.config.obs == "pixels":
            size = self.config.image_size
            return spaces.Box(0, 255, shape=(3 * k, size, size), dtype=np.uint8)
        spec = self._dmc.observation_spec()
        dim = sum(int(np.prod(spec[key].shape)) for key in self._obs_keys)
        return spaces.Box(-np.inf, np.inf, shape=(k * dim,), dtype=np.float32)

    def _frame(self, observation: dict[str, Any]) -> np.ndarray:
        """One unstacked frame: float32 ``[D]`` or uint8 ``[3, H, W]``."""
        if self.config.obs == "pixels":
            return render_chw(self.physics, self.config.image_size, self.camera)
        return flatten_observation(observation, self._obs_keys)

    def _action_affine(self) -> tuple[np.ndarray, np.ndarray]:
        spec = self._dmc.action_spec()
        low = np.broadcast_to(getattr(spec, "minimum", -np.inf), spec.shape).astype(np.float64)
        high = np.broadcast_to(getattr(spec, "maximum", np.inf), spec.shape).astype(np.float64)
        bounded = (np.abs(low) < _UNBOUNDED) & (np.abs(high) < _UNBOUNDED)  # False for inf
        # a * scale + offset is exact for the common [-1, 1] bounds (scale 1, offset 0),
        # so actions reach dm_control bit for bit unchanged there.
        scale = np.where(bounded, (high - low) / 2.0, 1.0)
        offset = np.where(bounded, (high + low) / 2.0, 0.0)
        return scale, offset

    def _check_camera(self, camera: int | str | None) -> int | str:
        if camera is None:
            return default_camera(self.task_id.domain)
        model = self.physics.model
        names = [model.id2name(i, "camera") for i in range(model.ncam)]
        if isinstance(camera, str):
            if camera not in names:
                raise ValueError(
                    f"Unknown camera {camera!r} for {self.task_id.name}; cameras: {names}."
                )
            return camera
        # -1 is MuJoCo's free camera.
        if not -1 <= camera < model.ncam:
            raise ValueError(
                f"camera {camera} out of range for {self.task_id.name}; valid ids are -1 "
                f"(free camera) to {model.ncam - 1} ({names})."
            )
        return int(camera)

    def _check_render_size(self, height: int, width: int, name: str) -> None:
        # dm_control renders into an offscreen buffer of a size fixed by the model XML.
        visual = self.physics.model.vis.global_
        if height > visual.offheight or width > visual.offwidth:
            raise ValueError(
                f"{name} {height}x{width} exceeds the offscreen buffer of {self.task_id.name} "
                f"({visual.offheight}x{visual.offwidth}, height x width)."
            )
