"""The sampling-based trajectory optimiser that CEM, MPPI and iCEM specialise.

All three planners share one loop: sample action sequences around a Gaussian mean,
score them with the objective, pick elites, refit the mean and std, repeat. They differ
in how elites are weighted (`_elite_weights`), in the population schedule, and in what
is carried between iterations (iCEM's kept elites). Everything is batched over B
independent problems; the iteration loop contains no host synchronisation and no Python
branching on tensor values, so it runs unchanged under `torch.compile` and CUDA graphs.

Shapes used throughout:
    B  independent planning problems
    N  candidate sequences per problem in one iteration
    K  elites
    H  horizon
    A  action dimension
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import Tensor

from planners.config import PlannerConfig, build_config
from planners.noise import sample_noise

__all__ = ["Objective", "PlanResult", "WarmStart", "SamplingPlanner"]

# objective(actions[B, N, H, A]) -> returns[B, N], to maximise.
Objective = Callable[[Tensor], Tensor]

ConfigT = TypeVar("ConfigT", bound=PlannerConfig)


@dataclass(frozen=True)
class WarmStart:
    """What one planning call hands to the next, already shifted by one time step.

    Shapes:
        mean:   [B, H, A]     the final sampling mean, shifted.
        std:    [B, H, A]     the final std, shifted (used only with warm_start_std).
        elites: [B, E, H, A]  elites kept for the next call (iCEM), shifted; or None.
        fill_mean: [A]        the value a shift writes into the freed last step of the
                              mean and elites (the centre of the bounds).
        fill_std: float       the std written into the freed last step.
    """

    mean: Tensor
    std: Tensor
    elites: Tensor | None
    fill_mean: Tensor
    fill_std: float

    def shift(self, steps: int = 1) -> WarmStart:
        """Advance the warm start by `steps` more executed actions.

        A controller that executes k actions of a plan before replanning passes
        `result.warm_start.shift(k - 1)`.
        """
        if steps < 0:
            raise ValueError(f"steps={steps} must be >= 0")
        if steps == 0:
            return self
        return WarmStart(
            mean=_shift_time(self.mean, steps, self.fill_mean),
            std=_shift_time(self.std, steps, torch.full_like(self.fill_mean, self.fill_std)),
            elites=None if self.elites is None else _shift_time(self.elites, steps, self.fill_mean),
            fill_mean=self.fill_mean,
            fill_std=self.fill_std,
        )


@dataclass(frozen=True)
class PlanResult:
    """The outcome of one planning call.

    Shapes:
        action:      [B, A]     the first action of `actions`, to execute now.
        actions:     [B, H, A]  the chosen sequence (per the config's `output` mode).
        mean, std:   [B, H, A]  the final sampling distribution (unshifted).
        best_return: [B]        the highest objective value seen in any iteration
                                (-inf where every candidate's return was non-finite).
        warm_start:  what to pass to the next call, or None with use_warm_start=False.
    """

    action: Tensor
    actions: Tensor
    mean: Tensor
    std: Tensor
    best_return: Tensor
    warm_start: WarmStart | None


def _shift_time(x: Tensor, steps: int, fill: Tensor) -> Tensor:
    """Drop the first `steps` time steps of x[..., H, A] and pad the end with `fill`[A]."""
    horizon = x.shape[-2]
    steps = min(steps, horizon)
    pad = fill.to(x).expand(*x.shape[:-2], steps, x.shape[-1])
    return torch.cat([x[..., steps:, :], pad], dim=-2)


def _clip(x: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Clamp x[..., A] to per-dimension bounds low[A], high[A]."""
    return torch.minimum(torch.maximum(x, low), high)


def uniform_elite_weights(elite_returns: Tensor) -> Tensor:
    """Equal weights [B, K] over the elites with finite returns (CEM, iCEM)."""
    finite = elite_returns.isfinite().to(elite_returns.dtype)
    return finite / finite.sum(dim=1, keepdim=True).clamp(min=1.0)


def _gather_candidates(candidates: Tensor, index: Tensor) -> Tensor:
    """candidates[B, N, H, A], index[B, K] -> the indexed sequences [B, K, H, A]."""
    b, _, h, a = candidates.shape
    return torch.gather(candidates, 1, index[:, :, None, None].expand(b, index.shape[1], h, a))


class SamplingPlanner(Generic[ConfigT]):
    """Shared loop of the sampling planners; subclasses set the weighting and schedule.

    The planner holds only its frozen config: every call is independent, and whatever
    must persist between calls travels in the returned `WarmStart`.
    """

    config_cls: ClassVar[type[PlannerConfig]] = PlannerConfig

    def __init__(self, config: ConfigT | None = None, **overrides: Any) -> None:
        """Build from a config, from keyword fields, or a config with some fields replaced.

        Example: `MPPI(action_dim=2, horizon=10, num_samples=256, temperature=0.5)`.
        """
        self.config: ConfigT = build_config(self.config_cls, config, overrides)  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # -- hooks for the subclasses -------------------------------------------------------

    def _elite_weights(self, elite_returns: Tensor) -> Tensor:
        """Weights [B, K] of the elites, each row summing to 1 over finite returns.

        `elite_returns` [B, K] is sorted best first; non-finite entries are -inf and must
        get weight 0. Rows with no finite entry may hold anything (they are discarded).
        """
        raise NotImplementedError

    def _kept_elite_count(self) -> int:
        """How many of an iteration's elites are re-scored in the next one (iCEM)."""
        return 0

    def _add_mean_last(self) -> bool:
        """Whether the mean is scored as a candidate in the last iteration (iCEM)."""
        return False

    def candidates_per_call(self) -> int:
        """Candidates a warm-started call scores: the population of every iteration
        (proposals included), the kept elites re-scored in each iteration (carried in
        from the previous call in the first) and the mean in the last (iCEM)."""
        schedule = self.config.population_schedule()
        return sum(schedule) + len(schedule) * self._kept_elite_count() + int(self._add_mean_last())

    # -- the planning call --------------------------------------------------------------

    @torch.no_grad()
    def plan(
        self,
        objective: Objective,
        batch_size: int = 1,
        warm_start: WarmStart | None = None,
        proposals: Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> PlanResult:
        """Optimise action sequences for B independent problems.

        Args:
            objective: maps actions [B, N, H, A] to returns [B, N] to maximise. Non-finite
                returns (NaN, +-inf) count as the worst possible score: such a candidate
                is never an elite with non-zero weight and never the output.
            batch_size: B.
            warm_start: the previous call's `result.warm_start`, or None to start from the
                centre of the bounds.
            proposals: [B, P, H, A] guide sequences (for example from a policy prior).
                They occupy the first P candidate slots of every iteration, are clipped
                to the bounds, and can be elites or the output. Must be finite.
            generator: random source; the same generator state gives the same result.
            device: where to plan; defaults to the device of proposals, warm start or
                generator, else CPU.

        Returns:
            A PlanResult; `result.action` [B, A] is the action to execute.
        """
        cfg = self.config
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        device = _resolve_device(device, proposals, warm_start, generator)
        b = batch_size
        low, high, centre = self.bounds(device)

        proposals = self._check_proposals(proposals, b, device, low, high)
        num_proposals = 0 if proposals is None else proposals.shape[1]
        schedule = cfg.population_schedule()
        if num_proposals >= min(schedule):
            raise ValueError(
                f"{num_proposals} proposals leave no sampled candidates: the smallest population "
                f"is {min(schedule)}; pass fewer than that"
            )

        mean, std, kept = self._initial_distribution(warm_start, b, device, centre)
        return self.result(*self.optimise(objective, mean, std, kept, proposals, low, high, generator), centre=centre)

    def result(
        self, actions: Tensor, mean: Tensor, std: Tensor, kept: Tensor | None, best_return: Tensor, centre: Tensor
    ) -> PlanResult:
        """The PlanResult of `optimise`'s outputs, with the warm start (shifted one step,
        its freed last step filled with `centre` [A]) when the config uses one."""
        cfg = self.config
        warm = None
        if cfg.use_warm_start:
            warm = WarmStart(mean=mean, std=std, elites=kept, fill_mean=centre, fill_std=cfg.init_std).shift(1)
        return PlanResult(
            action=actions[:, 0], actions=actions, mean=mean, std=std, best_return=best_return, warm_start=warm
        )

    def bounds(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """The action bounds low [A], high [A] and their centre [A] (the finite side of a
        half-open bound, else 0) on `device`: where a cold start's mean begins."""
        cfg = self.config
        low = torch.tensor(cfg.action_low, device=device)
        high = torch.tensor(cfg.action_high, device=device)
        centre = torch.where(
            torch.isfinite(low) & torch.isfinite(high),
            (low + high) / 2,
            torch.where(torch.isfinite(low), low, torch.where(torch.isfinite(high), high, torch.zeros_like(low))),
        ).clamp(min=low, max=high)
        return low, high, torch.nan_to_num(centre, nan=0.0)

    def optimise(
        self,
        objective: Objective,
        mean: Tensor,
        std: Tensor,
        kept: Tensor | None,
        proposals: Tensor | None,
        low: Tensor,
        high: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """The iterations of one planning call, from a starting distribution to the output.

        Pure tensor work with no host synchronisation and no branching on tensor values,
        so that one call can be recorded as a CUDA graph and replayed
        (`planners.graphs`); `plan` validates its arguments and calls this.

        Shapes:
            mean, std: [B, H, A] the starting distribution; kept: [B, E, H, A] elites
            carried in (iCEM) or None; proposals: [B, P, H, A] (already clipped) or None;
            low, high: [A].
        Returns:
            actions [B, H, A] (per the output mode), the final mean and std [B, H, A],
            the kept elites [B, E, H, A] or None, and best_return [B].
        """
        cfg = self.config
        b, h, a = mean.shape
        num_proposals = 0 if proposals is None else proposals.shape[1]
        mean = _clip(mean, low, high)  # a warm start from a caller may lie outside
        kept = None if kept is None else _clip(kept, low, high)
        best_actions = mean.clone()
        best_return = torch.full((b,), float("-inf"), device=mean.device)
        weights = elites = None
        num_keep = self._kept_elite_count()
        schedule = cfg.population_schedule()
        for it, population in enumerate(schedule):
            last = it == len(schedule) - 1
            noise = sample_noise((b, population - num_proposals, h, a), cfg.noise_beta, generator, mean.device)
            parts = [] if proposals is None else [proposals]
            parts.append(_clip(mean.unsqueeze(1) + std.unsqueeze(1) * noise, low, high))
            if kept is not None:
                parts.append(kept)
            if last and self._add_mean_last():
                parts.append(mean.unsqueeze(1))
            candidates = torch.cat(parts, dim=1)  # [B, N_it, H, A]
            returns = self._score(objective, candidates)  # [B, N_it]

            num_elites = cfg.elites_in(candidates.shape[1])
            elite_returns, elite_index = returns.topk(num_elites, dim=1)  # [B, K], best first
            elites = _gather_candidates(candidates, elite_index)  # [B, K, H, A]
            weights = self._elite_weights(elite_returns)  # [B, K]
            has_finite = torch.isfinite(elite_returns[:, 0])  # [B]

            fitted_mean = torch.einsum("bk,bkha->bha", weights, elites)
            new_mean = torch.where(has_finite[:, None, None], fitted_mean, mean)
            # Clipped because momentum's blend can round a hair past a bound.
            mean = _clip(cfg.momentum * mean + (1 - cfg.momentum) * new_mean, low, high)
            if cfg.update_std:
                deviation = (elites - fitted_mean.unsqueeze(1)).pow(2)
                fitted_std = torch.einsum("bk,bkha->bha", weights, deviation).sqrt()
                new_std = torch.where(has_finite[:, None, None], fitted_std, std)
                std = (cfg.momentum * std + (1 - cfg.momentum) * new_std).clamp(cfg.min_std, cfg.max_std)

            improved = elite_returns[:, 0] > best_return  # NaN-free: returns were sanitised
            best_actions = torch.where(improved[:, None, None], elites[:, 0], best_actions)
            best_return = torch.where(improved, elite_returns[:, 0], best_return)
            kept = elites[:, :num_keep] if num_keep > 0 else None

        assert weights is not None and elites is not None  # iterations >= 1
        actions = self._choose_output(mean, best_actions, best_return, elites, weights, generator)
        return actions, mean, std, kept, best_return

    # -- pieces of the call ---------------------------------------------------------------

    def _initial_distribution(
        self, warm_start: WarmStart | None, b: int, device: torch.device, centre: Tensor
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Mean [B, H, A], std [B, H, A] and kept elites [B, E, H, A] or None to start from."""
        cfg = self.config
        shape = (b, cfg.horizon, cfg.action_dim)
        std = torch.full(shape, cfg.init_std, device=device)
        if warm_start is None or not cfg.use_warm_start:
            return centre.expand(shape).clone(), std, None
        if not isinstance(warm_start, WarmStart):
            raise TypeError(f"warm_start must be a WarmStart (result.warm_start) or None, got {type(warm_start).__name__}")
        if tuple(warm_start.mean.shape) != shape:
            raise ValueError(
                f"warm_start.mean has shape {tuple(warm_start.mean.shape)} but this call plans "
                f"(B, H, A) = {shape}; pass warm_start=None after changing the batch, horizon or action size"
            )
        mean = warm_start.mean.to(device=device, dtype=torch.float32)
        if cfg.warm_start_std:
            std = warm_start.std.to(device=device, dtype=torch.float32).clamp(cfg.min_std, cfg.max_std)
        kept = None
        num_keep = self._kept_elite_count()
        if warm_start.elites is not None and num_keep > 0:
            kept = warm_start.elites[:, :num_keep].to(device=device, dtype=torch.float32)
        return mean, std, kept

    def _check_proposals(
        self, proposals: Tensor | None, b: int, device: torch.device, low: Tensor, high: Tensor
    ) -> Tensor | None:
        """Validate proposals [B, P, H, A], move them to `device` and clip them to the bounds."""
        if proposals is None:
            return None
        cfg = self.config
        if not isinstance(proposals, Tensor):
            raise TypeError(f"proposals must be a Tensor [B, P, H, A] or None, got {type(proposals).__name__}")
        expected = (b, "P", cfg.horizon, cfg.action_dim)
        if proposals.ndim != 4 or proposals.shape[0] != b or proposals.shape[2:] != (cfg.horizon, cfg.action_dim):
            raise ValueError(f"proposals have shape {tuple(proposals.shape)}; expected (B, P, H, A) = {expected}")
        if proposals.shape[1] == 0:
            return None
        # One host sync per call, outside the iteration loop: a NaN proposal would otherwise
        # silently become a NaN action.
        if not bool(torch.isfinite(proposals).all()):
            raise ValueError("proposals contain NaN or inf; every proposed action must be finite")
        return _clip(proposals.to(device=device, dtype=torch.float32), low, high)

    @staticmethod
    def _score(objective: Objective, candidates: Tensor) -> Tensor:
        """Returns [B, N] of `candidates` [B, N, H, A], non-finite values mapped to -inf."""
        returns = objective(candidates)
        if not isinstance(returns, Tensor):
            raise TypeError(f"the objective returned {type(returns).__name__}; it must return a Tensor [B, N]")
        expected = tuple(candidates.shape[:2])
        if tuple(returns.shape) != expected:
            raise ValueError(
                f"the objective returned shape {tuple(returns.shape)} for actions of shape "
                f"{tuple(candidates.shape)}; it must return (B, N) = {expected}"
            )
        returns = returns.to(torch.float32)
        # Diverged rollouts often return +inf as well as NaN; neither may win.
        return torch.where(torch.isfinite(returns), returns, torch.full_like(returns, float("-inf")))

    def _choose_output(
        self,
        mean: Tensor,
        best_actions: Tensor,
        best_return: Tensor,
        elites: Tensor,
        weights: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """The sequence [B, H, A] to return, per the config's output mode."""
        mode = self.config.output
        if mode == "mean":
            return mean
        found = torch.isfinite(best_return)[:, None, None]  # [B, 1, 1]
        if mode == "best":
            return torch.where(found, best_actions, mean)
        # sample_elite: Gumbel-max draws index k with probability weights[k], with no host
        # sync (torch.multinomial would need one to validate the weights).
        uniform = torch.rand(weights.shape, generator=generator, device=weights.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        index = (weights.log() + gumbel).argmax(dim=1, keepdim=True)  # [B, 1]
        chosen = _gather_candidates(elites, index)[:, 0]
        return torch.where(found, chosen, mean)


def _resolve_device(
    device: torch.device | str | None,
    proposals: Tensor | None,
    warm_start: WarmStart | None,
    generator: torch.Generator | None,
) -> torch.device:
    """The device a call runs on: explicit, else inferred from its tensor arguments."""
    if device is not None:
        return torch.device(device)
    if isinstance(proposals, Tensor):
        return proposals.device
    if isinstance(warm_start, WarmStart):
        return warm_start.mean.device
    if generator is not None:
        return generator.device
    return torch.device("cpu")
