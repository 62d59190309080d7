"""Model checkpoint files: one layout for every model, atomic writes, checked reads.

Every model's `checkpoint()` is a dict of tensors and primitives (so
`torch.load(path, weights_only=True)` reads it) with at least

    format_version   int, bumped when the layout of that model's state_dict changes
    model            the family's registered name (`models.registry`), or "behavior", ...
    config           the model's config as a dict
    state_dict       CPU tensors

and any extra keys the model adds. `read_header` checks the first two before anything is
built, so loading the wrong file fails with a message that names what the file holds.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CheckpointError", "atomic_write", "atomic_torch_save", "model_checkpoint", "read_family", "read_header"]


class CheckpointError(ValueError):
    """A file that is not a checkpoint of ours, is damaged, or holds another model or task.

    The message names the file and what it holds (or why it cannot be read)."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """`write(temporary_path)` beside `path`, then rename over it: never a half-written file.

    `suffix` of the temporary name, for writers that pick the format from it (".png")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        _replace_with_default_mode(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace_with_default_mode(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the finished temporary file `tmp` over `path`, first giving it the mode a plain
    `open(path, "w")` would have (0o666 less the umask). `tempfile.mkstemp` makes files
    readable by their owner alone, which would leave shipped checkpoints and datasets
    unreadable to the other users of a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
    except OSError:  # a file system without modes: the file is still whole
        pass
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save, atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def model_checkpoint(model: nn.Module, name: str, version: int, config: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The common checkpoint dict of `model` (weights moved to the CPU), plus `extra` keys."""
    clash = sorted(set(extra) & {"format_version", "model", "config", "state_dict"})
    if clash:
        raise ValueError(f"extra checkpoint keys {clash} would overwrite the header; use other names")
    return {
        "format_version": version,
        "model": name,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }


def read_header(checkpoint: Any, name: str, version: int) -> dict[str, Any]:
    """Check that `checkpoint` holds a `name` model of layout `version`; returns its config dict.

    Raises:
        CheckpointError: not a checkpoint dict, another model (both named), or another version.
    """
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError("not a model checkpoint: expected a dict with format_version, model, config, state_dict")
    if checkpoint["model"] != name:
        raise CheckpointError(f"checkpoint holds a {checkpoint['model']!r} model, not a {name!r} model")
    found = checkpoint.get("format_version")
    if found != version:
        raise CheckpointError(f"checkpoint format_version={found!r}; this code reads version {version} of {name!r} checkpoints")
    return dict(checkpoint["config"])


def read_family(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """The model family a checkpoint file names in its header, and the file's contents.

    Every file we write names its family (`model`); training checkpoints also say
    `kind: "training"`. The file is read with `torch.load(weights_only=True)`, so a file
    holding pickled objects is refused without running them.

    Returns:
        (family name, the loaded dict).

    Raises:
        FileNotFoundError: no file at `path`.
        CheckpointError: the file is empty, damaged, not a checkpoint of ours, or names no model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty, not a checkpoint")
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means the same thing to the user
        # Not torch's own advice: loading with weights_only=False would run whatever
        # code a pickle holds.
        raise CheckpointError(f"{path} is not a checkpoint of ours, or it is damaged (truncated or corrupted)") from None
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a checkpoint dict")
    name = contents.get("model")
    if isinstance(name, str):
        return name, contents
    from models import registry  # here: the registry module imports nothing of ours

    # Training checkpoints written before they carried a header: each family's spec names
    # the field its trainer's layout had.
    for spec in registry.list_models():
        if spec.legacy_training_field is not None:
            key, value = spec.legacy_training_field
            if key in contents and (value is None or contents[key] == value):
                return spec.name, {**contents, "kind": "training"}
    raise CheckpointError(f"{path} names no model in its header (no 'model' field); it is not a checkpoint of ours")
