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
           "evaluation_row", "where_training_runs", "extend_machine_segments", "cpu_model", "usable_cores"]


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


def where_training_runs(device: Any) -> str:
    """A short description of the hardware a run trains on: the GPU's name for a CUDA
    device, else the CPU model and the cores this process may use (e.g. "cpu: AMD EPYC, 2 cores")."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {usable_cores()} cores"


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


def extend_machine_segments(
    segments: Sequence[Mapping[str, Any]] | None,
    where: str,
    env_step: int,
    wall: float,
    timers: Mapping[str, float],
) -> list[dict[str, Any]]:
    """The stretches of a run trained on one machine each, with this session's added.

    A run can resume on other hardware (carried to a GPU machine and back, say), and its
    throughput means nothing without knowing where each stretch ran. Each segment records
    where it ran and the env step, wall time and timers when it began; the next segment's
    start (or the checkpoint's totals) closes it. A session on the same hardware as the
    last segment continues that segment. A checkpoint from before segments were recorded
    gets one segment "unrecorded" from step 0.
    """
    out = [dict(s) for s in segments] if segments else []
    if not out and env_step > 0:
        out.append({"where": "unrecorded", "from_env_step": 0, "wall_at_start": 0.0,
                    "timers_at_start": {k: 0.0 for k in timers}})  # fmt: skip
    if not out or out[-1]["where"] != where:
        out.append({"where": where, "from_env_step": int(env_step), "wall_at_start": float(wall),
                    "timers_at_start": {k: float(v) for k, v in timers.items()}})  # fmt: skip
    return out
