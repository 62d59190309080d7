"""benchmarks/rssm_acting_modes.py: one trained run acting three ways, resumable by episode;
benchmarks/rssm_plan_cost.py: what those modes' CEM step costs, two checkouts side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import rssm_acting_modes, rssm_plan_cost
from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def tiny_run(path: Path, mode: str) -> None:
    config = PlaNetTrainConfig(
        task="cartpole-swingup", steps=160, obs="state", model="tiny", mode=mode, seed_episodes=1,
        collect_interval=2, batch_size=4, chunk_length=4, plan_samples=20, plan_iterations=1, eval_every=10_000,
        eval_at_start=False, checkpoint_every=1, picture_every=0, max_episode_steps=10, imagine_starts=8,
    )  # fmt: skip
    PlaNetTrainer(config, path, progress=False, log=lambda _: None).run()


def test_three_modes_on_the_same_episodes_then_a_rerun_runs_nothing(tmp_path, monkeypatch):
    run = tmp_path / "rssm-cartpole-swingup-state-actor-s0"
    tiny_run(run, "actor")
    results = tmp_path / "results"
    argv = ["--run", str(run), "--episodes", "2", "--max-steps", "3", "--results-dir", str(results)]
    assert rssm_acting_modes.main(argv) == 0
    report = json.loads((results / f"rssm_acting_modes-{run.name}-160-max3.json").read_text())
    assert report["seeds"] == [1000, 1001] and report["env_steps"] == 160
    assert set(report["modes"]) == {"actor", "planner", "planner+actor"}
    for mode in report["modes"].values():
        assert mode["episodes"] == 2 and len(mode["returns"]) == 2 and mode["mean"] is not None
    assert report["best_mean"] == max(m["mean"] for m in report["modes"].values())
    assert (run / "acting-modes-160" / "rssm-cartpole-swingup" / "behavior.pt").is_file()
    assert (results / f"rssm_acting_modes-{run.name}-160-max3.md").read_text().count("(best)") == 1
    assert (run / "acting-modes-160" / "planner_plus_actor-float32-max3" / "seed-1001" / "summary.json").is_file()

    import run_planning

    def no_more_episodes(argv):
        raise AssertionError(f"episode run again: {argv}")

    monkeypatch.setattr(run_planning, "main", no_more_episodes)
    assert rssm_acting_modes.main(argv) == 0  # every episode is on disk
    with pytest.raises(AssertionError, match="episode run again"):  # other settings are other episodes
        rssm_acting_modes.main([*argv, "--precision", "bfloat16"])


def test_modes_run_by_separate_processes_share_one_report(tmp_path):
    run = tmp_path / "rssm-cartpole-swingup-state-actor-s0"
    tiny_run(run, "actor")
    results = tmp_path / "results"
    argv = ["--run", str(run), "--episodes", "2", "--max-steps", "2", "--results-dir", str(results)]
    path = results / f"rssm_acting_modes-{run.name}-160-max2.json"
    assert rssm_acting_modes.main([*argv, "--modes", "planner"]) == 0
    assert set(json.loads(path.read_text())["modes"]) == {"planner"}
    assert rssm_acting_modes.main([*argv, "--modes", "actor", "--episodes", "1"]) == 0
    report = json.loads(path.read_text())
    # The planner's episodes, run by the other call, are in this call's report (on the
    # seeds this call asks for), in the modes' usual order.
    assert list(report["modes"]) == ["actor", "planner"] and report["seeds"] == [1000]
    assert report["modes"]["planner"]["episodes"] == 1 and report["modes"]["actor"]["episodes"] == 1
    # Episodes run under other settings are not mixed in.
    other = ["--run", str(run), "--episodes", "1", "--max-steps", "1", "--results-dir", str(results)]
    assert rssm_acting_modes.main([*other, "--modes", "actor"]) == 0
    assert set(json.loads((results / f"rssm_acting_modes-{run.name}-160-max1.json").read_text())["modes"]) == {"actor"}


def test_a_run_without_an_actor_is_refused(tmp_path):
    run = tmp_path / "planner-run"
    tiny_run(run, "planner")
    with pytest.raises(SystemExit, match="trained no actor-critic"):
        rssm_acting_modes.main(["--run", str(run), "--results-dir", str(tmp_path)])


def test_the_plan_cost_of_two_checkouts_is_measured_and_a_wrong_folder_is_named(tmp_path):
    run = tmp_path / "rssm-cartpole-swingup-state-actor-s0"
    tiny_run(run, "actor")
    results = tmp_path / "results"
    # This checkout against itself: the comparison's plumbing, not a speed claim.
    rssm_plan_cost.main(["--run", str(run), "--baseline", str(rssm_plan_cost.ROOT), "--steps", "1", "--rounds", "1",
                         "--results-dir", str(results)])  # fmt: skip
    report = json.loads((results / f"rssm_plan_cost-{run.name}-float32.json").read_text())
    assert report["planner"]["num_samples"] == 1000 and report["model_env_steps"] == 160
    assert all(len(ms) == 1 and ms[0] > 0 for ms in report["median_ms_per_round"].values()) and report["speedup"] > 0
    with pytest.raises(SystemExit, match=f"--baseline {tmp_path}: no benchmarks/planet_learning.py there"):
        rssm_plan_cost.main(["--run", str(run), "--baseline", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"--run {tmp_path}: no checkpoint.pt there"):
        rssm_plan_cost.main(["--run", str(tmp_path), "--baseline", str(rssm_plan_cost.ROOT)])
    with pytest.raises(SystemExit, match="--rounds 0 must be at least 1"):
        rssm_plan_cost.main(["--run", str(run), "--baseline", str(rssm_plan_cost.ROOT), "--rounds", "0"])
