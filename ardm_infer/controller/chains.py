"""On-policy training chains of the controller: truncated backpropagation through long runs.

At inference the controller acts on contexts that are the model's *own* earlier frames,
which drift away from the truth (for the KS ARDM the unguided forecast needs about 120
frames to reach an error of 0.1, i.e. sigma_y); windows that always start from the true
context would never show it that situation (over 4 frames from the truth the forecast error
is ~0.006, far below the observation noise, so there is nothing to correct). The B windows
of a step are therefore the next windows of B persistent chains: each chain starts from a
true context at a random time of a random training trajectory with its own regime, and every
window continues from the frames the controlled ARDM generated in the chain's previous
window. A chain restarts with probability ``chain_reset`` before each window (mean length
L / chain_reset frames) or when its trajectory ends. This is on-policy training (as DAgger /
scheduled sampling) at no extra cost: every window is rolled out once.

Every chain is, from its last reset on, the benchmark's problem of its regime: its masks are
the regime's own (:meth:`~ardm_infer.observe.Regime.window_masks` from the chain's clock) and
its observations ``y = M (x + sigma_y xi)``.

Ensembles: with ``members`` M > 1 every chain is an ensemble of M members that share its
trajectory, time, regime and observations; the members' contexts are rows ``m * B + b``
(members-major, as the strategies flatten members x trajectories) and all start from the
true context at a reset (they then spread under the stochastic sampler).

Shapes: data ``(trajectories, time, C, *space)``; a window has context
``(M * B, k, C, *space)``, truth/observation/mask ``(B, L, C, *space)``, sigma_y ``(B,)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..observe import Regime, RegimeDistribution, add_noise, parse_regime

__all__ = ["Chains"]


class Chains:
    """B persistent rollout chains: truncated backpropagation through long assimilation runs.

    Chain b follows trajectory ``traj[b]`` of the data; ``time[b]`` is the index of the
    next frame it generates, ``clock[b]`` the frames it has generated since its last reset,
    ``context[b]`` its last k frames (its *own* frames after the first window, detached),
    and ``regimes[b]`` its :class:`~ardm_infer.observe.Regime` (drawn at the reset; the
    chain is that regime's problem from its reset on, so its window masks are
    ``regimes[b].window_masks(..., start=clock[b], ...)``).  A reset puts a chain at a
    uniform random time of a random trajectory with the true context and a new regime.  All
    indices live on the CPU; ``context`` on the data's device.
    """

    def __init__(self, batch: int, frames: torch.Tensor, k: int, members: int = 1) -> None:
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.members = members
        self.traj = torch.zeros(batch, dtype=torch.long)
        self.time = torch.zeros(batch, dtype=torch.long)
        self.clock = torch.zeros(batch, dtype=torch.long)
        self.live = torch.zeros(batch, dtype=torch.bool)
        self.context = torch.zeros(
            members * batch, k, *frames.shape[2:], dtype=frames.dtype, device=frames.device
        )
        self.regimes: list[Regime | None] = [None] * batch

    def tensors(self) -> dict[str, torch.Tensor]:
        """The chains' tensors, for a checkpoint."""
        out = {f"chains.{n}": getattr(self, n) for n in ("traj", "time", "clock", "live")}
        out["chains.context"] = self.context
        return out

    def state(self) -> dict[str, Any]:
        """The chains' regimes (spec strings; None before a chain's first window)."""
        return {"regimes": [None if r is None else r.spec() for r in self.regimes]}

    def load(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Inverse of :meth:`tensors` and :meth:`state`."""
        for n in ("traj", "time", "clock", "live"):
            setattr(self, n, tensors[f"chains.{n}"].clone())
        self.context = tensors["chains.context"].to(self.context)
        self.regimes = [None if r is None else parse_regime(r) for r in state["regimes"]]

    def advance(
        self,
        frames: torch.Tensor,
        window: int,
        regimes: RegimeDistribution,
        reset_probability: float,
        generator: torch.Generator,
        span: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Reset the chains that need it, then draw the next window of every chain.

        A chain is reset if it was never started, with probability ``reset_probability``,
        or if its trajectory has fewer than ``window`` frames left; a reset chain starts at
        a time leaving at least ``span`` (default ``window``) frames.

        Returns ``(context (M * B, k, ...), truth (B, L, ...), observation (B, L, ...),
        mask (B, L, ...), sigma (B,), rollout generator)``; the caller writes the generated
        frames back with :meth:`push`.
        """
        batch, k = self.traj.shape[0], self.context.shape[1]
        n, length = frames.shape[:2]
        frame_shape = tuple(frames.shape[2:])
        g = generator
        # Resets (every random number is drawn whatever the outcome).
        u_reset = torch.rand(batch, generator=g)
        new_traj = torch.randint(0, n, (batch,), generator=g)
        new_time = torch.randint(k, length - max(window, span or 0) + 1, (batch,), generator=g)
        new_regimes = regimes.draw(batch, frame_shape, g)
        reset = ~self.live | (u_reset < reset_probability) | (self.time + window > length)
        self.traj = torch.where(reset, new_traj, self.traj)
        self.time = torch.where(reset, new_time, self.time)
        self.clock = torch.where(reset, torch.zeros_like(self.clock), self.clock)
        self.regimes = [
            new if r else old
            for new, old, r in zip(new_regimes, self.regimes, reset.tolist(), strict=True)
        ]
        dev = frames.device
        true_context = frames[
            self.traj[:, None].to(dev), (self.time[:, None] + torch.arange(-k, 0)).to(dev)
        ]
        r = reset.to(dev).reshape(batch, *([1] * (self.context.ndim - 1)))
        tile = (self.members,) + (1,) * (self.context.ndim - 1)
        self.context = torch.where(r.repeat(tile), true_context.repeat(tile), self.context)
        self.live = torch.ones_like(self.live)
        # The window.
        index = (self.time[:, None] + torch.arange(window)).to(dev)
        truth = frames[self.traj[:, None].to(dev), index]
        mask = regimes.masks(self.regimes, self.clock, window, frame_shape, g).to(dev)
        sigma = torch.tensor([r.sigma for r in self.regimes], dtype=torch.float64).to(truth)
        sig = sigma.reshape(batch, *([1] * (truth.ndim - 1)))
        observation = add_noise(truth * mask, sig, g, mask)
        seed = int(torch.randint(0, 2**62, (1,), generator=g).item())
        rollout_generator = torch.Generator(device=dev).manual_seed(seed)
        return self.context, truth, observation, mask, sigma, rollout_generator

    def push(self, generated: torch.Tensor) -> None:
        """Continue every chain from its generated window ``(M * B, L, C, *space)`` (detached)."""
        window = generated.shape[1]
        k = self.context.shape[1]
        self.context = torch.cat([self.context, generated.detach()], dim=1)[:, -k:]
        self.time = self.time + window
        self.clock = self.clock + window
