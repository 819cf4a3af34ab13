"""The guided stochastic sub-step: the seam between the ARDM and every strategy.

One sub-step (docs/design.md §2):

    x0_hat = D(z_s, sigma_s, c)
    m      = x0_hat + c_s (z_s - x0_hat)
    z_{s-1} = m + u_s + tau_s xi,         xi ~ N(0, I)

with the path-space accounting of the step actually taken (discrete Girsanov):

    KL(q_u || p)          = |u_s|^2 / (2 tau_s^2)
    log q_u - log p (z_{s-1}) = (u_s . xi) / tau_s + |u_s|^2 / (2 tau_s^2)

Sums are over the frame dims ``(channels, *space)``; both are ``(batch,)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..guidance import Guidance, SubStepState
from .schedule import DeterministicSamplerError, Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``D(z (batch, C, *space), sigma (batch,), context (batch, k, C, *space)) -> x0_hat``."""


@dataclass(frozen=True)
class SubStepInfo:
    """What one sub-step did.

    Attributes:
        substep: s.
        sigma: sigma_s.
        x0_hat: D(z_s, sigma_s, c), ``(batch, channels, *space)`` (detached).
        tau: tau_s.
        noise: the xi drawn, ``(batch, channels, *space)``.
        control: u_s applied (zeros if none), ``(batch, channels, *space)``.
        kl: |u_s|^2 / (2 tau_s^2), ``(batch,)``.
        log_ratio: log q_u(z_{s-1}|z_s) - log p(z_{s-1}|z_s) of the step taken, ``(batch,)``.
        latent: z_s, the input latent (detached), ``(batch, channels, *space)``.
    """

    substep: int
    sigma: float
    x0_hat: torch.Tensor
    tau: float
    noise: torch.Tensor
    control: torch.Tensor
    kl: torch.Tensor
    log_ratio: torch.Tensor
    latent: torch.Tensor


def substep(
    denoiser: Denoiser,
    schedule: Schedule,
    z: torch.Tensor,
    s: int,
    context: torch.Tensor,
    generator: torch.Generator | None,
    guidance: Guidance | None = None,
    frame: int = 0,
) -> tuple[torch.Tensor, SubStepInfo]:
    """Run sub-step s (S..1) from latent ``z`` ``(batch, C, *space)``.

    Returns ``(z_next, info)``.  The noise is always drawn (also for eta = 0, where tau = 0)
    so that the random stream, and hence every sample, is identical with and without a
    guidance.  Gradients flow through the step unless the guidance asked for ``needs_grad``
    on a latent that did not already require grad (then the returned latent is detached,
    as DPS needs no graph across sub-steps).
    """
    sigma, sigma_next, tau, c = schedule.coefficients(s)
    batch = z.shape[0]
    frame_dims = tuple(range(1, z.ndim))
    needs_grad = guidance is not None and bool(getattr(guidance, "needs_grad", False))
    made_leaf = needs_grad and not z.requires_grad
    z_in = z.detach().requires_grad_(True) if made_leaf else z
    sigma_t = torch.full((batch,), sigma, dtype=z.dtype, device=z.device)
    with torch.enable_grad() if needs_grad else contextlib.nullcontext():
        x0_hat = denoiser(z_in, sigma_t, context)
        mean = x0_hat + c * (z_in - x0_hat)
        u = None
        if guidance is not None:
            u = guidance.control(
                SubStepState(
                    frame=frame,
                    substep=s,
                    substeps=schedule.substeps,
                    z=z_in,
                    sigma=sigma,
                    sigma_next=sigma_next,
                    x0_hat=x0_hat,
                    mean=mean,
                    tau=tau,
                    context=context,
                )
            )
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    if made_leaf:
        mean = mean.detach()
        x0_hat = x0_hat.detach()
        if u is not None:
            u = u.detach()
    if u is None:
        z_next = mean + tau * noise
        zeros = torch.zeros(batch, dtype=z.dtype, device=z.device)
        control, kl, log_ratio = torch.zeros_like(z), zeros, zeros
    else:
        if u.shape != z.shape:
            raise ValueError(
                f"control must have the latent's shape {tuple(z.shape)}, got {tuple(u.shape)}"
            )
        if tau == 0:
            if bool((u != 0).any()):
                raise DeterministicSamplerError(
                    "a non-zero control on a deterministic sub-step (eta = 0, tau = 0) has "
                    "undefined KL and importance weight; use a Schedule with eta > 0"
                )
            kl = torch.zeros(batch, dtype=z.dtype, device=z.device)
            log_ratio = kl
        else:
            kl = (u * u).sum(frame_dims) / (2 * tau**2)
            log_ratio = (u * noise).sum(frame_dims) / tau + kl
        z_next = mean + u + tau * noise
        control = u
    info = SubStepInfo(
        substep=s,
        sigma=sigma,
        x0_hat=x0_hat.detach(),
        tau=tau,
        noise=noise,
        control=control.detach(),
        kl=kl,
        log_ratio=log_ratio,
        latent=z.detach(),
    )
    return z_next, info
