"""Analytic toy systems in torch, for tests and the demo: batched, differentiable, exact.

Each system is its own world model (latent = state, `encode` is the identity) and also
its own simulator (`next` is the true dynamics), so MPC on it measures the planner alone.

Shapes: M a batch of states, S the state size, A the action size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["PointMass", "Pendulum", "TOY_SYSTEMS", "TOY_TASKS", "ToyEnv", "angle_normalize"]


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
        g, m, length = self.gravity, self.mass, self.length
        theta_ddot = 3 * g / (2 * length) * torch.sin(theta) + 3.0 / (m * length**2) * torque
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

# The toy systems as tasks of the command line: "toy-<system>".
TOY_TASKS = {f"toy-{name}": name for name in TOY_SYSTEMS}
# Planner budgets and episode lengths per toy task.
TOY_PLANNER_DEFAULTS = {
    "toy-pendulum": {"horizon": 25, "num_samples": 200, "num_elites": 20, "iterations": 4},
    "toy-point_mass": {"horizon": 15, "num_samples": 200, "num_elites": 20, "iterations": 4},
}
TOY_STEPS = {"toy-pendulum": 100, "toy-point_mass": 50}


class ToyEnv:
    """A toy system behind the reset/step interface of `training.run_episode`: the state
    is the observation, episodes last `TOY_STEPS[task]` steps, start states are the
    system's rest state plus N(0, 0.05^2) noise drawn from the episode seed."""

    def __init__(self, task: str, device: torch.device | str = "cpu") -> None:
        if task not in TOY_TASKS:
            raise ValueError(f"unknown toy task {task!r}; choose one of {sorted(TOY_TASKS)}")
        self.system = TOY_SYSTEMS[TOY_TASKS[task]]()
        self.max_episode_steps = TOY_STEPS[task]
        self.device = device

    def reset(self, seed: int) -> tuple[Tensor, dict[str, Any]]:
        noise = torch.randn(self.system.state_dim, generator=torch.Generator().manual_seed(seed))
        self.state = self.system.initial_state(1, self.device) + 0.05 * noise.to(self.device)
        self.steps = 0
        return self.state[0], {}

    def step(self, action: np.ndarray) -> tuple[Tensor, float, bool, bool, dict[str, Any]]:
        a = torch.as_tensor(action, device=self.device).view(1, -1)
        reward = float(self.system.reward(self.state, a))
        self.state = self.system.next(self.state, a)
        self.steps += 1
        info = {"is_success": bool(self.system.success(self.state)[0])}
        return self.state[0], reward, False, self.steps >= self.max_episode_steps, info

    def close(self) -> None:
        pass


# -- the registry's entry points (models.registry) ------------------------------------------


def prepare_planning(request: Any, model_name: str | None = None) -> Any:
    """MPC over a toy system's exact dynamics, undiscounted, a fresh controller seeded
    with each episode's seed."""
    from models.planning import PlanSetup, build_planner, describe_planner
    from planners import MPCController

    if request.task not in TOY_TASKS:
        raise ValueError(f"toy models plan on the toy tasks {sorted(TOY_TASKS)}, not {request.task!r}")
    model_name = model_name or request.task
    env = ToyEnv(request.task, request.device)
    planner = build_planner(request, env.system.action_dim, TOY_PLANNER_DEFAULTS[request.task])
    controller = MPCController(env.system, planner, discount=1.0, seed=request.seed, device=request.device)

    def controller_for_episode(episode: int) -> MPCController:
        return MPCController(env.system, planner, discount=1.0, seed=request.seed + episode, device=request.device)

    return PlanSetup(env=env, controller=controller, controller_for_episode=controller_for_episode,
                     description=f"planner {request.planner} {describe_planner(planner)}, model {model_name}")


def _tiny(system: PointMass | Pendulum) -> Any:
    from models.planning import TinyCase

    return TinyCase(model=system, obs=system.initial_state(1)[0], action_dim=system.action_dim,
                    controller_kwargs={"use_value": False, "discount": 1.0})


def tiny_pendulum() -> Any:
    return _tiny(Pendulum())


def tiny_point_mass() -> Any:
    return _tiny(PointMass())
