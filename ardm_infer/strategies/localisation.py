"""Localisation for ensemble Kalman analyses: the Gaspari-Cohn taper on periodic grids.

Distances are periodic per spatial axis (grid units) and the taper is the compactly
supported fifth-order function of Gaspari & Cohn (1999); :func:`localisation_kernel` is the
taper as a field around the origin and :func:`circular_convolution` applies such a kernel
over the trailing spatial axes by FFT.  Used by ``enkf``'s LETKF and perturbed-observation
analyses (:mod:`ardm_infer.strategies.enkf`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["circular_convolution", "gaspari_cohn", "localisation_kernel", "periodic_distance"]


def gaspari_cohn(distance: torch.Tensor, radius: float) -> torch.Tensor:
    """The Gaspari & Cohn (1999, eq. 4.10) compactly supported correlation function.

    With ``r = distance / radius``:

        1 - 5/3 r^2 + 5/8 r^3 + 1/2 r^4 - 1/4 r^5                  0 <= r <= 1
        4 - 5 r + 5/3 r^2 + 5/8 r^3 - 1/2 r^4 + 1/12 r^5 - 2/(3 r)   1 <  r <= 2
        0                                                           r > 2

    so it is 1 at distance 0, about 0.21 at ``radius`` and exactly 0 from ``2 * radius``.

    Args:
        distance: non-negative distances, any shape.
        radius: the half-width ``c`` (in the units of ``distance``), > 0.

    Returns:
        Correlations in [0, 1], the shape and dtype of ``distance``.
    """
    r = distance / radius
    inner = 1 - 5 / 3 * r**2 + 5 / 8 * r**3 + 0.5 * r**4 - 0.25 * r**5
    rs = r.clamp_min(1.0)  # avoid 1/0 where the outer branch is not used
    outer = 4 - 5 * rs + 5 / 3 * rs**2 + 5 / 8 * rs**3 - 0.5 * rs**4 + rs**5 / 12 - 2 / (3 * rs)
    zero = torch.zeros((), dtype=r.dtype, device=r.device)
    return torch.where(r <= 1, inner, torch.where(r <= 2, outer, zero)).clamp_min(0.0)


def periodic_distance(
    a: torch.Tensor, b: torch.Tensor, space: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """Euclidean distance in grid points between flat grid locations on a periodic grid.

    Each axis wraps around (distance ``min(|i - j|, n - |i - j|)`` per axis), then the
    per-axis distances combine as ``sqrt(sum_axis dist^2)``.

    Args:
        a: integer flat location indices in ``[0, prod(space))``, any shape.
        b: same, broadcastable with ``a``.
        space: the spatial grid ``(n_1, ..., n_k)``.
        dtype: floating dtype of the result.

    Returns:
        ``broadcast(a, b).shape`` distances.
    """
    ca = torch.unravel_index(a, space)
    cb = torch.unravel_index(b, space)
    total = None
    for ia, ib, n in zip(ca, cb, space, strict=True):  # loop over axes (1 or 2), not points
        delta = (ia - ib).abs()
        delta = torch.minimum(delta, n - delta).to(dtype)
        total = delta.square() if total is None else total + delta.square()
    return total.sqrt()


def localisation_kernel(
    space: tuple[int, ...], radius: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Gaspari-Cohn weight of every grid offset on the periodic grid, ``space``-shaped.

    ``kernel[o] = GC(|o|_periodic / radius)``; the localised sum ``sum_q GC(|p - q|) z[q]``
    is the circular convolution of ``z`` with this kernel.
    """
    locations = torch.arange(math.prod(space), device=device)
    zero = torch.zeros((), dtype=torch.long, device=device)
    return gaspari_cohn(periodic_distance(locations, zero, space, dtype), radius).reshape(space)


def circular_convolution(field: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``out[..., p] = sum_q kernel[p - q] field[..., q]`` over the trailing spatial axes.

    Args:
        field: ``(..., *space)``.
        kernel: ``space``-shaped.
    """
    dims = tuple(range(-kernel.ndim, 0))
    spectrum = torch.fft.rfftn(field, dim=dims) * torch.fft.rfftn(kernel, dim=dims)
    return torch.fft.irfftn(spectrum, s=kernel.shape, dim=dims)
