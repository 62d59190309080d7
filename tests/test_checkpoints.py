"""The common checkpoint layout: headers checked before anything is built, atomic writes."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch
from torch import nn

from models.checkpoints import atomic_torch_save, model_checkpoint, read_header


def test_a_checkpoint_round_trips_through_a_weights_only_load(tmp_path):
    layer = nn.Linear(3, 2)
    ckpt = model_checkpoint(layer, "probe", 4, {"width": 3}, task="cartpole-swingup")
    atomic_torch_save(ckpt, tmp_path / "sub" / "probe.pt")
    loaded = torch.load(tmp_path / "sub" / "probe.pt", weights_only=True)
    assert read_header(loaded, "probe", 4) == {"width": 3} and loaded["task"] == "cartpole-swingup"
    assert torch.equal(loaded["state_dict"]["weight"], layer.weight.detach())
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["probe.pt"]  # no temporary left


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"format_version": 4, "model": "rssm", "config": {}}, "holds a 'rssm' model, not a 'probe' model"),
        ({"format_version": 3, "model": "probe", "config": {}}, "format_version=3; this code reads version 4"),
        ([1, 2], "not a model checkpoint"),
    ],
)
def test_a_wrong_checkpoint_is_named(checkpoint, message):
    with pytest.raises(ValueError, match=message):
        read_header(checkpoint, "probe", 4)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_a_written_file_gets_the_mode_a_plain_open_would_give(tmp_path, umask, mode):
    """mkstemp's temporaries are owner-only; the finished file must not stay so."""
    from training.datasets import save_json_atomic

    old = os.umask(umask)
    try:
        atomic_torch_save({"x": 1}, tmp_path / "model.pt")
        save_json_atomic(tmp_path / "manifest.json", {"x": 1})
    finally:
        os.umask(old)
    for name in ("model.pt", "manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"old": 1}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_torch_save({"bad": lambda: None}, path)  # a lambda cannot be pickled
    assert torch.load(path, weights_only=True) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_extra_keys_cannot_overwrite_the_header():
    with pytest.raises(ValueError, match=r"extra checkpoint keys \['format_version', 'state_dict'\] would overwrite"):
        model_checkpoint(nn.Linear(1, 1), "probe", 1, {}, format_version=7, state_dict={})
