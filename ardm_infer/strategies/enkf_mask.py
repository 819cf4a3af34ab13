"""EnKF analyses of one frame for mask observations (the ``enkf`` strategy's maths).

The perturbed-observation EnKF and the (localised) ETKF of one frame's ensemble, relaxation
to prior spread and the augmented state of the smoother / context update; the equations,
references and conventions are in :mod:`ardm_infer.strategies.enkf`, which runs them.

Shapes: the ensemble of one frame is ``(members, trajectories, C, *space)``; observation and
mask of one frame are ``(trajectories, C, *space)``.
"""

from __future__ import annotations

import math

import torch

from .localisation import (
    circular_convolution,
    gaspari_cohn,
    localisation_kernel,
    periodic_distance,
)

__all__ = ["augment", "etkf_analysis", "perturbed_analysis", "relax_to_prior_spread"]

# --------------------------------------------------------------------------- helpers


def _split(
    ensemble: torch.Tensor, mask: torch.Tensor, inflation: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and inflated anomalies of a frame ensemble, members last.

    Args:
        ensemble: ``(members, trajectories, C, *space)``.
        mask: ``(trajectories, C, *space)`` bool; trajectories with nothing observed are
            not inflated.

    Returns:
        ``(mean, anomalies, observed_any)``: mean ``(trajectories, D)``, anomalies
        ``(trajectories, D, members)``, observed_any ``(trajectories,)`` bool.
    """
    members, trajectories = ensemble.shape[:2]
    x = ensemble.reshape(members, trajectories, -1).permute(1, 2, 0)
    mean = x.mean(-1)
    observed_any = mask.reshape(trajectories, -1).to(x.device).any(-1)
    factor = torch.where(
        observed_any,
        torch.tensor(float(inflation), dtype=x.dtype, device=x.device),
        torch.ones((), dtype=x.dtype, device=x.device),
    )
    anomalies = (x - mean.unsqueeze(-1)) * factor.view(-1, 1, 1)
    return mean, anomalies, observed_any


def _check(ensemble: torch.Tensor, observation: torch.Tensor, mask: torch.Tensor) -> None:
    if ensemble.shape[0] < 2:
        raise ValueError(
            f"the EnKF needs >= 2 members to estimate a covariance, got {ensemble.shape[0]}"
        )
    if tuple(observation.shape) != tuple(ensemble.shape[1:]) or tuple(mask.shape) != tuple(
        ensemble.shape[1:]
    ):
        raise ValueError(
            "observation and mask must be (trajectories, C, *space) = "
            f"{tuple(ensemble.shape[1:])}; got {tuple(observation.shape)} and "
            f"{tuple(mask.shape)}"
        )


# --------------------------------------------------------------------------- analyses


def etkf_transform(
    mean: torch.Tensor,
    anomalies: torch.Tensor,
    scaled_obs_anomalies: torch.Tensor,
    scaled_innovation: torch.Tensor,
) -> torch.Tensor:
    """The global ETKF update through the thin SVD ``R^-1/2 Y = U S V^T`` (see
    :func:`etkf_analysis`), shared by the mask and the general-H analyses.

    Args:
        mean: forecast mean ``(traj, D)``.
        anomalies: inflated forecast anomalies X ``(traj, D, members)``.
        scaled_obs_anomalies: ``R^-1/2 H X`` ``(traj, p, members)``.
        scaled_innovation: ``R^-1/2 (y - H x_mean)`` ``(traj, p)``.

    Returns:
        The analysis ``(traj, D, members)``.
    """
    k1 = anomalies.shape[-1] - 1.0
    u, s, vh = torch.linalg.svd(scaled_obs_anomalies, full_matrices=False)
    lam = s.square()  # eigenvalues of Y^T R^-1 Y on the span of V
    projected = (u * scaled_innovation.unsqueeze(-1)).sum(-2)  # U^T R^-1/2 d
    mean_weights = ((s / (lam + k1)) * projected).unsqueeze(-2) @ vh  # (traj, 1, members)
    gain = torch.sqrt(k1 / (lam + k1)) - 1.0  # W = I + V diag(gain) V^T
    xv = anomalies @ vh.transpose(-1, -2)  # X V, (traj, D, r)
    return (
        mean.unsqueeze(-1)
        + anomalies @ mean_weights.transpose(-1, -2)
        + anomalies
        + (xv * gain.unsqueeze(-2)) @ vh
    )


def etkf_analysis(
    ensemble: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    inflation: float = 1.0,
    localisation_radius: float | None = None,
) -> torch.Tensor:
    """Square-root ETKF / LETKF analysis of one frame (Hunt, Kostelich & Szunyogh 2007).

    With forecast anomalies ``X`` (inflated), ``Y = H X``, ``k = members``:

        A~ = [(k - 1) I + Y^T R^-1 Y]^-1,   w = A~ Y^T R^-1 (y - H x_mean),
        W = [(k - 1) A~]^(1/2) (symmetric),  x_a^i = x_mean + X (w + W_i).

    ``H`` is the mask (lifted observations) and ``R^-1 = M / sigma^2`` is zero on unobserved
    entries, which is exact (an unobserved entry is an observation of infinite variance).
    The symmetric square root keeps the analysis mean at ``x_mean + X w`` (``Y 1 = 0`` makes
    ``1`` an eigenvector of ``W`` with eigenvalue 1).

    Without localisation, the thin SVD ``R^-1/2 Y = U S V^T`` gives every matrix function of
    ``Y^T R^-1 Y = V S^2 V^T`` without forming a ``members x members`` matrix, so both large
    ensembles on small grids and small ensembles on large grids are cheap.

    With ``localisation_radius = c`` (grid points), this is the LETKF: every grid location
    ``p`` gets its own ``A~_p``, ``w_p``, ``W_p`` from ``R_p^-1 = diag(GC(|p - q| / c) M_q /
    sigma^2)`` (observation-error localisation, Hunt et al. 2007 §2.3), then updates the
    channels at ``p``.  The local sums ``sum_q GC(|p - q|) Y_q^T R_q^-1 Y_q`` are circular
    convolutions over the periodic grid (FFT), followed by one batched ``eigh`` per
    ``(trajectory, location)``: memory ``trajectories * locations * members^2``.

    Args:
        ensemble: forecast ``(members, trajectories, C, *space)``.
        observation: lifted ``(trajectories, C, *space)`` (values where unobserved ignored).
        mask: bool ``(trajectories, C, *space)``.
        sigma: observation-noise standard deviation.
        inflation: multiplicative inflation of the forecast anomalies (observed trajectories).
        localisation_radius: Gaspari-Cohn half-width ``c`` in grid points, or None.

    Returns:
        The analysis ensemble, ``(members, trajectories, C, *space)``.
    """
    _check(ensemble, observation, mask)
    members, trajectories = ensemble.shape[:2]
    channels, space = ensemble.shape[2], tuple(ensemble.shape[3:])
    dtype, device = ensemble.dtype, ensemble.device
    mean, anomalies, _ = _split(ensemble, mask, inflation)
    weight = mask.reshape(trajectories, -1).to(device=device, dtype=dtype)
    precision = weight / sigma**2  # diagonal of R^-1, 0 where unobserved
    y = torch.where(weight > 0, observation.reshape(trajectories, -1).to(device, dtype), 0.0)
    innovation = (y - mean) * weight  # (trajectories, D)
    obs_anomalies = anomalies * weight.unsqueeze(-1)  # Y = H X, (trajectories, D, members)
    k1 = members - 1.0

    if localisation_radius is None:
        root = precision.sqrt()
        analysis = etkf_transform(
            mean, anomalies, root.unsqueeze(-1) * obs_anomalies, root * innovation
        )
        return analysis.permute(2, 0, 1).reshape(ensemble.shape)

    # LETKF: per-location precision-weighted sums, localised by circular convolution.
    locations = math.prod(space)
    shape = (trajectories, channels, locations)
    y_loc = obs_anomalies.reshape(*shape, members)
    p_loc = precision.reshape(shape)
    d_loc = innovation.reshape(shape)
    # z_q = sum_c Y_cq^T R^-1_cq Y_cq, b_q = sum_c Y_cq^T R^-1_cq d_cq
    z = torch.einsum("ncq,ncqa,ncqb->nabq", p_loc, y_loc, y_loc)
    b = torch.einsum("ncq,ncqa,ncq->naq", p_loc, y_loc, d_loc)
    kernel = localisation_kernel(space, float(localisation_radius), dtype, device)
    z = circular_convolution(z.reshape(trajectories, members, members, *space), kernel)
    b = circular_convolution(b.reshape(trajectories, members, *space), kernel)
    z = z.reshape(trajectories, members, members, locations).permute(0, 3, 1, 2)
    b = b.reshape(trajectories, members, locations).permute(0, 2, 1)  # (traj, P, members)
    z = 0.5 * (z + z.transpose(-1, -2))
    eye = torch.eye(members, dtype=dtype, device=device)
    lam, v = torch.linalg.eigh(z + k1 * eye)  # (traj, P, members), (traj, P, members, members)
    lam = lam.clamp_min(k1)  # exact eigenvalues are >= k - 1 (z is PSD)
    vt = v.transpose(-1, -2)
    mean_weights = (v * (1.0 / lam).unsqueeze(-2)) @ (vt @ b.unsqueeze(-1))  # (traj,P,m,1)
    root = (v * torch.sqrt(k1 / lam).unsqueeze(-2)) @ vt  # W_p, (traj, P, members, members)
    transform = root + mean_weights  # T[j, i] = W[j, i] + w[j]
    x_loc = anomalies.reshape(*shape, members)
    analysis = torch.einsum("ncpj,npji->ncpi", x_loc, transform) + mean.reshape(shape).unsqueeze(-1)
    return analysis.reshape(trajectories, -1, members).permute(2, 0, 1).reshape(ensemble.shape)


def perturbed_analysis(
    ensemble: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    inflation: float = 1.0,
    localisation_radius: float | None = None,
    solve_in: str = "auto",
) -> torch.Tensor:
    """Stochastic (perturbed-observation) EnKF analysis of one frame (Burgers et al. 1998).

        x_a^i = x_f^i + K (y + eps^i - H x_f^i),   K = P H^T (H P H^T + R)^-1,

    with ``P = X X^T / (k - 1)`` from the inflated anomalies ``X`` and ``eps^i = sigma xi^i``,
    ``xi`` standard normal from ``generator`` and centred over the members (Evensen 2003
    §4.2: the perturbations then have zero sample mean, so the analysis mean is exactly
    ``x_mean + K (y - H x_mean)``, while their ``1/(k-1)`` sample covariance stays unbiased).

    Observations are gathered per trajectory: the observed entries of each trajectory come
    first, padded to the largest count ``J`` over trajectories; padded rows have ``H = 0``,
    innovation 0 and unit variance, so they change nothing.  The gain is formed in
    observation space (``J x J`` solve) or, without localisation and when
    ``members <= J``, in ensemble space through the Woodbury identity
    ``K = X' (I + Y'^T R^-1 Y')^-1 Y'^T R^-1`` with ``X' = X / sqrt(k-1)``, ``Y' = H X'``.

    With ``localisation_radius = c`` the covariances are Schur products with the
    Gaspari-Cohn matrix of periodic grid distances (Houtekamer & Mitchell 2001):
    ``K = (L o P) H^T (H (L o P) H^T + R)^-1``; memory ``trajectories * D * J``.

    Args:
        ensemble: forecast ``(members, trajectories, C, *space)``.
        observation: lifted ``(trajectories, C, *space)``.
        mask: bool ``(trajectories, C, *space)``.
        sigma: observation-noise standard deviation.
        generator: source of the observation perturbations, drawn as ``(members,
            trajectories, J)`` on the generator's device.
        inflation: multiplicative inflation of the forecast anomalies (observed trajectories).
        localisation_radius: Gaspari-Cohn half-width ``c`` in grid points, or None.
        solve_in: ``"auto"``, ``"observation"`` or ``"ensemble"`` (the last only without
            localisation); both give the same gain up to round-off.

    Returns:
        The analysis ensemble, ``(members, trajectories, C, *space)``.
    """
    _check(ensemble, observation, mask)
    if solve_in not in ("auto", "observation", "ensemble"):
        raise ValueError(f"solve_in must be 'auto', 'observation' or 'ensemble', got {solve_in!r}")
    if solve_in == "ensemble" and localisation_radius is not None:
        raise ValueError("a localised perturbed-obs gain is formed in observation space")
    members, trajectories = ensemble.shape[:2]
    space = tuple(ensemble.shape[3:])
    locations = math.prod(space)
    dtype, device = ensemble.dtype, ensemble.device
    mean, anomalies, _ = _split(ensemble, mask, inflation)
    forecast = mean.unsqueeze(-1) + anomalies  # inflated members, (traj, D, members)
    scaled = anomalies / math.sqrt(members - 1)  # X'

    flat_mask = mask.reshape(trajectories, -1).to(device)
    count = int(flat_mask.sum(-1).max())
    if count == 0:  # nothing observed: no inflation, no update
        return ensemble.clone()
    # observed entries first (stable: increasing index), padded to the largest count
    index = torch.argsort((~flat_mask).to(torch.int8), dim=-1, stable=True)[:, :count]
    valid = torch.gather(flat_mask, 1, index)  # (traj, J)
    weight = valid.to(dtype)
    y = torch.gather(observation.reshape(trajectories, -1).to(device, dtype), 1, index)
    y = torch.where(valid, y, 0.0)
    rows = index.unsqueeze(-1).expand(trajectories, count, members)
    h_scaled = torch.gather(scaled, 1, rows) * weight.unsqueeze(-1)  # H X', (traj, J, members)
    h_forecast = torch.gather(forecast, 1, rows)  # (traj, J, members)

    xi = torch.randn(
        (members, trajectories, count), generator=generator, dtype=dtype, device=generator.device
    ).to(device)
    eps = sigma * (xi - xi.mean(0, keepdim=True)).permute(1, 2, 0)  # (traj, J, members)
    innovation = (y.unsqueeze(-1) + eps - h_forecast) * weight.unsqueeze(-1)

    use_ensemble = solve_in == "ensemble" or (
        solve_in == "auto" and localisation_radius is None and members <= count
    )
    if use_ensemble:
        precision = weight / sigma**2
        eye = torch.eye(members, dtype=dtype, device=device)
        system = eye + h_scaled.transpose(-1, -2) @ (precision.unsqueeze(-1) * h_scaled)
        rhs = h_scaled.transpose(-1, -2) @ (precision.unsqueeze(-1) * innovation)
        update = scaled @ torch.linalg.solve(system, rhs)
    else:
        cross = scaled @ h_scaled.transpose(-1, -2)  # P H^T, (traj, D, J)
        innovation_cov = h_scaled @ h_scaled.transpose(-1, -2)  # H P H^T, (traj, J, J)
        if localisation_radius is not None:
            c = float(localisation_radius)
            state_loc = torch.arange(anomalies.shape[1], device=device) % locations
            obs_loc = index % locations
            cross = cross * gaspari_cohn(
                periodic_distance(state_loc.view(1, -1, 1), obs_loc.unsqueeze(1), space, dtype), c
            )
            innovation_cov = innovation_cov * gaspari_cohn(
                periodic_distance(obs_loc.unsqueeze(-1), obs_loc.unsqueeze(1), space, dtype), c
            )
        # R on observed rows, 1 on padded rows (which have H = 0 and innovation 0)
        noise_var = weight * sigma**2 + (1.0 - weight)
        system = innovation_cov + torch.diag_embed(noise_var)
        update = cross @ torch.linalg.solve(system, innovation)
    analysis = forecast + update
    return analysis.permute(2, 0, 1).reshape(ensemble.shape)


def relax_to_prior_spread(
    forecast: torch.Tensor, analysis: torch.Tensor, factor: float, mask: torch.Tensor
) -> torch.Tensor:
    """Relaxation to prior spread (RTPS; Whitaker & Hamill 2012, eq. 3).

        x_a^i <- m_a + (alpha sigma_f / sigma_a + 1 - alpha) (x_a^i - m_a),

    with sigma_f, sigma_a the member standard deviations (``1/(N-1)``) of every entry of the
    forecast and the analysis, so the analysis spread becomes ``(1 - alpha) sigma_a +
    alpha sigma_f`` entry by entry and the mean ``m_a`` is unchanged.  Entries with
    sigma_a = 0 and trajectories that observe nothing at this frame are left as they are.

    Args:
        forecast: ``(members, trajectories, C, *space)`` (before inflation).
        analysis: the same shape.
        factor: alpha in [0, 1].
        mask: ``(trajectories, C, *space)`` bool, the frame's observed entries.

    Returns:
        The relaxed analysis, ``analysis``-shaped.
    """
    if factor == 0:
        return analysis
    mean = analysis.mean(0, keepdim=True)
    spread_a = analysis.std(0, keepdim=True)
    spread_f = forecast.std(0, keepdim=True)
    scale = factor * spread_f / spread_a.clamp_min(torch.finfo(analysis.dtype).tiny)
    scale = torch.where(spread_a > 0, scale + 1.0 - factor, torch.ones_like(scale))
    observed = mask.reshape(mask.shape[0], -1).any(-1).to(analysis.device)
    observed = observed.view(1, -1, *([1] * (analysis.ndim - 2)))
    return torch.where(observed, mean + scale * (analysis - mean), analysis)


def augment(
    frame: torch.Tensor,
    lagged: list[torch.Tensor],
    observation: torch.Tensor,
    mask: torch.Tensor,
    inflation: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The augmented state of the fixed-lag smoother, stacked along the channel axis.

    ``frame`` ``(members, trajectories, C, *space)`` and the ``lagged`` ensembles (same shape
    each) become ``(members, trajectories, C * (1 + len(lagged)), *space)``; the lagged part is
    unobserved (mask False, observation 0) and its anomalies are divided by ``inflation`` on
    the trajectories that observe something, so that the analysis's inflation leaves them
    un-inflated.  Returns ``(ensemble, observation, mask)``.
    """
    stacked = torch.cat(lagged, dim=2)
    observed = mask.reshape(mask.shape[0], -1).any(-1).to(frame.device)
    if inflation != 1.0:
        mean = stacked.mean(0, keepdim=True)
        factor = torch.where(observed, 1.0 / inflation, 1.0).to(frame.dtype)
        factor = factor.view(1, -1, *([1] * (frame.ndim - 2)))
        stacked = mean + (stacked - mean) * factor
    hidden = torch.zeros(stacked.shape[1:], dtype=torch.bool, device=mask.device)
    return (
        torch.cat([frame, stacked], dim=2),
        torch.cat([observation, torch.zeros_like(stacked[0], dtype=observation.dtype)], dim=1),
        torch.cat([mask, hidden], dim=1),
    )
