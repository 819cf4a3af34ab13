"""Scoring: the one canonical definition of every evaluation metric (docs/design.md §7).

One file on purpose (about 760 lines): it is the one home of every score the protocol
reports (docs/design.md §4), so that every strategy is scored by the same definitions.

Every function is pure torch, batched (no Python loop over members or grid points),
device-agnostic (outputs live on the device of the inputs) and keeps the input dtype.
Nothing mutates its inputs.

Shapes. Ensembles carry an explicit member axis ``member_dim`` (default 0, the
library layout ``(members, time, channels, *space)``).  ``truth`` / ``observation``
has the ensemble's shape with the member axis removed, e.g.
``(time, channels, *space)``; it only needs to broadcast against that shape.

Weights (particle ensembles).  ``weights`` are non-negative and are normalised to
sum to one along the member axis.  Accepted layouts:

* ``(members,)``: the same weights at every point;
* a tensor whose leading dimensions follow the ensemble's own leading dimensions,
  with the member axis at ``member_dim``; missing trailing dimensions are treated as
  broadcast (singleton) dimensions.  With ``member_dim=0`` this is
  ``(members, *batch)``, e.g. per-time SMC weights ``(members, time)`` for an
  ensemble ``(members, time, channels, *space)``.

Weights that sum to zero along the member axis give NaN.

Physics diagnostics belong to their system, not here: the KS total variation, the
Kolmogorov enstrophy and dissipation, the Lorenz-96 mean energy are in
:mod:`ardm_infer.systems` (``systems.ks.total_variation``, ``systems.kolmogorov.dissipation``,
...), and ``get_system(name).physics`` is the one the benchmark scores.

Glossary of the maths: ``x_i`` member i, ``w_i`` its normalised weight (``1/N``
unweighted), ``y`` the truth or observation, ``N`` the number of members,
``m = Σ_i w_i x_i`` the ensemble mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "blow_up",
    "crps_ensemble",
    "energy_spectrum",
    "ensemble_mean",
    "high_correlation_time",
    "kolmogorov_energy_spectrum",
    "max_spectrum_relative_error",
    "pearson_correlation",
    "pit_values",
    "rank_histogram",
    "rmse",
    "spectrum_relative_error",
    "spread",
    "spread_skill_ratio",
]

Dims = int | Sequence[int] | None


# ----------------------------------------------------------------------------- helpers


def _canonical_dim(dim: int, ndim: int) -> int:
    """Return ``dim`` as a non-negative index into a tensor of rank ``ndim``."""
    if not -ndim <= dim < ndim:
        raise ValueError(f"dimension {dim} is out of range for a tensor of rank {ndim}")
    return dim % ndim


def _canonical_dims(dims: Dims, ndim: int) -> tuple[int, ...]:
    """Return ``dims`` (``None`` = all) as a sorted tuple of non-negative indices."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    out = tuple(sorted({_canonical_dim(d, ndim) for d in dims}))
    if len(out) != len(tuple(dims)):
        raise ValueError(f"repeated dimension in {tuple(dims)}")
    return out


def _mean_over(x: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Mean over ``dims`` (``None`` = all, ``()`` = none)."""
    d = _canonical_dims(dims, x.ndim)
    return x.mean(dim=d) if d else x


def _normalised_weights(
    weights: torch.Tensor, ensemble: torch.Tensor, member_dim: int
) -> torch.Tensor:
    """Weights aligned with ``ensemble`` and normalised along the member axis.

    Args:
        weights: ``(members,)`` or ``(*leading)`` laid out like ``ensemble``'s leading
            dimensions with the member axis at ``member_dim`` (see module docstring).
        ensemble: the ensemble, member axis at ``member_dim``.
        member_dim: member axis of ``ensemble``.

    Returns:
        Weights of rank ``ensemble.ndim`` broadcastable to ``ensemble.shape``, with
        ``Σ_i w_i = 1`` along ``member_dim``; dtype and device of ``ensemble``.
    """
    member_dim = _canonical_dim(member_dim, ensemble.ndim)
    w = torch.as_tensor(weights, dtype=ensemble.dtype, device=ensemble.device)
    given = tuple(w.shape)
    if w.ndim == 1:
        shape = [1] * ensemble.ndim
        shape[member_dim] = w.shape[0]
        w = w.reshape(shape)
    elif 1 < w.ndim <= ensemble.ndim:
        w = w.reshape(*w.shape, *([1] * (ensemble.ndim - w.ndim)))
    else:
        raise ValueError(
            f"weights of shape {given} do not fit an ensemble of shape {tuple(ensemble.shape)}"
        )
    n = ensemble.shape[member_dim]
    if w.shape[member_dim] != n:
        raise ValueError(
            f"weights have {w.shape[member_dim]} entries along the member axis, "
            f"the ensemble has {n} members"
        )
    try:
        broadcast = torch.broadcast_shapes(w.shape, ensemble.shape)
    except RuntimeError as error:
        raise ValueError(
            f"weights of shape {given} do not broadcast to the ensemble "
            f"shape {tuple(ensemble.shape)}"
        ) from error
    if broadcast != ensemble.shape:
        raise ValueError(
            f"weights of shape {given} would enlarge the ensemble shape {tuple(ensemble.shape)}"
        )
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    return w / w.sum(dim=member_dim, keepdim=True)


def _check_members(ensemble: torch.Tensor, member_dim: int, minimum: int, what: str) -> int:
    """Return the number of members, raising if it is below ``minimum``."""
    n = ensemble.shape[_canonical_dim(member_dim, ensemble.ndim)]
    if n < minimum:
        raise ValueError(f"{what} needs at least {minimum} member(s), got {n}")
    return n


# ----------------------------------------------------------------------------- moments


def ensemble_mean(
    ensemble: torch.Tensor, member_dim: int = 0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """(Weighted) ensemble mean ``m = Σ_i w_i x_i`` (``w_i = 1/N`` unweighted).

    Args:
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``.
        member_dim: member axis.
        weights: optional particle weights (see module docstring), normalised here.

    Returns:
        ``shape`` (the ensemble shape without the member axis).
    """
    _check_members(ensemble, member_dim, 1, "ensemble_mean")
    if weights is None:
        return ensemble.mean(dim=member_dim)
    w = _normalised_weights(weights, ensemble, member_dim)
    return (w * ensemble).sum(dim=member_dim)


def _ensemble_variance(
    ensemble: torch.Tensor, member_dim: int, weights: torch.Tensor | None
) -> torch.Tensor:
    """Unbiased (reliability-weighted) ensemble variance, shape without the member axis.

    ``s² = Σ_i w_i (x_i − m)² / (1 − Σ_i w_i²)``; with ``w_i = 1/N`` this is the usual
    ``1/(N−1) Σ_i (x_i − m)²``.
    """
    if weights is None:
        return ensemble.var(dim=member_dim, correction=1)
    w = _normalised_weights(weights, ensemble, member_dim)
    mean = (w * ensemble).sum(dim=member_dim, keepdim=True)
    biased = (w * (ensemble - mean).square()).sum(dim=member_dim)
    sum_w2 = w.square().sum(dim=member_dim).expand_as(biased)
    return biased / (1 - sum_w2)


def spread(
    ensemble: torch.Tensor, member_dim: int = 0, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Pointwise ensemble spread: the square root of the unbiased ensemble variance.

    ``spread = sqrt( Σ_i w_i (x_i − m)² / (1 − Σ_i w_i²) )``; unweighted this is
    ``sqrt( 1/(N−1) Σ_i (x_i − m)² )`` (the sample standard deviation).  The factor
    ``1/(1 − Σ w²)`` is the reliability-weights correction; it is NaN/inf when one
    particle carries all the weight.

    Args:
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``; at
            least 2 members.
        member_dim: member axis.
        weights: optional particle weights (see module docstring).

    Returns:
        ``shape``.
    """
    _check_members(ensemble, member_dim, 2, "spread")
    return _ensemble_variance(ensemble, member_dim, weights).sqrt()


def rmse(
    truth: torch.Tensor,
    ensemble: torch.Tensor,
    member_dim: int = 0,
    weights: torch.Tensor | None = None,
    dims: Dims = None,
) -> torch.Tensor:
    """Root-mean-square error of the (weighted) ensemble mean against the truth.

    ``RMSE = sqrt( mean_{dims} (m − y)² )`` with ``m`` from :func:`ensemble_mean`.
    The mean runs over ``dims`` only, so the remaining dimensions are kept: for an
    ensemble ``(members, time, channels, *space)`` and truth
    ``(time, channels, *space)``, ``dims=None`` gives one scalar and
    ``dims=(1, 2, ...)`` (everything but time) gives the per-time RMSE ``(time,)``.
    Note the square root is taken *after* the mean over ``dims``: the average of the
    per-time RMSE is not the overall RMSE.

    Args:
        truth: ``shape``, the ensemble shape without the member axis (broadcastable).
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``.
        member_dim: member axis of ``ensemble``.
        weights: optional particle weights (see module docstring).
        dims: dimensions of the error ``m − y`` (shape ``shape``) to average over;
            ``None`` (default) averages over all of them, ``()`` over none.

    Returns:
        ``shape`` with ``dims`` removed (a 0-d tensor by default).
    """
    mean = ensemble_mean(ensemble, member_dim, weights)
    return _mean_over((mean - truth).square(), dims).sqrt()


def spread_skill_ratio(
    truth: torch.Tensor, ensemble: torch.Tensor, member_dim: int = 0, dims: Dims = None
) -> torch.Tensor:
    """Spread-skill ratio with the finite-ensemble correction (Fortin et al. 2014).

    ``SSR = sqrt((N+1)/N) · sqrt( mean_{dims} s² ) / sqrt( mean_{dims} (m − y)² )``,
    ``s²`` the unbiased ensemble variance, ``m`` the ensemble mean.  If the truth is
    statistically indistinguishable from a member, ``E(m − y)² = (N+1)/N · E s²``,
    so a calibrated ensemble has ``SSR ≈ 1``; ``SSR < 1`` is under-dispersion.

    Reference: V. Fortin, M. Abaza, F. Anctil, R. Turcotte (2014), "Why should
    ensemble spread match the RMSE of the ensemble mean?", J. Hydrometeorology 15.

    Args:
        truth: ``shape``, the ensemble shape without the member axis (broadcastable).
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``; at
            least 2 members.
        member_dim: member axis of ``ensemble``.
        dims: dimensions of ``shape`` to average over (``None`` = all, as in
            :func:`rmse`); e.g. everything but time for a per-time SSR.

    Returns:
        ``shape`` with ``dims`` removed.
    """
    n = _check_members(ensemble, member_dim, 2, "spread_skill_ratio")
    variance = _ensemble_variance(ensemble, member_dim, None)
    error2 = (ensemble.mean(dim=member_dim) - truth).square()
    variance, error2 = torch.broadcast_tensors(variance, error2)
    ratio = _mean_over(variance, dims) / _mean_over(error2, dims)
    return math.sqrt((n + 1) / n) * ratio.sqrt()


# ----------------------------------------------------------------------------- CRPS


def crps_ensemble(
    observation: torch.Tensor,
    ensemble: torch.Tensor,
    member_dim: int = 0,
    weights: torch.Tensor | None = None,
    fair: bool = False,
) -> torch.Tensor:
    """Pointwise continuous ranked probability score of an ensemble (no reduction).

    Standard (empirical-distribution) CRPS, Gneiting & Raftery (2007) eq. 21:

        CRPS = Σ_i w_i |x_i − y| − ½ Σ_ij w_i w_j |x_i − x_j|,

    i.e. ``E|X − y| − ½ E|X − X'|`` under the (weighted) empirical distribution of
    the members; unweighted ``w_i = 1/N``.  This equals
    ``properscoring.crps_ensemble`` (which puts members on the last axis).

    Fair CRPS (Ferro 2014; Ferro, Richardson & Weigel 2008): the spread term uses
    distinct pairs only, ``1/(N(N−1))`` instead of ``1/N²``, which makes the score
    an unbiased estimate of the CRPS of the distribution the members are drawn
    from.  With weights the distinct-pair normalisation generalises to

        fair CRPS = Σ_i w_i |x_i − y| − ½ Σ_ij w_i w_j |x_i − x_j| / (1 − Σ_i w_i²),

    which reduces to Ferro's estimator for ``w_i = 1/N``.  It needs ``N ≥ 2`` and is
    NaN where one particle carries all the weight.

    Algorithm: sort the members, ``x_(1) ≤ ... ≤ x_(N)`` with cumulative weights
    ``F_k = Σ_{i≤k} w_(i)``; then
    ``½ Σ_ij w_i w_j |x_i − x_j| = ∫ F(1 − F) = Σ_{k<N} (x_(k+1) − x_(k)) F_k (1 − F_k)``,
    a sum of non-negative terms (no cancellation); ties are handled exactly.  The
    cost per point is O(N log N) with ``torch.sort``; unweighted ensembles of at most
    64 members are sorted by a bitonic network vectorised over points (O(N log² N)
    compare-exchanges, each one batched min/max over all points), which on CPU is
    several times faster than ``torch.sort`` for such small member counts (when
    gradients are recorded, ``torch.sort`` is used throughout, so the score is
    differentiable with respect to the members, the observation and the weights).
    NaN anywhere in a point's members or observation gives NaN there.

    Args:
        observation: ``shape``, the ensemble shape without the member axis
            (broadcastable), e.g. ``(time, channels, *space)``.
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``.
        member_dim: member axis of ``ensemble``.
        weights: optional particle weights (see module docstring), normalised here.
        fair: use the fair (distinct-pair) spread term.

    Returns:
        ``broadcast(observation.shape, shape)``: the score at every point.
    """
    n = _check_members(ensemble, member_dim, 2 if fair else 1, "crps_ensemble")
    member_dim = _canonical_dim(member_dim, ensemble.ndim)
    if not ensemble.is_floating_point():
        ensemble = ensemble.to(torch.get_default_dtype())
    shape = ensemble.shape[:member_dim] + ensemble.shape[member_dim + 1 :]
    y = torch.as_tensor(observation, dtype=ensemble.dtype, device=ensemble.device)
    if y.ndim < len(shape):  # align from the right, as broadcasting does
        y = y.reshape((1,) * (len(shape) - y.ndim) + tuple(y.shape))
    y = y.unsqueeze(member_dim)  # member axis of size 1
    if weights is None:
        skill = (ensemble - y).abs().mean(dim=member_dim)
        members_first = ensemble.movedim(member_dim, 0).reshape(n, -1)  # (N, points)
        if torch.is_grad_enabled() and ensemble.requires_grad:  # out= ops do not record
            x_sorted = members_first.sort(dim=0).values
        else:
            x_sorted = _sorted_members_first(members_first)
        gaps = x_sorted[1:] - x_sorted[:-1]  # (N-1, points)
        cumulative = torch.arange(1, n, dtype=gaps.dtype, device=gaps.device) / n  # (N-1,)
        half_spread = torch.matmul(cumulative * (1 - cumulative), gaps).reshape(shape)
        sum_w2 = 1.0 / n
    else:
        w = _normalised_weights(weights, ensemble, member_dim)
        skill = (w * (ensemble - y).abs()).sum(dim=member_dim)
        # members last and contiguous: torch.sort is ~3× faster on a contiguous last dim
        x = ensemble.movedim(member_dim, -1).contiguous()  # (*shape, N)
        x_sorted, order = x.sort(dim=-1)
        w = w.movedim(member_dim, -1).expand_as(x)
        cumulative = w.take_along_dim(order, dim=-1).cumsum(dim=-1)[..., :-1]  # (*shape, N-1)
        gaps = x_sorted[..., 1:] - x_sorted[..., :-1]
        half_spread = (gaps * cumulative * (1 - cumulative)).sum(dim=-1)
        sum_w2 = w.square().sum(dim=-1)
    if fair:
        half_spread = half_spread / (1 - sum_w2)
    return skill - half_spread


_NETWORK_MAX_MEMBERS = 64


def _sorted_members_first(x: torch.Tensor) -> torch.Tensor:
    """Sort ``x`` of shape ``(members, points)`` along the member axis (ascending).

    Up to ``_NETWORK_MAX_MEMBERS`` members: a bitonic sorting network (Batcher 1968)
    in its all-ascending form, padded with ``+inf`` to a power of two.  Every stage
    is one batched ``minimum`` and one ``maximum`` over all points, written into two
    ping-pong buffers (the input is never written).  A merge of two sorted blocks
    compares element ``i`` of the first with element ``i`` of the reversed second;
    both results are bitonic, and the following half-cleaners sort any bitonic block
    whatever its orientation, so no other reversal is needed.  NaN propagates
    through ``minimum``/``maximum``, so a point with a NaN member sorts to NaNs.
    Larger ensembles use ``torch.sort``.

    Returns:
        ``(members, points)``, sorted along dim 0.
    """
    n, points = x.shape
    if n == 1:
        return x
    if n > _NETWORK_MAX_MEMBERS:
        return x.t().contiguous().sort(dim=-1).values.t()
    size = 1 << (n - 1).bit_length()
    buffers = [x.new_empty(size, points), x.new_empty(size, points)]
    if size == n:
        source, target = x.contiguous(), 0
    else:
        source, target = buffers[0], 1
        source[:n] = x
        source[n:] = math.inf
    block = 2
    while block <= size:
        half = block // 2
        pairs = source.view(size // block, block, points)
        first, second = pairs[:, :half], pairs[:, half:].flip(1)
        out = buffers[target].view(size // block, block, points)
        torch.minimum(first, second, out=out[:, :half])
        torch.maximum(first, second, out=out[:, half:])
        source, target = buffers[target], 1 - target
        stride = half // 2
        while stride >= 1:
            pairs = source.view(size // (2 * stride), 2, stride, points)
            out = buffers[target].view(size // (2 * stride), 2, stride, points)
            torch.minimum(pairs[:, 0], pairs[:, 1], out=out[:, 0])
            torch.maximum(pairs[:, 0], pairs[:, 1], out=out[:, 1])
            source, target = buffers[target], 1 - target
            stride //= 2
        block *= 2
    return source[:n]


# ----------------------------------------------------------------------------- calibration


def _below_and_tied(
    truth: torch.Tensor, ensemble: torch.Tensor, member_dim: int, weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mass of members below and equal to the truth, pointwise.

    Unweighted: counts ``#{x_i < y}`` and ``#{x_i = y}`` (int64).  Weighted: the
    weighted empirical probabilities ``F(y−)`` and ``F(y) − F(y−)``.
    Shapes: ``broadcast(truth.shape, shape)``.
    """
    member_dim = _canonical_dim(member_dim, ensemble.ndim)
    x = ensemble.movedim(member_dim, -1)
    y = torch.as_tensor(truth, dtype=x.dtype, device=x.device).unsqueeze(-1)
    if weights is None:
        return (x < y).sum(dim=-1), (x == y).sum(dim=-1)
    w = _normalised_weights(weights, ensemble, member_dim).movedim(member_dim, -1)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    below = torch.where(x < y, w, zero).sum(dim=-1)
    tied = torch.where(x == y, w, zero).sum(dim=-1)
    return below, tied


def _uniform(
    shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """``U[0, 1)`` draws of ``shape`` on ``like``'s device, floating dtype of ``like``."""
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.rand(shape, generator=generator, dtype=dtype, device=like.device)


def rank_histogram(
    truth: torch.Tensor,
    ensemble: torch.Tensor,
    member_dim: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rank (Talagrand) histogram of the truth within the ensemble, over all points.

    The rank of ``y`` among ``N`` members is ``#{x_i < y} + U``, with ``U`` uniform on
    ``{0, ..., #{x_i = y}}``: ties are broken at random, so a truth exchangeable with
    the members has a rank uniform on ``{0, ..., N}`` even for discrete values
    (Anderson 1996; Hamill 2001, "Interpretation of rank histograms for verifying
    ensemble forecasts", MWR 129).

    Args:
        truth: ``shape``, the ensemble shape without the member axis (broadcastable).
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``.
        member_dim: member axis of ``ensemble``.
        generator: source of the tie-breaking draws (on the device of the inputs).

    Returns:
        ``(members + 1,)`` int64 counts; bin ``r`` counts the points where ``r``
        members lie below the truth.  The counts sum to the number of points.
    """
    n = _check_members(ensemble, member_dim, 1, "rank_histogram")
    below, tied = _below_and_tied(truth, ensemble, member_dim, None)
    u = _uniform(below.shape, ensemble, generator)
    extra = torch.minimum((u * (tied + 1)).floor().to(torch.int64), tied)
    return torch.bincount((below + extra).reshape(-1), minlength=n + 1)


def pit_values(
    truth: torch.Tensor,
    ensemble: torch.Tensor,
    member_dim: int = 0,
    weights: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Randomised probability integral transform of the truth, values in ``[0, 1]``.

    With ``n`` the (effective) ensemble size, ``F`` the (weighted) empirical CDF of the
    members and ``V ~ U[0, 1)``,

        PIT = ( n F(y−) + V (n [F(y) − F(y−)] + 1) ) / (n + 1),

    the randomised PIT (Czado, Gneiting & Held 2009, Biometrics 65) of ``y`` under the
    ensemble distribution augmented by the truth as one more member of weight
    ``1/(n+1)``.  Unweighted (``n = N``) this is ``(#{x_i < y} + V (#{x_i = y} + 1)) /
    (N + 1)``: the rank of :func:`rank_histogram` spread uniformly over its bin, so a
    truth exchangeable with the members gives PIT ~ U(0, 1) exactly, ties included,
    and a histogram of the PIT with ``N + 1`` equal bins is the rank histogram.
    Weighted, ``n = 1 / Σ_i w_i²`` (Kish effective sample size), which equals ``N`` for
    equal weights (then the result equals the unweighted one for the same generator).

    Args:
        truth: ``shape``, the ensemble shape without the member axis (broadcastable).
        ensemble: ``(members, *shape)`` with the member axis at ``member_dim``.
        member_dim: member axis of ``ensemble``.
        weights: optional particle weights (see module docstring).
        generator: source of the randomisation draws (on the device of the inputs).

    Returns:
        ``broadcast(truth.shape, shape)`` floating values in ``[0, 1]``.
    """
    n = _check_members(ensemble, member_dim, 1, "pit_values")
    below, tied = _below_and_tied(truth, ensemble, member_dim, weights)
    u = _uniform(below.shape, ensemble, generator)
    if weights is None:
        size = torch.tensor(float(n), dtype=u.dtype, device=u.device)
        below_mass, tied_mass = below.to(u.dtype), tied.to(u.dtype)
    else:
        w = _normalised_weights(weights, ensemble, member_dim)
        size = 1 / w.square().sum(dim=_canonical_dim(member_dim, ensemble.ndim))
        below_mass, tied_mass = size * below, size * tied
    return ((below_mass + u * (tied_mass + 1)) / (size + 1)).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- spectra


def _square_side(field: torch.Tensor) -> int:
    if field.ndim < 2 or field.shape[-1] != field.shape[-2]:
        raise ValueError(f"expected a square grid (..., n, n), got {tuple(field.shape)}")
    return field.shape[-1]


def _integer_wavenumbers(n: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers ``(k_x, k_y)`` of an ``n × n`` FFT grid, each ``(n, n)``."""
    k = torch.fft.fftfreq(n, d=1.0 / n, dtype=like.dtype, device=like.device)
    return torch.meshgrid(k, k, indexing="ij")


def _shell_sum(power: torch.Tensor, n: int, reduce_batch: bool) -> torch.Tensor:
    """Sum ``power`` ``(..., n, n)`` over integer shells ``round(|k|)`` → ``(..., K)``.

    ``K = round(√2 · (n // 2)) + 1`` so that every Fourier mode is counted.
    """
    if reduce_batch:
        power = power.reshape(-1, n, n).mean(dim=0)
    kx, ky = _integer_wavenumbers(n, power)
    shell = torch.sqrt(kx.square() + ky.square()).round().to(torch.int64).reshape(-1)
    shells = round(math.sqrt(2.0) * (n // 2)) + 1
    out = power.new_zeros(*power.shape[:-2], shells)
    return out.index_add_(-1, shell, power.flatten(start_dim=-2))


def energy_spectrum(
    field: torch.Tensor, space_dims: int = 1, reduce_batch: bool = True
) -> torch.Tensor:
    """Energy spectrum of a real periodic field, Parseval-normalised.

    Fourier coefficients are normalised as ``û_k = (1/n^d) Σ_x u_x e^{−2πi k·x/n}``, so
    that ``Σ_k |û_k|² = mean_x u_x²`` over the full (two-sided) spectrum.

    * ``space_dims=1``: one-sided spectrum ``E_k`` for ``k = 0, ..., n//2``:
      ``E_0 = |û_0|²``, ``E_k = 2 |û_k|²`` for ``0 < k < n/2`` and ``E_{n/2} = |û_{n/2}|²``
      (n even).  Hence ``Σ_k E_k = mean_x u²`` (Parseval).
    * ``space_dims=2`` (periodic square ``n × n``): isotropic shell spectrum
      ``E_k = Σ_{round(|k|) = k} |û_k|²`` over integer shells ``k = 0, ..., K − 1`` with
      ``K = round(√2 · (n//2)) + 1``, so every mode is counted and again
      ``Σ_k E_k = mean_x u²``.  Shells above ``n//2`` are incomplete (corners of the
      grid); slice ``[: n // 2 + 1]`` for the isotropic range.

    With ``reduce_batch`` the spectrum is averaged over all leading dimensions.

    Args:
        field: ``(..., n)`` (1-D) or ``(..., n, n)`` (2-D), real; e.g. an ensemble
            ``(members, time, channels, *space)``.
        space_dims: 1 or 2, the number of trailing spatial dimensions.
        reduce_batch: average over the leading dimensions ``...``.

    Returns:
        ``(n // 2 + 1,)`` (1-D) or ``(K,)`` (2-D); ``(..., ·)`` without
        ``reduce_batch``.  Index ``k`` is the integer wavenumber (units of ``2π/L``).
    """
    if space_dims == 1:
        n = field.shape[-1]
        coefficients = torch.fft.rfft(field, dim=-1) / n
        power = coefficients.real.square() + coefficients.imag.square()
        if reduce_batch:
            power = power.reshape(-1, power.shape[-1]).mean(dim=0)
        factor = torch.ones(n // 2 + 1, dtype=power.dtype, device=power.device)
        factor[1 : (n + 1) // 2] = 2.0
        return power * factor
    if space_dims == 2:
        n = _square_side(field)
        coefficients = torch.fft.fft2(field, dim=(-2, -1)) / (n * n)
        power = coefficients.real.square() + coefficients.imag.square()
        return _shell_sum(power, n, reduce_batch)
    raise ValueError(f"space_dims must be 1 or 2, got {space_dims}")


def kolmogorov_energy_spectrum(
    vorticity: torch.Tensor, length: float = 2 * math.pi, reduce_batch: bool = True
) -> torch.Tensor:
    """Kinetic-energy spectrum of 2-D incompressible flow from its vorticity.

    On a periodic square of side ``length`` with ``n × n`` points, physical wavenumbers
    are ``κ = (2π/length) k`` with integer ``k``.  For 2-D incompressible flow
    ``|û(κ)|² = |ω̂(κ)|² / |κ|²``, so with the Parseval normalisation of
    :func:`energy_spectrum`

        E_k = Σ_{round(|k|) = k, k ≠ 0} |ω̂_k|² / (2 |κ|²),   Σ_k E_k = ½ mean_x |u|²,

    the mean kinetic energy per unit area (the mean flow, ``k = 0``, is not recoverable
    from vorticity and contributes 0).  ``E`` is a shell sum, not a density per unit
    ``κ``; divide by ``2π/length`` for the density.

    Args:
        vorticity: ``(..., n, n)``, real.
        length: side of the periodic domain (``2π`` for the usual Kolmogorov flow).
        reduce_batch: average over the leading dimensions ``...``.

    Returns:
        ``(K,)`` with ``K = round(√2 · (n//2)) + 1`` (``(..., K)`` without
        ``reduce_batch``); index ``k`` is the integer shell, ``κ = 2πk/length``.
    """
    n = _square_side(vorticity)
    coefficients = torch.fft.fft2(vorticity, dim=(-2, -1)) / (n * n)
    power = coefficients.real.square() + coefficients.imag.square()
    kx, ky = _integer_wavenumbers(n, power)
    kappa2 = (2 * math.pi / length) ** 2 * (kx.square() + ky.square())
    inverse = torch.where(kappa2 > 0, 1 / (2 * kappa2.clamp_min(1e-30)), 0.0)
    return _shell_sum(power * inverse, n, reduce_batch)


def spectrum_relative_error(
    pred_spectrum: torch.Tensor, true_spectrum: torch.Tensor, min_energy_fraction: float = 0.01
) -> torch.Tensor:
    """Per-wavenumber relative spectrum error on the energetic wavenumbers.

    ``err_k = |E^pred_k − E^true_k| / E^true_k`` where
    ``E^true_k ≥ min_energy_fraction · Σ_k E^true_k``, NaN elsewhere (the wavenumbers
    carrying too little energy for a relative error to mean anything).

    Args:
        pred_spectrum: ``(..., K)``, e.g. from :func:`energy_spectrum`.
        true_spectrum: ``(..., K)`` (broadcastable).
        min_energy_fraction: fraction of the total true energy a wavenumber must
            carry to be scored.

    Returns:
        ``broadcast(...)`` + ``(K,)``; NaN at the unscored wavenumbers.
    """
    total = true_spectrum.sum(dim=-1, keepdim=True)
    scored = (true_spectrum >= min_energy_fraction * total) & (true_spectrum > 0)
    safe = torch.where(scored, true_spectrum, torch.ones_like(true_spectrum))
    error = (pred_spectrum - true_spectrum).abs() / safe
    return torch.where(scored, error, torch.full_like(error, math.nan))


def max_spectrum_relative_error(
    pred_spectrum: torch.Tensor, true_spectrum: torch.Tensor, min_energy_fraction: float = 0.01
) -> torch.Tensor:
    """Largest :func:`spectrum_relative_error` over the scored wavenumbers.

    Args:
        pred_spectrum: ``(..., K)``.
        true_spectrum: ``(..., K)`` (broadcastable).
        min_energy_fraction: as in :func:`spectrum_relative_error`.

    Returns:
        ``(...)``; NaN where no wavenumber is scored.
    """
    error = spectrum_relative_error(pred_spectrum, true_spectrum, min_energy_fraction)
    largest = torch.where(error.isnan(), torch.full_like(error, -math.inf), error).amax(dim=-1)
    return torch.where(largest == -math.inf, torch.full_like(largest, math.nan), largest)


# ----------------------------------------------------------------------------- correlation


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, dims: Dims) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` over ``dims``.

    ``ρ = Σ (a − ā)(b − b̄) / sqrt( Σ (a − ā)² Σ (b − b̄)² )``, means and sums over
    ``dims``.  NaN where either field is constant over ``dims``.

    Args:
        a: any shape.
        b: broadcastable with ``a``.
        dims: dimensions of the broadcast shape to correlate over (``None`` = all).

    Returns:
        The broadcast shape with ``dims`` removed.
    """
    a, b = torch.broadcast_tensors(a, b)
    d = _canonical_dims(dims, a.ndim)
    a = a - a.mean(dim=d, keepdim=True)
    b = b - b.mean(dim=d, keepdim=True)
    covariance = (a * b).sum(dim=d)
    return covariance / torch.sqrt(a.square().sum(dim=d) * b.square().sum(dim=d))


def high_correlation_time(
    truth: torch.Tensor,
    prediction: torch.Tensor,
    time_dim: int,
    threshold: float = 0.8,
    dt: float = 1.0,
) -> torch.Tensor:
    """Time over which the prediction stays correlated with the truth.

    At every lead ``t`` the Pearson correlation ``ρ_t`` is taken over all dimensions
    after ``time_dim`` (channels and space).  The result is ``dt`` times the number of
    leading steps with ``ρ_t ≥ threshold``, i.e. the first lead index where ``ρ_t``
    drops below the threshold (NaN counts as below), or the full length ``T`` if it
    never does.  Dimensions before ``time_dim`` are samples (e.g. members).

    Args:
        truth: e.g. ``(time, channels, *space)``.
        prediction: broadcastable with ``truth``, e.g.
            ``(members, time, channels, *space)``.
        time_dim: time axis of the broadcast shape (a negative index is convenient
            when the ranks differ, e.g. ``-3`` for ``(..., time, channels, x)``).
        threshold: correlation threshold (0.8 in the protocol, docs/design.md §7).
        dt: time between frames.

    Returns:
        The broadcast shape before ``time_dim`` (e.g. ``(members,)``), floating.
    """
    truth, prediction = torch.broadcast_tensors(truth, prediction)
    time_dim = _canonical_dim(time_dim, truth.ndim)
    if time_dim == truth.ndim - 1:
        raise ValueError("high_correlation_time needs spatial dimensions after time_dim")
    correlation = pearson_correlation(truth, prediction, tuple(range(time_dim + 1, truth.ndim)))
    leading = (correlation >= threshold).to(torch.int64).cumprod(dim=-1).sum(dim=-1)
    dtype = truth.dtype if truth.is_floating_point() else torch.get_default_dtype()
    return leading.to(dtype) * dt


# ----------------------------------------------------------------------------- stability


def blow_up(ensemble: torch.Tensor, threshold: float = 1e3, dims: Dims = None) -> torch.Tensor:
    """Blow-up flag: any non-finite value or any ``|x| > threshold``.

    The default threshold ``1e3`` is far above the physical range of the benchmark
    states (KS ``|u| ≲ 5``, Kolmogorov vorticity ``|ω| ≲ 50``).

    Args:
        ensemble: any shape, e.g. ``(members, time, channels, *space)``.
        threshold: largest admissible magnitude.
        dims: dimensions to reduce with ``any`` (``None`` = all → one flag); e.g.
            ``dims=(1, 2, 3)`` flags each member of ``(members, time, channels, x)``.

    Returns:
        Bool tensor, ``ensemble.shape`` with ``dims`` removed.
    """
    bad = ~torch.isfinite(ensemble) | (ensemble.abs() > threshold)
    d = _canonical_dims(dims, bad.ndim)
    for dim in reversed(d):
        bad = bad.any(dim=dim)
    return bad
