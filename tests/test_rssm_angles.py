"""The RSSM reading joint angles as (sin, cos) (`RSSMConfig.angle_dims`), and its runs."""

from __future__ import annotations

import math

import pytest
import torch

from models.rssm import RSSM, RSSMConfig
from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REACHER_OBS = (6,)  # position (2 joint angles), to_target (2), velocity (2)


def test_the_model_reads_and_reconstructs_sin_cos_of_its_angles():
    model = RSSM(RSSMConfig.dreamerv3("state", REACHER_OBS, 2, angle_dims=(0, 1)))
    assert model.config.input_size == 8
    obs = torch.tensor([[0.3, -2.0, 0.1, 0.2, 5.0, -6.0]])
    expected = torch.tensor([[0.1, 0.2, 5.0, -6.0, math.sin(0.3), math.sin(-2.0), math.cos(0.3), math.cos(-2.0)]])
    torch.testing.assert_close(model.preprocess(obs), torch.sign(expected) * torch.log1p(expected.abs()))  # symlog
    assert model.encoder[0][0].in_features == 8 and model.decode(torch.zeros(1, model.config.feature_size)).shape == (1, 8)


def test_a_pose_reached_after_whole_turns_is_one_input():
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.tiny("state", REACHER_OBS, 2, angle_dims=(0, 1))).eval()
    model.plan_with_samples = False
    obs = torch.randn(3, 6)
    wound = obs.clone()
    wound[:, 0] += 2 * (2 * math.pi)  # two more turns of the shoulder
    wound[:, 1] -= 2 * math.pi
    torch.testing.assert_close(model.encode(wound), model.encode(obs), atol=1e-5, rtol=0)
    raw = RSSM(RSSMConfig.tiny("state", REACHER_OBS, 2)).eval()
    raw.plan_with_samples = False
    assert not torch.allclose(raw.encode(wound), raw.encode(obs), atol=1e-3)


def test_without_angles_the_model_and_its_checkpoints_are_unchanged():
    """No angle entries (cartpole observes cos and sin already) is the model as before:
    the same parameter names and shapes, the same losses from the same weights, and a
    checkpoint whose header predates `angle_dims` loads."""
    config = RSSMConfig.dreamerv3("state", (5,), 1)
    assert config.angle_dims == () and config.input_size == 5
    torch.manual_seed(0)
    model = RSSM(config)
    names = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert names["encoder.0.0.weight"][1] == 5 and not any("angle" in k for k in names)
    ckpt = model.checkpoint()
    del ckpt["config"]["angle_dims"]  # a file saved before the setting existed
    loaded = RSSM.from_checkpoint(ckpt)
    assert loaded.config == config
    batch = {"obs": torch.randn(2, 6, 5), "actions": torch.rand(2, 6, 1) * 2 - 1, "rewards": torch.rand(2, 6)}
    torch.manual_seed(1)
    a = model.loss(batch)
    torch.manual_seed(1)
    b = loaded.loss(batch)
    assert torch.equal(a.loss, b.loss)
    torch.testing.assert_close(model.preprocess(batch["obs"]), torch.sign(batch["obs"]) * torch.log1p(batch["obs"].abs()))


def test_angle_settings_are_checked_and_part_of_the_architecture():
    with pytest.raises(ValueError, match=r"angle_dims=\(0, 6\) must be distinct state indices in \[0, 6\)"):
        RSSMConfig.tiny("state", REACHER_OBS, 2, angle_dims=(0, 6))
    with pytest.raises(ValueError, match="obs_type='state' only"):
        RSSMConfig.tiny("pixels", (3, 64, 64), 2, angle_dims=(0,))
    sincos = RSSM(RSSMConfig.tiny("state", REACHER_OBS, 2, angle_dims=(0, 1)))
    with pytest.raises(ValueError, match="angle_dims"):
        RSSM(RSSMConfig.tiny("state", REACHER_OBS, 2)).load_checkpoint(sincos.checkpoint())


def reacher_config(**overrides) -> PlaNetTrainConfig:
    """reacher (action repeat 4): episodes of 10 agent steps = 40 env steps; tiny model."""
    settings: dict = {
        "task": "reacher-easy", "steps": 80, "obs": "state", "model": "tiny", "seed_episodes": 1,
        "collect_interval": 2, "batch_size": 4, "chunk_length": 4, "plan_samples": 10, "plan_iterations": 1,
        "eval_every": 10_000, "eval_at_start": False, "checkpoint_every": 1, "picture_every": 0,
        "max_episode_steps": 10,
    }  # fmt: skip
    settings.update(overrides)
    return PlaNetTrainConfig(**settings)


def quiet(config: PlaNetTrainConfig, path) -> PlaNetTrainer:
    return PlaNetTrainer(config, path, progress=False, log=lambda _: None)


def test_reacher_runs_read_sin_cos_and_resume_only_alike(tmp_path):
    run = quiet(reacher_config(), tmp_path / "new")
    assert run.model.config.angle_dims == (0, 1)
    run.run()
    again = quiet(reacher_config(steps=120), tmp_path / "new")
    assert again.resumed and again.step == 20
    with pytest.raises(ValueError, match=r"reads state entries \[0, 1\] as \(sin, cos\).*without --raw-angles"):
        quiet(reacher_config(raw_angles=True, steps=120), tmp_path / "new")
    raw = quiet(reacher_config(raw_angles=True), tmp_path / "raw")
    assert raw.model.config.angle_dims == ()
    raw.run()
    with pytest.raises(ValueError, match=r"reads the joint angles raw.*resume it with --raw-angles"):
        quiet(reacher_config(steps=120), tmp_path / "raw")
    assert quiet(reacher_config(obs="pixels"), tmp_path / "pixels").model.config.angle_dims == ()


def test_a_run_saved_before_angle_features_resumes_with_raw_angles(tmp_path):
    quiet(reacher_config(raw_angles=True), tmp_path).run()
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["train_config"]["raw_angles"]
    del state["model_state"]["config"]["angle_dims"]
    torch.save(state, path)
    with pytest.raises(ValueError, match="resume it with --raw-angles"):
        quiet(reacher_config(steps=120), tmp_path)
    resumed = quiet(reacher_config(raw_angles=True, steps=120), tmp_path)
    assert resumed.resumed and resumed.step == 20


def test_the_command_line_takes_raw_angles(tmp_path):
    from training.planet_trainer import make_trainer

    kwargs = dict(task="reacher-easy", steps=80, obs="state", seed=0, device="cpu", progress=False)
    assert make_trainer(**kwargs, out=str(tmp_path / "a"), options={"preset": "tiny"}).model.config.angle_dims == (0, 1)
    raw = make_trainer(**kwargs, out=str(tmp_path / "b"), options={"preset": "tiny", "raw_angles": True})
    assert raw.model.config.angle_dims == ()
    with pytest.raises(ValueError, match="raw_angles='yes' must be True or False"):
        make_trainer(**kwargs, out=str(tmp_path / "c"), options={"raw_angles": "yes"})
