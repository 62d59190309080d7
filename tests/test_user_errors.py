"""What a new user meets when they get something wrong: a table of mistakes.

The command line runs in a subprocess, as a user runs it: each mistake exits with status
2, prints one line that names the bad value (and what is accepted), no traceback, and
leaves nothing half-written in the run folder. The library cases raise the named error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TOLD = str(ROOT / "checkpoints" / "told-cartpole-swingup.pt")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, str(ROOT / "run_planning.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


class _Payload:
    """Would create a file if unpickled without weights_only."""

    def __reduce__(self):
        return (Path("payload-ran").touch, ())


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    """Files a user might pass as --checkpoint by mistake."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    told = Path(TOLD).read_bytes()
    (folder / "truncated.pt").write_bytes(told[: len(told) // 2])
    torch.save({"model": _Payload()}, folder / "pickled.pt")
    torch.save({"format_version": 2, "model": "rssm", "kind": "training", "train_config": {}},
               folder / "rssm-training.pt")
    return {p.stem: str(p) for p in folder.iterdir()}


# (arguments, what the one line must say); "{name}" is a file of `bad_files`.
MISTAKES = [
    (["--task", "cartpole-swongup"], "Did you mean 'cartpole-swingup'"),
    (["--task", "toy-pendulum", "--planner", "mpi"], "unknown planner 'mpi'"),
    (["--model", "dreamer"], "unknown model 'dreamer'"),
    (["--task", "toy-pendulum", "--planner", "mppi", "--preset", "planet"], "unknown preset 'planet' for planner 'mppi'"),
    (["--episodes", "0"], "--episodes 0 must be at least 1"),
    (["--horizon", "abc"], "argument --horizon: invalid int value: 'abc'"),
    (["--precision", "float16"], "argument --precision: invalid choice: 'float16'"),
    (["--task", "toy-pendulum", "--samples", "4", "--elites", "9"], "num_elites=9 exceeds num_samples=4"),
    (["--checkpoint", "nowhere.pt"], "checkpoint not found: nowhere.pt"),
    (["--checkpoint", "{empty}"], "is empty, not a checkpoint"),
    (["--checkpoint", "{random}"], "is not a checkpoint of ours, or it is damaged"),
    (["--checkpoint", "{truncated}"], "is not a checkpoint of ours, or it is damaged"),
    (["--checkpoint", "{pickled}"], "is not a checkpoint of ours"),
    (["--checkpoint", "{rssm-training}"], "is a training checkpoint (the state to resume training); plan with the model"),
    (["--model", "rssm", "--checkpoint", TOLD], "holds a 'told' model, not a 'rssm' model"),
    (["--checkpoint", TOLD, "--task", "reacher-easy"], "trained on task 'cartpole-swingup', but the task is 'reacher-easy'"),
    (["--model", "told", "--task", "walker-run"], "no TOLD checkpoint for walker-run"),
    (["--model", "told", "--task", "toy-pendulum"], "--model told plans on suite tasks; toy-pendulum is a toy task"),
    (["--model", "oracle", "--checkpoint", TOLD], "the oracle model has no weights and takes no --checkpoint"),
    (["--model", "oracle", "--precision", "bfloat16"], "--precision bfloat16 is for learned models"),
    (["--task", "point_mass-goal", "--goal", "goal.png"], "--goal images need a goal-conditioned learned model"),
    (["--mode", "actor"], "--mode is an option of --model rssm, not of --model told"),
    (["--model", "rssm", "--max-steps", "2"], "--model rssm needs --checkpoint"),
    (["--model", "dinowm", "--task", "reacher-pose"], "no DINO-WM checkpoint ships for reacher-pose"),
    (["--task", "toy-pendulum", "--video", "episode.avi"], "video path 'episode.avi' must end in one of"),
    (["--task", "toy-pendulum", "--video", "episode.gif"], "toy-pendulum has no renderer"),
    (["train", "--task", "nowhere-run"], "nowhere-run"),
    (["train", "--model", "oracle"], "cannot train model 'oracle'"),
    (["train", "--steps", "0"], "--steps 0 must be at least 1"),
    (["train", "--model", "told", "--recipe", "dreamer"], "--recipe is an option of --model rssm, not of --model told"),
    (["train", "--model", "told", "--size", "9M"], "argument --size: invalid choice: '9M'"),
    (["train", "--model", "dinowm", "--task", "cartpole-swingup"], "dinowm trains on goal tasks"),
    (["train", "--model", "dinowm", "--task", "point_mass-goal", "--encoder-weights", "nowhere.pth"],
     "encoder_weights='nowhere.pth': no such file"),
]
if not torch.cuda.is_available():
    MISTAKES.append((["--task", "toy-pendulum", "--device", "cuda"], "CUDA requested (device='cuda') but not available"))


@pytest.mark.parametrize("args,message", MISTAKES, ids=[" ".join(a)[:60] for a, _ in MISTAKES])
def test_a_cli_mistake_is_one_line_and_exit_2(args, message, bad_files, tmp_path):
    args = [a.format(**bad_files) if a.startswith("{") else a for a in args]
    out = tmp_path / "run"
    args = [*args, "--out", str(out)]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    assert not (tmp_path / "payload-ran").exists()


# -- the library ---------------------------------------------------------------------------------


def tiny_controller(name: str = "told"):
    from models import registry
    from planners import MPCController, make_planner

    case = registry.get(name).entry("tiny")()
    planner = make_planner("cem", case.action_dim, horizon=2, num_samples=8, num_elites=2, iterations=1)
    return case, MPCController(case.model, planner, device="cpu", seed=0, **case.controller_kwargs)


def test_library_wrong_observation_shape_names_both_shapes():
    case, ctrl = tiny_controller()
    with pytest.raises(ValueError, match=r"obs has shape \(4,\); the model takes observations of shape \(5,\)"):
        ctrl.act(np.zeros(4, dtype=np.float32))


def test_library_nan_observation_is_refused():
    case, ctrl = tiny_controller()
    obs = np.asarray(case.obs, dtype=np.float32).copy()
    obs[0] = np.nan
    with pytest.raises(ValueError, match="obs contains NaN or inf"):
        ctrl.act(obs)


def test_library_action_dim_mismatch_names_both(tmp_path):
    from models import load
    from models.planning import EnvShapes

    with pytest.raises(ValueError, match="checkpoint has action_dim=1, but the environment has 2"):
        load(TOLD, env=EnvShapes((5,), 2), device="cpu")


def test_library_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from models.toy import Pendulum
    from planners import MPCController, make_planner

    with pytest.raises(ValueError, match="CUDA requested .* but not available; use device 'auto' or 'cpu'"):
        MPCController(Pendulum(), make_planner("cem", 1), device="cuda")


def test_library_unknown_names_list_the_accepted_ones():
    import envs
    from models import registry
    from planners import make_planner

    with pytest.raises(ValueError, match=r"unknown planner 'cme' \(did you mean 'cem'\?\); choose one of"):
        make_planner("cme", 2)
    with pytest.raises(ValueError, match=r"unknown model 'tld' \(did you mean 'told'\?\)"):
        registry.get("tld")
    with pytest.raises(ValueError, match="cartpole-swingup"):
        envs.make("cartpole-swngup")


def test_library_pickled_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch):
    from models import CheckpointError, load

    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of ours"):
        load(tmp_path / "evil.pt")
    assert not (tmp_path / "payload-ran").exists()


def test_cli_interrupt_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path):
    """Ctrl-C during `train`: one line, exit 130, and the same command resumes."""
    import signal
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "run_planning.py"), "train", "--model", "told", "--size", "tiny",
           "--task", "cartpole-balance", "--steps", "4000", "--max-episode-steps", "20", "--eval-every", "100000",
           "--eval-episodes", "1", "--checkpoint-every", "1", "--seed-steps", "20", "--batch-size", "8",
           "--out", str(out), "--no-progress"]  # fmt: skip
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    # A shell that starts the tests in the background (`... &`) hands its children SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler; the child gets the
    # default disposition back, as a terminal's foreground job has it.
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # never leave a training process behind
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted at env step" in lines[0] and "resume with the same command" in lines[0]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model"] == "told" and (out / state["replay_file"]).is_file()
