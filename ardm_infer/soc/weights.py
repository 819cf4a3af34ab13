"""Importance weights of guided draws against the prior, and their effective sample size.

A guided path has log-density ratio log dQ^u/dP (:func:`~ardm_infer.soc.log_density_ratio`,
or ``Propagation.log_ratio``); its importance weight is w = dP/dQ^u = exp(-log ratio), with
E_{Q^u}[w] = 1.  Shapes: one weight per draw, draws along ``dim`` (default 0), e.g.
``(batch,)`` or ``(members, trajectories)``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "effective_sample_size",
    "importance_weights",
    "log_importance_weights",
    "reweighted_mean",
]


def log_importance_weights(
    log_ratio: torch.Tensor, *, normalise: bool = False, dim: int = 0
) -> torch.Tensor:
    """Log importance weights of controlled draws against the prior.

    Unnormalised: log w_i = -log_ratio_i = log dP/dQ^u (path_i), with E_{Q^u}[w] = 1.
    Self-normalised (``normalise=True``): log W_i = log w_i - logsumexp_j log w_j over ``dim``.

    Args:
        log_ratio: log q_u - log p of each draw, e.g. ``(batch,)`` or
            ``(members, trajectories)`` (normalised over members with ``dim=0``).
        normalise: self-normalise over ``dim``.
        dim: the dimension of independent draws.

    Returns:
        The shape of ``log_ratio``.
    """
    log_w = -log_ratio
    if normalise:
        log_w = log_w - torch.logsumexp(log_w, dim=dim, keepdim=True)
    return log_w


def importance_weights(
    log_ratio: torch.Tensor, *, normalise: bool = False, dim: int = 0
) -> torch.Tensor:
    """``exp`` of :func:`log_importance_weights`: w_i = dP/dQ^u (path_i) (or W_i, summing to 1).

    Args:
        log_ratio: log q_u - log p of each draw, e.g. ``(batch,)`` or
            ``(members, trajectories)``.
        normalise: self-normalise over ``dim``.
        dim: the dimension of independent draws.

    Returns:
        The shape of ``log_ratio``.
    """
    return torch.exp(log_importance_weights(log_ratio, normalise=normalise, dim=dim))


def reweighted_mean(
    values: torch.Tensor, log_ratio: torch.Tensor, *, normalise: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate E_P[f] from draws of Q^u, with its Monte-Carlo standard error.

    Unnormalised: (1/n) sum_i w_i f_i, standard error std(w f) / sqrt(n) (unbiased).
    Self-normalised: sum_i W_i f_i, standard error sqrt(sum_i W_i^2 (f_i - estimate)^2)
    (delta method; consistent, biased at O(1/n)).

    Args:
        values: f(path_i), ``(n, ...)`` (draws first).
        log_ratio: log q_u - log p of each draw, ``(n,)``.
        normalise: self-normalised estimator.

    Returns:
        ``(estimate, standard_error)``, each ``values.shape[1:]``.
    """
    n = values.shape[0]
    if log_ratio.shape != (n,):
        raise ValueError(f"log_ratio must be ({n},), got {tuple(log_ratio.shape)}")
    expand = (slice(None),) + (None,) * (values.ndim - 1)
    if normalise:
        weights = importance_weights(log_ratio, normalise=True)[expand].to(values.dtype)
        estimate = (weights * values).sum(0)
        error = torch.sqrt((weights**2 * (values - estimate) ** 2).sum(0))
        return estimate, error
    weighted = importance_weights(log_ratio)[expand].to(values.dtype) * values
    return weighted.mean(0), weighted.std(0) / math.sqrt(n)


def effective_sample_size(
    log_weights: torch.Tensor, dim: int = 0, *, normalised: bool = False
) -> torch.Tensor:
    """Kish's ESS = (sum_i w_i)^2 / sum_i w_i^2 = 1 / sum_i W_i^2 (Kong, Liu & Wong 1994).

    The one ESS of the library: SMC's resampling rule and the SOC checks both use it.

    Args:
        log_weights: log-weights log w_i of the draws along ``dim``, e.g. ``(batch,)`` or
            ``(members, trajectories)``; for guided draws against the prior that is
            ``-log_ratio`` (:func:`log_importance_weights`).
        dim: the dimension of the draws.
        normalised: the weights are already self-normalised over ``dim``
            (logsumexp = 0, e.g. SMC's particle weights): skip the normalisation.

    Returns:
        ``log_weights.shape`` without ``dim``; in [1, number of draws].
    """
    log_w = log_weights
    if not normalised:
        log_w = log_w - torch.logsumexp(log_w, dim=dim, keepdim=True)
    return torch.exp(-torch.logsumexp(2 * log_w, dim=dim))
