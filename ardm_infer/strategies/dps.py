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
  with log p the library's one Gaussian log-likelihood at the problem's sigma (any linear
  H: ``|y - H x0_hat|`` replaces ``|M (y - x0_hat)|`` for a general operator).

The default is ``"score"`` because its step is in the units of the likelihood: it scales
with 1/sigma_y^2 and vanishes as sigma_y -> infinity, so DPS then reproduces the forecast.
Chung's step size absorbs sigma_y (its normalised step has the same length whatever the
noise), so ``"chung"`` does not have that limit; its ``scale`` must be tuned per regime.

Step bound.  The score step grows like 1/sigma_y^2: at small sigma_y (KS: sigma_y <= 5e-3)
it overshoots the observation by orders of magnitude at every sub-step and the sampler
diverges.  Its control is therefore bounded relative to the sub-step's own noise,

    u_s <- u_s min(1, max_step * tau_s / rms(u_s)),   rms(u) = sqrt(mean over the frame of u^2),

per batch element, so a sub-step never moves the latent further than ``max_step`` times the
noise it adds (default 1), which keeps DPS finite for any sigma_y > 0.  Chung's step is
normalised by the residual and does not grow with 1/sigma_y^2; it is not bounded.  At sigma_y = 0.1
the KS and twin controls stay below 0.05 tau_s and are never bounded (outputs unchanged).
The kernel accounts for the bounded control (its KL and path weight), so a bounded DPS is
still an exact proposal for ``smc``.

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
from .config import option, validate_config


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
        max_step: bound on rms(u_s) / tau_s per batch element of the ``"score"`` control
            (module docstring), or None.
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
        max_step: float | None = 1.0,
        last_substeps: int | None = None,
    ) -> None:
        if not isinstance(observation, FrameObservation):
            observation = FrameObservation(observation, sigma, mask=mask)
        self.frame = observation
        self.scale = scale
        self.variant = variant
        self.normalise = normalise
        self.max_step = max_step
        self.last_substeps = last_substeps
        self.vjps = 0
        self.bounded = 0

    def control(self, state: SubStepState) -> torch.Tensor | None:
        if self.last_substeps is not None and state.substep > self.last_substeps:
            return None  # guidance acts on the last sub-steps only
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
        u = u.detach()
        if self.max_step is None or self.variant != "score":
            return u
        rms = u.square().mean(frame_dims).sqrt()  # (batch,)
        bound = self.max_step * state.tau
        over = rms > bound
        if not bool(over.any()):
            return u
        self.bounded += int(over.sum())
        factor = (bound / rms).reshape(batch, *([1] * len(frame_dims)))
        return torch.where(over.reshape(factor.shape), u * factor, u)


@register
class DPS:
    """Diffusion posterior sampling (Chung et al. 2023) on an ARDM, frame by frame."""

    name = "dps"
    divergence_hint = "lower scale or max_step"

    @dataclass(frozen=True)
    class Config:
        """Options of DPS (module docstring)."""

        scale: float = option(
            1.0,
            'The multiplier of the score step for "score" (1 = the plain DPS likelihood '
            'score), or zeta\' for "chung" (1.0 as in Chung et al.).',
            low=0.0,
        )
        variant: str = option(
            "score", "The DPS step (module docstring).", kind=str, choices=("chung", "score")
        )
        normalise: bool = option(
            True, 'Normalise the step by the residual norm ("chung").', kind=bool
        )
        max_step: float | None = option(
            1.0,
            "Bound on the RMS of each sub-step's \"score\" control in units of that sub-step's "
            "noise std tau_s (keeps DPS finite at small sigma_y); None: unbounded.",
            low=0.0,
            low_open=True,
            optional=True,
        )
        last_substeps: int | None = option(
            None,
            "Guide only the last n sub-steps of every frame (s <= n, where x0_hat is close to "
            "the frame and a step on it moves the frame); None: every sub-step.",
            kind=int,
            low=1,
            optional=True,
        )

        def __post_init__(self) -> None:
            validate_config(self)

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
            diagnostics={"kl": (), "bounded_steps": 0},
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
                max_step=config.max_step,
                last_substeps=config.last_substeps,
            )
        with torch.no_grad():
            prop = propagate(process, state.window, generator, guidance=guidance, frame=t)
        vjps = state.vjps + (guidance.vjps if guidance is not None else 0)
        bounded = state.diagnostics["bounded_steps"] + (0 if guidance is None else guidance.bounded)
        state = state.record(kl=prop.kl).with_diagnostics(bounded_steps=bounded)
        return state.push(prop.frame, vjps=vjps)
