#!/usr/bin/env python
"""Planning and TOLD-update speed on a GPU, every path side by side in one run.

    python benchmarks/gpu_speed.py                                  # on a CUDA machine
    python benchmarks/gpu_speed.py --tdmpc2 ~/src/tdmpc2            # with TD-MPC2's _plan beside ours
    python benchmarks/gpu_speed.py --device cpu --quick             # a smoke run on a CPU

TOLD at TD-MPC2's 5M size with walker-walk's sizes (24-dim observation, 6-dim action) and
TD-MPC2's MPPI preset (512 samples, 24 policy proposals, 6 iterations, horizon 3), timed
as users call it, `MPCController.act`:
- one problem (B = 1): eager, `compile_model` (default and "reduce-overhead") and the whole
  call recorded as one CUDA graph (`cuda_graph=True`);
- B = 1024 problems in one call: float32, TF32, bfloat16, with and without the graph;
- one TOLD update (batch 256, horizon 3): eager, compiled, compiled with reduce-overhead,
  with the first update's losses compared against eager's.
FLOPs of one call are counted by `torch.utils.flop_counter` (matrix products), and the
achieved rate is set against the peak of a large bfloat16 (float32 on a CPU) matrix
product measured in the same run.

TD-MPC2's own `_plan` is read from the checkout that `--tdmpc2` names (nothing of it is
vendored here; it needs its own requirements: omegaconf, tensordict). Its `WorldModel(cfg)
.to(device)` fails with tensordict >= 0.15, so the agent is built under `torch.device`.

Writes benchmarks/results/gpu_speed.json (gpu_speed-cpu.json for a CPU run).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.results_io import write_json_result  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
OBS_DIM, ACTION_DIM = 24, 6  # walker-walk


def make_told(size: str, device: torch.device) -> Any:
    from models.told import TOLD, TOLDConfig

    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(OBS_DIM,), action_dim=ACTION_DIM, size=size, task="walker-walk"))
    model = model.to(device).eval()
    model.generator = torch.Generator(device=device).manual_seed(1)
    return model


def plan_rows(model: Any, device: torch.device, batch: int, variants: dict[str, dict[str, Any]], repeats: int,
              peak: float) -> list[dict[str, Any]]:  # fmt: skip
    """Median time of `MPCController.act` for each variant (controller keyword arguments)."""
    from torch.utils.flop_counter import FlopCounterMode

    from planners import MPPI, MPCController, compile_model

    obs = np.random.default_rng(0).normal(size=(batch, OBS_DIM)).astype(np.float32)
    rows = []
    flops = None
    for label, kwargs in variants.items():
        kwargs = dict(kwargs)
        compile_mode = kwargs.pop("compile_mode", None)
        planned = compile_model(model, mode=compile_mode) if compile_mode else model
        try:
            ctrl = MPCController(planned, MPPI.tdmpc2(ACTION_DIM), seed=0, device=device, **kwargs)
            if flops is None:
                with FlopCounterMode(display=False) as counter:
                    ctrl.act(obs)
                flops = counter.get_total_flops()
            seconds = median_seconds(lambda ctrl=ctrl: ctrl.act(obs), repeats=repeats, warmup=3)
        except Exception as error:  # noqa: BLE001 - a failing path is a result to report, not a crash
            rows.append({"variant": label, "batch": batch, "error": f"{type(error).__name__}: {error}"[:300]})
            print(rows[-1], flush=True)
            continue
        rate = flops / seconds if flops else None
        rows.append({"variant": label, "batch": batch, "ms_per_act": round(1000 * seconds, 3),
                     "plans_per_s": round(batch / seconds, 1), "gflop_per_call": round(flops / 1e9, 2),
                     "tflops": round(rate / 1e12, 3) if rate else None,
                     "share_of_peak": round(rate / peak, 4) if rate and peak else None})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def update_rows(size: str, device: torch.device, repeats: int, modes: list[Any]) -> list[dict[str, Any]]:
    """Median time of one `TOLDAgent.update` per compile mode, and its first losses against eager's."""
    from training.told_agent import TOLDAgent

    base = make_told(size, device)
    rng = np.random.default_rng(1)

    def batch() -> dict[str, np.ndarray]:
        return {"obs": rng.normal(size=(4, 256, OBS_DIM)).astype(np.float32),
                "action": rng.uniform(-1, 1, size=(3, 256, ACTION_DIM)).astype(np.float32),
                "reward": rng.uniform(0, 1, size=(3, 256)).astype(np.float32)}  # fmt: skip

    first = batch()
    rows, eager_losses = [], None
    for mode in modes:
        agent = TOLDAgent(copy.deepcopy(base), device=device, seed=0, compile=mode)
        try:
            t = time.perf_counter()
            losses = agent.update(first)
            first_s = time.perf_counter() - t
            data = [batch() for _ in range(repeats + 3)]
            it = iter(data)
            seconds = median_seconds(lambda agent=agent, it=it: agent.update(next(it)), repeats=repeats, warmup=3)
        except Exception as error:  # noqa: BLE001
            rows.append({"compile": mode, "error": f"{type(error).__name__}: {error}"[:300]})
            print(rows[-1], flush=True)
            continue
        if mode is False:
            eager_losses = losses
        diff = None if eager_losses is None else max(abs(losses[k] - eager_losses[k]) for k in eager_losses if k != "grad_norm")
        rows.append({"compile": mode, "ms_per_update": round(1000 * seconds, 2), "first_update_s": round(first_s, 1),
                     "max_loss_diff_vs_eager": diff})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def tdmpc2_rows(path: Path, size: int, device: torch.device, repeats: int) -> list[dict[str, Any]]:
    """TD-MPC2's `_plan` (eager, and compiled as its config's `compile` does) at B = 1."""
    try:
        from omegaconf import OmegaConf

        sys.path.insert(0, str(path / "tdmpc2"))
        from common import MODEL_SIZE  # type: ignore[import-not-found]
        from tdmpc2 import TDMPC2  # type: ignore[import-not-found]

        cfg = OmegaConf.load(path / "tdmpc2" / "config.yaml")
        cfg = OmegaConf.merge(cfg, MODEL_SIZE[size])
        extra = dict(task="walker-walk", obs="state", obs_shape={"state": (OBS_DIM,)}, action_dim=ACTION_DIM,
                     episode_length=500, model_size=size, multitask=False, tasks=["walker-walk"], task_dim=0,
                     bin_size=(cfg.vmax - cfg.vmin) / (cfg.num_bins - 1), episodic=False)  # fmt: skip
        settings = {**OmegaConf.to_container(cfg, resolve=False), **extra}
    except Exception as error:  # noqa: BLE001
        return [{"variant": "tdmpc2", "error": f"could not read TD-MPC2 from {path}: {type(error).__name__}: {error}"[:300]}]
    rows = []
    obs = torch.randn(OBS_DIM, device=device)
    for compiled in (False, True):
        try:
            cfg = argparse.Namespace(**{**settings, "compile": compiled})
            cfg.get = lambda key, default=None, cfg=cfg: getattr(cfg, key, default)
            with torch.device(device):  # its WorldModel(...).to(device) fails with tensordict >= 0.15
                agent = TDMPC2(cfg)
            plan = agent.plan
            plan(obs.unsqueeze(0), t0=True, eval_mode=True)
            seconds = median_seconds(lambda plan=plan: plan(obs.unsqueeze(0), t0=False, eval_mode=True).cpu(),
                                     repeats=repeats, warmup=3)  # fmt: skip
            rows.append({"variant": f"tdmpc2 _plan{' (compiled)' if compiled else ''}", "batch": 1,
                         "ms_per_act": round(1000 * seconds, 3), "plans_per_s": round(1 / seconds, 1)})  # fmt: skip
        except Exception as error:  # noqa: BLE001
            rows.append({"variant": f"tdmpc2 _plan{' (compiled)' if compiled else ''}",
                         "error": f"{type(error).__name__}: {error}"[:300]})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def peak_flops(device: torch.device) -> float:
    """FLOP/s of a large matrix product: bfloat16 on CUDA, float32 on a CPU."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)

    def product() -> None:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / median_seconds(product, repeats=10, warmup=3)


def ratio(rows: list[dict[str, Any]], a: str, b: str, key: str = "ms_per_act") -> float | None:
    by = {r["variant"]: r for r in rows if key in r}
    return round(by[b][key] / by[a][key], 2) if a in by and b in by else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--tdmpc2", type=Path, default=None, help="a local checkout of TD-MPC2 to time its _plan")
    parser.add_argument("--batch", type=int, default=1024, help="problems in the batched measurement")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, B = 8, few repeats")
    args = parser.parse_args()
    from planners.controller import resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size, batch, repeats = ("tiny", 8, 3) if args.quick else ("5M", args.batch, args.repeats)
    started = time.perf_counter()
    peak = peak_flops(device)
    print(f"peak {'bf16' if cuda else 'fp32'} matmul: {peak / 1e12:.1f} TFLOP/s on {device}", flush=True)
    model = make_told(size, device)

    single = {"eager": {}, "compile_model": {"compile_mode": "default"}, "cuda_graph": {"cuda_graph": True}}
    if cuda:
        single["compile_model reduce-overhead"] = {"compile_mode": "reduce-overhead"}
        single["cuda_graph + bfloat16"] = {"cuda_graph": True, "precision": "bfloat16"}
    batched = {"float32": {}, "tf32": {"precision": "tf32"}, "bfloat16": {"precision": "bfloat16"},
               "cuda_graph + tf32": {"cuda_graph": True, "precision": "tf32"},
               "cuda_graph + bfloat16": {"cuda_graph": True, "precision": "bfloat16"}}  # fmt: skip
    result: dict[str, Any] = {
        "command": "python benchmarks/gpu_speed.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "model": f"TOLD {size}, obs {OBS_DIM}, action {ACTION_DIM}; MPPI.tdmpc2 (512 samples incl. 24 proposals, 6 iterations, horizon 3)",
        "peak_tflops": round(peak / 1e12, 2),
        "act_b1": plan_rows(model, device, 1, single, repeats, peak),
        "act_batched": plan_rows(model, device, batch, batched, max(3, repeats // 4), peak),
        "told_update": update_rows(size, device, repeats, [False, True, "reduce-overhead"] if cuda else [False, True]),
    }
    if args.tdmpc2 is not None:
        result["tdmpc2"] = tdmpc2_rows(args.tdmpc2, 5 if size == "5M" else 1, device, repeats) if cuda else [
            {"variant": "tdmpc2", "error": "TD-MPC2's agent runs on a CUDA device only"}]  # fmt: skip
    b1 = result["act_b1"] + result.get("tdmpc2", [])
    result["ratios"] = {
        "b1 eager / cuda_graph": ratio(b1, "cuda_graph", "eager"),
        "b1 tdmpc2 _plan / ours cuda_graph": ratio(b1, "cuda_graph", "tdmpc2 _plan"),
        "b1 tdmpc2 _plan / ours eager": ratio(b1, "eager", "tdmpc2 _plan"),
        "batched float32 / cuda_graph + bfloat16": ratio(result["act_batched"], "cuda_graph + bfloat16", "float32"),
    }
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print({"ratios": result["ratios"], "wall_s": result["wall_s"]}, flush=True)
    write_json_result(RESULTS, "gpu_speed.json" if cuda else "gpu_speed-cpu.json", result)


if __name__ == "__main__":
    main()
