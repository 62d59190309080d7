"""World models that plug into the planners, the objectives built from them, toy systems and
the MuJoCo physics reference model (`OracleModel`; mujoco loads on first use)."""

from models.base import FunctionModel, WorldModel
from models.objectives import goal_objective, policy_proposals, reward_objective, rollout
from models.oracle import OracleModel
from models.toy import TOY_SYSTEMS, Pendulum, PointMass

__all__ = [
    "FunctionModel",
    "OracleModel",
    "Pendulum",
    "PointMass",
    "TOY_SYSTEMS",
    "WorldModel",
    "goal_objective",
    "policy_proposals",
    "reward_objective",
    "rollout",
]
