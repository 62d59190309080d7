"""Offline DINO-WM data: collection and resume (training/collection.py), the data set and its
loading errors and evaluation goals (training/datasets.py), the feature cache
(training/feature_cache.py) and training windows (training/windows.py). Tiny images, short trajectories."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

import envs
from models.dino_wm import TINY_ENCODER, DinoWM, DinoWMConfig
from models.dinov2 import build_dinov2
from training import collection, datasets
from training.collection import CollectConfig, collect
from training.datasets import OfflineDataset, sample_goals, sample_unmet_goals, write_dataset
from training.feature_cache import EncoderIdentity, cache_features, load_cached_features
from training.windows import WindowSampler

SHARD_KEYS = ("images", "actions", "proprio", "states", "achieved_goal", "desired_goal", "seeds")


def tiny_model(seed: int, **overrides) -> DinoWM:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random encoder is intended here
        encoder = build_dinov2(TINY_ENCODER, None, device="cpu")
    return DinoWM(DinoWMConfig.tiny(2, 2, **overrides), encoder=encoder).eval()


def pool_encoder(images: torch.Tensor) -> torch.Tensor:
    """Deterministic stand-in encoder: mean of each 14 x 14 patch -> [M, P, 3]."""
    x = images.float()
    m, c, h, w = x.shape
    x = x.view(m, c, h // 14, 14, w // 14, 14).mean(dim=(3, 5))  # [M, 3, g, g]
    return x.flatten(2).transpose(1, 2)


POOL = EncoderIdentity(name="pool", image_size=28, weights="none")


def hand_made(root, n: int = 3, t: int = 12, size: int = 28, shard_size: int = 2) -> OfflineDataset:
    """Values that encode where they come from: pixel = 10 t + i, action = +-(1000 i + t),
    proprio = [i, t], state = [i, t, 0]."""
    i = np.arange(n)[:, None]
    steps = np.arange(t + 1)[None, :]
    images = np.broadcast_to((10 * steps + i).astype(np.uint8)[:, :, None, None, None], (n, t + 1, 3, size, size))
    code = (1000 * i + steps[:, :t]).astype(np.float32)  # [n, t]
    actions = np.stack([code, -code], axis=-1)
    proprio = np.stack(np.broadcast_arrays(i, steps), axis=-1).astype(np.float32)
    states = np.concatenate([proprio, np.zeros((n, t + 1, 1))], axis=-1)
    return write_dataset(root, {"images": images.copy(), "actions": actions, "proprio": proprio, "states": states},
                         shard_size=shard_size)


@pytest.fixture(scope="module")
def reacher(tmp_path_factory):
    config = CollectConfig(task="reacher-pose", num_trajectories=3, steps=30, image_size=28, shard_size=2, seed=7)
    return collect(config, tmp_path_factory.mktemp("reacher"), progress=False)


# -- collection ---------------------------------------------------------------------------


def test_collect_writes_documented_shards_and_manifest(reacher):
    root = reacher.root
    assert sorted(p.name for p in root.iterdir()) == ["manifest.json", "shard-00000.npz", "shard-00001.npz"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format_version"] == datasets.FORMAT_VERSION and manifest["complete"]
    assert [s["num_trajectories"] for s in manifest["shards"]] == [2, 1] and manifest["num_collected"] == 3
    assert manifest["config"]["task"] == "reacher-pose" and manifest["env"]["proprio_dim"] == 4
    s = manifest["env"]["state_size"]
    with np.load(root / "shard-00000.npz") as shard:
        got = {k: (shard[k].dtype, shard[k].shape) for k in shard.files}
        data = {k: shard[k] for k in shard.files}
    assert got == {
        "images": (np.uint8, (2, 31, 3, 28, 28)), "actions": (np.float32, (2, 30, 2)),
        "proprio": (np.float32, (2, 31, 4)), "states": (np.float64, (2, 31, s)),
        "achieved_goal": (np.float32, (2, 31, 2)), "desired_goal": (np.float32, (2, 2)), "seeds": (np.int64, (2,)),
    }
    assert data["seeds"].tolist() == [7, 8]
    assert np.abs(data["actions"]).max() <= 1.0 and data["actions"].std() > 0.3  # uniform random actions
    assert data["images"].std(axis=1).max() > 0  # the arm moves in the pictures
    # proprio = qpos, qvel (the physics state is time, qpos, qvel, ...)
    np.testing.assert_array_equal(data["proprio"], data["states"][..., 1:5].astype(np.float32))
    # actions[:, t] leads from frame t to t + 1: replaying them reproduces the stored states
    env = envs.make("reacher-pose", obs="pixels", image_size=28, seed=0, time_limit=30)
    env.reset(seed=8)
    for t in range(30):
        np.testing.assert_array_equal(env.get_physics_state(), data["states"][1, t])
        obs, *_ = env.step(data["actions"][1, t])
    np.testing.assert_array_equal(obs["observation"], data["images"][1, 30])
    env.close()
    # normalisation statistics over all actions and proprio
    actions = reacher.array("actions").reshape(-1, 2)
    np.testing.assert_allclose(manifest["stats"]["action_mean"], actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(reacher.normalization()["proprio_std"],
                               reacher.array("proprio").reshape(-1, 4).std(0), rtol=1e-4)


@pytest.mark.parametrize("policy", ["random", "noisy_planner"])
def test_killed_collection_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, policy):
    config = CollectConfig(task="point_mass-goal", num_trajectories=3, steps=6, image_size=28, shard_size=1,
                           policy=policy, planner_horizon=4, planner_budget=24, seed=3)
    whole = collect(config, tmp_path / "whole", progress=False)

    calls = []
    original = collection._Collector.trajectory

    def dies_on_third(self, index):
        calls.append(index)
        if index == 2:
            raise Killed  # killed while collecting shard 3 of 3
        return original(self, index)

    def counted(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(collection._Collector, "trajectory", dies_on_third)
    with pytest.raises(Killed):
        collect(config, tmp_path / "resumed", progress=False)
    root = tmp_path / "resumed"
    assert sorted(p.name for p in root.glob("shard-*")) == ["shard-00000.npz", "shard-00001.npz"]
    with pytest.raises(ValueError, match="incomplete"):
        OfflineDataset(root)
    (root / ".shard-00002.npz.x1y2.tmp").write_bytes(b"half a shard")  # a write cut short
    calls.clear()
    monkeypatch.setattr(collection._Collector, "trajectory", counted)
    resumed = collect(config, root, progress=False)
    assert calls == [2]  # only the missing shard was collected
    assert not list(root.glob(".*.tmp"))
    for shard in range(3):
        a, b = whole.load_shard(shard), resumed.load_shard(shard)
        for key in SHARD_KEYS:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} of shard {shard}")
    assert whole.manifest["stats"] == resumed.manifest["stats"]
    if policy == "noisy_planner":  # the planner steers every trajectory towards its goal
        distance = np.linalg.norm(resumed.array("achieved_goal") - resumed.array("desired_goal")[:, None], axis=-1)
        assert np.all(distance[:, 0] - distance[:, -1] > 0.005), distance  # random actions: +-0.003
    with pytest.raises(ValueError, match="steps: 6 \\(existing\\) vs 7 \\(requested\\)"):
        collect(dataclass_replace(config, steps=7), root, progress=False)


class Killed(BaseException):
    """Stands for a kill: like KeyboardInterrupt, not an Exception, so nothing catches it."""


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


# -- loading errors -----------------------------------------------------------------------


def test_truncated_or_inconsistent_shards_raise_naming_the_file(reacher, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(reacher.root, root)
    path = root / "shard-00001.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    dataset = OfflineDataset(root)
    dataset.load_shard(0)  # the intact shard still reads
    with pytest.raises(ValueError, match=r"shard .*shard-00001\.npz is truncated or corrupt"):
        dataset.load_shard(1)
    with pytest.raises(ValueError, match=r"shard-00001\.npz is truncated or corrupt"):
        OfflineDataset(root).array("actions")

    # arrays disagreeing in N, then in T
    shutil.copy(reacher.root / "shard-00001.npz", path)
    good = dict(np.load(path))
    np.savez_compressed(path, **{**good, "actions": np.concatenate([good["actions"]] * 2)})
    with pytest.raises(ValueError, match=r"shard-00001\.npz: arrays disagree on the number of trajectories"):
        OfflineDataset(root).load_shard(1)
    np.savez_compressed(path, **{**good, "actions": good["actions"][:, :-1]})
    with pytest.raises(ValueError, match=r"shard-00001\.npz: actions is float32 \(1, 29, 2\), expected float32 \(1, 30, 2\)"):
        OfflineDataset(root).load_shard(1)

    (root / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        OfflineDataset(root)


# -- feature cache ------------------------------------------------------------------------


def test_feature_cache_round_trips_resumes_and_refuses_another_encoder(tmp_path, monkeypatch):
    dataset = hand_made(tmp_path / "data", n=3, t=4, shard_size=2)
    rng = np.random.default_rng(0)
    # real pictures for the DINOv2 check: overwrite the images with noise via write_dataset
    noisy = write_dataset(tmp_path / "noisy", {
        "images": rng.integers(0, 256, (3, 5, 3, 28, 28), dtype=np.uint8),
        "actions": dataset.array("actions"), "proprio": dataset.array("proprio"), "states": dataset.array("states"),
    }, shard_size=2)
    model = tiny_model(seed=0)
    cache = cache_features(noisy, model, batch_size=4)
    folder = cache.folder
    assert folder.parent == noisy.root and folder.name.startswith("features-tiny-28px-random-init-")
    assert sorted(p.name for p in folder.iterdir()) == ["features.json", "shard-00000.npy", "shard-00001.npy"]
    assert cache.shards[0].dtype == np.float16 and cache.shards[0].shape == (2, 5, 4, 32)
    images = torch.from_numpy(np.concatenate([noisy.load_shard(s)["images"] for s in range(2)]))
    expected = model.encode_features(images).numpy()  # [3, 5, P, D]
    loaded = load_cached_features(noisy, encoder=model)
    for i in range(3):
        np.testing.assert_allclose(loaded.trajectory(i).astype(np.float32), expected[i], rtol=2e-3, atol=2e-3)
    info = json.loads((folder / "features.json").read_text())
    assert info["encoder"]["name"] == "tiny" and info["encoder"]["weights"] == "random-init"

    # bfloat16 encoding: its own folder (identity names the precision), features within ~1%
    reduced = cache_features(noisy, model, batch_size=4, precision="bfloat16")
    assert reduced.folder != folder and reduced.folder.name.endswith("-bfloat16")
    assert json.loads((reduced.folder / "features.json").read_text())["encoder"]["precision"] == "bfloat16"
    got = np.stack([reduced.trajectory(i).astype(np.float32) for i in range(3)])
    assert np.abs(got - expected).mean() < 0.02 * np.abs(expected).mean()
    with pytest.raises(ValueError, match=r"made by encoder \[.*bfloat16\], not by this encoder \[.*float32\]"):
        cache_features(noisy, model, out_dir=reduced.folder)
    with pytest.raises(ValueError, match="precision='float16' must be one of"):
        cache_features(noisy, model, precision="float16")

    # pooled patches (DinoWMConfig.patch_pool): a cache of their own, the model's pooled features
    pooled_model = tiny_model(seed=0, patch_pool=2)  # the same frozen encoder, 2 x 2 patches -> 1
    pooled = cache_features(noisy, pooled_model, batch_size=4)
    assert pooled.folder != folder and pooled.folder.name.endswith("-pool2")
    assert pooled.shards[0].shape == (2, 5, 1, 32)
    np.testing.assert_allclose(pooled.trajectory(0).astype(np.float32)[:, 0], expected[0].mean(axis=1), rtol=2e-3,
                               atol=2e-3)  # fmt: skip
    with pytest.raises(ValueError, match="not by this encoder"):
        load_cached_features(noisy, folder, encoder=pooled_model)

    # a damaged shard (written atomically, so damaged afterwards) is encoded again, with a warning
    shard = folder / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(UserWarning, match=r"shard-00001\.npy.*; encoding it again"):
        again = cache_features(noisy, model, batch_size=4)
    np.testing.assert_allclose(again.trajectory(2).astype(np.float32), expected[2], rtol=2e-3, atol=2e-3)

    other = tiny_model(seed=1)  # the same architecture, other random weights
    with pytest.raises(ValueError, match=r"made by encoder \[tiny .*fingerprint [0-9a-f]+, float32\], not by this encoder \[tiny"):
        cache_features(noisy, other, out_dir=folder)
    with pytest.raises(ValueError, match="not by this encoder"):
        load_cached_features(noisy, folder, encoder=other)

    # resumable: a finished shard is not encoded again
    calls = []

    def counted(x):
        calls.append(len(x))
        return pool_encoder(x)

    first = cache_features(dataset, counted, batch_size=100, identity=POOL)
    assert calls == [10, 5]
    (first.folder / "shard-00001.npy").unlink()
    calls.clear()
    again = cache_features(dataset, counted, batch_size=100, identity=POOL)
    assert calls == [5]
    np.testing.assert_array_equal(again.trajectory(2)[:, 0, 0], 10 * np.arange(5) + 2)


# -- training windows ---------------------------------------------------------------------


def test_windows_follow_the_frameskip_and_fit_dinowm_loss(tmp_path):
    dataset = hand_made(tmp_path / "data", n=3, t=12, shard_size=2)
    features = cache_features(dataset, pool_encoder, identity=POOL)
    sampler = WindowSampler(dataset, features, history=2, frameskip=3, seed=0)
    assert sampler.starts_per_trajectory == 7  # t + 2 * 3 <= 12
    batch = sampler.get([1, 2], [0, 6])
    assert batch.features.shape == (2, 3, 4, 3) and batch.proprio.shape == (2, 3, 2) and batch.actions.shape == (2, 3, 6)
    frames = torch.tensor([[0, 3, 6], [6, 9, 12]])
    torch.testing.assert_close(batch.features[:, :, 0, 0], 10.0 * frames + torch.tensor([[1.0], [2.0]]))
    torch.testing.assert_close(batch.proprio[..., 1], frames.float())
    code = torch.tensor([[1000.0], [2000.0]]).unsqueeze(-1) + frames.unsqueeze(-1) + torch.arange(3.0)  # [2, 3, fs]
    expected = torch.stack([code, -code], dim=-1).reshape(2, 3, 6)  # [a_t, a_t+1, a_t+2], each [+c, -c]
    expected[1, 2] = 0.0  # steps 12..14 lie past the end: the loss ignores the last chunk
    torch.testing.assert_close(batch.actions, expected)
    assert expected[0, 1].tolist() == [1003.0, -1003.0, 1004.0, -1004.0, 1005.0, -1005.0]

    held_in = sampler.__class__(dataset, features, history=2, frameskip=3, trajectories=[0, 2], seed=1)
    drawn = held_in.sample(64)
    assert set(drawn.trajectories.tolist()) == {0, 2} and int(drawn.starts.max()) <= 6
    assert len(list(held_in.epoch(5))) == 3  # 14 windows

    # the shapes DinoWM.loss expects, with the model's history and frameskip
    model = tiny_model(seed=0, history=2, frameskip=3)
    model.set_normalization(**dataset.normalization())
    cache = cache_features(dataset, model)
    batch = WindowSampler.for_model(dataset, cache, model.config).sample(4)
    assert batch.features.shape == (4, 3, 4, 32) and batch.actions.shape == (4, 3, 6)
    loss, _ = model.loss(batch.features, batch.proprio, batch.actions)
    assert torch.isfinite(loss) and loss.requires_grad
    with pytest.raises(ValueError, match="spans history \\* frameskip = 15"):
        WindowSampler(dataset, features, history=3, frameskip=5)


# -- evaluation goals ---------------------------------------------------------------------


def test_goals_are_offset_steps_ahead_on_held_out_trajectories(reacher, tmp_path):
    dataset = hand_made(tmp_path / "data", n=10, t=12, shard_size=4)
    goals = sample_goals(dataset, count=20, seed=0, offset=5)
    assert set(goals.trajectories.tolist()) == {9}  # the held-out 10 %
    np.testing.assert_array_equal(goals.goal_states[:, 1] - goals.start_states[:, 1], 5)
    np.testing.assert_array_equal(goals.goal_states[:, 0], goals.trajectories)
    np.testing.assert_array_equal(goals.goal_images[:, 0, 0, 0], 10 * (goals.start_steps + 5) + 9)
    np.testing.assert_array_equal(goals.start_proprio[:, 1], goals.start_steps)
    with pytest.raises(ValueError, match="offset=13 is longer"):
        sample_goals(dataset, count=1, offset=13)

    # collected data: the physics clock says offset agent steps passed
    goals = sample_goals(reacher, count=4, seed=1, offset=25, trajectories=[0, 1, 2])
    dt = reacher.env["control_timestep"]
    np.testing.assert_allclose(goals.goal_states[:, 0] - goals.start_states[:, 0], 25 * dt, rtol=1e-9)
    assert goals.goal_achieved.shape == (4, 2) and goals.goal_images.dtype == np.uint8

    env = envs.make("reacher-pose", obs="pixels", image_size=28, seed=0)
    goals = sample_goals(env, count=2, seed=100, offset=10)
    np.testing.assert_allclose(goals.goal_states[:, 0] - goals.start_states[:, 0], 10 * env.control_timestep)
    env.reset(seed=101)
    np.testing.assert_array_equal(goals.start_states[1], env.get_physics_state())
    assert not np.array_equal(goals.start_images, goals.goal_images)
    env.close()


def test_unmet_goals_are_distinct_and_do_not_start_met(reacher, tmp_path):
    from envs.goals import GOAL_TASKS

    goals, info = sample_unmet_goals(reacher, count=5, seed=0, offset=5)
    assert len(goals) == 5 and info["filtered"] and info["evaluated_already_reached"] == 0
    start = reacher.array("achieved_goal")[goals.trajectories, goals.start_steps]
    assert not GOAL_TASKS["reacher-pose"]().is_success(start, goals.goal_achieved).any()
    assert len(set(zip(goals.trajectories.tolist(), goals.start_steps.tolist()))) == 5
    # They are the first kept draws of sample_goals' pool, in its order.
    pool = sample_goals(reacher, count=info["pool"], seed=0, offset=5)
    first = [(t, s) for t, s in zip(pool.trajectories.tolist(), pool.start_steps.tolist())]
    assert [first.index(p) for p in zip(goals.trajectories.tolist(), goals.start_steps.tolist())] == sorted(
        first.index(p) for p in zip(goals.trajectories.tolist(), goals.start_steps.tolist()))
    np.testing.assert_array_equal(goals.subset([1, 0]).start_states, goals.start_states[[1, 0]])
    everything, info = sample_unmet_goals(reacher, count=3, seed=0, offset=5, include_met=True)
    assert info["pool"] == 3 and not info["filtered"]
    with pytest.raises(ValueError, match="'custom' is not a goal task"):
        sample_unmet_goals(hand_made(tmp_path / "data", n=10), count=1, offset=5)
    with pytest.raises(ValueError, match="records no achieved goals"):
        sample_unmet_goals(hand_made(tmp_path / "data2", n=10), count=1, offset=5, task="reacher-pose")
