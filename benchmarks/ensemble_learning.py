"""Learning and speed of the dynamics ensemble (PETS on the online skeleton).

    python benchmarks/ensemble_learning.py speed      # plan time per step of each planner, training time per round
    python benchmarks/ensemble_learning.py run        # the learning run (resumes with the same command)
    python benchmarks/ensemble_learning.py report     # eval rows -> results JSON/CSV (PNG with matplotlib)

    # the other runs of the benchmark: reacher-easy, and the deterministic E=1 ablation
    python benchmarks/ensemble_learning.py run --task reacher-easy --horizon 30 --propagation expectation \
        --plan-beta 2 --eval-every 25000
    python benchmarks/ensemble_learning.py run --preset deterministic --particles 1
    # the same reacher-easy run with its joint angles read raw, not as (sin, cos)
    python benchmarks/ensemble_learning.py run --task reacher-easy --horizon 30 --propagation expectation \
        --plan-beta 2 --eval-every 25000 --raw-angles

The run: a probabilistic ensemble (PETS preset: 5 x 4 x 200 SiLU) with iCEM on
cartpole-swingup, 50k env steps at PlaNet's action repeat 8 (125 agent steps per
episode), horizon 12 (PlaNet's), 20 particles with TS-inf (PETS), iCEM with 100 -> 80 ->
64 -> 51 candidates over 4 iterations, 10 elites, colored noise beta 0.25 (iCEM's value
for cartpole-swingup), 5 random seed episodes, at most 25 training epochs per episode (early stopping),
evaluated on 10 held-out episodes every 10k env steps. Results go into
benchmarks/results/ensemble_learning.{json,csv,png}.

`--task`, `--preset`, `--ensemble-size`, `--particles`, `--eval-every`, `--horizon`,
`--propagation`, `--plan-beta` and `--raw-angles` change the run; a changed run has its own
run folder and results name (e.g. ensemble_learning-deterministic.json). A task whose
joint angles the model reads as (sin, cos) (`envs.ANGLE_OBSERVATIONS`: reacher) gets
"-sincos" in both, e.g. ensemble_learning-reacher-easy-h30-expectation-beta2-sincos.json.
Reacher-easy runs at PlaNet's action repeat 4 (250 agent steps per episode).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks.machine import machine_info, median_seconds
from benchmarks.results_io import atomic_write_text, read_json, write_json_result
from training.online import angle_dims

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "ensemble_learning"
TASK = "cartpole-swingup"
RUN_OPTIONS = dict(preset="pets", planner="icem", particles=20, propagation="tsinf", horizon=12, plan_samples=100,
                   plan_iterations=4, seed_episodes=5, epochs=25, eval_every=10_000, eval_episodes=10)
STEPS = 50_000
DEFAULTS = dict(task=TASK, preset=RUN_OPTIONS["preset"], ensemble_size=None, particles=RUN_OPTIONS["particles"],
                eval_every=RUN_OPTIONS["eval_every"], horizon=RUN_OPTIONS["horizon"], propagation="tsinf",
                plan_beta=0.25)  # fmt: skip
# Published returns the runs are read against (ANCHORS: TD-MPC2 at 100k env steps) and the targets at 50k.
REFERENCES = {"cartpole-swingup": {"TD-MPC2 100k": 839, "target at 50k": 800},
              "reacher-easy": {"TD-MPC2 100k": 937, "target at 50k": 900}}  # fmt: skip


def variant(args: argparse.Namespace) -> str:
    """The run's label beyond the default cartpole-swingup PETS run ("" for that run)."""
    parts = [] if args.task == TASK else [args.task]
    if args.preset != RUN_OPTIONS["preset"]:
        parts.append(args.preset)
    if args.ensemble_size is not None:
        parts.append(f"e{args.ensemble_size}")
    parts += [f"h{args.horizon}"] if args.horizon != DEFAULTS["horizon"] else []
    parts += [args.propagation] if args.propagation != DEFAULTS["propagation"] else []
    parts += [f"beta{args.plan_beta:g}"] if args.plan_beta != DEFAULTS["plan_beta"] else []
    # Joint angles read as (sin, cos): runs from before this have their own folders (--raw-angles).
    parts += ["sincos"] if angle_dims(args.task, args.raw_angles) else []
    return "-".join(parts)


def result_name(args: argparse.Namespace) -> str:
    return NAME + (f"-{variant(args)}" if variant(args) else "")


def run_options(args: argparse.Namespace) -> dict:
    options = dict(RUN_OPTIONS, preset=args.preset, particles=args.particles, eval_every=args.eval_every,
                   horizon=args.horizon, propagation=args.propagation, plan_beta=args.plan_beta)  # fmt: skip
    if args.ensemble_size is not None:
        options["ensemble_size"] = args.ensemble_size
    if args.raw_angles:
        options["raw_angles"] = True
    return options


def run_dir(args: argparse.Namespace) -> Path:
    label = variant(args).removeprefix(args.task).strip("-") if args.task != TASK else variant(args)
    return Path("runs") / f"ensemble-{args.task}{'-' + label if label else ''}-state-s{args.seed}"


def command(args: argparse.Namespace) -> str:
    return "python " + " ".join(["benchmarks/ensemble_learning.py", *sys.argv[1:]])


def speed(args: argparse.Namespace) -> None:
    """Plan time per step of CEM, MPPI and iCEM over a PETS ensemble at cartpole's sizes
    (5-D state, 1-D action), and the time of one training round on `--transitions`."""
    from models.ensemble import EnsembleDynamics, Transitions, ensemble_config, train_ensemble
    from models.objectives import make_trajectory_sampling_objective
    from planners import MPCController, make_planner
    from training.ensemble_trainer import EnsembleTrainConfig, planner_settings

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = EnsembleDynamics(ensemble_config("pets", 5, 1)).eval()
    model.generator = torch.Generator().manual_seed(0)
    run = EnsembleTrainConfig(**RUN_OPTIONS)
    budgets = {
        "icem (run's: 100 samples x 4 iterations)": ("icem", planner_settings(run)),
        "icem (published default: 40 x 3)": ("icem", planner_settings(EnsembleTrainConfig(horizon=12))),
        "cem (PETS: 400 / 40 x 5)": ("cem", {k: v for k, v in planner_settings(EnsembleTrainConfig(planner="cem")).items()}),
        "mppi (400 x 5)": ("mppi", dict(horizon=12, num_samples=400, num_elites=40, iterations=5)),
    }
    rows = []
    for label, (name, settings) in budgets.items():
        for propagation in ("tsinf", "ts1", "expectation"):
            planner = make_planner(name, 1, **settings)
            factory = make_trajectory_sampling_objective(particles=20, propagation=propagation)
            ctrl = MPCController(model, planner, objective=factory, seed=0, device="cpu")
            obs = np.zeros(5, np.float32)
            seconds = median_seconds(lambda ctrl=ctrl, obs=obs: ctrl.act(obs), repeats=args.repeats, warmup=3)
            rows.append({"planner": label, "propagation": propagation, "particles": 20, "horizon": settings["horizon"],
                         "plan_ms": round(1000 * seconds, 1)})  # fmt: skip
            print(rows[-1], flush=True)
    # Training: one round (5 epochs, batch 32 per member) on cartpole-sized random data.
    g = torch.Generator().manual_seed(0)
    n = args.transitions
    obs = torch.randn(n, 5, generator=g)
    data = Transitions(obs, torch.rand(n, 1, generator=g) * 2 - 1, torch.randn(n, generator=g),
                       obs + 0.1 * torch.randn(n, 5, generator=g))  # fmt: skip
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
    t = time.perf_counter()
    metrics = train_ensemble(model, optimizer, data, np.random.default_rng(0), epochs=5, batch_size=32, patience=5)
    train_s = time.perf_counter() - t
    result = read_json(RESULTS / f"{NAME}.json")
    result["speed"] = {
        "command": command(args),
        "machine": machine_info(),
        "model": "pets preset: 5 members x 4 x 200 SiLU, probabilistic; reward heads 2 x 200; cartpole sizes (S=5, A=1)",
        "plan_per_step": rows,
        "training_round": {"transitions": n, "epochs": int(metrics["epochs"]), "batch_size": 32,
                           "seconds": round(train_s, 2)},  # fmt: skip
    }
    write_json_result(RESULTS, f"{NAME}.json", result)


def run(args: argparse.Namespace) -> None:
    """The learning run, resumable: the same command continues it after a kill."""
    from training.ensemble_trainer import make_trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = make_trainer(task=args.task, steps=args.steps, obs="state", seed=args.seed, out=str(run_dir(args)),
                           device="cpu", progress=False, options=run_options(args))  # fmt: skip
    print(f"training {trainer.describe()}; run folder {trainer.out_dir}/", flush=True)
    trainer.run()
    report(args)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def report(args: argparse.Namespace) -> None:
    """The run's evaluation rows and per-episode costs into the results files."""
    folder = run_dir(args)
    evals = _read_csv(folder / "eval.csv")
    train = _read_csv(folder / "train.csv")
    planned = [r for r in train if r.get("random") == "0"]
    per_episode = {
        "episodes": len(train),
        "planned_episodes": len(planned),
        "mean_collect_s": round(float(np.mean([float(r["episode_s"]) for r in planned])), 1) if planned else None,
        "mean_train_s": round(float(np.mean([float(r["train_s"]) for r in train if r.get("train_s")])), 1)
        if any(r.get("train_s") for r in train) else None,
        "last_episode_return": float(train[-1]["episode_return"]) if train else None,
    }
    name = result_name(args)
    options = run_options(args)
    flags = "".join(f" --{k.replace('_', '-')} {getattr(args, k)}" for k in ("task", "preset", "ensemble_size",
                    "particles", "eval_every", "horizon", "propagation", "plan_beta") if getattr(args, k) is not None and getattr(args, k) != DEFAULTS[k])  # fmt: skip
    cli_flags = f" --preset {args.preset}" if args.preset != RUN_OPTIONS["preset"] else ""
    cli_flags += f" --ensemble-size {args.ensemble_size}" if args.ensemble_size is not None else ""
    cli_flags += f" --particles {args.particles}" if args.particles != RUN_OPTIONS["particles"] else ""
    cli_flags += f" --eval-every {args.eval_every}" if args.eval_every != RUN_OPTIONS["eval_every"] else ""
    cli_flags += f" --horizon {args.horizon}" if args.horizon != DEFAULTS["horizon"] else ""
    cli_flags += f" --propagation {args.propagation}" if args.propagation != DEFAULTS["propagation"] else ""
    cli_flags += f" --plan-beta {args.plan_beta:g}" if args.plan_beta != DEFAULTS["plan_beta"] else ""
    flags += " --raw-angles" if args.raw_angles else ""
    cli_flags += " --raw-angles" if args.raw_angles else ""
    repeat = {"cartpole": 8, "reacher": 4}.get(args.task.split("-")[0])
    result = read_json(RESULTS / f"{name}.json")
    result["learning"] = {
        "command": f"python benchmarks/ensemble_learning.py run{flags} --steps {args.steps} --seed {args.seed}",
        "equivalent_cli": (f"python run_planning.py train --model ensemble --task {args.task} --steps {args.steps} "
                           f"--plan-samples 100 --plan-iterations 4{cli_flags}"),
        "machine": machine_info(),
        "task": args.task,
        "steps": args.steps,
        "settings": {**options, "action_repeat": repeat, "batch_size": 32, "lr": 1e-3,
                     "angle_dims": list(angle_dims(args.task, args.raw_angles))},
        "run_folder": str(folder),
        "complete": bool(evals) and int(evals[-1]["env_step"]) >= args.steps,
        "eval": [{"env_step": int(r["env_step"]), "mean_return": round(float(r["mean_return"]), 1),
                  "std_return": round(float(r["std_return"]), 1), "wall_s": float(r["wall_s"])} for r in evals],
        "per_episode": per_episode,
        "reference": REFERENCES.get(args.task, {}),
    }  # fmt: skip
    write_json_result(RESULTS, f"{name}.json", result)
    if evals:
        lines = ["env_step,mean_return,std_return,wall_s"]
        lines += [f"{r['env_step']},{float(r['mean_return']):.1f},{float(r['std_return']):.1f},{r['wall_s']}" for r in evals]
        atomic_write_text(RESULTS / f"{name}.csv", "\n".join(lines) + "\n")
        plot(result["learning"]["eval"], args.task, name)


def plot(rows: list[dict], task: str, name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no picture")
        return
    from models.checkpoints import atomic_write

    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = [r["env_step"] for r in rows]
    y = np.array([r["mean_return"] for r in rows])
    s = np.array([r["std_return"] for r in rows])
    ax.plot(x, y, marker="o", label="PETS ensemble + iCEM")
    ax.fill_between(x, y - s, y + s, alpha=0.2)
    if "TD-MPC2 100k" in REFERENCES.get(task, {}):
        ax.axhline(REFERENCES[task]["TD-MPC2 100k"], color="gray", linestyle="--", label="TD-MPC2 at 100k")
    ax.set(xlabel="env steps", ylabel="return (10 episodes)", title=task, ylim=(0, 1000))
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(RESULTS / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=120), suffix=".png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p_speed = sub.add_parser("speed", help="plan and training time")
    p_speed.add_argument("--repeats", type=int, default=10)
    p_speed.add_argument("--transitions", type=int, default=5000)
    p_speed.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--steps", type=int, default=STEPS)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
        p.add_argument("--task", default=DEFAULTS["task"], help="a DM Control task (state observations)")
        p.add_argument("--preset", default=DEFAULTS["preset"], help="ensemble preset (pets, mbrl, deterministic)")
        p.add_argument("--ensemble-size", type=int, default=None, help="members (default: the preset's)")
        p.add_argument("--particles", type=int, default=DEFAULTS["particles"], help="trajectory-sampling particles")
        p.add_argument("--eval-every", type=int, default=DEFAULTS["eval_every"], help="env steps between evaluations")
        p.add_argument("--horizon", type=int, default=DEFAULTS["horizon"], help="planning horizon (agent steps)")
        p.add_argument("--propagation", default=DEFAULTS["propagation"], help="tsinf, ts1 or expectation")
        p.add_argument("--plan-beta", type=float, default=DEFAULTS["plan_beta"], help="iCEM's colored-noise exponent")
        p.add_argument("--raw-angles", action="store_true", help="joint angles as they are, not as (sin, cos)")
    args = parser.parse_args()
    {"speed": speed, "run": run, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
