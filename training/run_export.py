"""A finished (or stopped) run's acting files, written from its training checkpoint.

The trainers write model.pt (and, in the Dreamer actor modes, behavior.pt) beside every
checkpoint.pt; a run folder that holds only checkpoint.pt (copied without them) gets them
back with `write_acting_files`, and `ship_rssm_run` copies a PlaNet/Dreamer run's acting
files into a shipped-checkpoints folder with the run's settings, which planning reads for
the action repeat and `plan_value`.

Both read the checkpoint header (`model`, `kind: "training"`, `format_version`) and the
layouts from before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from models.checkpoints import atomic_torch_save, atomic_write, read_family

__all__ = ["env_steps", "read_training_checkpoint", "ship_dinowm", "ship_rssm_run", "write_acting_files"]

# The goal-objective settings a shipped DINO-WM file may record (run_planning.py's flags).
DINOWM_PLANNING_KEYS = ("goal_objective", "proprio_positions", "goal_alpha", "goal_at_rest")


def read_training_checkpoint(folder: str | Path, model: str | None = None) -> dict[str, Any]:
    """A run folder's checkpoint.pt in the current layout: the header (model, kind,
    format_version) and, for the RSSM, the model's dict under "model_state".

    Args:
        folder: the run folder.
        model: the family it must be ("told", "rssm"); None accepts either.

    Raises:
        FileNotFoundError: no checkpoint.pt in `folder`.
        ValueError: not a training checkpoint of ours, or of another family than `model`.
    """
    path = Path(folder) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no checkpoint.pt; give a training run folder")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training checkpoint")
    if "format_version" not in state and state.get("trainer") == "planet":  # before the header
        state = {**state, "format_version": 1, "model": "rssm", "kind": "training", "model_state": state["model"]}
    elif "format_version" not in state and isinstance(state.get("agent_state"), dict):
        state = {**state, "format_version": 1, "model": "told", "kind": "training"}
    if state.get("kind") != "training" or state.get("model") not in ("told", "rssm"):
        raise ValueError(f"{path} is not a TOLD or RSSM training checkpoint (model={state.get('model')!r}, "
                         f"kind={state.get('kind')!r})")  # fmt: skip
    if model is not None and state["model"] != model:
        raise ValueError(f"{path} is a {state['model']} training checkpoint, not a {model} one")
    return state


def env_steps(state: dict[str, Any]) -> int:
    """The env steps a checkpoint's model has trained for (its last train.csv row's)."""
    return int(state["train_rows"][-1]["env_step"]) if state.get("train_rows") else 0


def write_acting_files(state: dict[str, Any], folder: str | Path) -> list[Path]:
    """model.pt (and, for an RSSM run with an actor-critic, behavior.pt without its
    optimisers) of a checkpoint from `read_training_checkpoint`, written atomically into
    `folder`. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "model.pt"]
    if state["model"] == "told":
        atomic_torch_save(state["agent_state"]["agent"], written[0])
        return written
    atomic_torch_save(state["model_state"], written[0])
    if state.get("behavior") is not None:
        behavior = {k: v for k, v in state["behavior"].items() if k != "optimizers"}  # acting needs no optimiser
        written.append(folder / "behavior.pt")
        atomic_torch_save(behavior, written[1])
    return written


def ship_rssm_run(run: str | Path, checkpoints_dir: str | Path, command: str = "") -> list[Path]:
    """Copy an RSSM run's acting files into <checkpoints_dir>/rssm-<task>/ with
    train_config.json (the run's settings, env steps, evaluation rows, where it came from
    and `command`, the command that shipped it). Returns the files written."""
    state = read_training_checkpoint(run, model="rssm")
    config = dict(state["train_config"])
    target = Path(checkpoints_dir) / f"rssm-{config['task']}"
    written = write_acting_files(state, target)
    summary = {
        "train_config": config,
        "env_steps": env_steps(state),
        "eval_rows": list(state.get("eval_rows") or []),
        "shipped_from": Path(run).name,
        "command": command,
    }
    written.append(target / "train_config.json")
    text = json.dumps(summary, indent=1, default=str) + "\n"
    atomic_write(written[-1], lambda tmp: Path(tmp).write_text(text))
    return written


def ship_dinowm(model_file: str | Path, checkpoints_dir: str | Path, planning: dict[str, Any], command: str = "") -> Path:
    """Copy a DINO-WM `model.pt` to <checkpoints_dir>/dinowm-<task>.pt with `planning`, the
    goal-objective settings that planning with it uses unless flags say otherwise
    (keys: goal_objective, proprio_positions, goal_alpha, goal_at_rest).

    Raises:
        ValueError: not a DINO-WM model file, or an unknown planning key.
    """
    unknown = sorted(set(planning) - set(DINOWM_PLANNING_KEYS))
    if unknown:
        raise ValueError(f"unknown planning setting(s) {unknown}; accepted: {list(DINOWM_PLANNING_KEYS)}")
    family, state = read_family(model_file)
    if family != "dinowm" or "state_dict" not in state or state.get("kind") == "training":
        raise ValueError(f"{model_file} is not a DINO-WM model file (a run's model.pt)")
    target = Path(checkpoints_dir) / f"dinowm-{state['task']}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({**state, "planning": dict(planning), "shipped_from": str(model_file), "command": command}, target)
    return target


def main(argv: list[str] | None = None) -> None:
    """`python -m training.run_export dinowm RUN/model.pt [--goal-objective all] [--proprio-positions]`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m training.run_export", description="Ship a trained model file.")
    sub = parser.add_subparsers(dest="family", required=True)
    dinowm = sub.add_parser("dinowm", help="copy a DINO-WM model.pt to checkpoints/dinowm-<task>.pt")
    dinowm.add_argument("model_file", type=Path)
    dinowm.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    dinowm.add_argument("--goal-objective", choices=("last", "all"), default=None)
    dinowm.add_argument("--proprio-positions", action="store_true")
    dinowm.add_argument("--goal-alpha", type=float, default=None)
    args = parser.parse_args(argv)
    planning: dict[str, Any] = {}
    if args.goal_objective is not None:
        planning["goal_objective"] = args.goal_objective
    if args.proprio_positions:
        planning["proprio_positions"] = True
    if args.goal_alpha is not None:
        planning["goal_alpha"] = args.goal_alpha
    command = "python -m training.run_export " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        target = ship_dinowm(args.model_file, args.checkpoints, planning, command=command)
    except (OSError, ValueError, RuntimeError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB), planning with {planning or 'the defaults'}")


if __name__ == "__main__":
    main()
