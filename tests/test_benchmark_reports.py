"""The benchmark reports (TOLD, PlaNet) keep results whose run folder is gone."""

from __future__ import annotations

import argparse
import csv
import json

import pytest

from benchmarks import told_learning


@pytest.fixture
def results_without_runs(tmp_path, monkeypatch):
    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    monkeypatch.setattr(told_learning, "RESULTS", results)
    monkeypatch.setattr(told_learning, "RUNS", runs)
    earlier = {
        "machine": {"cpu": "the earlier machine"},
        "tasks": {"cartpole-swingup": {
            "published_100k": 839.0, "latest_return": 1.0, "return_100k": 1.0, "snapshots_not_evaluated": [20000, 30000],
            "env_steps": 100000, "wall_h": 7.3, "config": {"task": "cartpole-swingup"},
        }},
    }  # fmt: skip
    (results / "told_learning.json").write_text(json.dumps(earlier))
    with (results / "told_learning.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "env_step", "mean_return", "std_return", "returns", "wall_s"])
        writer.writerow(["cartpole-swingup", 100000, 827.3, 0.4, "827.3 827.3", 26453.1])
        writer.writerow(["cartpole-swingup", 10000, 191.9, 1.9, "191.9 191.9", 2476.4])
    return results


def test_a_task_without_its_run_folder_keeps_its_results_and_marks_unevaluated_models(results_without_runs, capsys):
    told_learning.report(argparse.Namespace(seed=0))
    out = json.loads((results_without_runs / "told_learning.json").read_text())["tasks"]["cartpole-swingup"]
    assert out["return_100k"] == 827.3 and out["latest_eval_env_step"] == 100000  # recomputed from the rows
    assert out["fraction_of_published"] == round(827.3 / 839, 3)
    assert out["snapshots_lost"] == [20000, 30000] and out["snapshots_not_evaluated"] == []
    assert out["machine"] == {"cpu": "the earlier machine"} and out["wall_h"] == 7.3
    table = (results_without_runs / "told_learning.md").read_text()
    assert "| cartpole-swingup | 192 +- 2 | - | - | - |" in table
    assert "kept the earlier report's results" in capsys.readouterr().out

    told_learning.report(argparse.Namespace(seed=0))  # a second report keeps them the same
    again = json.loads((results_without_runs / "told_learning.json").read_text())["tasks"]["cartpole-swingup"]
    assert again == out


def test_report_with_nothing_to_report_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(told_learning, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(told_learning, "RUNS", tmp_path / "runs")
    with pytest.raises(SystemExit, match="no runs under"):
        told_learning.report(argparse.Namespace(seed=0))


def test_the_planet_report_keeps_a_state_run_whose_folder_is_gone(tmp_path, capsys):
    from benchmarks import planet_learning

    results = tmp_path / "results"
    results.mkdir()
    earlier = {
        "machine": {"cpu": "the earlier machine"},
        "tasks": {"cartpole-swingup": {"modes": {"actor": {
            "latest_env_step": 20000, "latest_return": 1.0, "return_100k": None, "run": "rssm-cartpole-swingup-state-actor-s0",
            "env_steps": 45000, "wall_h": 3.3, "precision": "bfloat16", "imagine_starts": 512, "config": {"mode": "actor"},
        }}, "pixels": {}}},
    }  # fmt: skip
    (results / "planet_learning.json").write_text(json.dumps(earlier))
    with (results / "planet_learning.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "obs", "mode", "env_step", "mean_return", "std_return", "returns", "wall_s"])
        writer.writerow(["cartpole-swingup", "state", "actor", 20000, 239.3, 21.2, "239.3", 5380.8])
        writer.writerow(["cartpole-swingup", "state", "actor", 10000, 126.2, 2.0, "126.2", 1654.7])
    args = argparse.Namespace(runs_dir=str(tmp_path / "runs"), results_dir=str(results), seed=0)

    planet_learning.report(args)
    out = json.loads((results / "planet_learning.json").read_text())["tasks"]["cartpole-swingup"]["modes"]["actor"]
    assert out["latest_env_step"] == 20000 and out["latest_return"] == 239.3  # recomputed from the rows
    assert out["machine"] == {"cpu": "the earlier machine"} and out["precision"] == "bfloat16"
    assert out["env_steps"] == 45000 and out["config"] == {"mode": "actor"}
    with (results / "planet_learning.csv").open() as f:
        assert [int(r["env_step"]) for r in csv.DictReader(f)] == [10000, 20000]
    assert "kept the earlier report's results" in capsys.readouterr().out
    planet_learning.report(args)  # and again: nothing drifts
    assert json.loads((results / "planet_learning.json").read_text())["tasks"]["cartpole-swingup"]["modes"]["actor"] == out


@pytest.mark.parametrize("mode", ["planner", "actor", "planner+actor"])
def test_the_dreamer_recipe_keeps_dreamerv3s_train_ratio_and_builds_a_valid_run(mode):
    from benchmarks import planet_learning
    from training.planet_trainer import PlaNetTrainConfig

    settings = planet_learning.recipe_settings("dreamer", mode)
    config = PlaNetTrainConfig(task="cartpole-swingup", obs="state", mode=mode, steps=100_000, **settings)
    agent_steps_per_episode = 1000 // config.action_repeat
    replayed_per_agent_step = config.collect_interval * config.batch_size * config.chunk_length / agent_steps_per_episode
    assert replayed_per_agent_step == 512 and config.action_repeat == 2 and config.model == "dreamerv3"
    assert config.plan_value == (mode == "planner+actor") and config.behavior == "dreamerv3"
    assert (config.exploration_noise == 0.0) == (mode == "actor")  # the actor explores by sampling
    assert planet_learning.recipe_settings("planet", mode) == {}  # PlaNet's: the trainer's defaults
    assert planet_learning.recipe_settings("planet", mode, action_repeat=4) == {"action_repeat": 4}
    four = planet_learning.recipe_settings("dreamer", mode, action_repeat=4)  # another repeat keeps the ratio
    assert four["action_repeat"] == 4 and four["collect_interval"] * 16 * 64 / 250 == 512
    with pytest.raises(ValueError, match=r"recipe='dreamerv3' is not one of \('planet', 'dreamer'\)"):
        planet_learning.recipe_settings("dreamerv3", mode)


def test_the_planet_report_keeps_recipes_apart(tmp_path):
    from benchmarks import planet_learning

    runs = tmp_path / "runs"
    assert planet_learning.run_dir(runs, "reacher-easy", "state", "actor", 0).name == "rssm-reacher-easy-state-actor-s0"
    assert planet_learning.run_dir(runs, "reacher-easy", "state", "actor", 0, "dreamer").name == (
        "rssm-reacher-easy-state-actor-dreamer-s0"
    )
    results = tmp_path / "results"
    results.mkdir()
    entry = {"latest_env_step": 10000, "latest_return": 0.0, "return_100k": None, "config": {}}
    earlier = {"tasks": {"reacher-easy": {"pixels": {}, "modes": {
        "actor": {**entry, "run": "rssm-reacher-easy-state-actor-s0"},
        "actor (dreamer)": {**entry, "run": "rssm-reacher-easy-state-actor-dreamer-s0", "mode": "actor",
                            "recipe": "dreamer"},
    }}}}  # fmt: skip
    (results / "planet_learning.json").write_text(json.dumps(earlier))
    with (results / "planet_learning.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "obs", "mode", "env_step", "mean_return", "std_return", "returns", "wall_s", "recipe"])
        writer.writerow(["reacher-easy", "state", "actor", 10000, 100.0, 1.0, "100", 10.0, "planet"])
        writer.writerow(["reacher-easy", "state", "actor", 10000, 900.0, 1.0, "900", 10.0, "dreamer"])
        writer.writerow(["reacher-easy", "state", "actor", 100000, 880.0, 1.0, "880", 90.0, "dreamer"])

    planet_learning.report(argparse.Namespace(runs_dir=str(runs), results_dir=str(results), seed=0))
    task = json.loads((results / "planet_learning.json").read_text())["tasks"]["reacher-easy"]
    assert task["modes"]["actor"]["latest_return"] == 100.0 and task["modes"]["actor"]["recipe"] == "planet"
    assert task["modes"]["actor (dreamer)"]["latest_return"] == 880.0
    assert task["best_mode_100k"] == "actor (dreamer)" and task["meets_dreamerv3"] is True


def test_plan_time_and_export_read_the_model_from_the_checkpoint_alone(tmp_path):
    import torch

    from benchmarks import planet_learning
    from models.behavior import ActorCritic
    from models.rssm import RSSM
    from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer

    run = tmp_path / "rssm-cartpole-swingup-state-planner+actor-s0"
    config = PlaNetTrainConfig(task="cartpole-swingup", steps=160, obs="state", model="tiny", seed_episodes=1,
                               mode="planner+actor",
                               collect_interval=2, batch_size=4, chunk_length=8, plan_samples=20, plan_iterations=2,
                               eval_at_start=False, eval_episodes=1, picture_every=0, max_episode_steps=10)  # fmt: skip
    trainer = PlaNetTrainer(config, run, progress=False, log=lambda _: None)
    trainer.run()
    for name in ("model.pt", "behavior.pt"):
        (run / name).unlink()  # a folder holding checkpoint.pt alone
    args = argparse.Namespace(run=str(run), steps=2, warmup=0, precision="float32", seed=0, threads=0,
                              results_dir=str(tmp_path / "results"), no_progress=True)  # fmt: skip
    planet_learning.plan_time(args)
    entry = json.loads((tmp_path / "results" / "planet_learning.json").read_text())["plan_time"][run.name]
    assert entry["model_env_steps"] == 160 and entry["steps_timed"] == 2 and entry["median_ms"] > 0
    assert entry["planner"]["num_samples"] == 1000 and entry["planner"]["iterations"] == 10  # PlaNet's preset
    with pytest.raises(SystemExit, match="has no checkpoint.pt"):
        planet_learning.plan_time(argparse.Namespace(**{**vars(args), "run": str(tmp_path / "nothing")}))

    planet_learning.export(argparse.Namespace(run=str(run)))  # what run_planning.py acts from
    model, ac = RSSM.load(run / "model.pt"), ActorCritic.load(run / "behavior.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), trainer.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ac.actor.parameters(), trainer.behavior.actor.parameters()))
    assert "optimizers" not in torch.load(run / "behavior.pt", weights_only=True)


def test_rssm_run_folders_name_how_the_model_reads_joint_angles():
    from pathlib import Path

    from benchmarks import planet_learning

    assert planet_learning.reads_sincos("reacher-easy", "state", raw_angles=False)
    assert not planet_learning.reads_sincos("reacher-easy", "state", raw_angles=True)
    assert not planet_learning.reads_sincos("reacher-easy", "pixels", raw_angles=False)
    assert not planet_learning.reads_sincos("cartpole-swingup", "state", raw_angles=False)  # no angle entries
    runs = Path("runs")
    assert planet_learning.run_dir(runs, "reacher-easy", "state", "actor", 0, "dreamer", sincos=True).name == (
        "rssm-reacher-easy-state-actor-dreamer-sincos-s0")
    assert planet_learning.run_dir(runs, "reacher-easy", "state", "planner", 0).name == "rssm-reacher-easy-state-planner-s0"
