"""Resampling and regularisation of weighted particle sets, batched over trajectories.

Used by the ``smc`` strategy (whose module docstring states the filter they serve): the
effective sample size, four unbiased resampling schemes and the kernel moves of the
regularised particle filter (DAPPER's ``PartFilt`` jitter and the Liu & West 2001 shrunk
kernel).  Shapes: log-weights and ancestors are ``(members, trajectories)``; a particle's
state is its whole window ``(members, trajectories, k, C, *space)``.  Randomness comes only
from the ``generator`` argument.
"""

from __future__ import annotations

import torch

from ..soc.weights import effective_sample_size

__all__ = [
    "REGULARISATION_KERNELS",
    "RESAMPLING_METHODS",
    "effective_sample_size",
    "regularisation_noise",
    "resample_ancestors",
    "systematic_resample",
]

RESAMPLING_METHODS = ("systematic", "stratified", "residual", "multinomial")
REGULARISATION_KERNELS = ("plain", "shrunk")


def _normalised_weights(log_weights: torch.Tensor) -> torch.Tensor:
    """Normalised weights ``(trajectories, members)`` of ``(members, trajectories)``
    log-weights, in float32 at least."""
    dtype = log_weights.dtype
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return torch.softmax(log_weights.to(dtype), dim=0).T


def _uniform_positions(
    weights: torch.Tensor, generator: torch.Generator, shared: bool
) -> torch.Tensor:
    """Positions ``(j + U) / N`` in [0, 1), ``(trajectories, members)``; one U per trajectory
    (``shared``, systematic) or one per position (stratified)."""
    trajectories, members = weights.shape
    shape = (trajectories, 1) if shared else (trajectories, members)
    offset = torch.rand(shape, generator=generator, dtype=weights.dtype, device=weights.device)
    steps = torch.arange(members, dtype=weights.dtype, device=weights.device)
    return ((steps + offset) / members).contiguous()


def _inverse_cdf(weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Index i with C_{i-1} <= p < C_i for every position, ``(trajectories, members)``;
    C the cumulative weights, the last pinned to 1 against round-off."""
    cdf = torch.cumsum(weights, dim=-1)
    cdf = torch.cat([cdf[:, :-1], torch.ones_like(cdf[:, -1:])], dim=-1).contiguous()
    return torch.searchsorted(cdf, positions, right=True).clamp_(max=weights.shape[-1] - 1)


def systematic_resample(log_weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling (Kitagawa 1996), independently for every trajectory.

    One uniform U_n ~ U[0, 1) per trajectory n gives the N positions p_j = (j + U_n) / N,
    j = 0..N-1; particle i gets the positions falling in [C_{i-1}, C_i), with C the cumulative
    normalised weights.  Every particle is copied floor(N W_i) or ceil(N W_i) times and the
    expected number of copies is N W_i (unbiased).  Particles of zero weight are never chosen.

    Args:
        log_weights: ``(members, trajectories)`` log-weights (normalisation not required).
        generator: draws the ``trajectories`` uniforms.

    Returns:
        Ancestor indices ``(members, trajectories)`` (long), non-decreasing along members.
    """
    weights = _normalised_weights(log_weights)  # (trajectories, members)
    positions = _uniform_positions(weights, generator, shared=True)
    return _inverse_cdf(weights, positions).T.contiguous()


def _residual_ancestors(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Residual resampling (Liu & Chen 1998), ``(trajectories, members)`` ancestors.

    Particle i is first copied floor(N W_i) times; the R = N - sum_i floor(N W_i) remaining
    slots are drawn multinomially from the residual weights N W_i - floor(N W_i).
    """
    trajectories, members = weights.shape
    scaled = members * weights
    whole = torch.floor(scaled)
    residual = scaled - whole
    total = residual.sum(-1, keepdim=True)
    residual = torch.where(total > 0, residual / total.clamp_min(1e-300), 1.0 / members)
    draws = torch.multinomial(residual, members, replacement=True, generator=generator)
    counts = whole.to(torch.long)
    deterministic_count = counts.sum(-1, keepdim=True).clamp_(max=members)
    slot = torch.arange(members, device=weights.device).expand(trajectories, members)
    cumulative = torch.cumsum(counts, -1).contiguous()
    deterministic = torch.searchsorted(cumulative, slot.contiguous(), right=True)
    random = torch.gather(draws, 1, (slot - deterministic_count).clamp_(min=0))
    ancestors = torch.where(slot < deterministic_count, deterministic, random)
    return ancestors.clamp_(max=members - 1)


def resample_ancestors(
    log_weights: torch.Tensor, method: str, generator: torch.Generator
) -> torch.Tensor:
    """Ancestor indices by one of :data:`RESAMPLING_METHODS`, independently per trajectory.

    All are unbiased (particle i has N W_i copies in expectation).  ``systematic`` is
    :func:`systematic_resample`; ``stratified`` draws one uniform per position (Kitagawa
    1996); ``residual`` keeps floor(N W_i) copies and draws the rest (Liu & Chen 1998);
    ``multinomial`` draws N i.i.d. ancestors (Gordon et al. 1993).

    Args:
        log_weights: ``(members, trajectories)`` (normalisation not required).
        method: one of :data:`RESAMPLING_METHODS`.
        generator: the source of the uniforms / draws.

    Returns:
        Ancestors ``(members, trajectories)`` (long), non-decreasing along members.
    """
    if method == "systematic":
        return systematic_resample(log_weights, generator)
    if method not in RESAMPLING_METHODS:
        raise ValueError(f"resampling must be one of {RESAMPLING_METHODS}, got {method!r}")
    weights = _normalised_weights(log_weights).contiguous()  # (trajectories, members)
    if method == "stratified":
        ancestors = _inverse_cdf(weights, _uniform_positions(weights, generator, shared=False))
    elif method == "residual":
        ancestors = _residual_ancestors(weights, generator)
    else:
        members = weights.shape[-1]
        ancestors = torch.multinomial(weights, members, replacement=True, generator=generator)
    return torch.sort(ancestors, dim=-1).values.T.contiguous()


def regularisation_noise(
    window: torch.Tensor,
    log_weights: torch.Tensor,
    ancestors: torch.Tensor,
    active: torch.Tensor,
    regularisation: float | torch.Tensor,
    duplicates_only: bool,
    generator: torch.Generator,
    kernel: str = "plain",
) -> torch.Tensor:
    """The kernel move of the regularised particle filter (module docstring), per trajectory.

    ``kernel="plain"`` (DAPPER's ``PartFilt``): the jitter ``reg * h * C^(1/2) xi`` with C the
    weighted covariance of the particles *before* resampling (unbiased by
    ``1 / (1 - sum W^2)``; the uniform-weight covariance where the weights are degenerate,
    1 - max W < 1e-10) and h = N^(-1/(d+4)) Scott's bandwidth, d the dimension of one
    particle's window; it adds (reg h)^2 C to the covariance.  ``kernel="shrunk"`` (Liu & West
    2001): every resampled particle also moves toward the weighted mean m,
    ``x <- m + a (x - m) + b C^(1/2) xi`` with b = min(reg h, 1) and a = sqrt(1 - b^2), which
    keeps the mean and covariance (a Gaussian stays that Gaussian).  The colouring uses the
    weighted anomalies ``sqrt(W_i / (1 - sum W^2)) (x^i - m)`` directly (rank <= N) or, when
    N > 2d, their d x d factor from a thin SVD (as DAPPER's ``sample_quickly_with``); both have
    covariance C.

    Args:
        window: particles before resampling ``(members, trajectories, k, C, *space)``.
        log_weights: their normalised log-weights ``(members, trajectories)``.
        ancestors: the resampled indices ``(members, trajectories)``.
        active: ``(trajectories,)`` bool; only these trajectories are moved.
        regularisation: the factor ``reg`` (>= 0) on Scott's bandwidth, a float or one per
            trajectory ``(trajectories,)``.
        duplicates_only: plain kernel only: jitter only particles whose ancestor was drawn
            more than once (DAPPER's ``nuj``); a particle copied once keeps its state.
        generator: source of xi.
        kernel: one of :data:`REGULARISATION_KERNELS`.

    Returns:
        The move to add to the resampled window, ``window``-shaped (zeros where not applied).
    """
    if kernel not in REGULARISATION_KERNELS:
        raise ValueError(f"kernel must be one of {REGULARISATION_KERNELS}, got {kernel!r}")
    members, trajectories = window.shape[:2]
    dtype, device = window.dtype, window.device
    x = window.reshape(members, trajectories, -1).transpose(0, 1)  # (traj, members, d)
    dim = x.shape[-1]
    weights = torch.softmax(log_weights.double(), dim=0).T  # (traj, members)
    degenerate = (1.0 - weights.max(-1, keepdim=True).values) < 1e-10
    weights = torch.where(degenerate, torch.full_like(weights, 1.0 / members), weights)
    unbias = 1.0 / (1.0 - weights.square().sum(-1, keepdim=True))
    weights = weights.to(dtype)
    mean = (weights.unsqueeze(-1) * x).sum(1, keepdim=True)
    root = (weights * unbias.to(dtype)).sqrt().unsqueeze(-1) * (x - mean)  # (traj, members, d)
    if members > 2 * dim:
        _, singular, right = torch.linalg.svd(root, full_matrices=False)
        root = singular.unsqueeze(-1) * right  # (traj, d, d), the same covariance
    xi = torch.randn(
        (trajectories, members, root.shape[1]), generator=generator, dtype=dtype, device=device
    )
    bandwidth = members ** (-1.0 / (dim + 4))
    factor = torch.as_tensor(regularisation, dtype=dtype, device=device) * bandwidth
    factor = factor.expand(trajectories).reshape(-1, 1, 1)
    if kernel == "shrunk":
        factor = factor.clamp(max=1.0)
    noise = factor * (xi @ root)  # (traj, members, d)
    if kernel == "shrunk":
        chosen = torch.gather(x, 1, ancestors.T.unsqueeze(-1).expand(-1, -1, dim))
        noise = noise + ((1.0 - factor.square()).sqrt() - 1.0) * (chosen - mean)
    apply = active.to(device).unsqueeze(-1).expand(trajectories, members)
    if duplicates_only and kernel == "plain":
        counts = torch.zeros(trajectories, members, dtype=torch.long, device=device)
        index = ancestors.T.contiguous()
        counts.scatter_add_(1, index, torch.ones_like(index))
        apply = apply & (torch.gather(counts, 1, index) > 1)
    noise = noise * apply.unsqueeze(-1).to(dtype)
    return noise.transpose(0, 1).reshape(window.shape)
