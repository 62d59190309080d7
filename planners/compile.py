"""Opt-in `torch.compile` of a model's hot methods for planning.

Planning time is almost all model time (the planner's own work is a few percent; see
benchmarks/planner_speed.py), so this compiles the model's `next`, `reward`, `value`,
`policy` and `rollout`, not the planner. Each compiled method specialises to the shapes it
sees: a fixed planner config and batch size compile once, on the first call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["CompiledModel", "compile_model", "HOT_METHODS"]

HOT_METHODS = ("next", "reward", "value", "policy", "rollout")
# Modes in which Inductor runs the compiled code as CUDA graphs, whose outputs live in
# memory that the next replay of the same graph overwrites.
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")


def _cloned_outputs(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` with its tensor outputs copied out of the CUDA graph's memory.

    A planning call runs the same compiled method many times and keeps earlier results
    (the policy's action at step t while it computes step t + 1; the latents of a
    rollout). Without a copy, the second replay overwrites the first one's output, which
    torch reports as "accessing tensor output of CUDAGraphs that has been overwritten".
    """

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # A new step for the CUDA-graph trees: this call's outputs are the caller's to keep.
        torch.compiler.cudagraph_mark_step_begin()
        return _clone_tensors(method(*args, **kwargs))

    return wrapper


def _clone_tensors(out: Any) -> Any:
    """Copies of the tensors in `out`, through tuples and lists."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_clone_tensors(o) for o in out)
    return out


class CompiledModel:
    """A view of `model` whose hot methods are compiled; everything else is delegated."""

    def __init__(self, model: Any, freeze: bool = False, **compile_kwargs: Any) -> None:
        self._model = model
        compile_kwargs.setdefault("dynamic", False)
        if freeze:
            options = dict(compile_kwargs.pop("options", None) or {})
            options["freezing"] = True
            compile_kwargs["options"] = options
        graphed = compile_kwargs.get("mode") in CUDAGRAPH_MODES
        for name in HOT_METHODS:
            method = getattr(model, name, None)
            if callable(method):
                compiled = torch.compile(method, **compile_kwargs)
                setattr(self, name, _cloned_outputs(compiled) if graphed else compiled)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set in __init__ (encode, observe, obs_shape, ...).
        return getattr(self._model, name)


def compile_model(model: Any, freeze: bool = False, **compile_kwargs: Any) -> CompiledModel:
    """Wrap `model` so that planning runs its hot methods through `torch.compile`.

    Args:
        model: any object with the WorldModel methods.
        freeze: let Inductor treat the weights as constants (its "freezing"), which on
            CPU pre-packs them for MKL and fuses more. Only for a model whose weights no
            longer change (evaluating a checkpoint): updates made after the first call
            are NOT seen by the compiled methods.
        **compile_kwargs: passed to `torch.compile` (for example mode="reduce-overhead"
            on CUDA for CUDA graphs, whose outputs are copied out so that a planning call
            may keep them); dynamic=False unless given. Recording each method as its own
            graph still launches one graph per model call; `MPCController(...,
            cuda_graph=True)` records the whole planning call as one.
    """
    return CompiledModel(model, freeze=freeze, **compile_kwargs)
