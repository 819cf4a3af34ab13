"""The one Gaussian observation log-likelihood shared by every strategy.

Observation model (docs/design.md §2): ``y = H x + sigma * xi`` with ``xi ~ N(0, I)``.  For a
mask operator ``H = M`` with the observation lifted to the full grid,

    log p(y | x) = sum_{i : M_i} log N(y_i; x_i, sigma^2)
                 = -|M (y - x)|^2 / (2 sigma^2) - (n_obs / 2) log(2 pi sigma^2),

where ``n_obs = sum_i M_i`` counts the observed entries of one frame (or window).  The
first term is the observation cost ``l(y, x)`` of docs/design.md §2 (:func:`observation_cost`);
the second is the Gaussian normalising constant, independent of ``x``.  Gradient:

    grad_x log p(y | x) = -grad_x l(y, x) = M (y - x) / sigma^2,

which is what DPS back-propagates through the Tweedie estimate (Chung et al. 2023).

The log-likelihood is built from ``pyro.distributions.Normal(state, sigma).mask(mask)``
with the frame dimensions declared as the event (``to_event``), so it is a genuine Pyro
distribution and composes with Pyro models (e.g. the SMC cross-check against
``pyro.infer.SMCFilter``).
"""

from __future__ import annotations

import pyro.distributions as pyro_distributions
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin

from .operators import LinearOperator

__all__ = [
    "log_likelihood",
    "log_likelihood_linear",
    "observation_cost",
    "observation_cost_linear",
    "observation_distribution",
]


def _frame_ndim(mask: torch.Tensor, frame_ndim: int | None) -> int:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError("mask must be a boolean torch.Tensor")
    ndim = mask.ndim if frame_ndim is None else int(frame_ndim)
    if ndim < 0:
        raise ValueError(f"frame_ndim must be non-negative; got {ndim}")
    return ndim


def observation_distribution(
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> TorchDistributionMixin:
    """The Pyro distribution of a lifted observation given the state.

    ``Normal(state, sigma).mask(mask).to_event(frame_ndim)``: independent Gaussians on the
    grid, with unobserved entries contributing exactly 0 to ``log_prob``.

    Args:
        state: ``(..., channels, *space)``.
        mask: boolean, broadcastable to ``state``; e.g. ``(channels, *space)``.
        sigma: noise standard deviation (float, or tensor broadcastable to ``state``).
        frame_ndim: number of trailing dims forming one event (summed over);
            default ``mask.ndim``.

    Returns:
        A distribution with ``event_shape`` the trailing ``frame_ndim`` dims.
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    return pyro_distributions.Normal(state, sigma).mask(mask).to_event(ndim)


def log_likelihood(
    observation: torch.Tensor,
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> torch.Tensor:
    """``log p(y | x) = sum_{observed i} log N(y_i; x_i, sigma^2)`` for lifted observations.

    Values of ``observation`` where ``mask`` is False are ignored (they may be zeros or
    even NaN).  Differentiable with respect to ``state``; the gradient is
    ``M (y - x) / sigma^2``.

    Args:
        observation: lifted observation ``(..., channels, *space)`` (zeros where
            unobserved), broadcastable with ``state``.
        state: ``(..., channels, *space)``, e.g. ``(members, channels, *space)`` for one frame
            or ``(members, time, channels, *space)`` for a window.
        mask: boolean observation mask, broadcastable to ``state``.
        sigma: observation-noise standard deviation (float, or tensor broadcastable to
            ``state``, e.g. per channel).
        frame_ndim: number of trailing dims summed over; default ``mask.ndim``.  With a
            frame mask ``(channels, *space)`` this sums over the frame and returns the
            leading shape; with a window mask ``(time, channels, *space)`` it also sums over
            time; pass ``frame_ndim=mask.ndim - 1`` to keep one term per frame.

    Returns:
        ``state.shape[:-frame_ndim]`` (broadcast with the observation's leading shape).
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    observation = torch.where(
        mask, observation.to(state.device), torch.zeros((), dtype=state.dtype, device=state.device)
    )
    return observation_distribution(state, mask, sigma, frame_ndim=ndim).log_prob(observation)


def observation_cost(
    observation: torch.Tensor,
    state: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    frame_ndim: int | None = None,
) -> torch.Tensor:
    """The observation cost ``l(y, x) = |M (y - x)|^2 / (2 sigma^2)`` (docs/design.md §2).

    ``l(y, x) = -log p(y | x) - (n_obs / 2) log(2 pi sigma^2)`` with
    ``n_obs = sum(M)`` over the summed dims; see :func:`log_likelihood` for the arguments,
    shapes and the meaning of ``frame_ndim``.

    Returns:
        ``state.shape[:-frame_ndim]`` (broadcast with the observation's leading shape).
    """
    ndim = _frame_ndim(mask, frame_ndim)
    mask = mask.to(state.device)
    sigma = torch.as_tensor(sigma, dtype=state.dtype, device=state.device)
    residual = (observation.to(state.device) - state) / sigma
    residual = torch.where(mask, residual, torch.zeros((), dtype=state.dtype, device=state.device))
    squared = 0.5 * residual.square()
    if ndim == 0:
        return squared
    return squared.sum(dim=tuple(range(-ndim, 0)))


def log_likelihood_linear(
    observation_vector: torch.Tensor,
    state: torch.Tensor,
    operator: LinearOperator,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """``log p(y | x) = log N(y; H vec(x), sigma^2 I)`` for a general linear ``H``.

    Built as ``pyro.distributions.Normal(H vec(x), sigma).to_event(1)``.  With a selection
    matrix ``H`` (rows of the identity) this equals :func:`log_likelihood` with the
    corresponding mask.  Gradient: ``H^T (y - H x) / sigma^2``.

    Args:
        observation_vector: ``(..., n_observations)``.
        state: ``(..., *operator.frame_shape)``.
        operator: the :class:`LinearOperator` ``H``.
        sigma: noise standard deviation (float, or tensor broadcastable to
            ``(..., n_observations)``).

    Returns:
        The leading shape ``(...)``.
    """
    predicted = operator.apply(state)
    distribution = pyro_distributions.Normal(predicted, sigma).to_event(1)
    return distribution.log_prob(observation_vector.to(state.device))


def observation_cost_linear(
    observation_vector: torch.Tensor,
    state: torch.Tensor,
    operator: LinearOperator,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """``l(y, x) = |y - H vec(x)|^2 / (2 sigma^2)`` for a general linear ``H``.

    Shapes as in :func:`log_likelihood_linear`; returns the leading shape ``(...)``.
    """
    predicted = operator.apply(state)
    sigma = torch.as_tensor(sigma, dtype=predicted.dtype, device=predicted.device)
    residual = (observation_vector.to(predicted.device) - predicted) / sigma
    return 0.5 * residual.square().sum(dim=-1)
