"""What machine a benchmark ran on, recorded beside its numbers."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from training.run_files import cpu_model, usable_cores

__all__ = ["machine_info", "median_seconds"]


def machine_info() -> dict[str, Any]:
    """CPU model, cores this process may use, torch threads and versions, GPU if any."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_available": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import mujoco

        info["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds over `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
