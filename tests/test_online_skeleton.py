"""The shared online-training skeleton (training/online.py) under both families.

`fixtures/trainer_rows.json` holds the train.csv and eval.csv rows of the tiny runs below,
recorded with the trainers as they were before they moved onto the skeleton (each had its
own copy of the loop then), on one CPU thread. The skeleton must reproduce them: the same
losses, returns, update counts and evaluation points. (MPPI amplifies the last bits of a
float sum, so the TOLD rows hold for the thread count and CPU they were recorded with; the
fixture holds the TOLD rows of each CPU they were recorded on, each by the trainer before
the skeleton, and a run must reproduce one of them.)
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
    recordings = [want, *want.get("on_other_cpus", [])]
    failures = []
    for recorded in recordings:
        try:
            assert trainer.updates == recorded["updates"]
            assert_same_rows(read_rows(tmp_path / "train.csv"), recorded["train"])
            assert_same_rows(read_rows(tmp_path / "eval.csv"), recorded["eval"])
            return
        except AssertionError as error:
            failures.append(f"{recorded.get('cpu', 'the first recording')}: {error}")
    pytest.fail("the rows match no recording:\n" + "\n".join(failures))


# -- the command line's factories ------------------------------------------------------------


def test_told_make_trainer_applies_the_options_and_names_a_bad_one(tmp_path, monkeypatch):
    from training.told_trainer import make_trainer

    monkeypatch.chdir(tmp_path)
    options = {"size": "tiny", "seed_steps": 7, "eval_every": 40, "eval_episodes": 2, "checkpoint_every": 3,
               "plan_iterations": 2, "batch_size": 8, "max_episode_steps": 10}  # fmt: skip
    trainer = make_trainer(task="cartpole-balance", steps=60, obs="state", seed=4, out=None, device="cpu",
                           progress=False, options=options)  # fmt: skip
    assert isinstance(trainer, TOLDTrainer)
    assert {k: getattr(trainer.config, k) for k in options} == options
    assert (trainer.config.task, trainer.config.steps, trainer.config.seed) == ("cartpole-balance", 60, 4)
    assert trainer.out_dir == Path("runs/told-cartpole-balance-state-s4") and trainer.out_dir.is_dir()
    assert trainer.seed_steps == 7 and trainer.agent.planner.config.iterations == 2
    assert trainer.describe() == "told (tiny, state) on cartpole-balance for 60 env steps (action repeat 2)"
    default = make_trainer(task="cartpole-swingup", steps=100, obs="state", seed=0, out=str(tmp_path / "d"),
                           device="auto", progress=False, options={})  # fmt: skip
    assert (default.config.size, default.config.batch_size, default.config.eval_every) == ("1M", 256, 10_000)
    assert default.out_dir == tmp_path / "d"

    common = dict(steps=60, obs="state", seed=0, out=str(tmp_path / "bad"), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"does not take the option\(s\) \['chunk_length'\]; accepted: \[.*'size'"):
        make_trainer(task="cartpole-swingup", options={"chunk_length": 8}, **common)
    with pytest.raises(ValueError, match=r"size='2M' is not one of \('tiny', '1M', '5M'\)"):
        make_trainer(task="cartpole-swingup", options={"size": "2M"}, **common)
    with pytest.raises(ValueError, match=r"batch_size=0 must be an int >= 1"):
        make_trainer(task="cartpole-swingup", options={"batch_size": 0}, **common)
    with pytest.raises(ValueError, match=r"unknown task 'cartpole-swingupp'.*cartpole-swingup"):
        make_trainer(task="cartpole-swingupp", options={}, **common)
    with pytest.raises(ValueError, match=r"obs='rgb' is not one of \('state', 'pixels'\)"):
        make_trainer(task="cartpole-swingup", options={}, **{**common, "obs": "rgb"})


def test_rssm_make_trainer_applies_the_recipe_and_the_options(tmp_path, monkeypatch):
    from training.planet_trainer import make_trainer

    monkeypatch.chdir(tmp_path)
    options = {"preset": "tiny", "mode": "planner+actor", "recipe": "dreamer", "plan_samples": 20, "plan_iterations": 2,
               "batch_size": 4, "chunk_length": 8, "collect_interval": 3, "eval_every": 80, "eval_episodes": 1,
               "checkpoint_every": 2, "max_episode_steps": 10}  # fmt: skip
    trainer = make_trainer(task="cartpole-swingup", steps=80, obs="state", seed=1, out=None, device="cpu",
                           progress=False, options=options)  # fmt: skip
    c = trainer.config
    assert isinstance(trainer, PlaNetTrainer) and trainer.out_dir == Path("runs/rssm-cartpole-swingup-state-dreamer-s1")
    assert (c.model, c.mode, c.batch_size, c.chunk_length, c.collect_interval) == ("tiny", "planner+actor", 4, 8, 3)
    assert (c.plan_samples, c.plan_iterations, c.eval_every, c.eval_episodes, c.checkpoint_every) == (20, 2, 80, 1, 2)
    assert (c.behavior, c.action_repeat, c.lr, c.plan_value) == ("dreamerv3", 2, 1e-4, True)  # the dreamer recipe's
    assert trainer.describe() == ("rssm (dreamer recipe, tiny, state, planner+actor) on cartpole-swingup for 80 env "
                                  "steps (action repeat 2)")  # fmt: skip
    planet = make_trainer(task="cartpole-swingup", steps=80, obs="state", seed=1, out=None, device="cpu",
                          progress=False, options={"preset": "tiny", "chunk_length": 8})  # fmt: skip
    assert planet.out_dir == Path("runs/rssm-cartpole-swingup-state-s1")  # the planet recipe has no tag
    assert (planet.config.mode, planet.config.batch_size, planet.action_repeat) == ("planner", 50, 8)

    common = dict(task="cartpole-swingup", steps=80, obs="state", seed=0, out=str(tmp_path / "bad"), device="cpu",
                  progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"preset='huge' is not one of \('planet', 'dreamerv2', 'dreamerv3', 'tiny'\)"):
        make_trainer(options={"preset": "huge"}, **common)
    with pytest.raises(ValueError, match=r"recipe='dreamerv9' is not one of \('planet', 'dreamer'\)"):
        make_trainer(options={"recipe": "dreamerv9"}, **common)
    with pytest.raises(ValueError, match=r"does not take the option\(s\) \['size'\]; accepted: \[.*'preset'"):
        make_trainer(options={"size": "tiny"}, **common)
    with pytest.raises(ValueError, match=r"unknown task 'walker-runn'"):
        make_trainer(options={}, **{**common, "task": "walker-runn"})


# -- checkpoint headers and earlier layouts -------------------------------------------------


def _told(path: Path, steps: int, **kwargs) -> TOLDTrainer:
    config = TOLDTrainConfig(task="cartpole-swingup", steps=steps, size="tiny", seed_steps=10, eval_every=1000,
                             eval_episodes=1, checkpoint_every=1, batch_size=8, max_episode_steps=10)  # fmt: skip
    return TOLDTrainer(config, path, device="cpu", progress=False, **kwargs)


def _planet(path: Path, steps: int, **kwargs) -> PlaNetTrainer:
    config = PlaNetTrainConfig(task="cartpole-swingup", steps=steps, obs="state", model="tiny", mode="planner+actor",
                               seed_episodes=1, collect_interval=2, batch_size=4, chunk_length=8, plan_samples=20,
                               plan_iterations=1, eval_every=10_000, eval_episodes=1, checkpoint_every=1,
                               picture_every=0, max_episode_steps=10)  # fmt: skip
    return PlaNetTrainer(config, path, device="cpu", progress=False, **kwargs)


@pytest.mark.parametrize(("family", "build", "steps"), [("told", _told, 40), ("rssm", _planet, 160)])
def test_a_training_checkpoint_names_its_model(tmp_path, family, build, steps):
    from models.checkpoints import read_family

    build(tmp_path, steps // 2, log=lambda _: None).run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert (state["model"], state["kind"], state["format_version"]) == (family, "training", 2)
    assert "machine_segments" not in state and "optimizer_restarts" not in state
    assert read_family(tmp_path / "checkpoint.pt")[0] == family
    model_file = torch.load(tmp_path / "model.pt", weights_only=True)
    assert model_file["model"] == family and isinstance(model_file["format_version"], int)


def _as_earlier_layout(family: str, state: dict) -> dict:
    """A checkpoint as the trainers wrote it before the header."""
    old = {k: v for k, v in state.items() if k not in ("format_version", "model", "kind", "torch_rng_state",
                                                       "cuda_rng_state")}  # fmt: skip
    old["version"] = 1
    if family == "rssm":
        old["model"] = old.pop("model_state")
        old["machine_segments"] = [{"where": "cpu: A", "from_env_step": 0, "wall_at_start": 0.0,
                                    "timers_at_start": {}}]  # fmt: skip
        old["optimizer_restarts"] = []
    return old


@pytest.mark.parametrize(("family", "build", "steps"), [("told", _told, 40), ("rssm", _planet, 160)])
def test_a_checkpoint_of_the_earlier_layout_resumes(tmp_path, family, build, steps):
    build(tmp_path, steps // 2, log=lambda _: None).run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save(_as_earlier_layout(family, state), tmp_path / "checkpoint.pt")
    messages: list[str] = []
    resumed = build(tmp_path, steps, log=messages.append)
    assert resumed.resumed and resumed.step == state["step"] and resumed.updates == state["updates"]
    assert not any("optimiser" in m for m in messages)
    resumed.run()
    after = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert after["model"] == family and after["step"] * resumed.action_repeat == steps
    assert "machine_segments" not in after


def test_a_checkpoint_without_optimiser_state_resumes_with_fresh_moments_and_a_note(tmp_path):
    _planet(tmp_path, 80, log=lambda _: None).run()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["optimizer"] = None
    state["behavior"] = {k: v for k, v in state["behavior"].items() if k != "optimizers"}
    torch.save(state, tmp_path / "checkpoint.pt")
    messages: list[str] = []
    resumed = _planet(tmp_path, 160, log=messages.append)
    assert resumed.resumed and any("no optimiser state" in m for m in messages)
    resumed.run()
    assert resumed.updates == state["updates"] + 2


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    _told(tmp_path, 20, log=lambda _: None).run()
    with pytest.raises(ValueError, match=r"is not a rssm training checkpoint.*model='told'.*use another --out folder"):
        _planet(tmp_path, 160, log=lambda _: None)
