"""keep_freed_memory: freed large blocks stay in the process for the next update."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, os.getcwd())
    from training.allocator import keep_freed_memory

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    if sys.argv[1] == "keep":
        assert keep_freed_memory() is True
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    before = resident_mb()
    del x
    print(before - resident_mb())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_kept_only_when_asked() -> None:
    def released(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", SCRIPT, mode], check=True, capture_output=True, text=True)
        return float(out.stdout.strip())

    assert released("default") > 48  # glibc returns a 64 MiB block at once
    assert released("keep") < 16  # kept for reuse
