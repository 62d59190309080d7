"""Linear layers over features whose stochastic part is one-hot, without the one-hot matmul.

An RSSM with discrete latents (DreamerV2/V3: 32 categoricals of 32 classes) feeds its
heads, actor and critic the feature [h, s]: h the GRU state (D = 200 here) and s the
flattened one-hot sample (S x C = 1024 columns, exactly one 1 per group; the
straight-through term `probs - sg(probs)` adds an exact 0 in the forward pass). A dense
`Linear` over [h, s] multiplies 1,024 columns that are almost all zero: on the dreamer
recipe's update these products are the largest share of the cost (the first layers of the
actor, critic, slow critic and the reward and continuation heads over 16 x 1,024 imagined
states).

`onehot_linear` computes the same function and the same gradients with

- forward: W_h h + sum over groups of W_s[:, index] + b, the second term a
  `torch.nn.functional.embedding_bag` (a gather and a sum of 32 rows) instead of a
  [M, 1024] x [1024, O] product;
- weight gradient of W_s: a sparse [S C, M] one-hot matrix times the output gradient
  (while a CUDA graph records, one `index_add_` per group), instead of a
  dense [O, M] x [M, 1024] product;
- input gradient of s (the straight-through path into the categoricals' probabilities):
  the dense g W_s, computed only when s requires a gradient.

Values equal the dense layer's up to float summation order (tested against it, with
gradients and one optimiser step, in tests/test_onehot_linear.py).

Shapes: M any flattened batch, D dense inputs, S groups, C classes, O outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OneHotFeature", "apply_mlp", "linear_on_feature", "onehot_linear", "onehot_weight_grad"]


@dataclass(frozen=True)
class OneHotFeature:
    """A feature [..., D + S*C] = concat(dense, onehot) held in parts, with the classes
    the one-hot groups select.

    Attributes:
        dense: [..., D] (the RSSM's deter h).
        onehot: [..., S * C] exactly one-hot per group of C (may carry a straight-through
            gradient).
        index: [..., S] int64, the class of each group (onehot's argmax per group).
    """

    dense: Tensor
    onehot: Tensor
    index: Tensor

    @property
    def shape(self) -> torch.Size:
        """The shape of the dense feature it stands for."""
        return torch.Size((*self.dense.shape[:-1], self.dense.shape[-1] + self.onehot.shape[-1]))

    def tensor(self) -> Tensor:
        """The dense feature [..., D + S*C]."""
        return torch.cat([self.dense, self.onehot], dim=-1)

    def map(self, fn: Callable[[Tensor], Tensor]) -> OneHotFeature:
        """`fn` applied to each part: a shape operation on the leading dimensions
        (indexing, transpose, flatten) or `detach`."""
        return OneHotFeature(fn(self.dense), fn(self.onehot), fn(self.index))

    def detach(self) -> OneHotFeature:
        return self.map(Tensor.detach)

    def __getitem__(self, index: object) -> OneHotFeature:
        """Indexes the leading dimensions (e.g. `feature[:-1]`)."""
        return self.map(lambda t: t[index])  # type: ignore[index]

    @staticmethod
    def cat(features: Sequence[OneHotFeature], dim: int = 0) -> OneHotFeature:
        """Concatenates along a leading dimension."""
        return OneHotFeature(*(torch.cat([getattr(f, name) for f in features], dim=dim)
                               for name in ("dense", "onehot", "index")))  # fmt: skip


class _OneHotLinear(torch.autograd.Function):
    """y = dense @ w_dense^T + onehot @ w_onehot^T + bias, for `onehot` one-hot at `index`.

    Inputs (2-D): dense [M, D], onehot [M, S*C], index [M, S] (flat: group * C + class),
    w_dense [O, D], w_onehot [O, S*C], bias [O] or None -> [M, O] in the weights' dtype.

    `compute_dtype` is the dtype of the matrix products (the weights' own, or autocast's
    bfloat16 / float16): their operands are cast to it, as autocast casts a Linear's, and
    each product is rounded to it, as the Linear's would be. The gathered sums and the
    one-hot weight gradient are sums of weights and stay in the weights' dtype, and so
    does the output (so the layers after it, a LayerNorm first, see float32).
    """

    @staticmethod
    def forward(ctx, dense, onehot, flat_index, w_dense, w_onehot, bias, compute_dtype):  # type: ignore[override]
        # The one-hot product is the sum of the selected columns of w_onehot. embedding_bag
        # wants its table [S*C, O] contiguous (a strided one is several times slower).
        out = F.embedding_bag(flat_index, w_onehot.t().contiguous(), mode="sum")
        if bias is not None:
            out.add_(bias)
        if compute_dtype == out.dtype and dense.dtype == out.dtype:
            # The dense product accumulates in place into the gathered sum (out-of-place
            # addmm would first copy the [M, O] sum).
            out.addmm_(dense, w_dense.t())
        else:
            out.add_(dense.to(compute_dtype) @ w_dense.to(compute_dtype).t())
        ctx.save_for_backward(dense, flat_index, w_dense, w_onehot)
        ctx.has_bias = bias is not None
        ctx.compute_dtype = compute_dtype
        ctx.onehot_dtype = onehot.dtype
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        dense, flat_index, w_dense, w_onehot = ctx.saved_tensors
        need = ctx.needs_input_grad
        low = ctx.compute_dtype

        def cast(t: Tensor) -> Tensor:
            return t if t.dtype == low else t.to(low)

        g = cast(grad)
        grad_dense = (g @ cast(w_dense)).to(dense.dtype) if need[0] else None
        grad_onehot = (g @ cast(w_onehot)).to(ctx.onehot_dtype) if need[1] else None
        grad_w_dense = (g.t() @ cast(dense)).to(w_dense.dtype) if need[3] else None
        grad_w_onehot = None
        if need[4]:
            grad_w_onehot = onehot_weight_grad(grad, flat_index, w_onehot.shape[1]).to(w_onehot.dtype)
        grad_bias = grad.sum(0) if ctx.has_bias and need[5] else None
        return grad_dense, grad_onehot, None, grad_w_dense, grad_w_onehot, grad_bias, None


def onehot_weight_grad(grad: Tensor, flat_index: Tensor, rows: int, by_index_add: bool | None = None) -> Tensor:
    """The one-hot weight's gradient, grad^T @ onehot, without the one-hot matrix:
    column j sums the output gradients of the samples that select j.

    Two ways, equal up to float summation order:
    - a sparse [S*C, M] selection matrix times grad (`torch.sparse.mm`): the fast one on
      a CPU;
    - one `index_add_` per group: on CUDA, where `torch.sparse.mm` coalesces its sparse
      operand, a step that waits on the host and so cannot be recorded in a CUDA graph.
    `by_index_add` None picks the second while a CUDA graph is recording (eager CUDA
    keeps the sparse product and its fixed summation order).

    Shapes: grad [M, O], flat_index [M, S] (group * C + class), rows = S*C -> [O, S*C].
    """
    if by_index_add is None:
        by_index_add = grad.is_cuda and torch.cuda.is_current_stream_capturing()
    m, s = flat_index.shape
    if by_index_add:
        table = grad.new_zeros(rows, grad.shape[1])
        for group in range(s):  # groups select disjoint rows; one [M, O] add each, not an [M*S, O] copy
            table.index_add_(0, flat_index[:, group], grad)
        return table.t()
    sample = torch.arange(m, device=grad.device).repeat_interleave(s)
    selection = torch.sparse_coo_tensor(
        torch.stack([flat_index.reshape(-1), sample]),
        torch.ones(m * s, device=grad.device, dtype=grad.dtype),
        (rows, m),
        check_invariants=False,
    )  # [S*C, M]: the one-hot inputs, transposed
    return torch.sparse.mm(selection, grad).t()


def onehot_linear(
    dense: Tensor,
    onehot: Tensor,
    index: Tensor,
    w_dense: Tensor,
    w_onehot: Tensor,
    bias: Tensor | None,
    compute_dtype: torch.dtype | None = None,
) -> Tensor:
    """A linear map of concat(dense, onehot) (in whatever column order the weights were
    sliced from) with the one-hot part computed by gathering.

    `compute_dtype` (default: the weights' dtype) is the dtype of the dense matrix
    products; the output has the weights' dtype.

    Shapes:
        dense [..., D], onehot [..., S * C] one-hot at index [..., S] (int64 classes),
        w_dense [O, D], w_onehot [O, S * C], bias [O] or None -> [..., O].
    """
    lead = dense.shape[:-1]
    groups = index.shape[-1]
    classes = onehot.shape[-1] // groups
    offsets = torch.arange(groups, device=index.device) * classes
    flat_index = (index.reshape(-1, groups) + offsets).contiguous()
    out = _OneHotLinear.apply(dense.reshape(-1, dense.shape[-1]), onehot.reshape(-1, onehot.shape[-1]), flat_index,
                              w_dense, w_onehot, bias, compute_dtype or w_dense.dtype)  # fmt: skip
    return out.reshape(*lead, out.shape[-1])


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _fast_path_applies(layer: nn.Module, x: OneHotFeature) -> bool:
    # float32 weights; the dense input in float32 or, under autocast, in its low precision.
    if not isinstance(layer, nn.Linear) or layer.weight.dtype != torch.float32:
        return False
    device = x.dense.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device) in _LOW_PRECISION and x.dense.dtype in (torch.float32, *_LOW_PRECISION)
    return x.dense.dtype == torch.float32


def linear_on_feature(layer: nn.Linear, x: OneHotFeature) -> Tensor:
    """`layer(x.tensor())`, computed with `onehot_linear`. [..., D + S*C] -> [..., O].

    Under autocast the dense products run in autocast's dtype, as the Linear's would, and
    the output stays float32 (the gathered part is an exact sum of float32 weights).
    """
    if not _fast_path_applies(layer, x):
        return layer(x.tensor())
    d = x.dense.shape[-1]
    device = x.dense.device.type
    compute = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    with torch.autocast(device, enabled=False):
        return onehot_linear(x.dense, x.onehot, x.index, layer.weight[:, :d], layer.weight[:, d:], layer.bias, compute)


def apply_mlp(net: nn.Sequential, x: Tensor | OneHotFeature) -> Tensor:
    """`net(x)` for a Sequential whose first module is a Linear over the feature; a
    `OneHotFeature` goes through the first layer with `linear_on_feature`."""
    if not isinstance(x, OneHotFeature):
        return net(x)
    h = linear_on_feature(net[0], x)
    for module in list(net)[1:]:
        h = module(h)
    return h
