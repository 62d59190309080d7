"""TOLD's update compiled with mode="reduce-overhead" (CUDA graphs on a GPU, as TD-MPC2
compiles its update) computes the eager update's losses on the same batch and weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.told import TOLD, TOLDConfig
from training.told_agent import TOLDAgent, TOLDLossConfig


def batch(obs_dim: int, action_dim: int, seed: int, b: int = 32, h: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(h + 1, b, obs_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(h, b, action_dim)).astype(np.float32),
        "reward": rng.uniform(0, 1, size=(h, b)).astype(np.float32),
    }


def test_unknown_compile_mode_is_named():
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task"))
    with pytest.raises(ValueError, match=r"compile='fast' must be one of \(False, True, 'default', 'reduce-overhead'"):
        TOLDAgent(model, compile="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reduce_overhead_update_equals_eager_on_cuda():
    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task"))
    agents = [TOLDAgent(copy.deepcopy(model), TOLDLossConfig(batch_size=32), device="cuda", seed=0, compile=mode)
              for mode in (False, "reduce-overhead")]  # fmt: skip
    for step in range(4):  # the first calls record; later ones replay
        data = batch(5, 2, seed=step)
        eager, graphed = (agent.update(data) for agent in agents)
        for name in ("consistency_loss", "reward_loss", "value_loss", "policy_loss", "total_loss"):
            assert graphed[name] == pytest.approx(eager[name], rel=1e-4, abs=1e-5), (step, name)
    for a, b in zip(agents[0].model.parameters(), agents[1].model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
