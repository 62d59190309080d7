"""World-model families that plug into the planners, their registry, the objectives built
from them, toy systems and the MuJoCo physics reference model (`OracleModel`; mujoco loads
on first use).

    from models import registry, load
    registry.list_models()                          # the families
    model = load("checkpoints/told-cartpole-swingup.pt", device="cpu")
"""

from models import registry
from models.base import FunctionModel, WorldModel
from models.checkpoints import CheckpointError
from models.loading import load
from models.objectives import goal_objective, policy_proposals, reward_objective, rollout
from models.oracle import OracleModel
from models.registry import ModelSpec, Option
from models.toy import TOY_SYSTEMS, Pendulum, PointMass

__all__ = [
    "CheckpointError",
    "FunctionModel",
    "ModelSpec",
    "Option",
    "OracleModel",
    "Pendulum",
    "PointMass",
    "TOY_SYSTEMS",
    "WorldModel",
    "goal_objective",
    "load",
    "policy_proposals",
    "registry",
    "reward_objective",
    "rollout",
]
