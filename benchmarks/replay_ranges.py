"""The range of every state entry in an ensemble run's replay buffer.

    python benchmarks/replay_ranges.py --run runs/ensemble-reacher-easy-h30-expectation-beta2-state-s0

An entry whose range spans many multiples of 2 pi is a joint angle that winds (reacher's
unlimited shoulder): one arm configuration has many readings there, and a model reading it
raw cannot tell which configurations are the same. `envs.ANGLE_OBSERVATIONS` lists such
entries so that the ensemble reads them as (sin, cos). Results go into
benchmarks/results/replay_ranges-<run folder name>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks.results_io import write_json_result
from models.ensemble import run_transitions

RESULTS = Path(__file__).resolve().parent / "results"
PERCENTILES = (0, 1, 50, 99, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="an ensemble run folder (with model.pt and its replay buffer)")
    args = parser.parse_args()
    folder = Path(args.run)
    obs = run_transitions(folder / "model.pt").obs.numpy()  # [T, S]
    table = np.percentile(obs, PERCENTILES, axis=0)  # [len(PERCENTILES), S]
    entries = []
    for i in range(obs.shape[1]):
        row = {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, table[:, i])}
        row["turns_spanned"] = round(float((table[-1, i] - table[0, i]) / (2 * np.pi)), 1)
        entries.append({"entry": i, **row})
        print(entries[-1])
    write_json_result(RESULTS, f"replay_ranges-{folder.name}.json", {
        "command": "python benchmarks/replay_ranges.py --run " + args.run,
        "transitions": int(obs.shape[0]),
        "entries": entries,
    })


if __name__ == "__main__":
    main()
