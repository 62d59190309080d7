"""Dreamer-style behaviour learning (models.behavior): lambda-returns, the return scale,
gradients through imagination with a frozen world model, critic fitting, learning a
rewarded action, the actor as controller and as the planner's guide, checkpoints.

Tiny models only; the file runs in a few seconds on one CPU thread.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from models.actor_control import ActorController, ActorGuidedModel
from models.behavior import (
    ActorCritic,
    BehaviorConfig,
    ReturnNormalizer,
    TanhMeanNormal,
    TanhNormal,
    lambda_returns,
    scale_into_unit_box,
)
from models.rssm import RSSM, RSSMConfig, RSSMState
from planners import CEM, MPCController

TARGET = 0.5
# The actor settings of the two presets, on tiny networks.
V1_ACTOR: dict = {}
V3_ACTOR = {
    "actor_dist": "normal", "dynamics_baseline": True, "bootstrap": "online", "actor_min_std": 0.1, "actor_max_std": 1.0,
}  # fmt: skip
ACTORS = pytest.mark.parametrize("actor", [V1_ACTOR, V3_ACTOR], ids=["v1-actor", "v3-actor"])


def tiny_rssm(**overrides) -> RSSM:
    torch.manual_seed(0)
    return RSSM(RSSMConfig.tiny("state", (2,), 1, **overrides))


class BanditRSSM(RSSM):
    """A hand-built task on the RSSM: the first stochastic unit of the state reached by an
    action IS that action, and the reward head reads it: r = -(a - 0.5)^2. Everything
    else (GRU, priors, imagination) is the ordinary RSSM."""

    def img_step(self, state: RSSMState, action: torch.Tensor, sample: bool = True) -> RSSMState:
        nxt = super().img_step(state, action, sample)
        a = self.action_dim
        return RSSMState(nxt.deter, torch.cat([action, nxt.stoch[..., a:]], dim=-1), nxt.mean, nxt.std, nxt.logits)

    def predict_reward(self, feature: torch.Tensor) -> torch.Tensor:
        d, a = self.config.deter, self.action_dim
        return -(feature[..., d : d + a] - TARGET).pow(2).sum(-1)


def bandit_rssm() -> BanditRSSM:
    torch.manual_seed(0)
    return BanditRSSM(RSSMConfig.tiny("state", (2,), 1))


def posterior(model: RSSM, batch: int = 8, steps: int = 4, seed: int = 0) -> RSSMState:
    g = torch.Generator().manual_seed(seed)
    data = {
        "obs": torch.randn(batch, steps, 2, generator=g),
        "actions": 2 * torch.rand(batch, steps, 1, generator=g) - 1,
        "rewards": torch.randn(batch, steps, generator=g),
    }
    return model.loss(data).posterior


# ---------------------------------------------------------------------------- returns


def test_lambda_returns_hand_computed_three_steps() -> None:
    # r = (1, 2, 3), v = (0.5, 1.0, 1.5, 2.0), gamma_t = 0.9, lam = 0.5:
    # R_2 = 3 + 0.9 * 2.0                                = 4.8
    # R_1 = 2 + 0.9 * (0.5 * 1.5 + 0.5 * 4.8)   = 2 + 0.9 * 3.15   = 4.835
    # R_0 = 1 + 0.9 * (0.5 * 1.0 + 0.5 * 4.835) = 1 + 0.9 * 2.9175 = 3.62575
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    discounts = torch.full((3, 1), 0.9)
    out = lambda_returns(rewards, values, discounts, lam=0.5)
    torch.testing.assert_close(out, torch.tensor([[3.62575], [4.835], [4.8]]))


def test_lambda_returns_limits() -> None:
    g = torch.Generator().manual_seed(0)
    h, b = 6, 4
    rewards = torch.randn(h, b, generator=g)
    values = torch.randn(h + 1, b, generator=g)
    discounts = 0.5 + 0.5 * torch.rand(h, b, generator=g)
    # lam = 0: one-step TD targets.
    torch.testing.assert_close(lambda_returns(rewards, values, discounts, 0.0), rewards + discounts * values[1:])
    # lam = 1: discounted Monte Carlo plus the discounted bootstrap v_H.
    expected = torch.empty(h, b)
    for t in range(h):
        total, scale = torch.zeros(b), torch.ones(b)
        for k in range(t, h):
            total = total + scale * rewards[k]
            scale = scale * discounts[k]
        expected[t] = total + scale * values[h]
    torch.testing.assert_close(lambda_returns(rewards, values, discounts, 1.0), expected)
    with pytest.raises(ValueError, match="values"):
        lambda_returns(rewards, values[:-1], discounts, 0.5)


def test_return_normalizer_floor_and_ema() -> None:
    norm = ReturnNormalizer(decay=0.99)
    assert float(norm.scale()) == 1.0
    # A spread below 1 is not blown up: the floor holds.
    assert float(norm.update(0.01 * torch.arange(101.0))) == 1.0
    norm = ReturnNormalizer(decay=0.99)
    # arange(101): P5 = 5, P95 = 95 -> scale 90 (the first batch initialises the EMA).
    assert float(norm.update(torch.arange(101.0))) == pytest.approx(90.0)
    # Then P5 = 10, P95 = 190: low 5 + 0.01 * 5, high 95 + 0.01 * 95.
    assert float(norm.update(2 * torch.arange(101.0))) == pytest.approx(95.95 - 5.05)


def test_tanh_normal_log_prob_and_entropy() -> None:
    torch.manual_seed(0)
    dist = TanhNormal(torch.tensor([0.3, -0.2]).expand(4000, 2), torch.tensor([0.5, 0.8]).expand(4000, 2))
    u = dist.rsample_pre_tanh()
    torch.testing.assert_close(dist.log_prob(torch.tanh(u)), dist.log_prob_pre_tanh(u), atol=1e-3, rtol=1e-4)
    # The one-sample entropy estimate is unbiased: its mean is E[-log p(a)]
    # (its Gaussian part is exact, so the two agree up to Monte Carlo noise, about 0.01 here).
    assert float(dist.entropy(u).mean()) == pytest.approx(float(-dist.log_prob_pre_tanh(u).mean()), abs=0.04)
    assert bool((dist.rsample().abs() < 1).all())


def test_tanh_mean_normal_is_a_gaussian_whose_samples_act_inside_the_box() -> None:
    torch.manual_seed(0)
    loc, std = torch.tensor([0.9, -0.2]).expand(4000, 2), torch.tensor([0.5, 0.1]).expand(4000, 2)
    dist, reference = TanhMeanNormal(loc, std), torch.distributions.Normal(loc, std)
    x = dist.rsample_raw()
    torch.testing.assert_close(dist.log_prob_raw(x), reference.log_prob(x).sum(-1))
    torch.testing.assert_close(dist.entropy(x), reference.entropy().sum(-1))
    assert float((x[:, 0] > 1).float().mean()) > 0.3  # raw samples leave the box ...
    action = dist.action_from_raw(x)
    torch.testing.assert_close(action, x.clamp(-1, 1))  # ... their actions are clipped values
    assert torch.equal(dist.mean, loc)
    # ... whose gradient is a scaling's: nonzero for samples beyond the bound.
    loc = torch.tensor([3.0, 0.0], requires_grad=True)
    TanhMeanNormal(loc, torch.full((2,), 1e-3)).rsample().sum().backward()
    assert 0.3 < float(loc.grad[0]) < 0.34 and float(loc.grad[1]) == pytest.approx(1.0)


def test_scale_into_unit_box_keeps_a_gradient_beyond_the_bound() -> None:
    x = torch.tensor([0.5, 2.0, -4.0], requires_grad=True)
    y = scale_into_unit_box(x)
    torch.testing.assert_close(y.detach(), torch.tensor([0.5, 1.0, -1.0]))
    y.sum().backward()
    # Clipping would give 0 beyond the bound; the scaling gives 1 / |x| there.
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 0.5, 0.25]))


def test_v3_actor_keeps_its_entropy_floor_where_the_tanh_gaussian_saturates() -> None:
    """The failure the V3 actor avoids: drive both actors' pre-activations far out (mean
    +10, std at its lower bound). The tanh-Gaussian then acts +-1 every time and its
    entropy estimate is far below anything a std of 0.1 allows; V3's Gaussian keeps
    std 0.1 in action space."""
    torch.manual_seed(0)
    floor = float(torch.distributions.Normal(0.0, 0.1).entropy())
    spreads, entropies = {}, {}
    for actor_dist in ("tanh_normal", "normal"):
        config = BehaviorConfig.tiny(actor_dist=actor_dist, actor_min_std=0.1, actor_max_std=1.0)
        ac = ActorCritic(config, feature_size=4, action_dim=1)
        with torch.no_grad():
            last = ac.actor.net[-1]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([10.0, -20.0]))  # mean logit, std logit
        dist = ac.actor(torch.zeros(2000, 4))
        u = dist.rsample_raw().detach()
        spreads[actor_dist] = float(dist.action_from_raw(u).std())
        entropies[actor_dist] = float(dist.entropy(u).mean())
    assert spreads["tanh_normal"] < 1e-3 and entropies["tanh_normal"] < floor - 5.0
    assert spreads["normal"] > 0.03  # std 0.1 around a mean of tanh(10), clipped at 1
    assert entropies["normal"] == pytest.approx(floor, abs=1e-4)


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("horizon", 0),
        ("gamma", 1.5),
        ("lam", -0.1),
        ("critic_type", "huber"),
        ("actor_grad", "pathwise"),
        ("actor_dist", "beta"),
        ("bootstrap", "target"),
        ("slow_critic_fraction", 0.0),
        ("actor_lr", 0.0),
        ("activation", "tanh"),
        ("return_norm_high", 0.01),
        ("actor_hidden", (32, 0)),
        ("imagine_starts", 0),
        ("precision", "float16"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BehaviorConfig(**{field: value})


# ---------------------------------------------------------------------------- gradients


@ACTORS
@pytest.mark.parametrize("discount_head", [False, True])
def test_actor_gradient_flows_through_frozen_dynamics(discount_head: bool, actor: dict) -> None:
    model = tiny_rssm(discount_head=discount_head)
    # With no entropy bonus and a zero-initialised two-hot critic, the actor's only
    # gradient path is through the RSSM's dynamics and reward (and discount) heads.
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(entropy_coef=0.0, **actor))
    start = posterior(model)
    model.decoder[0].weight.requires_grad_(False)  # a user's own frozen parameter
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = ac.update(model, start)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0.0 < metrics["discount_mean"] <= 0.99 + 1e-6
    actor_norm = sum(float(p.grad.norm()) for p in ac.actor.parameters() if p.grad is not None)
    assert actor_norm > 0.0
    assert metrics["actor_grad_norm"] > 0.0
    for name, p in model.named_parameters():
        assert p.grad is None, f"world-model parameter {name} received a gradient"
        assert torch.equal(p, before[name]), f"world-model parameter {name} changed"
        assert p.requires_grad == flags[name], f"requires_grad of {name} not restored"
    # The restored flags still let the world model learn afterwards.
    posterior(model).deter.sum().backward()
    assert model.gru.weight_hh.grad is not None


@ACTORS
def test_reinforce_gradient_reaches_actor_only(actor: dict) -> None:
    model = tiny_rssm()
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(actor_grad="reinforce", critic_type="mse", **actor))
    for _ in range(2):  # the second update has a nonzero baseline and a trained critic
        metrics = ac.update(model, posterior(model))
    assert metrics["actor_grad_norm"] > 0.0
    assert all(p.grad is None for p in model.parameters())


def test_slow_critic_is_an_ema_and_gives_the_bootstrap() -> None:
    model = tiny_rssm()
    # A large step, so a 2% move of the slow copy is far above float tolerance.
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(critic_type="mse", critic_lr=0.1))
    slow_before = [p.detach().clone() for p in ac.slow_critic.parameters()]
    ac.update(model, posterior(model))
    for old, slow, online in zip(slow_before, ac.slow_critic.parameters(), ac.critic.parameters()):
        assert float((online.detach() - old).abs().max()) > 0.05  # the critic moved ...
        torch.testing.assert_close(slow, 0.98 * old + 0.02 * online)  # ... the slow copy 2% of the way
    model.requires_grad_(False)
    traj = ac.imagine(model, posterior(model))
    torch.testing.assert_close(traj["values"], ac.slow_critic(traj["features"]))
    assert traj["features"].shape[0] == ac.config.horizon + 1


@pytest.mark.parametrize("critic_type", ["twohot", "mse"])
def test_critic_fits_fixed_returns(critic_type: str) -> None:
    torch.manual_seed(0)
    config = BehaviorConfig.tiny(critic_type=critic_type, slow_critic_reg=0.0, critic_lr=3e-3)
    ac = ActorCritic(config, feature_size=8, action_dim=1)
    features = torch.randn(128, 8)
    returns = 3.0 * features[:, :2].sum(-1) - 1.0
    with torch.no_grad():
        error0 = float((ac.critic(features) - returns).abs().mean())
    losses = []
    for _ in range(150):
        loss = ac.critic_loss(features, returns)
        ac.critic_optimizer.zero_grad()
        loss.backward()
        ac.critic_optimizer.step()
        losses.append(loss.item() if not loss.requires_grad else loss.detach().item())
    with torch.no_grad():
        error = float((ac.critic(features) - returns).abs().mean())
    assert losses[-1] < 0.5 * losses[0]
    assert error < 0.25 * error0


def test_config_presets_and_old_configs() -> None:
    v3 = BehaviorConfig.dreamerv3()
    assert (v3.actor_dist, v3.bootstrap, v3.actor_grad) == ("normal", "online", "dynamics")
    assert (v3.actor_min_std, v3.actor_max_std) == (0.1, 1.0)
    # A config saved before these fields existed loads as what it was trained with.
    old = BehaviorConfig.dreamerv3().to_dict()
    del old["actor_dist"], old["bootstrap"]
    loaded = BehaviorConfig.from_dict(old)
    assert (loaded.actor_dist, loaded.bootstrap) == ("tanh_normal", "slow")


@ACTORS
def test_actor_critic_learns_the_rewarded_action(actor: dict) -> None:
    model = bandit_rssm()
    config = BehaviorConfig.tiny(actor_lr=3e-3, critic_lr=3e-3, **actor)
    ac = ActorCritic.for_model(model, config)
    start = posterior(model, batch=8).detach().flatten_batch()
    with torch.no_grad():
        first = ac.policy(start.feature(), deterministic=True)
    assert float((first - TARGET).abs().mean()) > 0.3
    for _ in range(150):
        metrics = ac.update(model, start)
    with torch.no_grad():
        last = ac.policy(start.feature(), deterministic=True)
    assert float((last - TARGET).abs().mean()) < 0.05
    assert float((last - TARGET).abs().max()) < 0.15
    # Imagined rewards approach the optimum of 0 (they are -(a - 0.5)^2 per step).
    assert metrics["reward_mean"] > -0.01


@ACTORS
def test_online_bootstrap_uses_the_critic_and_keeps_the_actor_loss_out_of_its_gradient(actor: dict) -> None:
    model = tiny_rssm()
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(**{**actor, "bootstrap": "online", "critic_type": "mse"}))
    ac.update(model, posterior(model))  # the critic and its slow copy now differ
    reference = copy.deepcopy(ac)
    start = posterior(model)
    torch.manual_seed(1)
    ac.update(model, start)  # the critic's .grad stays after its step
    torch.manual_seed(1)
    model.requires_grad_(False)
    traj = reference.imagine(model, start)  # the same draws as inside the update
    torch.testing.assert_close(traj["values"], reference.critic(traj["features"]))
    torch.testing.assert_close(traj["slow_values"], reference.slow_critic(traj["features"]))
    assert not torch.allclose(traj["values"], traj["slow_values"])
    weights = traj["weights"][:-1]
    loss = reference.critic_loss(traj["features"][:-1], traj["returns"], weights, traj["slow_values"][:-1])
    loss.backward()
    # The critic's gradient is its own loss's alone: the actor's loss, which reaches the
    # imagined features through the critic's values, wrote nothing into it.
    for got, want in zip(ac.critic.parameters(), reference.critic.parameters()):
        torch.testing.assert_close(got.grad, want.grad)


@pytest.mark.parametrize("dynamics_baseline", [False, True])
def test_the_dynamics_objective_is_the_normalised_return_or_advantage(dynamics_baseline: bool) -> None:
    """The actor's update follows -(w (R_t - v(s_t)) / S + eta H) with the baseline, or
    -(w R_t / S + eta H) without: its gradient matches the one of that loss written out."""
    model = tiny_rssm()
    config = BehaviorConfig.tiny(**{**V3_ACTOR, "dynamics_baseline": dynamics_baseline, "critic_type": "mse"})
    ac = ActorCritic.for_model(model, config)
    ac.update(model, posterior(model))  # a nonzero critic, so the baseline matters
    reference = copy.deepcopy(ac)
    start = posterior(model)
    torch.manual_seed(1)
    ac.update(model, start)
    torch.manual_seed(1)
    model.requires_grad_(False)
    traj = reference.imagine(model, start)
    scale = reference.return_norm.update(traj["returns"])
    advantage = traj["returns"] - (traj["values"][:-1] if dynamics_baseline else 0.0)
    loss = -(traj["weights"][:-1] * (advantage / scale + config.entropy_coef * traj["entropies"])).mean()
    loss.backward()
    for got, want in zip(ac.actor.parameters(), reference.actor.parameters()):
        torch.testing.assert_close(got.grad, want.grad)


def test_imagine_starts_draws_that_many_distinct_start_states() -> None:
    model = tiny_rssm()
    model.requires_grad_(False)
    start = posterior(model, batch=8, steps=4).detach().flatten_batch()  # 32 states
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(imagine_starts=7))
    traj = ac.imagine(model, start)
    assert traj["features"].shape[1] == 7
    chosen = traj["features"][0, :, : model.config.deter]  # s_0 of each trajectory
    matches = (chosen[:, None, :] == start.deter[None, :, :]).all(-1)  # [7, 32]
    assert bool((matches.sum(1) == 1).all()), "every start is one of the batch's states"
    assert len(set(matches.float().argmax(1).tolist())) == 7, "drawn without replacement"
    # More starts than states keeps them all.
    all_starts = ActorCritic.for_model(model, BehaviorConfig.tiny(imagine_starts=100)).imagine(model, start)
    assert all_starts["features"].shape[1] == 32


def test_critic_loss_reuses_given_slow_values_exactly() -> None:
    torch.manual_seed(0)
    ac = ActorCritic(BehaviorConfig.tiny(), feature_size=8, action_dim=1)
    # Both critics random (the output layer starts at zero, which makes every target cost
    # the same), and different from each other.
    for p in [*ac.critic.parameters(), *ac.slow_critic.parameters()]:
        p.data.normal_(0.0, 0.3)
    features, returns = torch.randn(16, 8), torch.randn(16)
    with torch.no_grad():
        slow = ac.slow_critic(features)
    torch.testing.assert_close(ac.critic_loss(features, returns, slow_values=slow), ac.critic_loss(features, returns))
    assert not torch.allclose(ac.critic_loss(features, returns, slow_values=slow + 5.0), ac.critic_loss(features, returns))


@pytest.mark.parametrize("critic_type", ["twohot", "mse"])
def test_critic_losses_in_one_pass_equal_the_separate_losses_and_their_gradients(critic_type: str) -> None:
    torch.manual_seed(0)
    critic = ActorCritic(BehaviorConfig.tiny(critic_type=critic_type), feature_size=8, action_dim=1).critic
    for p in critic.parameters():
        p.data.normal_(0.0, 0.3)
    features, returns, slow = torch.randn(16, 8), 3.0 * torch.randn(16), torch.randn(16)
    together = critic.losses(features, (returns, slow))
    separate = [critic.loss(features, returns), critic.loss(features, slow)]
    for a, b in zip(together, separate):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(together[0], together[1]), "the two targets give different losses"

    def gradients(weighted_loss: torch.Tensor) -> list[torch.Tensor]:
        critic.zero_grad()
        weighted_loss.mean().backward()
        return [p.grad.clone() for p in critic.parameters()]

    one_pass = gradients(together[0] + 0.5 * together[1])
    two_passes = gradients(critic.loss(features, returns) + 0.5 * critic.loss(features, slow))
    for a, b in zip(one_pass, two_passes):
        torch.testing.assert_close(a, b)


def test_bfloat16_update_matches_float32_and_keeps_sums_in_float32() -> None:
    model = bandit_rssm()
    model.requires_grad_(False)
    start = posterior(model, batch=8).detach().flatten_batch()
    learners = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(1)
        learners[precision] = ActorCritic.for_model(model, BehaviorConfig.tiny(precision=precision))
    torch.manual_seed(2)
    traj = learners["bfloat16"].imagine(model, start)
    for key in ("rewards", "values", "returns", "log_probs", "entropies"):
        assert traj[key].dtype == torch.float32, key
    metrics = {}
    for precision, ac in learners.items():
        torch.manual_seed(2)  # the same imagination noise for both
        metrics[precision] = ac.update(model, start)
    for key in ("actor_loss", "critic_loss", "return_mean"):
        a, b = metrics["float32"][key], metrics["bfloat16"][key]
        assert math.isfinite(b)
        assert abs(a - b) <= 0.03 * abs(a) + 1e-3, (key, a, b)
    assert metrics["float32"]["actor_loss"] != metrics["bfloat16"]["actor_loss"], "autocast did not run"
    # And a bfloat16 learner still learns the bandit's action.
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(actor_lr=3e-3, critic_lr=3e-3, precision="bfloat16"))
    for _ in range(150):
        ac.update(model, start)
    with torch.no_grad():
        last = ac.policy(start.feature(), deterministic=True)
    assert float((last - TARGET).abs().mean()) < 0.05


# ---------------------------------------------------------------------------- control


def test_actor_controller_filters_and_acts() -> None:
    model = tiny_rssm()
    model.plan_with_samples = False  # deterministic filtering, so the manual path matches
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny())
    ctrl = ActorController(model, ac, deterministic=True, device="cpu")
    g = np.random.default_rng(0)
    obs1, obs2 = g.standard_normal(2).astype(np.float32), g.standard_normal(2).astype(np.float32)
    a1, a2 = ctrl.act(obs1), ctrl.act(obs2)
    assert a1.shape == (1,) and a1.dtype == np.float32
    with torch.no_grad():
        z1 = model.observe(None, None, torch.from_numpy(obs1)[None])
        m1 = ac.policy(z1, deterministic=True)
        z2 = model.observe(z1, m1, torch.from_numpy(obs2)[None])  # the last action is carried
        m2 = ac.policy(z2, deterministic=True)
    np.testing.assert_allclose(a1, m1[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(a2, m2[0].numpy(), rtol=1e-6)
    ctrl.reset()
    np.testing.assert_allclose(ctrl.act(obs1), a1, rtol=1e-6)  # reset drops the latent
    ctrl.reset()
    batch = ctrl.act(np.stack([obs1, obs2, obs1]))
    assert batch.shape == (3, 1)
    with pytest.raises(ValueError, match="batch size"):
        ctrl.act(np.stack([obs1, obs2]))
    with pytest.raises(ValueError, match="shape"):
        ctrl.act(np.zeros((1, 1, 2), np.float32))


def test_actor_guides_the_planner() -> None:
    model = bandit_rssm()
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny())
    # Make the actor's mean exactly the rewarded action: tanh(5 tanh(mu / 5)) = 0.5.
    last = ac.actor.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[0] = 5.0 * math.atanh(math.atanh(TARGET) / 5.0)
    obs = np.array([0.3, -0.7], np.float32)

    def plan(num_proposals: int) -> np.ndarray:
        guided = ActorGuidedModel(model, ac, deterministic=True)
        cem = CEM(action_dim=1, horizon=3, num_samples=16, num_elites=4, iterations=2, output="best")
        ctrl = MPCController(guided, cem, num_proposals=num_proposals, device="cpu", seed=0)
        assert ctrl.num_proposals == num_proposals
        return ctrl.act(obs)

    # The actor's sequence (0.5 at every step) is the optimum, so it wins as a proposal;
    # random candidates alone do not hit it exactly.
    np.testing.assert_allclose(plan(2), [TARGET], atol=1e-5)
    assert abs(float(plan(0)[0]) - TARGET) > 1e-3

    guided = ActorGuidedModel(model, ac, use_value=True)
    z = model.encode(torch.from_numpy(obs)[None])
    assert guided.value(z).shape == (1,) and guided.policy(z).shape == (1, 1)
    assert not hasattr(ActorGuidedModel(model, ac), "value")


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path) -> None:
    model = tiny_rssm()
    ac = ActorCritic.for_model(model, BehaviorConfig.tiny(critic_type="mse"))
    for _ in range(2):
        ac.update(model, posterior(model))
    path = tmp_path / "behavior.pt"
    ac.save(path, include_optimizers=True)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model"] == "behavior" and ckpt["format_version"] == 1
    loaded = ActorCritic.from_checkpoint(ckpt, feature_size=model.config.feature_size, action_dim=1)
    assert loaded.config == ac.config
    for (k, v), (k2, v2) in zip(ac.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert int(loaded.return_norm.count) == 2
    z = torch.randn(5, model.config.feature_size)
    torch.testing.assert_close(loaded.policy(z, True), ac.policy(z, True))
    torch.testing.assert_close(loaded.value(z), ac.value(z))
    assert loaded.actor_optimizer.state_dict()["state"].keys() == ac.actor_optimizer.state_dict()["state"].keys()
    with pytest.raises(ValueError, match="action_dim"):
        ActorCritic.from_checkpoint(ckpt, action_dim=3)
    with pytest.raises(ValueError, match="rssm"):
        ActorCritic.from_checkpoint(model.checkpoint())
    with pytest.raises(FileNotFoundError):
        ActorCritic.load(tmp_path / "missing.pt")
