"""Run files shared by the trainers: resuming only the same run, logs that match checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from training.run_files import check_same_run, config_defaults, restore_logs


@dataclass
class Settings:
    task: str
    seed: int = 0
    precision: str = "float32"
    tags: list = field(default_factory=list)


def test_a_setting_newer_than_the_checkpoint_counts_as_its_default():
    defaults = config_defaults(Settings)
    assert defaults == {"seed": 0, "precision": "float32", "tags": []}
    ours = {"task": "cartpole-swingup", "seed": 0, "precision": "float32"}
    old_checkpoint = {"task": "cartpole-swingup", "seed": 0}  # saved before `precision` existed
    check_same_run(Path("ckpt.pt"), old_checkpoint, ours, ("task", "seed", "precision"), defaults=defaults)
    with pytest.raises(ValueError, match=r"precision='float32' \(checkpoint\) vs 'bfloat16' \(this run\)"):
        check_same_run(Path("ckpt.pt"), old_checkpoint, {**ours, "precision": "bfloat16"}, ("task", "precision"),
                       defaults=defaults)  # fmt: skip


def test_every_differing_setting_is_named_with_the_way_out():
    with pytest.raises(ValueError) as error:
        check_same_run(Path("run/checkpoint.pt"), {"task": "a", "seed": 1}, {"task": "b", "seed": 2}, ("task", "seed"))
    message = str(error.value)
    assert "task='a' (checkpoint) vs 'b' (this run); seed=1 (checkpoint) vs 2 (this run)" in message
    assert "use another --out folder or the same settings" in message


def test_restored_logs_hold_exactly_the_checkpoint_rows(tmp_path):
    (tmp_path / "train.csv").write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n")  # row 3 came after the checkpoint
    restore_logs(tmp_path, {"train.csv": [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}], "eval.csv": []})
    assert (tmp_path / "train.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]
    assert not (tmp_path / "eval.csv").exists()


def test_machine_segments_open_a_new_stretch_only_when_the_hardware_changes():
    from training.run_files import extend_machine_segments

    timers = {"update": 5.0, "eval": 2.0}
    fresh = extend_machine_segments(None, "cpu: A", 0, 0.0, {"update": 0.0, "eval": 0.0})
    assert [s["where"] for s in fresh] == ["cpu: A"] and fresh[0]["from_env_step"] == 0
    same = extend_machine_segments(fresh, "cpu: A", 5000, 100.0, timers)
    assert same == fresh  # resuming on the same hardware continues the stretch
    moved = extend_machine_segments(fresh, "cuda: H100", 5000, 100.0, timers)
    assert [(s["where"], s["from_env_step"]) for s in moved] == [("cpu: A", 0), ("cuda: H100", 5000)]
    assert moved[1]["wall_at_start"] == 100.0 and moved[1]["timers_at_start"] == timers
    assert fresh == [fresh[0]]  # the caller's list is not changed
    # A checkpoint from before segments were recorded: its stretch is marked unrecorded.
    old = extend_machine_segments(None, "cpu: A", 7000, 50.0, timers)
    assert [(s["where"], s["from_env_step"]) for s in old] == [("unrecorded", 0), ("cpu: A", 7000)]


def test_trained_on_gives_each_stretch_its_own_throughput():
    from benchmarks.planet_learning import trained_on

    segments = [
        {"where": "cuda: H100", "from_env_step": 0, "wall_at_start": 0.0, "timers_at_start": {"eval": 0.0}},
        {"where": "cpu: A", "from_env_step": 70000, "wall_at_start": 1600.0, "timers_at_start": {"eval": 100.0}},
    ]
    out = trained_on(segments, env_steps=80000, wall=3700.0, timers={"eval": 200.0})
    # 70k steps in 1500 s of training (1600 s minus 100 s evaluating); 10k in 2000 s.
    assert [(s["where"], s["from_env_step"], s["to_env_step"], s["env_steps_per_s"]) for s in out] == [
        ("cuda: H100", 0, 70000, 46.67), ("cpu: A", 70000, 80000, 5.0)]
    assert trained_on(None, 80000, 3700.0, {"eval": 0.0}) is None
