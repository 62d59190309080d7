"""The fast RSSM training update computes what the step-by-step one computes.

Two changes make the dreamer recipe's update cheaper without changing its numbers:
- `models.rssm.exponential_noise`: the categorical draws' Exp(1) noise from one vectorised
  log1p over `torch.rand`'s float64 uniforms, instead of `Tensor.exponential_`'s serial
  loop on the CPU;
- `RSSM.observe_sequence`: the prior's layers run once over all steps after the scan
  (the recurrence needs only the GRU and the posterior), with the prior's noise still
  drawn at its step.

Each is checked against a reference written here from the public step functions: the
same samples, losses, gradients and weights after one optimiser step, on the CPU and,
when there is one, on a CUDA device.
"""

from __future__ import annotations

import copy

import pytest
import torch

import models.rssm as rssm_module
from models.behavior import ActorCritic, BehaviorConfig
from models.rssm import RSSM, RSSMConfig, RSSMState, exponential_noise

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_exponential_noise(shape, generator, device, dtype) -> torch.Tensor:
    """What the model drew before: `exponential_`, one call per state."""
    return torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator)


def reference_observe_sequence(model: RSSM, embeds, actions, state0=None, sample=True):
    """The step-by-step filter: `obs_step` at every step."""
    b, t = embeds.shape[:2]
    state = model.initial_state(b, embeds.device) if state0 is None else state0
    posts, priors = [], []
    for i in range(t):
        state, prior = model.obs_step(state, actions[:, i], embeds[:, i], sample)
        posts.append(state)
        priors.append(prior)
    return RSSMState.stack(posts, dim=1), RSSMState.stack(priors, dim=1)


@pytest.fixture
def reference_implementation(monkeypatch):
    """Call to switch the module to the reference draws and filter for the rest of a test."""

    def use_reference() -> None:
        monkeypatch.setattr(rssm_module, "exponential_noise", reference_exponential_noise)
        monkeypatch.setattr(RSSM, "observe_sequence", reference_observe_sequence)

    return use_reference


# ---------------------------------------------------------------------------- the draws


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1024, 32, 32), (16, 32, 32), (7, 3, 5), (1,)])
def test_exponential_noise_is_exponential_bit_for_bit(shape, dtype) -> None:
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        expected = torch.empty(shape, dtype=dtype).exponential_(generator=g)
        expected_next = torch.rand(4, generator=g)  # the generator's state after the draw
        g = torch.Generator().manual_seed(seed)
        got = exponential_noise(shape, g, torch.device("cpu"), dtype)
        assert got.dtype == dtype and tuple(got.shape) == shape
        assert torch.equal(got, expected), (seed, shape, dtype)
        assert torch.equal(torch.rand(4, generator=g), expected_next)


def test_exponential_noise_draws_from_the_global_generator_when_given_none() -> None:
    torch.manual_seed(3)
    expected = torch.empty(64, 32, 32).exponential_()
    torch.manual_seed(3)
    assert torch.equal(exponential_noise((64, 32, 32), None, torch.device("cpu"), torch.float32), expected)


def test_exponential_noise_has_unit_mean() -> None:
    draws = exponential_noise((200_000,), torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32)
    assert draws.min() > 0
    assert abs(float(draws.mean()) - 1.0) < 0.01 and abs(float(draws.var()) - 1.0) < 0.03


# ---------------------------------------------------------------------------- the filter


def small_dreamerv3(device: str = "cpu") -> RSSM:
    torch.manual_seed(0)
    config = RSSMConfig.dreamerv3("state", (5,), 2, deter=32, hidden=32, embed=32, stoch=8, classes=8, free_nats=1.0)
    return RSSM(config).to(device)


def small_planet(**overrides) -> RSSM:
    torch.manual_seed(0)
    return RSSM(RSSMConfig.planet("state", (5,), 2, deter=32, hidden=32, embed=32, stoch=6, **overrides))


def random_batch(b: int, t: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    batch = {
        "obs": torch.randn(b, t, 5, generator=g),
        "actions": 2 * torch.rand(b, t, 2, generator=g) - 1,
        "rewards": torch.rand(b, t, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def assert_states_close(a: RSSMState, b: RSSMState) -> None:
    for name in ("deter", "stoch", "mean", "std", "logits", "index"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            if name == "index":
                assert torch.equal(x, y), name
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("make", [small_dreamerv3, small_planet], ids=["discrete", "gaussian"])
@pytest.mark.parametrize("sample", [True, False], ids=["sampled", "modes"])
def test_observe_sequence_equals_the_step_by_step_filter(make, sample) -> None:
    model = make()
    embeds = torch.randn(4, 9, model.config.embed)
    actions = torch.rand(4, 9, 2) * 2 - 1
    state0 = model.obs_step(model.initial_state(4), actions[:, 0], embeds[:, 0])[0]
    for start in (None, state0):
        torch.manual_seed(5)
        post, prior = model.observe_sequence(embeds, actions, start, sample)
        after = torch.rand(3)
        torch.manual_seed(5)
        ref_post, ref_prior = reference_observe_sequence(model, embeds, actions, start, sample)
        assert_states_close(post, ref_post)
        assert_states_close(prior, ref_prior)
        # The same draws, in the same order: the random stream ends where the reference's does.
        assert torch.equal(torch.rand(3), after)


def test_observe_sequence_draws_with_the_models_generator() -> None:
    model = small_dreamerv3()
    embeds, actions = torch.randn(2, 5, 32), torch.zeros(2, 5, 2)
    model.generator = torch.Generator().manual_seed(11)
    post, prior = model.observe_sequence(embeds, actions)
    model.generator = torch.Generator().manual_seed(11)
    ref_post, ref_prior = reference_observe_sequence(model, embeds, actions)
    assert_states_close(post, ref_post)
    assert_states_close(prior, ref_prior)


# ---------------------------------------------------------------------------- the update


def one_update(model: RSSM, learner: ActorCritic, batch: dict[str, torch.Tensor]) -> dict:
    """One dreamer-recipe update: a world-model step, then an actor-critic step from all
    its posterior states. Returns what it computed and the weights after."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
    torch.manual_seed(21)
    out = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    metrics = learner.update(model, out.posterior.detach())
    return {
        "loss": out.loss.detach(),
        "parts": {k: v.detach() for k, v in out.parts.items()},
        "posterior_index": out.posterior.index,
        "grads": grads,
        "world_model": [p.detach().clone() for p in model.parameters()],
        "actor_critic": [p.detach().clone() for p in learner.parameters()],
        "metrics": metrics,
        "rng_after": torch.rand(3, device=batch["obs"].device),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_fast_update_equals_the_reference_update(device, reference_implementation) -> None:
    model = small_dreamerv3(device)
    torch.manual_seed(1)
    learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(actor_hidden=(32, 32), critic_hidden=(32, 32)))
    batch = random_batch(4, 16, device)
    fast = one_update(copy.deepcopy(model), copy.deepcopy(learner), batch)
    reference_implementation()
    ref = one_update(copy.deepcopy(model), copy.deepcopy(learner), batch)

    torch.testing.assert_close(fast["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
    for key in ref["parts"]:
        torch.testing.assert_close(fast["parts"][key], ref["parts"][key], rtol=1e-5, atol=1e-6, msg=key)
    assert torch.equal(fast["posterior_index"], ref["posterior_index"])
    for a, b in zip(fast["grads"], ref["grads"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(fast["world_model"] + fast["actor_critic"], ref["world_model"] + ref["actor_critic"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for key, value in ref["metrics"].items():
        assert fast["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert torch.equal(fast["rng_after"], ref["rng_after"])


def test_skipping_the_priors_draw_would_change_the_posterior_samples() -> None:
    """Why the scan still draws the prior's noise at each step: without it the posterior's
    draws shift in the random stream, and the comparisons above would catch that."""
    model = small_dreamerv3()
    embeds, actions = torch.randn(4, 9, 32), torch.zeros(4, 9, 2)
    torch.manual_seed(5)
    post, _ = model.observe_sequence(embeds, actions)
    torch.manual_seed(5)
    state, indexes = model.initial_state(4), []
    for i in range(9):
        prior = model.img_step(state, actions[:, i], sample=False)  # no draw for the prior
        stats = model.post_out(model.post_hidden(torch.cat([prior.deter, embeds[:, i]], dim=-1)))
        state = model._state_from_stats(prior.deter, stats, sample=True)
        indexes.append(state.index)
    assert not torch.equal(torch.stack(indexes, dim=1), post.index)
