"""The dynamics ensemble (models/ensemble.py), its objectives, trainer and command line.

Tiny sizes throughout; the trainer and command-line tests run a few episodes of 20 agent
steps on cartpole-swingup.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import CheckpointError, load
from models.ensemble import (
    EnsembleDynamics,
    Transitions,
    ensemble_config,
    fit_reward_head,
    load_for_planning,
    train_ensemble,
    transitions_from_replay,
)
from models.objectives import (
    disagreement_objective,
    make_trajectory_sampling_objective,
    reward_objective,
    trajectory_sampling_objective,
)
from models.planning import EnvShapes
from planners import MPCController, make_planner
from training.replay import EpisodeReplay

ROOT = Path(__file__).resolve().parent.parent


def toy_data(n: int = 256, seed: int = 0) -> Transitions:
    """A linear system with a quadratic reward: s' = s + 0.1 a W, r = -|s|^2."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    action = torch.rand(n, 2, generator=g) * 2 - 1
    w = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
    next_obs = obs + 0.1 * action @ w + 0.01 * torch.randn(n, 3, generator=g)
    return Transitions(obs, action, -obs.pow(2).sum(-1), next_obs)


def tiny_model(**overrides) -> EnsembleDynamics:
    torch.manual_seed(0)
    return EnsembleDynamics(ensemble_config("tiny", 3, 2, task="tiny-task", **overrides))


class OffsetMembers(EnsembleDynamics):
    """Member e moves every state by e + 1 in each dimension and predicts reward e, so a
    rollout's rewards name the member that moved it at each step."""

    def __init__(self, members: int = 4) -> None:
        super().__init__(ensemble_config("tiny", 2, 1, ensemble_size=members, probabilistic=False))
        with torch.no_grad():
            for net, value in ((self.dynamics, 1.0), (self.reward_head, 0.0)):
                for layer in net.layers:
                    layer.weight.zero_()
                    layer.bias.zero_()
                for e in range(members):
                    net.layers[-1].bias[e] = e + value


# -- training ----------------------------------------------------------------------------------


def test_members_differ_after_training_on_bootstrapped_batches():
    model = tiny_model()
    with torch.no_grad():  # the same start for every member: only the bootstraps differ
        for p in model.member_parameters().values():
            p.copy_(p[:1].expand_as(p))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_ensemble(model, optimizer, toy_data(), np.random.default_rng(0), epochs=3, batch_size=32, val_fraction=0.0)
    w = model.dynamics.layers[0].weight
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])


def test_nll_falls_and_the_log_variance_stays_within_its_bounds():
    model = tiny_model()
    data = toy_data()
    model.fit_normalizers(data)
    e = model.config.ensemble_size
    batch = Transitions(*(v.unsqueeze(0).expand(e, *v.shape) for v in (data.obs, data.action, data.reward, data.next_obs)))
    before = model.loss(batch)[1]["nll"]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_ensemble(model, optimizer, data, np.random.default_rng(0), epochs=30, batch_size=64, patience=30)
    assert model.loss(batch)[1]["nll"] < before - 1.0
    _, logvar, _ = model.member_outputs(batch)
    assert (logvar <= model.max_logvar + 1e-5).all() and (logvar >= model.min_logvar - 1e-5).all()
    # Far outside the data the bounds still hold.
    wild = Transitions(*(100 * v for v in (batch.obs, batch.action, batch.reward, batch.next_obs)))
    _, logvar, _ = model.member_outputs(wild)
    assert (logvar <= model.max_logvar + 1e-5).all() and (logvar >= model.min_logvar - 1e-5).all()


def test_deterministic_preset_trains_with_mse():
    model = EnsembleDynamics(ensemble_config("deterministic", 3, 2, hidden=32))
    assert model.config.ensemble_size == 1 and not model.config.probabilistic
    data = toy_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first = train_ensemble(model, optimizer, data, np.random.default_rng(0), epochs=1)
    last = train_ensemble(model, optimizer, data, np.random.default_rng(1), epochs=20, patience=20)
    assert last["val_score"] < first["val_score"]


def test_elites_are_the_members_with_the_lowest_held_out_loss():
    model = EnsembleDynamics(ensemble_config("tiny", 3, 2, ensemble_size=4, num_elites=2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = toy_data()
    with torch.no_grad():  # member 1 and 3 are ruined: they must not be elites
        model.dynamics.layers[-1].bias[1] += 50.0
        model.dynamics.layers[-1].bias[3] += 50.0
    train_ensemble(model, optimizer, data, np.random.default_rng(0), epochs=1, val_fraction=0.2)
    assert model.elites.tolist() == [0, 2]


def test_normalisation_round_trips():
    model = tiny_model()
    data = toy_data()
    model.fit_normalizers(data)
    x = torch.cat([data.obs, data.action], dim=-1)
    assert torch.allclose(model.input_norm.denormalize(model.input_norm.normalize(x)), x, atol=1e-5)
    z = model.input_norm.normalize(x)
    assert torch.allclose(z.mean(0), torch.zeros(5), atol=1e-5) and torch.allclose(z.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    delta = data.next_obs - data.obs
    assert torch.allclose(model.delta_norm.denormalize(model.delta_norm.normalize(delta)), delta, atol=1e-6)
    constant = torch.ones(10, 1)  # no spread: std stays 1, nothing divides by zero
    model.reward_norm.fit(constant)
    assert torch.isfinite(model.reward_norm.normalize(constant)).all()


# -- joint angles read as (sin, cos) -------------------------------------------------------------


def winding_pendulum(n: int = 2048, seed: int = 0) -> Transitions:
    """A joint that winds through many turns: state (angle, velocity), the angle anywhere
    in [-60, 60] rad; the velocity changes by -sin(angle) dt + a dt, so the dynamics
    depend on the angle only through its sine."""
    g = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=g) * 2 - 1) * 60
    velocity = torch.randn(n, generator=g)
    action = torch.rand(n, 1, generator=g) * 2 - 1
    new_velocity = velocity + 0.5 * (-torch.sin(angle) + action[:, 0])
    obs = torch.stack([angle, velocity], dim=-1)
    next_obs = torch.stack([angle + 0.1 * new_velocity, new_velocity], dim=-1)
    return Transitions(obs, action, torch.cos(angle), next_obs)


def test_angle_entries_are_read_as_sin_and_cos():
    torch.manual_seed(0)
    model = EnsembleDynamics(ensemble_config("tiny", 2, 1, angle_dims=(0,)))
    assert model.input_norm.mean.shape == (4,)  # velocity, sin, cos, action
    obs = torch.tensor([[0.3, -1.0]])
    assert torch.allclose(model.state_features(obs), torch.tensor([[-1.0, np.sin(0.3), np.cos(0.3)]], dtype=torch.float32))
    model.fit_normalizers(winding_pendulum())
    turned = obs + torch.tensor([[4 * np.pi, 0.0]], dtype=torch.float32)  # the same configuration, two turns on
    action = torch.tensor([[0.5]])
    assert torch.allclose(model.next(turned, action) - turned, model.next(obs, action) - obs, atol=1e-5)
    assert torch.allclose(model.reward(turned, action), model.reward(obs, action), atol=1e-5)
    loaded = EnsembleDynamics.from_checkpoint(model.checkpoint())  # the header keeps the angle entries
    assert loaded.config.angle_dims == (0,) and torch.equal(loaded.next(turned, action), model.next(turned, action))
    with pytest.raises(ValueError, match=r"angle_dims=\(2,\) must be distinct state indices in \[0, 2\)"):
        ensemble_config("tiny", 2, 1, angle_dims=(2,))


def test_sin_cos_inputs_learn_a_winding_joint_that_raw_angles_cannot():
    train, test = winding_pendulum(seed=0), winding_pendulum(n=512, seed=1)
    errors = {}
    for angles in ((), (0,)):
        torch.manual_seed(0)
        model = EnsembleDynamics(ensemble_config("tiny", 2, 1, hidden=64, angle_dims=angles))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        train_ensemble(model, optimizer, train, np.random.default_rng(0), epochs=15, batch_size=64, patience=15)
        with torch.no_grad():
            errors[angles] = float((model.next(test.obs, test.action) - test.next_obs)[:, 1].pow(2).mean())
    assert errors[(0,)] < 0.2 * errors[()], errors


def test_reacher_observes_its_joint_angles_first():
    import envs

    assert envs.angle_observations("reacher-easy") == (0, 1) and envs.angle_observations("cartpole-swingup") == ()
    env = envs.make("reacher-easy", obs="state", seed=0)
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    qpos = env.unwrapped.dmc_env.physics.data.qpos
    assert np.allclose(obs[[0, 1]], qpos, atol=1e-5)
    env.close()


# -- trajectory sampling -----------------------------------------------------------------------


def members_along(rewards: torch.Tensor) -> torch.Tensor:
    """OffsetMembers' rewards [..., H] are the member index at each step."""
    return rewards.round().long()


def test_tsinf_fixes_particle_p_to_elite_p_mod_k():
    model = OffsetMembers(members=4)
    z, actions = torch.zeros(3, 2), torch.zeros(3, 5, 1)
    rewards = model.particle_rollout(z, actions, particles=8, propagation="tsinf")  # [M, P, H]
    expected = (torch.arange(8) % 4).view(1, 8, 1).expand(3, 8, 5)
    assert torch.equal(members_along(rewards), expected)
    model.elites = torch.tensor([1, 3])  # only elites plan: particle p rides elites[p mod 2]
    rewards = model.particle_rollout(z, actions, particles=4, propagation="tsinf")
    assert torch.equal(members_along(rewards)[0, :, 0], torch.tensor([1, 3, 1, 3]))


def test_ts1_redraws_members_every_step_evenly_among_the_elites():
    model = OffsetMembers(members=4)
    model.generator = torch.Generator().manual_seed(0)
    z, actions = torch.zeros(50, 2), torch.zeros(50, 6, 1)
    members = members_along(model.particle_rollout(z, actions, particles=4, propagation="ts1"))  # [50, 4, 6]
    for t in range(6):  # every elite moves the same number of rows at every step
        assert torch.bincount(members[..., t].flatten(), minlength=4).tolist() == [50, 50, 50, 50]
    changed = (members[..., 1:] != members[..., :-1]).float().mean()
    assert 0.6 < changed < 0.9  # re-drawn: a fresh member 3 times in 4
    # Each particle's state is the sum of the offsets of the members that moved it.
    states_moved = (members + 1).sum(-1)
    assert states_moved.unique().numel() > 1


def test_expectation_equals_the_mean_prediction():
    model = tiny_model()
    model.fit_normalizers(toy_data())
    z0 = torch.randn(2, 3)
    actions = torch.rand(2, 7, 4, 2) * 2 - 1
    ts = trajectory_sampling_objective(model, z0, particles=3, propagation="expectation")(actions)
    mean = reward_objective(model, z0, discount=1.0, use_value=False)(actions)  # through next() and reward()
    assert ts.shape == (2, 7) and torch.allclose(ts, mean, atol=1e-5)


def test_ts_objective_is_the_mean_over_particles_minus_risk_times_std():
    model = tiny_model()
    model.fit_normalizers(toy_data())
    z0, actions = torch.randn(2, 3), torch.rand(2, 5, 4, 2) * 2 - 1
    model.generator = torch.Generator().manual_seed(1)
    rewards = model.particle_rollout(z0.repeat_interleave(5, 0), actions.reshape(10, 4, 2), 6, "ts1")
    returns = rewards.sum(-1)  # [M, P]
    for risk in (0.0, 1.5):
        model.generator = torch.Generator().manual_seed(1)
        got = trajectory_sampling_objective(model, z0, particles=6, propagation="ts1", risk=risk)(actions)
        want = (returns.mean(1) - risk * returns.std(1, unbiased=False)).view(2, 5)
        assert torch.allclose(got, want, atol=1e-5)


def test_bad_trajectory_sampling_settings_are_named():
    model = tiny_model()
    with pytest.raises(ValueError, match="propagation='ts2' is not one of"):
        make_trajectory_sampling_objective(propagation="ts2")
    with pytest.raises(ValueError, match=r"particles=4 must be a positive multiple of the number of elites \(3\)"):
        trajectory_sampling_objective(model, torch.zeros(1, 3), particles=4)(torch.zeros(1, 2, 3, 2))


@pytest.mark.parametrize("planner_name", ["cem", "mppi", "icem"])
@pytest.mark.parametrize("propagation", ["ts1", "tsinf", "expectation"])
def test_every_planner_plans_through_the_ts_objective(planner_name, propagation):
    model = tiny_model()
    model.fit_normalizers(toy_data())
    planner = make_planner(planner_name, 2, horizon=4, num_samples=16, num_elites=4, iterations=2)
    acts = []
    for _ in range(2):
        model.generator = torch.Generator().manual_seed(0)
        ctrl = MPCController(model, planner, objective=make_trajectory_sampling_objective(particles=6, propagation=propagation),
                             seed=0, device="cpu")
        acts.append(ctrl.act(np.zeros((3, 3), np.float32)))  # a batch of 3 problems
    assert acts[0].shape == (3, 2) and np.allclose(acts[0], acts[1])


# -- disagreement ------------------------------------------------------------------------------


def test_disagreement_is_zero_for_equal_members_and_grows_with_their_spread():
    model = tiny_model()
    with torch.no_grad():
        for p in model.member_parameters().values():
            p.copy_(p[:1].expand_as(p))
    z0, actions = torch.randn(2, 3), torch.rand(2, 8, 4, 2) * 2 - 1
    assert torch.allclose(disagreement_objective(model, z0)(actions), torch.zeros(2, 8), atol=1e-10)
    base = {k: p.detach().clone() for k, p in model.member_parameters().items()}
    g = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(p.shape, generator=g) for k, p in base.items()}
    scores = []
    for scale in (0.01, 0.1, 1.0):
        with torch.no_grad():
            for k, p in model.member_parameters().items():
                p.copy_(base[k] + scale * noise[k])
        with torch.no_grad():
            scores.append(float(disagreement_objective(model, z0)(actions).mean()))
    assert 0 < scores[0] < scores[1] < scores[2]


def test_the_disagreement_objective_plans_with_every_planner():
    model = tiny_model()
    from models.objectives import make_disagreement_objective

    for name in ("cem", "mppi", "icem"):
        planner = make_planner(name, 2, horizon=3, num_samples=16, num_elites=4, iterations=2)
        action = MPCController(model, planner, objective=make_disagreement_objective(), seed=0, device="cpu").act(np.zeros(3))
        assert action.shape == (2,) and np.isfinite(action).all()


# -- files ------------------------------------------------------------------------------------


def test_save_load_gives_the_same_actions(tmp_path):
    model = tiny_model()
    model.fit_normalizers(toy_data())
    model.reward_fitted.fill_(True)
    path = tmp_path / "model.pt"
    torch.save(model.checkpoint(planning={"horizon": 4}), path)
    loaded = load(path, env=EnvShapes((3,), 2, task="tiny-task"), device="cpu")
    assert loaded.planning == {"horizon": 4} and bool(loaded.reward_fitted)
    for m in (model, loaded):
        m.generator = torch.Generator().manual_seed(5)
    planner = make_planner("icem", 2, horizon=4, num_samples=16, num_elites=4, iterations=2)
    factory = make_trajectory_sampling_objective(particles=3, propagation="ts1")
    a = MPCController(model, planner, objective=factory, seed=2, device="cpu").act(np.ones(3))
    b = MPCController(loaded, planner, objective=factory, seed=2, device="cpu").act(np.ones(3))
    assert np.array_equal(a, b)


def test_a_checkpoint_for_another_task_is_refused_by_name(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_model().checkpoint(), path)
    with pytest.raises(ValueError, match="trained on task 'tiny-task', but the task is 'walker-walk'"):
        load(path, env=EnvShapes((3,), 2, task="walker-walk"), device="cpu")
    with pytest.raises(ValueError, match=r"shape \(3,\).*gives \(4,\)"):
        load_for_planning(path, env=EnvShapes((4,), 2, task="tiny-task"), device="cpu")


def test_another_familys_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format_version": 1, "model": "told", "config": {}, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="holds a 'told' model, not a 'ensemble' model"):
        load_for_planning(path, device="cpu")


def test_a_pixel_request_is_refused_by_name():
    from training.ensemble_trainer import make_trainer

    with pytest.raises(ValueError, match="obs='pixels'.*state observations only"):
        make_trainer(task="cartpole-swingup", steps=1000, obs="pixels", seed=0, out=None, device="cpu",
                     progress=False, options={})  # fmt: skip
    from models.ensemble import prepare_planning
    from models.planning import PlanRequest

    with pytest.raises(ValueError, match="obs='pixels'.*state observations only"):
        prepare_planning(PlanRequest(task="cartpole-swingup", obs="pixels"))


def test_bad_trainer_options_are_named():
    from training.ensemble_trainer import make_trainer

    kwargs = dict(task="cartpole-swingup", steps=1000, obs="state", seed=0, out=None, device="cpu", progress=False)
    with pytest.raises(ValueError, match="propagation='ts3' is not one of"):
        make_trainer(**kwargs, options={"propagation": "ts3"})
    with pytest.raises(ValueError, match="planner='mppi' is not one of"):
        make_trainer(**kwargs, options={"planner": "mppi"})
    with pytest.raises(ValueError, match=r"does not take the option\(s\) \['size'\]"):
        make_trainer(**kwargs, options={"size": "1M"})


def test_transitions_come_from_a_replay_buffer_without_crossing_episodes():
    buffer = EpisodeReplay(40, (2,), 1)
    for k in range(3):
        obs = np.arange(12, dtype=np.float32).reshape(6, 2) + 100 * k
        buffer.add_episode(obs, np.full((5, 1), k, np.float32), np.full(5, k, np.float32))
    data = transitions_from_replay(buffer.state())
    assert len(data) == 15
    assert torch.equal(data.next_obs - data.obs, torch.full((15, 2), 2.0))


def test_zero_shot_fits_the_reward_head_and_leaves_the_dynamics():
    model = tiny_model()
    data = toy_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_ensemble(model, optimizer, data, np.random.default_rng(0), epochs=5, reward=False)
    assert not bool(model.reward_fitted)
    fitted = fit_reward_head(model, data, np.random.default_rng(0), epochs=30, lr=1e-2)
    assert bool(fitted.reward_fitted) and not bool(model.reward_fitted)
    assert torch.equal(fitted.dynamics.layers[0].weight, model.dynamics.layers[0].weight)
    error = (fitted.reward(data.obs, data.action) - data.reward).pow(2).mean()
    assert error < 0.5 * data.reward.var()


# -- trainer and command line -------------------------------------------------------------------

TINY_RUN = dict(preset="tiny", particles=3, seed_episodes=1, max_episode_steps=20, horizon=4, plan_samples=16,
                plan_iterations=2, eval_every=320, eval_episodes=2, epochs=2)


def tiny_trainer(out: Path, steps: int = 480, **options):
    from training.ensemble_trainer import make_trainer

    return make_trainer(task="cartpole-swingup", steps=steps, obs="state", seed=0, out=str(out), device="cpu",
                        progress=False, options={**TINY_RUN, **options})  # fmt: skip


def test_trainer_runs_and_resumes_to_the_same_state(tmp_path):
    whole = tiny_trainer(tmp_path / "whole")
    rows = whole.run()
    assert [r["env_step"] for r in rows] == [320, 480]
    assert len(whole.train_rows) == 3 and whole.train_rows[0]["random"] == 1 and whole.updates == 3
    # The same run killed after 2 episodes (and the evaluation at 320), then resumed by a new trainer.
    part = tiny_trainer(tmp_path / "part")

    def killed() -> None:
        if part.episode == 2:
            raise KeyboardInterrupt

    part.before_episode = killed
    with pytest.raises(KeyboardInterrupt):
        part.run()
    resumed = tiny_trainer(tmp_path / "part")
    assert resumed.resumed and resumed.episode == 2 and [r["env_step"] for r in resumed.eval_rows] == [320]
    resumed.run()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["episode_return"] for r in whole.train_rows] == [r["episode_return"] for r in resumed.train_rows]
    saved = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    assert saved["model"] == "ensemble" and saved["planning"]["horizon"] == 4 and saved["config"]["task"] == "cartpole-swingup"


def test_reacher_reads_its_angles_as_sin_cos_and_resumes_only_alike(tmp_path):
    from training.ensemble_trainer import make_trainer

    kwargs = dict(task="reacher-easy", steps=40, obs="state", seed=0, device="cpu", progress=False)
    options = {**TINY_RUN, "max_episode_steps": 10, "eval_every": 10_000}
    new = make_trainer(**kwargs, out=str(tmp_path / "new"), options=options)
    assert new.model.config.angle_dims == (0, 1)
    new.run()
    again = make_trainer(**kwargs, out=str(tmp_path / "new"), options=options)
    assert again.resumed and all(torch.equal(v, again.model.state_dict()[k]) for k, v in new.model.state_dict().items())
    with pytest.raises(ValueError, match=r"reads state entries \[0, 1\] as \(sin, cos\).*without --raw-angles"):
        make_trainer(**kwargs, out=str(tmp_path / "new"), options={**options, "raw_angles": True})
    raw = make_trainer(**kwargs, out=str(tmp_path / "raw"), options={**options, "raw_angles": True})
    assert raw.model.config.angle_dims == ()
    raw.run()
    with pytest.raises(ValueError, match=r"reads the joint angles raw.*resume it with --raw-angles"):
        make_trainer(**kwargs, out=str(tmp_path / "raw"), options=options)


def forget_angle_settings(run: Path) -> None:
    """Make a run's files look as ones saved before joint angles could be read as
    (sin, cos): no `raw_angles` setting and no `angle_dims` in the models' headers."""
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["train_config"]["raw_angles"]
    del state["model_state"]["config"]["angle_dims"]
    torch.save(state, path)
    model_file = torch.load(run / "model.pt", weights_only=True)
    del model_file["config"]["angle_dims"]
    torch.save(model_file, run / "model.pt")


@pytest.mark.parametrize("task", ["reacher-easy", "cartpole-swingup"])
def test_a_run_saved_before_angle_features_resumes_as_it_read_them(tmp_path, task):
    from training.ensemble_trainer import make_trainer

    kwargs = dict(task=task, steps=40 if task == "reacher-easy" else 80, obs="state", seed=0, device="cpu",
                  progress=False, out=str(tmp_path))  # fmt: skip
    options = {**TINY_RUN, "max_episode_steps": 10, "eval_every": 10_000}
    make_trainer(**kwargs, options={**options, "raw_angles": True}).run()
    forget_angle_settings(tmp_path)
    assert make_trainer(**kwargs, options={**options, "raw_angles": True}).resumed
    if task == "reacher-easy":  # its old model read the angles raw
        with pytest.raises(ValueError, match="resume it with --raw-angles"):
            make_trainer(**kwargs, options=options)
    else:  # no angle entries: the setting changes nothing
        assert make_trainer(**kwargs, options=options).resumed
    loaded = load_for_planning(tmp_path / "model.pt")  # a model file whose header has no angle_dims
    assert loaded.config.angle_dims == ()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, str(ROOT / "run_planning.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)  # fmt: skip


def test_cli_trains_explores_and_plans_with_the_result(tmp_path):
    flags = ["--preset", "tiny", "--particles", "3", "--seed-episodes", "1", "--max-episode-steps", "20",
             "--horizon", "4", "--plan-samples", "16", "--plan-iterations", "2", "--eval-every", "320",
             "--eval-episodes", "1", "--epochs", "2", "--no-progress"]  # fmt: skip
    out = tmp_path / "explore"
    result = run_cli("train", "--model", "ensemble", "--task", "cartpole-swingup", "--steps", "320", "--out", str(out),
                     "--explore", *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "model.pt").is_file() and "reward-free" in result.stdout
    plan = ["--model", "ensemble", "--checkpoint", str(out / "model.pt"), "--task", "cartpole-swingup", "--max-steps",
            "3", "--horizon", "4", "--samples", "16", "--iterations", "2", "--no-progress"]  # fmt: skip
    result = run_cli(*plan, "--planner", "mppi", "--out", str(tmp_path / "p1"))
    assert result.returncode == 2 and "--zero-shot" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(*plan, "--planner", "icem", "--zero-shot", "--particles", "6", "--out", str(tmp_path / "p2"))
    assert result.returncode == 0, result.stderr
    assert "fitted zero-shot" in result.stdout and "mean return" in result.stdout
    result = run_cli(*plan, "--planner", "cem", "--objective", "disagreement", "--out", str(tmp_path / "p3"))
    assert result.returncode == 0, result.stderr
    result = run_cli(*plan, "--obs", "pixels", "--out", str(tmp_path / "p4"))
    assert result.returncode == 2 and "obs='pixels'" in result.stderr
    # A task run (reward head trained) plans with no further option.
    task_run = tmp_path / "task"
    result = run_cli("train", "--model", "ensemble", "--task", "cartpole-swingup", "--steps", "160", "--out",
                     str(task_run), *flags)  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan[plan.index("--checkpoint") + 1] = str(task_run / "model.pt")
    result = run_cli(*plan, "--planner", "mppi", "--propagation", "ts1", "--out", str(tmp_path / "p5"))
    assert result.returncode == 0, result.stderr
    assert "ts1 over 3 particles" in result.stdout


def test_state_coverage_bins_cart_position_and_pole_angle():
    from training.coverage import coverage_curve, state_bins

    down = [0.0, -1.0, 0.0, 0.0, 0.0]  # pole hanging (angle pi), cart at the centre
    up = [0.0, 1.0, 0.0, 0.0, 0.0]  # pole upright (angle 0)
    far = [1.9, 1.0, 0.0, 0.0, 0.0]
    bins = state_bins("cartpole-swingup", np.array([down, up, far, up]))
    assert len(set(bins.tolist())) == 3 and bins[1] == bins[3]
    counts, visited = coverage_curve("cartpole", np.array([down, up, far, up]), every=2)
    assert counts.tolist() == [2, 4] and visited.tolist() == [2, 3]
    with pytest.raises(ValueError, match=r"no state binning for task 'walker-walk'; coverage is defined for \('cartpole', 'reacher'\)"):
        state_bins("walker-walk", np.zeros((1, 24)))


def test_reacher_coverage_bins_the_fingertip_by_forward_kinematics():
    from training.coverage import fingertip, state_bins

    straight_east = [0.0, 0.0, 0, 0, 0, 0]  # fingertip at (0.24, 0)
    straight_north = [np.pi / 2, 0.0, 0, 0, 0, 0]  # (0, 0.24)
    folded = [0.0, np.pi * 0.8, 0, 0, 0, 0]  # wrist bent: near the shoulder
    obs = np.array([straight_east, straight_north, folded])
    np.testing.assert_allclose(fingertip(obs)[:2], [[0.24, 0.0], [0.0, 0.24]], atol=1e-12)
    assert np.linalg.norm(fingertip(obs)[2]) < 0.08
    assert len(set(state_bins("reacher-easy", obs).tolist())) == 3
    with pytest.raises(ValueError, match=r"reacher observations have shape \[T, 6\]; got \(1, 5\)"):
        state_bins("reacher-easy", np.zeros((1, 5)))
