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
