"""The same seed gives the same actions and the same returns in two separate processes, for
every registered family on its tiny case, and for the command line's episodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from models import registry

ROOT = Path(__file__).resolve().parent.parent

# Acts three times with each family's tiny case, seeded, and prints the actions as JSON.
_ACTIONS = r"""
import json, sys, warnings
import numpy as np, torch
from models import registry
from planners import MPCController, make_planner

warnings.simplefilter("ignore")
out = {}
for name in sys.argv[1:]:
    case = registry.get(name).entry("tiny")()
    if hasattr(case.model, "generator"):
        case.model.generator = torch.Generator().manual_seed(7)
    kwargs = dict(case.controller_kwargs)
    if case.objective == "goal" and "objective" not in kwargs:
        kwargs["objective"] = "goal"
    for planner_name in ("cem", "mppi", "icem"):
        planner = make_planner(planner_name, case.action_dim, horizon=3, num_samples=16, num_elites=4, iterations=2)
        ctrl = MPCController(case.model, planner, seed=7, device="cpu", **kwargs)
        out[f"{name}/{planner_name}"] = [ctrl.act(case.obs, goal=case.goal).tolist() for _ in range(3)]
print(json.dumps(out))
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_every_family_acts_the_same_in_two_processes():
    names = [spec.name for spec in registry.list_models() if spec.tiny is not None]
    first, second = (json.loads(_run(["-c", _ACTIONS, *names]).stdout) for _ in range(2))
    assert set(first) == {f"{n}/{p}" for n in names for p in ("cem", "mppi", "icem")}
    assert first == second


def test_cli_episodes_return_the_same_in_two_processes(tmp_path):
    summaries = []
    for run in ("a", "b"):
        out = tmp_path / run
        _run([str(ROOT / "run_planning.py"), "--task", "toy-pendulum", "--episodes", "2", "--seed", "3",
              "--max-steps", "30", "--out", str(out), "--no-progress"])  # fmt: skip
        summaries.append(json.loads((out / "summary.json").read_text()))
    returns = [[row["episode_return"] for row in s["rows"]] for s in summaries]
    assert returns[0] == returns[1] and len(returns[0]) == 2
