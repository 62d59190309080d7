"""Training and evaluation runs: the online-training skeleton (`training.online`) and one
trainer per family, the replay buffer, offline datasets and feature caches, and the
episode loops that evaluate a controller in an environment."""

from training.evaluation import EpisodeRecord, run_episode, summarise
from training.video import write_video

__all__ = ["EpisodeRecord", "run_episode", "summarise", "write_video"]
