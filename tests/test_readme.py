"""Every ```python block of the README runs as written and does what it says.

Each block runs once, in a fresh namespace, with the repository root as the working
directory (so relative paths such as `checkpoints/told-cartpole-swingup.pt` resolve).
Blocks whose result can be checked are then checked by the function that `CHECKS` pairs
with a string the block contains.
"""

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def check_function_model_reaches_its_goal(namespace: dict, out: str) -> None:
    distance = float((namespace["state"][:2] - namespace["goal"]).norm())
    assert distance < 0.05, distance
    assert "distance to goal:" in out


def check_objective_plans_each_problem_to_its_target(namespace: dict, out: str) -> None:
    result, target = namespace["result"], namespace["target"]
    assert result.action.shape == (2, 2)
    assert result.actions.shape == (2, 5, 2)
    # The second call had the exact answer among its proposals and a warm start near it.
    assert float((result.action - target).abs().max()) < 0.1


def check_presets_are_the_published_settings(namespace: dict, out: str) -> None:
    assert out.split() == ["512", "1000", "30", "5"]


def check_envs_are_gymnasium_envs(namespace: dict, out: str) -> None:
    assert namespace["env"].observation_space.shape == (5,)
    assert set(namespace["obs"]) == {"observation", "achieved_goal", "desired_goal"}


def check_registry_lists_and_loads_models(namespace: dict, out: str) -> None:
    names = [spec.name for spec in namespace["registry"].list_models()]
    assert {"told", "rssm", "dinowm", "oracle"} <= set(names), names
    assert namespace["spec"].name == "told"
    for method in ("encode", "next", "reward"):
        assert callable(getattr(namespace["model"], method))


def check_told_plans_bounded_actions(namespace: dict, out: str) -> None:
    action = namespace["action"]
    assert isinstance(action, np.ndarray) and action.shape == (1,)
    assert np.all(np.abs(action) <= 1.0)
    assert torch.isfinite(torch.as_tensor(namespace["obs"])).all()


# A string that picks out one block -> the check of what that block promises.
CHECKS: dict[str, Callable[[dict, str], None]] = {
    "FunctionModel(next=dynamics": check_function_model_reaches_its_goal,
    "warm_start=result.warm_start": check_objective_plans_each_problem_to_its_target,
    "MPPI.tdmpc2(action_dim=6)": check_presets_are_the_published_settings,
    'envs.make("point_mass-goal"': check_envs_are_gymnasium_envs,
    "registry.list_models()": check_registry_lists_and_loads_models,
    'load_told("checkpoints/told-cartpole-swingup.pt"': check_told_plans_bounded_actions,
}


def test_every_check_has_exactly_one_block():
    assert len(BLOCKS) >= len(CHECKS)
    for needle in CHECKS:
        assert sum(needle in block for block in BLOCKS) == 1, needle


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block(index, capsys, monkeypatch):
    block = BLOCKS[index]
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    out = capsys.readouterr().out
    for needle, check in CHECKS.items():
        if needle in block:
            check(namespace, out)
