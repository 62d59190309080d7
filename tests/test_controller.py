"""The MPC controller and the model objectives (DESIGN 3.4-3.5)."""

import numpy as np
import pytest
import torch

from models import FunctionModel, PointMass, goal_objective, reward_objective
from planners import CEM, MPPI, MPCController, policy_proposals
from tests.helpers import small_planner


def linear_model() -> FunctionModel:
    """z' = z + a, reward = -|z'|^2: plans drive the state to the origin."""
    return FunctionModel(next=lambda z, a: z + a, reward=lambda z, a: -(z + a).pow(2).sum(dim=1), obs_shape=(2,))


def test_reward_objective_matches_a_hand_computed_return():
    model = FunctionModel(
        next=lambda z, a: z + a,
        reward=lambda z, a: z[:, 0] * 10 + a[:, 0],
        value=lambda z: z[:, 0] * 100,
    )
    z0 = torch.tensor([[1.0], [2.0]])
    actions = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1).expand(2, 1, 3, 1)
    gamma = 0.5
    # Problem 0: z = 1, 2, 4, 7; rewards 11, 22, 43; value 700.
    expected0 = 11 + gamma * 22 + gamma**2 * 43 + gamma**3 * 700
    got = reward_objective(model, z0, discount=gamma)(actions)
    assert got.shape == (2, 1)
    assert float(got[0, 0]) == pytest.approx(expected0)
    assert float(got[1, 0]) == pytest.approx(21 + gamma * 32 + gamma**2 * 53 + gamma**3 * 800)
    no_value = reward_objective(model, z0, discount=gamma, use_value=False)(actions)
    assert float(no_value[0, 0]) == pytest.approx(11 + gamma * 22 + gamma**2 * 43)


def test_model_rollout_is_used_when_present():
    calls = []

    class WithRollout:
        def next(self, z, a):
            raise AssertionError("next must not be called when rollout exists")

        def rollout(self, z, actions):
            calls.append(actions.shape)
            return z.unsqueeze(1) + actions.cumsum(dim=1)

        def reward(self, z, a):
            return z.sum(dim=1)

    returns = reward_objective(WithRollout(), torch.zeros(1, 2), discount=1.0)(torch.ones(1, 4, 3, 2))
    assert calls == [(4, 3, 2)]
    assert torch.allclose(returns, torch.full((1, 4), 0.0 + 2.0 + 4.0))


def test_goal_objective_prefers_the_goal():
    model = linear_model()
    z0 = torch.zeros(1, 2)
    goal = torch.tensor([[0.5, -0.5]])
    actions = torch.stack([torch.tensor([0.25, -0.25]).expand(2, 2), torch.zeros(2, 2)]).unsqueeze(0)  # [1, 2, 2, 2]
    for mode in ("last", "all"):
        value = goal_objective(model, z0, goal, mode=mode)(actions)
        assert value[0, 0] > value[0, 1]
    assert float(goal_objective(model, z0, goal, mode="last")(actions)[0, 0]) == 0.0


def test_policy_proposals_roll_the_policy_through_the_dynamics():
    model = FunctionModel(next=lambda z, a: z + a, reward=lambda z, a: z.sum(1), policy=lambda z: -0.5 * z)
    proposals = policy_proposals(model, torch.tensor([[4.0]]), horizon=3, num=2)
    assert proposals.shape == (1, 2, 3, 1)
    assert torch.allclose(proposals[0, 0, :, 0], torch.tensor([-2.0, -1.0, -0.5]))


def test_controller_drives_a_users_own_dynamics_to_the_origin():
    ctrl = MPCController(linear_model(), MPPI(action_dim=2, horizon=5, num_samples=128, num_elites=16,
                                               action_low=-0.2, action_high=0.2), seed=0, device="cpu")
    state = np.array([1.0, -0.6], dtype=np.float32)
    for _ in range(12):
        action = ctrl.act(state)
        assert isinstance(action, np.ndarray) and action.shape == (2,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 0.2)
        state = state + action
    assert np.linalg.norm(state) < 0.05


def test_batched_act_returns_one_action_per_problem_and_solves_each():
    system = PointMass()
    ctrl = MPCController(system, small_planner("cem", 2, 15), discount=1.0, seed=0, device="cpu")
    state = system.initial_state(3)
    state[1, :2] = torch.tensor([1.5, 1.0])  # a different start
    for _ in range(40):
        action = ctrl.act(state.numpy())
        assert action.shape == (3, 2)
        state = system.next(state, torch.as_tensor(action))
    assert bool(system.success(state).all())


def test_replan_every_k_plans_once_per_k_steps_and_executes_the_plan():
    calls = []

    class Counting(MPPI):
        def plan(self, *args, **kwargs):
            result = super().plan(*args, **kwargs)
            calls.append(result)
            return result

    planner = Counting(action_dim=2, horizon=6, num_samples=32, num_elites=4, iterations=2)
    ctrl = MPCController(linear_model(), planner, replan_every=3, seed=0, device="cpu")
    actions = [ctrl.act(np.zeros(2, dtype=np.float32)) for _ in range(7)]
    assert len(calls) == 3  # steps 0, 3, 6
    assert np.allclose(np.stack(actions[:3]), calls[0].actions[0, :3].numpy())
    assert np.allclose(np.stack(actions[3:6]), calls[1].actions[0, :3].numpy())


def test_reset_drops_the_warm_start_and_the_plan():
    planner = MPPI(action_dim=2, horizon=4, num_samples=32, num_elites=4, iterations=2)
    seeded = [MPCController(linear_model(), planner, seed=3, device="cpu") for _ in range(2)]
    obs = np.array([0.3, 0.3], dtype=np.float32)
    seeded[0].act(obs)
    seeded[0].reset()
    seeded[0].generator.manual_seed(3)
    # After reset (and the same generator state) the first action equals a fresh controller's.
    assert np.array_equal(seeded[0].act(obs), seeded[1].act(obs))


def test_filtering_models_get_their_latent_and_last_action_carried():
    seen = []

    class Filtering:
        obs_shape = (1,)

        def observe(self, z_prev, a_prev, obs):
            seen.append((None if z_prev is None else z_prev.clone(), None if a_prev is None else a_prev.clone()))
            return obs if z_prev is None else z_prev + obs

        def next(self, z, a):
            return z + a

        def reward(self, z, a):
            return -z.pow(2).sum(1)

    ctrl = MPCController(Filtering(), CEM(action_dim=1, horizon=2, num_samples=16, num_elites=4, iterations=1),
                         seed=0, device="cpu")
    ctrl.act(np.ones(1, dtype=np.float32))
    ctrl.act(np.ones(1, dtype=np.float32))
    assert seen[0] == (None, None)
    assert torch.equal(seen[1][0], torch.ones(1, 1)) and seen[1][1].shape == (1, 1)
    ctrl.reset()
    ctrl.act(np.ones(1, dtype=np.float32))
    assert seen[2] == (None, None)


def test_goal_objective_controller_reaches_a_goal_observation():
    system = PointMass(goal=(0.0, 0.0))  # the reward is unused: the goal comes from act()
    ctrl = MPCController(system, small_planner("mppi", 2, 15), objective="goal", goal_mode="last", seed=0, device="cpu")
    goal = np.array([-0.6, 0.8, 0.0, 0.0], dtype=np.float32)
    state = system.initial_state(1)
    for _ in range(45):
        state = system.next(state, torch.as_tensor(ctrl.act(state[0].numpy(), goal=goal)).view(1, 2))
    assert float((state[0, :2] - torch.tensor([-0.6, 0.8])).norm()) < 0.1


def test_guide_policy_proposals_are_used_when_the_model_has_a_policy():
    seen = []
    model = FunctionModel(next=lambda z, a: z + a, reward=lambda z, a: -(z + a).pow(2).sum(1),
                          policy=lambda z: torch.full((z.shape[0], 1), 0.123), obs_shape=(1,))
    planner = MPPI(action_dim=1, horizon=3, num_samples=32, num_elites=4, iterations=1, num_proposals=5)

    def factory(model_, z, z_goal):
        objective = reward_objective(model_, z)

        def recording(actions):
            seen.append(actions)
            return objective(actions)

        return recording

    MPCController(model, planner, objective=factory, seed=0, device="cpu").act(np.zeros(1, dtype=np.float32))
    assert torch.allclose(seen[0][0, :5], torch.full((5, 3, 1), 0.123))


# -- bad input ---------------------------------------------------------------------------


def test_controller_errors_name_the_bad_value():
    model, planner = linear_model(), MPPI(action_dim=2, horizon=4, num_samples=16, num_elites=4)
    with pytest.raises(ValueError, match=r"replan_every=5 must be an int in \[1, horizon=4\]"):
        MPCController(model, planner, replan_every=5)
    with pytest.raises(ValueError, match="objective='value'"):
        MPCController(model, planner, objective="value")
    with pytest.raises(TypeError, match="has no next"):
        MPCController(object(), planner)
    with pytest.raises(ValueError, match="num_proposals=3 needs a model with policy"):
        MPCController(model, planner, num_proposals=3)
    ctrl = MPCController(model, planner, device="cpu")
    with pytest.raises(ValueError, match=r"obs has shape \(1, 1, 2\); expected 1 dimensions"):
        ctrl.act(np.zeros((1, 1, 2)))
    with pytest.raises(ValueError, match="obs contains NaN"):
        ctrl.act(np.array([np.nan, 0.0]))
    ctrl.act(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="batch size changed from 2 to 3"):
        ctrl.act(np.zeros((3, 2)))
    goal_ctrl = MPCController(model, planner, objective="goal", device="cpu")
    with pytest.raises(ValueError, match="needs act\\(obs, goal=...\\)"):
        goal_ctrl.act(np.zeros(2))


def test_model_reward_of_the_wrong_shape_is_named():
    model = FunctionModel(next=lambda z, a: z + a, reward=lambda z, a: z)
    with pytest.raises(ValueError, match=r"FunctionModel.reward returned shape \(2, 2\).*expected \(2,\)"):
        reward_objective(model, torch.zeros(1, 2))(torch.zeros(1, 2, 3, 2))


@pytest.mark.slow
def test_compiled_model_plans_the_same_actions_as_the_eager_model():
    system = PointMass()
    planner = small_planner("mppi", 2, 10)
    eager = MPCController(system, planner, seed=0, device="cpu")
    compiled = MPCController(system, planner, seed=0, device="cpu", compile=True)
    assert compiled.model.obs_shape == system.obs_shape  # delegated attribute
    state = system.initial_state(1)[0].numpy()
    assert np.allclose(eager.act(state), compiled.act(state), atol=1e-4)


def test_rollout_with_rewards_is_used_by_the_reward_objective():
    class Predicting:
        def next(self, z, a):
            raise AssertionError("next must not be called")

        def reward(self, z, a):
            raise AssertionError("reward must not be called")

        def rollout_with_rewards(self, z, actions):
            latents = z.unsqueeze(1) + actions.cumsum(dim=1)
            return latents, latents.sum(dim=2)

    returns = reward_objective(Predicting(), torch.zeros(1, 1), discount=0.5)(torch.ones(1, 2, 3, 1))
    assert torch.allclose(returns, torch.full((1, 2), 1 + 0.5 * 2 + 0.25 * 3))


def test_controller_gives_the_model_its_declared_observation_dtype():
    seen = []

    class Exact(FunctionModel):
        obs_dtype = torch.float64

    model = Exact(next=lambda z, a: z + a, reward=lambda z, a: -z.pow(2).sum(1),
                  encode=lambda obs: seen.append(obs.dtype) or obs, obs_shape=(1,))
    MPCController(model, CEM(action_dim=1, horizon=2, num_samples=8, num_elites=2, iterations=1),
                  device="cpu").act(np.array([0.1], dtype=np.float64))
    MPCController(linear_model(), CEM(action_dim=2, horizon=2, num_samples=8, num_elites=2, iterations=1),
                  device="cpu", obs_ndim=1).act(np.array([0.1, 0.2], dtype=np.float64))
    assert seen == [torch.float64]


class MLPDynamics(torch.nn.Module):
    """A learned-model stand-in whose matrix products autocast can lower to bfloat16."""

    obs_shape = (2,)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 2)
        with torch.no_grad():  # z' = z + a exactly, through a matmul
            self.net.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]))
            self.net.bias.zero_()

    def next(self, z, a):
        return self.net(torch.cat([z, a], dim=-1))

    def reward(self, z, a):
        return -self.next(z, a).pow(2).sum(dim=1)


def test_bfloat16_planning_keeps_the_planner_in_float32_and_still_solves():
    model = MLPDynamics()
    # bfloat16 keeps ~3 significant digits, so this asks for 0.1 of the origin, not 0.01.
    ctrl = MPCController(model, MPPI(action_dim=2, horizon=5, num_samples=128, num_elites=16),
                         discount=1.0, seed=0, precision="bfloat16")
    z = np.array([3.0, -2.0], dtype=np.float32)
    for _ in range(12):
        z = z + ctrl.act(z)
    assert np.abs(z).max() < 0.1  # driven to the origin
    # The objective sums in float32: bfloat16 rewards 256, 1, 1 add up to 258, where a
    # bfloat16 sum would round 256 + 1 back to 256 (spacing 2 there).
    bf16_rewards = FunctionModel(next=lambda z, a: z, reward=lambda z, a: (256.0 * (z[:, 0] == 0) + 1.0 * (z[:, 0] != 0)).to(torch.bfloat16))
    stepping = FunctionModel(next=lambda z, a: z + 1, reward=bf16_rewards.reward)
    total = reward_objective(stepping, torch.zeros(1, 1), discount=1.0, use_value=False)(torch.zeros(1, 1, 3, 1))
    assert total.dtype == torch.float32 and float(total) == 258.0
    candidates = torch.rand(1, 8, 5, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.next(torch.zeros(1, 2), torch.zeros(1, 2)).dtype == torch.bfloat16  # autocast does lower it
    exact = reward_objective(model, torch.tensor([[3.0, -2.0]]), discount=1.0, use_value=False)(candidates)
    reduced = ctrl._in_model_precision(reward_objective(model, torch.tensor([[3.0, -2.0]]), discount=1.0))(candidates)
    torch.testing.assert_close(reduced, exact, rtol=2e-2, atol=0.05)
    with pytest.raises(ValueError, match="precision='float16' must be one of"):
        MPCController(model, CEM(action_dim=2), precision="float16")
