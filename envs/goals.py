"""Goal-reaching tasks on DM Control domains (the GoalEnv convention).

Each task reuses a dm_control suite task for its physics, initial-state distribution
and observation, and replaces the reward with a goal: the episode starts in dm_control's
random initial state, a goal is drawn from the same seeded ``task.random`` (redrawn,
up to 100 times, while the start state already meets it, so no episode is solved at
step 0), and the agent is rewarded with the negative distance between the achieved and
the desired goal after each agent step (dense; the dm_control reward is ignored).
Episodes never terminate; ``info["is_success"]`` reports whether the goal is met.

Every goal comes with a *goal configuration*: a full joint configuration (zero
velocity) in which the goal is met, so the goal can be shown as an image of the robot
in that pose (``GoalDMCEnv.goal_observation``), as DINO-WM does.

Tasks and success thresholds:

====================  ================  =====================  =============================
task                  physics           goal ``[G]``           success when
====================  ================  =====================  =============================
``reacher-pose``      reacher-easy      [shoulder, wrist] rad  both joint errors < 0.1 rad
                                                               (shoulder error wrapped)
``reacher-target``    reacher-easy      fingertip [x, y] m     fingertip within 0.06 m of
                                                               the target (0.05 target +
                                                               0.01 fingertip radius: where
                                                               dm_control's reward is 1)
``point_mass-goal``   point_mass-easy   mass [x, y] m          within 0.025 m (0.015 marker
                                                               + 0.01 mass radius: the
                                                               spheres overlap)
``finger-turn_goal``  finger-turn_hard  spinner tip angle      angle error < 0.2313 rad =
                                        [1] rad                2 asin(0.03 / 0.26): the tip
                                                               is inside turn_hard's target
====================  ================  =====================  =============================

Time limit: 400 control steps (8 s) for every goal task, i.e. 200 agent steps at the
default action repeat of 2 (100 for reacher under the ``"planet"`` preset).
Reward: minus the distance, which is the Euclidean norm of the joint errors (rad) for
``reacher-pose``, Euclidean metres for the two position tasks and the absolute
wrapped angle error (rad) for ``finger-turn_goal``.

Goal sampling and markers:

- ``reacher-pose``: shoulder uniform in ``[-pi, pi)``, wrist uniform in its joint range
  (+-160 deg) -- dm_control's own initial-pose distribution. The target sphere is made
  invisible and ``to_target`` dropped from the state (it points at a target that no
  longer exists), so the goal is known only as a pose; observation ``[position(2),
  velocity(2)]``. The wrist error is not wrapped: the joint stops at +-160 deg, so the
  arm cannot take the short way round.
- ``reacher-target``: the goal is drawn from dm_control's target distribution (angle
  uniform, radius uniform in [0.05, 0.20] m) and dm_control's target sphere is moved
  there (visible); the goal configuration is the elbow-positive solution of the
  two-link inverse kinematics.
- ``point_mass-goal``: goal uniform in ``[-0.25, 0.25]^2`` m; dm_control's target
  marker (fixed at the origin in the suite) is moved to the goal.
- ``finger-turn_goal``: the goal angle is uniform on the circle, as in dm_control's
  Turn task, whose target marker is moved to it (visible). In the goal configuration
  the spinner points at the target and the finger keeps its initial pose, or, if that
  pose would touch the spinner there, a collision-free pose drawn like dm_control's
  initial one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    from dm_control.mujoco import Physics


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Maps angles to ``[-pi, pi)``. Works elementwise on any shape."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


@dataclass(frozen=True)
class Goal:
    """A sampled goal.

    Attributes:
        desired: The desired goal, float64 ``[G]``.
        qpos: A joint configuration ``[nq]`` in which the goal is met.
    """

    desired: np.ndarray
    qpos: np.ndarray


class GoalTask(abc.ABC):
    """What defines a goal-reaching task on top of a dm_control task.

    Subclasses set the class attributes and implement the sampling, the achieved goal
    and the distance. Methods receive the live physics; :meth:`sample_goal` may move
    joints (the caller restores ``data``) but edits the model only in :meth:`prepare`
    and :meth:`show_goal`.

    Attributes:
        name: Task name used by :func:`envs.make`.
        base: dm_control ``(domain, task)`` providing physics and initial states.
        threshold: Success threshold, in the units of :meth:`distance`.
        time_limit: Episode length in control steps.
        goal_low: Lower bound of a goal vector ``[G]``.
        goal_high: Upper bound of a goal vector ``[G]``.
        obs_keys: dm_control observation entries forming the state observation, or
            ``None`` for all of them.
    """

    name: ClassVar[str]
    base: ClassVar[tuple[str, str]]
    threshold: ClassVar[float]
    time_limit: ClassVar[int] = 400
    goal_low: ClassVar[tuple[float, ...]]
    goal_high: ClassVar[tuple[float, ...]]
    obs_keys: ClassVar[tuple[str, ...] | None] = None

    def prepare(self, physics: Physics) -> None:
        """Edits the model after each dm_control reset, before the goal is drawn."""

    @abc.abstractmethod
    def sample_goal(self, physics: Physics, random: np.random.RandomState) -> Goal:
        """Draws a goal and its goal configuration from ``random``."""

    def show_goal(self, physics: Physics, desired: np.ndarray) -> None:
        """Edits the model so the scene shows the goal (e.g. moves a marker)."""

    @abc.abstractmethod
    def achieved_goal(self, physics: Physics) -> np.ndarray:
        """Returns the achieved goal of the current physics state, float64 ``[G]``."""

    @abc.abstractmethod
    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        """Distance between goals.

        Shapes:
            achieved, desired: ``[..., G]`` (broadcastable).
            returns: ``[...]``.
        """

    def is_success(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        """Whether the goal is met; ``[..., G]`` -> bool ``[...]``."""
        return self.distance(achieved, desired) < self.threshold


class ReacherPose(GoalTask):
    """Reach a whole-arm pose (DINO-WM's "Reach"): goal ``[shoulder, wrist]`` in radians.

    Success: ``|wrap(shoulder error)| < 0.1`` and ``|wrist error| < 0.1`` rad. Distance
    (reward = minus it): Euclidean norm of the two errors.
    """

    name = "reacher-pose"
    base = ("reacher", "easy")
    threshold = 0.1
    goal_low = (-np.pi, -np.pi)
    goal_high = (np.pi, np.pi)
    obs_keys = ("position", "velocity")

    def prepare(self, physics: Physics) -> None:
        physics.named.model.geom_rgba["target", 3] = 0.0

    def sample_goal(self, physics: Physics, random: np.random.RandomState) -> Goal:
        low, high = physics.named.model.jnt_range["wrist"]
        qpos = np.array([random.uniform(-np.pi, np.pi), random.uniform(low, high)])
        return Goal(desired=self._pose(qpos), qpos=qpos)

    def achieved_goal(self, physics: Physics) -> np.ndarray:
        return self._pose(physics.named.data.qpos[["shoulder", "wrist"]])

    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self._errors(achieved, desired), axis=-1)

    def is_success(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return np.all(np.abs(self._errors(achieved, desired)) < self.threshold, axis=-1)

    @staticmethod
    def _pose(qpos: np.ndarray) -> np.ndarray:
        # The shoulder turns freely (qpos grows past pi), the wrist is limited.
        return np.array([wrap_angle(qpos[0]), qpos[1]], dtype=np.float64)

    @staticmethod
    def _errors(achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        error = np.asarray(achieved, dtype=np.float64) - np.asarray(desired, dtype=np.float64)
        return np.stack([wrap_angle(error[..., 0]), error[..., 1]], axis=-1)


class ReacherTarget(GoalTask):
    """Bring the fingertip to a target: goal = target ``[x, y]`` in metres.

    Success: fingertip within 0.06 m (target radius 0.05 + fingertip radius 0.01).
    Distance: Euclidean, metres.
    """

    name = "reacher-target"
    base = ("reacher", "easy")
    threshold = 0.06
    goal_low = (-0.3, -0.3)
    goal_high = (0.3, 0.3)

    def sample_goal(self, physics: Physics, random: np.random.RandomState) -> Goal:
        # dm_control's own target distribution (reacher.Reacher.initialize_episode).
        angle = random.uniform(0, 2 * np.pi)
        radius = random.uniform(0.05, 0.20)
        target = np.array([radius * np.sin(angle), radius * np.cos(angle)])
        upper = float(physics.named.model.body_pos["hand", "x"])
        lower = float(physics.named.model.body_pos["finger", "x"])
        return Goal(desired=target, qpos=two_link_ik(target, upper, lower))

    def show_goal(self, physics: Physics, desired: np.ndarray) -> None:
        physics.named.model.geom_pos["target", :2] = desired

    def achieved_goal(self, physics: Physics) -> np.ndarray:
        return np.array(physics.named.data.geom_xpos["finger", :2], dtype=np.float64)

    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.asarray(achieved) - np.asarray(desired), axis=-1)


def two_link_ik(target: np.ndarray, upper: float, lower: float) -> np.ndarray:
    """Joint angles placing a planar two-link arm's tip at ``target`` (elbow positive).

    Args:
        target: Tip position ``[2]`` relative to the shoulder.
        upper: Shoulder-to-elbow length.
        lower: Elbow-to-tip length.

    Returns:
        ``[shoulder, elbow]`` angles in radians; out-of-reach targets are clamped to the
        nearest reachable radius.
    """
    x, y = float(target[0]), float(target[1])
    cos_elbow = (x * x + y * y - upper**2 - lower**2) / (2 * upper * lower)
    elbow = float(np.arccos(np.clip(cos_elbow, -1.0, 1.0)))
    offset = np.arctan2(lower * np.sin(elbow), upper + lower * np.cos(elbow))
    shoulder = np.arctan2(y, x) - offset
    return np.array([float(wrap_angle(shoulder)), elbow])


class PointMassGoal(GoalTask):
    """Move the point mass to a goal ``[x, y]`` (metres), uniform in ``[-0.25, 0.25]^2``.

    Success: within 0.025 m. Distance: Euclidean, metres.
    """

    name = "point_mass-goal"
    base = ("point_mass", "easy")
    threshold = 0.025
    goal_low = (-0.3, -0.3)
    goal_high = (0.3, 0.3)
    goal_range = 0.25

    def sample_goal(self, physics: Physics, random: np.random.RandomState) -> Goal:
        goal = random.uniform(-self.goal_range, self.goal_range, size=2)
        return Goal(desired=goal, qpos=goal.copy())

    def show_goal(self, physics: Physics, desired: np.ndarray) -> None:
        physics.named.model.geom_pos["target", :2] = desired

    def achieved_goal(self, physics: Physics) -> np.ndarray:
        return np.array(physics.named.data.qpos[["root_x", "root_y"]], dtype=np.float64)

    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.asarray(achieved) - np.asarray(desired), axis=-1)


class FingerTurnGoal(GoalTask):
    """Turn the spinner so its tip points at a target angle: goal ``[1]``, radians.

    The angle is measured at the hinge from +z towards +x (dm_control's convention
    for the target); the tip's angle is minus the hinge joint angle.
    Success: ``|wrap(error)| < 2 * asin(0.03 / 0.26) = 0.2313`` rad, exactly when the tip
    (radius 0.13 m from the hinge) is inside turn_hard's 0.03 m target.
    Distance: ``|wrap(error)|``, radians.
    """

    name = "finger-turn_goal"
    base = ("finger", "turn_hard")
    threshold = float(2 * np.arcsin(0.03 / 0.26))
    goal_low = (-np.pi,)
    goal_high = (np.pi,)
    max_attempts = 1000

    def sample_goal(self, physics: Physics, random: np.random.RandomState) -> Goal:
        import mujoco

        desired = np.array([random.uniform(-np.pi, np.pi)])
        named = physics.named.data.qpos
        named["hinge"] = -desired[0]
        model, data = physics.model.ptr, physics.data.ptr
        mujoco.mj_forward(model, data)
        ranges = physics.named.model.jnt_range
        for _ in range(self.max_attempts):
            if data.ncon == 0:
                return Goal(desired=desired, qpos=physics.data.qpos.copy())
            for joint in ("proximal", "distal"):
                named[joint] = random.uniform(*ranges[joint])
            mujoco.mj_forward(model, data)
        raise RuntimeError(f"{self.name}: no collision-free goal configuration found")

    def show_goal(self, physics: Physics, desired: np.ndarray) -> None:
        # Where dm_control's Turn task puts its target for this angle.
        hinge_x, hinge_z = physics.named.data.xanchor["hinge", ["x", "z"]]
        radius = physics.named.model.geom_size["cap1"].sum()
        physics.named.model.site_pos["target", ["x", "z"]] = (
            hinge_x + radius * np.sin(desired[0]),
            hinge_z + radius * np.cos(desired[0]),
        )

    def achieved_goal(self, physics: Physics) -> np.ndarray:
        x, z = physics.tip_position()
        return np.array([np.arctan2(x, z)], dtype=np.float64)

    def distance(self, achieved: np.ndarray, desired: np.ndarray) -> np.ndarray:
        error = np.asarray(achieved, dtype=np.float64) - np.asarray(desired, dtype=np.float64)
        return np.abs(wrap_angle(error[..., 0]))


GOAL_TASKS: dict[str, type[GoalTask]] = {
    task.name: task for task in (ReacherPose, ReacherTarget, PointMassGoal, FingerTurnGoal)
}
