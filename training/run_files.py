"""The files every training run writes: atomic checkpoints and CSV logs that agree with them.

A run appends a row to its CSV logs as it goes and saves a checkpoint now and then; after
a kill it resumes from the checkpoint, so rows logged after that checkpoint are rewritten
away (`rewrite_csv`) and the logs never show steps the resumed run will repeat.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.checkpoints import atomic_torch_save  # one writer for models and runs

__all__ = ["atomic_torch_save", "append_csv", "rewrite_csv", "restore_logs", "check_same_run", "config_defaults",
           "evaluation_row", "cpu_model", "usable_cores"]


def append_csv(path: Path, row: Mapping[str, Any]) -> None:
    """Append one row, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def rewrite_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace a log by the checkpoint's rows, atomically (drops rows logged after it)."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore_logs(out_dir: Path, logs: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """On resume: each log file (name -> the checkpoint's rows) is rewritten to hold exactly
    the rows the checkpoint knows, so the logs never show steps the resumed run repeats."""
    for name, rows in logs.items():
        rewrite_csv(out_dir / name, rows)


def check_same_run(
    checkpoint: Path,
    saved: Mapping[str, Any],
    ours: Mapping[str, Any],
    keys: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Refuse to resume a run whose defining settings differ from this one's.

    A setting the checkpoint does not record (it predates the setting) counts as
    `defaults[key]`, the value runs had before the setting existed.

    Raises:
        ValueError: naming every differing setting with both values, and the way out.
    """
    defaults = defaults or {}
    before = {k: saved.get(k, defaults.get(k)) for k in keys}
    differ = [k for k in keys if before[k] != ours.get(k)]
    if differ:
        pairs = "; ".join(f"{k}={before[k]!r} (checkpoint) vs {ours.get(k)!r} (this run)" for k in differ)
        raise ValueError(f"{checkpoint} is a run with other settings: {pairs}; use another --out folder or the same settings")


def config_defaults(config_class: type) -> dict[str, Any]:
    """Field name -> default value of a config dataclass (fields without one are left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def evaluation_row(env_step: int, returns: Sequence[float], wall: float) -> dict[str, Any]:
    """One eval.csv row: mean and std of the episode returns, the returns, wall time."""
    return {
        "env_step": env_step,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "returns": " ".join(f"{r:.1f}" for r in returns),
        "wall_s": round(wall, 1),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
