"""Analytic toy systems in torch, for tests and the demo: batched, differentiable, exact.

Each system is its own world model (latent = state, `encode` is the identity) and also
its own simulator (`next` is the true dynamics), so MPC on it measures the planner alone.

Shapes: M a batch of states, S the state size, A the action size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PointMass", "Pendulum", "TOY_SYSTEMS", "angle_normalize"]


def angle_normalize(theta: Tensor) -> Tensor:
    """Wrap angles to [-pi, pi)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


@dataclass(frozen=True)
class PointMass:
    """A 2-D point mass driven by bounded accelerations towards a goal position.

    State [x, y, vx, vy], action [ax, ay] in [-1, 1] scaled by `max_accel`, semi-implicit
    Euler with linear damping. Reward: minus the distance to the goal. Success: within
    `success_radius` of the goal.
    """

    goal: tuple[float, float] = (1.0, 0.5)
    dt: float = 0.1
    max_accel: float = 1.0
    damping: float = 0.5
    success_radius: float = 0.05

    state_dim = 4
    action_dim = 2
    obs_shape = (4,)

    def initial_state(self, batch_size: int = 1, device: torch.device | str = "cpu") -> Tensor:
        """At rest at the origin: [M, 4]."""
        return torch.zeros(batch_size, 4, device=device)

    def encode(self, obs: Tensor) -> Tensor:
        return obs.float()

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        pos, vel = z[:, :2], z[:, 2:]
        accel = self.max_accel * action.clamp(-1.0, 1.0) - self.damping * vel
        vel = vel + self.dt * accel
        pos = pos + self.dt * vel
        return torch.cat([pos, vel], dim=1)

    def distance(self, z: Tensor) -> Tensor:
        """[M, 4] -> [M], the distance of each state to the goal."""
        goal = torch.tensor(self.goal, device=z.device, dtype=z.dtype)
        return (z[:, :2] - goal).norm(dim=1)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        return -self.distance(z)

    def success(self, z: Tensor) -> Tensor:
        """[M, 4] -> bool [M]."""
        return self.distance(z) < self.success_radius


@dataclass(frozen=True)
class Pendulum:
    """Torque-limited pendulum swing-up (the classic control benchmark's dynamics).

    State [theta, theta_dot] with theta = 0 upright; it starts hanging (theta = pi).
    Action in [-1, 1] scaled to `max_torque`, too weak to lift the pendulum directly, so
    it must swing. Reward: -(theta^2 + 0.1 theta_dot^2 + 0.001 torque^2), theta wrapped.
    Success: within `success_angle` of upright with |theta_dot| < 1.
    """

    gravity: float = 10.0
    mass: float = 1.0
    length: float = 1.0
    dt: float = 0.05
    max_torque: float = 2.0
    max_speed: float = 8.0
    success_angle: float = 0.2

    state_dim = 2
    action_dim = 1
    obs_shape = (2,)

    def initial_state(self, batch_size: int = 1, device: torch.device | str = "cpu") -> Tensor:
        """Hanging down at rest: [M, 2]."""
        state = torch.zeros(batch_size, 2, device=device)
        state[:, 0] = math.pi
        return state

    def encode(self, obs: Tensor) -> Tensor:
        return obs.float()

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        theta, theta_dot = z[:, 0], z[:, 1]
        torque = self.max_torque * action[:, 0].clamp(-1.0, 1.0)
        g, m, l = self.gravity, self.mass, self.length
        theta_ddot = 3 * g / (2 * l) * torch.sin(theta) + 3.0 / (m * l**2) * torque
        theta_dot = (theta_dot + theta_ddot * self.dt).clamp(-self.max_speed, self.max_speed)
        theta = theta + theta_dot * self.dt
        return torch.stack([theta, theta_dot], dim=1)

    def reward(self, z: Tensor, action: Tensor) -> Tensor:
        torque = self.max_torque * action[:, 0].clamp(-1.0, 1.0)
        return -(angle_normalize(z[:, 0]).pow(2) + 0.1 * z[:, 1].pow(2) + 0.001 * torque.pow(2))

    def success(self, z: Tensor) -> Tensor:
        """[M, 2] -> bool [M]: upright and nearly still."""
        return (angle_normalize(z[:, 0]).abs() < self.success_angle) & (z[:, 1].abs() < 1.0)


TOY_SYSTEMS = {"point_mass": PointMass, "pendulum": Pendulum}
