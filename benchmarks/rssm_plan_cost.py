"""What one CEM planning step with a trained RSSM costs: this checkout against another, side by side.

    python benchmarks/rssm_plan_cost.py --run runs/rssm-cartpole-swingup-state-actor-dreamer-s0 \\
        --baseline /path/to/a/checkout/of/another/revision --precision bfloat16 --threads 2 --rounds 3

Each round runs `benchmarks/planet_learning.py plan-time` (PlaNet's CEM preset: 1,000
candidates, 10 iterations, horizon 12, on the run's model, episode seed 0) once from each
checkout, each in a fresh process, one after the other: machines drift, so the two are
measured in the same rounds. The medians over rounds, and every round's figures, go to
benchmarks/results/rssm_plan_cost-<run>-<precision>.json.

A CEM step is what the `planner` and `planner+actor` acting modes pay at every agent step
(`benchmarks/rssm_acting_modes.py`), so it sets the cost of evaluating them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def plan_time(checkout: Path, run: Path, precision: str, threads: int, steps: int) -> dict[str, Any]:
    """One `plan-time` measurement made by `checkout`'s code, in a fresh process: its entry."""
    with tempfile.TemporaryDirectory() as results:
        cmd = [sys.executable, str(checkout / "benchmarks" / "planet_learning.py"), "plan-time", "--run", str(run),
               "--steps", str(steps), "--precision", precision, "--threads", str(threads),
               "--results-dir", results, "--no-progress"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=checkout)
        if done.returncode != 0:
            raise SystemExit(f"plan-time failed in {checkout} (exit {done.returncode}):\n{done.stderr.strip()}")
        entries = json.loads((Path(results) / "planet_learning.json").read_text())["plan_time"]
    return next(iter(entries.values()))


def revision(checkout: Path) -> str | None:
    """The git commit `checkout` is at, "+changes" when tracked files differ from it (None
    outside git), to name what was compared."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=checkout)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=checkout).stdout.strip()  # fmt: skip
    except OSError:  # no git
        return None
    if not head.stdout.strip():
        return None
    return head.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="an RSSM run folder (checkpoint.pt)")
    p.add_argument("--baseline", required=True, type=Path, help="a checkout of another revision")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="planning steps timed per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    baseline = args.baseline.resolve()
    if not (baseline / "benchmarks" / "planet_learning.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no benchmarks/planet_learning.py there; pass a checkout")
    if not (args.run / "checkpoint.pt").is_file():
        raise SystemExit(f"--run {args.run}: no checkpoint.pt there; pass an RSSM run folder")
    for flag in ("steps", "rounds", "threads"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"--{flag} {getattr(args, flag)} must be at least 1")
    torch.set_num_threads(args.threads)  # so machine_info records the threads the timings used
    run = args.run.resolve()
    checkouts = {f"baseline ({baseline.name})": baseline, "this checkout": ROOT}
    revisions = {name: revision(checkout) for name, checkout in checkouts.items()}
    samples: dict[str, list[float]] = {name: [] for name in checkouts}
    entry: dict[str, Any] = {}
    for r in range(args.rounds):
        order = list(checkouts.items())
        for name, checkout in order if r % 2 == 0 else order[::-1]:  # neither always runs first
            entry = plan_time(checkout, run, args.precision, args.threads, args.steps)
            samples[name].append(entry["median_ms"])
            print(f"round {r + 1}, {name}: median {entry['median_ms']} ms per planning step", flush=True)
    median = {name: round(statistics.median(ms), 1) for name, ms in samples.items()}
    base = median[next(iter(median))]
    for name, ms in median.items():
        print(f"{name}: {ms} ms per planning step, {base / ms:.2f}x the baseline's speed", flush=True)
    write_json_result(args.results_dir, f"rssm_plan_cost-{run.name}-{args.precision}.json", {
        "command": "python benchmarks/rssm_plan_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "benchmark": "one CEM planning step (planet_learning.py plan-time), each checkout in a fresh process per round",
        "planner": entry["planner"],
        "model_env_steps": entry["model_env_steps"],
        "settings": {"precision": args.precision, "threads": args.threads, "steps": args.steps, "rounds": args.rounds},
        "revisions": revisions,
        "median_ms_per_round": samples,
        "median_ms": median,
        "speedup": round(base / median["this checkout"], 2),
    })  # fmt: skip


if __name__ == "__main__":
    main()
