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
        (["--model", "dinowm", "--task", "reacher-pose"], "no DINO-WM checkpoint ships for reacher-pose"),
        (["--model", "told", "--task", "walker-run"], "no TOLD checkpoint for walker-run"),
        (["--model", "oracle", "--checkpoint", "README.md"], "the oracle model has no weights and takes no --checkpoint"),
        (["--checkpoint", "nowhere.pt"], "checkpoint not found: nowhere.pt"),
        (["--model", "oracle", "--precision", "bfloat16"], "--precision bfloat16 is for learned models"),
        (["--task", "walker-run", "--precision", "bfloat16"], "the oracle (--model auto) has no weights"),
        (["--checkpoint", "README.md"], "README.md is not a checkpoint of ours"),
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
    result = run_cli("--task", "reacher-easy", "--model", "oracle", "--planner", "mppi", "--samples", "20", "--elites", "4",
                     "--max-steps", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "reacher-easy" and summary["rows"][0]["steps"] == 4
    assert "action repeat 4" in result.stdout  # the oracle's measured per-task setting


def test_with_no_flags_the_shipped_told_checkpoint_plans_with_mppi(tmp_path):
    result = run_cli("--max-steps", "2", "--precision", "bfloat16", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "model told (the shipped checkpoint checkpoints/told-cartpole-swingup.pt" in result.stdout
    assert "planner mppi (horizon 3, 512 samples, 64 elites, 6 iterations)" in result.stdout  # TD-MPC2's preset
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["model"], summary["planner"], summary["task"]) == ("told", "mppi", "cartpole-swingup")


def test_a_task_without_a_shipped_checkpoint_falls_back_to_the_oracle(tmp_path):
    result = run_cli("--task", "walker-run", "--max-steps", "2", "--samples", "8", "--elites", "2", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "model oracle (no learned checkpoint ships for walker-run" in result.stdout
    assert json.loads((tmp_path / "summary.json").read_text())["planner"] == "icem"


def test_the_model_of_a_checkpoint_file_is_read_from_its_header(tmp_path):
    import torch

    from models import CheckpointError, load
    from models.loading import family_of
    from models.told import TOLD, TOLDConfig

    told = TOLD(TOLDConfig(obs_shape=(5,), action_dim=1, size="tiny", task="cartpole-swingup")).checkpoint()
    torch.save(told, tmp_path / "model.pt")
    torch.save({"version": 1, "agent_state": {"agent": told}}, tmp_path / "checkpoint.pt")  # an old training checkpoint
    torch.save({"trainer": "planet", "model": {"model": "rssm"}}, tmp_path / "planet.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert family_of(tmp_path / "model.pt") == family_of(tmp_path / "checkpoint.pt") == "told"
    # ... and TOLD's loader reads both, as the detection promises
    assert load(tmp_path / "checkpoint.pt").config.size == load(tmp_path / "model.pt").config.size == "tiny"
    with pytest.raises(CheckpointError, match=r"planet.pt is a training checkpoint .*model file beside it: .*model.pt"):
        load(tmp_path / "planet.pt")
    with pytest.raises(CheckpointError, match="other.pt names no model in its header"):
        family_of(tmp_path / "other.pt")
    result = run_cli("--checkpoint", str(tmp_path / "planet.pt"))
    assert result.returncode == 2 and "is a training checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_goal_task_writes_a_video_with_the_goal_beside_each_frame(tmp_path):
    video = tmp_path / "episode.gif"
    result = run_cli("--task", "point_mass-goal", "--samples", "16", "--elites", "4", "--max-steps", "3",
                     "--video", str(video), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    import imageio.v2 as imageio

    frames = imageio.mimread(video)
    assert len(frames) == 3 and frames[0].shape[1] == 2 * frames[0].shape[0] + 4  # frame | gap | goal
    assert json.loads((tmp_path / "summary.json").read_text())["rows"][0]["success"] is not None


def shipped_train_steps(task: str) -> int:
    """Env steps the shipped TOLD checkpoint of `task` was trained for (0 when none ships)."""
    import torch

    path = ROOT / "checkpoints" / f"told-{task}.pt"
    return int(torch.load(path, weights_only=True).get("train_steps", 0)) if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.xfail(
    shipped_train_steps("cartpole-swingup") < 100_000, strict=False,
    reason="the shipped cartpole checkpoint is from part-way through its 100k-step run; TD-MPC2 reports 839 "
           "at 100k, and this test holds the finished checkpoint to 800 (ours scored 828 with seed 0)",
)  # fmt: skip
def test_the_default_run_solves_cartpole_swingup(tmp_path):
    result = run_cli("--out", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["task"], summary["model"]) == ("cartpole-swingup", "told") and summary["mean_return"] > 800


def test_acting_another_way_writes_to_another_default_folder():
    """Without --out, the results folder names the family options that choose how the model
    acts, so acting with the actor does not overwrite planning's results (and a numeric
    option or a file path does not end up in a folder name)."""
    import run_planning
    from models import registry

    def folder(*argv: str) -> str:
        args = run_planning.build_parser().parse_args(list(argv))
        spec = registry.get(args.model)
        return str(run_planning.default_results_folder(args, spec, run_planning.family_options(args, spec, "plan")))

    base = ["--task", "cartpole-swingup", "--model", "rssm", "--planner", "cem"]
    assert folder(*base) == os.path.join("runs", "cartpole-swingup-cem-rssm")
    assert folder(*base, "--mode", "actor") == os.path.join("runs", "cartpole-swingup-cem-rssm-actor")
    assert folder(*base, "--mode", "planner+actor", "--no-plan-value") == os.path.join(
        "runs", "cartpole-swingup-cem-rssm-planner+actor-no_plan_value")
    ensemble = ["--task", "reacher-easy", "--model", "ensemble", "--planner", "icem"]
    assert folder(*ensemble, "--particles", "5", "--propagation", "tsinf") == os.path.join(
        "runs", "reacher-easy-icem-ensemble-tsinf")
