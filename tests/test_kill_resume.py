"""Training survives being killed: `kill -9` at any moment (while writing a checkpoint or
the replay buffer included) leaves a run that the same command resumes from the last good
checkpoint; a resume at a checkpoint boundary continues exactly as an uninterrupted run;
a damaged newest checkpoint falls back to the previous one with a one-line warning."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY_TOLD = {"size": "tiny", "max_episode_steps": 20, "eval_every": 100_000, "eval_episodes": 1, "checkpoint_every": 1,
             "seed_steps": 20, "batch_size": 8}  # fmt: skip


def told_trainer(out: Path, steps: int):
    from training.told_trainer import make_trainer

    return make_trainer(task="cartpole-balance", steps=steps, obs="state", seed=0, out=str(out), device="cpu",
                        progress=False, options=TINY_TOLD)


class _Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


def test_a_resume_at_a_checkpoint_boundary_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    torch.set_num_threads(1)  # the same arithmetic in both runs
    whole = told_trainer(tmp_path / "whole", steps=200)
    whole.log = lambda message: None
    whole.run()

    killed = told_trainer(tmp_path / "killed", steps=200)
    killed.log = lambda message: None
    save = killed.save_checkpoint
    saves = []

    def save_then_die(wall: float) -> None:
        save(wall)
        saves.append(killed.step)
        if len(saves) == 4:  # after the 3rd episode's checkpoint (the first save is the step-0 evaluation's)
            raise _Killed

    monkeypatch.setattr(killed, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        killed.run()
    resumed = told_trainer(tmp_path / "killed", steps=200)
    assert resumed.resumed and resumed.step == saves[-1] and resumed.episode == 3
    resumed.log = lambda message: None
    resumed.run()
    assert resumed.step == whole.step and resumed.updates == whole.updates
    a, b = whole.agent.model.state_dict(), resumed.agent.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert [r["episode_return"] for r in whole.train_rows] == [r["episode_return"] for r in resumed.train_rows]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    trainer = told_trainer(tmp_path / "run", steps=120)
    trainer.log = lambda message: None
    trainer.run()
    previous = torch.load(trainer.previous_checkpoint_path, weights_only=True)
    trainer.checkpoint_path.write_bytes(trainer.checkpoint_path.read_bytes()[:1000])  # a torn write
    capsys.readouterr()
    resumed = told_trainer(tmp_path / "run", steps=120)
    assert resumed.resumed and resumed.step == previous["step"] and resumed.episode == previous["episode"]
    assert resumed.buffer.num_steps == trainer.buffer.num_steps - (trainer.step - previous["step"])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint.pt cannot be read" in warnings[0]
    assert "resuming from the previous checkpoint, checkpoint-previous.pt" in warnings[0]


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    trainer = told_trainer(tmp_path / "run", steps=60)
    trainer.log = lambda message: None
    trainer.run()
    for path in (trainer.checkpoint_path, trainer.previous_checkpoint_path):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="no readable checkpoint to resume from"):
        told_trainer(tmp_path / "run", steps=60)


def _train_command(out: Path, steps: int) -> list[str]:
    flags = []
    for name, value in TINY_TOLD.items():
        flags += [f"--{name.replace('_', '-')}", str(value)]
    return [sys.executable, str(ROOT / "run_planning.py"), "train", "--model", "told", "--task", "cartpole-balance",
            "--steps", str(steps), "--out", str(out), "--no-progress", *flags]


def _kill_at_random(out: Path, steps: int, delay: float) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    process = subprocess.Popen(_train_command(out, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env, cwd=out.parent)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def _check_resumes(out: Path, steps: int) -> None:
    """The run folder left by a kill resumes from a whole checkpoint with its buffer."""
    from training.told_trainer import make_trainer

    newest = out / "checkpoint.pt" if (out / "checkpoint.pt").exists() else out / "checkpoint-previous.pt"
    state = torch.load(newest, weights_only=True)
    trainer = make_trainer(task="cartpole-balance", steps=steps, obs="state", seed=0, out=str(out), device="cpu",
                           progress=False, options=TINY_TOLD)  # fmt: skip
    assert trainer.resumed and trainer.step == state["step"] and trainer.updates == state["updates"]
    assert trainer.buffer.num_steps == state["step"]
    assert not list(out.glob(".*.tmp")), "a half-written file was left behind"


def _kill_and_resume(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    out = tmp_path / "run"
    steps = 4000
    for _ in range(kills):
        _kill_at_random(out, steps, delay=rng.uniform(0.0, 3.0))
        _check_resumes(out, steps)


def test_kill_9_during_training_leaves_a_run_that_resumes(tmp_path):
    _kill_and_resume(tmp_path, kills=1, seed=0)


@pytest.mark.slow
def test_kill_9_at_random_moments_five_times(tmp_path):
    _kill_and_resume(tmp_path, kills=6, seed=1)
