"""Loops that run models and planners in environments: evaluation (and, later, training)."""

from training.evaluation import EpisodeRecord, run_episode, summarise
from training.video import write_video

__all__ = ["EpisodeRecord", "run_episode", "summarise", "write_video"]
