"""The contract every registered model family meets, parametrised over the registry (and
the planner registry): a family registered today is tested today.

For each family's tiny case: it meets the WorldModel Protocol, plans with every planner,
round-trips through a checkpoint file (`torch.load(weights_only=True)`, then `models.load`)
with the same actions, refuses a checkpoint of another family or of other shapes with the
named error, and refuses an observation of the wrong shape.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from models import CheckpointError, WorldModel, load, registry
from models.planning import EnvShapes
from planners import PLANNERS, MPCController, make_planner

FAMILIES = [spec.name for spec in registry.list_models() if spec.tiny is not None]
SAVABLE = [spec.name for spec in registry.list_models() if spec.tiny is not None and spec.load is not None]
_CASES: dict[str, object] = {}


def tiny(name: str):
    """The family's tiny case, built once per test session (the physics builds MuJoCo)."""
    if name not in _CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CASES[name] = registry.get(name).entry("tiny")()
    return _CASES[name]


def controller(case, planner_name: str, seed: int = 0) -> MPCController:
    planner = make_planner(planner_name, case.action_dim, horizon=3, num_samples=16, num_elites=4, iterations=2)
    if hasattr(case.model, "generator"):  # models that sample (RSSM latents, TOLD's policy) draw from it
        case.model.generator = torch.Generator().manual_seed(seed)
    kwargs = dict(case.controller_kwargs)
    if case.objective == "goal" and "objective" not in kwargs:
        kwargs["objective"] = "goal"
    return MPCController(case.model, planner, seed=seed, device="cpu", **kwargs)


def act(case, ctrl: MPCController) -> np.ndarray:
    return ctrl.act(case.obs, goal=case.goal)


def test_every_family_of_ours_is_covered():
    assert {"told", "rssm", "dinowm", "oracle"} <= set(FAMILIES)
    for spec in registry.list_models():
        assert spec.tiny is not None, f"{spec.name} has no tiny case for the contract tests"


@pytest.mark.parametrize("name", FAMILIES)
def test_meets_the_world_model_protocol(name):
    case = tiny(name)
    if case.objective == "reward":
        assert isinstance(case.model, WorldModel)
    else:  # goal-reaching models plan on a latent distance: encode and next are enough
        assert callable(case.model.encode) and callable(case.model.next)
    spec = registry.get(name)
    assert spec.default_planner in PLANNERS
    assert spec.description and set(spec.observations) <= {"state", "pixels", "goal"}


@pytest.mark.parametrize("planner_name", sorted(PLANNERS))
@pytest.mark.parametrize("name", FAMILIES)
def test_plans_with_every_planner(name, planner_name):
    case = tiny(name)
    ctrl = controller(case, planner_name)
    first = act(case, ctrl)
    assert first.shape == (case.action_dim,) and np.isfinite(first).all()
    assert ((first >= -1.0) & (first <= 1.0)).all()
    # Seeded: a fresh controller with the same seed plans the same action.
    assert np.allclose(act(case, controller(case, planner_name)), first, atol=1e-5)


@pytest.mark.parametrize("name", SAVABLE)
def test_save_load_round_trips_with_the_same_actions(name, tmp_path):
    case = tiny(name)
    path = tmp_path / f"{name}.pt"
    case.save(path)
    contents = torch.load(path, map_location="cpu", weights_only=True)  # tensors and primitives only
    assert contents["model"] == name and "format_version" in contents
    loaded = load(path, env=case.env, device="cpu")
    assert type(loaded) is type(case.model)
    for planner_name in sorted(PLANNERS):
        before = act(case, controller(case, planner_name, seed=3))
        reloaded = type(case)(**{**case.__dict__, "model": loaded})
        after = act(reloaded, controller(reloaded, planner_name, seed=3))
        assert np.allclose(before, after, atol=1e-5), planner_name


@pytest.mark.parametrize("name", SAVABLE)
def test_a_checkpoint_of_another_family_is_refused_by_name(name, tmp_path):
    other = next(n for n in SAVABLE if n != name)
    path = tmp_path / f"{other}.pt"
    tiny(other).save(path)
    with pytest.raises(CheckpointError, match=f"holds a '{other}' model, not a '{name}' model"):
        load(path, device="cpu", expect=name)
    with pytest.raises(CheckpointError, match=f"holds a '{other}' model, not a '{name}' model"):
        registry.get(name).entry("load")(path, device="cpu")


@pytest.mark.parametrize("name", SAVABLE)
def test_a_checkpoint_for_other_shapes_is_refused_by_name(name, tmp_path):
    case = tiny(name)
    path = tmp_path / f"{name}.pt"
    case.save(path)
    wrong_actions = EnvShapes(case.env.observation_space.shape, case.env.action_space.shape[0] + 1,
                              task=getattr(case.env, "task", None))
    with pytest.raises(ValueError, match="action_dim"):
        load(path, env=wrong_actions, device="cpu")


def test_a_checkpoint_for_another_task_is_refused_by_name(tmp_path):
    case = tiny("told")
    path = tmp_path / "told.pt"
    case.save(path)
    other_task = EnvShapes(case.env.observation_space.shape, case.env.action_space.shape[0], task="walker-walk")
    with pytest.raises(ValueError, match="trained on task 'tiny-task', but the task is 'walker-walk'"):
        load(path, env=other_task, device="cpu")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_wrong_observation_shape_is_refused_by_name(name):
    case = tiny(name)
    obs = torch.as_tensor(np.asarray(case.obs))
    wrong = obs[..., :-1]  # one entry (or one pixel column) short
    with pytest.raises(ValueError, match=r"has shape .*; the model takes observations of shape"):
        controller(case, "cem").act(wrong, goal=case.goal)


@pytest.mark.parametrize(
    "contents,message",
    [
        (b"", "is empty, not a checkpoint"),
        (b"\x00\x01 not a torch file", "is not a checkpoint of ours, or it is damaged"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused_without_bad_advice(tmp_path, contents, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(contents)
    with pytest.raises(CheckpointError, match=message) as error:
        load(path)
    assert "weights_only=False" not in str(error.value)


def test_a_truncated_checkpoint_is_refused(tmp_path):
    case = tiny("told")
    path = tmp_path / "told.pt"
    case.save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load(path)


class _Payload:
    """Would run code if unpickled without weights_only."""

    def __reduce__(self):
        return (Path("ran").touch, ())


def test_a_pickled_object_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of ours"):
        load(tmp_path / "evil.pt")
    assert not (tmp_path / "ran").exists()


def test_unknown_families_suggest_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown model 'tould' \(did you mean 'told'\?\)"):
        registry.get("tould")


def test_a_user_family_registers_the_way_ours_do(tmp_path):
    spec = registry.ModelSpec(name="user-linear", description="a user's own model", observations=("state",),
                              tasks=("toy-point_mass",), prepare="models.toy:prepare_planning",
                              tiny="models.toy:tiny_point_mass")
    registry.register(spec)
    try:
        assert registry.get("user-linear") is spec and "user-linear" in registry.names()
        with pytest.raises(ValueError, match="already registered"):
            registry.register(spec)
    finally:
        registry._REGISTRY.pop("user-linear")
