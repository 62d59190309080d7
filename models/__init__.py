"""World models that plug into the planners, the objectives built from them, and toy systems."""

from models.base import FunctionModel, WorldModel
from models.objectives import goal_objective, policy_proposals, reward_objective, rollout
from models.toy import TOY_SYSTEMS, Pendulum, PointMass

__all__ = [
    "FunctionModel",
    "Pendulum",
    "PointMass",
    "TOY_SYSTEMS",
    "WorldModel",
    "goal_objective",
    "policy_proposals",
    "reward_objective",
    "rollout",
]
