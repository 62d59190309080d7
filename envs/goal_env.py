"""Goal-reaching DM Control environments with GoalEnv-style dict observations."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.config import EnvConfig
from envs.dmc_env import DMCEnv
from envs.goals import GOAL_TASKS, Goal, GoalTask
from envs.observations import flatten_observation, render_chw
from envs.physics_state import get_physics_state, preserved_physics
from envs.tasks import resolve_task

MAX_GOAL_DRAWS = 100


class GoalDMCEnv(DMCEnv):
    """A goal-reaching task of :mod:`envs.goals` as a Gymnasium environment.

    Observations are dicts (the GoalEnv convention of gymnasium-robotics)::

        observation    float32 [k * D] (state) or uint8 [3k, H, W] (pixels)
        achieved_goal  float32 [G]
        desired_goal   float32 [G]

    ``reward = compute_reward(achieved_goal, desired_goal, info)`` is minus the goal
    distance after the agent step (not summed over the action repeat), ``terminated``
    is always False, and ``info`` holds ``is_success`` (bool) and ``distance``. Goals
    are drawn from the task's seeded random state, so ``reset(seed=s)`` reproduces the
    goal as well as the start.

    :meth:`goal_observation` gives the goal in the observation format: the robot posed
    in the goal configuration, rendered (pixels) or read out (state), without
    disturbing the running episode.
    """

    is_goal_env = True

    def __init__(self, config: EnvConfig) -> None:
        task_id = resolve_task(config.task)
        if task_id.name not in GOAL_TASKS:
            raise ValueError(
                f"GoalDMCEnv cannot run task {task_id.name!r}; goal tasks: {sorted(GOAL_TASKS)}."
            )
        # The goal task is needed by the hooks DMCEnv.__init__ calls.
        self.goal_task: GoalTask = GOAL_TASKS[task_id.name]()
        self._goal: Goal | None = None
        self._goal_frame: np.ndarray | None = None
        super().__init__(config)

    # ----------------------------------------------------------------- public API

    @property
    def desired_goal(self) -> np.ndarray:
        """The current episode's goal, float64 ``[G]`` (a copy)."""
        return self._current_goal().desired.copy()

    @property
    def goal_qpos(self) -> np.ndarray:
        """The goal configuration, joint positions ``[nq]`` (a copy)."""
        return self._current_goal().qpos.copy()

    def achieved_goal(self) -> np.ndarray:
        """The goal the current physics state achieves, float64 ``[G]``."""
        return self.goal_task.achieved_goal(self.physics)

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Minus the goal distance, vectorised.

        Shapes:
            achieved_goal, desired_goal: ``[..., G]``.
            returns: float64 ``[...]``.

        Args:
            achieved_goal: Achieved goals.
            desired_goal: Desired goals.
            info: Unused (GoalEnv signature).
        """
        return -self.goal_task.distance(achieved_goal, desired_goal)

    def compute_success(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray
    ) -> np.ndarray:
        """Whether each goal is met; ``[..., G]`` -> bool ``[...]``.

        Thresholds are documented per task in :mod:`envs.goals`.
        """
        return self.goal_task.is_success(achieved_goal, desired_goal)

    def compute_terminated(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None
    ) -> np.ndarray:
        """Always False (episodes run to the time limit); ``[..., G]`` -> ``[...]``."""
        shape = np.broadcast_shapes(np.shape(achieved_goal), np.shape(desired_goal))
        return np.zeros(shape[:-1], dtype=bool)

    def goal_observation(self) -> np.ndarray:
        """The goal in the format of ``obs["observation"]``.

        Pixels: the robot in the goal configuration rendered from the observation
        camera, uint8 ``[3k, H, W]``. State: the state observation of the goal
        configuration at rest, float32 ``[k * D]``. With frame stacking the single goal
        frame is repeated ``k`` times (a robot at rest in the goal). Computed once per
        episode; the physics is restored exactly, so the episode is not affected.

        Returns:
            A new array each call.
        """
        if self._goal_frame is None:
            with preserved_physics(self.physics):
                self._pose_goal_configuration()
                if self.config.obs == "pixels":
                    self._goal_frame = render_chw(
                        self.physics, self.config.image_size, self.camera
                    )
                else:
                    observation = self._dmc.task.get_observation(self.physics)
                    self._goal_frame = flatten_observation(observation, self._obs_keys)
        return self._frames.tile(self._goal_frame)

    def goal_physics_state(self) -> np.ndarray:
        """Full physics state ``[S]`` of the goal configuration at rest (current time).

        ``env.set_physics_state(env.goal_physics_state())`` puts the robot at the goal;
        the running episode is not changed by calling this.
        """
        with preserved_physics(self.physics):
            self._pose_goal_configuration()
            return get_physics_state(self.physics)

    # ---------------------------------------------------- DMCEnv hooks

    def _dmc_task(self) -> tuple[str, str]:
        return self.goal_task.base

    def _default_control_step_limit(self) -> int:
        return self.goal_task.time_limit

    def _observation_keys(self) -> tuple[str, ...]:
        keys = self.goal_task.obs_keys
        return keys if keys is not None else super()._observation_keys()

    def _build_observation_space(self) -> spaces.Space:
        goal_space = spaces.Box(
            np.array(self.goal_task.goal_low, dtype=np.float32),
            np.array(self.goal_task.goal_high, dtype=np.float32),
            dtype=np.float32,
        )
        return spaces.Dict(
            {
                "observation": self._frame_space(),
                "achieved_goal": goal_space,
                "desired_goal": goal_space,
            }
        )

    def _on_episode_start(self, observation: dict[str, Any]) -> dict[str, Any]:
        physics, random = self.physics, self._dmc.task.random
        self.goal_task.prepare(physics)
        start = self.goal_task.achieved_goal(physics)
        for _ in range(MAX_GOAL_DRAWS):
            with preserved_physics(physics):
                self._goal = self.goal_task.sample_goal(physics, random)
            # A goal met at the start would count as solved without acting.
            if not self.goal_task.is_success(start, self._goal.desired):
                break
        self.goal_task.show_goal(physics, self._goal.desired)
        # Model edits (a moved marker) reach positions and images only after forward;
        # the state itself is untouched.
        physics.forward()
        self._goal_frame = None
        return self._dmc.task.get_observation(physics)

    def _observation(self, stacked: np.ndarray) -> dict[str, np.ndarray]:
        achieved, desired = self._goal_pair()
        return {"observation": stacked, "achieved_goal": achieved, "desired_goal": desired}

    def _reward(self, task_reward: float) -> float:
        # From the float32 goals the observation carries, so that
        # compute_reward(obs["achieved_goal"], obs["desired_goal"], info) == reward.
        return float(self.compute_reward(*self._goal_pair()))

    def _info(self) -> dict[str, Any]:
        achieved, desired = self._goal_pair()
        return {
            "is_success": bool(self.compute_success(achieved, desired)),
            "distance": float(self.goal_task.distance(achieved, desired)),
        }

    # ------------------------------------------------------------- internals

    def _goal_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(achieved, desired) as float32 ``[G]`` arrays, new on every call."""
        achieved = self.achieved_goal().astype(np.float32)
        return achieved, self._current_goal().desired.astype(np.float32)

    def _current_goal(self) -> Goal:
        if self._goal is None:
            raise RuntimeError(f"{self.task_id.name}: no goal yet; call reset() first.")
        return self._goal

    def _pose_goal_configuration(self) -> None:
        """Puts the robot at rest in the goal configuration (caller restores the data)."""
        data = self.physics.data
        data.qpos[:] = self._current_goal().qpos
        data.qvel[:] = 0.0
        data.act[:] = 0.0
        self.physics.forward()
