"""``dps``: diffusion posterior sampling through the Tweedie estimate.

At every sub-step of an observed frame the control is a gradient step on the observation
misfit of x0_hat = D(z_s, sigma_s, c), differentiated w.r.t. z_s through the denoiser
(one VJP per sub-step and batch element):

- ``variant="chung"`` (Chung et al. 2023, "Diffusion posterior sampling for
  general noisy inverse problems", ICLR, Algorithm 1):
      u_s = - zeta_s * grad_z |M (y - x0_hat)|^2,   zeta_s = scale / |M (y - x0_hat)|
  i.e. the gradient of the *squared* residual norm with a step size normalised by the
  residual *norm* (``normalise=False`` drops the normalisation: zeta_s = scale).
- ``variant="score"`` (default): the likelihood score added to the reverse-time drift over the
  sub-step (the DPS approximation p(y | z_s) ~ p(y | x0_hat)):
      u_s = scale * (sigma_s^2 - sigma_{s-1}^2) * grad_z log p(y | x0_hat),
  with log p the library's one masked Gaussian log-likelihood at the problem's sigma.

The default is ``"score"`` because its step is in the units of the likelihood: it scales
with 1/sigma_y^2 and vanishes as sigma_y -> infinity, so DPS then reproduces the forecast.
Chung's step size absorbs sigma_y (its normalised step has the same length whatever the
noise), so ``"chung"`` does not have that limit; its ``scale`` must be tuned per regime.

Frames without observations are plain forecasts (no VJP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..guidance import SubStepState
from ..observe import FrameObservation
from ..process import Process
from .base import (
    ProblemView,
    StrategyState,
    initial_window,
    propagate,
    register,
    require_guided_ardm,
)


class DPSGuidance:
    """The DPS control for one frame, for a flattened batch ``(members * trajectories, ...)``.

    Args:
        observation: lifted observation ``(batch, C, *space)``, or a
            :class:`~ardm_infer.observe.FrameObservation` for the batch (any H; then ``mask``
            and ``sigma`` are taken from it).
        mask: ``(batch, C, *space)`` bool (lifted observations).
        sigma: observation noise std.
        scale: step-size scale (zeta' or the score multiplier).
        variant: ``"chung"`` or ``"score"``.
        normalise: divide by the residual norm (``"chung"`` only).
    """

    needs_grad = True

    def __init__(
        self,
        observation: torch.Tensor | FrameObservation,
        mask: torch.Tensor | None = None,
        sigma: float | None = None,
        scale: float = 1.0,
        variant: str = "score",
        normalise: bool = True,
    ) -> None:
        if not isinstance(observation, FrameObservation):
            observation = FrameObservation(observation, sigma, mask=mask)
        self.frame = observation
        self.scale = scale
        self.variant = variant
        self.normalise = normalise
        self.vjps = 0

    def control(self, state: SubStepState) -> torch.Tensor:
        batch = state.z.shape[0]
        frame_dims = tuple(range(1, state.z.ndim))
        if self.variant == "score":
            objective = self.frame.log_likelihood(state.x0_hat)
            (grad,) = torch.autograd.grad(objective.sum(), state.z)
            u = self.scale * (state.sigma**2 - state.sigma_next**2) * grad
        else:
            sq = self.frame.squared_residual(state.x0_hat)  # (batch,)
            (grad,) = torch.autograd.grad(sq.sum(), state.z)
            zeta = self.scale
            if self.normalise:
                norm = sq.detach().sqrt().clamp_min(1e-12)
                zeta = self.scale / norm.reshape(batch, *([1] * len(frame_dims)))
            u = -zeta * grad
        self.vjps += batch
        return u.detach()


@register
class DPS:
    """Diffusion posterior sampling (Chung et al. 2023) on an ARDM, frame by frame."""

    name = "dps"

    @dataclass(frozen=True)
    class Config:
        """Attributes:
        scale: the multiplier of the score step for ``"score"`` (1 = the plain DPS
            likelihood score), or zeta' for ``"chung"`` (1.0 as in Chung et al.).
        variant: ``"chung"`` or ``"score"`` (see module docstring).
        normalise: normalise the step by the residual norm (``"chung"``).
        """

        scale: float = 1.0
        variant: str = "score"
        normalise: bool = True

        def __post_init__(self) -> None:
            if self.variant not in ("chung", "score"):
                raise ValueError(f"variant must be 'chung' or 'score', got {self.variant!r}")
            if self.scale < 0:
                raise ValueError("scale must be >= 0")

    def lookahead(self, config: Config) -> int:
        """A filter: frame t's observation only."""
        return 0

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        require_guided_ardm(process, "dps", "differentiates through a denoiser")
        return StrategyState(
            window=initial_window(problem, members, process.context_length),
            diagnostics={"kl": ()},
        )

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        members = state.window.shape[0]
        guidance = None
        observation = problem.frame(t)
        if observation is not None:
            guidance = DPSGuidance(
                observation.tile(members),
                scale=config.scale,
                variant=config.variant,
                normalise=config.normalise,
            )
        with torch.no_grad():
            prop = propagate(process, state.window, generator, guidance=guidance, frame=t)
        vjps = state.vjps + (guidance.vjps if guidance is not None else 0)
        return state.record(kl=prop.kl).push(prop.frame, vjps=vjps)
