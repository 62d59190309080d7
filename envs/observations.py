"""Observation helpers: flattening dm_control observations, rendering, frame stacking."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dm_control.mujoco import Physics

# Camera 0 of most domains frames the whole body. The quadruped's camera 0 follows too
# closely; camera 2 is the one DrQ and TD-MPC2 use for pixels.
DEFAULT_CAMERAS: dict[str, int] = {"quadruped": 2}


# Entries of a domain's flattened state observation that are hinge angles in radians, as
# they are (qpos). Reacher's "position" is its two joint angles, and the shoulder has no
# limit: over a run its value winds through tens of radians, where one configuration has
# many readings. Models read these better as (sin, cos). Domains that already observe
# cos/sin (cartpole, pendulum, acrobot, walker's orientations) need no entry.
ANGLE_OBSERVATIONS: dict[str, tuple[int, ...]] = {"reacher": (0, 1)}


def angle_observations(task: str) -> tuple[int, ...]:
    """The raw joint-angle entries of a task's state observation ("reacher-easy" ->
    (0, 1)); () for a task whose observation has none."""
    return ANGLE_OBSERVATIONS.get(task.split("-")[0], ())


def default_camera(domain: str) -> int:
    """Returns the camera id used for pixel observations of a domain (0, quadruped: 2)."""
    return DEFAULT_CAMERAS.get(domain, 0)


def flatten_observation(obs: Mapping[str, Any], keys: Sequence[str]) -> np.ndarray:
    """Concatenates the entries of a dm_control observation into one vector.

    Args:
        obs: dm_control observation (an OrderedDict of arrays and scalars).
        keys: Which entries, in which order. Passing the order of the task's
            ``observation_spec()`` keeps the layout fixed across steps and runs.

    Returns:
        float32 array of shape ``[D]``, ``D`` the summed sizes of the entries.
    """
    parts = [np.asarray(obs[key], dtype=np.float32).ravel() for key in keys]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def render_hwc(
    physics: Physics, height: int, width: int, camera: int | str
) -> np.ndarray:
    """Renders one RGB frame.

    Args:
        physics: dm_control physics to render.
        height: Image height in pixels.
        width: Image width in pixels.
        camera: Camera id or name.

    Returns:
        uint8 array of shape ``[height, width, 3]``, a fresh copy (dm_control returns a
        view of a buffer the next render overwrites).
    """
    frame = physics.render(height=height, width=width, camera_id=camera)
    return np.array(frame, dtype=np.uint8, copy=True)


def render_chw(physics: Physics, size: int, camera: int | str) -> np.ndarray:
    """Renders a square frame in the channel-first layout of pixel observations.

    Returns:
        uint8 array of shape ``[3, size, size]``.
    """
    frame = physics.render(height=size, width=size, camera_id=camera)
    return np.ascontiguousarray(np.transpose(frame, (2, 0, 1)), dtype=np.uint8)


class FrameStack:
    """Keeps the last ``k`` frames and concatenates them along the first axis.

    Pixel frames ``[3, H, W]`` stack to ``[3k, H, W]``; state vectors ``[D]`` to
    ``[kD]``. Oldest frame first. After a reset the history is the first frame
    repeated, so the shape never changes within an episode.
    """

    def __init__(self, k: int) -> None:
        self._k = k
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        """Starts a new history filled with ``frame``; returns the stacked array."""
        self._frames.clear()
        for _ in range(self._k):
            self._frames.append(frame)
        return self.stacked()

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Appends a frame, dropping the oldest; returns the stacked array."""
        self._frames.append(frame)
        return self.stacked()

    def stacked(self) -> np.ndarray:
        """Returns a new array with the frames concatenated along axis 0."""
        return np.concatenate(list(self._frames), axis=0)

    def tile(self, frame: np.ndarray) -> np.ndarray:
        """Returns ``frame`` repeated ``k`` times in the stacked layout (no history change)."""
        return np.concatenate([frame] * self._k, axis=0)
