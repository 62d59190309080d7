"""Tests for envs/: DM Control behind Gymnasium, and the goal-reaching tasks."""

from __future__ import annotations

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.tasks import SUITE_TASKS

GOAL_TASKS = envs.list_tasks("goal")

# check_env warns about the unbounded float observation boxes of state vectors; they are
# unbounded on purpose (dm_control gives no bounds), so the warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:.*Box observation space m.*infinity")


def _actions(env: gymnasium.Env, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n)]


def _raw_dmc(name: str, seed: int):
    from dm_control import suite

    domain, task = name.split("-", 1)
    return suite.load(domain, task, task_kwargs={"random": seed})


def _flat(observation) -> np.ndarray:
    parts = [np.asarray(v, dtype=np.float32).ravel() for v in observation.values()]
    return np.concatenate(parts)


# --------------------------------------------------------------------- names, registry


def test_suite_list_matches_dm_control():
    from dm_control import suite

    assert SUITE_TASKS == tuple(sorted(f"{d}-{t}" for d, t in suite.ALL_TASKS))
    assert len(envs.list_tasks("suite")) == len(suite.ALL_TASKS) == 51
    assert envs.list_tasks() == sorted(envs.list_tasks())


def test_every_task_is_registered():
    for name in envs.list_tasks():
        assert f"dmc/{name}-v0" in gymnasium.registry


def test_gymnasium_make_forwards_kwargs():
    env = gymnasium.make("dmc/reacher-easy-v0", obs="pixels", image_size=32, seed=3)
    obs, _ = env.reset()
    assert obs.shape == (3, 32, 32) and obs.dtype == np.uint8
    assert isinstance(env.unwrapped, envs.DMCEnv)
    env.close()


@pytest.mark.parametrize(
    "alias", ["cup-catch", "dmc/ball_in_cup-catch-v0", "dm_control/ball_in_cup-catch-v0"]
)
def test_aliases_and_ids_resolve_to_the_same_task(alias):
    reference, _ = envs.make("ball_in_cup-catch", seed=5).reset()
    env = envs.make(alias, seed=5)
    obs, _ = env.reset()
    assert env.task_id.name == "ball_in_cup-catch"
    np.testing.assert_array_equal(obs, reference)


def test_import_does_not_import_dm_control():
    # dm_control fixes its GL back end on import; `import envs` must leave that open.
    code = (
        "import sys, envs, gymnasium; "
        "assert 'dmc/cartpole-swingup-v0' in gymnasium.registry; "
        "assert not [m for m in sys.modules if m.startswith(('dm_control', 'mujoco'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------- check_env


@pytest.mark.parametrize(
    "name,obs",
    [("cartpole-swingup", "state"), ("reacher-easy", "pixels"), ("reacher-pose", "state")],
)
def test_check_env_representative(name, obs):
    env = gymnasium.make(f"dmc/{name}-v0", obs=obs)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", envs.list_tasks())
def test_check_env_all_registered(name):
    env = gymnasium.make(f"dmc/{name}-v0")
    check_env(env.unwrapped, skip_render_check=True)
    # Seeded episodes reproduce on every task.
    a, b = envs.make(name, seed=11), envs.make(name, seed=11)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    for action in _actions(a, 3):
        obs_a, r_a, *_ = a.step(action)
        obs_b, r_b, *_ = b.step(action)
        assert r_a == r_b
    np.testing.assert_array_equal(_obs_array(obs_a), _obs_array(obs_b))


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE_TASKS)
def test_pixels_on_every_suite_task(name):
    env = envs.make(name, obs="pixels", image_size=32, frame_stack=2, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (6, 32, 32) and obs.dtype == np.uint8
    assert obs.std() > 0  # the camera sees something
    obs, *_ = env.step(env.action_space.sample())
    assert obs in env.observation_space
    assert env.render().shape == (256, 256, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SUITE_TASKS if not n.startswith("lqr")])
def test_default_time_limit_is_dm_controls(name):
    from dm_control import suite

    domain, task = name.split("-", 1)
    # _step_limit is dm_control's own count of control steps per episode.
    assert round(suite.load(domain, task)._step_limit) == 1000
    env = envs.make(name, action_repeat=1)
    assert env.max_episode_steps == 1000


def _obs_array(obs) -> np.ndarray:
    return obs["observation"] if isinstance(obs, dict) else obs


# --------------------------------------------------------- equality with dm_control


@pytest.mark.parametrize("name", ["cartpole-swingup", "reacher-easy", "finger-spin"])
def test_rewards_and_observations_equal_dm_control(name):
    seed = 4
    raw = _raw_dmc(name, seed)
    env = envs.make(name, seed=seed, action_repeat=1)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, _flat(raw.reset().observation))
    for action in _actions(env, 30):
        obs, reward, terminated, truncated, _ = env.step(action)
        timestep = raw.step(action.astype(np.float64))
        assert isinstance(reward, float)
        assert reward == timestep.reward
        np.testing.assert_array_equal(obs, _flat(timestep.observation))
        assert not terminated and not truncated


@pytest.mark.parametrize("repeat", [2, 3])
def test_action_repeat_sums_dm_control_rewards(repeat):
    seed, name = 9, "cartpole-swingup"
    raw = _raw_dmc(name, seed)
    raw.reset()
    env = envs.make(name, seed=seed, action_repeat=repeat)
    env.reset()
    rewards = []
    for action in _actions(env, 15, seed=1):
        _, reward, *_ = env.step(action)
        expected = 0.0
        for _ in range(repeat):
            timestep = raw.step(action.astype(np.float64))
            expected += timestep.reward
        rewards.append(reward)
        assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert np.ptp(rewards) > 0  # the comparison saw more than one reward value
    np.testing.assert_array_equal(env.physics.data.qpos, raw.physics.data.qpos)


def test_actions_are_rescaled_to_the_task_bounds():
    env = envs.make("quadruped-walk")
    env.reset()
    spec = env.dmc_env.action_spec()
    assert not np.allclose(spec.maximum, 1.0)  # this task has non-unit bounds
    env.step(np.ones(env.action_space.shape, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, spec.maximum)
    env.step(-np.ones(env.action_space.shape, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, spec.minimum)
    env.step(np.full(env.action_space.shape, 5.0, np.float32))  # clipped to +1
    np.testing.assert_allclose(env.physics.data.ctrl, spec.maximum)
    # lqr declares +-1e10 ("unbounded"): actions pass through unscaled.
    lqr = envs.make("lqr-lqr_2_1")
    lqr.reset()
    lqr.step(np.array([0.5], np.float32))
    np.testing.assert_allclose(lqr.physics.data.ctrl, [0.5])


# ---------------------------------------------------------------------- seeding


def test_seeding_reproduces_episodes():
    a, b = envs.make("reacher-easy", seed=7), envs.make("reacher-easy", seed=7)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    np.testing.assert_array_equal(obs_a, obs_b)
    trace_a, trace_b = [], []
    for action in _actions(a, 20):
        trace_a.append(a.step(action)[:2])
        trace_b.append(b.step(action)[:2])
    for (oa, ra), (ob, rb) in zip(trace_a, trace_b, strict=True):
        np.testing.assert_array_equal(oa, ob)
        assert ra == rb
    # reset(seed=...) on a used env replays the fresh env's episode.
    obs_again, _ = a.reset(seed=7)
    np.testing.assert_array_equal(obs_again, envs.make("reacher-easy", seed=7).reset()[0])
    # Another seed starts elsewhere; an unseeded reset continues the random stream.
    assert not np.array_equal(a.reset(seed=8)[0], obs_again)
    assert not np.array_equal(a.reset()[0], a.reset(seed=8)[0])


# ------------------------------------------------------------------ time limits


def test_truncation_at_the_default_time_limit():
    env = envs.make("cartpole-swingup")  # tdmpc2 preset: repeat 2 -> 500 agent steps
    assert env.action_repeat == 2 and env.max_episode_steps == 500
    env.reset()
    zero = np.zeros(1, np.float32)
    for t in range(1, 501):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (t == 500)
    assert env.physics.data.time == pytest.approx(1000 * env.dmc_env.control_timestep())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(zero)


def test_truncation_when_repeat_does_not_divide_the_limit():
    env = envs.make("cartpole-balance", action_repeat=3)
    assert env.max_episode_steps == 334  # ceil(1000 / 3)
    env.reset()
    steps = 0
    truncated = False
    while not truncated:
        *_, truncated, _ = env.step(np.zeros(1, np.float32))
        steps += 1
    assert steps == 334
    # The last agent step stops at dm_control's 1000th control step, like dm_control.
    assert env.physics.data.time == pytest.approx(1000 * env.dmc_env.control_timestep())


def test_custom_time_limit_and_planet_preset():
    env = envs.make("cartpole-swingup", action_repeat_preset="planet", time_limit=4)
    assert env.action_repeat == 8 and env.max_episode_steps == 4
    env.reset()
    flags = [env.step(np.zeros(1, np.float32))[3] for _ in range(4)]
    assert flags == [False, False, False, True]
    planet = envs.make("cartpole-swingup", action_repeat_preset="planet")
    assert planet.max_episode_steps == 125


def test_action_repeat_presets():
    planet = envs.ACTION_REPEAT_PRESETS["planet"]
    assert (planet["cartpole"], planet["reacher"], planet["cheetah"]) == (8, 4, 4)
    assert (planet["ball_in_cup"], planet["finger"], planet["walker"]) == (4, 2, 2)
    assert envs.action_repeat_for("hopper", "planet") == 2
    assert envs.action_repeat_for("cartpole", "tdmpc2") == 2
    assert envs.make("cup-catch", action_repeat_preset="planet").action_repeat == 4
    assert envs.make("reacher-pose", action_repeat_preset="planet").action_repeat == 4
    with pytest.raises(TypeError):
        planet["cartpole"] = 1  # type: ignore[index]


# ---------------------------------------------------------- observations, render


def test_pixel_observation_is_the_camera_frame_and_stacks():
    env = envs.make("reacher-easy", obs="pixels", frame_stack=3, render_size=64)
    obs0, _ = env.reset(seed=2)
    assert obs0.shape == (9, 64, 64) and obs0.dtype == np.uint8
    np.testing.assert_array_equal(obs0[:3], obs0[6:])  # history starts as copies
    np.testing.assert_array_equal(obs0[6:], env.render().transpose(2, 0, 1))
    obs1, *_ = env.step(np.ones(2, np.float32))
    np.testing.assert_array_equal(obs1[:6], obs0[3:])  # shifted by one frame
    np.testing.assert_array_equal(obs1[6:], env.render().transpose(2, 0, 1))
    assert not np.array_equal(obs1[6:], obs0[6:])  # the arm moved


def test_state_frame_stack_concatenates_vectors():
    env = envs.make("pendulum-swingup", frame_stack=2)
    obs0, _ = env.reset(seed=0)
    assert obs0.shape == (6,) and obs0.dtype == np.float32
    obs1, *_ = env.step(np.ones(1, np.float32))
    np.testing.assert_array_equal(obs1[:3], obs0[3:])


def test_render_size_and_mode():
    env = envs.make("cartpole-swingup", render_size=(48, 80))
    env.reset()
    frame = env.render()
    assert frame.shape == (48, 80, 3) and frame.dtype == np.uint8 and frame.std() > 0
    quiet = envs.make("cartpole-swingup", render_mode=None)
    quiet.reset()
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None


def test_quadruped_pixels_use_camera_2():
    assert envs.make("quadruped-run", obs="pixels").camera == 2
    assert envs.make("walker-walk", obs="pixels").camera == 0


def test_physics_state_round_trip_replays_the_future():
    env = envs.make("finger-spin", seed=1)
    env.reset()
    for action in _actions(env, 5):
        env.step(action)
    state = env.get_physics_state()
    assert state.shape == (env.physics_state_size,)
    future = _actions(env, 10, seed=3)
    first = [env.step(a)[:2] for a in future]
    env.set_physics_state(state)
    second = [env.step(a)[:2] for a in future]
    for (o1, r1), (o2, r2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.set_physics_state(np.zeros(3))


# ------------------------------------------------------------------- error cases


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "cartpole-swingupp"}, r"'cartpole-swingupp'.*Did you mean 'cartpole-swingup"),
        ({"task": "no_such_domain-x"}, r"'no_such_domain-x'.*envs\.list_tasks"),
        ({"task": "dmc/cartpole-swingup-v9"}, r"'dmc/cartpole-swingup-v9'"),
        ({"obs": "rgb"}, r"'rgb'.*'state', 'pixels'"),
        ({"image_size": 0}, r"image_size.*>= 1.*0"),
        ({"image_size": -5}, r"image_size.*-5"),
        ({"action_repeat": 0}, r"action_repeat.*0"),
        ({"frame_stack": 0}, r"frame_stack.*0"),
        ({"time_limit": 0}, r"time_limit.*0"),
        ({"action_repeat_preset": "dreamer"}, r"'dreamer'.*'planet', 'tdmpc2'"),
        ({"seed": -1}, r"seed.*-1"),
        ({"camera": 7}, r"camera 7.*-1"),
        ({"camera": "top"}, r"'top'.*cameras"),
        ({"image_size": 4096}, r"image_size 4096x4096.*offscreen"),
        ({"render_mode": "human"}, r"'human'.*rgb_array"),
    ],
)
def test_make_rejects_bad_arguments(kwargs, match):
    kwargs = {"task": "cartpole-swingup", **kwargs}
    with pytest.raises(ValueError, match=match):
        envs.make(**kwargs)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="'bogus'"):
        envs.list_tasks("bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'reacher-pose'.*envs.make"):
        envs.DMCEnv(envs.EnvConfig(task="reacher-pose"))
    with pytest.raises(ValueError, match="'cartpole-swingup'.*goal tasks"):
        envs.GoalDMCEnv(envs.EnvConfig(task="cartpole-swingup"))
    with pytest.raises(TypeError, match="str"):
        envs.make(3)  # type: ignore[arg-type]


def test_step_rejects_bad_actions():
    env = envs.make("reacher-easy")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(2,\)"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=2**40)


# ----------------------------------------------------------------------- goal tasks


@pytest.mark.parametrize("name", GOAL_TASKS)
def test_goal_success_at_the_goal_and_not_at_the_start(name):
    for seed in range(4):
        env = envs.make(name, seed=seed)
        obs, info = env.reset()
        assert info["is_success"] is False
        assert info["distance"] > env.goal_task.threshold * 0.5
        assert set(obs) == {"observation", "achieved_goal", "desired_goal"}
        env.set_physics_state(env.goal_physics_state())
        assert env.compute_success(env.achieved_goal(), env.desired_goal)
        # At rest in the goal configuration nothing moves (no gravity in these planes).
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
        assert info["is_success"] is True and not terminated and not truncated
        assert reward == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(obs["achieved_goal"], obs["desired_goal"], atol=1e-5)


@pytest.mark.parametrize("name", GOAL_TASKS)
def test_goal_reward_is_vectorised_and_matches_step(name):
    env = envs.make(name, seed=3)
    obs, _ = env.reset()
    for action in _actions(env, 5):
        obs, reward, _, _, info = env.step(action)
        assert reward == env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        success = env.compute_success(obs["achieved_goal"], obs["desired_goal"])
        assert info["is_success"] == success
        assert reward == pytest.approx(-info["distance"])
    space = env.observation_space["desired_goal"]
    rng = np.random.default_rng(0)
    achieved = rng.uniform(space.low, space.high, size=(4, 6, *space.shape))
    desired = rng.uniform(space.low, space.high, size=(4, 6, *space.shape))
    batch = env.compute_reward(achieved, desired, None)
    assert batch.shape == (4, 6)
    loop = np.array(
        [[env.compute_reward(achieved[i, j], desired[i, j]) for j in range(6)] for i in range(4)]
    )
    np.testing.assert_allclose(batch, loop)
    assert np.all(batch <= 0)
    success = env.compute_success(achieved, desired)
    assert success.shape == (4, 6) and success.dtype == bool
    assert env.compute_success(desired, desired).all()


def test_goal_thresholds_are_the_documented_ones():
    tasks = envs.GOAL_TASKS
    assert tasks["reacher-pose"].threshold == 0.1
    assert tasks["reacher-target"].threshold == 0.06
    assert tasks["point_mass-goal"].threshold == 0.025
    assert tasks["finger-turn_goal"].threshold == pytest.approx(0.2313, abs=1e-4)
    pose = envs.make("reacher-pose")
    pose.reset()
    # Per joint: 0.09 rad on both joints succeeds, 0.11 on one fails; shoulder wraps.
    assert pose.compute_success(np.array([np.pi - 0.04, 0.0]), np.array([-np.pi + 0.05, 0.09]))
    assert not pose.compute_success(np.array([0.0, 0.0]), np.array([0.0, 0.11]))
    # reacher-target succeeds exactly where dm_control's reacher-easy reward is 1.
    target = envs.make("reacher-target")
    target.reset()
    radii = target.physics.named.model.geom_size[["target", "finger"], 0].sum()
    assert radii == pytest.approx(0.06)


@pytest.mark.parametrize("name", GOAL_TASKS)
def test_goals_are_reproducible_from_the_seed(name):
    a, b = envs.make(name, seed=21), envs.make(name, seed=21)
    a.reset()
    b.reset()
    np.testing.assert_array_equal(a.desired_goal, b.desired_goal)
    goals = {tuple(a.reset(seed=s)[0]["desired_goal"]) for s in range(5)}
    assert len(goals) == 5
    again = a.reset(seed=21)[0]["desired_goal"]
    np.testing.assert_array_equal(again, b.desired_goal.astype(np.float32))


def test_point_mass_goal_state_observation_is_the_goal_at_rest():
    env = envs.make("point_mass-goal", seed=0, frame_stack=2)
    env.reset()
    goal = env.goal_observation()
    x, y = env.desired_goal
    np.testing.assert_allclose(goal, np.array([x, y, 0, 0, x, y, 0, 0], np.float32))
    # The marker is moved to the goal.
    np.testing.assert_allclose(env.physics.named.data.geom_xpos["target", :2], [x, y])


@pytest.mark.parametrize("name", ["reacher-pose", "finger-turn_goal"])
def test_goal_images_are_deterministic_and_show_the_goal(name):
    a = envs.make(name, obs="pixels", seed=5, render_size=64)
    b = envs.make(name, obs="pixels", seed=5)
    first, _ = a.reset()
    b.reset()
    goal = a.goal_observation()
    assert goal.shape == a.observation_space["observation"].shape and goal.dtype == np.uint8
    np.testing.assert_array_equal(goal, b.goal_observation())
    np.testing.assert_array_equal(goal, a.goal_observation())  # cached, same content
    assert goal is not a.goal_observation()  # but a fresh array
    assert not np.array_equal(goal, first["observation"])
    # It is the picture of the robot in the goal configuration.
    a.set_physics_state(a.goal_physics_state())
    np.testing.assert_array_equal(goal, a.render().transpose(2, 0, 1))
    other = envs.make(name, obs="pixels", seed=6)
    other.reset()
    assert not np.array_equal(goal, other.goal_observation())


@pytest.mark.parametrize("name", ["reacher-pose", "finger-turn_goal"])
def test_rendering_the_goal_does_not_disturb_the_episode(name):
    # finger has contacts and touch sensors: acceleration-stage data must survive too.
    a = envs.make(name, obs="pixels", seed=8)
    b = envs.make(name, obs="pixels", seed=8)
    a.reset()
    b.reset()
    actions = _actions(a, 8, seed=4)
    for action in actions[:3]:
        a.step(action)
        b.step(action)
    def snapshot():
        data = a.physics.data
        fields = (data.sensordata, data.qacc_warmstart, data.ctrl, data.xpos, data.qacc)
        return (a.get_physics_state(), *(np.copy(f) for f in fields))

    before = snapshot()
    a.goal_observation()
    a.goal_physics_state()
    after = snapshot()
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.render(), b.render())
    for action in actions[3:]:
        obs_a, r_a, *_, info_a = a.step(action)
        obs_b, r_b, *_, info_b = b.step(action)
        assert r_a == r_b and info_a == info_b
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])


def test_goal_task_time_limit():
    env = envs.make("reacher-pose")
    assert env.max_episode_steps == 200  # 400 control steps at repeat 2
    assert envs.make("reacher-pose", action_repeat_preset="planet").max_episode_steps == 100
    short = envs.make("point_mass-goal", time_limit=3)
    short.reset()
    flags = [short.step(np.zeros(2, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_reacher_pose_hides_the_target_and_drops_to_target():
    env = envs.make("reacher-pose")
    obs, _ = env.reset()
    assert obs["observation"].shape == (4,)  # position(2), velocity(2)
    assert env.physics.named.model.geom_rgba["target", 3] == 0.0
