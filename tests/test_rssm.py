"""PlaNet's RSSM (models.rssm): learning, KL options, shapes, imagination gradients, the
planner contract on state and pixel observations, checkpoints and image quantisation.

All models are tiny (RSSMConfig.tiny); the file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.base import WorldModel
from models.rssm import (
    RSSM,
    RSSMConfig,
    RSSMState,
    postprocess_images,
    preprocess_images,
    sequences_from_transitions,
)
from planners import CEM, MPCController, reward_objective

PIXELS = (3, 64, 64)


def tiny(obs_type: str = "state", obs_shape: tuple[int, ...] = (2,), action_dim: int = 1, **overrides) -> RSSM:
    torch.manual_seed(0)
    return RSSM(RSSMConfig.tiny(obs_type, obs_shape, action_dim, **overrides))


def linear_system_batch(batch: int = 8, steps: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sequences of a damped 2-D rotation driven by a 1-D action, in the RSSM's time
    convention: actions[:, t] led to obs[:, t] (zeros at t = 0), rewards[:, t] = -|x_t|^2."""
    g = torch.Generator().manual_seed(seed)
    a_matrix = torch.tensor([[0.95, 0.2], [-0.2, 0.95]])
    b_matrix = torch.tensor([[0.0], [0.5]])
    x = 2.0 * torch.randn(batch, 2, generator=g)
    action = torch.zeros(batch, 1)
    obs, actions, rewards = [], [], []
    for t in range(steps):
        if t > 0:
            action = 2.0 * torch.rand(batch, 1, generator=g) - 1.0
            x = x @ a_matrix.T + action @ b_matrix.T
        obs.append(x)
        actions.append(action)
        rewards.append(-(x**2).sum(dim=-1))
    return {"obs": torch.stack(obs, 1), "actions": torch.stack(actions, 1), "rewards": torch.stack(rewards, 1)}


def grads(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    out = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(out, params)]


# ---------------------------------------------------------------------------- learning


def test_elbo_falls_on_a_linear_system() -> None:
    model = tiny()
    batch = linear_system_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, recon = [], []
    for _ in range(100):
        out = model.loss(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        recon.append(out.parts["reconstruction"].item())
    # Starts near 30 (mostly reward and reconstruction error); ends near 6 (3 of it free nats).
    assert np.mean(losses[-5:]) < 0.3 * losses[0], (losses[0], losses[-5:])
    assert np.mean(recon[-5:]) < 0.8 * recon[0], (recon[0], recon[-5:])


def test_free_nats_clamp_the_batch_mean_kl() -> None:
    batch = linear_system_batch(batch=4, steps=6)
    clamped = tiny(free_nats=1000.0)
    out = clamped.loss(batch)
    assert out.parts["kl_value"].item() < 1000.0
    assert out.parts["kl"].item() == 1000.0
    params = list(clamped.parameters())
    assert all(bool((g == 0).all()) for g in grads(out.parts["kl"], params))

    free = tiny(free_nats=0.0)  # same weights (same seed); now the KL itself is the term
    out = free.loss(batch)
    assert out.parts["kl"].item() == pytest.approx(out.parts["kl_value"].item(), rel=1e-6)
    assert any(bool((g != 0).any()) for g in grads(out.parts["kl"], list(free.parameters())))


def test_kl_balance_weights_the_prior_and_the_posterior() -> None:
    # One step: the prior then comes from the zero state, so the prior's output layer
    # reaches the KL only through the prior and the posterior's only through the posterior.
    batch = {k: v[:, :1] for k, v in linear_system_batch(batch=4, steps=1).items()}
    plain = tiny(free_nats=0.0)
    balanced = tiny(free_nats=0.0, kl_balance=0.8)
    balanced.load_state_dict(plain.state_dict())
    kl_plain = plain.loss(batch).parts["kl"]
    kl_balanced = balanced.loss(batch).parts["kl"]
    assert kl_balanced.item() == pytest.approx(kl_plain.item(), rel=1e-5)  # same value, other gradients
    for layer, weight in (("prior_out", 0.8), ("post_out", 0.2)):
        g_plain = grads(kl_plain, [getattr(plain, layer).weight])[0]
        g_balanced = grads(kl_balanced, [getattr(balanced, layer).weight])[0]
        assert g_plain.abs().max() > 0
        torch.testing.assert_close(g_balanced, weight * g_plain, rtol=1e-4, atol=1e-7)


def test_latent_overshooting_targets_are_stop_gradient() -> None:
    batch = linear_system_batch(batch=2, steps=6)
    obs = batch["obs"].clone().requires_grad_(True)
    model = tiny(free_nats=0.0, overshooting=3)
    out = model.loss({**batch, "obs": obs})
    parts = out.parts
    # The KL term averages the one-step term and the d = 2, 3 terms.
    expected = (parts["kl_value"].item() + 2 * parts["overshooting"].item()) / 3
    assert parts["kl"].item() == pytest.approx(expected, rel=1e-5)
    (g,) = torch.autograd.grad(parts["overshooting"], obs)
    # The last posterior is only ever a (stop-gradient) target, never a starting point.
    assert bool((g[:, -1] == 0).all())
    assert bool((g[:, 0] != 0).any())
    # overshooting = 1 is the plain one-step KL.
    one = tiny(free_nats=0.0, overshooting=1)
    model.generator, one.generator = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    off = tiny(free_nats=0.0)
    off.generator = torch.Generator().manual_seed(1)
    assert one.loss(batch).loss.item() == off.loss(batch).loss.item()


# ---------------------------------------------------------------------------- latents


@pytest.mark.parametrize("latent", ["gaussian", "discrete"])
def test_posterior_and_prior_shapes(latent: str) -> None:
    model = tiny(latent=latent, action_dim=3)
    c = model.config
    b, t = 3, 5
    embeds = torch.randn(b, t, c.embed)
    post, prior = model.observe_sequence(embeds, torch.randn(b, t, 3))
    stoch_size = c.stoch if latent == "gaussian" else c.stoch * c.classes
    for state in (post, prior):
        assert state.deter.shape == (b, t, c.deter)
        assert state.stoch.shape == (b, t, stoch_size)
        assert state.feature().shape == (b, t, c.deter + stoch_size) == (b, t, c.feature_size)
        if latent == "gaussian":
            assert state.mean.shape == state.std.shape == (b, t, c.stoch)
            assert bool((state.std >= c.min_std).all())
            assert state.logits is None
        else:
            assert state.logits.shape == (b, t, c.stoch, c.classes)
            assert state.mean is None
    imagined = model.imagine(post[:, -1], torch.randn(b, 4, 3))
    assert imagined.feature().shape == (b, 4, c.feature_size)
    assert model.initial_state(b).feature().shape == (b, c.feature_size)


def test_discrete_samples_are_one_hot_with_straight_through_gradients() -> None:
    model = tiny(latent="discrete")
    c = model.config
    state = model.initial_state(64)
    prior = model.img_step(state, torch.randn(64, 1))
    groups = prior.stoch.detach().view(64, c.stoch, c.classes)
    assert bool(((groups == 0) | (groups == 1)).all())
    assert bool((groups.sum(-1) == 1).all())
    assert len(groups.argmax(-1).unique()) > 1  # samples, not one fixed class
    # The sample's gradient reaches the logits (and the layer producing them).
    weights = torch.randn(c.stoch * c.classes)
    (g,) = torch.autograd.grad((prior.stoch * weights).sum(), model.prior_out.weight)
    assert g.abs().max() > 0


@pytest.mark.parametrize("latent", ["gaussian", "discrete"])
def test_imagination_with_a_policy_is_differentiable(latent: str) -> None:
    model = tiny(latent=latent)
    policy = torch.nn.Linear(model.config.feature_size, 1)
    taken: list[torch.Tensor] = []

    def policy_fn(feature: torch.Tensor) -> torch.Tensor:
        action = torch.tanh(policy(feature))
        taken.append(action)
        return action

    post = model.loss(linear_system_batch(batch=2, steps=4)).posterior.detach().flatten_batch()  # [8, ...]
    states, actions = model.imagine_with_policy(post, policy_fn, horizon=5)
    assert actions.shape == (8, 5, 1) and states.deter.shape == (8, 5, model.config.deter)
    rewards = model.predict_reward(states.feature())  # [8, 5]
    # The last reward depends on the first action only through four steps of dynamics
    # (the policy's inputs are stop-gradient, as in Dreamer).
    (g_first,) = torch.autograd.grad(rewards[:, -1].sum(), taken[0], retain_graph=True)
    assert g_first.abs().max() > 0
    # The stochastic samples are reparameterised (rsample / straight-through), not cut off.
    (g_sample,) = torch.autograd.grad(states.stoch[:, 0].sum(), taken[0], retain_graph=True)
    assert g_sample.abs().max() > 0
    rewards.sum().backward()
    assert policy.weight.grad is not None and policy.weight.grad.abs().max() > 0
    assert model.reward_head[0].weight.grad.abs().max() > 0


# ---------------------------------------------------------------------------- planning


def test_planning_api_is_consistent_with_the_reward_convention() -> None:
    model = tiny(action_dim=2)
    assert isinstance(model, WorldModel)
    model.plan_with_samples = False  # means: exact comparisons
    obs = torch.randn(5, 2)
    z = model.encode(obs)
    assert z.shape == (5, model.config.feature_size)
    torch.testing.assert_close(model.observe(None, None, obs), z)
    actions = torch.rand(5, 4, 2) * 2 - 1
    with torch.no_grad():
        latents, rewards = model.rollout_with_rewards(z, actions)
        assert latents.shape == (5, 4, model.config.feature_size) and rewards.shape == (5, 4)
        torch.testing.assert_close(rewards, model.predict_reward(latents))
        # reward(z, a) is the reward of the state a leads to: rewards[:, 0], not the head at z.
        torch.testing.assert_close(model.next(z, actions[:, 0]), latents[:, 0])
        torch.testing.assert_close(model.reward(z, actions[:, 0]), rewards[:, 0])
        torch.testing.assert_close(model.rollout(z, actions), latents)
        returns = reward_objective(model, z[:1], discount=1.0, use_value=False)(actions[None, :1])
        torch.testing.assert_close(returns, rewards[:1].sum(1, keepdim=True))
        # The filter uses the previous action.
        assert not torch.allclose(model.observe(z, actions[:, 0], obs), model.observe(z, -actions[:, 0], obs))
    # Sampling mode draws from model.generator when set: same seed, same rollout.
    model.plan_with_samples = True
    runs = []
    for seed in (3, 3, 4):
        model.generator = torch.Generator().manual_seed(seed)
        runs.append(model.rollout(z, actions))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_mpc_controller_with_cem_on_state_observations() -> None:
    model = tiny(action_dim=2, obs_shape=(3,))
    planner = CEM(action_dim=2, horizon=4, num_samples=32, num_elites=4, iterations=2)
    ctrl = MPCController(model, planner, discount=1.0, use_value=False, device="cpu", seed=0)
    ctrl.reset()
    latents = []
    for _ in range(3):
        action = ctrl.act(np.random.default_rng(0).normal(size=3).astype(np.float32))
        assert action.shape == (2,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
        latents.append(ctrl._latent.clone())
    assert latents[0].shape == (1, model.config.feature_size)
    # Same observation every step, yet the filtered latent moves: the history is carried.
    assert not torch.equal(latents[0], latents[1])
    with pytest.raises(ValueError, match="obs has shape"):
        model.encode(torch.zeros(1, 4))


def test_mpc_controller_with_cem_on_pixel_observations() -> None:
    model = tiny("pixels", PIXELS, action_dim=2)
    assert model.obs_dtype == torch.float32
    planner = CEM(action_dim=2, horizon=3, num_samples=16, num_elites=4, iterations=2)
    ctrl = MPCController(model, planner, discount=1.0, use_value=False, device="cpu", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        action = ctrl.act(rng.integers(0, 256, size=PIXELS, dtype=np.uint8))
        assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    # A pixel batch trains too (uint8 in, dequantised inside).
    obs = torch.from_numpy(rng.integers(0, 256, size=(1, 2, *PIXELS), dtype=np.uint8))
    out = model.loss({"obs": obs, "actions": torch.zeros(1, 2, 2), "rewards": torch.zeros(1, 2)})
    assert torch.isfinite(out.loss) and model.decode(out.posterior.feature()[0]).shape == (2, *PIXELS)


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path) -> None:
    model = tiny(latent="discrete", discount_head=True)
    path = tmp_path / "rssm.pt"
    model.save(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model"] == "rssm" and ckpt["config"]["obs_shape"] == (2,)
    loaded = RSSM.from_checkpoint(ckpt, obs_shape=(2,), action_dim=1)
    batch = linear_system_batch(batch=2, steps=5)
    outputs = []
    for m in (model, loaded):
        m.generator = torch.Generator().manual_seed(0)
        z = m.encode(batch["obs"][:, 0])
        outputs.append((z, *m.rollout_with_rewards(z, batch["actions"]), m.loss(batch).loss))
    for a, b in zip(*outputs):
        assert torch.equal(a, b)

    with pytest.raises(ValueError, match=r"obs_shape \(2,\).*\(5,\)"):
        RSSM.from_checkpoint(ckpt, obs_shape=(5,))
    with pytest.raises(ValueError, match=r"'told'.*'rssm'"):
        RSSM.from_checkpoint({**ckpt, "model": "told"})
    with pytest.raises(ValueError, match=r"obs_shape \(2,\).*\(3,\)"):
        tiny(obs_shape=(3,)).load_checkpoint(ckpt)
    with pytest.raises(ValueError, match="latent"):
        tiny().load_checkpoint(ckpt)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        RSSM.load(tmp_path / "missing.pt")
    reloaded = RSSM.load(path)
    model.plan_with_samples = reloaded.plan_with_samples = False
    assert torch.equal(reloaded.encode(batch["obs"][:, 0]), model.encode(batch["obs"][:, 0]))


# ---------------------------------------------------------------------------- images, config


def test_five_bit_preprocessing_quantises() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    bins = pixels.long() // 8  # 5 bits: 32 levels
    centred = preprocess_images(pixels, bit_depth=5, noise=False)
    torch.testing.assert_close(centred, (bins.float() + 0.5) / 32 - 0.5)
    noisy = preprocess_images(pixels, bit_depth=5, noise=True, generator=torch.Generator().manual_seed(0))
    assert noisy.min() >= -0.5 and noisy.max() < 0.5
    assert torch.equal(torch.floor((noisy + 0.5) * 32).long(), bins)  # noise stays within a bin
    assert not torch.equal(noisy, centred)
    back = postprocess_images(noisy, bit_depth=5)
    assert back.dtype == torch.uint8 and torch.equal(back.long() // 8, bins)
    assert postprocess_images(torch.tensor([-3.0, 3.0])).tolist() == [4, 252]  # clipped to the end bins


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("obs_type", "video"),
        ("latent", "beta"),
        ("activation", "gelu"),
        ("kl_balance", 1.5),
        ("free_nats", -1.0),
        ("overshooting", -2),
        ("bit_depth", 9),
        ("deter", 0),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        RSSMConfig(**{"obs_shape": (2,), field: value})


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        RSSMConfig.tiny("pixels", (3, 32, 32), 1)
    model = tiny()
    batch = linear_system_batch(batch=2, steps=3)
    with pytest.raises(ValueError, match="actions have shape"):
        model.loss({**batch, "actions": torch.zeros(2, 3, 4)})
    with pytest.raises(ValueError, match="rewards"):
        model.loss({"obs": batch["obs"], "actions": batch["actions"]})
    assert isinstance(model.initial_state(1), RSSMState)


def test_replay_transitions_map_onto_the_time_convention() -> None:
    # Transitions: obs_i, the action a_i taken there, reward r_i that followed.
    length, b = 4, 2
    obs = torch.arange(length + 1, dtype=torch.float32).view(-1, 1, 1).expand(length + 1, b, 2)
    action = 10 + torch.arange(length, dtype=torch.float32).view(-1, 1, 1).expand(length, b, 1)
    reward = 100 + torch.arange(length, dtype=torch.float32).view(-1, 1).expand(length, b)
    seq = sequences_from_transitions(obs.numpy(), action, reward)
    assert seq["obs"].shape == (b, length, 2) and seq["actions"].shape == (b, length, 1)
    # Step t: a_t led to obs_{t+1}, which came with r_t.
    assert seq["obs"][0, :, 0].tolist() == [1, 2, 3, 4]
    assert seq["actions"][0, :, 0].tolist() == [10, 11, 12, 13]
    assert seq["rewards"][0].tolist() == [100, 101, 102, 103]
    assert torch.isfinite(tiny().loss(seq).loss)
    with pytest.raises(ValueError, match="do not fit"):
        sequences_from_transitions(obs[:-1], action, reward)
