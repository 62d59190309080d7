"""Objectives built from a world model (DESIGN section 3.4).

The implementations live in `planners.objectives` so that `planners` (and its
`MPCController`) stay independent of this package; this module is where model code and
users look for them.
"""

from planners.objectives import goal_objective, policy_proposals, reward_objective, rollout

__all__ = ["goal_objective", "policy_proposals", "reward_objective", "rollout"]
