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
from benchmarks.machine import machine_info, median_seconds  # noqa: E402
from benchmarks.sized_models import TDMPC2_SIZES, RSSMShaped, TDMPC2Shaped  # noqa: E402
from planners import CEM, MPPI, compile_model, policy_proposals, reward_objective  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "planner_speed.json"


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds."""
    return 1000 * median_seconds(fn, repeats, warmup)


class MatmulRate:
    """fp32 matmul rate (GFLOP/s) of this machine: the denominator of the FLOP floor.

    On a shared machine the rate varies by tens of percent over minutes, so it is measured again
    right beside every timed call and each ratio uses its neighbouring rate.
    """

    def __init__(self, size: int = 2048) -> None:
        self.a = torch.randn(size, size)
        self.b = torch.randn(size, size)
        self.flops = 2 * size**3

    def measure(self, repeats: int = 3) -> float:
        return self.flops / (median_ms(lambda: self.a @ self.b, repeats, warmup=1) / 1000) / 1e9


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
    rate: MatmulRate,
    rounds: int,
) -> dict[str, float]:
    """Time one planning call (proposals included) against the FLOP floor.

    Each round measures the matmul rate, then times the call (median of 3) and the share
    of it spent outside model calls. Reported: medians over rounds.
    """
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
    for _ in range(2):  # warm-up (and compilation, for compiled models)
        call()
    times, ratios, rates, overheads = [], [], [], []
    for _ in range(rounds):
        rates.append(rate.measure())
        times.append(median_ms(call, 3, warmup=0))
        ratios.append(times[-1] / (flops / (rates[-1] * 1e9) * 1000))
        timer = ModelTimer()
        start = time.perf_counter()
        call(timer)
        overheads.append(1 - timer.seconds / (time.perf_counter() - start))
    return {
        "ms_per_call": statistics.median(times),
        "flops_per_call": flops,
        "matmul_gflops": statistics.median(rates),
        "floor_ms": flops / (statistics.median(rates) * 1e9) * 1000,
        "ratio_to_floor": statistics.median(ratios),
        "ratio_to_floor_range": [min(ratios), max(ratios)],
        "planner_overhead_fraction": statistics.median(overheads),
    }


def bench_tdmpc2(size_name: str, rate: MatmulRate, rounds: int, use_compile: bool) -> dict[str, Any]:
    action_dim = 6  # walker-walk
    torch.manual_seed(0)
    model = TDMPC2Shaped(TDMPC2_SIZES[size_name], action_dim).eval()
    model.generator = torch.Generator().manual_seed(1)
    planner = MPPI.tdmpc2(action_dim)
    z0 = models.layers.simnorm(torch.randn(1, model.latent_dim))
    proposals = planner.config.num_proposals

    def run(target: Any) -> dict[str, float]:
        return time_plan_call(
            planner,
            lambda: reward_objective(target, z0, discount=0.99),
            lambda: policy_proposals(target, z0, planner.config.horizon, proposals),
            rate,
            rounds,
        )

    out: dict[str, Any] = {}
    with torch.no_grad():
        out["eager"] = run(model)
        # Ablation: the same computation with torch's own (unvectorised on CPU) Mish.
        fast = models.layers.mish
        models.layers.mish = torch.nn.functional.mish
        try:
            out["eager_with_torch_mish"] = run(model)
        finally:
            models.layers.mish = fast
        if use_compile:
            out["compiled"] = bench_compiled(model, run, freeze=False)
            out["compiled_frozen"] = bench_compiled(model, run, freeze=True)
    out["config"] = {"action_dim": action_dim, **TDMPC2_SIZES[size_name].__dict__, "planner": str(planner.config)}
    return out


def bench_compiled(model: Any, run: Callable[[Any], dict[str, float]], freeze: bool) -> dict[str, Any]:
    try:
        torch._dynamo.reset()  # each variant compiles from scratch
        start = time.perf_counter()
        result = run(compile_model(model, freeze=freeze))
        result["total_s_including_compile"] = time.perf_counter() - start
        return result
    except Exception as error:  # report, do not hide: compile support varies by platform
        return {"error": f"{type(error).__name__}: {error}"[:500]}


def bench_planet(rate: MatmulRate, rounds: int) -> dict[str, Any]:
    action_dim = 6
    torch.manual_seed(0)
    model = RSSMShaped(action_dim).eval()
    model.generator = torch.Generator().manual_seed(1)
    planner = CEM.planet(action_dim)
    z0 = torch.randn(1, model.deter + model.stoch)
    with torch.no_grad():
        result = time_plan_call(
            planner, lambda: reward_objective(model, z0, discount=1.0, use_value=False), lambda: None, rate, rounds
        )
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


TOY_TRIALS = 30  # seeds per controller: single 20-step runs vary by +-20%


def cost_summary(costs: list[float]) -> dict[str, float]:
    """Mean accumulated 20-step cost over seeded trials, with its standard error."""
    return {
        "cost_20_steps_mean": statistics.mean(costs),
        "cost_20_steps_sem": statistics.stdev(costs) / len(costs) ** 0.5,
        "trials": len(costs),
    }


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


def bench_pytorch_mppi(rounds: int) -> dict[str, Any]:
    """Time per command and 20-step cost, ours and pytorch_mppi's, timed in alternation."""
    our_costs = [run_toy_loop(our_toy_controller(s), torch.float32) for s in range(TOY_TRIALS)]
    results: dict[str, Any] = {"ours": {**cost_summary(our_costs), "dtype": "float32"}}
    ours = our_toy_controller(0)
    try:
        import pytorch_mppi
        from pytorch_mppi import MPPI as TheirMPPI
    except ImportError:
        results["ours"]["ms_per_command"] = median_ms(lambda: ours(TOY_START), 50)
        results["pytorch_mppi"] = {"error": "not installed (pip install pytorch-mppi==0.9.1)"}
        return results
    dtype = torch.double

    def theirs() -> Any:
        return TheirMPPI(lambda s, a: toy_step(s, a), lambda s, a: toy_cost(s), 2, torch.eye(2, dtype=dtype),
                         num_samples=500, horizon=15, device="cpu", lambda_=1.0)

    costs = []
    for seed in range(TOY_TRIALS):
        torch.manual_seed(seed)
        costs.append(run_toy_loop(theirs().command, dtype))
    ctrl, start = theirs(), TOY_START.to(dtype)
    our_ms, their_ms = [], []
    for _ in range(rounds):
        our_ms.append(median_ms(lambda: ours(TOY_START), 20))
        their_ms.append(median_ms(lambda: ctrl.command(start), 20))
    results["ours"]["ms_per_command"] = statistics.median(our_ms)
    results["pytorch_mppi"] = {
        "version": getattr(pytorch_mppi, "__version__", "0.9.1"),
        "ms_per_command": statistics.median(their_ms),
        **cost_summary(costs),
        "dtype": "float64",
    }
    results["speedup_ours_over_theirs"] = statistics.median(t / o for o, t in zip(our_ms, their_ms))
    return results


def summarise(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"  {name:24s} failed: {result['error']}"
    return (f"  {name:24s} {result['ms_per_call']:8.1f} ms/call  {result['flops_per_call'] / 1e9:6.2f} GFLOP  "
            f"{result['ratio_to_floor']:.2f}x floor  planner overhead {100 * result['planner_overhead_fraction']:.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rounds = 2 if args.quick else 7
    report: dict[str, Any] = {"machine": machine_info(), "command": " ".join(["python", *sys.argv])}
    rate = MatmulRate()
    print(f"machine: {report['machine']}; matmul rate now {rate.measure():.0f} GFLOP/s (fp32 2048^3)", flush=True)
    for size in ("1M", "5M"):
        report[f"tdmpc2_{size}"] = result = bench_tdmpc2(size, rate, rounds, args.compile)
        print(f"TD-MPC2 MPPI preset, {size} model:", flush=True)
        for name, value in result.items():
            if name != "config":
                print(summarise(name, value), flush=True)
    report["planet_cem"] = planet = bench_planet(rate, max(2, rounds // 2))
    print("PlaNet CEM preset, RSSM-sized model:\n" + summarise("eager", planet), flush=True)
    report["pytorch_mppi_toy"] = side = bench_pytorch_mppi(rounds)
    for name, value in side.items():
        print(f"  toy K=500 T=15 {name:14s} {value}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
