"""Opt-in `torch.compile` of a model's hot methods for planning.

Planning time is almost all model time (the planner's own work is a few percent; see
benchmarks/planner_speed.py), so this compiles the model's `next`, `reward`, `value`,
`policy` and `rollout`, not the planner. Each compiled method specialises to the shapes it
sees: a fixed planner config and batch size compile once, on the first call.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["CompiledModel", "compile_model", "HOT_METHODS"]

HOT_METHODS = ("next", "reward", "value", "policy", "rollout")


class CompiledModel:
    """A view of `model` whose hot methods are compiled; everything else is delegated."""

    def __init__(self, model: Any, freeze: bool = False, **compile_kwargs: Any) -> None:
        self._model = model
        compile_kwargs.setdefault("dynamic", False)
        if freeze:
            options = dict(compile_kwargs.pop("options", None) or {})
            options["freezing"] = True
            compile_kwargs["options"] = options
        for name in HOT_METHODS:
            method = getattr(model, name, None)
            if callable(method):
                setattr(self, name, torch.compile(method, **compile_kwargs))

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
            on CUDA for CUDA graphs); dynamic=False unless given.
    """
    return CompiledModel(model, freeze=freeze, **compile_kwargs)
