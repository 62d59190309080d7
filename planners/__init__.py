"""Sampling-based trajectory optimisers and the MPC controller.

This package depends on torch only: robotics code can plan over its own dynamics with
no world model of ours involved.

    from planners import MPPI, MPCController, make_planner
"""

from planners.base import Objective, PlanResult, SamplingPlanner, WarmStart
from planners.cem import CEM, CEMConfig
from planners.compile import CompiledModel, compile_model
from planners.config import PlannerConfig
from planners.controller import MPCController, resolve_device
from planners.icem import ICEM, ICEMConfig
from planners.mppi import MPPI, MPPIConfig
from planners.objectives import goal_objective, policy_proposals, reward_objective, rollout
from planners.registry import PLANNERS, PRESETS, make_planner

__all__ = [
    "CEM",
    "CEMConfig",
    "CompiledModel",
    "ICEM",
    "ICEMConfig",
    "MPPI",
    "MPPIConfig",
    "MPCController",
    "Objective",
    "PLANNERS",
    "PRESETS",
    "PlanResult",
    "PlannerConfig",
    "SamplingPlanner",
    "WarmStart",
    "compile_model",
    "goal_objective",
    "make_planner",
    "policy_proposals",
    "resolve_device",
    "reward_objective",
    "rollout",
]
