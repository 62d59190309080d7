"""The online PlaNet trainer (with Dreamer behaviour learning) and its training pictures."""

from __future__ import annotations

import csv
import dataclasses
import math
import sys

import numpy as np
import pytest
import torch

from models.actor_control import ActorController, ActorGuidedModel
from models.behavior import ActorCritic
from models.rssm import RSSM, RSSMConfig
from planners import MPCController
from training.pictures import write_model_pictures
from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer
from training.replay import EpisodeReplay

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ELBO_PARTS = ("loss", "reconstruction", "reward", "kl", "kl_value", "grad_norm")


def quick_config(**overrides) -> PlaNetTrainConfig:
    """cartpole (action repeat 8): episodes of 10 agent steps = 80 env steps; 2 seed
    episodes, then 5 updates per episode; tiny model and a 20 x 2 CEM."""
    settings: dict = {
        "task": "cartpole-swingup", "steps": 320, "obs": "state", "model": "tiny", "seed_episodes": 2,
        "collect_interval": 5, "batch_size": 8, "chunk_length": 8, "plan_samples": 20, "plan_iterations": 2,
        "eval_every": 160, "eval_episodes": 2, "checkpoint_every": 1, "picture_every": 0, "max_episode_steps": 10,
    }  # fmt: skip
    settings.update(overrides)
    return PlaNetTrainConfig(**settings)


def quiet(config: PlaNetTrainConfig, path, **kwargs) -> PlaNetTrainer:
    return PlaNetTrainer(config, path, progress=False, log=kwargs.pop("log", lambda _: None), **kwargs)


def read_csv(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_short_state_run_writes_checkpoints_logs_and_a_loadable_model(tmp_path):
    trainer = quiet(quick_config(), tmp_path)
    assert trainer.action_repeat == 8  # PlaNet's table, not the envs' default of 2
    rows = trainer.run()
    assert trainer.step == 40 and trainer.episode == 4 and trainer.updates == 10
    assert [r["env_step"] for r in rows] == [0, 160, 320]
    train = read_csv(tmp_path / "train.csv")
    assert [int(r["episode"]) for r in train] == [1, 2, 3, 4]
    assert [r["random"] for r in train] == ["1", "1", "0", "0"]
    assert all(train[0][k] == "" for k in ELBO_PARTS)  # no updates before the seed episodes end
    for row in train[2:]:
        assert all(math.isfinite(float(row[k])) for k in ELBO_PARTS)
        assert float(row["kl"]) >= 3.0  # free nats
    model = RSSM.load(tmp_path / "model.pt", obs_shape=(5,), action_dim=1)
    assert model.config == RSSMConfig.tiny("state", (5,), 1)
    assert torch.equal(model.state_dict()["gru.weight_hh"], trainer.model.state_dict()["gru.weight_hh"])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 40 and state["updates"] == 10 and (tmp_path / state["replay_file"]).is_file()
    assert len(list(tmp_path.glob("replay-e*.npz"))) == 1
    assert not (tmp_path / "behavior.pt").exists()  # planner mode trains no actor


def test_batches_follow_the_rssm_convention_and_the_elbo_falls_on_a_fixed_buffer(tmp_path):
    trainer = quiet(quick_config(batch_size=16), tmp_path)
    # A synthetic episode: obs_i = i, action taken at obs_i = i / 100, reward after it = i.
    real_buffer = trainer.buffer
    trainer.buffer = EpisodeReplay(64, (5,), 1, seed=0)
    t = 20
    trainer.buffer.add_episode(
        np.repeat(np.arange(t + 1, dtype=np.float32)[:, None], 5, axis=1),
        np.arange(t, dtype=np.float32)[:, None] / 100, np.arange(t, dtype=np.float32),
    )  # fmt: skip
    batch = trainer.sample_batch()
    assert batch["obs"].shape == (16, 8, 5) and batch["actions"].shape == (16, 8, 1)
    # actions[:, t] led to obs[:, t] and rewards[:, t] came with it.
    assert torch.allclose(batch["obs"][..., 0] - 1, batch["actions"][..., 0] * 100)
    assert torch.allclose(batch["rewards"], batch["actions"][..., 0] * 100)

    trainer.buffer = real_buffer
    for _ in range(3):
        trainer.collect_episode(random_actions=True)
    assert trainer.buffer.num_episodes == 3 and trainer.buffer.num_steps == 30
    metrics = [trainer.update() for _ in range(250)]  # PlaNet's lr 1e-3 on 30 transitions

    def mean(key: str, part: slice) -> float:
        return float(np.mean([m[key] for m in metrics[part]]))

    assert np.isfinite([m["loss"] for m in metrics]).all()
    # The KL term sits at its 3 free nats throughout; the likelihood terms carry the fall.
    assert mean("loss", slice(-20, None)) < mean("loss", slice(0, 20)) - 0.5
    assert mean("reconstruction", slice(-20, None)) < 0.4 * mean("reconstruction", slice(0, 20))


def test_resume_after_a_kill_continues_exactly(tmp_path, monkeypatch):
    # planner+actor: the RSSM, its optimiser and the actor-critic with its optimisers all resume.
    config = quick_config(mode="planner+actor")
    quiet(config, tmp_path / "straight").run()

    calls = {"n": 0}
    original = PlaNetTrainer.update

    def dying_update(self):
        calls["n"] += 1
        if calls["n"] == 7:  # in the second interval of updates, after episode 3
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(PlaNetTrainer, "update", dying_update)
    run = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        quiet(config, run).run()
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["episode"] == 3 and saved["step"] == 30 and saved["updates"] == 5

    monkeypatch.setattr(PlaNetTrainer, "update", original)
    messages: list[str] = []
    resumed = quiet(config, run, log=messages.append)
    assert resumed.resumed and resumed.step == 30 and resumed.episode == 3 and resumed.updates == 5
    assert resumed.buffer.num_episodes == 3 and resumed.buffer.num_steps == 30
    assert any("resumed" in m for m in messages)
    rows = resumed.run()
    assert resumed.step == 40 and resumed.episode == 4 and resumed.updates == 10
    assert [r["env_step"] for r in rows] == [0, 160, 320]  # no evaluation repeated or lost
    assert [int(r["episode"]) for r in read_csv(run / "train.csv")] == [1, 2, 3, 4]
    # Optimisers, buffer and random generators were restored: the same model as without the kill.
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    a = torch.load(run / "behavior.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "straight" / "behavior.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert read_csv(run / "train.csv")[-1]["episode_return"] == read_csv(tmp_path / "straight" / "train.csv")[-1]["episode_return"]


@pytest.mark.parametrize("mode", ["planner", "actor", "planner+actor"])
def test_every_acting_mode_runs(tmp_path, mode):
    config = quick_config(mode=mode, steps=160, seed_episodes=1, collect_interval=3, eval_at_start=False, eval_episodes=1)
    trainer = quiet(config, tmp_path)
    actor_before = None if trainer.behavior is None else [p.clone() for p in trainer.behavior.actor.parameters()]
    rows = trainer.run()
    assert trainer.episode == 2 and trainer.updates == 3 and [r["env_step"] for r in rows] == [160]
    assert math.isfinite(rows[0]["mean_return"])
    train = read_csv(tmp_path / "train.csv")
    if mode == "actor":
        assert isinstance(trainer.controller, ActorController) and not trainer.controller.deterministic
        assert isinstance(trainer.eval_controller, ActorController) and trainer.eval_controller.deterministic
    else:
        assert isinstance(trainer.controller, MPCController)
        assert trainer.controller.last_result is not None
        guided = mode == "planner+actor"
        assert isinstance(trainer.controller.model, ActorGuidedModel) == guided
        assert trainer.controller.num_proposals == (config.proposals() if guided else 0)
    if mode == "planner":
        assert trainer.behavior is None and "actor_loss" not in train[-1]
        return
    assert math.isfinite(float(train[-1]["actor_loss"])) and math.isfinite(float(train[-1]["critic_loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, trainer.behavior.actor.parameters()))
    ac = ActorCritic.load(tmp_path / "behavior.pt", feature_size=trainer.model.config.feature_size, action_dim=1)
    assert all(torch.equal(a, b) for a, b in zip(ac.actor.parameters(), trainer.behavior.actor.parameters()))


@pytest.mark.parametrize("mode", ["planner", "actor"])
def test_the_filter_sees_the_executed_noisy_action(tmp_path, monkeypatch, mode):
    trainer = quiet(quick_config(mode=mode, seed_episodes=1), tmp_path)
    seen: list[torch.Tensor | None] = []
    original = RSSM.observe

    def recording_observe(self, z_prev, action_prev, obs):
        seen.append(None if z_prev is None else action_prev.detach().cpu().clone())
        return original(self, z_prev, action_prev, obs)

    monkeypatch.setattr(RSSM, "observe", recording_observe)
    trainer.collect_episode(random_actions=False)
    stored = trainer.buffer.sample(1, 10)["action"][:, 0]  # the only episode: [10, A]
    assert len(seen) == 10 and seen[0] is None
    executed = torch.as_tensor(stored[:-1])
    assert torch.allclose(torch.cat(seen[1:]), executed)  # with noise, not the planner's choice
    assert trainer.config.exploration_noise > 0 and (np.abs(stored) <= 1).all()


def test_a_pixel_run_writes_pictures(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    config = quick_config(
        obs="pixels", steps=128, max_episode_steps=8, seed_episodes=1, collect_interval=2, batch_size=4,
        eval_every=10_000, eval_at_start=False, eval_episodes=1, picture_every=1,
    )  # fmt: skip
    trainer = quiet(config, tmp_path)
    trainer.run()
    assert trainer.updates == 2
    model = RSSM.load(tmp_path / "model.pt", obs_shape=(3, 64, 64))
    assert model.config.obs_type == "pixels"
    for name in ("openloop", "recon"):
        files = sorted((tmp_path / "pictures").glob(f"{name}-*.png"))
        assert [f.name for f in files] == [f"{name}-00000064.png"]
        image = imageio.imread(files[0])
        # 4 sequences x (real, model) rows of 8 frames of 64 px, 2 px gaps.
        assert image.shape == (8 * 66 - 2, 8 * 66 - 2, 3)
    assert not list((tmp_path / "pictures").glob(".*"))  # no temporary files left


def test_state_pictures_and_the_missing_library_note(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.tiny("state", (5,), 1))
    batch = {"obs": torch.randn(2, 8, 5), "actions": torch.rand(2, 8, 1) * 2 - 1}
    assert [p.name for p in write_model_pictures(tmp_path, model, batch, tag="7", log=lambda _: None)] == ["states-7.png"]
    assert (tmp_path / "states-7.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pixels = RSSM(RSSMConfig.tiny("pixels", (3, 64, 64), 1))
    frames = {"obs": torch.randint(0, 255, (2, 6, 3, 64, 64), dtype=torch.uint8), "actions": torch.zeros(2, 6, 1)}
    monkeypatch.setitem(sys.modules, "imageio", None)  # matplotlib writes the images then
    monkeypatch.setitem(sys.modules, "imageio.v2", None)
    assert len(write_model_pictures(tmp_path / "mpl", pixels, frames, tag="1", log=lambda _: None)) == 2
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.image", None)
    notes: list[str] = []
    assert write_model_pictures(tmp_path / "none", model, batch, tag="1", log=notes.append) == []
    assert write_model_pictures(tmp_path / "none", pixels, frames, tag="1", log=notes.append) == []
    assert len(notes) == 2 and "matplotlib" in notes[0] and "imageio" in notes[1]
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "dreamer"}, r"mode='dreamer' is not one of \('planner', 'actor', 'planner\+actor'\)"),
        ({"model": "huge"}, r"model='huge' is not one of \('planet', 'dreamerv2', 'dreamerv3', 'tiny'\)"),
        ({"obs": "rgb"}, r"obs='rgb'"),
        ({"collect_interval": 0}, r"collect_interval=0 must be an int >= 1"),
        ({"exploration_noise": -0.1}, r"exploration_noise=-0.1"),
        ({"lr": float("nan")}, r"lr=nan"),
        ({"plan_samples": 20, "plan_elites": 30}, r"plan_elites=30 exceeds plan_samples=20"),
        ({"mode": "planner+actor", "plan_samples": 20, "num_proposals": 20}, r"num_proposals=20 must be below plan_samples=20"),
        ({"precision": "float16"}, r"precision='float16' is not one of \('float32', 'bfloat16'\)"),
        ({"imagine_starts": 0}, r"imagine_starts=0 must be an int >= 1"),
        ({"behavior": "dreamerv4"}, r"behavior='dreamerv4' is not one of \('dreamerv1', 'dreamerv3'\)"),
        ({"free_nats": -1.0}, r"free_nats=-1.0 must be None or a finite number >= 0"),
        ({"mode": "actor", "plan_value": True}, r"plan_value=True needs mode='planner\+actor'.*not 'actor'"),
    ],
)
def test_config_errors_name_the_bad_value(overrides, message):
    with pytest.raises(ValueError, match=message):
        quick_config(**overrides)


def test_trainer_errors_name_the_bad_value(tmp_path):
    with pytest.raises(ValueError, match="chunk_length=50 is longer than the episodes \\(10 agent steps\\)"):
        quiet(quick_config(chunk_length=50), tmp_path)
    with pytest.raises(ValueError, match="cartpole-swingupp"):
        quiet(quick_config(task="cartpole-swingupp"), tmp_path)


def test_resuming_with_another_task_names_both(tmp_path):
    quiet(quick_config(steps=80, eval_at_start=False, eval_episodes=1), tmp_path).run()
    with pytest.raises(ValueError, match=r"task='cartpole-swingup' \(checkpoint\) vs 'cartpole-balance' \(this run\)"):
        quiet(quick_config(task="cartpole-balance"), tmp_path)
    with pytest.raises(ValueError, match=r"mode='planner' \(checkpoint\) vs 'actor'"):
        quiet(quick_config(mode="actor"), tmp_path)
    with pytest.raises(ValueError, match=r"precision='float32' \(checkpoint\) vs 'bfloat16'"):
        quiet(quick_config(precision="bfloat16"), tmp_path)


def test_the_budget_settings_reach_the_learner_and_the_planner(tmp_path):
    config = quick_config(mode="planner+actor", precision="bfloat16", imagine_starts=16, steps=160, seed_episodes=1,
                          collect_interval=2, eval_at_start=False, eval_episodes=1)  # fmt: skip
    trainer = quiet(config, tmp_path)
    assert trainer.behavior.config.precision == "bfloat16" and trainer.behavior.config.imagine_starts == 16
    assert trainer.controller.precision == "bfloat16" and trainer.eval_controller.precision == "bfloat16"
    rows = trainer.run()
    assert math.isfinite(rows[-1]["mean_return"])
    assert math.isfinite(float(read_csv(tmp_path / "train.csv")[-1]["actor_loss"]))


def test_plan_value_ends_every_candidate_with_the_critics_discounted_value(tmp_path, monkeypatch):
    config = quick_config(mode="planner+actor", plan_value=True, behavior="dreamerv3", free_nats=1.0)
    trainer = quiet(config, tmp_path)
    gamma, horizon = trainer.behavior.config.gamma, config.plan_horizon
    assert gamma == 0.997 and trainer.model.config.free_nats == 1.0
    assert trainer.controller.use_value and trainer.controller.discount == gamma
    assert isinstance(trainer.controller.model, ActorGuidedModel) and hasattr(trainer.controller.model, "value")
    obs, _ = trainer.env.reset(seed=0)

    def best_return_with_value(value: float) -> float:
        monkeypatch.setattr(trainer.behavior.critic, "forward", lambda feature: torch.full(feature.shape[:-1], value))
        torch.manual_seed(0)
        trainer.eval_controller.reset()
        trainer.eval_controller.act(obs)
        return float(trainer.eval_controller.last_result.best_return)

    # Same seed, same candidates: only the terminal value differs, gamma^H x the value.
    difference = best_return_with_value(1000.0) - best_return_with_value(0.0)
    assert difference == pytest.approx(gamma**horizon * 1000.0, rel=1e-4)


def test_without_plan_value_the_critic_does_not_reach_the_plan(tmp_path, monkeypatch):
    trainer = quiet(quick_config(mode="planner+actor"), tmp_path)
    assert not trainer.controller.use_value and trainer.controller.discount == 1.0  # PlaNet's objective
    assert not hasattr(trainer.controller.model, "value")


def test_resuming_with_other_behaviour_settings_names_them(tmp_path):
    quiet(quick_config(mode="planner+actor", steps=80, eval_at_start=False, eval_episodes=1), tmp_path).run()
    with pytest.raises(ValueError, match=r"behavior='dreamerv1' \(checkpoint\) vs 'dreamerv3'"):
        quiet(quick_config(mode="planner+actor", behavior="dreamerv3"), tmp_path)
    with pytest.raises(ValueError, match=r"plan_value=False \(checkpoint\) vs True"):
        quiet(quick_config(mode="planner+actor", plan_value=True), tmp_path)
    with pytest.raises(ValueError, match=r"free_nats=3.0 \(checkpoint\) vs 1.0"):
        quiet(quick_config(mode="planner+actor", free_nats=1.0), tmp_path)
    assert quiet(quick_config(mode="planner+actor", free_nats=3.0), tmp_path).resumed  # the preset's own value


def test_a_run_resumes_with_the_actor_critic_settings_it_was_trained_with(tmp_path):
    """A preset may change between versions while the weights keep their shapes (the
    dreamerv3 actor did): a checkpoint made before must resume with its own settings."""
    config = quick_config(mode="planner+actor", behavior="dreamerv3", steps=160, eval_at_start=False, eval_episodes=1)
    quiet(config, tmp_path).run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    old = {"actor_dist": "tanh_normal", "dynamics_baseline": False, "bootstrap": "slow"}
    state["behavior"]["config"].update(old)  # as written before these settings existed
    torch.save(state, tmp_path / "checkpoint.pt")
    messages: list[str] = []
    resumed = quiet(dataclasses.replace(config, steps=240), tmp_path, log=messages.append)
    assert resumed.resumed
    assert {k: getattr(resumed.behavior.config, k) for k in old} == old
    assert any("actor_dist" in m and "preset now differs" in m for m in messages)
    # Both controllers act with the resumed actor-critic, not the preset's.
    for controller in (resumed.controller, resumed.eval_controller):
        assert controller.model.actor is resumed.behavior.actor  # the ActorGuidedModel's
    resumed.run()
    saved = torch.load(tmp_path / "behavior.pt", weights_only=True)["config"]
    assert {k: saved[k] for k in old} == old


@pytest.mark.parametrize("mode", ["planner", "actor", "planner+actor"])
def test_an_evaluation_depends_on_the_weights_and_the_seed_alone(tmp_path, mode):
    # Without seeded sampling the filter's latents and the planner's candidates come from
    # torch's global generator, and these two evaluations would differ.
    trainer = quiet(quick_config(mode=mode), tmp_path)
    torch.manual_seed(1)
    first = trainer.evaluate(2, seed=trainer.evaluation_seed(160))
    torch.manual_seed(2)
    torch.rand(100)
    again = trainer.evaluate(2, seed=trainer.evaluation_seed(160))
    assert first == again
    assert trainer.model.generator is None
    if trainer.behavior is not None:
        assert trainer.behavior.actor.generator is None
