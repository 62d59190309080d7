"""``envs.make``: one entry point for every suite and goal-reaching task."""

from __future__ import annotations

from typing import Literal

from envs.action_repeat import DEFAULT_PRESET
from envs.config import EnvConfig
from envs.dmc_env import DMCEnv
from envs.goal_env import GoalDMCEnv
from envs.tasks import resolve_task


def make(
    task: str,
    obs: Literal["state", "pixels"] = "state",
    seed: int | None = 0,
    image_size: int = 64,
    camera: int | str | None = None,
    action_repeat: int | None = None,
    frame_stack: int = 1,
    action_repeat_preset: str = DEFAULT_PRESET,
    time_limit: int | None = None,
    render_size: int | tuple[int, int] = 256,
    render_mode: str | None = "rgb_array",
) -> DMCEnv:
    """Builds a DM Control task (or a goal-reaching task) as a Gymnasium environment.

    Example::

        env = envs.make("cartpole-swingup", obs="pixels", seed=1)
        obs, info = env.reset()                     # uint8 [3, 64, 64]
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

    Args:
        task: ``"<domain>-<task>"`` (see :func:`envs.list_tasks`), the alias
            ``"cup-catch"``, or an id ``"dmc/<domain>-<task>-v0"`` /
            ``"dm_control/<domain>-<task>-v0"``. Goal tasks: ``"reacher-pose"``,
            ``"reacher-target"``, ``"point_mass-goal"``, ``"finger-turn_goal"``.
        obs: ``"state"``: float32 ``[D]`` (dm_control's observation entries concatenated
            in spec order). ``"pixels"``: uint8 ``[3, image_size, image_size]``.
        seed: Seed of the first ``reset()`` (later ``reset(seed=...)`` re-seeds);
            an int in ``[0, 2**32)`` or ``None`` for a random one.
        image_size: Side of pixel observations.
        camera: Camera id or name for pixels and ``render()``; default 0 (quadruped 2).
        action_repeat: Control steps per agent step; ``None`` uses the preset.
        frame_stack: Frames concatenated along the first axis: ``[3k, H, W]`` or ``[kD]``.
        action_repeat_preset: ``"tdmpc2"`` (2 everywhere; default) or ``"planet"``
            (cartpole 8; reacher, cheetah, cup 4; others 2). See
            :mod:`envs.action_repeat`.
        time_limit: Episode length in agent steps. ``None``: the task's limit, 1000
            control steps for the suite (``ceil(1000 / action_repeat)`` agent steps);
            goal tasks in :mod:`envs.goals`.
        render_size: Size of ``render()`` frames, int or ``(height, width)``.
        render_mode: ``"rgb_array"`` (``render()`` returns ``[H, W, 3]`` uint8) or None.

    Returns:
        A :class:`~envs.dmc_env.DMCEnv`, or a :class:`~envs.goal_env.GoalDMCEnv` with
        dict observations for goal tasks. It is not wrapped, so its extra methods
        (``physics``, ``get_physics_state``, ``goal_observation``, ...) are reachable
        directly; ``gymnasium.make("dmc/...")`` returns the same env inside
        Gymnasium's checking wrappers (use ``.unwrapped`` there).

    Raises:
        ValueError: Unknown task, observation mode or preset; non-positive sizes,
            repeats or limits; a camera the model lacks; an image larger than the
            model's offscreen buffer.
    """
    task_id = resolve_task(task)
    config = EnvConfig(
        task=task_id.name,
        obs=obs,
        seed=seed,
        image_size=image_size,
        camera=camera,
        action_repeat=action_repeat,
        action_repeat_preset=action_repeat_preset,
        frame_stack=frame_stack,
        time_limit=time_limit,
        render_size=render_size,
        render_mode=render_mode,
    )
    env_class = GoalDMCEnv if task_id.is_goal else DMCEnv
    return env_class(config)
