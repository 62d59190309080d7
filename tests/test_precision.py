"""The bfloat16 speed warning: raised on CPUs without native bfloat16, once, never for float32."""

from __future__ import annotations

import warnings

import pytest
import torch

from models.toy import PointMass
from planners import MPPI, MPCController, precision


@pytest.fixture(autouse=True)
def fresh_caches():
    precision.cpu_has_fast_bfloat16.cache_clear()
    precision.warn_if_bfloat16_is_slow.cache_clear()
    yield
    precision.cpu_has_fast_bfloat16.cache_clear()
    precision.warn_if_bfloat16_is_slow.cache_clear()


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [("flags\t: fpu avx2 amx_bf16 amx_tile\n", True), ("flags\t: fpu avx2 avx512_bf16\n", True),
     ("flags\t: fpu sse avx avx2\n", False), ("processor\t: 0\nFeatures\t: fp asimd\n", None)],
)  # fmt: skip
def test_native_bfloat16_is_read_from_the_cpu_flags(cpuinfo, expected, tmp_path, monkeypatch):
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    monkeypatch.setattr(precision, "Path", lambda _: fake)
    assert precision.cpu_has_fast_bfloat16() is expected


def test_the_warning_comes_once_and_only_for_a_slow_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without AMX or AVX512-BF16.*precision='float32'"):
        precision.warn_if_bfloat16_is_slow("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.warn_if_bfloat16_is_slow("cpu")  # once per process
        precision.warn_if_bfloat16_is_slow("cuda")  # GPUs are not judged here


def test_the_controller_warns_when_it_plans_in_slow_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bfloat16", lambda: False)
    planner = MPPI(action_dim=2, horizon=3, num_samples=16, num_elites=4, iterations=1)
    controller = MPCController(PointMass(), planner, device="cpu", seed=0, precision="bfloat16")
    with pytest.warns(RuntimeWarning, match="bfloat16"):
        controller.act(torch.zeros(4))
    fast = MPCController(PointMass(), planner, device="cpu", seed=0, precision="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast.act(torch.zeros(4))
