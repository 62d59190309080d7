"""DINO-WM training under torch.distributed (training/dino_wm_trainer.py): two CPU processes
with the gloo backend, launched as torchrun would (RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address in the environment), against one process on the combined batch."""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from training.datasets import write_dataset
from training.dino_wm_trainer import DinoWMTrainConfig, DinoWMTrainer

pytestmark = pytest.mark.filterwarnings("ignore:DINOv2 tiny encoder is randomly initialised")

BATCH = 4  # per rank
WORLD = 2


def small_dataset(root: Path):
    """6 trajectories of 10 steps, 28 px frames (the tiny preset's), random content."""
    rng = np.random.default_rng(0)
    n, t = 6, 10
    arrays = {
        "images": rng.integers(0, 256, size=(n, t + 1, 3, 28, 28), dtype=np.uint8),
        "actions": rng.uniform(-1, 1, size=(n, t, 2)).astype(np.float32),
        "proprio": rng.normal(size=(n, t + 1, 4)).astype(np.float32),
        "states": rng.normal(size=(n, t + 1, 4)),
    }
    return write_dataset(root, arrays, shard_size=3)


def config(dataset: Path, batch_size: int) -> DinoWMTrainConfig:
    return DinoWMTrainConfig(dataset=str(dataset), preset="tiny", steps=1, batch_size=batch_size, lr=1e-2,
                             val_fraction=0.3, val_windows=8, device="cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, dataset: str, out: str, results: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    trainer = DinoWMTrainer(config(Path(dataset), BATCH), out, log=lambda _: None)
    batch = trainer._train_batch(0)
    trainer.run()
    torch.save({"state_dict": trainer.model.state_dict(), "rank": trainer.rank, "world_size": trainer.world_size,
                "trajectories": batch.trajectories, "starts": batch.starts}, Path(results) / f"rank{rank}.pt")


def test_two_processes_take_the_step_of_one_process_on_their_combined_batch(tmp_path):
    dataset = small_dataset(tmp_path / "data")
    results = tmp_path / "results"
    results.mkdir()
    procs = mp.spawn(_worker, args=(free_port(), str(dataset.root), str(tmp_path / "ddp"), str(results)),
                     nprocs=WORLD, join=False)
    deadline = time.monotonic() + 120  # a deadlock fails the test instead of hanging it
    while not procs.join(timeout=1):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("the two training processes did not finish within 120 s")
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    # Each rank trained on its own windows ...
    pairs = [set(zip(r["trajectories"].tolist(), r["starts"].tolist())) for r in ranks]
    assert not pairs[0] & pairs[1]

    torch.manual_seed(123)  # the single run must not depend on the global RNG either
    single = DinoWMTrainer(config(dataset.root, WORLD * BATCH), tmp_path / "single", log=lambda _: None)
    combined = single._train_batch(0)
    # ... which together are one process's batch of twice the size,
    assert torch.equal(combined.trajectories, torch.cat([r["trajectories"] for r in ranks]))
    assert torch.equal(combined.starts, torch.cat([r["starts"] for r in ranks]))
    single.run()
    # and one update leaves both ranks with the same weights, those of the single process
    # (DDP averages the gradients of two mean losses: the mean loss of the combined batch).
    before = DinoWMTrainer(config(dataset.root, WORLD * BATCH), tmp_path / "untrained", log=lambda _: None)
    moved = 0
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0]["state_dict"][key], ranks[1]["state_dict"][key], rtol=0, atol=0, msg=key)
        torch.testing.assert_close(ranks[0]["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
        moved += int(not torch.equal(value, before.model.state_dict()[key]))
    assert moved > 0

    # Only rank 0 wrote the run's files, with the training checkpoint's header.
    ddp = tmp_path / "ddp"
    assert sorted(p.name for p in ddp.iterdir()) == ["checkpoint.pt", "model.pt", "train.csv", "val.csv"]
    state = torch.load(ddp / "checkpoint.pt", weights_only=True)
    assert (state["model"], state["kind"], state["run"]["world_size"]) == ("dinowm", "training", 2)
    assert len(state["rank_torch_rng"]) == 2
    assert len((ddp / "train.csv").read_text().splitlines()) == 2  # header, one row
