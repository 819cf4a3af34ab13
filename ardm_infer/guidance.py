"""The guidance seam: the only thing the ARDM knows about inference (docs/design.md §3).

At every denoising sub-step the sampler hands a :class:`SubStepState` to the guidance, which
returns the control u_s to add to the sampler's mean (or ``None`` for no control):

    z_{s-1} = m(z_s, s, c) + u_s + tau_s * xi,      xi ~ N(0, I).

Shapes: every tensor in :class:`SubStepState` is a batch of frames ``(batch, channels, *space)``
except ``context`` ``(batch, k, channels, *space)``; the control has the frame shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class SubStepState:
    """What a guidance may look at when choosing the control of one sub-step.

    Attributes:
        frame: index of the physical frame being generated (as passed by the caller).
        substep: s, counting down from S to 1.
        substeps: S.
        z: the current latent z_s, ``(batch, channels, *space)``; a leaf requiring grad when
            the guidance declares ``needs_grad``.
        sigma: noise level sigma_s of z.
        sigma_next: noise level sigma_{s-1} of the next latent.
        x0_hat: Tweedie estimate D(z_s, sigma_s, c), differentiable w.r.t. ``z`` when
            ``needs_grad``.
        mean: the prior sampler mean m(z_s, s, c) of z_{s-1}.
        tau: the noise standard deviation tau_s of this sub-step.
        context: the conditioning frames ``(batch, k, channels, *space)``.
    """

    frame: int
    substep: int
    substeps: int
    z: torch.Tensor
    sigma: float
    sigma_next: float
    x0_hat: torch.Tensor
    mean: torch.Tensor
    tau: float
    context: torch.Tensor


@runtime_checkable
class Guidance(Protocol):
    """Chooses the control u_s of each sub-step.

    ``needs_grad``: if True, the kernel computes ``x0_hat`` with autograd enabled on ``z`` so
    that the guidance can differentiate through the denoiser (DPS); each such call is counted
    as a VJP by whoever calls ``torch.autograd.grad``.
    """

    needs_grad: bool

    def control(self, state: SubStepState) -> torch.Tensor | None:
        """Return u_s ``(batch, channels, *space)`` or ``None`` (no control)."""
        ...


class ZeroGuidance:
    """Always returns a zero control tensor (useful to check that u = 0 is the prior)."""

    needs_grad = False

    def control(self, state: SubStepState) -> torch.Tensor:
        return torch.zeros_like(state.mean)


class FunctionGuidance:
    """Wraps a function ``state -> control`` as a :class:`Guidance`."""

    def __init__(self, function, needs_grad: bool = False) -> None:
        self.function = function
        self.needs_grad = needs_grad

    def control(self, state: SubStepState) -> torch.Tensor | None:
        return self.function(state)
