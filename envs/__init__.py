"""DM Control tasks behind the Gymnasium 1.x API, plus goal-reaching tasks.

Importing this package registers every task as ``dmc/<domain>-<task>-v0`` with
Gymnasium. It does not import dm_control or mujoco, which happens on the first
:func:`make`: dm_control picks its OpenGL back end from ``MUJOCO_GL`` at import, and
choosing it is left to the entry point (``egl`` renders headless, on CPUs too).

Public API:
    make: build an environment (:mod:`envs.factory`).
    list_tasks: the task names.
    ACTION_REPEAT_PRESETS, action_repeat_for: the action-repeat tables.
    DMCEnv, GoalDMCEnv, EnvConfig: the environment classes and their config.
    GOAL_TASKS: the goal-reaching task definitions (:mod:`envs.goals`).
    ANGLE_OBSERVATIONS, angle_observations: which state entries are raw joint angles.
"""

from envs.action_repeat import ACTION_REPEAT_PRESETS, DEFAULT_PRESET, action_repeat_for
from envs.config import EnvConfig
from envs.dmc_env import DMCEnv
from envs.factory import make
from envs.goal_env import GoalDMCEnv
from envs.goals import GOAL_TASKS, GoalTask
from envs.observations import ANGLE_OBSERVATIONS, angle_observations
from envs.physics_state import get_physics_state, set_physics_state
from envs.registration import register_all
from envs.tasks import gym_id, list_tasks, resolve_task

register_all()

__all__ = [
    "ACTION_REPEAT_PRESETS",
    "ANGLE_OBSERVATIONS",
    "DEFAULT_PRESET",
    "GOAL_TASKS",
    "DMCEnv",
    "EnvConfig",
    "GoalDMCEnv",
    "GoalTask",
    "action_repeat_for",
    "angle_observations",
    "get_physics_state",
    "gym_id",
    "list_tasks",
    "make",
    "register_all",
    "resolve_task",
    "set_physics_state",
]
