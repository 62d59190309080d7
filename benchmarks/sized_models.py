"""Randomly initialised models with the shapes of published world models, for timing planners.

Only the computation matters here, not what the weights predict: a plan call over these
costs what it costs over a trained model of the same size.

- `TDMPC2Shaped`: TD-MPC2's latent dynamics, reward head, policy prior and Q ensemble
  (ANCHORS section 2; sizes 1M and 5M).
- `RSSMShaped`: PlaNet's recurrent state-space model prior (GRU 200, stochastic 30,
  200-unit layers) and reward head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import MLP, LinearEnsemble, TwoHotDecoder, simnorm


@dataclass(frozen=True)
class TDMPC2Size:
    """TD-MPC2 model size (Hansen et al., 2024, Table of model sizes)."""

    name: str
    mlp_dim: int
    latent_dim: int
    num_q: int


TDMPC2_SIZES = {
    "1M": TDMPC2Size("1M", mlp_dim=384, latent_dim=128, num_q=2),
    "5M": TDMPC2Size("5M", mlp_dim=512, latent_dim=512, num_q=5),
}


class TDMPC2Shaped(nn.Module):
    """TD-MPC2's planning-time computation over random weights.

    next:   MLP(z, a) -> SimNorm latent           [M, Z], [M, A] -> [M, Z]
    reward: MLP(z, a) -> 101 two-hot bins -> value [M, Z], [M, A] -> [M]
    policy: MLP(z) -> tanh-Gaussian sample         [M, Z] -> [M, A]
    value:  mean of 2 random Q heads at (z, policy(z)), the Q heads an ensemble.
    """

    def __init__(self, size: TDMPC2Size, action_dim: int, bins: int = 101) -> None:
        super().__init__()
        z, h, a = size.latent_dim, size.mlp_dim, action_dim
        self.latent_dim = z
        self.dynamics = MLP(z + a, [h, h], z)
        self.reward_head = MLP(z + a, [h, h], bins)
        self.policy_head = MLP(z, [h, h], 2 * a)
        self.q_heads = LinearEnsemble(size.num_q, z + a, [h, h], bins, dropout=0.01)
        self.two_hot = TwoHotDecoder(bins)
        self.generator: torch.Generator | None = None

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        return simnorm(self.dynamics(torch.cat([z, action], dim=-1)))

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        return self.two_hot(self.reward_head(torch.cat([z, action], dim=-1)))

    def policy(self, z: Tensor) -> Tensor:
        mean, log_std = self.policy_head(z).chunk(2, dim=-1)
        log_std = -10 + 0.5 * (2 - (-10)) * (torch.tanh(log_std) + 1)  # TD-MPC2's [-10, 2] squash
        noise = torch.randn(mean.shape, generator=self.generator, device=mean.device)
        return torch.tanh(mean + noise * log_std.exp())

    def value(self, z: Tensor) -> Tensor:
        action = self.policy(z)
        members = torch.randperm(self.q_heads.num, generator=self.generator, device=z.device)[:2]
        q = self.q_heads(torch.cat([z, action], dim=-1), members=members)  # [2, M, bins]
        return self.two_hot(q).mean(dim=0)


class RSSMShaped(nn.Module):
    """PlaNet's RSSM prior step and reward head over random weights.

    Latent z = [deterministic h (200), stochastic s (30)]: [M, 230].
    next:   h' = GRU(ELU(Linear(s, a)), h); s' ~ N(mu(h'), softplus(.) + 0.1)
    reward: MLP(h, s) -> scalar
    """

    def __init__(self, action_dim: int, deter: int = 200, stoch: int = 30, hidden: int = 200) -> None:
        super().__init__()
        self.deter, self.stoch = deter, stoch
        self.embed = nn.Linear(stoch + action_dim, hidden)
        self.gru = nn.GRUCell(hidden, deter)
        self.prior_hidden = nn.Linear(deter, hidden)
        self.prior_out = nn.Linear(hidden, 2 * stoch)
        self.reward_head = nn.Sequential(
            nn.Linear(deter + stoch, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.generator: torch.Generator | None = None

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        h, s = z.split([self.deter, self.stoch], dim=-1)
        h = self.gru(F.elu(self.embed(torch.cat([s, action], dim=-1))), h)
        mean, std = self.prior_out(F.elu(self.prior_hidden(h))).chunk(2, dim=-1)
        std = F.softplus(std) + 0.1
        s = mean + std * torch.randn(mean.shape, generator=self.generator, device=mean.device)
        return torch.cat([h, s], dim=-1)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        return self.reward_head(z).squeeze(-1)
