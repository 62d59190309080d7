"""Keep freed memory in the process for reuse: a CPU training speed setting (glibc only).

PyTorch's CPU tensors come from malloc. glibc serves large blocks (32 MiB and up always,
smaller ones too once its dynamic threshold has grown) with a fresh `mmap` and hands them
back to the kernel on `free`, so every large activation of a training update is
page-faulted and zeroed again: on the dreamer recipe's update (tensors of 16 x 1,024 x
512 floats) that is a measurable share of the time (benchmarks/rssm_update_cost.py
--compare). PyTorch's CPU performance guide suggests preloading jemalloc or tcmalloc for
this; `mallopt` gets the same reuse from the allocator already loaded, without a preload.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
# Free memory at the top of the heap is returned to the kernel only beyond this much.
_TRIM_THRESHOLD = 1 << 30
# Each heap extension asks for this much more than needed, so growth takes few calls.
_TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep up to 1 GiB of freed memory for reuse
    (process-wide, from now on). Resident memory then stays near the peak of one update.

    Returns:
        True when glibc took the settings; False elsewhere (macOS, Windows, musl), where
        nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # No mmap for large blocks (they would be returned and page-faulted again).
    done = [mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), mallopt(_M_TOP_PAD, _TOP_PAD)]
    return all(done)
