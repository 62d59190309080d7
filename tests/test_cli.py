"""The command line, run as a user would: in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, str(ROOT / "run_planning.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_list_names_tasks_planners_and_models():
    result = run_cli("--list")
    assert result.returncode == 0, result.stderr
    for name in ("cartpole-swingup", "reacher-pose", "toy-pendulum", "icem", "mppi:tdmpc2", "oracle"):
        assert name in result.stdout


def test_toy_task_runs_and_writes_csv_and_json(tmp_path):
    result = run_cli("--task", "toy-point_mass", "--planner", "cem", "--episodes", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["success_rate"] == 1.0
    assert (tmp_path / "episodes.csv").read_text().count("\n") == 3  # header + 2 rows
    assert "success 100%" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--task", "cartpole-swongup"], "Did you mean 'cartpole-swingup'"),
        (["--planner", "mpi", "--task", "toy-pendulum"], "unknown planner 'mpi'"),
        (["--model", "dreamer"], "unknown model 'dreamer'; choose one of"),
        (["--model", "dinowm", "--task", "reacher-pose"], "--model dinowm needs --checkpoint"),
        (["--model", "told", "--task", "walker-run"], "no TOLD checkpoint for walker-run"),
        (["--checkpoint", "nowhere.pt"], "the oracle model is the true physics and takes no --checkpoint"),
        (["--episodes", "0"], "--episodes 0 must be at least 1"),
        (["--task", "toy-pendulum", "--samples", "4", "--elites", "9"], "num_elites=9 exceeds num_samples=4"),
        (["--task", "toy-pendulum", "--planner", "mppi", "--preset", "planet"], "unknown preset 'planet' for planner 'mppi'"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_dm_control_task_with_the_oracle_runs(tmp_path):
    result = run_cli("--task", "reacher-easy", "--planner", "mppi", "--samples", "20", "--elites", "4",
                     "--max-steps", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "reacher-easy" and summary["rows"][0]["steps"] == 4
    assert "action repeat 4" in result.stdout  # the oracle's measured per-task setting


def test_goal_task_writes_a_video_with_the_goal_beside_each_frame(tmp_path):
    video = tmp_path / "episode.gif"
    result = run_cli("--task", "point_mass-goal", "--samples", "16", "--elites", "4", "--max-steps", "3",
                     "--video", str(video), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    import imageio.v2 as imageio

    frames = imageio.mimread(video)
    assert len(frames) == 3 and frames[0].shape[1] == 2 * frames[0].shape[0] + 4  # frame | gap | goal
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["success"] is not None


@pytest.mark.slow
def test_the_default_run_solves_cartpole_swingup(tmp_path):
    result = run_cli("--out", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "cartpole-swingup" and summary["mean_return"] > 800
