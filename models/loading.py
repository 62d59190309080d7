"""`models.load(path)`: one loader for every checkpoint file we write.

The file's header names its family (`model`, see `models.checkpoints.read_family`); the
family's `load` entry point (`models.registry`) builds the model from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from models import registry
from models.checkpoints import CheckpointError, read_family

__all__ = ["load", "family_of"]


def family_of(path: str | os.PathLike[str]) -> str:
    """The registered family a checkpoint file names (see `load` for the errors)."""
    return _checked_family(Path(path))[0]


def load(
    path: str | os.PathLike[str],
    env: Any = None,
    device: str | torch.device = "auto",
    expect: str | None = None,
    **family_options: Any,
) -> Any:
    """The model a checkpoint file holds, ready to plan with.

    Args:
        path: a model file (or, for families that read them, a training checkpoint).
        env: the env the model will plan in; the file is checked against its task,
            observation shape and action size (None: no checks).
        device: "auto" (CUDA if present, else CPU), "cpu", "cuda", ...
        expect: the family the caller needs; a file of another family raises.
        **family_options: passed to the family's loader (DINO-WM: `encoder_weights`, the
            DINOv2 weight file).

    Raises:
        FileNotFoundError: no file at `path`.
        CheckpointError: empty, damaged or foreign files; another family than `expect`; a
            training checkpoint of a family that plans from its model file (named).
        ValueError: a file made for another task or other shapes (the family's check).
    """
    path = Path(path)
    name, kind = _checked_family(path)
    if expect is not None and name != expect:
        raise CheckpointError(f"{path} holds a {name!r} model, not a {expect!r} model")
    spec = registry.get(name)
    if kind == "training" and not spec.loads_training_checkpoints:
        raise CheckpointError(f"{path} is a training checkpoint (the state to resume training); plan with the model "
                              f"file beside it: {path.with_name('model.pt')}")
    if spec.load is None:
        raise CheckpointError(f"{path} names model {name!r}, which has no checkpoint files")
    return spec.entry("load")(path, env=env, device=device, **family_options)


def _checked_family(path: Path) -> tuple[str, str]:
    name, contents = read_family(path)
    if name not in registry.names():
        raise CheckpointError(f"{path} holds a {name!r} model, which is not a registered model ({registry.names()})")
    return name, str(contents.get("kind", "model"))
