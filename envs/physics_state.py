"""Reading, writing and temporarily preserving the MuJoCo state of a dm_control physics.

The state vector is MuJoCo's ``mjSTATE_FULLPHYSICS``: time, qpos, qvel, actuator
activations, history buffers and plugin state, in that order (see ``mj_getState``). It
is what a reference-physics model needs to copy a simulator; it excludes the model, so
per-episode model edits (dm_control moves target markers by editing the model) stay as
the last ``reset`` left them.

mujoco is imported inside the functions: importing it selects the OpenGL back end from
``MUJOCO_GL``, which must remain the caller's choice after ``import envs``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mujoco
    from dm_control.mujoco import Physics


def _full_physics() -> mujoco.mjtState:
    import mujoco

    return mujoco.mjtState.mjSTATE_FULLPHYSICS


def physics_state_size(physics: Physics) -> int:
    """Returns the length of the vector :func:`get_physics_state` returns."""
    import mujoco

    return int(mujoco.mj_stateSize(physics.model.ptr, _full_physics()))


def get_physics_state(physics: Physics) -> np.ndarray:
    """Returns the full physics state.

    Args:
        physics: A dm_control physics.

    Returns:
        float64 array of shape ``[S]`` with ``S = physics_state_size(physics)``.
    """
    import mujoco

    state = np.empty(physics_state_size(physics), dtype=np.float64)
    mujoco.mj_getState(physics.model.ptr, physics.data.ptr, state, _full_physics())
    return state


def set_physics_state(physics: Physics, state: np.ndarray) -> None:
    """Writes a full physics state and recomputes the derived quantities.

    ``mj_forward`` runs afterwards so that positions, sensors and observations read
    from ``physics`` match the new state before the next step.

    Args:
        physics: A dm_control physics.
        state: Array of shape ``[S]`` from :func:`get_physics_state` of the same model.

    Raises:
        ValueError: If the shape is wrong or the state holds NaN or infinity.
    """
    import mujoco

    state = np.asarray(state, dtype=np.float64)
    size = physics_state_size(physics)
    if state.shape != (size,):
        raise ValueError(
            f"physics state has shape {state.shape}, expected ({size},) "
            "(mjSTATE_FULLPHYSICS of this model)"
        )
    if not np.all(np.isfinite(state)):
        raise ValueError("physics state contains NaN or infinity")
    mujoco.mj_setState(physics.model.ptr, physics.data.ptr, state, _full_physics())
    mujoco.mj_forward(physics.model.ptr, physics.data.ptr)


@contextmanager
def preserved_physics(physics: Physics) -> Iterator[None]:
    """Restores every field of ``physics.data`` on exit, bit for bit.

    Used to pose the robot in a goal configuration and render it in the middle of an
    episode. A state vector alone would not do: after a step dm_control leaves
    acceleration-stage quantities (touch sensors, contact forces) from the previous
    physics step in ``data``, and recomputing them with ``mj_forward`` would change
    what the next observation reads. Copying all of ``mjData`` avoids the question.
    The model is not restored; callers must not edit it inside the block.
    """
    import mujoco

    model, data = physics.model.ptr, physics.data.ptr
    saved = mujoco.MjData(model)
    mujoco.mj_copyData(saved, model, data)
    try:
        yield
    finally:
        # Copies into the existing buffers, so numpy views dm_control holds stay valid.
        mujoco.mj_copyData(data, model, saved)
