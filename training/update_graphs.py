"""One whole training update recorded as a CUDA graph and replayed.

On a GPU, an RSSM + actor-critic update of the dreamer recipe's size is thousands of small
kernels (a 64-step posterior scan, a 15-step imagination, both backward, three optimiser
steps), and it is bound by launching them from Python, not by arithmetic. A CUDA graph
records the launches of one update once and replays them with one launch.

A graph replays fixed memory addresses with fixed shapes, so `CapturedUpdate` keeps static
input buffers for the batch: each call copies the batch into them, replays, and returns
copies of the metric tensors. The update function must not synchronise with the host
(no `.item()`, no `float(tensor)`, no branch on a tensor's value): it returns its metrics
as tensors.

Recording runs `warmup` eager updates on a side stream first (CUDA builds its libraries'
handles and workspaces, and Adam its moments, outside the capture). Those updates must
not count, so every module's parameters and buffers, every optimiser state, and torch's
default random generators (CPU and CUDA) are put back afterwards, in place (the graph
records addresses): the first replay is the update an eager call would have made.

Batch shape: a graph is for one batch signature (every tensor's shape and dtype). A
batch of another signature records a new graph in place of the old one, with a one-time
warning (`records` counts the recordings).

Fallbacks, never a wrong answer: on a CPU, or when recording raises (an operation that
synchronises with the host or cannot be captured), updates run eagerly with a one-time
warning. `capture=False` runs the same static-buffer path, warm-up and restore included,
without recording (for tests of the plumbing on a CPU).

Adam must have `capturable=True` to step inside a graph (its step count lives on the
device); `CapturedUpdate` turns it on for the optimisers it is given and moves their step
counts there. Load optimiser state before the first update, as loading replaces the flag.
The graph also fixes what the optimisers read at recording time (learning rates, clip
values): a change after recording needs a new `CapturedUpdate`.

Random numbers come from torch's default generators, which a graph records as PyTorch
does (each replay draws from the generator's current state and advances it). A module's
own `torch.Generator` (an RSSM's or an actor's `generator`, set while evaluating) must be
None while updates run.

A failed recording releases what it captured only when the process ends (PyTorch keeps a
capture's private memory pool when the capture did not finish).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CapturedUpdate", "set_capturable"]

# batch -> metrics (scalar tensors), the whole update (forward, backward, optimiser steps).
UpdateStep = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def set_capturable(optimizers: Sequence[torch.optim.Optimizer], capturable: bool) -> None:
    """Turn Adam's `capturable` on (to step inside a CUDA graph) or off (the faster eager
    form), with each step count where that form keeps it: on the parameter's device, or on
    the CPU. Resuming a run saved with a graph, without one, turns it off: loading an
    optimiser's state restores the flag it was saved with.

    Raises:
        ValueError: an optimiser without the option (it cannot step inside a graph).
    """
    for opt in optimizers:
        for group in opt.param_groups:
            if "capturable" not in group:
                raise ValueError(f"{type(opt).__name__} cannot step inside a CUDA graph (it has no capturable "
                                 "option); use Adam or AdamW")  # fmt: skip
            group["capturable"] = capturable
        for p, state in opt.state.items():
            step = state.get("step")
            if isinstance(step, Tensor):
                device = p.device if capturable else torch.device("cpu")
                if step.device != device:
                    state["step"] = step.to(device=device, dtype=torch.float32)


def _signature(batch: Mapping[str, Tensor]) -> tuple[Any, ...]:
    return tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in sorted(batch.items()))


class CapturedUpdate:
    """`step(batch)` through a recorded CUDA graph, re-recorded when the batch shape changes.

    Args:
        step: the update; it reads only the batch it is given and returns scalar metric
            tensors, and must not synchronise with the host.
        modules: every module whose parameters or buffers the update changes (the world
            model, the actor-critic): restored after the warm-up.
        optimizers: the update's optimisers: made capturable, restored after the warm-up.
        device: where the update runs; on a non-CUDA device every call runs eagerly.
        capture: False runs the static-buffer path (warm-up and restore included) without
            recording a graph.
        warmup: eager updates on a side stream before recording; undone afterwards.
    """

    def __init__(
        self,
        step: UpdateStep,
        modules: Sequence[nn.Module],
        optimizers: Sequence[torch.optim.Optimizer],
        device: torch.device | str,
        capture: bool = True,
        warmup: int = 3,
    ) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup={warmup!r} must be an int >= 0")
        self.step = step
        self.modules = tuple(modules)
        self.optimizers = tuple(optimizers)
        self.device = torch.device(device)
        self.capture = capture and self.device.type == "cuda"
        self._eager_only = capture and not self.capture
        self.warmup = warmup
        self.records = 0
        self._signature: tuple[Any, ...] | None = None
        self._static: dict[str, Tensor] = {}
        self._graph: Any = None  # torch.cuda.CUDAGraph
        self._outputs: dict[str, Tensor] = {}
        self._warned: set[str] = set()
        if self._eager_only:
            self._warn_once("device", f"a captured update needs a CUDA device; on {self.device} updates run eagerly "
                                      "(the same computation)")  # fmt: skip
        if self.capture:
            set_capturable(self.optimizers, True)

    @property
    def captured(self) -> bool:
        """Whether the current batch signature replays a recorded graph."""
        return self._graph is not None

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The metrics of one update on `batch`, as tensors the caller may keep."""
        if self._eager_only:
            return self.step(batch)
        key = _signature(batch)
        if key != self._signature:
            if self._signature is not None:
                self._warn_once("shape", f"the batch signature changed from {self._signature} to {key}; recording "
                                         "the update again for the new one")  # fmt: skip
            self._record(batch, key)
            if self._eager_only:  # recording failed
                return self.step(batch)
        for k, v in batch.items():
            self._static[k].copy_(v)
        if self._graph is not None:
            self._graph.replay()
            outputs = self._outputs
        else:
            outputs = self.step(self._static)
        # Copies: the next replay overwrites the graph's output memory.
        return {k: v.clone() for k, v in outputs.items()}

    # -- recording --------------------------------------------------------------------------

    def _record(self, batch: dict[str, Tensor], key: tuple[Any, ...]) -> None:
        self._graph, self._outputs = None, {}
        self._static = {k: v.clone() for k, v in batch.items()}
        self._signature = key
        self.records += 1
        saved = self._snapshot()
        cpu_rng = torch.get_rng_state()
        cuda = self.device.type == "cuda"
        rng = torch.cuda.get_rng_state(self.device) if cuda else None
        # A failed capture leaves torch's current stream on the capture stream; put it back.
        stream = torch.cuda.current_stream(self.device) if cuda else None
        try:
            with torch.cuda.device(self.device) if cuda else contextlib.nullcontext():
                self._warm_up()
                self._restore(saved)
                if self.capture:
                    self._graph, self._outputs = self._capture()
        except Exception as error:  # noqa: BLE001 - any failure to record means: update eagerly
            if stream is not None:
                torch.cuda.set_stream(stream)
            self._graph, self._outputs = None, {}
            self._restore(saved)
            self._eager_only = True
            set_capturable(self.optimizers, False)  # eager Adam is the faster form
            self._warn_once("capture", f"recording the update as a CUDA graph failed ({type(error).__name__}: "
                                       f"{error}); updating eagerly")  # fmt: skip
        finally:
            torch.set_rng_state(cpu_rng)
            if rng is not None:
                torch.cuda.set_rng_state(rng, self.device)

    def _warm_up(self) -> None:
        if self.device.type != "cuda":
            for _ in range(self.warmup):
                self.step(self._static)
            return
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), warnings.catch_warnings():
            # Capturable Adam warns when it steps outside a graph, as the warm-up must.
            warnings.filterwarnings("ignore", message=".*capturable=True.*", category=UserWarning)
            for _ in range(self.warmup):
                self.step(self._static)
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def _capture(self) -> tuple[Any, dict[str, Tensor]]:
        for opt in self.optimizers:  # gradients are allocated, then rewritten, by the graph
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(self._static)
        return graph, outputs

    # -- state put back after the warm-up ------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        modules = [{k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()} for m in self.modules]
        optimizers = [{p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
                       for p, s in opt.state.items()} for opt in self.optimizers]  # fmt: skip
        return {"modules": modules, "optimizers": optimizers}

    @torch.no_grad()
    def _restore(self, saved: dict[str, Any]) -> None:
        """Parameters, buffers and optimiser state back to `saved`, in place. Optimiser
        state made during the warm-up (Adam's first step) goes back to a fresh state's
        values: zero moments and a zero step count."""
        for module, values in zip(self.modules, saved["modules"], strict=True):
            for k, v in module.state_dict(keep_vars=True).items():
                v.copy_(values[k])
        for opt, states in zip(self.optimizers, saved["optimizers"], strict=True):
            for p, state in opt.state.items():
                before = states.get(p)
                for k, v in state.items():
                    if not isinstance(v, Tensor):
                        continue
                    if before is None:
                        v.zero_()
                    else:
                        v.copy_(before[k])
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
