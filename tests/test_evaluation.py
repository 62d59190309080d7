"""Episode running, summaries and videos."""

import numpy as np
import pytest

from training import EpisodeRecord, run_episode, summarise, write_video
from training.video import side_by_side


class CountingEnv:
    """Reward 1 per step for actions near +1; success once 3 good steps were taken."""

    def __init__(self, limit: int = 5) -> None:
        self.limit = limit

    def reset(self, seed=None):
        self.steps, self.good = 0, 0
        return np.zeros(2, dtype=np.float32), {"is_success": False}

    def step(self, action):
        self.steps += 1
        self.good += int(action[0] > 0.5)
        info = {"is_success": self.good >= 3}
        return np.full(2, self.steps, dtype=np.float32), float(action[0] > 0.5), False, self.steps >= self.limit, info

    def render(self):
        return np.full((4, 4, 3), 10 * self.steps, dtype=np.uint8)


class ConstantController:
    def __init__(self, value):
        self.value, self.resets, self.seen = value, 0, []

    def reset(self):
        self.resets += 1

    def act(self, obs, goal=None):
        self.seen.append((obs.copy(), goal))
        return np.array([self.value], dtype=np.float32)


def test_run_episode_records_return_success_steps_and_frames():
    controller, frames = ConstantController(1.0), []
    record = run_episode(CountingEnv(), controller, seed=3, episode=2, frames=frames, goal_input=lambda env: "g",
                         goal_frame=lambda env: np.zeros((4, 4, 3), np.uint8))
    assert (record.episode, record.seed, record.episode_return, record.success, record.steps) == (2, 3, 5.0, True, 5)
    assert controller.resets == 1 and all(goal == "g" for _, goal in controller.seen)
    assert len(frames) == 5 and frames[0].shape == (4, 12, 3)  # frame | gap | goal


def test_run_episode_stops_at_max_steps_and_maps_observations():
    controller = ConstantController(0.0)
    record = run_episode(CountingEnv(limit=100), controller, seed=0, max_steps=4, model_input=lambda env, obs: obs + 1)
    assert record.steps == 4 and record.episode_return == 0.0 and record.success is False
    assert np.array_equal(controller.seen[1][0], np.full(2, 2.0))


def test_summarise_ignores_tasks_without_success():
    records = [EpisodeRecord(0, 0, 1.0, None, 5, 2.0), EpisodeRecord(1, 1, 3.0, None, 5, 4.0)]
    summary = summarise(records)
    assert summary["mean_return"] == 2.0 and summary["success_rate"] is None and summary["mean_plan_ms"] == 3.0


def test_write_video_writes_a_gif_atomically(tmp_path):
    frames = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(5)]
    path = write_video(tmp_path / "clip.gif", frames, fps=10)
    import imageio.v2 as imageio

    read = imageio.mimread(path)
    assert len(read) == 5 and not list(tmp_path.glob("*.partial*"))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.gif", [])


def test_side_by_side_puts_a_gap_between_frames():
    joined = side_by_side(np.zeros((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8))
    assert joined.shape == (2, 10, 3) and (joined[:, 3:7] == 255).all()


def test_seeded_sampling_makes_draws_repeatable_and_gives_the_generator_back():
    import torch

    from models.rssm import RSSM, RSSMConfig
    from training.evaluation import seeded_sampling

    model = RSSM(RSSMConfig.tiny("state", (5,), 1))
    obs = torch.randn(3, 5)

    def filtered() -> torch.Tensor:
        return model.observe(None, None, obs)  # samples the posterior (plan_with_samples)

    with seeded_sampling(11, model):
        first = filtered()
    assert model.generator is None  # torch's global one again
    torch.manual_seed(123)  # the global state must not matter inside the block
    with seeded_sampling(11, model):
        again = filtered()
    assert torch.equal(first, again)
    with seeded_sampling(12, model):
        other = filtered()
    assert not torch.equal(first, other)
    assert not torch.equal(filtered(), filtered())  # outside: unseeded draws

    own = torch.Generator().manual_seed(0)
    model.generator = own
    with seeded_sampling(11, model):
        assert model.generator is not own
    assert model.generator is own


def test_seeded_sampling_names_a_sampler_without_a_generator():
    from training.evaluation import seeded_sampling

    with pytest.raises(TypeError, match="sampler 0 .*object.* no `generator`"):
        with seeded_sampling(0, object()):
            pass
