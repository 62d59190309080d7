#!/usr/bin/env python
"""Is bfloat16 autocast faster than float32 on this machine's CPU?

    python benchmarks/bfloat16_speed.py --threads 1

Times one linear layer of the sizes our models use (a batch of 512 x 230 -> 200, PlaNet's
RSSM and Dreamer's heads; 5360 x 512 -> 512, TOLD's batched MPPI) in float32 and under
bfloat16 autocast, and records whether the CPU has native bfloat16 instructions
(`planners.precision.cpu_has_fast_bfloat16`). Results merge into
benchmarks/results/bfloat16_speed.json under the CPU's name, so machines can be compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.results_io import atomic_write_text  # noqa: E402
from planners.precision import cpu_has_fast_bfloat16  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "bfloat16_speed.json"
SHAPES = {"rssm_512x230x200": (512, 230, 200), "told_mppi_5360x512x512": (5360, 512, 512)}


def time_layer(batch: int, fan_in: int, fan_out: int, repeats: int) -> dict[str, float]:
    layer, x = torch.nn.Linear(fan_in, fan_out), torch.randn(batch, fan_in)
    out = {}
    with torch.no_grad():
        out["float32_ms"] = 1000 * median_seconds(lambda: layer(x), repeats, warmup=3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bfloat16_ms"] = 1000 * median_seconds(lambda: layer(x), repeats, warmup=3)
    out["bfloat16_speedup"] = round(out["float32_ms"] / out["bfloat16_ms"], 3)
    out["float32_ms"], out["bfloat16_ms"] = round(out["float32_ms"], 3), round(out["bfloat16_ms"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    entry = {"machine": machine, "native_bfloat16": cpu_has_fast_bfloat16(),
             "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "layers": {name: time_layer(*shape, args.repeats) for name, shape in SHAPES.items()}}
    results = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    results[machine["cpu"]] = entry
    atomic_write_text(RESULT, json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
