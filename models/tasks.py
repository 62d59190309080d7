"""The tasks the command line plans on, by kind: DM Control ("suite"), goal-reaching
("goal") and the analytic toy systems ("toy")."""

from __future__ import annotations

__all__ = ["TASK_KINDS", "list_tasks", "task_kind"]


TASK_KINDS = ("suite", "goal", "toy")


def list_tasks(kind: str) -> list[str]:
    """Task names of a kind: "suite" (DM Control), "goal" (goal-reaching), "toy"."""
    if kind == "toy":
        from models.toy import TOY_TASKS

        return sorted(TOY_TASKS)
    import envs

    return envs.list_tasks(kind)


def task_kind(task: str) -> str:
    """Which kind of task `task` is (see `list_tasks`).

    Raises:
        ValueError: an unknown task; the message suggests the closest name.
    """
    for kind in TASK_KINDS:
        if task in list_tasks(kind):
            return kind
    import envs

    envs.resolve_task(task)  # raises with the closest names
    raise ValueError(f"unknown task {task!r}")
