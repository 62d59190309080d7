"""Writing benchmark results: atomic text files and copies, and tolerant JSON reading.

Benchmarks merge their numbers into one JSON per script over several runs, so a result
file is always replaced whole (temp file, then rename) and never left half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from models.checkpoints import atomic_write

__all__ = ["atomic_write_text", "atomic_copy", "read_json", "write_json_result"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to a temp file beside `path`, then rename over it."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, newline=""))


def write_json_result(results_dir: str | Path, name: str, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON to <results_dir>/<name> (atomically; the folder is
    made if missing), print where, and return the path."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (see `models.checkpoints.atomic_write`)."""
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is not valid JSON ({error}); move it away and rerun") from None
    return data if isinstance(data, dict) else {}
