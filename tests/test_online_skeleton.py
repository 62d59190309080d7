"""The shared online-training skeleton (training/online.py) under both families.

`fixtures/trainer_rows.json` holds the train.csv and eval.csv rows of the tiny runs below,
recorded with the trainers as they were before they moved onto the skeleton (each had its
own copy of the loop then), on one CPU thread. The skeleton must reproduce them: the same
losses, returns, update counts and evaluation points. (MPPI amplifies the last bits of a
float sum, so the TOLD rows hold for the thread count and CPU they were recorded with.)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from training.planet_trainer import PlaNetTrainConfig, PlaNetTrainer
from training.told_trainer import TOLDTrainConfig, TOLDTrainer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FIXTURE = Path(__file__).parent / "fixtures" / "trainer_rows.json"
TIMING = {"episode_s", "update_s", "wall_s"}  # wall-clock columns differ from run to run


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def told_config() -> TOLDTrainConfig:
    return TOLDTrainConfig(task="cartpole-swingup", steps=80, size="tiny", seed=3, seed_steps=10, eval_every=40,
                           eval_episodes=2, checkpoint_every=1, batch_size=8, max_episode_steps=10)  # fmt: skip


def planet_config(mode: str) -> PlaNetTrainConfig:
    return PlaNetTrainConfig(
        task="cartpole-swingup", steps=320, obs="state", model="tiny", seed=2, mode=mode, seed_episodes=2,
        collect_interval=5, batch_size=8, chunk_length=8, plan_samples=20, plan_iterations=2, eval_every=160,
        eval_episodes=2, checkpoint_every=1, picture_every=0, max_episode_steps=10,
    )  # fmt: skip


def assert_same_rows(got: list[dict[str, str]], want: list[dict[str, str]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)  # the same columns in the same order
        for key in w:
            if key == "returns":
                assert [float(x) for x in g[key].split()] == pytest.approx([float(x) for x in w[key].split()], abs=0.11)
            elif w[key] == "" or g[key] == "":
                assert g[key] == w[key], key
            else:
                a, b = float(g[key]), float(w[key])
                assert math.isclose(a, b, rel_tol=1e-4, abs_tol=2e-5), f"{key}: {a} vs {b} (recorded)"


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", ["told", "planner", "planner+actor"])
def test_the_skeleton_reproduces_the_rows_of_the_trainers_before_it(tmp_path, family, one_thread):
    want = json.loads(FIXTURE.read_text())[family]
    if family == "told":
        trainer = TOLDTrainer(told_config(), tmp_path, device="cpu", progress=False, log=lambda _: None)
    else:
        trainer = PlaNetTrainer(planet_config(family), tmp_path, device="cpu", progress=False, log=lambda _: None)
    trainer.run()
    assert trainer.updates == want["updates"]
    assert_same_rows(read_rows(tmp_path / "train.csv"), want["train"])
    assert_same_rows(read_rows(tmp_path / "eval.csv"), want["eval"])
