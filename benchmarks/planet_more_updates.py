#!/usr/bin/env python
"""Are a finished RSSM run's returns limited by its number of updates? Train it further on
the data it already has, with no new episodes, and evaluate as it goes.

    python benchmarks/planet_more_updates.py --run runs/v3actor/rssm-cartpole-swingup-state-actor-dreamer-s0 \
        --updates 1520 --eval-every 380 --threads 1

The run folder is copied first (to --out, default runs/more-updates/<run name>/) and never
written to. The copy resumes with the run's own settings, optimisers and replay buffer and
makes `--updates` more of its updates (world model and, with an actor, actor-critic, on
batches from the same buffer), evaluating with the run's evaluation controller every
`--eval-every` updates. Every evaluation uses the episode seeds of the run's last one, and
draws its latents and samples from generators seeded the same way
(`PlaNetTrainer.evaluate`), so the rows differ only by the weights. Row 0 re-evaluates the
run as it was. It matches the run's own final evaluation exactly only for runs made since
the trainer seeded its evaluations (`training.evaluation.seeded_sampling`); older runs
drew from torch's global generator, so for them it matches in distribution.

Why: the CPU check of the dreamer recipe (README) made 1/16 of DreamerV3's updates, and
its critic lagged far behind the policy's returns. If more updates on the same 100k env
steps of data lift the return, the check was update-bound; if not, the data or the recipe
is what holds it. This is offline training on a fixed buffer, so it is a lower bound on
what the same number of updates would do online (no fresh data from the improved policy).

Writes <out>/more_updates.csv and <results-dir>/<run name>.csv (one row per evaluation:
extra updates, the return, and the mean training metrics since the previous row) and
<results-dir>/<run name>.json (the same rows with the machine and the update counts done
and aimed at), all rewritten at every evaluation. It checkpoints the copy at every
evaluation too, so a killed job resumes from its last row.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import machine_info  # noqa: E402
from benchmarks.results_io import atomic_write_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "dreamer_cpu_more_updates"
BASE_FILE = "more_updates_base.json"  # the run's agent steps and update count when copied
ROWS_FILE = "more_updates.csv"
# Training metrics averaged between evaluations (those the trainer reports, when present).
METRICS = ("loss", "reconstruction", "reward", "kl", "actor_loss", "critic_loss", "entropy", "return_mean",
           "value_mean")  # fmt: skip


def copy_run(run: Path, out: Path) -> None:
    """Copy the files a resume needs (checkpoint, its replay file, logs) from `run` to `out`;
    `out` must not exist yet. Pictures and the acting files are left behind."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("checkpoint.pt", state["replay_file"], "eval.csv", "train.csv"):
        if (run / name).exists():
            shutil.copy2(run / name, tmp / name)
    base = {"source": str(run), "agent_steps": int(state["step"]), "updates": int(state["updates"])}
    (tmp / BASE_FILE).write_text(json.dumps(base, indent=1) + "\n")
    tmp.rename(out)  # the copy appears whole or not at all


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an earlier job, numbers as numbers (as a fresh row holds them), so the
    JSON summary does not mix "146.61" and 146.61."""
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> int | float | str:
    """An int or float where the CSV cell is one; other cells (the returns list, "") stay text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder with checkpoint.pt (read only)")
    p.add_argument("--out", default=None, help="the copy to train (default runs/more-updates/<run name>)")
    p.add_argument("--updates", type=int, required=True, help="updates to make beyond the run's own")
    p.add_argument("--eval-every", type=int, default=400, help="updates between evaluations")
    p.add_argument("--eval-episodes", type=int, default=None, help="default: the run's own")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    for name in ("updates", "eval_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    run = Path(args.run)
    if not (run / "checkpoint.pt").is_file():
        raise SystemExit(f"error: {run} has no checkpoint.pt; pass a PlaNet/Dreamer run folder")
    out = Path(args.out) if args.out else ROOT / "runs" / "more-updates" / run.name
    torch.set_num_threads(args.threads)

    from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer, more_updates
    from training.run_files import evaluation_row, rewrite_csv

    if not out.exists():
        copy_run(run, out)
        print(f"copied {run} to {out}", flush=True)
    base = json.loads((out / BASE_FILE).read_text())
    if Path(base["source"]).resolve() != run.resolve():
        raise SystemExit(f"error: {out} is a copy of {base['source']}, not of {run}; pass another --out")
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    config = PlaNetTrainConfig.from_dict(state["train_config"])
    del state
    trainer = PlaNetTrainer(config, out, device=args.device, progress=False)
    base["env_step"] = trainer.step * trainer.action_repeat  # offline updates take no env steps
    episodes = args.eval_episodes or config.eval_episodes
    # The episode seeds of the run's last evaluation.
    eval_seed = trainer.evaluation_seed(base["env_step"])
    rows = read_rows(out / ROWS_FILE)
    target = base["updates"] + args.updates
    print(f"{run.name}: {base['updates']} updates at {base['env_step']} env steps; training to {target} updates "
          f"on the same buffer, evaluating {episodes} episodes every {args.eval_every}", flush=True)

    machine = machine_info()  # once: it does not change within a job

    def write_summary() -> None:
        summary = {"run": str(run), "base": base, "extra_updates": trainer.updates - base["updates"],
                   "target_extra_updates": args.updates, "eval_episodes": episodes, "machine": machine,
                   "rows": rows}  # fmt: skip
        atomic_write_text(Path(args.results_dir) / f"{run.name}.json", json.dumps(summary, indent=1) + "\n")

    def evaluate(means: dict[str, float], count: int, seconds: float) -> None:
        t = time.perf_counter()
        returns = trainer.evaluate(episodes, seed=eval_seed)
        row = evaluation_row(base["env_step"], returns, 0.0)
        row = {"extra_updates": trainer.updates - base["updates"], "updates": trainer.updates,
               "mean_return": round(row["mean_return"], 2), "std_return": round(row["std_return"], 2),
               "returns": row["returns"], "update_s": round(seconds / max(count, 1), 3),
               "eval_s": round(time.perf_counter() - t, 1),
               **{k: round(means[k], 5) if k in means else "" for k in METRICS}}  # fmt: skip
        rows.append(row)
        trainer.save_checkpoint(trainer.wall_before)
        rewrite_csv(out / ROWS_FILE, rows)
        Path(args.results_dir).mkdir(parents=True, exist_ok=True)
        rewrite_csv(Path(args.results_dir) / f"{run.name}.csv", rows)
        write_summary()  # at every row, so a job killed before its target leaves a current summary
        print(f"+{row['extra_updates']} updates: {row['mean_return']:.1f} ± {row['std_return']:.1f} "
              f"(value_mean {row['value_mean']}, entropy {row['entropy']}, {row['update_s']} s/update)", flush=True)

    if not rows:
        evaluate({}, 0, 0.0)
    more_updates(trainer, target, args.eval_every, evaluate)
    write_summary()


if __name__ == "__main__":
    main()
