"""When bfloat16 autocast pays on a CPU, and a warning where it does not.

bfloat16 autocast speeds up matrix products only where the hardware multiplies bfloat16:
Intel's AMX or AVX512-BF16 on CPUs, tensor cores on GPUs. Elsewhere (an AVX2-only CPU, for
instance) oneDNN converts and multiplies in software, which is far slower than float32:
`benchmarks/bfloat16_speed.py --threads 1` measured a 512 x 230 -> 200 linear layer at
0.91 ms in float32 and 13.2 ms in bfloat16 (14x slower), and TOLD's 5360 x 512 -> 512 at
62 ms against 518 ms (8x slower), on a 2-core AMD EPYC with AVX2 only; the same option
made TOLD's batched MPPI 1.67x faster on an AMX Xeon (benchmarks/told_precision.py). The option stays the
user's choice; we warn once per process so a slow run is explained, not silent.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

__all__ = ["cpu_has_fast_bfloat16", "warn_if_bfloat16_is_slow"]

# /proc/cpuinfo flags of the instructions that multiply bfloat16 natively (x86).
FAST_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_fast_bfloat16() -> bool | None:
    """True if this CPU multiplies bfloat16 natively, False if not, None if unknown (no
    /proc/cpuinfo, e.g. macOS; or a CPU family we do not read, e.g. ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not flags:
        return None  # no x86 "flags" line: not something we can judge
    return any(flag in flags for flag in FAST_BFLOAT16_FLAGS)


@functools.cache
def warn_if_bfloat16_is_slow(device_type: str) -> None:
    """Warn (once per device type) when bfloat16 autocast is asked for on a CPU without
    native bfloat16 arithmetic, where it runs many times slower than float32."""
    if device_type == "cpu" and cpu_has_fast_bfloat16() is False:
        warnings.warn(
            "precision='bfloat16' on a CPU without AMX or AVX512-BF16 instructions: bfloat16 matrix products "
            "run in software here (8-14x slower than float32 for our models' layers on an "
            "AVX2 CPU; benchmarks/bfloat16_speed.py). Use precision='float32' on this machine.",
            RuntimeWarning,
            stacklevel=3,
        )
