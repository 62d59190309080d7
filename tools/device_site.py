#!/usr/bin/env python
"""Developer tooling: build the Python packages a GPU machine of ours lacks into one small archive.

    python tools/device_site.py            # .whl/ -> .gpu/site.tar.xz

The device machine has torch but neither MuJoCo nor dm-control, and no network, so they
travel with every call, and they count towards the call's 64 MiB beside the code and any
run being resumed (`tools/device_planet_runs.sh`). The inputs, in the ignored `.whl/`:

- the CPython 3.12 wheels of mujoco and dm-tree (`pip download --no-deps --only-binary=:all:
  --python-version 3.12 --platform manylinux_2_28_x86_64 ... mujoco==3.17.0 dm-tree==0.1.10`,
  see the device README);
- `site-pure.tar.gz`: dm_control, dm_env, gymnasium, farama_notifications and glfw copied
  from a venv (pure Python), without dm_control's locomotion, viewer and blender packages
  and the dog assets, which our tasks do not use.

Only what our DM Control tasks import is kept of mujoco: its 26.7 MB wheel unpacks to 72 MB,
41 MB of it the `experimental` studio GUI, plus headers, the Filament renderer and its
bindings. The result, xz-compressed, is about 10 MB where the wheels and site took 33 MB,
which leaves room for a resumed dreamer-recipe run (about 20 MB packed with
`tools/carry_run.py pack --drop-optimizer`). The archive is written atomically. Not part of
the product.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Parts of the mujoco wheel that `import mujoco` and dm_control's physics never load.
MUJOCO_UNUSED = ("mujoco/experimental/", "mujoco/include/", "mujoco/rendering/filament/", "mujoco/mjrf.py",
                 "mujoco/_render_filament")  # fmt: skip
WHEELS = ("mujoco-*.whl", "dm_tree-*.whl")


def kept(name: str) -> bool:
    """Whether a wheel member goes into the archive."""
    return "__pycache__" not in name and not any(name.startswith(prefix) for prefix in MUJOCO_UNUSED)


def build(wheels_dir: Path, out: Path) -> dict[str, int]:
    """Writes `out` (tar.xz of the site-packages tree); returns members per input."""
    inputs = []
    for pattern in WHEELS:
        found = sorted(wheels_dir.glob(pattern))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one {pattern} in {wheels_dir}, found {[p.name for p in found]}")
        inputs.append(found[0])
    pure = wheels_dir / "site-pure.tar.gz"
    if not pure.is_file():
        raise FileNotFoundError(f"{pure} is missing (the pure-Python packages; see this script's docstring)")
    counts: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:xz") as archive:
            for wheel in inputs:
                with zipfile.ZipFile(wheel) as zf:
                    members = [m for m in zf.infolist() if not m.is_dir() and kept(m.filename)]
                    for member in members:
                        info = tarfile.TarInfo(member.filename)
                        info.size = member.file_size
                        # Keep the shared libraries executable, as pip would install them.
                        info.mode = 0o755 if member.filename.endswith(".so") or ".so." in member.filename else 0o644
                        with zf.open(member) as data:
                            archive.addfile(info, data)
                    counts[wheel.name] = len(members)
            with tarfile.open(pure, "r:gz") as source:
                members = [m for m in source.getmembers() if m.isfile() and "__pycache__" not in m.name]
                for member in members:
                    archive.addfile(member, source.extractfile(member))
                counts[pure.name] = len(members)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="folder with the wheels and site-pure.tar.gz")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu" / "site.tar.xz")
    args = parser.parse_args(argv)
    try:
        counts = build(args.wheels, args.out)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    for name, n in counts.items():
        print(f"{name}: {n} files")
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
