#!/usr/bin/env python
"""One trained RSSM and actor-critic, acting three ways on the same held-out episodes.

    python benchmarks/rssm_acting_modes.py --run runs/rssm-cartpole-swingup-state-actor-dreamer-s0

The run must have trained an actor-critic (`--mode actor` or `planner+actor`). Its model
at the last checkpoint is copied (`training.run_export.ship_rssm_run`) into
<run>/acting-modes-<env steps>/, so training may go on meanwhile, and acts in each mode
(`run_planning.py --model rssm`):

    actor           the Dreamer actor alone (its mean action)
    planner         CEM over the model, PlaNet's preset (1000 x 10 iterations x horizon 12)
    planner+actor   that CEM with the actor's proposals and the critic's value at the end
                    of every candidate (`--plan-value`)

on episodes with seeds --seed, --seed + 1, ... (1000 on: not the seeds the run trained or
evaluated with). Each episode is written as it ends and is not run again, so a killed
benchmark resumes where it stopped. Modes can run in separate processes (one per core,
`--modes planner` beside `--modes planner+actor`): every report holds the finished
episodes of all modes. The table (mean and std per mode, the best mode) goes to
<results-dir>/rssm_acting_modes-<run>-<env steps>.{json,md} (tagged with the precision when
it is not float32, and with --max-steps when given).

The CEM modes cost one planning step per agent step: on a 2-core CPU about a second each,
so about 1.5 h for 10 episodes of 500 agent steps (action repeat 2); on a GPU, minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_info  # noqa: E402
from models.checkpoints import atomic_write  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODES = ("actor", "planner", "planner+actor")


def snapshot(run: Path) -> tuple[Path, dict[str, Any]]:
    """The run's acting files at its last checkpoint, copied once into
    <run>/acting-modes-<env steps>/rssm-<task>/; returns (model file, run settings)."""
    from training.run_export import env_steps, read_training_checkpoint, ship_rssm_run

    state = read_training_checkpoint(run, model="rssm")
    config = dict(state["train_config"])
    if state.get("behavior") is None:
        raise SystemExit(f"error: {run} trained no actor-critic (mode {config.get('mode')!r}); the actor modes need "
                         "a run of --mode actor or planner+actor")  # fmt: skip
    folder = run / f"acting-modes-{env_steps(state)}"
    model = folder / f"rssm-{config['task']}" / "model.pt"
    if not model.with_name("train_config.json").is_file():  # the last file the copy writes
        ship_rssm_run(run, folder, command=f"python benchmarks/rssm_acting_modes.py --run {run}")
    return model, {**config, "env_steps": env_steps(state)}


def settings_tag(mode: str, args: argparse.Namespace) -> str:
    """The folder name of one mode's episodes under the settings that change them
    (precision, cut episodes), so a run under other settings never reuses them."""
    return "-".join([mode.replace("+", "_plus_"), args.precision]
                    + ([f"max{args.max_steps}"] if args.max_steps is not None else []))  # fmt: skip


def episode_argv(model: Path, config: dict[str, Any], mode: str, seed: int, args: argparse.Namespace,
                 out: Path) -> list[str]:  # fmt: skip
    """run_planning.py's arguments for one episode of `mode`."""
    argv = ["--model", "rssm", "--checkpoint", str(model), "--task", config["task"], "--obs", config["obs"],
            "--mode", mode, "--episodes", "1", "--seed", str(seed), "--device", args.device,
            "--precision", args.precision, "--out", str(out), "--no-progress"]  # fmt: skip
    if mode == "planner+actor":
        argv.append("--plan-value")
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    return argv


def episode_folder(folder: Path, mode: str, seed: int, args: argparse.Namespace) -> Path:
    """Where one episode of `mode` under the current settings is written."""
    return folder / settings_tag(mode, args) / f"seed-{seed}"


def finished_episode(out: Path) -> dict[str, float] | None:
    """{"return", "plan_ms"} of one finished episode (run_planning.py's summary.json), or
    None when it has not finished."""
    summary = out / "summary.json"
    if not summary.is_file():
        return None
    row = json.loads(summary.read_text())["rows"][0]
    return {"return": float(row["episode_return"]), "plan_ms": float(row["mean_plan_ms"])}


def episodes_on_disk(folder: Path, seeds: list[int], args: argparse.Namespace) -> dict[str, dict[int, dict[str, float]]]:
    """The finished episodes under the current settings, {mode: {seed: episode}}, for the
    requested modes and for any other mode with one finished: modes run by separate
    processes (one per core) share one report."""
    found = {}
    for mode in MODES:
        by_seed = {}
        for seed in seeds:
            done = finished_episode(episode_folder(folder, mode, seed, args))
            if done is not None:
                by_seed[seed] = done
        if by_seed or mode in args.modes:
            found[mode] = by_seed
    return found


def table(episodes: dict[str, dict[int, dict[str, float]]], seeds: list[int]) -> dict[str, Any]:
    """Mean and std of the return per mode over the seeds done, the mean planning time
    per step, and the best mode among the complete ones."""
    modes = {}
    for mode, by_seed in episodes.items():
        done = [by_seed[s] for s in seeds if s in by_seed]
        returns = [e["return"] for e in done]
        modes[mode] = {"episodes": len(done), "returns": [round(r, 1) for r in returns],
                       "mean": round(float(np.mean(returns)), 1) if done else None,
                       "std": round(float(np.std(returns)), 1) if done else None,
                       "plan_ms": round(float(np.mean([e["plan_ms"] for e in done])), 1) if done else None}  # fmt: skip
    complete = {m: v["mean"] for m, v in modes.items() if v["episodes"] == len(seeds)}
    best = max(complete, key=lambda m: complete[m]) if complete else None
    return {"modes": modes, "best_mode": best, "best_mean": None if best is None else complete[best]}


def write_report(path: Path, result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    lines = [f"# Acting modes: {result['run']} at {result['env_steps']} env steps", "",
             f"{result['task']}, episodes with seeds {result['seeds'][0]}-{result['seeds'][-1]}, "
             f"{result['precision']}, on {result['machine'].get('cpu', 'this machine')} ({result['device']}).", "",
             "| mode | episodes | return, mean +- std | ms per agent step |", "|---|---|---|---|"]  # fmt: skip
    for mode, m in result["modes"].items():
        score = "-" if m["mean"] is None else f"{m['mean']} +- {m['std']}"
        lines.append(f"| {mode}{' (best)' if mode == result['best_mode'] else ''} | {m['episodes']} | {score} | "
                     f"{'-' if m['plan_ms'] is None else m['plan_ms']} |")
    # Modes may run as separate processes (one per core); each report lists every mode's
    # finished episodes for these settings, so the command shown is only the last writer's.
    lines += ["", "Command that wrote this report (the table holds every mode's finished episodes on disk "
              "for these settings, whichever command ran them):", "", f"    {result['command']}", ""]
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text("\n".join(lines)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="an RSSM run folder with an actor-critic (checkpoint.pt)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000, help="seed of the first episode (then seed + 1, ...)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes short (quick checks only)")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes {args.episodes} must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    import run_planning

    run = Path(args.run)
    try:
        model, config = snapshot(run)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    seeds = [args.seed + i for i in range(args.episodes)]
    name = f"rssm_acting_modes-{run.name}-{config['env_steps']}"
    name += "" if args.precision == "float32" else f"-{args.precision}"
    name += "" if args.max_steps is None else f"-max{args.max_steps}"
    report = Path(args.results_dir) / name
    command = " ".join(["python benchmarks/rssm_acting_modes.py", *(argv if argv is not None else sys.argv[1:])])
    header = {"run": run.name, "task": config["task"], "env_steps": config["env_steps"],
              "recipe_model": config.get("model"), "seeds": seeds, "precision": args.precision,
              "device": args.device, "machine": machine_info(), "command": command}  # fmt: skip
    folder = model.parent.parent

    def write_table() -> dict[str, Any]:
        result = {**header, **table(episodes_on_disk(folder, seeds, args), seeds)}
        write_report(report, result)
        return result

    for mode in args.modes:
        for seed in seeds:
            out = episode_folder(folder, mode, seed, args)
            if finished_episode(out) is None:
                print(f"{mode}, episode seed {seed} ...", flush=True)
                if run_planning.main(episode_argv(model, config, mode, seed, args, out)) != 0:
                    raise SystemExit(f"error: the {mode} episode with seed {seed} failed")
                assert finished_episode(out) is not None, f"{out} has no summary.json"
                write_table()  # after every episode, so a killed benchmark leaves its table
    result = write_table()
    for mode, m in result["modes"].items():
        print(f"{mode:14s} {m['mean']:8.1f} +- {m['std']:.1f} ({m['episodes']} episodes)")
    print(f"best: {result['best_mode']} ({result['best_mean']}); {report}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
