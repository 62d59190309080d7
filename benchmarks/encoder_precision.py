#!/usr/bin/env python
"""The frozen DINOv2 encoder in float32 against bfloat16 autocast: ms per frame and the
features' relative difference (what `cache_features(precision=...)` trades).

    python benchmarks/encoder_precision.py            # ViT-S/14 at 112 px (our CPU preset)

A random initialisation (no weights are downloaded); speed does not depend on the weights.
Writes benchmarks/results/encoder_precision.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from models.dinov2 import dinov2_vits14

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random frozen encoder" warning: expected here
        encoder = dinov2_vits14().eval()
    images = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    results, features = {}, {}
    with torch.no_grad():
        for precision in ("float32", "bfloat16"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                encoder.forward_features(images)  # warm-up
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    out = encoder.forward_features(images)["x_norm_patchtokens"]
                    times.append(time.perf_counter() - t)
            features[precision] = out.float()
            results[precision] = {"ms_per_frame": round(1000 * min(times) / args.batch, 2)}
            print(f"{precision:8s}: {results[precision]['ms_per_frame']:.1f} ms per frame")
    a, b = features["float32"], features["bfloat16"]
    relative = float((a - b).norm() / a.norm())
    speedup = results["float32"]["ms_per_frame"] / results["bfloat16"]["ms_per_frame"]
    print(f"speed-up {speedup:.2f}x; relative feature difference {relative:.4f}")
    out = {"machine": machine_info(), "threads": args.threads, "encoder": "vits14 (random init)",
           "image_size": args.image_size, "batch": args.batch, "results": results, "speedup": round(speedup, 2),
           "relative_feature_difference": round(relative, 5)}  # fmt: skip
    atomic_write_text(ROOT / "benchmarks" / "results" / "encoder_precision.json", json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
