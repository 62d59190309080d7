"""Set-up for the tooling tests (run with `python -m pytest tools/tests`; not in the default run).

MuJoCo picks its rendering back end when dm_control is first imported; EGL renders headless
on CPU machines too, so it is chosen before anything imports dm_control (as in tests/conftest.py).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
