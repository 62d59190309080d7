"""The TD-MPC2 building blocks equal their reference definitions."""

import torch
import torch.nn.functional as F

from models.layers import MLP, LinearEnsemble, TwoHotDecoder, mish, simnorm, symexp, symlog


def test_fast_mish_equals_torch_mish_including_extremes():
    x = torch.cat([torch.linspace(-30, 30, 2001), torch.tensor([-100.0, 100.0, 0.0])])
    assert torch.allclose(mish(x), F.mish(x), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(mish(x)).all()


def test_fast_mish_gradient_equals_torch_mish_gradient():
    x = torch.linspace(-30, 60, 901, requires_grad=True)
    (grad,) = torch.autograd.grad(mish(x).sum(), x)
    y = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.mish(y).sum(), y)
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, expected, atol=1e-5)


def test_simnorm_is_a_softmax_per_group_and_rows_sum_to_one_per_group():
    x = torch.randn(5, 64) * 30  # large logits: the max subtraction must keep it finite
    y = simnorm(x)
    assert torch.allclose(y, F.softmax(x.view(5, 8, 8), dim=-1).view(5, 64), atol=1e-6)
    assert torch.allclose(y.view(5, 8, 8).sum(-1), torch.ones(5, 8), atol=1e-6)


def test_symlog_symexp_round_trip():
    x = torch.tensor([-1e4, -3.0, 0.0, 0.5, 2e3])
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-4)


def test_two_hot_decoder_of_a_peaked_bin_returns_that_bins_value():
    decoder = TwoHotDecoder(bins=101, low=-10, high=10)
    logits = torch.full((2, 101), -1e4)
    logits[0, 60] = 0.0  # support value 2.0 in symlog space
    logits[1, 50] = 0.0  # 0.0
    assert torch.allclose(decoder(logits), torch.tensor([symexp(torch.tensor(2.0)), 0.0]), atol=1e-4)


def test_linear_ensemble_members_equal_separate_mlps():
    torch.manual_seed(0)
    ensemble = LinearEnsemble(3, 6, [16, 16], 4).eval()
    x = torch.randn(7, 6)
    out = ensemble(x)  # [3, 7, 4]
    for e in range(3):
        h = x
        for i in range(2):
            h = h @ ensemble.weights[i][e] + ensemble.biases[i][e]
            h = F.mish(F.layer_norm(h, (16,)) * ensemble.norm_weights[i][e] + ensemble.norm_biases[i][e])
        expected = h @ ensemble.weights[2][e] + ensemble.biases[2][e]
        assert torch.allclose(out[e], expected, atol=1e-5)
    subset = ensemble(x, members=torch.tensor([2, 0]))
    assert torch.allclose(subset, out[[2, 0]], atol=1e-6)


def test_mlp_learns_a_simple_regression():
    torch.manual_seed(0)
    mlp = MLP(2, [32, 32], 1)
    opt = torch.optim.Adam(mlp.parameters(), lr=3e-3)
    x = torch.randn(256, 2)
    y = (x[:, :1] * x[:, 1:]).tanh()
    first = None
    for _ in range(200):
        loss = F.mse_loss(mlp(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_simnorm_gradient_matches_softmax_gradient():
    x = torch.randn(3, 16, requires_grad=True)
    weights = torch.randn(3, 16)
    (grad,) = torch.autograd.grad((simnorm(x) * weights).sum(), x)
    y = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((F.softmax(y.view(3, 2, 8), -1).view(3, 16) * weights).sum(), y)
    assert torch.allclose(grad, expected, atol=1e-6)
