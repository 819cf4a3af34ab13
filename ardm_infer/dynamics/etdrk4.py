"""Fourth-order exponential time differencing Runge–Kutta (ETDRK4) for diagonal stiff systems.

Solves  d v / dt = L v + N(v)  where ``L`` is diagonal (in Fourier space) and ``N`` is the
nonlinear term, following Cox & Matthews (2002) with the contour-integral evaluation of the
phi-functions of Kassam & Trefethen (2005), "Fourth-order time-stepping for stiff PDEs",
SIAM J. Sci. Comput. 26(4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ETDRK4Coefficients:
    """Precomputed ETDRK4 coefficients for one (L, h); all shaped like ``L``."""

    E: torch.Tensor
    E2: torch.Tensor
    Q: torch.Tensor
    f1: torch.Tensor
    f2: torch.Tensor
    f3: torch.Tensor

    def to(self, dtype: torch.dtype, device: torch.device) -> ETDRK4Coefficients:
        return ETDRK4Coefficients(
            *(
                t.to(dtype=dtype, device=device)
                for t in (self.E, self.E2, self.Q, self.f1, self.f2, self.f3)
            )
        )


def etdrk4_coefficients(L: torch.Tensor, h: float, contour_points: int = 64) -> ETDRK4Coefficients:
    """Compute the ETDRK4 coefficients for a real diagonal operator ``L`` and step ``h``.

    The phi-functions are averaged over ``contour_points`` points on a unit circle around
    each ``h L`` (Kassam & Trefethen 2005, eq. 2.5), which avoids the cancellation error of
    the direct formulas for small ``|h L|``.  Computed in complex128 and returned as float64.

    Args:
        L: real tensor of any shape (the diagonal of the linear operator).
        h: time step.
    """
    L64 = L.detach().to(torch.float64).cpu()
    j = torch.arange(1, contour_points + 1, dtype=torch.float64)
    r = torch.exp(1j * math.pi * (j - 0.5) / contour_points)  # (M,)
    LR = (h * L64).unsqueeze(-1).to(torch.complex128) + r  # (..., M)
    eLR = torch.exp(LR)
    Q = h * ((torch.exp(LR / 2) - 1) / LR).mean(-1).real
    f1 = h * ((-4 - LR + eLR * (4 - 3 * LR + LR**2)) / LR**3).mean(-1).real
    f2 = h * ((2 + LR + eLR * (-2 + LR)) / LR**3).mean(-1).real
    f3 = h * ((-4 - 3 * LR - LR**2 + eLR * (4 - LR)) / LR**3).mean(-1).real
    E = torch.exp(h * L64)
    E2 = torch.exp(h * L64 / 2)
    return ETDRK4Coefficients(E=E, E2=E2, Q=Q, f1=f1, f2=f2, f3=f3)


def etdrk4_step(
    v: torch.Tensor,
    nonlinear: Callable[[torch.Tensor], torch.Tensor],
    c: ETDRK4Coefficients,
) -> torch.Tensor:
    """One ETDRK4 step of ``dv/dt = L v + N(v)`` in spectral space.

    Args:
        v: complex spectral state ``(batch, *modes)``; coefficients broadcast over batch.
        nonlinear: ``N``, mapping a spectral state to its nonlinear tendency (same shape).
        c: coefficients from :func:`etdrk4_coefficients` (already on v's device, real dtype).
    """
    Nv = nonlinear(v)
    a = c.E2 * v + c.Q * Nv
    Na = nonlinear(a)
    b = c.E2 * v + c.Q * Na
    Nb = nonlinear(b)
    cc = c.E2 * a + c.Q * (2 * Nb - Nv)
    Nc = nonlinear(cc)
    return c.E * v + Nv * c.f1 + 2 * (Na + Nb) * c.f2 + Nc * c.f3
