"""Registers every task with Gymnasium as ``dmc/<domain>-<task>-v0``."""

from __future__ import annotations

import gymnasium

from envs.tasks import gym_id, list_tasks

ENTRY_POINT = "envs.factory:make"


def register_all() -> list[str]:
    """Registers all tasks of :func:`envs.list_tasks`; already registered ids are kept.

    ``gymnasium.make(id, **kwargs)`` forwards ``kwargs`` to :func:`envs.make`, e.g.
    ``gymnasium.make("dmc/reacher-easy-v0", obs="pixels")``. No ``max_episode_steps`` is
    registered: the env applies its own limit (it depends on the action repeat).

    Returns:
        The ids, sorted.
    """
    ids = [gym_id(name) for name in list_tasks()]
    for env_id, name in zip(ids, list_tasks(), strict=True):
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=ENTRY_POINT, kwargs={"task": name})
    return ids
