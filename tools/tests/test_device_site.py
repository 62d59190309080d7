"""tools/device_site.py (developer tooling): MuJoCo and dm-control packed small for a GPU machine."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from tools.device_site import build


def fake_inputs(folder) -> None:
    folder.mkdir()
    with zipfile.ZipFile(folder / "mujoco-3.17.0-cp312-cp312-manylinux_2_28_x86_64.whl", "w") as zf:
        for name in ("mujoco/__init__.py", "mujoco/libmujoco.so.3.17.0", "mujoco/_structs.cpython-312-x86_64-linux-gnu.so",
                     "mujoco/plugin/libsensor.so", "mujoco/rendering/classic/renderer.py",
                     "mujoco/rendering/filament/__init__.py", "mujoco/experimental/studio/app.py",
                     "mujoco/include/mujoco/mujoco.h", "mujoco/_render_filament.cpython-312-x86_64-linux-gnu.so",
                     "mujoco/mjrf.py", "mujoco/__pycache__/x.pyc", "mujoco-3.17.0.dist-info/METADATA"):  # fmt: skip
            zf.writestr(name, "x")
    with zipfile.ZipFile(folder / "dm_tree-0.1.10-cp312-cp312-manylinux_2_28_x86_64.whl", "w") as zf:
        zf.writestr("tree/__init__.py", "x")
    with tarfile.open(folder / "site-pure.tar.gz", "w:gz") as tar:
        for name in ("./dm_control/__init__.py", "./dm_control/__pycache__/y.pyc", "./gymnasium/__init__.py"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))


def test_the_archive_keeps_what_our_tasks_import_and_drops_the_rest(tmp_path):
    fake_inputs(tmp_path / "whl")
    out = tmp_path / "gpu" / "site.tar.xz"
    counts = build(tmp_path / "whl", out)
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == sorted([
        "mujoco/__init__.py", "mujoco/libmujoco.so.3.17.0", "mujoco/_structs.cpython-312-x86_64-linux-gnu.so",
        "mujoco/plugin/libsensor.so", "mujoco/rendering/classic/renderer.py", "mujoco-3.17.0.dist-info/METADATA",
        "tree/__init__.py", "./dm_control/__init__.py", "./gymnasium/__init__.py",
    ])  # fmt: skip
    assert members["mujoco/libmujoco.so.3.17.0"].mode == 0o755 and members["mujoco/__init__.py"].mode == 0o644
    assert sum(counts.values()) == len(members)
    assert [p.name for p in out.parent.iterdir()] == ["site.tar.xz"]  # no temporary file left


def test_missing_inputs_are_named(tmp_path):
    fake_inputs(tmp_path / "whl")
    (tmp_path / "whl" / "site-pure.tar.gz").unlink()
    with pytest.raises(FileNotFoundError, match="site-pure.tar.gz is missing"):
        build(tmp_path / "whl", tmp_path / "out.tar.xz")
    with pytest.raises(FileNotFoundError, match=r"expected one mujoco-\*\.whl in .*empty, found \[\]"):
        (tmp_path / "empty").mkdir()
        build(tmp_path / "empty", tmp_path / "out.tar.xz")
