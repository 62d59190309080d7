"""The gathering first layers over one-hot latents (models/onehot_linear.py) compute what the
dense layers computed: values, gradients and whole dreamer updates, old against new."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.behavior import ActorCritic, BehaviorConfig
from models.onehot_linear import OneHotFeature, apply_mlp, linear_on_feature, onehot_weight_grad
from models.rssm import RSSM, RSSMConfig
from tests.fixtures.dreamer_update import FIXTURE, one_update


def straight_through_sample(m: int, groups: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probs (a leaf), the straight-through one-hot sample [m, groups * classes] built as the
    RSSM builds it, and the sampled classes [m, groups]."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(m, groups, classes, generator=g).softmax(-1).requires_grad_()
    index = torch.randint(0, classes, (m, groups), generator=g)
    sample = (F.one_hot(index, classes).float() + (probs - probs.detach())).flatten(-2)
    return probs, sample, index


def test_both_ways_to_the_onehot_weight_gradient_equal_the_dense_product() -> None:
    """The sparse product (CPU) and the per-group index_add_ (CUDA, recordable in a CUDA
    graph) both give grad^T @ onehot."""
    m, groups, classes, out = 50, 4, 8, 6
    _, sample, index = straight_through_sample(m, groups, classes, seed=3)
    flat = index + torch.arange(groups) * classes
    grad = torch.randn(m, out, generator=torch.Generator().manual_seed(4))
    dense = grad.t() @ sample.detach()
    for by_index_add in (False, True):
        torch.testing.assert_close(onehot_weight_grad(grad, flat, groups * classes, by_index_add), dense)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_on_feature_equals_the_dense_layer_with_gradients(bias: bool) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(6 + 4 * 5, 7, bias=bias)
    probs, sample, index = straight_through_sample(9, 4, 5, seed=1)
    dense = torch.randn(9, 6, requires_grad=True)
    upstream = torch.randn(9, 7)
    leaves = [dense, probs, layer.weight] + ([layer.bias] if bias else [])

    expected = layer(torch.cat([dense, sample], -1))
    expected_grads = torch.autograd.grad(expected, leaves, upstream)
    got = linear_on_feature(layer, OneHotFeature(dense, sample, index))
    got_grads = torch.autograd.grad(got, leaves, upstream)

    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)
    # The straight-through gradient reaches the probabilities (it is not dropped).
    assert got_grads[1].abs().sum() > 0


def test_leading_dimensions_and_detached_inputs() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3 + 2 * 4, 5)
    _, sample, index = straight_through_sample(4 * 6, 2, 4, seed=2)
    dense = torch.randn(4, 6, 3)
    x = OneHotFeature(dense, sample.detach().reshape(4, 6, 8), index.reshape(4, 6, 2))
    assert x.shape == (4, 6, 11)
    out = linear_on_feature(layer, x)
    assert out.shape == (4, 6, 5)
    torch.testing.assert_close(out, layer(x.tensor()))
    (grad_w,) = torch.autograd.grad(out.square().sum(), [layer.weight])
    (expected_w,) = torch.autograd.grad(layer(x.tensor()).square().sum(), [layer.weight])
    torch.testing.assert_close(grad_w, expected_w)


def test_mlp_and_feature_parts_helpers() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3 + 8, 16), nn.LayerNorm(16), nn.SiLU(), nn.Linear(16, 2))
    _, sample, index = straight_through_sample(10, 2, 4, seed=3)
    x = OneHotFeature(torch.randn(10, 3), sample, index)
    torch.testing.assert_close(apply_mlp(net, x), net(x.tensor()))
    both = OneHotFeature.cat([x[:4].map(lambda t: t.unsqueeze(0)), x[4:8].map(lambda t: t.unsqueeze(0))])
    assert both.shape == (2, 4, 11)
    torch.testing.assert_close(both.detach().tensor()[1], x[4:8].tensor())


def test_autocast_gathers_with_low_precision_products() -> None:
    """Under bfloat16 autocast the gathering layer is the autocast Linear to bfloat16
    rounding, in values and in the gradients of its weights and inputs, and its output
    stays float32 (the gathered part is an exact sum of float32 weights)."""
    torch.manual_seed(0)
    layer = nn.Linear(6 + 4 * 8, 16)
    logits, sample, index = straight_through_sample(64, 4, 8, seed=4)
    dense = torch.randn(64, 6, requires_grad=True)
    x = OneHotFeature(dense, sample, index)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = linear_on_feature(layer, x), layer(x.tensor())
    assert got.dtype == torch.float32 and expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected.float(), rtol=2e-2, atol=2e-2)
    weights = torch.randn(64, 16)
    grads = torch.autograd.grad((got * weights).sum(), [layer.weight, layer.bias, dense, logits])
    expected_grads = torch.autograd.grad((expected.float() * weights).sum(), [layer.weight, layer.bias, dense, logits])
    for a, b in zip(grads, expected_grads):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)
    # Not the float32 layer: the products really ran in bfloat16.
    assert not torch.allclose(got, layer(x.tensor()), rtol=1e-6, atol=1e-6)


def test_discrete_states_carry_their_classes() -> None:
    model = RSSM(RSSMConfig.tiny("state", (3,), 1, latent="discrete"))
    out = model.loss({"obs": torch.randn(2, 5, 3), "actions": torch.rand(2, 5, 1), "rewards": torch.rand(2, 5)})
    post = out.posterior
    assert post.index is not None and post.index.shape == (2, 5, 4)
    one_hot = post.stoch.detach().unflatten(-1, (4, 4))
    assert torch.equal(F.one_hot(post.index, 4).float(), one_hot)
    parts = post.feature_parts()
    assert isinstance(parts, OneHotFeature) and torch.equal(parts.tensor(), post.feature())
    gaussian = RSSM(RSSMConfig.tiny("state", (3,), 1, latent="gaussian"))
    g_post = gaussian.loss({"obs": torch.randn(2, 5, 3), "actions": torch.rand(2, 5, 1), "rewards": torch.rand(2, 5)})
    assert g_post.posterior.index is None and isinstance(g_post.posterior.feature_parts(), torch.Tensor)


def _close(new: float, old: float, scale: float, what: str) -> None:
    assert abs(new - old) <= 1e-4 * scale + 1e-7, f"{what}: {new} != {old}"


def test_dreamer_update_reproduces_the_dense_implementation() -> None:
    """Old against new: the fixture was written by the dense code before the gathering
    layers; one world-model step and one actor-critic step from the same seeds give the
    same losses, gradient norms, parameters and gradients."""
    old = json.loads(FIXTURE.read_text())
    new = one_update()
    _close(new["world_model_loss"], old["world_model_loss"], abs(old["world_model_loss"]), "world-model loss")
    for name, value in old["metrics"].items():
        _close(new["metrics"][name], value, abs(value), name)
    for section in ("parameters", "gradients"):
        assert set(new[section]) == set(old[section])
        for name, summary in old[section].items():
            scale = summary[1]  # sum of |x|
            for i, (n, o) in enumerate(zip(new[section][name], summary)):
                _close(n, o, scale, f"{section} {name}[{i}]")


def test_sparse_and_dense_updates_agree_at_the_recipe_shapes() -> None:
    """sparse_onehot=True against False on the same start states and seeds, at the
    recipe's latent sizes (32 x 32 classes, 200 deter) with small networks."""
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.dreamerv3("state", (5,), 1, hidden=32, embed=32))
    out = model.loss({"obs": torch.randn(2, 8, 5), "actions": torch.rand(2, 8, 1), "rewards": torch.rand(2, 8)})
    start = out.posterior.detach()
    results = []
    for sparse in (False, True):
        torch.manual_seed(1)
        learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(actor_hidden=(32,), critic_hidden=(32,),
                                                                        horizon=5, sparse_onehot=sparse))  # fmt: skip
        with torch.no_grad():
            learner.critic.net[-1].weight.normal_(0.0, 0.1)
            learner.slow_critic.load_state_dict(learner.critic.state_dict())
        torch.manual_seed(2)
        metrics = learner.update(model, start)
        results.append((metrics, {k: p.detach().clone() for k, p in learner.named_parameters()}))
    (m_dense, p_dense), (m_sparse, p_sparse) = results
    for name in m_dense:
        assert m_sparse[name] == pytest.approx(m_dense[name], rel=1e-4, abs=1e-7), name
    for name in p_dense:
        torch.testing.assert_close(p_sparse[name], p_dense[name], rtol=1e-5, atol=1e-6)


def test_bfloat16_updates_gather_and_agree_with_the_dense_layers(monkeypatch) -> None:
    """Under the bfloat16 actor-critic the gathering path runs (it used to step aside for
    the dense layers) and the update agrees with the dense layers' to bfloat16 rounding."""
    import models.onehot_linear as onehot_module

    calls = []
    original = onehot_module.onehot_linear

    def counting(*args, **kwargs):
        calls.append(kwargs.get("compute_dtype", args[-1] if len(args) > 6 else None))
        return original(*args, **kwargs)

    monkeypatch.setattr(onehot_module, "onehot_linear", counting)
    torch.manual_seed(0)
    model = RSSM(RSSMConfig.dreamerv3("state", (5,), 1, hidden=32, embed=32))
    out = model.loss({"obs": torch.randn(2, 8, 5), "actions": torch.rand(2, 8, 1), "rewards": torch.rand(2, 8)})
    start = out.posterior.detach()
    metrics = {}
    for sparse in (False, True):
        torch.manual_seed(1)
        learner = ActorCritic.for_model(model, BehaviorConfig.dreamerv3(actor_hidden=(32,), critic_hidden=(32,), horizon=5,
                                                                        sparse_onehot=sparse, precision="bfloat16"))  # fmt: skip
        with torch.no_grad():
            learner.critic.net[-1].weight.normal_(0.0, 0.1)
            learner.slow_critic.load_state_dict(learner.critic.state_dict())
        calls.clear()
        torch.manual_seed(2)
        metrics[sparse] = learner.update(model, start)
        assert (len(calls) > 0) == sparse
        assert all(dtype == torch.bfloat16 for dtype in calls)
    for name in ("actor_loss", "critic_loss", "return_mean", "value_mean", "reward_mean", "critic_grad_norm"):
        assert metrics[True][name] == pytest.approx(metrics[False][name], rel=3e-2, abs=1e-4), name
