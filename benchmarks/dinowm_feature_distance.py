#!/usr/bin/env python
"""Does DINO-WM's goal objective see how far the goal is? A check of the encoder, no planning.

    python benchmarks/dinowm_feature_distance.py --task point_mass-goal reacher-pose

DINO-WM plans by minimising the distance between predicted and goal features (visual
patch features plus, weighted by alpha, a learned proprio embedding). CEM can only steer
toward a goal if that distance grows with the physical distance to it. This script asks
the trained run's own data: it draws frame pairs (t, u) with |t - u| <= 25 env steps from
the held-out trajectories (the ones goals are drawn from), and compares, per pair,

- the physical goal distance (the env's own `distance`: metres for point_mass-goal, the
  norm of the two joint-angle errors for reacher-pose) and whether the pair counts as
  reached (the env's `is_success`),
- the visual term: mean squared difference of the cached (frozen, pooled) encoder
  features the predictor was trained on,
- the proprio term: mean squared difference of the trained model's proprio embedding.

It reports Spearman's rank correlation with the physical distance, the probability that
a pair within the success threshold has a smaller feature distance than a near miss (1 to
3 thresholds away; 0.5 = blind), and the median feature distance per distance band. A
band-median that stops growing means the objective is flat there: CEM gets no direction.

Writes benchmarks/results/dinowm_feature_distance.json (entries per task, merged).
Needs `dinowm_goals.py collect` and `train` for the task first (their run folder).
"""

from __future__ import annotations

import argparse
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import read_json, write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs"
NAME = "dinowm_feature_distance.json"
MAX_GAP = 25  # env steps between the two frames of a pair (the goal offset of dinowm_goals.py)


def band_medians(values: np.ndarray, physical: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """Median of `values` for pairs 0-1, 1-2, 2-4 and over 4 thresholds apart."""
    edges = [0.0, threshold, 2 * threshold, 4 * threshold, np.inf]
    rows = []
    for lo, hi in pairwise(edges):
        band = (physical >= lo) & (physical < hi)
        rows.append({"from": lo, "to": None if np.isinf(hi) else hi, "pairs": int(band.sum()),
                     "median": float(np.median(values[band])) if band.any() else None})
    return rows


def ordering(values: np.ndarray, physical: np.ndarray, success: np.ndarray, threshold: float) -> dict[str, Any]:
    """Rank correlation with the physical distance, and P(a pair that counts as reached
    scores below a near miss: not reached, under 3 thresholds apart)."""
    inside = values[success]
    near = values[~success & (physical < 3 * threshold)]
    auc = float((inside[:, None] < near[None, :]).mean()) if len(inside) and len(near) else None
    return {"spearman": round(float(spearmanr(values, physical).statistic), 4),
            "p_inside_below_near_miss": None if auc is None else round(auc, 4),
            "band_medians": band_medians(values, physical, threshold)}


def measure(task: str, runs_dir: Path, pairs: int, seed: int) -> dict[str, Any]:
    from envs.goals import GOAL_TASKS
    from models.dino_wm import load_trained_dinowm
    from training.datasets import OfflineDataset
    from training.feature_cache import load_cached_features
    from training.goal_mpc import GoalEvalConfig

    folder = runs_dir / f"dinowm-{task}"
    model_path = folder / "model.pt"
    if not model_path.is_file():
        raise SystemExit(f"error: no trained model at {model_path}; run benchmarks/dinowm_goals.py collect and train "
                         f"--task {task} first")
    dataset = OfflineDataset(folder / "data")
    model = load_trained_dinowm(model_path).eval()
    cache_dirs = sorted((folder / "data").glob("features-*"))
    if len(cache_dirs) != 1:
        raise SystemExit(f"error: expected one feature cache in {folder / 'data'}, found {len(cache_dirs)}: "
                         f"{[d.name for d in cache_dirs]}")
    features = load_cached_features(dataset, cache_dirs[0])

    rng = np.random.default_rng(seed)
    held_out = dataset.split()[1]
    steps = dataset.steps + 1
    traj = rng.choice(held_out, size=pairs)
    t = rng.integers(0, steps, size=pairs)
    u = np.clip(t + rng.integers(-MAX_GAP, MAX_GAP + 1, size=pairs), 0, steps - 1)
    goal_task = GOAL_TASKS[task]()
    achieved = dataset.array("achieved_goal").astype(np.float32)
    physical = np.asarray(goal_task.distance(achieved[traj, t], achieved[traj, u]), dtype=np.float64)
    success = np.asarray(goal_task.is_success(achieved[traj, t], achieved[traj, u]), dtype=bool)
    threshold = float(goal_task.threshold)

    pair_features = features.gather(traj, np.stack([t, u], 1)).astype(np.float32)  # [n, 2, P, D]
    visual = ((pair_features[:, 0] - pair_features[:, 1]) ** 2).mean(axis=(1, 2))
    proprio = dataset.array("proprio").astype(np.float32)
    with torch.no_grad():
        emb_t = model.embed_proprio(torch.from_numpy(proprio[traj, t]), (pairs,))
        emb_u = model.embed_proprio(torch.from_numpy(proprio[traj, u]), (pairs,))
    proprio_term = ((emb_t - emb_u) ** 2).mean(-1).numpy()
    alpha = GoalEvalConfig.alpha  # the evaluation objective's default proprio weight
    encoder = features.identity
    return {
        "task": task,
        "pairs": pairs,
        "held_out_trajectories": len(held_out),
        "max_gap_env_steps": MAX_GAP,
        "threshold": threshold,
        "distance": type(goal_task).distance.__doc__.strip().splitlines()[0] if type(goal_task).distance.__doc__ else
        "the env's goal distance",
        "encoder": {"name": encoder.name, "weights": encoder.weights, "image_size": encoder.image_size,
                    "patch_pool": encoder.patch_pool},
        "visual": ordering(visual, physical, success, threshold),
        "proprio_embedding": ordering(proprio_term, physical, success, threshold),
        f"objective_alpha_{alpha}": ordering(visual + alpha * proprio_term, physical, success, threshold),
        "machine": machine_info(),
    }


def main() -> None:
    from training.goal_mpc import GoalEvalConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", default=["point_mass-goal", "reacher-pose"],
                        choices=["point_mass-goal", "reacher-pose"])
    parser.add_argument("--pairs", type=int, default=4000, help="frame pairs drawn per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", default=str(RUNS))
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args()
    if args.pairs < 10:
        parser.error(f"--pairs {args.pairs} must be at least 10")
    data = read_json(Path(args.results_dir) / NAME)
    data["benchmark"] = ("goal-objective terms against the physical goal distance on held-out frame pairs "
                         "(no planning)")
    for task in args.task:
        entry = measure(task, Path(args.runs_dir), args.pairs, args.seed)
        data.setdefault("entries", {})[task] = entry
        print(f"{task} ({entry['encoder']['weights']} encoder, success threshold {entry['threshold']}):")
        for term in ("visual", "proprio_embedding", f"objective_alpha_{GoalEvalConfig.alpha}"):
            o = entry[term]
            medians = ", ".join(f"{b['median']:.5f}" if b["median"] is not None else "-" for b in o["band_medians"])
            print(f"  {term:20s} spearman {o['spearman']:.3f}  P(inside < near miss) "
                  f"{o['p_inside_below_near_miss']}  band medians [<1, 1-2, 2-4, >4 thresholds]: {medians}")
    write_json_result(args.results_dir, NAME, data)


if __name__ == "__main__":
    main()
