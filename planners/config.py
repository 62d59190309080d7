"""Frozen configuration shared by the sampling-based planners.

Each planner has a config dataclass (`CEMConfig`, `MPPIConfig`, `ICEMConfig`) that
extends `PlannerConfig`. Configs validate themselves on construction, so a bad value is
reported where it is written, not deep inside a planning call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

__all__ = ["PlannerConfig", "OutputMode", "Bound", "OUTPUT_MODES", "build_config"]

OutputMode = Literal["mean", "best", "sample_elite"]
OUTPUT_MODES: tuple[str, ...] = ("mean", "best", "sample_elite")

# A bound is one float for every action dimension, or one float per dimension.
Bound = float | Sequence[float] | torch.Tensor

ConfigT = TypeVar("ConfigT", bound="PlannerConfig")


def _as_bound_tuple(name: str, value: Bound, action_dim: int) -> tuple[float, ...]:
    """Normalise a scalar / sequence / tensor bound to a tuple of `action_dim` floats."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().reshape(-1).tolist()
    if isinstance(value, (int, float)):
        values = (float(value),) * action_dim
    else:
        values = tuple(float(v) for v in value)
        if len(values) != action_dim:
            raise ValueError(
                f"{name} has {len(values)} entries but action_dim={action_dim}; "
                f"give one float or a sequence of {action_dim} floats"
            )
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{name}={values} contains NaN; bounds must be numbers or +-inf")
    return values


@dataclass(frozen=True)
class PlannerConfig:
    """Settings common to CEM, MPPI and iCEM.

    Attributes:
        action_dim: A, the size of one action.
        horizon: H, the number of actions in a planned sequence.
        num_samples: N, candidate sequences scored per iteration, guide proposals included
            (TD-MPC2 counts its 24 policy trajectories among its 512 samples).
        num_elites: K, the best candidates the sampling distribution is refit to.
        iterations: refits per planning call.
        init_std: standard deviation of the sampling distribution at the start of a call.
        min_std, max_std: the std is clamped to this range after every refit.
        momentum: weight of the previous mean and std in each refit
            (new = momentum * old + (1 - momentum) * fitted); 0 disables it.
        noise_beta: exponent of colored 1/f^beta noise along the horizon; 0 is white noise.
        action_low, action_high: per-dimension bounds (a float or A floats). Every sampled,
            proposed and returned action lies inside them (candidates are clipped).
        output: which sequence the call returns: "mean" (the final mean), "best" (the
            highest-scoring candidate seen in any iteration) or "sample_elite" (an elite of
            the last iteration drawn with probability equal to its weight, as TD-MPC2).
        use_warm_start: when False the planner returns no warm start, so every call
            starts from the centre of the bounds (PlaNet).
        warm_start_std: carry the (shifted) std across calls instead of resetting it.
        update_std: refit the std; when False it stays at init_std (classic MPPI).
        num_proposals: how many guide-policy sequences a controller should pass as
            `proposals`; the planner itself accepts any number below num_samples.
    """

    action_dim: int
    horizon: int = 12
    num_samples: int = 512
    num_elites: int = 64
    iterations: int = 6
    init_std: float = 1.0
    min_std: float = 0.05
    max_std: float = 2.0
    momentum: float = 0.0
    noise_beta: float = 0.0
    action_low: Bound = -1.0
    action_high: Bound = 1.0
    output: OutputMode = "mean"
    use_warm_start: bool = True
    warm_start_std: bool = False
    update_std: bool = True
    num_proposals: int = 0

    def __post_init__(self) -> None:
        self._check_positive_int("action_dim", self.action_dim)
        self._check_positive_int("horizon", self.horizon)
        self._check_positive_int("num_samples", self.num_samples)
        self._check_positive_int("iterations", self.iterations)
        self._check_elites()
        if not isinstance(self.num_proposals, int) or not 0 <= self.num_proposals < self.num_samples:
            raise ValueError(
                f"num_proposals={self.num_proposals!r} must be an int in [0, num_samples={self.num_samples})"
            )
        if not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise ValueError(f"init_std={self.init_std!r} must be a positive finite number")
        if not (0 <= self.min_std <= self.max_std and math.isfinite(self.max_std)):
            raise ValueError(
                f"min_std={self.min_std!r} and max_std={self.max_std!r} must satisfy "
                "0 <= min_std <= max_std < inf"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not (self.noise_beta >= 0 and math.isfinite(self.noise_beta)):
            raise ValueError(f"noise_beta={self.noise_beta!r} must be a finite number >= 0 (0 is white noise)")
        if self.output not in OUTPUT_MODES:
            raise ValueError(f"output={self.output!r} is not one of {OUTPUT_MODES}")
        low = _as_bound_tuple("action_low", self.action_low, self.action_dim)
        high = _as_bound_tuple("action_high", self.action_high, self.action_dim)
        bad = [i for i, (lo, hi) in enumerate(zip(low, high)) if lo > hi]
        if bad:
            raise ValueError(
                f"action_low > action_high in dimension(s) {bad}: low={low}, high={high}; "
                "each low must be <= its high"
            )
        # Frozen: normalised bounds are written through object.__setattr__.
        object.__setattr__(self, "action_low", low)
        object.__setattr__(self, "action_high", high)

    def _check_elites(self) -> None:
        self._check_positive_int("num_elites", self.num_elites)
        if self.num_elites > self.num_samples:
            raise ValueError(
                f"num_elites={self.num_elites} exceeds num_samples={self.num_samples}; "
                "elites are chosen among the samples, so num_elites must be <= num_samples"
            )

    @staticmethod
    def _check_positive_int(name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")

    def population_schedule(self) -> tuple[int, ...]:
        """Candidates sampled from the distribution in each iteration (proposals included)."""
        return (self.num_samples,) * self.iterations

    def elites_in(self, population: int) -> int:
        """How many elites are refit to when `population` candidates were scored."""
        return min(self.num_elites, population)


def build_config(config_cls: type[ConfigT], base: ConfigT | None, overrides: dict[str, Any]) -> ConfigT:
    """Build `config_cls` from keyword overrides, naming unknown fields in the error.

    Args:
        config_cls: the dataclass to build.
        base: an existing config to start from, or None for the class defaults.
        overrides: field values to set.
    """
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"unknown {config_cls.__name__} field(s) {unknown}; accepted: {sorted(names)}"
        )
    if base is None:
        if "action_dim" not in overrides:
            raise TypeError(f"{config_cls.__name__} needs action_dim (the size of one action)")
        return config_cls(**overrides)
    if not isinstance(base, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__}, got {type(base).__name__}")
    return dataclasses.replace(base, **overrides)
