"""TOLD (TD-MPC2's world model), its learning rule, replay buffer and online trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.told import TOLD, TOLDConfig, heuristic_discount, load_told, soft_cross_entropy, two_hot, two_hot_inverse
from planners import MPPI, MPCController
from training.replay import EpisodeReplay
from training.told_agent import TOLDAgent, TOLDLossConfig


def tiny_model(obs_dim: int = 4, action_dim: int = 2, task: str | None = "toy", seed: int = 0) -> TOLD:
    torch.manual_seed(seed)
    return TOLD(TOLDConfig(obs_shape=(obs_dim,), action_dim=action_dim, size="tiny", task=task))


def linear_system_buffer(episodes: int = 6, length: int = 40, seed: int = 0) -> EpisodeReplay:
    """Episodes of x' = 0.9 x + 0.3 B a with reward -|x|^2: learnable in a few hundred steps."""
    rng = np.random.default_rng(seed)
    b = rng.normal(size=(4, 2)).astype(np.float32)
    buffer = EpisodeReplay(10_000, (4,), 2, seed=seed)
    for _ in range(episodes):
        x = rng.normal(size=4).astype(np.float32)
        obs, actions, rewards = [x], [], []
        for _ in range(length):
            a = rng.uniform(-1, 1, size=2).astype(np.float32)
            rewards.append(-float(x @ x))
            x = (0.9 * x + 0.3 * b @ a).astype(np.float32)
            obs.append(x)
            actions.append(a)
        buffer.add_episode(np.stack(obs), np.stack(actions), np.array(rewards, np.float32))
    return buffer


# -- building blocks -------------------------------------------------------------------------


def test_two_hot_round_trips_through_symlog_space():
    x = torch.tensor([-500.0, -3.2, -0.01, 0.0, 0.5, 7.0, 1234.0])
    encoded = two_hot(x, 101, -10.0, 10.0)
    assert torch.allclose(encoded.sum(-1), torch.ones(len(x)))
    assert int((encoded > 0).sum(-1).max()) <= 2
    # Decoding the encoding (as logits of a distribution) gives x back.
    decoded = two_hot_inverse(torch.log(encoded.clamp_min(1e-30)), -10.0, 10.0)
    assert torch.allclose(decoded, x, rtol=1e-4, atol=1e-4)


def test_two_hot_clamps_beyond_the_support():
    big = torch.tensor([1e6])  # symlog(1e6) = 13.8 > 10
    encoded = two_hot(big, 101, -10.0, 10.0)
    assert encoded[0, -1] == pytest.approx(1.0)


def test_soft_cross_entropy_is_smallest_at_the_target():
    target = torch.tensor([2.5])
    good = torch.log(two_hot(target, 101, -10.0, 10.0).clamp_min(1e-30))
    bad = torch.log(two_hot(torch.tensor([-2.5]), 101, -10.0, 10.0).clamp_min(1e-30))
    assert soft_cross_entropy(good, target, 101, -10, 10) < soft_cross_entropy(bad, target, 101, -10, 10)


def test_simnorm_latent_rows_sum_to_one_per_group():
    model = tiny_model()
    z = model.encode(torch.randn(5, 4))
    groups = z.view(5, -1, model.config.simnorm_group)
    assert torch.allclose(groups.sum(-1), torch.ones(groups.shape[:2]), atol=1e-6)
    z_next = model.next(z, torch.rand(5, 2) * 2 - 1)
    assert torch.allclose(z_next.view(5, -1, 8).sum(-1), torch.ones(5, z.shape[1] // 8), atol=1e-6)


def test_sizes_match_the_published_dimensions():
    one_m = TOLDConfig(obs_shape=(24,), action_dim=6, size="1M")
    five_m = TOLDConfig(obs_shape=(24,), action_dim=6, size="5M")
    assert (one_m.mlp_dim, one_m.latent_dim, one_m.num_q) == (384, 128, 2)
    assert (five_m.mlp_dim, five_m.latent_dim, five_m.num_q) == (512, 512, 5)
    count = sum(p.numel() for p in TOLD(five_m).parameters())
    count_1m = sum(p.numel() for p in TOLD(one_m).parameters())
    assert count > 3 * count_1m  # the 5M model is several times the 1M one


def test_reward_and_q_start_at_zero():
    """TD-MPC2 zero-initialises the reward and Q output layers: early predictions are 0."""
    model = tiny_model()
    z, a = model.encode(torch.randn(3, 4)), torch.zeros(3, 2)
    assert torch.allclose(model.reward(z, a), torch.zeros(3), atol=1e-6)
    assert torch.allclose(model.value(z), torch.zeros(3), atol=1e-6)


def test_policy_actions_are_bounded_and_entropy_finite():
    model = tiny_model()
    z = model.encode(torch.randn(64, 4))
    action, mean, entropy = model.sample_policy(z)
    assert action.abs().max() < 1.0 and mean.abs().max() < 1.0
    assert torch.isfinite(entropy).all()


def test_q_ensemble_dropout_only_in_training():
    model = tiny_model()
    with torch.no_grad():  # the output layer starts at zero, which would hide any dropout
        model.q_heads.weights[-1].normal_()
    z, a = model.encode(torch.randn(8, 4)), torch.randn(8, 2)
    model.eval()
    assert torch.equal(model.q_logits(z, a), model.q_logits(z, a))
    model.train()
    outs = [model.q_logits(z, a) for _ in range(5)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # 1% dropout changes something


def test_target_q_follows_online_q_by_polyak_averaging():
    model = tiny_model()
    with torch.no_grad():
        for p in model.q_heads.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_q_heads.parameters()]
    model.update_target(0.25)
    for old, new, online in zip(before, model.target_q_heads.parameters(), model.q_heads.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online)


def test_heuristic_discount_is_099_on_dmc():
    assert heuristic_discount(500) == pytest.approx(0.99)
    assert heuristic_discount(10) == pytest.approx(0.95)


# -- learning --------------------------------------------------------------------------------


def test_losses_fall_on_a_tiny_fixed_dataset():
    buffer = linear_system_buffer()
    agent = TOLDAgent(tiny_model(), TOLDLossConfig(batch_size=64, lr=3e-3), seed=0)
    first = [agent.update(buffer.sample(64, 3)) for _ in range(5)]
    for _ in range(250):
        agent.update(buffer.sample(64, 3))
    last = [agent.update(buffer.sample(64, 3)) for _ in range(5)]
    for key in ("reward_loss", "value_loss", "total_loss"):
        start, end = np.mean([f[key] for f in first]), np.mean([f[key] for f in last])
        assert end < 0.5 * start, f"{key} went from {start:.4f} to {end:.4f}"
    # The learned reward head predicts the true reward -|x|^2.
    batch = buffer.sample(256, 1)
    model = agent.model
    with torch.no_grad():
        pred = model.reward(model.encode(torch.as_tensor(batch["obs"][0])), torch.as_tensor(batch["action"][0]))
    truth = torch.as_tensor(batch["reward"][0])
    assert (pred - truth).abs().mean() < 0.3 * truth.abs().mean()


def test_update_does_not_touch_the_target_or_policy_with_the_model_optimiser():
    agent = TOLDAgent(tiny_model(), TOLDLossConfig(batch_size=8), seed=0)
    names = {id(p) for group in agent.optimizer.param_groups for p in group["params"]}
    assert all(id(p) not in names for p in agent.model.target_q_heads.parameters())
    assert all(id(p) not in names for p in agent.model.policy_head.parameters())
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(0.3 * agent.optimizer.param_groups[1]["lr"])


# -- planning with the model -----------------------------------------------------------------


def test_told_plugs_into_the_tdmpc2_planner_with_value_and_proposals():
    model = tiny_model().eval()
    ctrl = MPCController(model, MPPI.tdmpc2(2, num_samples=64, num_elites=8, iterations=2), device="cpu", seed=0)
    assert ctrl.num_proposals == 24
    action = ctrl.act(np.zeros(4, np.float32))
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)
    ctrl.reset()  # the batch size is fixed within an episode
    batch = ctrl.act(np.zeros((3, 4), np.float32))
    assert batch.shape == (3, 2)


def test_wrong_observation_size_names_the_expected_one():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"expects \(4,\)"):
        model.encode(torch.zeros(2, 5))


def test_checkpoint_round_trip_reproduces_actions(tmp_path):
    model = tiny_model(seed=3).eval()
    with torch.no_grad():  # make the model non-trivial (zero-initialised heads plan nothing)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "model.pt"
    torch.save(model.checkpoint(), path)
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == "told" and raw["format_version"] == 1
    loaded = load_told(path, task="toy", obs_shape=(4,), action_dim=2)

    def actions(m: TOLD) -> np.ndarray:
        m.generator = torch.Generator().manual_seed(0)
        ctrl = MPCController(m, MPPI.tdmpc2(2, num_samples=64, num_elites=8, iterations=2), device="cpu", seed=1)
        obs = np.linspace(-1, 1, 4, dtype=np.float32)
        return np.stack([ctrl.act(obs + 0.1 * t) for t in range(5)])

    np.testing.assert_array_equal(actions(model), actions(loaded))


def test_checkpoint_for_another_task_or_observation_names_both(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_model(task="cartpole-swingup").checkpoint(), path)
    with pytest.raises(ValueError, match=r"trained on task 'cartpole-swingup'.*task is 'walker-walk'"):
        load_told(path, task="walker-walk")
    with pytest.raises(ValueError, match=r"shape \(4,\).*gives \(24,\)"):
        load_told(path, obs_shape=(24,))
    with pytest.raises(ValueError, match=r"action_dim=2.*has 6"):
        load_told(path, action_dim=6)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_told(tmp_path / "missing.pt")
    bad = tiny_model().checkpoint()
    bad["model"] = "rssm"
    torch.save(bad, path)
    with pytest.raises(ValueError, match="'rssm' model"):
        load_told(path)


def test_config_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="size='2M'"):
        TOLDConfig(obs_shape=(4,), action_dim=1, size="2M")
    with pytest.raises(ValueError, match="obs_type='rgb'"):
        TOLDConfig(obs_shape=(4,), action_dim=1, obs_type="rgb")
    with pytest.raises(ValueError, match=r"obs_shape=\(4,\)"):
        TOLDConfig(obs_shape=(4,), action_dim=1, obs_type="pixels")


# -- replay buffer ---------------------------------------------------------------------------


def test_replay_samples_stay_inside_one_episode():
    buffer = EpisodeReplay(1000, (1,), 1, seed=0)
    for e in range(5):
        t = 10 + e
        obs = np.full((t + 1, 1), e, np.float32) + np.arange(t + 1, dtype=np.float32)[:, None] / 100
        buffer.add_episode(obs, np.full((t, 1), e, np.float32), np.arange(t, dtype=np.float32))
    batch = buffer.sample(500, 3)
    assert batch["obs"].shape == (4, 500, 1) and batch["action"].shape == (3, 500, 1) and batch["reward"].shape == (3, 500)
    episode = np.floor(batch["obs"][..., 0])
    assert np.all(episode == episode[0])  # every step of a subsequence from one episode
    assert np.all(batch["action"][..., 0] == episode[:-1])
    step = np.round((batch["obs"][..., 0] - episode) * 100)
    assert np.all(np.diff(step, axis=0) == 1)  # consecutive
    assert np.all(batch["reward"] == step[:-1])  # reward t follows action t at obs t


def test_replay_is_memory_bounded_and_evicts_the_oldest():
    buffer = EpisodeReplay(50, (2,), 1)
    for e in range(10):
        buffer.add_episode(np.full((11, 2), e, np.float32), np.zeros((10, 1)), np.zeros(10))
    assert buffer.obs.shape[0] == 50
    kept = set(np.unique(buffer.episode_of[buffer.episode_of >= 0]))
    assert kept == {6, 7, 8, 9}
    assert buffer.num_steps == 40
    batch = buffer.sample(100, 2)
    assert batch["obs"].min() >= 6


def test_replay_save_load_round_trip(tmp_path):
    buffer = linear_system_buffer(episodes=3, length=12)
    buffer.sample(4, 3)
    path = tmp_path / "replay.npz"
    buffer.save(path)
    loaded = EpisodeReplay.load(path)
    assert loaded.num_episodes == 3 and loaded.num_steps == buffer.num_steps and loaded.cursor == buffer.cursor
    a, b = buffer.sample(16, 3), loaded.sample(16, 3)  # same sampling state too
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_replay_rejects_malformed_episodes():
    buffer = EpisodeReplay(100, (3,), 2)
    with pytest.raises(ValueError, match=r"obs \[T\+1, 3\]"):
        buffer.add_episode(np.zeros((5, 3)), np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="add episodes first"):
        buffer.sample(4, 3)


def test_policy_entropy_bonus_is_the_action_scaled_gaussian_entropy():
    """TD-MPC2's scaled entropy: -A log N(pre-tanh sample; mu, sigma)."""
    model = tiny_model(action_dim=3)
    with torch.no_grad():
        model.policy_head.out.weight.normal_()
    z = model.encode(torch.randn(16, 4))
    eps = torch.randn(16, 3)
    _, _, entropy = model.sample_policy(z, eps=eps)
    mean, raw = model.policy_head(z).chunk(2, dim=-1)
    log_std = -10 + 0.5 * 12 * (torch.tanh(raw) + 1)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = -3 * normal.log_prob(mean + eps * log_std.exp()).sum(-1)
    assert torch.allclose(entropy, expected, rtol=1e-3, atol=1e-2)


def test_running_scale_has_a_floor_of_one():
    from training.told_agent import RunningScale

    scale = RunningScale(tau=0.5)
    for _ in range(20):
        scale.update(torch.zeros(64))  # zero-initialised Q heads: no spread at all
    assert scale.value == pytest.approx(1.0)
    for _ in range(40):
        scale.update(torch.linspace(0, 100, 101))  # spread 90
    assert scale.value == pytest.approx(90.0, rel=1e-3)


def test_reward_and_value_stay_float32_under_bfloat16_autocast():
    model = tiny_model().eval()
    with torch.no_grad():  # the reward and Q output layers start at zero: give them something to say
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = model.encode(torch.randn(64, 4))
    action = torch.rand(64, 2) * 2 - 1
    exact_reward, exact_value = model.reward(z, action), model.q_value(z, action, members=torch.tensor([0, 1]))
    assert exact_reward.std() > 0.05 and exact_value.std() > 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reward = model.reward(z, action)
        value = model.q_value(z, action, members=torch.tensor([0, 1]))
    assert reward.dtype == torch.float32 and value.dtype == torch.float32
    # Only the layers' products are rounded (bfloat16 keeps ~3 digits of each logit), not
    # the 101-bin expectation: a few percent here, with large random logits.
    torch.testing.assert_close(reward, exact_reward, rtol=0.1, atol=0.05)
    torch.testing.assert_close(value, exact_value, rtol=0.1, atol=0.05)
    assert float((reward - exact_reward).abs().mean() / exact_reward.abs().mean()) < 0.05
