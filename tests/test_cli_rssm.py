"""PlaNet's RSSM through the command line: train, then act in each of the three modes."""

from __future__ import annotations

import argparse
import json

import pytest

import run_planning
from benchmarks import planet_learning

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

QUICK_TRAIN = [
    "train", "--model", "rssm", "--preset", "tiny", "--task", "cartpole-swingup", "--steps", "400",
    "--max-episode-steps", "10", "--chunk-length", "5", "--batch-size", "4", "--collect-interval", "3",
    "--plan-samples", "16", "--plan-iterations", "2", "--eval-every", "100000", "--eval-episodes", "1",
    "--no-progress",
]  # fmt: skip


def record_plan_settings(monkeypatch) -> list[tuple[bool, int]]:
    """A list that fills with (plan_value, action repeat) each time the command line builds
    an RSSM controller."""
    import models.actor_control

    seen: list[tuple[bool, int]] = []
    original = models.actor_control.plan_controller

    def recording_controller(model, env, request, mode, plan_value):
        seen.append((plan_value, env.action_repeat))
        return original(model, env, request, mode, plan_value)

    monkeypatch.setattr(models.actor_control, "plan_controller", recording_controller)
    return seen


@pytest.mark.parametrize("mode", ["planner", "actor", "planner+actor"])
def test_train_then_act_in_each_mode(tmp_path, capsys, mode):
    out = tmp_path / "run"
    assert run_planning.main([*QUICK_TRAIN, "--mode", mode, "--out", str(out)]) == 0
    assert (out / "model.pt").is_file()
    assert (out / "behavior.pt").is_file() == (mode != "planner")
    code = run_planning.main([
        "--model", "rssm", "--checkpoint", str(out / "model.pt"), "--mode", mode, "--planner", "cem",
        "--samples", "16", "--elites", "4", "--iterations", "2", "--horizon", "4", "--max-steps", "3",
        "--out", str(tmp_path / "eval"), "--no-progress",
        # the actor-guided planner also plans in bfloat16 autocast (recurrent model, proposals)
        *(["--precision", "bfloat16"] if mode == "planner+actor" else []),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"model rssm ({mode})" in printed and "mean return" in printed
    # the results say how the model acted, not only the (unused, in actor mode) planner's name
    assert f"model rssm ({mode})" in json.loads((tmp_path / "eval" / "summary.json").read_text())["acting"]


def test_actor_modes_need_the_behaviour_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_planning.main([*QUICK_TRAIN, "--mode", "planner", "--out", str(out)]) == 0
    capsys.readouterr()
    code = run_planning.main(["--model", "rssm", "--checkpoint", str(out / "model.pt"), "--mode", "actor",
                              "--max-steps", "2", "--out", str(tmp_path / "e")])
    assert code == 2
    assert "behavior.pt is missing" in capsys.readouterr().err
    assert run_planning.main(["--model", "rssm", "--max-steps", "2"]) == 2
    assert "--model rssm needs --checkpoint" in capsys.readouterr().err


def test_the_dreamer_recipe_trains_and_plans_with_the_critics_value(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    # The tiny model and short episodes of QUICK_TRAIN: the machinery, not the numbers.
    assert run_planning.main([*QUICK_TRAIN, "--recipe", "dreamer", "--mode", "planner+actor", "--out", str(out)]) == 0
    assert "dreamer recipe" in capsys.readouterr().out
    import torch

    config = torch.load(out / "checkpoint.pt", weights_only=True)["train_config"]
    assert config["action_repeat"] == 2 and config["plan_value"] and config["behavior"] == "dreamerv3"
    act = ["--model", "rssm", "--checkpoint", str(out / "model.pt"), "--planner", "cem", "--samples", "16",
           "--elites", "4", "--iterations", "2", "--horizon", "4", "--max-steps", "3",
           "--out", str(tmp_path / "eval"), "--no-progress"]  # fmt: skip
    seen = record_plan_settings(monkeypatch)
    # Without flags: the run's own action repeat (2, not PlaNet's 8) and its plan_value.
    assert run_planning.main([*act, "--mode", "planner+actor"]) == 0
    assert "mean return" in capsys.readouterr().out
    assert run_planning.main([*act, "--mode", "planner+actor", "--no-plan-value", "--action-repeat", "4"]) == 0
    assert run_planning.main([*act, "--mode", "actor"]) == 0  # the run's plan_value is for planning only
    assert seen == [(True, 2), (False, 4), (False, 2)]
    capsys.readouterr()
    assert run_planning.main([*act, "--mode", "actor", "--plan-value"]) == 2
    assert "--plan-value plans with the critic, so it needs --mode planner+actor, not actor" in capsys.readouterr().err


def test_a_shipped_model_acts_with_its_runs_settings(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert run_planning.main([*QUICK_TRAIN, "--recipe", "dreamer", "--mode", "planner+actor", "--out", str(run)]) == 0
    planet_learning.ship(argparse.Namespace(run=str(run), checkpoints_dir=str(tmp_path / "checkpoints")))
    shipped = tmp_path / "checkpoints" / "rssm-cartpole-swingup"
    assert sorted(p.name for p in shipped.iterdir()) == ["behavior.pt", "model.pt", "train_config.json"]
    summary = json.loads((shipped / "train_config.json").read_text())
    assert summary["train_config"]["action_repeat"] == 2 and summary["env_steps"] == 400
    seen = record_plan_settings(monkeypatch)
    code = run_planning.main(["--model", "rssm", "--checkpoint", str(shipped / "model.pt"), "--mode", "planner+actor",
                              "--planner", "cem", "--samples", "16", "--elites", "4", "--iterations", "2",
                              "--horizon", "4", "--max-steps", "3", "--out", str(tmp_path / "eval"), "--no-progress"])
    assert code == 0 and "mean return" in capsys.readouterr().out
    assert seen == [(True, 2)]  # the run's action repeat and plan_value, with no checkpoint.pt beside the model
