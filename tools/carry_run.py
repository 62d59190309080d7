#!/usr/bin/env python
"""Developer tooling: move an unfinished training run from one of our machines to another.

    python tools/carry_run.py pack runs/told-walker-walk-state-s0    # -> carried/told-walker-walk-state-s0.tar.gz
    python tools/carry_run.py unpack carried/told-walker-walk-state-s0.tar.gz   # -> runs/told-walker-walk-state-s0/
    python tools/carry_run.py list

Not part of the product. Our benchmark runs (TOLD, PlaNet/Dreamer) take longer than one
sitting on a 2-core CPU, and `runs/` is not kept in git. `pack` bundles exactly what
resuming needs, and no more, into one gzipped tar under `carried/` (untracked):

- `checkpoint.pt` and the replay file it names (`replay_file`), so training resumes at the
  same env step with the same buffer, optimiser and random state;
- the CSV logs (`train.csv`, `eval.csv`, `eval-deferred*.csv`);
- the deferred-evaluation snapshots that `eval-deferred.csv` has no result for yet
  (evaluated ones are dropped: their returns are already in the CSV).

`model.pt` (rewritten from the checkpoint at the next save) and pictures are left out.

`pack --drop-optimizer` (PlaNet/Dreamer runs) leaves out the optimisers' Adam moments,
about two thirds of a checkpoint: a dreamer-recipe run's 55 MB checkpoint becomes about
20 MB, small enough to travel beside the code to a machine with a 64 MiB transfer limit.
The run then resumes with fresh moments.
`unpack` refuses to overwrite a run that has gone further than the bundle (it compares the
env step in the two checkpoints) unless `--force` is given. The archive is written to a
temporary file and renamed, so a kill never leaves half a bundle.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / "carried"
RUNS = ROOT / "runs"


def _checkpoint_state(data: bytes | Path) -> dict:
    import torch

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    return torch.load(source, map_location="cpu", weights_only=True)


def _env_step(state: dict) -> int:
    """Env steps a run checkpoint stands for: the last logged training episode's env step
    (the agent-step counter alone would need the task's action repeat)."""
    rows = state.get("train_rows") or []
    if rows and "env_step" in rows[-1]:
        return int(float(rows[-1]["env_step"]))
    return int(state.get("step", 0))


def _evaluated_steps(run: Path) -> set[int]:
    path = run / "eval-deferred.csv"
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {int(float(row["env_step"])) for row in csv.DictReader(f)}


def files_to_carry(run: Path) -> list[Path]:
    """The files of `run` that resuming needs (see the module docstring)."""
    checkpoint = run / "checkpoint.pt"
    if not checkpoint.exists():
        raise FileNotFoundError(f"{run} has no checkpoint.pt: nothing to carry (is it a training run folder?)")
    state = _checkpoint_state(checkpoint)
    replay = run / state["replay_file"]
    if not replay.exists():
        raise FileNotFoundError(f"{checkpoint} names {replay.name}, which is missing from {run}")
    files = [checkpoint, replay, *sorted(run.glob("*.csv"))]
    evaluated = _evaluated_steps(run)
    for snapshot in sorted((run / "snapshots").glob("model-*.pt")):
        if int(snapshot.stem.split("-")[1]) not in evaluated:
            files.append(snapshot)
    return files


def without_optimizers(state: dict) -> dict:
    """A PlaNet training checkpoint without its Adam states (world model, actor, critic).

    Raises:
        ValueError: a checkpoint of another trainer (its resume needs the optimiser state).
    """
    if state.get("trainer") != "planet":
        raise ValueError(f"--drop-optimizer supports PlaNet/Dreamer runs (trainer 'planet'); this checkpoint's "
                         f"trainer is {state.get('trainer')!r}")  # fmt: skip
    slim = {**state, "optimizer": None}
    if state.get("behavior") is not None:
        slim["behavior"] = {k: v for k, v in state["behavior"].items() if k != "optimizers"}
    return slim


def pack(run: Path, out_dir: Path = CARRIED, drop_optimizer: bool = False) -> Path:
    """Bundle `run` into `out_dir/<run name>.tar.gz` (atomically); returns the bundle's path.
    With `drop_optimizer`, the bundled checkpoint.pt has no optimiser state
    (`without_optimizers`); the run folder itself is left as it is."""
    import torch

    run = run.resolve()
    files = files_to_carry(run)
    checkpoint_bytes = None
    if drop_optimizer:
        buffer = io.BytesIO()
        torch.save(without_optimizers(_checkpoint_state(run / "checkpoint.pt")), buffer)
        checkpoint_bytes = buffer.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{run.name}.tar.gz"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for path in files:
                arcname = f"{run.name}/{path.relative_to(run)}"
                if checkpoint_bytes is not None and path.name == "checkpoint.pt":
                    info = tarfile.TarInfo(arcname)
                    info.size, info.mtime, info.mode = len(checkpoint_bytes), int(path.stat().st_mtime), 0o600
                    tar.addfile(info, io.BytesIO(checkpoint_bytes))
                else:
                    tar.add(path, arcname=arcname)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def unpack(bundle: Path, runs_dir: Path = RUNS, force: bool = False) -> Path:
    """Extract `bundle` into `runs_dir/<run name>/`; returns the run folder."""
    with tarfile.open(bundle, "r:gz") as tar:
        members = tar.getmembers()
        names = {m.name.split("/", 1)[0] for m in members}
        unsafe = any(m.name.startswith("/") or ".." in m.name.split("/") for m in members)
        if len(names) != 1 or unsafe or any(not m.isfile() for m in members):
            raise ValueError(f"{bundle} is not a bundle from `pack` (expected plain files under one run folder; found {sorted(names)})")
        run = runs_dir / names.pop()
        bundled = _checkpoint_state(tar.extractfile(f"{run.name}/checkpoint.pt").read())
        if (run / "checkpoint.pt").exists() and not force:
            here = _checkpoint_state(run / "checkpoint.pt")
            if _env_step(here) > _env_step(bundled):
                raise FileExistsError(
                    f"{run} is at env step {_env_step(here)}, past the bundle's {_env_step(bundled)}; "
                    "pass --force to replace it with the bundle")
        runs_dir.mkdir(parents=True, exist_ok=True)
        # The "data" filter (no links, no paths outside runs_dir) came in Python 3.10.12 / 3.11.4;
        # older versions get the same safety from the plain-files check above.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(runs_dir, filter="data")
        else:
            tar.extractall(runs_dir)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="bundle a run folder into carried/")
    p.add_argument("run", type=Path)
    p.add_argument("--drop-optimizer", action="store_true",
                   help="leave out the Adam moments (PlaNet/Dreamer runs): about a third of the size; "
                        "the run resumes with fresh moments")
    p.add_argument("--out-dir", type=Path, default=CARRIED, help="where the bundle is written")
    u = sub.add_parser("unpack", help="restore a bundle into runs/")
    u.add_argument("bundle", type=Path)
    u.add_argument("--force", action="store_true", help="replace a run that has gone further than the bundle")
    sub.add_parser("list", help="the bundles in carried/ and the env step each resumes at")
    args = parser.parse_args(argv)
    if args.command == "pack":
        target = pack(args.run, args.out_dir, drop_optimizer=args.drop_optimizer)
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: {target.stat().st_size / 1e6:.1f} MB")
    elif args.command == "unpack":
        print(f"restored {unpack(args.bundle, force=args.force)}")
    else:
        for bundle in sorted(CARRIED.glob("*.tar.gz")):
            with tarfile.open(bundle, "r:gz") as tar:
                name = next(m.name for m in tar.getmembers() if m.name.endswith("/checkpoint.pt"))
                state = _checkpoint_state(tar.extractfile(name).read())
            print(f"{bundle.name}: env step {_env_step(state)}, {bundle.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
