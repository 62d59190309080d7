"""DreamerV3's world-model options in the RSSM (models.rssm; RSSMConfig.dreamerv3):
LayerNorm + SiLU and the normalised GRU, symlog state observations, the two-hot reward
head, the uniform mix in the categoricals, per-step free nats and V3's KL weights.

Models are tiny; the file runs in seconds on one CPU thread.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import run_planning
from models.layers import symlog
from models.rssm import RSSM, RSSMConfig, _NormGRUCell, categorical_by_inverse_cdf
from models.told import two_hot_inverse
from planners import CEM, MPCController
from tests.test_cli_rssm import QUICK_TRAIN
from tests.test_rssm import grads, linear_system_batch

TINY_SIZES = dict(deter=16, stoch=4, classes=4, hidden=16, embed=16, cnn_depth=4)


def tiny_v3(obs_shape: tuple[int, ...] = (2,), action_dim: int = 1, **overrides) -> RSSM:
    torch.manual_seed(0)
    return RSSM(RSSMConfig.dreamerv3("state", obs_shape, action_dim, **{**TINY_SIZES, **overrides}))


def test_the_preset_carries_v3s_options() -> None:
    c = RSSMConfig.dreamerv3("state", (5,), 1)
    assert (c.latent, c.stoch, c.classes, c.unimix) == ("discrete", 32, 32, 0.01)
    assert (c.activation, c.layer_norm, c.symlog_obs, c.reward_head, c.reward_bins) == ("silu", True, True, "twohot", 255)
    # V3's loss weights: 0.5 on the dynamics term, 0.1 on the representation term.
    assert c.kl_scale * c.kl_balance == pytest.approx(0.5)
    assert c.kl_scale * (1.0 - c.kl_balance) == pytest.approx(0.1)
    assert (c.free_nats, c.free_nats_per_step) == (1.0, True)
    assert RSSMConfig.dreamerv3("pixels", (3, 64, 64), 1).symlog_obs is False  # images keep their scaling
    assert isinstance(RSSM(RSSMConfig.dreamerv3("state", (5,), 1, **TINY_SIZES)).gru, _NormGRUCell)


def test_elbo_falls_and_rewards_are_learned_with_the_v3_options() -> None:
    model = tiny_v3(deter=32, hidden=32)  # 16 units fit the rewards too slowly for a test
    batch = linear_system_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, reward_errors = [], []
    for _ in range(200):
        out = model.loss(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        with torch.no_grad():
            predicted = model.predict_reward(out.posterior.feature())
        reward_errors.append((predicted - batch["rewards"]).abs().mean().item())
    assert np.mean(losses[-5:]) < 0.5 * losses[0], (losses[0], losses[-5:])
    # Rewards reach -20 here; the zero-initialised two-hot head starts by predicting 0.
    # (The mean |reward| is 5; 200 steps bring the error near 0.6.)
    assert reward_errors[0] > 3.0 and np.mean(reward_errors[-5:]) < 0.3 * reward_errors[0], reward_errors[::40]


def test_the_planners_run_on_a_v3_model() -> None:
    model = tiny_v3()
    model.generator = torch.Generator().manual_seed(0)
    planner = CEM(action_dim=1, horizon=4, num_samples=16, num_elites=4, iterations=2)
    controller = MPCController(model, planner, discount=1.0, use_value=False, device="cpu", seed=0)
    controller.reset()
    for _ in range(2):
        action = controller.act(np.zeros(2, dtype=np.float32))
        assert action.shape == (1,) and np.all(np.abs(action) <= 1.0)
    z = controller._latent
    latents, rewards = model.rollout_with_rewards(z, torch.zeros(1, 4, 1))
    assert latents.shape == (1, 4, model.config.feature_size) and torch.isfinite(rewards).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_planners_categorical_draw_has_the_categoricals_frequencies(dtype) -> None:
    """Planning draws one uniform per categorical (inverse CDF) instead of the race's one
    per class: the frequencies must still be the probabilities, and a class of
    probability 0 must never come up."""
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 0.0, 1.0], [0.25, 0.25, 0.25, 0.25]], dtype=dtype)
    n = 200_000
    index = categorical_by_inverse_cdf(probs.expand(n, 3, 4), torch.Generator().manual_seed(0))
    assert index.shape == (n, 3) and index.dtype == torch.int64
    counts = torch.stack([torch.bincount(index[:, j], minlength=4) for j in range(3)]).double()
    # 5 standard errors of a frequency at p = 0.5 and n = 200k: 0.0056.
    torch.testing.assert_close(counts / n, probs.double(), atol=0.0056, rtol=0.0)
    assert counts[0, 1] == 0 and counts[1, :3].sum() == 0
    # The same generator state, the same draws.
    again = categorical_by_inverse_cdf(probs.expand(n, 3, 4), torch.Generator().manual_seed(0))
    assert torch.equal(index, again)


def test_a_sampled_rollout_is_the_sampled_steps_one_after_another() -> None:
    """rollout writes each step's parts into one tensor; it must equal next() step by step
    with the same draws, and its samples must be one-hot."""
    model = tiny_v3(action_dim=2)
    z = model.encode(torch.randn(6, 2))
    actions = torch.rand(6, 5, 2) * 2 - 1
    with torch.no_grad():
        model.generator = torch.Generator().manual_seed(7)
        latents = model.rollout(z, actions)
        model.generator = torch.Generator().manual_seed(7)
        steps, state = [], z
        for t in range(5):
            state = model.next(state, actions[:, t])
            steps.append(state)
    assert torch.equal(latents, torch.stack(steps, dim=1))
    stoch = latents[..., model.config.deter:].unflatten(-1, (model.config.stoch, model.config.classes))
    assert torch.equal(stoch.sum(-1), torch.ones(6, 5, model.config.stoch)) and set(stoch.unique().tolist()) == {0.0, 1.0}


def test_planning_draws_by_inverse_cdf_and_everything_else_keeps_the_race() -> None:
    """The planning interface (next, rollout, observe) without gradients draws each
    categorical by inverse CDF from the mixed probabilities; a loss or an imagination
    evaluated under no_grad keeps the race and its logits (KL terms need them)."""
    model = tiny_v3(action_dim=2)
    c = model.config
    z, action = model.encode(torch.randn(4, 2)), torch.rand(4, 2) * 2 - 1
    with torch.no_grad():
        model.generator = torch.Generator().manual_seed(5)
        stoch = model.next(z, action)[:, c.deter :].unflatten(-1, (c.stoch, c.classes))
        deter = model._next_deter(model.split(z), action)
        probs = model._prior_stats(deter).unflatten(-1, (c.stoch, c.classes)).softmax(-1)
        probs = (1 - c.unimix) * probs + c.unimix / c.classes
        expected = categorical_by_inverse_cdf(probs, torch.Generator().manual_seed(5))
        assert torch.equal(stoch.argmax(-1), expected)
        assert model._plan_draws is False  # only inside the planning interface
        state = model.imagine(model.split(z), action[:, None], sample=True)
        assert state.logits is not None and torch.isfinite(model.kl_divergence(state, state)).all()
        batch = {"obs": torch.randn(2, 5, 2), "actions": torch.rand(2, 5, 2) * 2 - 1, "rewards": torch.randn(2, 5)}
        assert torch.isfinite(model.loss(batch).loss)


def test_two_hot_reward_head_starts_at_zero_and_fits_large_rewards() -> None:
    model = tiny_v3()
    feature = torch.randn(64, model.config.feature_size)
    torch.testing.assert_close(model.predict_reward(feature), torch.zeros(64), atol=1e-6, rtol=0.0)
    # A uniform categorical over 255 bins: the cross-entropy to any two-hot target is log 255.
    assert model.reward_loss(feature, torch.full((64,), 3.0)).item() == pytest.approx(math.log(255), rel=1e-5)
    opt = torch.optim.Adam(model.reward_head.parameters(), lr=1e-2)
    target = torch.full((64,), 250.0)
    for _ in range(200):
        loss = model.reward_loss(feature, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.predict_reward(feature).mean().item() == pytest.approx(250.0, rel=0.05)


def test_symlog_observations_are_encoded_and_reconstructed_in_symlog_space() -> None:
    model = tiny_v3()
    obs = torch.tensor([[1000.0, -0.5]])
    torch.testing.assert_close(model.preprocess(obs), symlog(obs))
    plain = RSSM(RSSMConfig.dreamerv3("state", (2,), 1, symlog_obs=False, **TINY_SIZES))
    assert torch.equal(plain.preprocess(obs), obs)
    # A velocity of 1000 costs about log(1001)^2 / 2 = 24 nats in symlog space, not 5e5.
    batch = linear_system_batch(batch=2, steps=4)
    batch["obs"] = batch["obs"] * 500.0
    assert model.loss(batch).parts["reconstruction"].item() < 100.0
    assert plain.loss(batch).parts["reconstruction"].item() > 1e4


def test_unimix_keeps_every_class_possible_and_the_kl_bounded() -> None:
    model = tiny_v3()
    c = model.config
    extreme = torch.full((3, c.stoch * c.classes), -1e4)
    extreme[:, :: c.classes] = 1e4  # every categorical certain of its first class
    state = model._state_from_stats(torch.zeros(3, c.deter), extreme, sample=True)
    probs = state.logits.exp()
    assert probs.min().item() >= c.unimix / c.classes * (1 - 1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, c.stoch))
    other = extreme.roll(1, dims=-1)  # certain of another class
    kl = model.kl_divergence(state, model._state_from_stats(torch.zeros(3, c.deter), other, sample=True))
    # Without the mix this KL is about 2e4 per categorical; with it, at most log(classes / unimix) each.
    assert torch.isfinite(kl).all() and kl.max().item() <= c.stoch * math.log(c.classes / c.unimix) + 1e-3


def test_samples_follow_the_mixed_categorical() -> None:
    model = tiny_v3(unimix=0.2)  # a large mix, so a few thousand draws measure it
    model.generator = torch.Generator().manual_seed(0)
    c = model.config
    certain = torch.full((4000, c.stoch * c.classes), -1e4)
    certain[:, :: c.classes] = 1e4  # the unmixed categoricals always pick class 0
    state = model._state_from_stats(torch.zeros(4000, c.deter), certain, sample=True)
    picks = state.stoch.unflatten(-1, (c.stoch, c.classes)).argmax(-1)
    other = (picks != 0).float().mean().item()
    expected = c.unimix * (c.classes - 1) / c.classes  # 0.15
    assert abs(other - expected) < 0.01, (other, expected)


def test_per_step_free_nats_keep_the_gradient_of_steps_above_the_allowance() -> None:
    batch = linear_system_batch(batch=4, steps=6)
    # Per-step KLs of this batch, with the weights and samples the models below will use
    # (the state encoder draws nothing, so the generator's draws are the latents').
    probe = tiny_v3(free_nats=0.0, kl_balance=None, kl_scale=1.0)
    probe.generator = torch.Generator().manual_seed(1)
    embeds = probe.embed(batch["obs"].flatten(0, 1)).unflatten(0, batch["obs"].shape[:2])
    post, prior = probe.observe_sequence(embeds, batch["actions"])
    kl_steps = probe.kl_divergence(post, prior).detach()
    allowance = float(kl_steps.mean()) * 1.5  # above the mean, below the largest steps
    assert kl_steps.max().item() > allowance

    per_step = tiny_v3(free_nats=allowance, kl_balance=None, kl_scale=1.0)
    per_batch = tiny_v3(free_nats=allowance, kl_balance=None, kl_scale=1.0, free_nats_per_step=False)
    for m in (per_step, per_batch):
        m.generator = torch.Generator().manual_seed(1)
    kl_per_step = per_step.loss(batch).parts["kl"]
    kl_per_batch = per_batch.loss(batch).parts["kl"]
    assert kl_per_step.item() == pytest.approx(kl_steps.clamp(min=allowance).mean().item(), rel=1e-4)
    assert kl_per_batch.item() == pytest.approx(allowance, rel=1e-6)  # the batch mean is under the allowance: clamped whole
    assert any(bool((g != 0).any()) for g in grads(kl_per_step, list(per_step.parameters())))
    assert all(bool((g == 0).all()) for g in grads(kl_per_batch, list(per_batch.parameters())))


def test_v3_kl_weights_reach_the_prior_and_the_posterior() -> None:
    # One step from the zero state: the prior's output layer reaches the KL only through
    # the prior, the posterior's only through the posterior (as in test_rssm's balance test).
    # Biases, not weights: under LayerNorm without Linear biases the zero state maps to a
    # zero hidden layer, so the prior's weights get no gradient at step one.
    batch = {k: v[:, :1] for k, v in linear_system_batch(batch=4, steps=1).items()}
    plain = tiny_v3(free_nats=0.0, kl_balance=None, kl_scale=1.0)
    v3 = tiny_v3(free_nats=0.0)
    v3.load_state_dict(plain.state_dict())
    for m in (plain, v3):
        m.generator = torch.Generator().manual_seed(2)
    out_plain, out_v3 = plain.loss(batch), v3.loss(batch)
    loss_plain = out_plain.parts["kl"]
    loss_v3 = v3.config.kl_scale * out_v3.parts["kl"]  # what the total loss adds
    for layer, weight in (("prior_out", 0.5), ("post_out", 0.1)):
        g_plain = grads(loss_plain, [getattr(plain, layer).bias])[0]
        g_v3 = grads(loss_v3, [getattr(v3, layer).bias])[0]
        assert g_plain.abs().max() > 0
        torch.testing.assert_close(g_v3, weight * g_plain, rtol=1e-4, atol=1e-7)


def test_the_normalised_gru_leans_on_its_state_at_the_start() -> None:
    cell = _NormGRUCell(3, 4)
    torch.nn.init.zeros_(cell.linear.weight)
    h = torch.randn(5, 4)
    # All parts 0 after the norm: candidate tanh(0) = 0, update sigmoid(-1).
    keep = 1.0 - torch.sigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(cell(torch.randn(5, 3), h), keep * h)


def test_the_normalised_gru_matches_a_hand_written_cell() -> None:
    torch.manual_seed(3)
    cell = _NormGRUCell(3, 4)
    torch.nn.init.normal_(cell.norm.weight)
    torch.nn.init.normal_(cell.norm.bias)
    x, h = torch.randn(5, 3), torch.randn(5, 4)
    parts = torch.nn.functional.layer_norm(torch.cat([x, h], -1) @ cell.linear.weight.T, (12,),
                                           cell.norm.weight, cell.norm.bias)  # fmt: skip
    reset, candidate, update = torch.sigmoid(parts[:, :4]), parts[:, 4:8], torch.sigmoid(parts[:, 8:] - 1.0)
    expected = update * torch.tanh(reset * candidate) + (1.0 - update) * h
    torch.testing.assert_close(cell(x, h), expected)


def test_loss_weights_follow_v3() -> None:
    model = tiny_v3()
    model.generator = torch.Generator().manual_seed(0)
    out = model.loss(linear_system_batch(batch=2, steps=5))
    p = out.parts
    # Reconstruction counts twice our 0.5 * squared error (V3's plain one); KL at kl_scale 0.6.
    expected = 2.0 * p["reconstruction"] + p["reward"] + 0.6 * p["kl"] + p["discount"]
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_two_hot_rewards_stay_float32_under_bfloat16_autocast() -> None:
    model = tiny_v3()
    torch.nn.init.normal_(model.reward_head[-1].weight, std=0.3)  # non-trivial logits
    feature = torch.randn(256, model.config.feature_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.reward_head(feature)  # the layers themselves run in bfloat16
        under_autocast = model.predict_reward(feature)
    assert logits.dtype == torch.bfloat16 and under_autocast.dtype == torch.float32
    # The 255-bin expectation and symexp in float32: in bfloat16 they are about 1% off.
    torch.testing.assert_close(under_autocast, two_hot_inverse(logits.float(), -20.0, 20.0), rtol=1e-5, atol=1e-6)


def test_the_dreamer_recipe_trains_the_v3_model_and_acts(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    quick = list(QUICK_TRAIN)
    quick[quick.index("--preset") + 1] = "dreamerv3"  # the recipe's own model, at full size
    quick[quick.index("--steps") + 1] = "200"
    assert run_planning.main([*quick, "--recipe", "dreamer", "--mode", "planner+actor", "--out", str(out)]) == 0
    loaded = RSSM.load(out / "model.pt")
    assert loaded.config == RSSMConfig.dreamerv3("state", loaded.config.obs_shape, 1)
    code = run_planning.main([
        "--model", "rssm", "--checkpoint", str(out / "model.pt"), "--mode", "planner+actor", "--planner", "cem",
        "--samples", "16", "--elites", "4", "--iterations", "2", "--horizon", "4", "--max-steps", "3",
        "--precision", "bfloat16", "--out", str(tmp_path / "eval"), "--no-progress",
    ])  # fmt: skip
    assert code == 0 and "mean return" in capsys.readouterr().out


def test_checkpoints_round_trip_and_architectures_are_told_apart(tmp_path) -> None:
    model = tiny_v3()
    path = tmp_path / "v3.pt"
    model.save(path)
    loaded = RSSM.load(path)
    assert loaded.config == model.config
    batch = linear_system_batch(batch=2, steps=5)
    for m in (model, loaded):
        m.generator = torch.Generator().manual_seed(0)
    assert torch.equal(model.loss(batch).loss, loaded.loss(batch).loss)
    planet_like = RSSM(RSSMConfig.tiny("state", (2,), 1, latent="discrete", discount_head=True))
    with pytest.raises(ValueError, match="layer_norm.*reward_head"):
        planet_like.load_checkpoint(torch.load(path, weights_only=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"obs_type": "pixels", "obs_shape": (3, 64, 64), "symlog_obs": True}, "symlog_obs=True applies to obs_type='state'"),
        ({"unimix": 0.01}, "unimix=0.01 applies to latent='discrete'"),
        ({"latent": "discrete", "unimix": 1.0}, r"unimix=1.0 must be a float in \[0, 1\)"),
        ({"reward_head": "beta"}, r"reward_head='beta' must be one of \('gaussian', 'twohot'\)"),
        ({"reward_bins": 1}, "reward_bins=1 must be an int >= 2"),
        ({"activation": "gelu"}, r"\('relu', 'elu', 'silu'\)"),
        ({"layer_norm": 1}, "layer_norm=1 must be True or False"),
    ],
)
def test_bad_v3_options_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RSSMConfig(**{"obs_shape": (2,), **overrides})
