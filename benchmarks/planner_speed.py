#!/usr/bin/env python
"""How fast are the planners, against the FLOP floor and against pytorch_mppi?

    python benchmarks/planner_speed.py            # writes benchmarks/results/planner_speed.json
    python benchmarks/planner_speed.py --compile  # also times torch.compile'd models
    python benchmarks/planner_speed.py --quick    # fewer repeats (a smoke run)

Measured, on whatever machine runs it:
1. The matrix-multiply rate of this machine (fp32, square 2048 matmul), in the same run.
2. TD-MPC2's MPPI preset over random models of TD-MPC2's 1M and 5M sizes (walker-walk
   action size 6): dynamics and reward over horizon 3, 2 of the Q heads at the end, 24
   policy proposals. Time per plan call, matmul FLOPs per call (counted by
   torch.utils.flop_counter), the ratio of time to the FLOP floor (FLOPs / matmul rate),
   and the planner's overhead (time outside model calls). Also with torch's own Mish, to
   show what the model's layer code costs.
3. PlaNet's CEM preset over a PlaNet-sized RSSM.
4. pytorch_mppi 0.9.1 side by side on its own toy problem (2-D linear system, K=500,
   T=15): time per command and accumulated cost over 20 steps, when it is installed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models.layers  # noqa: E402
from benchmarks.sized_models import TDMPC2_SIZES, RSSMShaped, TDMPC2Shaped  # noqa: E402
from planners import CEM, MPPI, policy_proposals, reward_objective  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "planner_speed.json"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of fn() in milliseconds."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 20) -> float:
    """fp32 matmul rate on this machine: the denominator of the FLOP floor."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ms = median_ms(lambda: a @ b, repeats, sync=sync)
    return 2 * size**3 / (ms / 1000) / 1e9


class ModelTimer:
    """Accumulates the wall time spent inside model calls (objective and proposals)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def time_plan_call(
    planner: Any,
    make_objective: Callable[[], Callable],
    make_proposals: Callable[[], torch.Tensor | None],
    repeats: int,
) -> dict[str, float]:
    """Median time of one planning call (proposals included), its FLOPs and overhead."""
    generator = torch.Generator().manual_seed(0)

    def call(timer: ModelTimer | None = None) -> None:
        objective = make_objective()
        if timer is None:
            planner.plan(objective, proposals=make_proposals(), generator=generator)
            return
        proposals = timer.wrap(make_proposals)()
        planner.plan(timer.wrap(objective), proposals=proposals, generator=generator)

    with FlopCounterMode(display=False) as counter:
        call()
    flops = counter.get_total_flops()
    ms = median_ms(call, repeats)
    # Overhead: total minus the time inside model calls, measured over separate calls so
    # that the timer itself does not slow the headline number.
    totals, inside = [], []
    for _ in range(max(5, repeats // 2)):
        timer = ModelTimer()
        start = time.perf_counter()
        call(timer)
        totals.append(time.perf_counter() - start)
        inside.append(timer.seconds)
    overhead = 1 - sum(inside) / sum(totals)
    return {"ms_per_call": ms, "flops_per_call": flops, "planner_overhead_fraction": overhead}


def bench_tdmpc2(size_name: str, rate: float, repeats: int, use_compile: bool) -> dict[str, Any]:
    action_dim = 6  # walker-walk
    torch.manual_seed(0)
    model = TDMPC2Shaped(TDMPC2_SIZES[size_name], action_dim).eval()
    model.generator = torch.Generator().manual_seed(1)
    planner = MPPI.tdmpc2(action_dim)
    z0 = models.layers.simnorm(torch.randn(1, model.latent_dim))
    proposals = planner.config.num_proposals

    def run(target: Any) -> dict[str, float]:
        result = time_plan_call(
            planner,
            lambda: reward_objective(target, z0, discount=0.99),
            lambda: policy_proposals(target, z0, planner.config.horizon, proposals),
            repeats,
        )
        result["floor_ms"] = result["flops_per_call"] / (rate * 1e9) * 1000
        result["ratio_to_floor"] = result["ms_per_call"] / result["floor_ms"]
        return result

    with torch.no_grad():
        out: dict[str, Any] = {"ours": run(model)}
        # Ablation: the same computation with torch's own (unvectorised on CPU) Mish.
        fast = models.layers.mish
        models.layers.mish = torch.nn.functional.mish
        try:
            out["with_torch_mish"] = run(model)
        finally:
            models.layers.mish = fast
        if use_compile:
            out["compiled"] = bench_compiled(model, run)
    out["config"] = {"action_dim": action_dim, **TDMPC2_SIZES[size_name].__dict__, "planner": str(planner.config)}
    return out


class CompiledMethods:
    """A model whose methods are torch.compile'd (opt-in speed-up, measured here)."""

    def __init__(self, model: Any) -> None:
        for name in ("next", "reward", "value", "policy"):
            if hasattr(model, name):
                setattr(self, name, torch.compile(getattr(model, name), dynamic=False))


def bench_compiled(model: Any, run: Callable[[Any], dict[str, float]]) -> dict[str, Any]:
    try:
        start = time.perf_counter()
        compiled = CompiledMethods(model)
        result = run(compiled)
        result["first_calls_s_including_compile"] = time.perf_counter() - start
        return result
    except Exception as error:  # report, do not hide: compile support varies by platform
        return {"error": f"{type(error).__name__}: {error}"[:500]}


def bench_planet(rate: float, repeats: int) -> dict[str, Any]:
    action_dim = 6
    torch.manual_seed(0)
    model = RSSMShaped(action_dim).eval()
    model.generator = torch.Generator().manual_seed(1)
    planner = CEM.planet(action_dim)
    z0 = torch.randn(1, model.deter + model.stoch)
    with torch.no_grad():
        result = time_plan_call(
            planner, lambda: reward_objective(model, z0, discount=1.0, use_value=False), lambda: None, repeats
        )
    result["floor_ms"] = result["flops_per_call"] / (rate * 1e9) * 1000
    result["ratio_to_floor"] = result["ms_per_call"] / result["floor_ms"]
    result["config"] = {"action_dim": action_dim, "deter": 200, "stoch": 30, "hidden": 200, "planner": str(planner.config)}
    return result


# -- pytorch_mppi side by side ------------------------------------------------------------
# Its own benchmark problem: x' = x + B u with B = diag(1, -1), running cost ||goal - x'||^2,
# goal (2, 2), start (-3, -2), noise sigma I, lambda 1, K = 500, T = 15, 20 control steps.

TOY_B = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
TOY_GOAL = torch.tensor([2.0, 2.0])
TOY_START = torch.tensor([-3.0, -2.0])


def toy_step(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    return state + action @ TOY_B.to(state).T


def toy_cost(state: torch.Tensor) -> torch.Tensor:
    return (TOY_GOAL.to(state) - state).pow(2).sum(dim=-1)


def run_toy_loop(command: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype, steps: int = 20) -> float:
    """Accumulated running cost over `steps` closed-loop steps."""
    state, total = TOY_START.to(dtype), 0.0
    for _ in range(steps):
        action = command(state).to(dtype).reshape(2)
        state = toy_step(state, action)
        total += float(toy_cost(state))
    return total


def our_toy_controller(seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    planner = MPPI.classic(2, num_samples=500, horizon=15, temperature=1.0, init_std=1.0,
                           action_low=float("-inf"), action_high=float("inf"))
    generator = torch.Generator().manual_seed(seed)
    warm = [None]

    def command(state: torch.Tensor) -> torch.Tensor:
        x0 = state.float().view(1, 1, 2)

        def objective(actions: torch.Tensor) -> torch.Tensor:  # [1, N, H, 2] -> [1, N]
            states = x0 + torch.cumsum(actions @ TOY_B.T, dim=2)  # linear system: closed form
            return -toy_cost(states).sum(dim=2)

        result = planner.plan(objective, warm_start=warm[0], generator=generator)
        warm[0] = result.warm_start
        return result.action[0]

    return command


def bench_pytorch_mppi(repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ours_ms = []
    for seed in range(3):
        command = our_toy_controller(seed)
        ours_ms.append(median_ms(lambda: command(TOY_START), repeats))
    results["ours"] = {
        "ms_per_command": statistics.median(ours_ms),
        "cost_20_steps_mean_of_5": statistics.mean(run_toy_loop(our_toy_controller(s), torch.float32) for s in range(5)),
        "dtype": "float32",
    }
    try:
        import pytorch_mppi  # noqa: F401
        from pytorch_mppi import MPPI as TheirMPPI
    except ImportError:
        results["pytorch_mppi"] = {"error": "not installed (pip install pytorch-mppi==0.9.1)"}
        return results
    dtype = torch.double

    def theirs() -> Any:
        return TheirMPPI(lambda s, a: toy_step(s, a), lambda s, a: toy_cost(s), 2, torch.eye(2, dtype=dtype),
                         num_samples=500, horizon=15, device="cpu", lambda_=1.0)

    ctrl = theirs()
    start = TOY_START.to(dtype)
    their_ms = median_ms(lambda: ctrl.command(start), repeats)
    costs = []
    for seed in range(5):
        torch.manual_seed(seed)
        ctrl = theirs()
        costs.append(run_toy_loop(ctrl.command, dtype))
    results["pytorch_mppi"] = {
        "version": getattr(pytorch_mppi, "__version__", "0.9.1"),
        "ms_per_command": their_ms,
        "cost_20_steps_mean_of_5": statistics.mean(costs),
        "dtype": "float64",
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    device = torch.device("cpu")
    report: dict[str, Any] = {"machine": machine_info()}
    rate = matmul_gflops(device)
    report["matmul_gflops"] = rate
    print(f"machine: {report['machine']}\nmatmul rate: {rate:.1f} GFLOP/s (fp32, 2048^3)", flush=True)
    for size in ("1M", "5M"):
        report[f"tdmpc2_{size}"] = result = bench_tdmpc2(size, rate, repeats, args.compile)
        ours, plain = result["ours"], result["with_torch_mish"]
        print(f"TD-MPC2 {size}: {ours['ms_per_call']:.1f} ms/call, {ours['flops_per_call'] / 1e9:.2f} GFLOP, "
              f"{ours['ratio_to_floor']:.2f}x floor, planner overhead {100 * ours['planner_overhead_fraction']:.1f}%; "
              f"with torch Mish {plain['ms_per_call']:.1f} ms ({plain['ratio_to_floor']:.2f}x)", flush=True)
        if "compiled" in result:
            print(f"  compiled: {result['compiled']}", flush=True)
    report["planet_cem"] = planet = bench_planet(rate, max(3, repeats // 4))
    print(f"PlaNet CEM over RSSM: {planet['ms_per_call']:.1f} ms/call, {planet['ratio_to_floor']:.2f}x floor, "
          f"planner overhead {100 * planet['planner_overhead_fraction']:.1f}%", flush=True)
    report["pytorch_mppi_toy"] = side = bench_pytorch_mppi(repeats)
    print(f"toy K=500 T=15: ours {side['ours']}\n                theirs {side['pytorch_mppi']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
