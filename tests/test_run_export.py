"""A run's acting files from its training checkpoint (training/run_export.py)."""

from __future__ import annotations

import json

import pytest
import torch

from models.behavior import ActorCritic
from models.rssm import RSSM
from models.told import load_told
from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer
from training.run_export import env_steps, read_training_checkpoint, ship_rssm_run, write_acting_files
from training.told_trainer import TOLDTrainConfig, TOLDTrainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def rssm_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "rssm-run"
    config = PlaNetTrainConfig(task="cartpole-swingup", steps=160, obs="state", model="tiny", mode="planner+actor",
                               seed_episodes=1, collect_interval=2, batch_size=4, chunk_length=8, plan_samples=20,
                               plan_iterations=1, eval_at_start=False, eval_episodes=1, picture_every=0,
                               max_episode_steps=10)  # fmt: skip
    trainer = PlaNetTrainer(config, run, device="cpu", progress=False, log=lambda _: None)
    trainer.run()
    return run, trainer


def test_the_acting_files_of_an_rssm_run_come_back_from_its_checkpoint(rssm_run, tmp_path):
    run, trainer = rssm_run
    state = read_training_checkpoint(run, model="rssm")
    assert env_steps(state) == 160
    written = write_acting_files(state, tmp_path / "copy")
    assert [w.name for w in written] == ["model.pt", "behavior.pt"]
    model, ac = RSSM.load(written[0]), ActorCritic.load(written[1])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trainer.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ac.actor.parameters(), trainer.behavior.actor.parameters()))
    assert "optimizers" not in torch.load(written[1], weights_only=True)
    with pytest.raises(ValueError, match="is a rssm training checkpoint, not a told one"):
        read_training_checkpoint(run, model="told")
    with pytest.raises(FileNotFoundError, match="has no checkpoint.pt"):
        read_training_checkpoint(tmp_path / "nothing")


def test_a_shipped_rssm_run_carries_its_settings_and_no_machine_history(rssm_run, tmp_path):
    run, trainer = rssm_run
    written = ship_rssm_run(run, tmp_path / "checkpoints", command="ship it")
    assert [w.relative_to(tmp_path).as_posix() for w in written] == [
        "checkpoints/rssm-cartpole-swingup/model.pt", "checkpoints/rssm-cartpole-swingup/behavior.pt",
        "checkpoints/rssm-cartpole-swingup/train_config.json"]  # fmt: skip
    info = json.loads(written[-1].read_text())
    assert info["train_config"]["mode"] == "planner+actor" and info["env_steps"] == 160
    assert info["shipped_from"] == "rssm-run" and info["command"] == "ship it" and "trained_on" not in info


def test_the_earlier_rssm_layout_and_a_told_run_are_read(rssm_run, tmp_path):
    run, _ = rssm_run
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("format_version", "model", "kind", "model_state")}
    (tmp_path / "old").mkdir()
    torch.save({**old, "version": 1, "model": state["model_state"]}, tmp_path / "old" / "checkpoint.pt")
    assert read_training_checkpoint(tmp_path / "old")["model_state"]["model"] == "rssm"

    config = TOLDTrainConfig(task="cartpole-swingup", steps=20, size="tiny", seed_steps=10, eval_every=1000,
                             eval_episodes=1, batch_size=8, max_episode_steps=10)  # fmt: skip
    TOLDTrainer(config, tmp_path / "told", device="cpu", progress=False, log=lambda _: None).run()
    written = write_acting_files(read_training_checkpoint(tmp_path / "told", model="told"), tmp_path / "told-copy")
    model = load_told(written[0], task="cartpole-swingup")
    assert model.config.size == "tiny"
