"""Vectorised rewards and achieved goals for the MuJoCo oracle (`models.oracle`).

DM Control computes a task's reward from one `Physics` at a time (`task.get_reward`),
which costs tens of microseconds of Python per state. The functions here compute the
same numbers for a whole batch of states at once with numpy, from what a batched
`mujoco.rollout` returns: joint positions and velocities, the controls, and the
position- and velocity-stage sensors. Positions of bodies that a reward reads from
MuJoCo's kinematics (`xpos`, `xmat`, `geom_xpos`) are computed in closed form from the
joint angles; each builder first checks that the model has the structure its formula
assumes (joint types, axes, anchors, identity body frames) and returns None otherwise,
so the oracle falls back to calling `task.get_reward` state by state.

Every function reproduces the task's own definition (Tassa et al., 2018, "DeepMind
Control Suite"; dm_control 1.0.50 `suite/*.py`), using dm_control's own
`rewards.tolerance`, and reads every model value that a task or a goal edits per
episode (target positions and sizes) from the live model on each call. The tests check
each against `task.get_reward` to 1e-9.

Covered: cartpole (every Balance task: balance, swingup, their sparse variants and the
multi-pole ones), reacher (easy, hard), point_mass (easy, hard), finger (spin,
turn_easy, turn_hard), cheetah-run, walker (stand, walk, run); achieved goals of all
four goal tasks in `envs.goals`.

Shapes:
    ... any batch shape (the oracle passes [M, H * R] or [M, H]); nq, nv, nu and
    nsensordata are the model's sizes; G the goal size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.goals import FingerTurnGoal, GoalTask, PointMassGoal, ReacherPose, ReacherTarget, wrap_angle

if TYPE_CHECKING:
    import mujoco
    from dm_control.mujoco import Physics

__all__ = ["StateBatch", "BatchFunction", "vector_reward", "vector_achieved_goal"]

_HINGE = 3  # mjtJoint.mjJNT_HINGE
_SLIDE = 2  # mjtJoint.mjJNT_SLIDE


@dataclass(frozen=True)
class StateBatch:
    """What a vectorised function may read about a batch of physics states.

    Each state is the one at the end of a control step, as dm_control's physics holds it
    when the task computes its reward (after `mj_step1`).

    Attributes:
        qpos: [..., nq] joint positions.
        qvel: [..., nv] joint velocities.
        ctrl: [..., nu] the control applied during the control step (what
            `physics.control()` returns then).
        sensordata: [..., nsensordata] the position- and velocity-stage sensors of the
            state, or None when the function does not need them. Acceleration-stage
            sensors (touch, accelerometer) are not valid here.
    """

    qpos: np.ndarray
    qvel: np.ndarray
    ctrl: np.ndarray
    sensordata: np.ndarray | None


@dataclass(frozen=True)
class BatchFunction:
    """A function of a `StateBatch` and whether it needs the sensor readings.

    Attributes:
        fn: StateBatch -> [...] (rewards) or [..., G] (achieved goals).
        needs_sensors: when True the oracle runs one extra physics step to obtain the
            sensors of the last state (a rollout reports the sensors of the state each
            step starts from).
    """

    fn: Callable[[StateBatch], np.ndarray]
    needs_sensors: bool

    def __call__(self, batch: StateBatch) -> np.ndarray:
        return self.fn(batch)


# ------------------------------------------------------------------ model look-ups


def _id(model: mujoco.MjModel, kind: str, name: str) -> int:
    import mujoco

    obj = getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}")
    index = mujoco.mj_name2id(model, obj, name)
    if index < 0:
        raise KeyError(f"{kind} {name!r}")
    return int(index)


def _joint(model: mujoco.MjModel, name: str, kind: int, axis: tuple[float, ...]) -> tuple[int, int] | None:
    """(qpos address, body id) of a joint of the given type and axis anchored at its body origin."""
    try:
        j = _id(model, "joint", name)
    except KeyError:
        return None
    if model.jnt_type[j] != kind or not np.array_equal(model.jnt_axis[j], axis) or np.any(model.jnt_pos[j] != 0):
        return None
    return int(model.jnt_qposadr[j]), int(model.jnt_bodyid[j])


def _identity_frame(model: mujoco.MjModel, body: int) -> bool:
    return bool(np.array_equal(model.body_quat[body], (1.0, 0.0, 0.0, 0.0)))


def _sensor(model: mujoco.MjModel, name: str) -> int | None:
    """Address of a named sensor in sensordata, None when the model lacks it."""
    try:
        return int(model.sensor_adr[_id(model, "sensor", name)])
    except KeyError:
        return None


def _tolerance() -> Callable[..., Any]:
    from dm_control.utils import rewards

    return rewards.tolerance


# ---------------------------------------------------------------------- cartpole


def _cartpole(task: Any, physics: Physics) -> BatchFunction | None:
    model = physics.model.ptr
    slider = _joint(model, "slider", _SLIDE, (1.0, 0.0, 0.0))
    sparse = getattr(task, "_sparse", None)
    cart_range = getattr(task, "_CART_RANGE", None)
    cosine_range = getattr(task, "_ANGLE_COSINE_RANGE", None)
    if slider is None or slider[0] != 0 or sparse is None or cart_range is None or cosine_range is None:
        return None
    # dm_control reads pole angles from xmat[2:, 'zz'] and angular velocities from
    # qvel[1:]: poles are bodies 2.., each the child of the previous one, each on one
    # hinge about y, so pole k's zz is the cosine of the summed hinge angles up to k.
    if model.njnt != model.nbody - 1 or model.nq != model.njnt or model.nu < 1 or not _identity_frame(model, slider[1]):
        return None
    for k in range(1, model.njnt):
        body = k + 1
        if (
            model.jnt_bodyid[k] != body
            or model.body_parentid[body] != body - 1
            or model.jnt_type[k] != _HINGE
            or not np.array_equal(model.jnt_axis[k], (0.0, 1.0, 0.0))
            or not _identity_frame(model, body)
        ):
            return None
    tolerance = _tolerance()

    def reward(b: StateBatch) -> np.ndarray:
        cart = b.qpos[..., 0]
        cosine = np.cos(np.cumsum(b.qpos[..., 1:], axis=-1))  # [..., poles]
        if sparse:
            cart_in_bounds = tolerance(cart, cart_range)
            angle_in_bounds = tolerance(cosine, cosine_range).prod(axis=-1)
            return cart_in_bounds * angle_in_bounds
        upright = (cosine + 1) / 2
        centered = (1 + tolerance(cart, margin=2)) / 2
        small_control = tolerance(b.ctrl, margin=1, value_at_margin=0, sigmoid="quadratic")[..., 0]
        small_control = (4 + small_control) / 5
        small_velocity = (1 + tolerance(b.qvel[..., 1:], margin=5).min(axis=-1)) / 2
        return upright.mean(axis=-1) * small_control * small_velocity * centered

    return BatchFunction(reward, needs_sensors=False)


# ----------------------------------------------------------------------- reacher


def _reacher_fingertip(physics: Physics) -> Callable[[np.ndarray], np.ndarray] | None:
    """qpos [..., nq] -> the finger geom's world [x, y], or None if the arm is unexpected.

    The arm is planar: shoulder and wrist hinges about z at their body origins, identity
    body frames, so the fingertip is arm + R(q1) hand + R(q1 + q2) (finger + geom).
    """
    model = physics.model.ptr
    shoulder = _joint(model, "shoulder", _HINGE, (0.0, 0.0, 1.0))
    wrist = _joint(model, "wrist", _HINGE, (0.0, 0.0, 1.0))
    try:
        finger_geom = _id(model, "geom", "finger")
        arm, hand, finger = (_id(model, "body", name) for name in ("arm", "hand", "finger"))
    except KeyError:
        return None
    if (
        shoulder is None
        or wrist is None
        or (shoulder[1], wrist[1]) != (arm, hand)
        or model.geom_bodyid[finger_geom] != finger
        or (model.body_parentid[arm], model.body_parentid[hand], model.body_parentid[finger]) != (0, arm, hand)
        or not all(_identity_frame(model, body) for body in (arm, hand, finger))
        or np.any(model.jnt_bodyid == finger)
    ):
        return None
    q_shoulder, q_wrist = shoulder[0], wrist[0]

    def fingertip(qpos: np.ndarray) -> np.ndarray:
        # Read on every call: nothing stops a task from moving these between episodes.
        base = model.body_pos[arm, :2]
        upper = model.body_pos[hand, :2]
        lower = model.body_pos[finger, :2] + model.geom_pos[finger_geom, :2]
        a1 = qpos[..., q_shoulder]
        a2 = a1 + qpos[..., q_wrist]
        c1, s1, c2, s2 = np.cos(a1), np.sin(a1), np.cos(a2), np.sin(a2)
        x = base[0] + (c1 * upper[0] - s1 * upper[1]) + (c2 * lower[0] - s2 * lower[1])
        y = base[1] + (s1 * upper[0] + c1 * upper[1]) + (s2 * lower[0] + c2 * lower[1])
        return np.stack([x, y], axis=-1)

    return fingertip


def _reacher(task: Any, physics: Physics) -> BatchFunction | None:
    model = physics.model.ptr
    fingertip = _reacher_fingertip(physics)
    try:
        target, finger = _id(model, "geom", "target"), _id(model, "geom", "finger")
    except KeyError:
        return None
    if fingertip is None or model.geom_bodyid[target] != 0:
        return None
    tolerance = _tolerance()

    def reward(b: StateBatch) -> np.ndarray:
        # dm_control's reset moves and resizes the target in the model: read it now.
        radii = model.geom_size[target, 0] + model.geom_size[finger, 0]
        distance = np.linalg.norm(model.geom_pos[target, :2] - fingertip(b.qpos), axis=-1)
        return tolerance(distance, (0, radii))

    return BatchFunction(reward, needs_sensors=False)


# -------------------------------------------------------------------- point_mass


def _point_mass_position(physics: Physics) -> Callable[[np.ndarray], np.ndarray] | None:
    """qpos [..., nq] -> the mass geom's world [x, y, z], or None if the model is unexpected."""
    model = physics.model.ptr
    root_x = _joint(model, "root_x", _SLIDE, (1.0, 0.0, 0.0))
    root_y = _joint(model, "root_y", _SLIDE, (0.0, 1.0, 0.0))
    try:
        geom = _id(model, "geom", "pointmass")
    except KeyError:
        return None
    if root_x is None or root_y is None or root_x[1] != root_y[1]:
        return None
    body = root_x[1]
    if model.body_parentid[body] != 0 or model.geom_bodyid[geom] != body or not _identity_frame(model, body):
        return None
    qx, qy = root_x[0], root_y[0]

    def position(qpos: np.ndarray) -> np.ndarray:
        # Slides along the world axes add qpos to the body origin; the frame stays identity.
        offset = model.body_pos[body] + model.geom_pos[geom]
        x = offset[0] + qpos[..., qx]
        y = offset[1] + qpos[..., qy]
        return np.stack([x, y, np.broadcast_to(offset[2], x.shape)], axis=-1)

    return position


def _point_mass(task: Any, physics: Physics) -> BatchFunction | None:
    model = physics.model.ptr
    position = _point_mass_position(physics)
    try:
        target = _id(model, "geom", "target")
    except KeyError:
        return None
    if position is None or model.geom_bodyid[target] != 0:
        return None
    tolerance = _tolerance()

    def reward(b: StateBatch) -> np.ndarray:
        target_size = model.geom_size[target, 0]
        distance = np.linalg.norm(model.geom_pos[target] - position(b.qpos), axis=-1)
        near_target = tolerance(distance, bounds=(0, target_size), margin=target_size)
        control_reward = tolerance(b.ctrl, margin=1, value_at_margin=0, sigmoid="quadratic").mean(axis=-1)
        small_control = (control_reward + 4) / 5
        return near_target * small_control

    return BatchFunction(reward, needs_sensors=False)


# ------------------------------------------------------------------------ finger


def _finger_sensors(physics: Physics, *names: str) -> list[int] | None:
    model = physics.model.ptr
    addresses = [_sensor(model, name) for name in names]
    return None if any(a is None for a in addresses) else addresses  # type: ignore[return-value]


def _finger_spin(task: Any, physics: Physics) -> BatchFunction | None:
    from dm_control.suite import finger

    found = _finger_sensors(physics, "hinge_velocity")
    if found is None:
        return None
    (hinge_velocity,) = found
    spin_velocity = finger._SPIN_VELOCITY

    def reward(b: StateBatch) -> np.ndarray:
        assert b.sensordata is not None
        return (b.sensordata[..., hinge_velocity] <= -spin_velocity).astype(np.float64)

    return BatchFunction(reward, needs_sensors=True)


def _finger_tip(sensors: np.ndarray, tip: int, spinner: int) -> np.ndarray:
    """dm_control's `tip_position`: [..., 2] (x, z) of the tip relative to the spinner."""
    return sensors[..., [tip, tip + 2]] - sensors[..., [spinner, spinner + 2]]


def _finger_turn(task: Any, physics: Physics) -> BatchFunction | None:
    model = physics.model.ptr
    found = _finger_sensors(physics, "tip", "target", "spinner")
    try:
        target_site = _id(model, "site", "target")
    except KeyError:
        return None
    if found is None:
        return None
    tip, target, spinner = found

    def reward(b: StateBatch) -> np.ndarray:
        assert b.sensordata is not None
        target_position = _finger_tip(b.sensordata, target, spinner)
        to_target = target_position - _finger_tip(b.sensordata, tip, spinner)
        distance = np.linalg.norm(to_target, axis=-1) - model.site_size[target_site, 0]
        return (distance <= 0).astype(np.float64)

    return BatchFunction(reward, needs_sensors=True)


# ----------------------------------------------------------------------- cheetah


def _cheetah(task: Any, physics: Physics) -> BatchFunction | None:
    from dm_control.suite import cheetah

    speed_sensor = _sensor(physics.model.ptr, "torso_subtreelinvel")
    if speed_sensor is None:
        return None
    run_speed = cheetah._RUN_SPEED
    tolerance = _tolerance()

    def reward(b: StateBatch) -> np.ndarray:
        assert b.sensordata is not None
        speed = b.sensordata[..., speed_sensor]
        return tolerance(speed, bounds=(run_speed, float("inf")), margin=run_speed, value_at_margin=0, sigmoid="linear")

    return BatchFunction(reward, needs_sensors=True)


# ------------------------------------------------------------------------ walker


def _walker(task: Any, physics: Physics) -> BatchFunction | None:
    from dm_control.suite import walker

    model = physics.model.ptr
    rootz = _joint(model, "rootz", _SLIDE, (0.0, 0.0, 1.0))
    rootx = _joint(model, "rootx", _SLIDE, (1.0, 0.0, 0.0))
    rooty = _joint(model, "rooty", _HINGE, (0.0, 1.0, 0.0))
    velocity_sensor = _sensor(model, "torso_subtreelinvel")
    move_speed = getattr(task, "_move_speed", None)
    try:
        torso = _id(model, "body", "torso")
    except KeyError:
        return None
    if rootz is None or rootx is None or rooty is None or velocity_sensor is None or move_speed is None:
        return None
    # Torso on slides along world z and x plus a hinge about y, all at its origin, in
    # that order: height = body z + qpos[rootz], and xmat zz = cos(qpos[rooty]).
    if (
        {rootz[1], rootx[1], rooty[1]} != {torso}
        or model.body_parentid[torso] != 0
        or not _identity_frame(model, torso)
        or int(np.sum(model.jnt_bodyid == torso)) != 3
    ):
        return None
    stand_height = walker._STAND_HEIGHT
    tolerance = _tolerance()

    def reward(b: StateBatch) -> np.ndarray:
        assert b.sensordata is not None
        height = model.body_pos[torso, 2] + b.qpos[..., rootz[0]]
        standing = tolerance(height, bounds=(stand_height, float("inf")), margin=stand_height / 2)
        upright = (1 + np.cos(b.qpos[..., rooty[0]])) / 2
        stand_reward = (3 * standing + upright) / 4
        if move_speed == 0:
            return stand_reward
        move_reward = tolerance(
            b.sensordata[..., velocity_sensor],
            bounds=(move_speed, float("inf")),
            margin=move_speed / 2,
            value_at_margin=0.5,
            sigmoid="linear",
        )
        return stand_reward * (5 * move_reward + 1) / 6

    return BatchFunction(reward, needs_sensors=True)


# ----------------------------------------------------------------- public look-ups


def vector_reward(task: Any, physics: Physics) -> BatchFunction | None:
    """The vectorised reward of a dm_control task, or None when there is none.

    Matched on the task's exact class (a subclass may change the reward), then checked
    against the model's structure.

    Args:
        task: the dm_control task (`env.dmc_env.task`).
        physics: the env's dm_control physics; its model is read on each call.

    Returns:
        StateBatch -> rewards [...] of each state, or None.
    """
    from dm_control.suite import cartpole, cheetah, finger, point_mass, reacher, walker

    builders: dict[type, Callable[[Any, Physics], BatchFunction | None]] = {
        cartpole.Balance: _cartpole,
        reacher.Reacher: _reacher,
        point_mass.PointMass: _point_mass,
        finger.Spin: _finger_spin,
        finger.Turn: _finger_turn,
        cheetah.Cheetah: _cheetah,
        walker.PlanarWalker: _walker,
    }
    builder = builders.get(type(task))
    return None if builder is None else builder(task, physics)


def vector_achieved_goal(goal_task: GoalTask, physics: Physics) -> BatchFunction | None:
    """The vectorised `goal_task.achieved_goal` of a goal task in `envs.goals`, or None.

    Returns:
        StateBatch -> achieved goals [..., G] (float64, before the env's float32 cast).
    """
    model = physics.model.ptr
    kind = type(goal_task)
    if kind is ReacherPose:
        shoulder = _joint(model, "shoulder", _HINGE, (0.0, 0.0, 1.0))
        wrist = _joint(model, "wrist", _HINGE, (0.0, 0.0, 1.0))
        if shoulder is None or wrist is None:
            return None
        sh, wr = shoulder[0], wrist[0]
        return BatchFunction(lambda b: np.stack([wrap_angle(b.qpos[..., sh]), b.qpos[..., wr]], axis=-1), False)
    if kind is ReacherTarget:
        fingertip = _reacher_fingertip(physics)
        return None if fingertip is None else BatchFunction(lambda b: fingertip(b.qpos), False)
    if kind is PointMassGoal:
        root_x = _joint(model, "root_x", _SLIDE, (1.0, 0.0, 0.0))
        root_y = _joint(model, "root_y", _SLIDE, (0.0, 1.0, 0.0))
        if root_x is None or root_y is None:
            return None
        qx, qy = root_x[0], root_y[0]
        return BatchFunction(lambda b: np.stack([b.qpos[..., qx], b.qpos[..., qy]], axis=-1), False)
    if kind is FingerTurnGoal:
        found = _finger_sensors(physics, "tip", "spinner")
        if found is None:
            return None
        tip, spinner = found

        def angle(b: StateBatch) -> np.ndarray:
            assert b.sensordata is not None
            position = _finger_tip(b.sensordata, tip, spinner)
            return np.arctan2(position[..., 0], position[..., 1])[..., None]

        return BatchFunction(angle, True)
    return None
