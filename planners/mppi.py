"""Model-predictive path integral control (MPPI) for action sequences.

Williams et al. (2017, "Information Theoretic MPC for Model-Based Reinforcement
Learning") weight every sample by exp(R / temperature). TD-MPC2 (Hansen et al., 2024)
iterates this over the top-K samples and refits the std as well; both are this class
(num_elites=None uses every sample; update_std=False keeps the std fixed).

Temperature convention: weights are exp((R - R_max) / temperature), so a smaller
temperature is greedier, as in Williams et al. and pytorch_mppi. TD-MPC2 writes the
inverse: its "temperature 0.5" multiplies the returns, which is temperature=2.0 here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from planners.base import SamplingPlanner
from planners.config import PlannerConfig

__all__ = ["MPPI", "MPPIConfig"]


@dataclass(frozen=True)
class MPPIConfig(PlannerConfig):
    """MPPI settings; see `PlannerConfig`.

    Attributes:
        temperature: lambda in exp((R - R_max) / lambda); > 0, smaller is greedier.
        num_elites: the K best samples weighted in each refit; None weights all of them.
    """

    horizon: int = 10
    num_samples: int = 512
    num_elites: int | None = 64  # type: ignore[assignment]
    iterations: int = 6
    init_std: float = 1.0
    temperature: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature={self.temperature!r} must be a positive finite number")

    def _check_elites(self) -> None:
        if self.num_elites is not None:
            super()._check_elites()

    def elites_in(self, population: int) -> int:
        return population if self.num_elites is None else min(self.num_elites, population)


class MPPI(SamplingPlanner[MPPIConfig]):
    """MPPI: the elites are refit to with softmax weights exp((R - R_max) / temperature)."""

    config_cls = MPPIConfig

    def _elite_weights(self, elite_returns: Tensor) -> Tensor:
        best = elite_returns[:, :1]  # [B, 1], sorted best first
        # Subtracting the best return keeps exp() in range whatever the scale of returns;
        # rows with no finite return use 0 instead so that the row stays NaN-free.
        shift = torch.where(best.isfinite(), best, torch.zeros_like(best))
        logits = (elite_returns - shift) / self.config.temperature
        weights = logits.exp()  # exp(-inf) = 0 for non-finite returns
        return weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-30)

    @classmethod
    def tdmpc2(cls, action_dim: int, **overrides: Any) -> MPPI:
        """TD-MPC2's planner (Hansen et al., 2024; `tdmpc2.py::_plan`).

        512 samples of which 24 are guide-policy sequences (pass them as `proposals`),
        64 elites, 6 iterations (8 when action_dim >= 20), horizon 3, std in [0.05, 2]
        starting at 2, TD-MPC2's temperature 0.5 (2.0 in our convention), no momentum,
        warm start from the shifted mean, output an elite drawn by its weight.
        """
        settings: dict[str, Any] = dict(
            action_dim=action_dim,
            horizon=3,
            num_samples=512,
            num_elites=64,
            iterations=8 if action_dim >= 20 else 6,
            init_std=2.0,
            min_std=0.05,
            max_std=2.0,
            temperature=2.0,
            momentum=0.0,
            output="sample_elite",
            num_proposals=24,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def classic(cls, action_dim: int, **overrides: Any) -> MPPI:
        """Single-update MPPI as in Williams et al. (2017) and pytorch_mppi: every sample
        weighted, one refit per call, fixed noise std, output the mean."""
        settings: dict[str, Any] = dict(
            action_dim=action_dim,
            horizon=15,
            num_samples=500,
            num_elites=None,
            iterations=1,
            init_std=1.0,
            temperature=1.0,
            update_std=False,
            output="mean",
        )
        settings.update(overrides)
        return cls(**settings)
