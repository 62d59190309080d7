"""DINO-WM through the command line: collect, train, then plan to goal images."""

from __future__ import annotations

import pytest

import run_planning

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_train_then_reach_goals(tmp_path, capsys):
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


def test_dinowm_errors_are_one_line(tmp_path, capsys):
    assert run_planning.main(["--model", "dinowm", "--task", "reacher-pose"]) == 2
    assert "--model dinowm needs --checkpoint" in capsys.readouterr().err
    assert run_planning.main(["train", "--model", "dinowm", "--task", "cartpole-swingup", "--out", str(tmp_path)]) == 2
    assert "dinowm trains on goal tasks" in capsys.readouterr().err
