"""Task names: the DM Control suite, our goal-reaching tasks, aliases and Gymnasium ids.

A task is named ``"<domain>-<task>"`` with dm_control's own spellings
(``"cartpole-swingup"``, ``"ball_in_cup-catch"``, ``"finger-turn_easy"``). These forms
are accepted everywhere a task name is expected:

- ``"cup-catch"``: the name the PlaNet / Dreamer / TD-MPC papers use for
  ``"ball_in_cup-catch"``;
- ``"dmc/<domain>-<task>-v0"``: the id this package registers with Gymnasium;
- ``"dm_control/<domain>-<task>-v0"``: the Farama (shimmy) id of the same task.

The suite list is written out here instead of read from ``dm_control.suite`` so that
``import envs`` does not import dm_control: dm_control fixes its OpenGL back end
(``MUJOCO_GL``) when it is first imported, and the caller must be free to choose it
after importing this package. A test checks the list against ``suite.ALL_TASKS``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from envs.goals import GOAL_TASKS

# dm_control.suite.ALL_TASKS for dm-control 1.0.50, grouped by domain.
_SUITE: dict[str, tuple[str, ...]] = {
    "acrobot": ("swingup", "swingup_sparse"),
    "ball_in_cup": ("catch",),
    "cartpole": (
        "balance",
        "balance_sparse",
        "swingup",
        "swingup_sparse",
        "two_poles",
        "three_poles",
    ),
    "cheetah": ("run",),
    "dog": ("stand", "walk", "trot", "run", "fetch"),
    "finger": ("spin", "turn_easy", "turn_hard"),
    "fish": ("upright", "swim"),
    "hopper": ("stand", "hop"),
    "humanoid": ("stand", "walk", "run", "run_pure_state"),
    "humanoid_CMU": ("stand", "walk", "run"),
    "lqr": ("lqr_2_1", "lqr_6_2"),
    "manipulator": ("bring_ball", "bring_peg", "insert_ball", "insert_peg"),
    "pendulum": ("swingup",),
    "point_mass": ("easy", "hard"),
    "quadruped": ("walk", "run", "escape", "fetch"),
    "reacher": ("easy", "hard"),
    "stacker": ("stack_2", "stack_4"),
    "swimmer": ("swimmer6", "swimmer15"),
    "walker": ("stand", "walk", "run"),
}

SUITE_TASKS: tuple[str, ...] = tuple(
    sorted(f"{domain}-{task}" for domain, tasks in _SUITE.items() for task in tasks)
)
ALIASES: dict[str, str] = {"cup-catch": "ball_in_cup-catch"}

_ID_PREFIXES = ("dmc/", "dm_control/")
_ID_SUFFIX = "-v0"


@dataclass(frozen=True)
class TaskId:
    """A resolved task name.

    Attributes:
        name: Canonical name, e.g. ``"ball_in_cup-catch"`` or ``"reacher-pose"``.
        domain: DM Control domain, e.g. ``"ball_in_cup"``.
        task: The part after the domain, e.g. ``"catch"`` or ``"pose"``.
        is_goal: True for the goal-reaching tasks of :mod:`envs.goals`.
    """

    name: str
    domain: str
    task: str
    is_goal: bool


def list_tasks(kind: Literal["all", "suite", "goal"] = "all") -> list[str]:
    """Returns the task names :func:`envs.make` accepts, sorted.

    Args:
        kind: ``"suite"`` for the 51 DM Control suite tasks, ``"goal"`` for the
            goal-reaching tasks of :mod:`envs.goals`, ``"all"`` for both.

    Returns:
        Sorted canonical names (aliases such as ``"cup-catch"`` are not listed).

    Raises:
        ValueError: If ``kind`` is not one of the three values.
    """
    if kind == "suite":
        return list(SUITE_TASKS)
    if kind == "goal":
        return sorted(GOAL_TASKS)
    if kind == "all":
        return sorted((*SUITE_TASKS, *GOAL_TASKS))
    raise ValueError(f"Unknown kind {kind!r}; expected 'all', 'suite' or 'goal'.")


def gym_id(name: str) -> str:
    """Returns the Gymnasium id of a task, e.g. ``dmc/cartpole-swingup-v0``."""
    return f"dmc/{resolve_task(name).name}{_ID_SUFFIX}"


def resolve_task(name: str) -> TaskId:
    """Parses a task name, alias or Gymnasium id.

    Args:
        name: ``"cartpole-swingup"``, ``"cup-catch"``, ``"dmc/reacher-easy-v0"``,
            ``"dm_control/walker-walk-v0"``, ``"reacher-pose"``, ...

    Returns:
        The resolved :class:`TaskId`.

    Raises:
        TypeError: If ``name`` is not a string.
        ValueError: If the name is unknown; the message names it, suggests close
            matches and points to :func:`list_tasks`.
    """
    if not isinstance(name, str):
        raise TypeError(f"task must be a str, got {type(name).__name__}: {name!r}")
    bare = _strip_gym_id(name)
    canonical = ALIASES.get(bare, bare)
    if canonical not in SUITE_TASKS and canonical not in GOAL_TASKS:
        raise ValueError(_unknown_task_message(name, bare))
    domain, task = canonical.split("-", 1)
    return TaskId(canonical, domain, task, is_goal=canonical in GOAL_TASKS)


def _strip_gym_id(name: str) -> str:
    for prefix in _ID_PREFIXES:
        if name.startswith(prefix):
            # Only version 0 exists; a wrong version is left in place so the name fails
            # to resolve and the error shows exactly what was given.
            body = name[len(prefix) :]
            return body[: -len(_ID_SUFFIX)] if body.endswith(_ID_SUFFIX) else body
    return name


def _unknown_task_message(name: str, bare: str) -> str:
    known = list_tasks() + sorted(ALIASES)
    close = difflib.get_close_matches(bare, known, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"Unknown task {name!r}.{hint} Valid tasks ({len(known)}): {', '.join(known)}. "
        "See envs.list_tasks()."
    )
