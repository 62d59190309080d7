"""TD-MPC2's learning rule for the TOLD model, and its acting rule (MPPI with the model).

One `update` (Hansen et al., 2024, section 3 and appendix):
- encode a batch of subsequences, roll the dynamics H = 3 steps from the first latent;
- consistency: MSE between each predicted latent and the (no-grad) encoding of the real
  next observation, coefficient 20;
- reward: two-hot cross-entropy in symlog space, coefficient 0.1;
- value: every Q head's two-hot cross-entropy to the TD target r + gamma * min of 2 random
  target Q heads at (z', pi(z')), coefficient 0.1;
- each step weighted rho^t (rho = 0.5); losses averaged over the horizon (and Q heads);
- Adam (lr 3e-4, encoder lr x 0.3), gradient norm clipped at 20;
- then the policy prior: maximise scaled Q (the running 5-95 percentile range of Q) plus
  an entropy bonus 1e-4, with Q's parameters frozen; then Polyak-update the target Q
  heads (tau 0.01).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.told import TOLD, soft_cross_entropy
from planners import MPPI, MPCController

__all__ = ["TOLDLossConfig", "TOLDAgent", "RunningScale", "COMPILE_MODES"]

# What `TOLDAgent(compile=...)` takes: off, torch.compile's default mode, or a named mode.
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class TOLDLossConfig:
    """TD-MPC2's optimisation settings (ANCHORS section 2)."""

    batch_size: int = 256
    horizon: int = 3
    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    entropy_coef: float = 1e-4
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    grad_clip_norm: float = 20.0
    tau: float = 0.01
    discount: float = 0.99

    def __post_init__(self) -> None:
        for name in ("batch_size", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be at least 1")
        if not 0.0 < self.discount <= 1.0:
            raise ValueError(f"discount={self.discount!r} must be in (0, 1]")


class RunningScale:
    """Slow estimate of the spread of Q (its 5th-95th percentile range, at least 1), to scale
    the policy loss so that one entropy coefficient fits tasks with very different reward
    scales."""

    def __init__(self, tau: float = 0.01) -> None:
        self.tau = tau
        self.value = 1.0

    def update(self, x: Tensor) -> None:
        q = torch.quantile(x.detach().float().flatten(), torch.tensor([0.05, 0.95], device=x.device))
        # Floor 1 (TD-MPC2): Q starts at exactly 0 (zero-initialised heads) and stays small on
        # sparse tasks; without the floor the scale would shrink towards 0 and Q / scale
        # would drown the entropy bonus just when exploration matters.
        spread = max(float(q[1] - q[0]), 1.0)
        self.value += self.tau * (spread - self.value)

    def __call__(self, x: Tensor) -> Tensor:
        return x / max(self.value, 1e-6)


class TOLDAgent:
    """A TOLD model with its optimisers and planner: `update(batch)` and `act(obs)`.

    Args:
        model: the TOLD world model.
        loss: optimisation settings.
        planner: MPPI (TD-MPC2's preset by default) used by `act`.
        device: where the model lives.
        seed: seeds planning (actions) and the model's sampling.
        compile: run the update's loss functions through `torch.compile` (the first
            updates pay the compile time): True for the default mode, or a mode name;
            "reduce-overhead" also records them as CUDA graphs on a GPU, as TD-MPC2
            compiles its update, which removes the launch cost of their many small kernels.
        precision: of the model while planning ("float32" or "bfloat16"; see
            `MPCController`). Updates always run in float32.
    """

    def __init__(
        self,
        model: TOLD,
        loss: TOLDLossConfig | None = None,
        planner: MPPI | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        compile: bool | str = False,
        precision: str = "float32",
    ) -> None:
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile={compile!r} must be one of {COMPILE_MODES}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss = loss or TOLDLossConfig()
        c = self.loss
        encoder_params = list(model.encoder.parameters())
        others = [p for name, p in model.named_parameters() if not name.startswith(("encoder.", "policy_head.", "target_q_heads."))]
        self.optimizer = torch.optim.Adam(
            [{"params": encoder_params, "lr": c.lr * c.enc_lr_scale}, {"params": others, "lr": c.lr}], lr=c.lr
        )
        self.policy_optimizer = torch.optim.Adam(model.policy_head.parameters(), lr=c.lr, eps=1e-5)
        self._model_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self._policy_params = list(model.policy_head.parameters())
        # The loss functions, optionally through torch.compile (inductor fuses the many
        # small elementwise passes of LayerNorm, Mish, SimNorm and the 101-bin softmaxes).
        self._model_loss = self._model_loss_eager
        self._policy_terms = self._policy_terms_eager
        self._graphed = compile in ("reduce-overhead", "max-autotune")
        if compile:
            mode = None if compile is True else compile
            self._model_loss = torch.compile(self._model_loss_eager, dynamic=False, mode=mode)
            self._policy_terms = torch.compile(self._policy_terms_eager, dynamic=False, mode=mode)
        self.scale = RunningScale(c.tau)
        self.planner = planner or MPPI.tdmpc2(model.config.action_dim)
        self.controller = MPCController(
            model, self.planner, objective="reward", discount=c.discount, use_value=True, device=self.device, seed=seed,
            precision=precision,
        )
        self.generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.model.generator = self.generator
        self.model.eval()

    # -- acting ---------------------------------------------------------------------------

    def reset(self) -> None:
        """A new episode: drop the planner's warm start."""
        self.controller.reset()

    @torch.no_grad()
    def act(self, obs: np.ndarray, explore: bool = False) -> np.ndarray:
        """Plan with MPPI; with `explore`, add the planner's final std[0] as Gaussian noise
        (TD-MPC2's exploration during training). numpy [*obs] or [B, *obs] -> [A] or [B, A]."""
        action = self.controller.act(obs)
        if explore:
            result = self.controller.last_result
            assert result is not None
            std = result.std[:, 0].cpu().numpy()  # [B, A]
            noise = torch.randn(std.shape, generator=self.generator, device=self.device).cpu().numpy()
            action = np.clip(action + (std * noise).reshape(action.shape), -1.0, 1.0).astype(np.float32)
        return action

    # -- learning -------------------------------------------------------------------------

    def update(self, batch: dict[str, np.ndarray]) -> dict[str, float]:
        """One gradient step of the model and one of the policy prior.

        Args:
            batch: time-major subsequences from `EpisodeReplay.sample`:
                obs [H + 1, B, *obs], action [H, B, A], reward [H, B].

        Returns:
            the losses and gradient norm as floats.
        """
        c, model = self.loss, self.model
        obs = torch.as_tensor(batch["obs"], device=self.device)
        action = torch.as_tensor(batch["action"], device=self.device)
        reward = torch.as_tensor(batch["reward"], device=self.device)
        if obs.dtype != torch.uint8:
            obs = obs.float()
        horizon, b = action.shape[:2]
        a_dim = model.config.action_dim
        # The random draws are made here, outside the (optionally compiled) loss functions,
        # from the agent's generator: reproducible, and no RNG state inside a graph.
        gen, dev = self.generator, self.device
        next_eps = torch.randn(horizon * b, a_dim, generator=gen, device=dev)
        target_heads = model.random_heads(dev)

        model.train()
        if self._graphed:
            # A new step for the recorded graphs: the previous update's outputs may be overwritten.
            torch.compiler.cudagraph_mark_step_begin()
        total, consistency, reward_loss, value_loss, zs = self._model_loss(obs, action, reward, next_eps, target_heads)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._model_params, c.grad_clip_norm)
        self.optimizer.step()

        zs = zs.detach()
        pi_eps = torch.randn(zs.shape[0] * b, a_dim, generator=gen, device=dev)
        q, entropy = self._policy_terms(zs, pi_eps, model.random_heads(dev))  # [H + 1, B] each
        self.scale.update(q[0])
        weights = c.rho ** torch.arange(zs.shape[0], device=dev, dtype=torch.float32)
        policy_loss = (-(c.entropy_coef * entropy + self.scale(q)).mean(1) * weights).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        torch.nn.utils.clip_grad_norm_(self._policy_params, c.grad_clip_norm)
        self.policy_optimizer.step()

        model.update_target(c.tau)
        model.eval()
        return {
            "consistency_loss": float(consistency.detach()),
            "reward_loss": float(reward_loss.detach()),
            "value_loss": float(value_loss.detach()),
            "policy_loss": float(policy_loss.detach()),
            "total_loss": float(total.detach()),
            "grad_norm": float(grad_norm),
        }

    def _model_loss_eager(
        self, obs: Tensor, action: Tensor, reward: Tensor, next_eps: Tensor, target_heads: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """TD-MPC2's model loss (consistency + reward + value) over a horizon-H rollout.

        Shapes:
            obs [H + 1, B, *obs], action [H, B, A], reward [H, B], next_eps [H * B, A]
            (policy noise at the next latents), target_heads [2].
        Returns:
            total, consistency, reward and value losses (per-step averages), latents
            zs [H + 1, B, Z].
        """
        c, model, cfg = self.loss, self.model, self.model.config
        horizon, b = action.shape[:2]
        # Targets: encodings of the real next observations and TD targets, no gradient and
        # no dropout (TD-MPC2 computes them before switching the model to training mode).
        with torch.no_grad():
            was_training = model.training
            model.eval()
            next_z = model.encode(obs[1:].flatten(0, 1)).view(horizon, b, -1)  # [H, B, Z]
            flat_next = next_z.flatten(0, 1)
            next_action = model.sample_policy(flat_next, eps=next_eps)[0]
            next_q = model.q_value(flat_next, next_action, kind="min", target=True, members=target_heads)
            td_target = reward + c.discount * next_q.view(horizon, b)
            model.train(was_training)

        z = model.encode(obs[0])  # [B, Z]
        latents = [z]
        weights = c.rho ** torch.arange(horizon, device=obs.device, dtype=torch.float32)  # [H]
        consistency = torch.zeros((), device=obs.device)
        for t in range(horizon):
            z = model.next(z, action[t])
            consistency = consistency + F.mse_loss(z, next_z[t]) * weights[t]
            latents.append(z)
        zs = torch.stack(latents)  # [H + 1, B, Z]
        flat_z, flat_a = zs[:-1].flatten(0, 1), action.flatten(0, 1)  # [H * B, Z], [H * B, A]
        reward_ce = soft_cross_entropy(model.reward_logits(flat_z, flat_a), reward.flatten(), cfg.num_bins, cfg.vmin, cfg.vmax)
        reward_loss = (reward_ce.view(horizon, b).mean(1) * weights).sum()
        q_logits = model.q_logits(flat_z, flat_a)  # [E, H * B, K]
        target = td_target.flatten().unsqueeze(0).expand(q_logits.shape[0], -1)
        value_ce = soft_cross_entropy(q_logits, target, cfg.num_bins, cfg.vmin, cfg.vmax)  # [E, H * B]
        value_loss = (value_ce.view(-1, horizon, b).mean(2) * weights).sum(1).mean()
        consistency, reward_loss, value_loss = consistency / horizon, reward_loss / horizon, value_loss / horizon
        total = c.consistency_coef * consistency + c.reward_coef * reward_loss + c.value_coef * value_loss
        return total, consistency, reward_loss, value_loss, zs

    def _policy_terms_eager(self, zs: Tensor, eps: Tensor, heads: Tensor) -> tuple[Tensor, Tensor]:
        """Q of the policy's actions through frozen Q heads, and the policy's entropy.

        Shapes: zs [T, B, Z] (detached), eps [T * B, A], heads [2] -> q [T, B], entropy [T, B]
        """
        steps, b = zs.shape[:2]
        flat = zs.flatten(0, 1)
        action, _, entropy = self.model.sample_policy(flat, eps=eps)
        q = self.model.q_value(flat, action, kind="avg", members=heads, detach_params=True)
        return q.view(steps, b), entropy.view(steps, b)

    # -- state for checkpoints ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to continue training (weights_only-loadable)."""
        return {
            "agent": self.model.checkpoint(),
            "optimizer": self.optimizer.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "scale": self.scale.value,
            "loss_config": asdict(self.loss),
            "generator": self.generator.get_state(),
            "controller_generator": None if self.controller.generator is None else self.controller.generator.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["agent"]["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.scale.value = float(state["scale"])
        self.generator.set_state(state["generator"])
        if state.get("controller_generator") is not None and self.controller.generator is not None:
            self.controller.generator.set_state(state["controller_generator"])
