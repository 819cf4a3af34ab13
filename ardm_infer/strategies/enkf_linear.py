"""EnKF analyses of one frame for a general linear observation operator H.

The ``enkf`` strategy's mask analyses (:func:`~ardm_infer.strategies.enkf.etkf_analysis`,
:func:`~ardm_infer.strategies.enkf.perturbed_analysis`) work on lifted observations with a
mask; these are the same updates for vector observations ``y = H vec(x) + sigma xi`` of any
:class:`~ardm_infer.observe.LinearOperator` (e.g. local averages), without localisation
(H has no observation locations).  With H a selection matrix they give the mask analyses up
to round-off (tests/test_strategies.py).

Shapes: the ensemble of one frame is ``(members, trajectories, C, *space)``, flattened to
``D = C * prod(space)`` in row-major order (the operator's order); observations are
``(trajectories, p)``.
"""

from __future__ import annotations

import math

import torch

from ..observe import LinearOperator
from .enkf_mask import etkf_transform

__all__ = ["etkf_analysis_linear", "perturbed_analysis_linear"]


def _linear_split(
    ensemble: torch.Tensor, observation: torch.Tensor, operator: LinearOperator, inflation: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean ``(traj, D)``, inflated anomalies ``(traj, D, members)``, ``H`` ``(p, D)`` and the
    observation vectors ``(traj, p)`` in the ensemble's dtype and device."""
    members, trajectories = ensemble.shape[:2]
    if members < 2:
        raise ValueError(f"the EnKF needs >= 2 members to estimate a covariance, got {members}")
    h = operator.matrix.to(device=ensemble.device, dtype=ensemble.dtype)
    if tuple(observation.shape) != (trajectories, h.shape[0]):
        raise ValueError(
            f"observation must be (trajectories, n_observations) = ({trajectories}, "
            f"{h.shape[0]}); got {tuple(observation.shape)}"
        )
    x = ensemble.reshape(members, trajectories, -1).permute(1, 2, 0)  # (traj, D, members)
    mean = x.mean(-1)
    anomalies = (x - mean.unsqueeze(-1)) * inflation
    return mean, anomalies, h, observation.to(ensemble.device, ensemble.dtype)


def etkf_analysis_linear(
    ensemble: torch.Tensor,
    observation: torch.Tensor,
    operator: LinearOperator,
    sigma: float,
    inflation: float = 1.0,
) -> torch.Tensor:
    """Square-root ETKF analysis of one frame for a general linear ``H`` (Hunt et al. 2007).

    The formulas of :func:`etkf_analysis` with ``Y = H X`` ``(p, members)``, ``d = y - H
    x_mean`` and ``R = sigma^2 I`` in the p-dimensional observation space; through the thin
    SVD ``Y / sigma = U S V^T`` nothing of size ``members x members`` or ``p x p`` is inverted.
    No localisation (H has no observation locations).

    Args:
        ensemble: forecast ``(members, trajectories, C, *space)``.
        observation: ``(trajectories, n_observations)``.
        operator: ``H`` acting on the flattened frame.
        sigma: observation-noise standard deviation.
        inflation: multiplicative inflation of the forecast anomalies.

    Returns:
        The analysis ensemble, ``(members, trajectories, C, *space)``.
    """
    mean, anomalies, h, y = _linear_split(ensemble, observation, operator, inflation)
    innovation = y - mean @ h.T  # (traj, p)
    obs_anomalies = h @ anomalies  # Y = H X, (traj, p, members)
    analysis = etkf_transform(mean, anomalies, obs_anomalies / sigma, innovation / sigma)
    return analysis.permute(2, 0, 1).reshape(ensemble.shape)


def perturbed_analysis_linear(
    ensemble: torch.Tensor,
    observation: torch.Tensor,
    operator: LinearOperator,
    sigma: float,
    generator: torch.Generator,
    inflation: float = 1.0,
) -> torch.Tensor:
    """Stochastic EnKF analysis of one frame for a general linear ``H`` (Burgers et al. 1998).

    ``x_a^i = x_f^i + K (y + eps^i - H x_f^i)``, ``K = X' Y'^T (Y' Y'^T + sigma^2 I)^-1`` with
    ``X' = X / sqrt(k - 1)``, ``Y' = H X'`` and ``eps^i = sigma xi^i`` centred over the members
    (as :func:`perturbed_analysis`).  No localisation.

    Args:
        ensemble: forecast ``(members, trajectories, C, *space)``.
        observation: ``(trajectories, n_observations)``.
        operator: ``H`` acting on the flattened frame.
        sigma: observation-noise standard deviation.
        generator: source of the perturbations, drawn as ``(members, trajectories, p)``.
        inflation: multiplicative inflation of the forecast anomalies.

    Returns:
        The analysis ensemble, ``(members, trajectories, C, *space)``.
    """
    mean, anomalies, h, y = _linear_split(ensemble, observation, operator, inflation)
    members, trajectories = ensemble.shape[:2]
    forecast = mean.unsqueeze(-1) + anomalies  # (traj, D, members)
    scaled = anomalies / math.sqrt(members - 1)
    h_scaled = h @ scaled  # (traj, p, members)
    count = h.shape[0]
    xi = torch.randn(
        (members, trajectories, count),
        generator=generator,
        dtype=ensemble.dtype,
        device=generator.device,
    ).to(ensemble.device)
    eps = sigma * (xi - xi.mean(0, keepdim=True)).permute(1, 2, 0)  # (traj, p, members)
    innovation = y.unsqueeze(-1) + eps - h @ forecast
    eye = torch.eye(count, dtype=ensemble.dtype, device=ensemble.device)
    system = h_scaled @ h_scaled.transpose(-1, -2) + sigma**2 * eye
    update = scaled @ (h_scaled.transpose(-1, -2) @ torch.linalg.solve(system, innovation))
    return (forecast + update).permute(2, 0, 1).reshape(ensemble.shape)
