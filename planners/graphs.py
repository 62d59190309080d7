"""One whole planning call recorded as a CUDA graph and replayed.

On a GPU, a planning call of TD-MPC2's size is hundreds of small kernels (6 iterations of
sampling, a rollout, top-k and a refit), and at one problem it is bound by launching them
from Python, not by arithmetic. A CUDA graph records the launches of one call once and
replays them with one launch.

A graph replays fixed memory addresses with fixed shapes, so `PlanGraphs` keeps, per input
signature (batch, latent shape, goal, kept elites, proposals), static input buffers for the
start latent, the goal latent, the warm start and the proposals. It copies each call's
inputs into them, replays, and copies the outputs out. The objective is built from the
static latents *inside* the recorded call, so whatever an objective factory derives from
the latent is recomputed on every replay, never frozen at recording time.

Random numbers: the generators that a call draws from (the controller's, and a model's
own `generator`) are registered with the graph, so a replay draws from their current
state and advances them as the eager call would. The recording's warm-up runs draw too;
the generators' states are put back afterwards. The same generator state therefore gives
the same actions, captured or eager.

Fallbacks, never a wrong answer: on a CPU, or when recording raises (an objective that
synchronises with the host, a generator that cannot be registered), the call runs eagerly
with a one-time warning. A new signature records a new graph, up to `max_graphs`; beyond
that, new signatures run eagerly, again with a one-time warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from planners.base import Objective, PlanResult, SamplingPlanner, WarmStart

__all__ = ["PlanGraphs"]

# (z [B, *Z], z_goal [B, *Z] or None) -> objective(actions [B, N, H, A]) -> [B, N]
ObjectiveBuilder = Callable[[Tensor, "Tensor | None"], Objective]
Outputs = tuple[Tensor, Tensor, Tensor, "Tensor | None", Tensor]


@dataclass
class _Recorded:
    """Static buffers of one input signature and, once captured, its graph."""

    z: Tensor
    z_goal: Tensor | None
    mean: Tensor
    std: Tensor
    kept: Tensor | None
    proposals: Tensor | None
    graph: Any = None  # torch.cuda.CUDAGraph
    outputs: Outputs | None = None
    run: Callable[[], Outputs] = field(default=lambda: ())  # type: ignore[assignment, return-value]


def _signature(*tensors: Tensor | None) -> tuple[Any, ...]:
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)


def _copy_into(static: Tensor | None, value: Tensor | None) -> None:
    if static is not None and value is not None:
        static.copy_(value)


class PlanGraphs:
    """`planner.plan` through recorded CUDA graphs, one per input signature.

    Args:
        planner: the planner whose `optimise` is recorded.
        build_objective: (z, z_goal) -> objective; called inside the recorded call.
        generator: the planner's generator (None: torch's default generator).
        model_generators: other generators the objective draws from (a model's own
            `generator`, for example TOLD's random choice of Q heads).
        device: where planning runs; on a non-CUDA device every call runs eagerly.
        capture: False runs the same static-buffer path without recording a graph (for
            tests of the buffer plumbing on a CPU).
        warmup: eager runs on a side stream before recording (CUDA needs its libraries'
            handles and workspaces made outside the capture).
        max_graphs: signatures recorded before new ones fall back to eager.
    """

    def __init__(
        self,
        planner: SamplingPlanner[Any],
        build_objective: ObjectiveBuilder,
        generator: torch.Generator | None,
        device: torch.device,
        model_generators: tuple[torch.Generator, ...] = (),
        capture: bool = True,
        warmup: int = 2,
        max_graphs: int = 8,
    ) -> None:
        self.planner = planner
        self.build_objective = build_objective
        self.generator = generator
        # Each generator once: a model may share the controller's.
        unique = {id(g): g for g in (generator, *model_generators) if g is not None}
        self.generators = tuple(unique.values())
        self.device = device
        self.capture = capture and device.type == "cuda"
        # Asked to record where nothing can be recorded: plain eager planning.
        self._eager_only = capture and not self.capture
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._recorded: dict[tuple[Any, ...], _Recorded | None] = {}  # None: this signature runs eagerly
        self._warned: set[str] = set()
        if self._eager_only:
            self._warn_once(
                "device", f"cuda_graph=True needs a CUDA device; planning on {device} runs eagerly (same actions)"
            )

    @property
    def num_graphs(self) -> int:
        """Signatures recorded so far (captured graphs, or static paths without capture)."""
        return sum(r is not None for r in self._recorded.values())

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    @torch.no_grad()
    def plan(
        self,
        z: Tensor,
        z_goal: Tensor | None = None,
        warm_start: WarmStart | None = None,
        proposals: Tensor | None = None,
    ) -> PlanResult:
        """What `planner.plan(build_objective(z, z_goal), B, warm_start, proposals,
        generator)` returns, from a replayed graph where one can be recorded.

        Shapes:
            z, z_goal: [B, *Z]; proposals: [B, P, H, A] or None.
        """
        planner, b = self.planner, z.shape[0]
        if self._eager_only:
            return self._eager(z, z_goal, warm_start, proposals)
        low, high, centre = planner.bounds(self.device)
        proposals = planner._check_proposals(proposals, b, self.device, low, high)
        if proposals is not None and proposals.shape[1] >= min(planner.config.population_schedule()):
            return self._eager(z, z_goal, warm_start, proposals)  # plan() raises the named error
        mean, std, kept = planner._initial_distribution(warm_start, b, self.device, centre)
        key = _signature(z, z_goal, mean, kept, proposals)
        if key not in self._recorded:
            self._recorded[key] = self._record(z, z_goal, mean, std, kept, proposals, low, high)
        rec = self._recorded[key]
        if rec is None:
            return self._eager(z, z_goal, warm_start, proposals)
        for static, value in ((rec.z, z), (rec.z_goal, z_goal), (rec.mean, mean), (rec.std, std), (rec.kept, kept),
                              (rec.proposals, proposals)):  # fmt: skip
            _copy_into(static, value)
        if rec.graph is not None:
            rec.graph.replay()
            assert rec.outputs is not None
            outputs = rec.outputs
        else:
            outputs = rec.run()
        # Copies: the next replay overwrites the graph's output memory.
        actions, mean, std, kept_out, best_return = (None if t is None else t.clone() for t in outputs)
        assert actions is not None and mean is not None and std is not None and best_return is not None
        return planner.result(actions, mean, std, kept_out, best_return, centre=centre)

    def _eager(
        self, z: Tensor, z_goal: Tensor | None, warm_start: WarmStart | None, proposals: Tensor | None
    ) -> PlanResult:
        return self.planner.plan(self.build_objective(z, z_goal), batch_size=z.shape[0], warm_start=warm_start,
                                 proposals=proposals, generator=self.generator, device=self.device)  # fmt: skip

    def _record(
        self,
        z: Tensor,
        z_goal: Tensor | None,
        mean: Tensor,
        std: Tensor,
        kept: Tensor | None,
        proposals: Tensor | None,
        low: Tensor,
        high: Tensor,
    ) -> _Recorded | None:
        """Static buffers for a new signature and, on CUDA, its captured graph; None when
        this signature must run eagerly."""
        if self.num_graphs >= self.max_graphs:
            self._warn_once("max", f"more than {self.max_graphs} input signatures for cuda_graph=True; new ones plan eagerly")
            return None

        def clone(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.clone()

        rec = _Recorded(z=z.clone(), z_goal=clone(z_goal), mean=mean.clone(), std=std.clone(), kept=clone(kept),
                        proposals=clone(proposals))  # fmt: skip

        def run() -> Outputs:
            objective = self.build_objective(rec.z, rec.z_goal)
            return self.planner.optimise(objective, rec.mean, rec.std, rec.kept, rec.proposals, low, high, self.generator)

        rec.run = run
        if not self.capture:
            return rec
        try:
            rec.graph, rec.outputs = self._capture(run)
        except Exception as error:  # noqa: BLE001 - any failure to record means: plan eagerly
            self._warn_once(
                "capture",
                f"cuda_graph=True: recording the plan call failed ({type(error).__name__}: {error}); planning eagerly",
            )
            return None
        return rec

    def _capture(self, run: Callable[[], Outputs]) -> tuple[Any, Outputs]:
        """Warm up on a side stream, then record `run` into a CUDA graph; every generator's
        state is as it was before, so the first replay draws what an eager call would."""
        states = [g.get_state() for g in self.generators]
        default_state = torch.cuda.get_rng_state(self.device) if self.generator is None else None
        try:
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    run()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            register = getattr(graph, "register_generator_state", None)
            for g in self.generators:
                if g.device.type == "cuda":
                    if register is None:
                        raise RuntimeError("this torch cannot record draws from a torch.Generator in a CUDA graph")
                    register(g)
            with torch.cuda.graph(graph):
                outputs = run()
            return graph, outputs
        finally:
            for g, state in zip(self.generators, states, strict=True):
                g.set_state(state)
            if default_state is not None:
                torch.cuda.set_rng_state(default_state, self.device)
