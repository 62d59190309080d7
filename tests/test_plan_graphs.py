"""A planning call recorded as a CUDA graph (`planners.graphs.PlanGraphs`,
`MPCController(cuda_graph=True)`) plans what the eager call plans.

On a CPU the static-buffer path runs without recording (capture=False): the copying of
latents, warm starts, kept elites and proposals into fixed buffers and of the outputs out
is the same code the graph replays. The CUDA tests compare recorded against eager on the
same generator state.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from models.told import TOLD, TOLDConfig
from models.toy import PointMass
from planners import CEM, ICEM, MPPI, MPCController
from planners.compile import _cloned_outputs
from planners.graphs import PlanGraphs
from planners.objectives import policy_proposals, reward_objective

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def planners_under_test():
    return {
        "cem": CEM(action_dim=2, horizon=5, num_samples=64, num_elites=8, iterations=3),
        "mppi": MPPI.tdmpc2(2, horizon=3, num_samples=64, num_elites=8, num_proposals=0),
        "icem": ICEM.default(2, horizon=5, num_samples=40, noise_beta=2.0),
    }


def run_steps(plan_call, system: PointMass, steps: int, batch: int, seed: int):
    """Closed loop over `steps` with warm starts; returns actions [steps, B, A] and the
    generator's final state."""
    generator = torch.Generator().manual_seed(seed)
    state = system.initial_state(batch)
    warm, actions = None, []
    for _ in range(steps):
        result = plan_call(state, warm, generator)
        actions.append(result.action)
        warm = result.warm_start
        state = system.next(state, result.action)
    return torch.stack(actions), generator.get_state()


@pytest.mark.parametrize("name", ["cem", "mppi", "icem"])
def test_static_buffer_path_plans_what_eager_plans(name):
    planner = planners_under_test()[name]
    system = PointMass()

    def eager(state, warm, generator):
        return planner.plan(reward_objective(system, state, 0.99, use_value=False), batch_size=state.shape[0],
                            warm_start=warm, generator=generator)  # fmt: skip

    graphs: dict[int, PlanGraphs] = {}

    def static(state, warm, generator):
        if id(generator) not in graphs:
            graphs[id(generator)] = PlanGraphs(planner, lambda z, _: reward_objective(system, z, 0.99, use_value=False),
                                               generator, torch.device("cpu"), capture=False)  # fmt: skip
        return graphs[id(generator)].plan(state, warm_start=warm)

    a, state_a = run_steps(eager, system, steps=6, batch=3, seed=4)
    b, state_b = run_steps(static, system, steps=6, batch=3, seed=4)
    assert torch.equal(a, b)
    assert torch.equal(state_a, state_b)  # the same draws, no more and no fewer
    # iCEM's first call has no kept elites and the later ones do: two signatures.
    assert graphs[next(iter(graphs))].num_graphs == (2 if name == "icem" else 1)


def test_static_buffer_path_with_proposals_and_a_new_batch_size():
    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task")).eval()
    planner = MPPI.tdmpc2(2, num_samples=64, num_elites=8, num_proposals=6)

    def results(use_graphs: bool):
        model.generator = torch.Generator().manual_seed(1)
        generator = torch.Generator().manual_seed(2)
        graphs = PlanGraphs(planner, lambda z, _: reward_objective(model, z, 0.99), generator, torch.device("cpu"),
                            model_generators=(model.generator,), capture=False)  # fmt: skip
        out, warm = [], None
        for batch in (1, 1, 4):
            if batch == 4:
                warm = None
            z = model.encode(torch.linspace(-1, 1, 5).repeat(batch, 1))
            proposals = policy_proposals(model, z, 3, 6)
            if use_graphs:
                result = graphs.plan(z, warm_start=warm, proposals=proposals)
            else:
                result = planner.plan(reward_objective(model, z, 0.99), batch_size=batch, warm_start=warm,
                                      proposals=proposals, generator=generator)  # fmt: skip
            out.append(result.actions)
            warm = result.warm_start
        return out, graphs

    eager, _ = results(False)
    static, graphs = results(True)
    for x, y in zip(eager, static, strict=True):
        assert torch.equal(x, y)
    assert graphs.num_graphs == 2  # batch 1 and batch 4


def test_objective_is_rebuilt_from_the_static_latent_every_call():
    # A factory that derives a tensor from the latent when it is built: a graph that
    # froze it at recording time would keep planning towards the first latent's goal.
    planner = CEM(action_dim=1, horizon=1, num_samples=200, num_elites=20, iterations=5, init_std=2.0, max_std=2.0)

    def factory(z, _):
        target = -z[:, :1]  # [B, 1], computed at build time

        def objective(actions):
            return -(actions[:, :, 0, :] - target[:, None, :]).pow(2).sum(-1)

        return objective

    graphs = PlanGraphs(planner, factory, torch.Generator().manual_seed(0), torch.device("cpu"), capture=False)
    first = graphs.plan(torch.tensor([[0.5]])).action
    second = graphs.plan(torch.tensor([[-0.5]])).action
    assert abs(float(first) + 0.5) < 0.05 and abs(float(second) - 0.5) < 0.05


def test_more_signatures_than_max_graphs_plan_eagerly_with_one_warning():
    planner = CEM(action_dim=2, horizon=3, num_samples=20, num_elites=4, iterations=2)
    system = PointMass()
    graphs = PlanGraphs(planner, lambda z, _: reward_objective(system, z, 1.0, use_value=False),
                        torch.Generator().manual_seed(0), torch.device("cpu"), capture=False, max_graphs=2)  # fmt: skip
    reference = torch.Generator().manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in (1, 2, 3, 4):
            z = system.initial_state(batch)
            got = graphs.plan(z).actions
            want = planner.plan(reward_objective(system, z, 1.0, use_value=False), batch_size=batch, generator=reference)
            assert torch.equal(got, want.actions)
    assert graphs.num_graphs == 2
    assert sum("more than 2 input signatures" in str(w.message) for w in caught) == 1


def test_controller_cuda_graph_on_cpu_warns_once_and_acts_as_eager():
    system = PointMass()
    planner = ICEM.default(2, horizon=5, noise_beta=2.0)
    eager = MPCController(system, planner, objective="reward", use_value=False, seed=3, device="cpu")
    with pytest.warns(RuntimeWarning, match="cuda_graph=True needs a CUDA device; planning on cpu runs eagerly"):
        graphed = MPCController(system, planner, objective="reward", use_value=False, seed=3, device="cpu",
                                cuda_graph=True)  # fmt: skip
    state = np.array([1.0, -1.0, 0.0, 0.0], np.float32)
    for _ in range(4):
        assert np.array_equal(eager.act(state), graphed.act(state))


def test_tf32_precision_is_accepted_and_plans_as_float32_on_cpu():
    system = PointMass()
    planner = CEM(action_dim=2, horizon=4, num_samples=50, num_elites=5, iterations=3)
    state = np.array([1.0, -1.0, 0.0, 0.0], np.float32)
    a = MPCController(system, planner, use_value=False, seed=0, device="cpu").act(state)
    b = MPCController(system, planner, use_value=False, seed=0, device="cpu", precision="tf32").act(state)
    assert np.array_equal(a, b)
    assert not torch.backends.cuda.matmul.allow_tf32  # the setting is restored after planning
    with pytest.raises(ValueError, match=r"precision='fp8' must be one of \('float32', 'tf32', 'bfloat16'\)"):
        MPCController(system, planner, precision="fp8")


def test_compiled_outputs_are_copies_the_caller_may_keep():
    buffer = torch.zeros(3)

    def overwriting(x):  # what a replayed CUDA graph does: one output memory for every call
        buffer.copy_(x)
        return buffer, (buffer, 1)

    method = _cloned_outputs(overwriting)
    first, (first_again, _) = method(torch.ones(3))
    method(torch.full((3,), 2.0))
    assert torch.equal(first, torch.ones(3)) and torch.equal(first_again, torch.ones(3))


# -- on a GPU ------------------------------------------------------------------------------


def told_controllers(**kwargs):
    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task")).eval().cuda()
    planner = MPPI.tdmpc2(2)
    made = []
    for graph in (False, True):
        model.generator = torch.Generator(device="cuda").manual_seed(1)
        made.append(MPCController(model, planner, seed=0, device="cuda", cuda_graph=graph, **kwargs))
    return model, made


@needs_cuda
@pytest.mark.parametrize("batch", [1, 7])
def test_recorded_plan_gives_the_eager_actions_on_cuda(batch):
    model, (eager, graphed) = told_controllers()
    obs = torch.linspace(-1, 1, 5).repeat(batch, 1).numpy()
    actions = {}
    for name, ctrl in (("eager", eager), ("graph", graphed)):
        model.generator.manual_seed(1)
        ctrl.generator.manual_seed(0)
        actions[name] = np.stack([ctrl.act(obs) for _ in range(5)])
    assert graphed.graphs is not None and graphed.graphs.num_graphs == 1
    np.testing.assert_allclose(actions["graph"], actions["eager"], rtol=1e-5, atol=1e-6)


@needs_cuda
def test_recorded_plan_records_again_for_a_new_batch_size_on_cuda():
    _, (_, graphed) = told_controllers()
    graphed.act(np.zeros((2, 5), np.float32))
    graphed.reset()
    graphed.act(np.zeros((3, 5), np.float32))
    assert graphed.graphs is not None and graphed.graphs.num_graphs == 2


@needs_cuda
def test_reduce_overhead_compile_plans_on_cuda():
    from planners import compile_model

    torch.manual_seed(0)
    model = TOLD(TOLDConfig(obs_shape=(5,), action_dim=2, size="tiny", task="tiny-task")).eval().cuda()
    model.generator = torch.Generator(device="cuda").manual_seed(1)
    ctrl = MPCController(compile_model(model, mode="reduce-overhead"), MPPI.tdmpc2(2), seed=0, device="cuda")
    for _ in range(3):
        action = ctrl.act(np.zeros(5, np.float32))
    assert np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.0)
