"""Offline DINO-WM training (training/dino_wm_trainer.py) and goal-image MPC evaluation
(training/goal_mpc.py). Tiny configs: 28 px frames, the tiny random encoder, a few steps."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from models.dino_wm import DinoWM, load_trained_dinowm
from models.goal_adapters import GoalConditionedDinoWM
from training.collection import CollectConfig, collect
from training.datasets import GoalSet, sample_goals
from training.dino_wm_trainer import CHECKPOINT_VERSION, DinoWMTrainConfig, DinoWMTrainer, make_trainer
from training.goal_mpc import (
    GoalEvalConfig,
    evaluate_goals,
    goal_reset_seeds,
    make_goal_env,
    write_goal_picture,
)

pytestmark = pytest.mark.filterwarnings("ignore:DINOv2 tiny encoder is randomly initialised")

POINT_MASS_THRESHOLD = 0.025  # envs/goals.py: success within 0.025 m


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    config = CollectConfig(task="point_mass-goal", num_trajectories=8, steps=16, image_size=28, shard_size=4, seed=3)
    return collect(config, tmp_path_factory.mktemp("pm"), progress=False)


def train_config(dataset, **changes) -> DinoWMTrainConfig:
    settings = {"dataset": str(dataset.root), "preset": "tiny", "steps": 30, "lr": 2e-3, "batch_size": 16,
                "val_fraction": 0.25, "eval_every": 10, "checkpoint_every": 10, "log_every": 5, "device": "cpu"}
    settings.update(changes)
    return DinoWMTrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    trainer = DinoWMTrainer(train_config(dataset), tmp_path_factory.mktemp("run"), log=lambda _: None)
    trainer.run()
    return trainer


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- training ------------------------------------------------------------------------------


def test_training_lowers_the_validation_loss_and_ships_the_model(trained, dataset):
    val = read_csv(trained.out_dir / "val.csv")
    assert [int(r["step"]) for r in val] == [0, 10, 20, 30]
    first, last = float(val[0]["val_loss"]), float(val[-1]["val_loss"])
    assert last < 0.7 * first, (first, last)
    train = read_csv(trained.out_dir / "train.csv")
    assert [int(r["step"]) for r in train] == [5, 10, 15, 20, 25, 30]
    # The data set's statistics are in the model (z-scoring of actions and proprio).
    stats = dataset.normalization()
    torch.testing.assert_close(trained.model.action_mean, stats["action_mean"])
    torch.testing.assert_close(trained.model.proprio_std, stats["proprio_std"].clamp_min(1e-6))
    # model.pt rebuilds the same model, random encoder included (from the recorded seed).
    loaded = load_trained_dinowm(trained.model_path)
    images = torch.from_numpy(dataset.images_at([0, 1], [0, 3]))
    proprio = torch.from_numpy(dataset.array("proprio")[[0, 1], [0, 3]])
    torch.testing.assert_close(loaded.encode_obs(images, proprio), trained.model.encode_obs(images, proprio))
    assert torch.load(trained.model_path, weights_only=True)["train_steps"] == 30


def test_a_killed_run_resumes_its_step_count_and_matches_an_uninterrupted_one(dataset, tmp_path, monkeypatch):
    config = train_config(dataset, steps=12, checkpoint_every=4, eval_every=6, log_every=2, decoder=True)
    whole = DinoWMTrainer(config, tmp_path / "whole", log=lambda _: None)
    whole.run()

    original = DinoWMTrainer._update
    calls = {"n": 0}

    def dies_at_step_seven(self, step):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated kill")
        return original(self, step)

    monkeypatch.setattr(DinoWMTrainer, "_update", dies_at_step_seven)
    with pytest.raises(KeyboardInterrupt):
        DinoWMTrainer(config, tmp_path / "killed", log=lambda _: None).run()
    monkeypatch.setattr(DinoWMTrainer, "_update", original)

    # The features are cached: resuming and training must never run the encoder.
    def no_vit(*args, **kwargs):
        raise AssertionError("the ViT ran during training")

    monkeypatch.setattr(DinoWM, "encode_features", no_vit)
    resumed = DinoWMTrainer(config, tmp_path / "killed", log=lambda _: None)
    assert resumed.resumed and resumed.step == 4  # the last checkpoint before the kill
    resumed.run()
    assert resumed.step == 12
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for name in ("train.csv", "val.csv"):
        a, b = read_csv(tmp_path / "whole" / name), read_csv(tmp_path / "killed" / name)
        assert [r["step"] for r in b] == [r["step"] for r in a]  # no step logged twice or lost
        key = "loss" if name == "train.csv" else "val_loss"
        assert [r[key] for r in b] == [r[key] for r in a]


def test_resume_refuses_a_run_with_other_settings(trained):
    changed = dataclasses.replace(trained.config, lr=1e-3)
    with pytest.raises(ValueError, match=r"lr=0\.002 \(checkpoint\) vs 0\.001"):
        DinoWMTrainer(changed, trained.out_dir, log=lambda _: None)


def test_the_training_checkpoint_names_its_model_and_an_old_one_still_resumes(trained, tmp_path):
    state = torch.load(trained.checkpoint_path, weights_only=True)
    assert (state["format_version"], state["model"], state["kind"]) == (CHECKPOINT_VERSION, "dinowm", "training")
    assert (state["task"], state["obs"]) == ("point_mass-goal", "pixels")
    # The layout before headers: kind "dinowm-train", version 1, the model under "model",
    # no world size in the run facts.
    old = {k: v for k, v in state.items() if k not in ("format_version", "model", "kind", "task", "obs", "model_state")}
    old.update(kind="dinowm-train", version=1, model=state["model_state"])
    old["run"] = {k: v for k, v in state["run"].items() if k != "world_size"}
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "checkpoint.pt")
    resumed = DinoWMTrainer(trained.config, tmp_path / "old", log=lambda _: None)
    assert resumed.resumed and resumed.step == trained.step
    for key, value in trained.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    torch.save({"kind": "something-else"}, tmp_path / "old" / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a DINO-WM training checkpoint"):
        DinoWMTrainer(trained.config, tmp_path / "old", log=lambda _: None)


def small_options(**changes):
    options = {"preset": "tiny", "trajectories": 4, "trajectory_steps": 12, "epochs": 1, "batch_size": 8}
    options.update(changes)
    return options


def test_make_trainer_is_cheap_and_collects_when_run(tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = make_trainer(task="point_mass-goal", steps=123, obs="state", seed=1, out=str(out), device="cpu",
                           progress=False, options=small_options())
    assert trainer.out_dir == out and not out.exists()  # nothing collected or built yet
    assert trainer.describe() == "dinowm (tiny, 28 px) on point_mass-goal from 4 trajectories"
    trainer.log = lambda _: None
    rows = trainer.run()
    assert rows[0]["step"] == 0 and rows[-1]["step"] == trainer.total_steps > 0
    assert {"val_loss", "val_visual", "val_proprio", "wall_s"} <= set(rows[-1])
    assert (out / "data" / "manifest.json").is_file() and (out / "model.pt").is_file()
    assert trainer.config.device == "cpu" and trainer.config.seed == 1 and trainer.config.batch_size == 8
    # Defaults: the paper's data set size and an automatic device; the folder names the run.
    monkeypatch.chdir(tmp_path)
    default = make_trainer(task="point_mass-goal", steps=0, obs="pixels", seed=2, out=None, device="auto",
                           progress=False, options={})
    assert default.out_dir == Path("runs") / "dinowm-point_mass-goal-cpu-s2"
    assert default.describe() == "dinowm (cpu, 112 px) on point_mass-goal from 3000 trajectories"
    assert default.collect_config.num_trajectories == 3000 and default.collect_config.steps == 100
    assert default.config.device == "auto"


def test_make_trainer_errors_name_the_bad_value_and_the_accepted_ones(tmp_path):
    def make(task="point_mass-goal", **options):
        return make_trainer(task=task, steps=0, obs="pixels", seed=0, out=str(tmp_path / "run"), device="cpu",
                            progress=False, options=options)

    with pytest.raises(ValueError, match=r"goal tasks \[.*'point_mass-goal'.*\], not 'cartpole-swingup'"):
        make(task="cartpole-swingup")
    with pytest.raises(ValueError, match=r"preset 'huge'; accepted: \['cpu', 'paper', 'tiny'\]"):
        make(preset="huge")
    with pytest.raises(ValueError, match=r"policy 'greedy'; accepted: \['random', 'noisy_planner'\]"):
        make(policy="greedy")
    with pytest.raises(ValueError, match=r"encoder_precision 'float16'"):
        make(encoder_precision="float16")
    with pytest.raises(ValueError, match=r"unknown dinowm training options \['lr'\]; accepted: .*'trajectories'"):
        make(lr=0.1)
    with pytest.raises(ValueError, match="trajectories=0 must be a positive int"):
        make(trajectories=0)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        make(encoder_weights=str(tmp_path / "missing.pth"))
    assert not (tmp_path / "run").exists()


def test_config_errors_name_the_bad_value(dataset, tmp_path):
    with pytest.raises(ValueError, match="'huge'"):
        train_config(dataset, preset="huge")
    with pytest.raises(ValueError, match="depht"):
        train_config(dataset, model_overrides={"depht": 2})
    with pytest.raises(ValueError, match="steps=0"):
        train_config(dataset, steps=0)
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        train_config(dataset, val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        DinoWMTrainer(dataclasses.replace(train_config(dataset), dataset=str(tmp_path / "nowhere")), tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DinoWMTrainer(train_config(dataset, encoder_weights=str(tmp_path / "missing.pth")), tmp_path / "run")
    with pytest.raises(ValueError, match="'cme'"):
        GoalEvalConfig(task="point_mass-goal", planner="cme")
    with pytest.raises(ValueError, match="'first'"):
        GoalEvalConfig(task="point_mass-goal", objective="first")
    with pytest.raises(ValueError, match="oracle_objective='first'"):
        GoalEvalConfig(task="point_mass-goal", oracle_objective="first")
    with pytest.raises(ValueError, match="'cartpole-swingup'"):
        GoalEvalConfig(task="cartpole-swingup")
    with pytest.raises(ValueError, match="num_elites=40"):
        GoalEvalConfig(task="point_mass-goal", num_samples=30, num_elites=40)
    with pytest.raises(ValueError, match="goal_at_rest='yes' must be True or False"):
        GoalEvalConfig(task="point_mass-goal", goal_at_rest="yes")
    with pytest.raises(ValueError, match="proprio_positions=1 must be True or False"):
        GoalEvalConfig(task="point_mass-goal", proprio_positions=1)
    with pytest.raises(ValueError, match=r"alpha=-1\.0 must be a finite number >= 0"):
        GoalEvalConfig(task="point_mass-goal", alpha=-1.0)


def test_alpha_is_named_only_when_it_differs_from_the_default():
    """Results keyed before --alpha existed keep their names; another alpha gets its own."""
    from benchmarks.dinowm_goals import variant_suffix

    base = GoalEvalConfig(task="reacher-pose", objective="all", proprio_positions=True)
    assert base.objective_description == "all, proprio positions"
    assert dataclasses.replace(base, alpha=1.0).objective_description == "all, proprio positions, alpha 1"
    # Without proprio the weight is unused, so it is not described.
    assert dataclasses.replace(base, alpha=1.0, use_proprio=False).objective_description == "all, proprio positions"
    assert variant_suffix("all", False, True, 5000) == "-all-pos-5000steps"
    assert variant_suffix("all", False, True, 5000, alpha=0.1) == "-all-pos-5000steps"
    assert variant_suffix("all", False, True, 15000, alpha=1.0) == "-all-pos-a1-15000steps"


# -- goal-image MPC ------------------------------------------------------------------------


def test_evaluate_goals_runs_dinowm_end_to_end(trained, dataset, tmp_path):
    goals = sample_goals(dataset, count=2, seed=0, offset=4)
    config = GoalEvalConfig.for_dataset(dataset, horizon=2, num_samples=12, num_elites=3, iterations=2, env_steps=4)
    records = evaluate_goals(trained.model, goals, config, reset_seeds=goal_reset_seeds(goals, dataset),
                             frames_dir=tmp_path)
    assert [r.goal for r in records] == [0, 1]
    for record, traj in zip(records, goals.trajectories):
        assert isinstance(record.success, bool) and isinstance(record.reached, bool)
        assert record.success == (record.final_distance < POINT_MASS_THRESHOLD)
        assert record.trajectory == int(traj)
        assert record.env_steps == 4 and record.plan_calls == 2  # frameskip 2: one plan per 2 env steps
        assert record.mean_plan_ms > 0
        # Reset with the trajectory's seed, then set to the start state: the scene matches
        # the data set's start frame exactly (marker included).
        assert record.start_image_diff == 0.0
        assert (tmp_path / f"goal-{record.goal:03d}.png").is_file()
    with pytest.raises(ValueError, match="num_goals=3"):
        evaluate_goals(trained.model, goals, dataclasses.replace(config, num_goals=3))


def test_a_killed_evaluation_resumes_from_the_next_goal(trained, dataset, tmp_path, monkeypatch):
    import json

    from training import goal_mpc

    goals = sample_goals(dataset, count=3, seed=1, offset=4)
    seeds = goal_reset_seeds(goals, dataset)
    config = GoalEvalConfig.for_dataset(dataset, horizon=2, num_samples=12, num_elites=3, iterations=2, env_steps=4)
    resume = tmp_path / "partial.json"
    identity = {"model_sha256": "abc"}
    uninterrupted = evaluate_goals(trained.model, goals, config, reset_seeds=seeds)

    one_goal, ran = goal_mpc._one_goal, []

    def killed_at_goal_2(*args, **kwargs):
        if args[4] == 2:  # k
            raise KeyboardInterrupt
        ran.append(args[4])
        return one_goal(*args, **kwargs)

    monkeypatch.setattr(goal_mpc, "_one_goal", killed_at_goal_2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_goals(trained.model, goals, config, reset_seeds=seeds, resume_file=resume, run_identity=identity)
    assert [r["goal"] for r in json.loads(resume.read_text())["records"]] == [0, 1]

    ran.clear()
    monkeypatch.setattr(goal_mpc, "_one_goal", lambda *a, **k: ran.append(a[4]) or one_goal(*a, **k))
    resumed = evaluate_goals(trained.model, goals, config, reset_seeds=seeds, resume_file=resume,
                             run_identity=identity)
    assert ran == [2]  # goals 0 and 1 came from the file
    strip = [dict(r.as_dict(), wall_s=0, mean_plan_ms=0, max_plan_ms=0) for r in resumed]
    assert strip == [dict(r.as_dict(), wall_s=0, mean_plan_ms=0, max_plan_ms=0) for r in uninterrupted]

    # Another model (or budget) must not reuse those records.
    ran.clear()
    with pytest.warns(UserWarning, match="other settings \\(changed: run\\)"):
        evaluate_goals(trained.model, goals, config, reset_seeds=seeds, resume_file=resume,
                       run_identity={"model_sha256": "def"})
    assert ran == [0, 1, 2]

    # The oracle's settings do not touch DINO-WM's records; DINO-WM's own settings do.
    ran.clear()
    oracle_changed = dataclasses.replace(config, oracle_objective="last", oracle_horizon=7, oracle_threads=2)
    evaluate_goals(trained.model, goals, oracle_changed, reset_seeds=seeds, resume_file=resume,
                   run_identity={"model_sha256": "def"})
    assert ran == []
    with pytest.warns(UserWarning, match="changed: config"):
        evaluate_goals(trained.model, goals, dataclasses.replace(config, alpha=0.5), reset_seeds=seeds,
                       resume_file=resume, run_identity={"model_sha256": "def"})
    assert ran == [0, 1, 2]


def test_the_adapter_feeds_proprio_to_the_model(trained, dataset):
    adapter = GoalConditionedDinoWM(trained.model)
    image = torch.from_numpy(dataset.images_at([0], [2]))
    proprio = dataset.array("proprio")[0, 2]
    goal = dataset.array("proprio")[0, 5]
    adapter.set_proprio(proprio, goal)
    with torch.no_grad():
        expected = trained.model.encode_obs(image, torch.from_numpy(proprio)[None])
        torch.testing.assert_close(adapter.observe(None, None, image), expected)
        torch.testing.assert_close(adapter.encode(image), trained.model.encode_obs(image, torch.from_numpy(goal)[None]))
        assert not torch.allclose(adapter.observe(None, None, image), trained.model.encode_obs(image, None))


def test_goal_at_rest_zeroes_the_goal_velocities_dinowm_is_given(trained, dataset, monkeypatch):
    from training import goal_mpc

    given = []
    set_proprio = GoalConditionedDinoWM.set_proprio
    monkeypatch.setattr(GoalConditionedDinoWM, "set_proprio",
                        lambda self, p, g=None: given.append(np.array(g)) or set_proprio(self, p, g))
    goals = sample_goals(dataset, count=1, seed=0, offset=4)
    goals.goal_proprio[:] = np.array([0.05, -0.04, 0.3, -0.2], dtype=np.float32)  # point_mass: x, y, vx, vy
    config = GoalEvalConfig.for_dataset(dataset, horizon=2, num_samples=12, num_elites=3, iterations=2, env_steps=2)
    evaluate_goals(trained.model, goals, config, reset_seeds=goal_reset_seeds(goals, dataset))
    np.testing.assert_array_equal(given[-1], goals.goal_proprio[0])  # the data's velocities by default
    given.clear()
    evaluate_goals(trained.model, goals, dataclasses.replace(config, goal_at_rest=True),
                   reset_seeds=goal_reset_seeds(goals, dataset))
    np.testing.assert_array_equal(given[-1], np.float32([0.05, -0.04, 0.0, 0.0]))  # same pose, at rest
    assert goals.goal_proprio[0, 2] == np.float32(0.3)  # the GoalSet itself is untouched
    with pytest.raises(ValueError, match="nq=3"):
        goal_mpc.goal_proprio_at_rest(np.zeros(2), nq=3)


def test_proprio_positions_plans_on_the_env_joint_positions_only(trained, dataset, monkeypatch):
    import models.objectives as objectives

    asked = []
    make = objectives.make_goal_objective
    monkeypatch.setattr(objectives, "make_goal_objective",
                        lambda alpha=0.0, mode="last", proprio_dims=None: asked.append(proprio_dims)
                        or make(alpha, mode, proprio_dims))
    goals = sample_goals(dataset, count=1, seed=0, offset=4)
    config = GoalEvalConfig.for_dataset(dataset, horizon=2, num_samples=12, num_elites=3, iterations=2, env_steps=2)
    evaluate_goals(trained.model, goals, config, reset_seeds=goal_reset_seeds(goals, dataset))
    records = evaluate_goals(trained.model, goals, dataclasses.replace(config, proprio_positions=True),
                             reset_seeds=goal_reset_seeds(goals, dataset))
    assert asked == [None, 2]  # DINO-WM's embedding MSE by default; point_mass's nq = 2 (x, y) when asked
    assert len(records) == 1 and np.isfinite(records[0].final_distance)


def far_goal(env, seed: int, shift) -> GoalSet:
    """A goal `shift` metres from the start (random actions barely move the point mass)."""
    from envs.observations import render_chw
    from envs.physics_state import preserved_physics

    obs, _ = env.reset(seed=seed)
    start = env.get_physics_state()
    goal = start.copy()
    goal[1:3] += shift  # mjSTATE_FULLPHYSICS: time, then qpos = (x, y)
    with preserved_physics(env.physics):
        env.set_physics_state(goal)
        goal_image = render_chw(env.physics, env.config.image_size, env.camera)
    zeros = np.zeros((1, 4), dtype=np.float32)
    return GoalSet(start[None], goal[None], obs["observation"][None], goal_image[None], zeros, zeros, None,
                   np.array([seed]), np.array([0]), 0)


def test_the_oracle_reaches_an_easy_goal():
    config = GoalEvalConfig(task="point_mass-goal", num_samples=64, num_elites=8, iterations=3, image_size=28,
                            env_steps=30, oracle_horizon=10)
    env = make_goal_env(config)
    goals = far_goal(env, seed=5, shift=np.array([0.06, -0.05]))
    env.close()
    (record,) = evaluate_goals("oracle", goals, config)
    assert record.start_distance > 2 * POINT_MASS_THRESHOLD  # not solved at the start
    assert record.success and record.final_distance < POINT_MASS_THRESHOLD, record
    assert record.plan_calls == 30  # one plan per agent step


def test_the_start_goal_final_picture_is_written(tmp_path):
    red, green, blue = (np.zeros((3, 28, 28), np.uint8) for _ in range(3))
    red[0], green[1], blue[2] = 255, 255, 255
    path = write_goal_picture(tmp_path / "pics" / "reached.png", red, green, blue)
    import imageio.v2 as imageio

    picture = imageio.imread(path)
    assert picture.shape == (96, 3 * 96 + 2 * 4, 3)  # panels scaled to 96 px, 4 px gaps
    assert picture[48, 48].tolist() == [255, 0, 0]
    assert picture[48, 100 + 48].tolist() == [0, 255, 0]
    assert picture[48, 200 + 48].tolist() == [0, 0, 255]
    assert not list((tmp_path / "pics").glob(".*"))  # no temp file left behind

