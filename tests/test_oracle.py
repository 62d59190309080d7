"""The MuJoCo oracle (models.oracle): planned returns are the returns the env pays.

Every comparison with the env is exact (states bit for bit, rewards to 1e-9): the oracle
runs the same MuJoCo steps as dm_control, in batch, and the same reward definitions.
"""

from __future__ import annotations

import logging

import mujoco
import numpy as np
import pytest
import torch

import envs
import models.oracle as oracle_module
from envs.goals import two_link_ik
from models.base import WorldModel
from models.oracle import OracleModel
from planners import MPPI, MPCController, reward_objective

ATOL = 1e-9


def make(task: str, action_repeat: int | None = None, seed: int = 0) -> envs.DMCEnv:
    return envs.make(task, seed=seed, action_repeat=action_repeat, render_mode=None)


def place_reacher_at_target(env: envs.DMCEnv) -> None:
    """Puts the reacher's fingertip on the target (at rest), so that rewards are 1, not 0."""
    model = env.physics.named.model
    target = np.array(model.geom_pos["target", :2])
    qpos = two_link_ik(target, float(model.body_pos["hand", "x"]), float(model.body_pos["finger", "x"]))
    state = env.get_physics_state()
    state[1:3], state[3:5] = qpos, 0.0
    env.set_physics_state(state)


def spin_finger(env: envs.DMCEnv, velocity: float = -25.0) -> None:
    """Sets the finger's spinner turning fast, so that finger-spin's rewards are 1, not 0."""
    state = env.get_physics_state()
    model = env.physics.model.ptr
    hinge = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "hinge")
    state[1 + model.nq + model.jnt_dofadr[hinge]] = velocity
    env.set_physics_state(state)


def env_rollout(env: envs.DMCEnv, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps the env through actions [H, A]: states [H, S] and rewards [H]."""
    states, rewards = [], []
    for action in actions:
        _, reward, _, _, _ = env.step(action)
        states.append(env.get_physics_state())
        rewards.append(reward)
    return np.array(states), np.array(rewards)


def random_actions(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    # Beyond [-1, 1] on purpose: the oracle must clip exactly as the env does.
    return rng.uniform(-1.3, 1.3, shape).astype(np.float32)


def diverse_states(env: envs.DMCEnv, oracle: OracleModel, rng: np.random.Generator, m: int) -> torch.Tensor:
    """[m, S] varied, physically sensible start states around the env's current one.

    Random joint positions in the joint ranges (hinges without one: a full turn) and
    random velocities for the small planar systems, so rewards are exercised away from
    zero; random-action rollouts for the legged ones.
    """
    z0 = oracle.encode(env.get_physics_state()[None]).expand(m, -1)
    z = oracle.rollout(z0, torch.from_numpy(random_actions(rng, (m, 8, oracle.action_dim))))[:, -1].clone()
    domain = env.task_id.domain
    if domain in ("reacher", "point_mass", "cartpole", "finger"):
        model = env.physics.model.ptr
        for j in range(model.njnt):
            low, high = model.jnt_range[j] if model.jnt_limited[j] else (-np.pi, np.pi)
            z[:, 1 + model.jnt_qposadr[j]] = torch.from_numpy(rng.uniform(low, high, m))
        scale = 20.0 if domain == "finger" else 3.0
        z[:, 1 + model.nq : 1 + model.nq + model.nv] = torch.from_numpy(rng.normal(0.0, scale, (m, model.nv)))
        if domain == "cartpole":  # half of them near the balanced pose (the sparse reward's region)
            z[: m // 2, 1 : 1 + model.nq + model.nv] *= 0.05
        if env.task_id.name in ("reacher-easy", "reacher-hard"):  # a quarter near the target, slow
            named = env.physics.named.model
            ik = two_link_ik(np.array(named.geom_pos["target", :2]), float(named.body_pos["hand", "x"]), float(named.body_pos["finger", "x"]))
            z[: m // 4, 1:3] = torch.from_numpy(ik + rng.normal(0.0, 0.05, (m // 4, 2)))
            z[: m // 4, 3:5] *= 0.1
    return z


# ---------------------------------------------------------------------------- exactness

EXACT_CASES = [
    ("cartpole-swingup", 8),
    ("reacher-easy", 4),
    ("point_mass-easy", None),
    ("finger-spin", None),
    ("cheetah-run", 4),
    ("walker-walk", None),
    ("reacher-target", None),
    ("finger-turn_goal", None),
]


@pytest.mark.parametrize("vectorized", [True, False], ids=["vectorised", "generic"])
@pytest.mark.parametrize(("task", "action_repeat"), EXACT_CASES, ids=[c[0] for c in EXACT_CASES])
def test_planned_return_equals_executed_return(task: str, action_repeat: int | None, vectorized: bool) -> None:
    env = make(task, action_repeat)
    oracle = OracleModel(env, vectorized=vectorized)
    env.reset(seed=3)  # after the oracle is built: it must follow the reset (reacher's target)
    if task == "reacher-easy":
        place_reacher_at_target(env)
    elif task == "finger-spin":
        spin_finger(env)
    rng = np.random.default_rng(0)
    actions = random_actions(rng, (12, oracle.action_dim))

    z0 = oracle.encode(env.get_physics_state()[None])
    latents, rewards = oracle.rollout_with_rewards(z0, torch.from_numpy(actions)[None])
    env_states, env_rewards = env_rollout(env, actions)

    assert latents.dtype == torch.float64 and rewards.dtype == torch.float64
    np.testing.assert_array_equal(latents[0].numpy(), env_states)
    np.testing.assert_allclose(rewards[0].numpy(), env_rewards, rtol=0, atol=ATOL)
    assert np.any(env_rewards != 0), "a test whose rewards are all zero proves little"
    assert oracle.vectorized_reward == vectorized


@pytest.mark.parametrize("task", ["cartpole-swingup", "cheetah-run", "point_mass-goal"])
def test_reward_objective_equals_env_returns(task: str) -> None:
    env = make(task, action_repeat=4)
    oracle = OracleModel(env)
    n, h = 6, 8
    actions = random_actions(np.random.default_rng(1), (1, n, h, oracle.action_dim))
    env.reset(seed=7)
    z0 = oracle.encode(env.get_physics_state()[None])
    planned = reward_objective(oracle, z0, discount=1.0, use_value=False)(torch.from_numpy(actions))

    executed = []
    for sequence in actions[0]:
        env.reset(seed=7)  # the same start (and warm start) for every sequence
        executed.append(env_rollout(env, sequence)[1].sum())
    assert planned.shape == (1, n)
    np.testing.assert_allclose(planned[0].numpy(), np.array(executed), rtol=0, atol=ATOL)
    assert np.ptp(executed) > 0


def test_oracle_follows_env_resets() -> None:
    """Reset-time model edits (reacher's target) and goals are read on each call."""
    env = make("reacher-easy", action_repeat=4)
    oracle = OracleModel(env)
    rng = np.random.default_rng(2)
    targets = []
    for seed in (1, 2):
        env.reset(seed=seed)
        targets.append(np.array(env.physics.named.model.geom_pos["target", :2]))
        place_reacher_at_target(env)
        actions = random_actions(rng, (6, 2)) * 0.2
        z0 = oracle.encode(env.get_physics_state()[None])
        _, rewards = oracle.rollout_with_rewards(z0, torch.from_numpy(actions)[None])
        env_rewards = env_rollout(env, actions)[1]
        np.testing.assert_allclose(rewards[0].numpy(), env_rewards, rtol=0, atol=ATOL)
        assert env_rewards.sum() > 0
    assert not np.allclose(targets[0], targets[1])

    goal_env = make("point_mass-goal")
    goal_oracle = OracleModel(goal_env)
    for seed in (1, 2):
        goal_env.reset(seed=seed)
        actions = random_actions(rng, (5, 2))
        z0 = goal_oracle.encode(goal_env.get_physics_state()[None])
        _, rewards = goal_oracle.rollout_with_rewards(z0, torch.from_numpy(actions)[None])
        np.testing.assert_allclose(rewards[0].numpy(), env_rollout(goal_env, actions)[1], rtol=0, atol=ATOL)


def test_fallback_task_uses_generic_rewards(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(oracle_module, "_FALLBACK_LOGGED", set())
    env = make("acrobot-swingup")
    with caplog.at_level(logging.DEBUG, logger="models.oracle"):
        oracle = OracleModel(env)
        OracleModel(env)  # logged once per task, not per model
    assert not oracle.vectorized_reward
    assert sum("no vectorised reward" in r.getMessage() for r in caplog.records) == 1
    assert all(r.levelno == logging.DEBUG for r in caplog.records)
    env.reset(seed=0)
    actions = random_actions(np.random.default_rng(3), (6, oracle.action_dim))
    _, rewards = oracle.rollout_with_rewards(oracle.encode(env.get_physics_state()[None]), torch.from_numpy(actions)[None])
    np.testing.assert_allclose(rewards[0].numpy(), env_rollout(env, actions)[1], rtol=0, atol=ATOL)


# ------------------------------------------------------- vectorised == generic rewards

VECTOR_CASES = [
    ("cartpole-swingup", 8),
    ("cartpole-balance", None),
    ("cartpole-balance_sparse", None),
    ("cartpole-two_poles", None),
    ("reacher-easy", 4),
    ("reacher-hard", None),
    ("point_mass-easy", None),
    ("point_mass-hard", None),
    ("finger-spin", None),
    ("finger-turn_easy", None),
    ("finger-turn_hard", None),
    ("cheetah-run", None),
    ("walker-walk", None),
    ("walker-run", None),
    ("walker-stand", None),
    ("reacher-pose", None),
    ("reacher-target", None),
    ("point_mass-goal", None),
    ("finger-turn_goal", None),
]


@pytest.mark.parametrize(("task", "action_repeat"), VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
def test_vectorised_rewards_equal_task_rewards(task: str, action_repeat: int | None) -> None:
    env = make(task, action_repeat)
    env.reset(seed=4)
    fast, slow = OracleModel(env), OracleModel(env, vectorized=False)
    assert fast.vectorized_reward and not slow.vectorized_reward
    rng = np.random.default_rng(5)
    m = 16 if env.task_id.domain == "walker" else 48
    z = diverse_states(env, fast, rng, m)
    actions = torch.from_numpy(random_actions(rng, (m, 3, fast.action_dim)))

    latents, rewards = fast.rollout_with_rewards(z, actions)
    latents_ref, rewards_ref = slow.rollout_with_rewards(z, actions)
    torch.testing.assert_close(latents, latents_ref, rtol=0, atol=0)
    np.testing.assert_allclose(rewards.numpy(), rewards_ref.numpy(), rtol=0, atol=ATOL)
    assert np.ptp(rewards_ref.numpy()) > 0, "the states should exercise the reward"
    if fast.is_goal_task:
        np.testing.assert_allclose(fast.achieved_goal(z).numpy(), slow.achieved_goal(z).numpy(), rtol=0, atol=1e-12)


# ----------------------------------------------------------------- model behaviour


@pytest.mark.parametrize("task", ["cheetah-run", "reacher-target"])
def test_oracle_leaves_the_env_episode_untouched(task: str) -> None:
    env, twin = make(task), make(task)
    oracle = OracleModel(env)
    slow = OracleModel(env, vectorized=False)
    env.reset(seed=1)
    twin.reset(seed=1)
    actions = random_actions(np.random.default_rng(6), (10, oracle.action_dim))
    for action in actions[:3]:
        env.step(action)
        twin.step(action)

    physics = env.physics
    before = mujoco.MjData(physics.model.ptr)
    mujoco.mj_copyData(before, physics.model.ptr, physics.data.ptr)
    model_before = {name: np.array(getattr(physics.model.ptr, name)) for name in ("geom_pos", "geom_size", "site_pos", "body_pos")}

    z = oracle.encode(env.get_physics_state()[None]).expand(8, -1)
    a = torch.from_numpy(random_actions(np.random.default_rng(7), (8, 4, oracle.action_dim)))
    oracle.rollout_with_rewards(z, a)
    slow.rollout_with_rewards(z[:2], a[:2])
    oracle.next(z, a[:, 0])
    oracle.reward(z, a[:, 0])
    if oracle.is_goal_task:
        oracle.achieved_goal(z)
        slow.achieved_goal(z)

    for field in ("time", "qpos", "qvel", "act", "ctrl", "qacc", "qacc_warmstart", "sensordata", "xpos", "geom_xpos"):
        np.testing.assert_array_equal(getattr(physics.data, field), getattr(before, field), err_msg=field)
    for name, value in model_before.items():
        np.testing.assert_array_equal(getattr(physics.model.ptr, name), value, err_msg=name)
    # And the episode continues exactly as it would have without the oracle.
    states, rewards = env_rollout(env, actions[3:])
    twin_states, twin_rewards = env_rollout(twin, actions[3:])
    np.testing.assert_array_equal(states, twin_states)
    np.testing.assert_array_equal(rewards, twin_rewards)


def test_protocol_methods_agree_with_rollout() -> None:
    env = make("walker-walk")
    env.reset(seed=2)
    oracle = OracleModel(env)
    assert isinstance(oracle, WorldModel)
    assert oracle.obs_shape == (env.physics_state_size,)
    rng = np.random.default_rng(8)
    z = diverse_states(env, oracle, rng, 6)
    actions = torch.from_numpy(random_actions(rng, (6, 3, 6)))
    latents, rewards = oracle.rollout_with_rewards(z, actions)
    assert latents.shape == (6, 3, oracle.state_size) and rewards.shape == (6, 3)
    torch.testing.assert_close(oracle.rollout(z, actions), latents, rtol=0, atol=0)
    torch.testing.assert_close(oracle.next(z, actions[:, 0]), latents[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(oracle.reward(z, actions[:, 0]), rewards[:, 0], rtol=0, atol=0)
    # A new rollout starts the contact solver from the env's warm start, not from the one
    # the longer rollout carried over: equal to the solver's tolerance, not bit for bit.
    torch.testing.assert_close(oracle.next(latents[:, 0], actions[:, 1]), latents[:, 1], rtol=0, atol=1e-9)
    # Threads split the batch, they do not change any rollout.
    single = OracleModel(env, num_threads=1)
    torch.testing.assert_close(single.rollout_with_rewards(z, actions)[1], rewards, rtol=0, atol=0)


def test_zero_warmstart_is_a_pure_function_of_the_state() -> None:
    env = make("cheetah-run")
    env.reset(seed=0)
    oracle = OracleModel(env, warmstart="zero")
    z = oracle.encode(env.get_physics_state()[None]).expand(4, -1)
    actions = torch.from_numpy(random_actions(np.random.default_rng(9), (4, 5, 6)))
    first = oracle.rollout_with_rewards(z, actions)
    env.step(np.ones(6, dtype=np.float32))  # changes the env's warm start
    second = oracle.rollout_with_rewards(z, actions)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_mpc_with_the_oracle_beats_random_actions() -> None:
    steps = 40
    env = make("cartpole-swingup", action_repeat=8)
    oracle = OracleModel(env)
    planner = MPPI(action_dim=1, horizon=8, num_samples=48, num_elites=8, iterations=2, temperature=0.5)
    ctrl = MPCController(oracle, planner, discount=1.0, use_value=False, device="cpu", seed=0)

    env.reset(seed=0)
    ctrl.reset()
    mpc_return = 0.0
    for _ in range(steps):
        mpc_return += env.step(ctrl.act(env.get_physics_state()))[1]

    rng = np.random.default_rng(0)
    env.reset(seed=0)
    random_return = sum(env.step(rng.uniform(-1, 1, 1).astype(np.float32))[1] for _ in range(steps))
    assert mpc_return > 2.0 * random_return + 5.0, (mpc_return, random_return)


# ----------------------------------------------------------------------------- errors


def test_errors_are_clear() -> None:
    env = make("reacher-easy")
    env.reset(seed=0)
    oracle = OracleModel(env)
    s = env.physics_state_size
    with pytest.raises(ValueError, match=rf"\[M, {s}\].*state size 4, expected {s}"):
        oracle.encode(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=rf"\[M, {s}\]"):
        oracle.encode(np.zeros(s))  # one state needs a batch dimension
    with pytest.raises(ValueError, match="NaN"):
        oracle.encode(np.full((1, s), np.nan))
    z = oracle.encode(env.get_physics_state()[None])
    with pytest.raises(ValueError, match="A = 2"):
        oracle.rollout_with_rewards(z, torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="A = 2"):
        oracle.rollout(z, torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"expected \[M, A\] with A = 2"):
        oracle.next(z, torch.zeros(2))
    with pytest.raises(ValueError, match="actions are for 2 rollouts but z holds 1"):
        oracle.rollout(z, torch.zeros(2, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        oracle.rollout(z, torch.full((1, 3, 2), float("nan")))
    with pytest.raises(ValueError, match="not a goal-reaching task"):
        oracle.achieved_goal(z)
    with pytest.raises(TypeError, match="DMCEnv"):
        OracleModel(object())
    with pytest.raises(ValueError, match="warmstart"):
        OracleModel(env, warmstart="last")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_threads"):
        OracleModel(env, num_threads=0)


def test_gymnasium_wrapped_env_is_accepted() -> None:
    import gymnasium

    wrapped = gymnasium.make("dmc/point_mass-easy-v0")
    oracle = OracleModel(wrapped)
    assert oracle.task_name == "point_mass-easy" and oracle.action_dim == 2
    wrapped.close()


# ------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_mpc_reaches_a_goal_with_the_goal_reward() -> None:
    env = make("point_mass-goal")
    oracle = OracleModel(env)
    planner = MPPI(action_dim=2, horizon=10, num_samples=128, num_elites=16, iterations=3)
    ctrl = MPCController(oracle, planner, discount=1.0, use_value=False, device="cpu", seed=0)
    obs, info = env.reset(seed=3)
    ctrl.reset()
    for _ in range(100):
        obs, _, _, _, info = env.step(ctrl.act(env.get_physics_state()))
    assert info["is_success"], info


@pytest.mark.slow
@pytest.mark.parametrize("task", ["cheetah-run", "walker-run", "finger-turn_hard"])
def test_long_rollouts_stay_exact(task: str) -> None:
    env = make(task)
    oracle = OracleModel(env)
    env.reset(seed=11)
    actions = random_actions(np.random.default_rng(12), (150, oracle.action_dim))
    latents, rewards = oracle.rollout_with_rewards(oracle.encode(env.get_physics_state()[None]), torch.from_numpy(actions)[None])
    env_states, env_rewards = env_rollout(env, actions)
    np.testing.assert_array_equal(latents[0].numpy(), env_states)
    np.testing.assert_allclose(rewards[0].numpy(), env_rewards, rtol=0, atol=ATOL)
