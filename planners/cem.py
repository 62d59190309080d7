"""The cross-entropy method (CEM) for action sequences.

Rubinstein's CEM as used for planning by PlaNet (Hafner et al., 2019, "Learning Latent
Dynamics for Planning from Pixels"): sample from a diagonal Gaussian over the sequence,
refit it to the top-K candidates with equal weights, repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from planners.base import SamplingPlanner, uniform_elite_weights
from planners.config import PlannerConfig

__all__ = ["CEM", "CEMConfig"]


@dataclass(frozen=True)
class CEMConfig(PlannerConfig):
    """CEM settings; see `PlannerConfig`. The defaults are a general-purpose CEM."""

    horizon: int = 12
    num_samples: int = 1000
    num_elites: int = 100
    iterations: int = 10
    init_std: float = 1.0


class CEM(SamplingPlanner[CEMConfig]):
    """Cross-entropy method: the elites are refit to with equal weights."""

    config_cls = CEMConfig

    def _elite_weights(self, elite_returns: Tensor) -> Tensor:
        return uniform_elite_weights(elite_returns)

    @classmethod
    def planet(cls, action_dim: int, **overrides: Any) -> CEM:
        """PlaNet's planner (Hafner et al., 2019): horizon 12, 1000 candidates, top 100,
        10 iterations, N(0, 1) at every step with no warm start, execute the first action
        of the final mean. The objective is the sum of predicted rewards (no discount)."""
        settings: dict[str, Any] = dict(
            action_dim=action_dim,
            horizon=12,
            num_samples=1000,
            num_elites=100,
            iterations=10,
            init_std=1.0,
            min_std=0.0,
            max_std=1e9,
            momentum=0.0,
            output="mean",
            use_warm_start=False,
        )
        settings.update(overrides)
        return cls(**settings)
