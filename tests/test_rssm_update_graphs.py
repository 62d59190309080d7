"""The RSSM + actor-critic update recorded as one CUDA graph (`training.update_graphs`).

On a CPU the tests run the same static-buffer path without recording (warm-up and restore
included) and check it against the eager update; on CUDA they record and replay."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from models.behavior import ActorCritic, BehaviorConfig, ReturnNormalizer
from models.rssm import RSSM, RSSMConfig
from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer, recipe_settings, rssm_update_step
from training.update_graphs import CapturedUpdate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def trainer(tmp_path: Path, device: str = "cpu", **overrides: Any) -> PlaNetTrainer:
    """An actor run with the dreamer recipe's model and actor-critic (V3's discrete latents,
    two-hot reward and discount heads, gathering first layers, return scale) on small batches."""
    settings: dict = {
        "task": "cartpole-swingup", "steps": 160, "obs": "state", "model": "dreamerv3", "mode": "actor",
        "behavior": "dreamerv3", "seed_episodes": 1, "collect_interval": 2, "batch_size": 4, "chunk_length": 6,
        "eval_every": 10_000, "eval_at_start": False, "checkpoint_every": 1, "picture_every": 0,
        "max_episode_steps": 10, "imagine_starts": None,
    }  # fmt: skip
    settings.update(overrides)
    return PlaNetTrainer(PlaNetTrainConfig(**settings), tmp_path, device=device, progress=False, log=lambda _: None)


class Learner:
    """The dreamer recipe's model, actor-critic and optimisers without an environment (the
    CUDA tests need no MuJoCo), with the trainer's update and its recording."""

    def __init__(self, device: str, precision: str = "float32", imagine_starts: int | None = None) -> None:
        recipe = recipe_settings("dreamer", "actor")
        torch.manual_seed(0)
        self.model = RSSM(RSSMConfig.dreamerv3("state", (5,), 1, free_nats=recipe["free_nats"])).to(device)
        self.behavior = ActorCritic.for_model(
            self.model, BehaviorConfig.dreamerv3(precision=precision, imagine_starts=imagine_starts))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=recipe["lr"], eps=recipe["adam_eps"])
        self.device = device

    def update_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return rssm_update_step(self.model, self.optimizer, self.behavior, batch, PlaNetTrainConfig.grad_clip)

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, self.behavior.actor_optimizer, self.behavior.critic_optimizer]

    def _capture_update(self, capture: bool = True) -> CapturedUpdate:
        return CapturedUpdate(self.update_step, [self.model, self.behavior], self._optimizers(), self.device,
                              capture=capture)  # fmt: skip


def batches(n: int, b: int, t: int, device: str = "cpu", seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"obs": torch.randn(b, t, 5, generator=g).to(device),
             "actions": (torch.rand(b, t, 1, generator=g) * 2 - 1).to(device),
             "rewards": torch.rand(b, t, generator=g).to(device)} for _ in range(n)]  # fmt: skip


def parameters(t: PlaNetTrainer | Learner) -> dict[str, torch.Tensor]:
    assert t.behavior is not None
    out = {f"model.{k}": v for k, v in t.model.state_dict().items()}
    out.update({f"behavior.{k}": v for k, v in t.behavior.state_dict().items()})
    return out


Metrics = dict[str, torch.Tensor]


def eager_and_graphed(
    tmp_path: Path | None, data: list[Metrics], device: str, capture: bool, **overrides: Any
) -> tuple[Any, Any, CapturedUpdate, list[Metrics], list[Metrics]]:
    """Two trainers (two `Learner`s when `tmp_path` is None) with the same weights: one
    updates eagerly, one through `CapturedUpdate`, on the same batches from the same
    random state. The graphed metrics are compared only after every update, so each must
    survive the replays after it."""
    if tmp_path is None:
        eager, graphed = Learner(device, **overrides), Learner(device, **overrides)
    else:
        eager = trainer(tmp_path / "eager", device=device, **overrides)
        graphed = trainer(tmp_path / "graphed", device=device, **overrides)
    graphed.model.load_state_dict(eager.model.state_dict())
    graphed.behavior.load_state_dict(eager.behavior.state_dict())
    captured = graphed._capture_update(capture=capture)
    torch.manual_seed(7)
    if device == "cuda":
        torch.cuda.manual_seed(7)
    expected = [eager.update_step(batch) for batch in data]
    torch.manual_seed(7)
    if device == "cuda":
        torch.cuda.manual_seed(7)
    got = [captured(batch) for batch in data]
    return eager, graphed, captured, expected, got


def test_the_static_path_with_warm_up_and_restore_equals_the_eager_update(tmp_path):
    data = batches(3, 4, 6)
    eager, graphed, captured, expected, got = eager_and_graphed(tmp_path, data, "cpu", capture=False)
    assert captured.records == 1 and not captured.captured
    for e, g in zip(expected, got, strict=True):
        assert list(e) == list(g)
        for name in e:
            assert torch.equal(e[name], g[name]), name
    a, b = parameters(eager), parameters(graphed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for opt_a, opt_b in zip(eager._optimizers(), graphed._optimizers(), strict=True):
        for sa, sb in zip(opt_a.state.values(), opt_b.state.values(), strict=True):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the warm-up's Adam steps are undone


def test_a_new_batch_shape_records_again_and_still_computes_the_eager_update(tmp_path):
    data = batches(1, 4, 6) + batches(1, 3, 5, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eager, graphed, captured, expected, got = eager_and_graphed(tmp_path, data, "cpu", capture=False)
    assert captured.records == 2
    assert any("batch signature changed" in str(w.message) and "recording the update again" in str(w.message)
               for w in caught)  # fmt: skip
    for e, g in zip(expected, got, strict=True):
        assert all(torch.equal(e[k], g[k]) for k in e)


def test_asking_for_a_graph_on_a_cpu_warns_and_updates_eagerly(tmp_path):
    t = trainer(tmp_path)
    with pytest.warns(RuntimeWarning, match="needs a CUDA device"):
        captured = t._capture_update(capture=True)
    data = batches(1, 4, 6)[0]
    assert set(t.metric_names) <= set(captured(data)) and captured.records == 0


def test_on_a_cpu_the_flag_changes_nothing_in_a_run(tmp_path):
    runs = []
    for flag in (False, True):
        t = trainer(tmp_path / str(flag), cuda_graph=flag)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t.run()
        runs.append(t)
    assert [r["loss"] for r in runs[0].train_rows] == [r["loss"] for r in runs[1].train_rows]
    a, b = parameters(runs[0]), parameters(runs[1])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_return_scale_without_a_host_branch_equals_the_first_batch_then_ema_rule():
    norm = ReturnNormalizer(decay=0.9)
    low = high = None
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        returns = torch.randn(15, 64, generator=g) * (i + 1)
        q = torch.quantile(returns.reshape(-1), torch.tensor([0.05, 0.95]))
        low = q[0] if low is None else low + 0.1 * (q[0] - low)
        high = q[1] if high is None else high + 0.1 * (q[1] - high)
        scale = norm.update(returns)
        torch.testing.assert_close(norm.low, low, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(norm.high, high, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scale, torch.clamp(high - low, min=1.0))
    assert int(norm.count) == 4 and "_levels" not in norm.state_dict()


def test_a_run_saved_with_capturable_adam_resumes_with_eager_adam(tmp_path):
    first = trainer(tmp_path)
    first.run()
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for optimizer_state in (state["optimizer"], *state["behavior"]["optimizers"].values()):
        for group in optimizer_state["param_groups"]:
            group["capturable"] = True  # as a run recording graphs saves it
    torch.save(state, path)
    resumed = trainer(tmp_path, steps=240)
    assert resumed.resumed
    for optimizer in resumed._optimizers():
        assert all(group["capturable"] is False for group in optimizer.param_groups)
        assert all(s["step"].device.type == "cpu" for s in optimizer.state.values())
    resumed.run()  # eager Adam steps from the loaded state
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        on_cpu = trainer(tmp_path, steps=320, cuda_graph=True)  # no graph on a CPU: eager Adam too
        assert all(g["capturable"] is False for opt in on_cpu._optimizers() for g in opt.param_groups)
        on_cpu.run()


def test_bad_settings_are_named(tmp_path):
    t = trainer(tmp_path)
    with pytest.raises(ValueError, match="warmup=-1 must be an int >= 0"):
        CapturedUpdate(t.update_step, [t.model], [t.optimizer], "cpu", warmup=-1)
    with pytest.raises(ValueError, match="cuda_graph='yes' must be True or False"):
        trainer(tmp_path / "b", cuda_graph="yes")


def test_the_static_path_of_the_recipe_sized_learner_equals_its_eager_update():
    data = batches(2, 4, 6)
    eager, graphed, captured, expected, got = eager_and_graphed(None, data, "cpu", capture=False)
    assert captured.records == 1
    for e, g in zip(expected, got, strict=True):
        assert all(torch.equal(e[k], g[k]) for k in e)
    assert torch.isfinite(torch.stack([v for v in got[-1].values()])).all()


@needs_cuda
@pytest.mark.parametrize(("precision", "imagine_starts"), [("float32", None), ("float32", 16), ("bfloat16", None)])
def test_the_recorded_update_equals_the_eager_update_on_cuda(precision, imagine_starts):
    """16 of the 24 posterior states draws them with randperm; bfloat16 records autocast."""
    data = batches(4, 4, 6, device="cuda")
    eager, graphed, captured, expected, got = eager_and_graphed(None, data, "cuda", capture=True, precision=precision,
                                                                imagine_starts=imagine_starts)  # fmt: skip
    assert captured.captured and captured.records == 1
    # Float rounding only: capturable Adam, and the one-hot weight gradient summed by atomics
    # while recording; bfloat16 products turn those into larger differences.
    tol = dict(rtol=1e-4, atol=1e-5) if precision == "float32" else dict(rtol=2e-2, atol=1e-3)
    for e, g in zip(expected, got, strict=True):
        for name in e:
            torch.testing.assert_close(g[name], e[name], **tol, msg=name)
    a, b = parameters(eager), parameters(graphed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], **tol, msg=k)


@needs_cuda
def test_a_new_batch_shape_records_a_new_graph_on_cuda():
    data = batches(2, 4, 6, device="cuda") + batches(2, 3, 5, device="cuda", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        eager, graphed, captured, expected, got = eager_and_graphed(None, data, "cuda", capture=True)
    assert captured.captured and captured.records == 2
    for e, g in zip(expected, got, strict=True):
        for name in e:
            torch.testing.assert_close(g[name], e[name], rtol=1e-4, atol=1e-5, msg=name)
