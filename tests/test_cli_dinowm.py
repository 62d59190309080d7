"""DINO-WM through the command line: collect, train, then plan to goal images."""

from __future__ import annotations

from pathlib import Path

import pytest

import run_planning
from models import planning
from training.run_export import ship_dinowm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_train_then_reach_goals(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    code = run_planning.main([
        "train", "--model", "dinowm", "--preset", "tiny", "--task", "reacher-pose", "--trajectories", "3",
        "--trajectory-steps", "30", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    assert (out / "model.pt").is_file() and (out / "data" / "manifest.json").is_file()
    code = run_planning.main([
        "--model", "dinowm", "--checkpoint", str(out / "model.pt"), "--task", "reacher-pose", "--episodes", "1",
        "--samples", "8", "--elites", "2", "--iterations", "1", "--horizon", "2", "--env-steps", "5",
        "--precision", "bfloat16", "--goal-objective", "all", "--goal-at-rest", "--proprio-positions", "--goal-alpha", "1",
        "--out", str(tmp_path / "eval"),
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "model dinowm" in printed and "goals reached" in printed
    assert "objective all, goal at rest, proprio positions, alpha 1" in printed
    assert list((tmp_path / "eval" / "goals").glob("*.png"))

    # Shipped: checkpoints/dinowm-<task>.pt plans with no --checkpoint, with the goal
    # objective the file records unless a flag says otherwise.
    shipped = ship_dinowm(out / "model.pt", tmp_path / "checkpoints", {"goal_objective": "all", "proprio_positions": True})
    assert shipped.name == "dinowm-reacher-pose.pt"
    monkeypatch.setattr(planning, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    common = ["--model", "dinowm", "--task", "reacher-pose", "--episodes", "1", "--samples", "8", "--elites", "2",
              "--iterations", "1", "--horizon", "2", "--env-steps", "3", "--no-progress"]  # fmt: skip
    assert run_planning.main([*common, "--out", str(tmp_path / "shipped")]) == 0
    printed = capsys.readouterr().out
    assert "objective all, proprio positions" in printed and "dinowm-reacher-pose.pt" in printed
    assert list((tmp_path / "shipped" / "goals").glob("*.png"))
    assert run_planning.main([*common, "--goal-objective", "last", "--out", str(tmp_path / "flag")]) == 0
    assert "objective last, proprio positions" in capsys.readouterr().out


def test_ship_dinowm_refuses_other_files_and_settings(tmp_path):
    with pytest.raises(ValueError, match=r"unknown planning setting\(s\) \['horizon'\]; accepted: \['goal_objective'"):
        ship_dinowm(tmp_path / "model.pt", tmp_path, {"horizon": 5})
    with pytest.raises(ValueError, match="is not a DINO-WM model file"):
        ship_dinowm(Path("checkpoints/told-cartpole-swingup.pt"), tmp_path, {})


def test_dinowm_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(planning, "CHECKPOINT_DIR", tmp_path)
    assert run_planning.main(["--model", "dinowm", "--task", "reacher-pose"]) == 2
    assert "no DINO-WM checkpoint ships for reacher-pose (shipped: []); pass --checkpoint" in capsys.readouterr().err
    assert run_planning.main(["train", "--model", "dinowm", "--task", "cartpole-swingup", "--out", str(tmp_path)]) == 2
    assert "dinowm trains on goal tasks" in capsys.readouterr().err


def test_the_shipped_point_mass_model_plans_from_the_repository(tmp_path, capsys):
    # checkpoints/dinowm-point_mass-goal.pt: a fresh clone reaches goal images with no training.
    code = run_planning.main(["--model", "dinowm", "--task", "point_mass-goal", "--episodes", "1", "--samples", "16",
                              "--elites", "4", "--iterations", "2", "--env-steps", "10", "--out", str(tmp_path),
                              "--no-progress"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "the shipped checkpoint checkpoints/dinowm-point_mass-goal.pt" in printed
    assert "objective all, proprio positions" in printed  # the setting the file records
    assert len(list((tmp_path / "goals").glob("*.png"))) >= 1
