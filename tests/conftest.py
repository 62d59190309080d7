"""Shared test set-up.

MuJoCo picks its rendering back end when dm_control is first imported; EGL renders
headless on CPU machines too, so the tests choose it before anything imports dm_control.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
