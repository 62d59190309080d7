"""tools/carry_run.py (developer tooling): what `pack` keeps, and that the run resumes."""

from __future__ import annotations

import tarfile

import pytest
import torch

from tools.carry_run import pack, unpack
from training.told_trainer import TOLDTrainConfig, TOLDTrainer, evaluate_snapshots

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def config(steps: int) -> TOLDTrainConfig:
    """Episodes of 10 agent steps (20 env steps), tiny model, deferred evaluation every 40."""
    return TOLDTrainConfig(
        task="cartpole-swingup", steps=steps, size="tiny", seed_steps=10, eval_every=40, eval_episodes=1,
        checkpoint_every=1, batch_size=8, max_episode_steps=10, defer_evaluation=True, eval_at_start=False,
    )  # fmt: skip


def test_pack_keeps_what_resuming_needs_and_the_run_continues_elsewhere(tmp_path):
    run = tmp_path / "here" / "told-run"
    TOLDTrainer(config(steps=80), run, progress=False, log=lambda _: None).run()
    evaluate_snapshots(run, env_steps=[40], log=lambda _: None)  # 80 stays unevaluated

    bundle = pack(run, out_dir=tmp_path / "carried")
    with tarfile.open(bundle) as tar:
        names = sorted(m.name for m in tar.getmembers())
    replay = torch.load(run / "checkpoint.pt", weights_only=True)["replay_file"]
    assert names == sorted([
        "told-run/checkpoint.pt", f"told-run/{replay}", "told-run/train.csv", "told-run/eval-deferred.csv",
        "told-run/snapshots/model-0000080.pt",  # evaluated snapshots and model.pt stay behind
    ])  # fmt: skip

    there = tmp_path / "there"
    restored = unpack(bundle, runs_dir=there)
    assert restored == there / "told-run"
    resumed = TOLDTrainer(config(steps=120), restored, progress=False, log=lambda _: None)
    assert resumed.resumed and resumed.step == 40 and resumed.buffer.num_steps == 40
    resumed.run()
    assert resumed.step == 60
    rows = evaluate_snapshots(restored, log=lambda _: None)
    assert [r["env_step"] for r in rows] == [40, 80, 120]  # 40's result came along in the CSV

    with pytest.raises(FileExistsError, match="env step 120, past the bundle's 80"):
        unpack(bundle, runs_dir=there)
    assert unpack(bundle, runs_dir=there, force=True) == restored
    assert torch.load(restored / "checkpoint.pt", weights_only=True)["step"] == 40


def test_pack_without_a_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path.name} has no checkpoint.pt"):
        pack(tmp_path, out_dir=tmp_path / "carried")


def test_only_planet_runs_can_drop_their_optimizers(tmp_path):
    run = tmp_path / "told-run"
    TOLDTrainer(config(steps=40), run, progress=False, log=lambda _: None).run()
    message = r"supports PlaNet/Dreamer runs \(trainer 'planet'\); this checkpoint's trainer is None"
    with pytest.raises(ValueError, match=message):
        pack(run, out_dir=tmp_path / "carried", drop_optimizer=True)
