"""benchmarks/planet_more_updates.py: offline extra updates on a finished run's copy."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny actor-mode run trained to its end: 4 episodes of 10 agent steps, 2 updates each after the seed one."""
    from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer

    run = tmp_path_factory.mktemp("runs") / "rssm-cartpole-swingup-state-actor-s0"
    config = PlaNetTrainConfig(task="cartpole-swingup", steps=320, obs="state", model="tiny", seed_episodes=1,
                               mode="actor", collect_interval=2, batch_size=4, chunk_length=8, eval_every=160,
                               eval_episodes=1, eval_at_start=False, picture_every=0, max_episode_steps=10)  # fmt: skip
    PlaNetTrainer(config, run, progress=False, log=lambda _: None).run()
    return run


def _rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_more_updates_train_a_copy_on_the_same_data_and_resume_from_the_last_row(finished_run, tmp_path, capsys):
    from benchmarks import planet_more_updates as more

    source_digest = _digest(finished_run / "checkpoint.pt")
    before = torch.load(finished_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    out, results = tmp_path / "copy", tmp_path / "results"
    common = ["--run", str(finished_run), "--out", str(out), "--eval-every", "2", "--eval-episodes", "1",
              "--results-dir", str(results)]  # fmt: skip
    more.main([*common, "--updates", "4"])

    assert _digest(finished_run / "checkpoint.pt") == source_digest  # the run itself is only read
    rows = _rows(out / "more_updates.csv")
    assert [int(r["extra_updates"]) for r in rows] == [0, 2, 4]
    assert [int(r["updates"]) for r in rows] == [before["updates"] + k for k in (0, 2, 4)]
    assert rows[0]["value_mean"] == "" and all(float(r["value_mean"]) == float(r["value_mean"]) for r in rows[1:])
    # Row 0 scores the run's own final weights on its last evaluation's seeds, with the
    # same seeded draws: exactly the run's last evaluation, in another process state.
    last_eval = _rows(finished_run / "eval.csv")[-1]
    assert float(rows[0]["mean_return"]) == round(float(last_eval["mean_return"]), 2)
    assert _rows(results / f"{finished_run.name}.csv") == rows
    summary = json.loads((results / f"{finished_run.name}.json").read_text())
    assert summary["extra_updates"] == summary["target_extra_updates"] == 4
    assert [r["extra_updates"] for r in summary["rows"]] == [0, 2, 4]

    after = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert after["step"] == before["step"] and after["episode"] == before["episode"]  # no new episodes
    assert after["updates"] == before["updates"] + 4
    changed = [not torch.equal(after["model_state"]["state_dict"][k], v) for k, v in before["model_state"]["state_dict"].items()
               if v.is_floating_point()]  # fmt: skip
    assert any(changed)  # the world model did train

    # A later call (a resume after a kill, or a longer target) goes on from the last row.
    capsys.readouterr()
    more.main([*common, "--updates", "6"])
    rows = _rows(out / "more_updates.csv")
    assert [int(r["extra_updates"]) for r in rows] == [0, 2, 4, 6]
    summary = json.loads((results / f"{finished_run.name}.json").read_text())
    assert [r["extra_updates"] for r in summary["rows"]] == [0, 2, 4, 6]  # earlier rows read back as numbers
    assert all(isinstance(r["mean_return"], float) for r in summary["rows"])
    assert "+0 updates" not in capsys.readouterr().out  # row 0 is not evaluated twice


def test_more_updates_refuse_bad_arguments(finished_run, tmp_path):
    from benchmarks import planet_more_updates as more

    with pytest.raises(SystemExit, match="--updates must be a positive integer, got 0"):
        more.main(["--run", str(finished_run), "--updates", "0", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="has no checkpoint.pt"):
        more.main(["--run", str(tmp_path / "nothing"), "--updates", "2", "--out", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_more_updates_refuse_a_copy_of_another_run(finished_run, tmp_path):
    import shutil

    from benchmarks import planet_more_updates as more

    other = tmp_path / "other-run"
    shutil.copytree(finished_run, other)
    out = tmp_path / "copy"
    more.copy_run(finished_run, out)
    assert json.loads((out / more.BASE_FILE).read_text())["source"] == str(finished_run)
    with pytest.raises(SystemExit, match="is a copy of .*, not of .*other-run"):
        more.main(["--run", str(other), "--updates", "2", "--out", str(out)])


def test_a_job_killed_before_its_target_leaves_a_current_summary(finished_run, tmp_path, monkeypatch):
    from benchmarks import planet_more_updates as more
    from training.planet_trainer import PlaNetTrainer

    original, calls = PlaNetTrainer._train_interval, {"n": 0}

    def dying_interval(self, count):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, count)

    monkeypatch.setattr(PlaNetTrainer, "_train_interval", dying_interval)
    results = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        more.main(["--run", str(finished_run), "--out", str(tmp_path / "copy"), "--updates", "4", "--eval-every", "2",
                   "--eval-episodes", "1", "--results-dir", str(results)])  # fmt: skip
    summary = json.loads((results / f"{finished_run.name}.json").read_text())
    assert summary["extra_updates"] == 2 and summary["target_extra_updates"] == 4
    assert [r["extra_updates"] for r in summary["rows"]] == [0, 2]
