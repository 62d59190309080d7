"""The online TD-MPC2 trainer: checkpoints, resumption after a kill, pixels, command line."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import run_planning
from models.told import load_told
from training.told_agent import TOLDAgent
from training.told_trainer import TOLDTrainConfig, TOLDTrainer, evaluate_snapshots

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def quick_config(**overrides) -> TOLDTrainConfig:
    """Episodes of 10 agent steps (20 env steps), tiny model, small batches."""
    settings = dict(
        task="cartpole-swingup", steps=80, size="tiny", seed_steps=10, eval_every=40, eval_episodes=2,
        checkpoint_every=1, batch_size=8, max_episode_steps=10,
    )  # fmt: skip
    settings.update(overrides)
    return TOLDTrainConfig(**settings)


def test_a_short_run_writes_checkpoints_logs_and_a_loadable_model(tmp_path):
    trainer = TOLDTrainer(quick_config(), tmp_path, progress=False, log=lambda _: None)
    rows = trainer.run()
    assert trainer.step == 40 and trainer.episode == 4
    assert [r["env_step"] for r in rows] == [0, 40, 80]
    assert trainer.updates == 10 + 30  # the seed phase's 10 updates after its episode, then one per step
    with (tmp_path / "train.csv").open() as f:
        train = list(csv.DictReader(f))
    assert len(train) == 4 and train[-1]["value_loss"] != ""
    model = load_told(tmp_path / "model.pt", task="cartpole-swingup", obs_shape=(5,), action_dim=1)
    assert model.config.size == "tiny"
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 40 and (tmp_path / state["replay_file"]).is_file()
    assert len(list(tmp_path.glob("replay-e*.npz"))) == 1  # older buffers are removed


def test_resume_after_a_kill_continues_the_step_count_and_buffer(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = TOLDAgent.update

    def dying_update(self, batch):
        calls["n"] += 1
        if calls["n"] == 25:  # in the middle of the third episode
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(TOLDAgent, "update", dying_update)
    with pytest.raises(KeyboardInterrupt):
        TOLDTrainer(quick_config(), tmp_path, progress=False, log=lambda _: None).run()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["episode"] == 2 and saved["step"] == 20

    monkeypatch.setattr(TOLDAgent, "update", original)
    messages: list[str] = []
    resumed = TOLDTrainer(quick_config(), tmp_path, progress=False, log=messages.append)
    assert resumed.resumed and resumed.step == 20 and resumed.episode == 2
    assert resumed.buffer.num_episodes == 2 and resumed.buffer.num_steps == 20
    assert resumed.updates == saved["updates"]
    assert any("resumed" in m for m in messages)
    rows = resumed.run()
    assert resumed.step == 40 and resumed.episode == 4
    assert [r["env_step"] for r in rows] == [0, 40, 80]  # no evaluation repeated or lost
    with (tmp_path / "train.csv").open() as f:
        assert [int(r["episode"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]


def test_evaluation_at_start_is_optional(tmp_path):
    trainer = TOLDTrainer(quick_config(steps=80, eval_at_start=False), tmp_path, progress=False, log=lambda _: None)
    assert [r["env_step"] for r in trainer.run()] == [40, 80]


def test_resuming_with_other_settings_names_the_difference(tmp_path):
    TOLDTrainer(quick_config(steps=20, eval_every=1000), tmp_path, progress=False, log=lambda _: None).run()
    with pytest.raises(ValueError, match=r"task='cartpole-swingup' \(checkpoint\) vs 'cartpole-balance' \(this run\)"):
        TOLDTrainer(quick_config(task="cartpole-balance"), tmp_path, progress=False, log=lambda _: None)


def test_pixel_encoder_runs_end_to_end(tmp_path):
    config = quick_config(obs="pixels", steps=40, eval_every=1000, eval_episodes=1, max_episode_steps=5, seed_steps=5)
    trainer = TOLDTrainer(config, tmp_path, progress=False, log=lambda _: None)
    trainer.run()
    assert trainer.updates > 0
    model = load_told(tmp_path / "model.pt", obs_shape=(9, 64, 64))
    assert model.config.obs_type == "pixels"
    obs = torch.randint(0, 255, (2, 9, 64, 64), dtype=torch.uint8)
    z = model.encode(obs)
    assert z.shape == (2, model.config.latent_dim)
    assert torch.allclose(z.view(2, -1, 8).sum(-1), torch.ones(2, model.config.latent_dim // 8), atol=1e-5)
    model.train()  # the random-shift augmentation keeps shapes and changes the input
    assert model.encoder.random_shift(obs.float()).shape == obs.shape


def test_cli_trains_then_plans_with_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_planning.main([
        "train", "--model", "told", "--size", "tiny", "--steps", "40", "--max-episode-steps", "10",
        "--seed-steps", "10", "--eval-every", "1000", "--eval-episodes", "1", "--batch-size", "8",
        "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    for planner in ("mppi", "cem"):
        code = run_planning.main([
            "--model", "told", "--checkpoint", str(out / "model.pt"), "--planner", planner, "--samples", "32",
            "--max-steps", "3", "--out", str(tmp_path / planner), "--no-progress",
        ])  # fmt: skip
        assert code == 0
    printed = capsys.readouterr().out
    assert "model told (tiny, state)" in printed and "mean return" in printed


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert run_planning.main(["train", "--model", "oracle", "--out", str(tmp_path)]) == 2
    assert "cannot train model 'oracle'" in capsys.readouterr().err
    assert run_planning.main(["train", "--task", "cartpole-swingupp", "--out", str(tmp_path)]) == 2
    assert "unknown task 'cartpole-swingupp'" in capsys.readouterr().err
    assert run_planning.main(["--model", "told", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_evaluation_seeds_are_reproducible(tmp_path):
    import envs
    from training.told_trainer import evaluate_batched

    trainer = TOLDTrainer(quick_config(steps=20, eval_every=1000), tmp_path, progress=False, log=lambda _: None)

    def returns() -> list[float]:
        trainer.agent.controller.generator.manual_seed(0)
        trainer.agent.model.generator = torch.Generator().manual_seed(0)
        return evaluate_batched(trainer.agent, lambda: envs.make("cartpole-swingup"), 2, seed=5, max_steps=5)

    first, second = returns(), returns()
    assert first == second and len(first) == 2 and np.isfinite(first).all()


def test_deferred_evaluation_saves_the_models_and_evaluates_them_later(tmp_path):
    trainer = TOLDTrainer(quick_config(defer_evaluation=True), tmp_path, progress=False, log=lambda _: None)
    assert trainer.run() == []  # nothing evaluated inline
    assert not (tmp_path / "eval.csv").exists()
    names = sorted(p.name for p in (tmp_path / "snapshots").glob("*.pt"))
    assert names == ["model-0000000.pt", "model-0000040.pt", "model-0000080.pt"]
    at_40 = torch.load(tmp_path / "snapshots" / "model-0000040.pt", weights_only=True)
    at_80 = torch.load(tmp_path / "snapshots" / "model-0000080.pt", weights_only=True)
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    assert at_40["train_steps"] == 40 and at_80["train_steps"] == 80
    key = next(k for k in final["state_dict"] if k.startswith("dynamics"))
    assert torch.equal(at_80["state_dict"][key], final["state_dict"][key])
    assert not torch.equal(at_40["state_dict"][key], final["state_dict"][key])  # trained in between

    messages: list[str] = []
    with pytest.raises(ValueError, match=r"env step\(s\) \[50\].*saved: \[0, 40, 80\]"):
        evaluate_snapshots(tmp_path, env_steps=[80, 50])
    last_first = evaluate_snapshots(tmp_path, log=messages.append, env_steps=[80])  # e.g. the final model first
    assert [r["env_step"] for r in last_first] == [80] and len(messages) == 1
    rows = evaluate_snapshots(tmp_path, log=messages.append)  # the others; 80 is not evaluated again
    assert [r["env_step"] for r in rows] == [0, 40, 80] and len(messages) == 3
    assert all(len(str(r["returns"]).split()) == 2 for r in rows)  # eval_episodes=2
    again = evaluate_snapshots(tmp_path, log=messages.append)  # nothing left to evaluate
    assert len(messages) == 3 and [r["mean_return"] for r in again] == [r["mean_return"] for r in rows]
    reduced = evaluate_snapshots(tmp_path, precision="bfloat16", log=messages.append)  # beside, not instead
    assert [r["precision"] for r in reduced] == ["bfloat16"] * 3 and (tmp_path / "eval-deferred-bfloat16.csv").is_file()
    assert [r["precision"] for r in evaluate_snapshots(tmp_path, log=messages.append)] == ["float32"] * 3


def test_deferred_evaluation_of_a_missing_run_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt is missing"):
        evaluate_snapshots(tmp_path / "nothing")
