"""A replay buffer of whole episodes with subsequence sampling (TD-MPC2, PlaNet, Dreamer).

Episodes are stored back to back in preallocated ring arrays, one slot per observation:
slot i of an episode holds obs_i, the action taken at obs_i and the reward that followed
(the last slot of an episode has no action: it is stored as zeros and never sampled as a
transition). When the buffer is full, the oldest episodes are overwritten, so memory is
bounded by `capacity` slots whatever the run length.

Sampling draws start slots uniformly among those from which `length` more transitions
lie inside the same episode, and returns time-major arrays as the losses want them:

    obs [L + 1, B, *obs], action [L, B, A], reward [L, B]

The buffer saves to one `.npz` file atomically (only the filled slots) and loads back
exactly, so an interrupted run resumes with the same data.
"""

from __future__ import annotations

import ast
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["EpisodeReplay", "atomic_save_npz"]


class EpisodeReplay:
    """Episodes in a bounded ring of slots.

    Args:
        capacity: slots (observations) kept at most; the oldest episodes go first.
        obs_shape: one observation's shape; obs_dtype: its dtype (uint8 for pixels).
        action_dim: A.
        seed: seeds sampling.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_dim: int,
        obs_dtype: np.dtype | type = np.float32,
        seed: int = 0,
    ) -> None:
        if capacity <= 1:
            raise ValueError(f"capacity={capacity!r} must be more than 1 slot")
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.action_dim = int(action_dim)
        self.obs = np.zeros((self.capacity, *self.obs_shape), dtype=obs_dtype)
        self.action = np.zeros((self.capacity, self.action_dim), dtype=np.float32)
        self.reward = np.zeros(self.capacity, dtype=np.float32)
        # Which episode owns each slot (-1: empty) and how many transitions follow it there.
        self.episode_of = np.full(self.capacity, -1, dtype=np.int64)
        self.steps_after = np.zeros(self.capacity, dtype=np.int64)
        self.cursor = 0  # next free slot
        self.num_episodes = 0  # episodes ever added (ids 0, 1, ...)
        self.rng = np.random.default_rng(seed)
        self._starts_cache: dict[int, np.ndarray] = {}

    # -- adding ---------------------------------------------------------------------------

    def add_episode(self, obs: np.ndarray, action: np.ndarray, reward: np.ndarray) -> None:
        """Append one episode.

        Shapes:
            obs [T + 1, *obs], action [T, A], reward [T] with T >= 1.
        """
        obs, action, reward = np.asarray(obs), np.asarray(action, np.float32), np.asarray(reward, np.float32)
        t = len(action)
        if t < 1 or obs.shape != (t + 1, *self.obs_shape) or action.shape != (t, self.action_dim) or reward.shape != (t,):
            raise ValueError(
                f"episode arrays obs {obs.shape}, action {action.shape}, reward {reward.shape} do not fit "
                f"obs [T+1, {', '.join(map(str, self.obs_shape))}], action [T, {self.action_dim}], reward [T] with T >= 1"
            )
        slots = t + 1
        if slots > self.capacity:
            raise ValueError(f"an episode of {slots} observations does not fit a buffer of capacity {self.capacity}")
        if self.cursor + slots > self.capacity:
            # Wrap to the start; the tail that is left over is emptied (it held old data).
            self._clear(self.cursor, self.capacity)
            self.cursor = 0
        start, end = self.cursor, self.cursor + slots
        self._clear(start, end)  # evict every episode the new one overlaps
        self.obs[start:end] = obs
        self.action[start : end - 1] = action
        self.action[end - 1] = 0.0
        self.reward[start : end - 1] = reward
        self.reward[end - 1] = 0.0
        self.episode_of[start:end] = self.num_episodes
        self.steps_after[start:end] = np.arange(t, -1, -1)
        self.num_episodes += 1
        self.cursor = end
        self._starts_cache.clear()

    def _clear(self, start: int, end: int) -> None:
        """Empty slots [start, end) together with the rest of every episode they touch."""
        if start >= end:
            return
        touched = np.unique(self.episode_of[start:end])
        touched = touched[touched >= 0]
        if len(touched):
            self.episode_of[np.isin(self.episode_of, touched)] = -1

    # -- reading --------------------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Transitions held (observations minus one per episode)."""
        filled = self.episode_of >= 0
        return int(filled.sum()) - len(np.unique(self.episode_of[filled]))

    def _valid_starts(self, length: int) -> np.ndarray:
        cached = self._starts_cache.get(length)
        if cached is None:
            cached = np.flatnonzero((self.episode_of >= 0) & (self.steps_after >= length))
            self._starts_cache[length] = cached
        return cached

    def sample(self, batch_size: int, length: int) -> dict[str, np.ndarray]:
        """`batch_size` random subsequences of `length` transitions.

        Returns:
            {"obs": [L + 1, B, *obs], "action": [L, B, A], "reward": [L, B]}
        """
        starts = self._valid_starts(length)
        if len(starts) == 0:
            raise ValueError(f"no stored episode has {length} transitions to sample; add episodes first")
        chosen = starts[self.rng.integers(0, len(starts), size=batch_size)]
        index = chosen[None, :] + np.arange(length + 1)[:, None]  # [L + 1, B]
        return {
            "obs": self.obs[index],
            "action": self.action[index[:-1]],
            "reward": self.reward[index[:-1]],
        }

    # -- saving ---------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that recreate this buffer (filled slots only), for `save` and tests."""
        used = np.flatnonzero(self.episode_of >= 0)
        rng_state = np.frombuffer(repr(self.rng.bit_generator.state).encode(), dtype=np.uint8)
        return {
            "capacity": np.array(self.capacity),
            "slots": used,
            "obs": self.obs[used],
            "action": self.action[used],
            "reward": self.reward[used],
            "episode_of": self.episode_of[used],
            "steps_after": self.steps_after[used],
            "cursor": np.array(self.cursor),
            "num_episodes": np.array(self.num_episodes),
            "rng_state": rng_state,
        }

    def save(self, path: str | Path) -> None:
        """Write the buffer to `path` (.npz) atomically."""
        atomic_save_npz(path, self.state())

    @classmethod
    def load(cls, path: str | Path, seed: int = 0) -> EpisodeReplay:
        """A buffer exactly as saved (contents, cursor, sampling state)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no replay buffer at {path}")
        with np.load(path) as data:
            used = data["slots"]
            buffer = cls(
                int(data["capacity"]), data["obs"].shape[1:], data["action"].shape[1], obs_dtype=data["obs"].dtype, seed=seed
            )
            buffer.obs[used] = data["obs"]
            buffer.action[used] = data["action"]
            buffer.reward[used] = data["reward"]
            buffer.episode_of[used] = data["episode_of"]
            buffer.steps_after[used] = data["steps_after"]
            buffer.cursor = int(data["cursor"])
            buffer.num_episodes = int(data["num_episodes"])
            buffer.rng.bit_generator.state = ast.literal_eval(bytes(data["rng_state"]).decode())
        return buffer


def atomic_save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to a temporary file beside `path`, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
