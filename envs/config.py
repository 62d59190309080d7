"""The frozen configuration of one environment, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from envs.action_repeat import ACTION_REPEAT_PRESETS, DEFAULT_PRESET

OBS_MODES = ("state", "pixels")
RENDER_MODES = ("rgb_array",)
# dm_control seeds a numpy RandomState, which takes 32-bit seeds.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class EnvConfig:
    """Everything :func:`envs.make` needs to build an environment.

    Attributes:
        task: Canonical task name (see :func:`envs.list_tasks`).
        obs: ``"state"`` (float32 vector) or ``"pixels"`` (uint8 ``[3, H, W]``).
        seed: Seed of the first ``reset()``; ``None`` draws one from the OS.
        image_size: Side of square pixel observations.
        camera: Camera id or name for pixels and ``render()``; ``None`` picks the
            domain default (0; quadruped 2).
        action_repeat: Control steps per agent step; ``None`` looks the domain up in
            ``action_repeat_preset``.
        action_repeat_preset: ``"tdmpc2"`` (2 everywhere, the default) or ``"planet"``.
        frame_stack: Number of most recent frames concatenated along the first axis.
        time_limit: Episode length in agent steps; ``None`` keeps the task's own limit
            (1000 control steps for the suite, i.e. ``ceil(1000 / action_repeat)``
            agent steps; see :mod:`envs.goals` for goal tasks).
        render_size: ``render()`` frame size, an int (square) or ``(height, width)``.
        render_mode: ``"rgb_array"`` or ``None``.
    """

    task: str
    obs: Literal["state", "pixels"] = "state"
    seed: int | None = 0
    image_size: int = 64
    camera: int | str | None = None
    action_repeat: int | None = None
    action_repeat_preset: str = DEFAULT_PRESET
    frame_stack: int = 1
    time_limit: int | None = None
    render_size: int | tuple[int, int] = 256
    render_mode: str | None = "rgb_array"

    def __post_init__(self) -> None:
        if self.obs not in OBS_MODES:
            raise ValueError(f"Unknown obs mode {self.obs!r}; expected one of {OBS_MODES}.")
        if self.seed is not None and not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            raise ValueError(
                f"seed must be an int in [0, 2**32 - 1] or None, got {self.seed!r}."
            )
        _check_positive("image_size", self.image_size)
        _check_positive("frame_stack", self.frame_stack)
        if self.action_repeat is not None:
            _check_positive("action_repeat", self.action_repeat)
        if self.time_limit is not None:
            _check_positive("time_limit", self.time_limit)
        if self.action_repeat_preset not in ACTION_REPEAT_PRESETS:
            raise ValueError(
                f"Unknown action_repeat_preset {self.action_repeat_preset!r}; expected one "
                f"of {sorted(ACTION_REPEAT_PRESETS)}."
            )
        camera = self.camera
        if camera is not None and not (_is_int(camera) or isinstance(camera, str)):
            raise ValueError(
                f"camera must be an int id, a camera name or None, got {camera!r}."
            )
        height, width = self.render_hw
        _check_positive("render_size height", height)
        _check_positive("render_size width", width)
        if self.render_mode is not None and self.render_mode not in RENDER_MODES:
            raise ValueError(
                f"Unsupported render_mode {self.render_mode!r}; expected one of "
                f"{RENDER_MODES} or None."
            )

    @property
    def render_hw(self) -> tuple[int, int]:
        """``render_size`` as ``(height, width)``."""
        size = self.render_size
        if _is_int(size):
            return size, size  # type: ignore[return-value]
        if isinstance(size, tuple | list) and len(size) == 2:
            return size[0], size[1]
        raise ValueError(f"render_size must be an int or (height, width), got {size!r}.")


def _is_int(value: object) -> bool:
    # bool is an int subclass; True as an image size is a bug, not a 1.
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_positive(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
