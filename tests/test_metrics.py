"""Tests for ardm_infer.metrics: peer cross-checks, closed forms, Monte-Carlo calibration.

Statistical assertions state their tolerance from the Monte-Carlo error (docs/design.md §5):
``Z_SIGMA`` standard errors, or a hypothesis test at level ``ALPHA`` with a fixed seed.
"""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ardm_infer import metrics

Z_SIGMA = 5.0  # tolerance in Monte-Carlo standard errors (two-sided p ≈ 6e-7)
ALPHA = 1e-3  # level of the goodness-of-fit tests
F64 = torch.float64
HYPOTHESIS = settings(max_examples=40, deadline=None, database=None)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian_crps(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Closed-form CRPS of N(0, σ²) at y: σ[z(2Φ(z) − 1) + 2φ(z) − 1/√π], z = y/σ."""
    z = y / sigma
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def _brute_force_crps(y, x, w, fair):
    """O(N²) reference: Σ w|x−y| − ½ Σ w_i w_j |x_i − x_j| [/(1 − Σ w²)], members first."""
    w = w / w.sum(0, keepdim=True)
    skill = (w * (x - y).abs()).sum(0)
    pairs = (w[:, None] * w[None, :] * (x[:, None] - x[None, :]).abs()).sum((0, 1))
    if fair:
        pairs = pairs / (1 - w.square().sum(0))
    return skill - 0.5 * pairs


# ----------------------------------------------------------------------------- CRPS


@st.composite
def ensemble_cases(draw):
    """Random (observation, ensemble, member_dim, weights, full_weights) cases."""
    members = draw(st.integers(1, 8))
    batch = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    member_dim = draw(st.integers(0, len(batch)))
    seed = draw(st.integers(0, 2**31 - 1))
    ties = draw(st.booleans())
    mode = draw(st.sampled_from(["none", "members", "full", "leading"]))
    g = _generator(seed)
    shape = list(batch)
    shape.insert(member_dim, members)
    if ties:  # small integers: many ties between members and with the observation
        ensemble = torch.randint(-2, 3, shape, generator=g).to(F64)
        observation = torch.randint(-2, 3, batch, generator=g).to(F64)
    else:
        ensemble = 3 * torch.randn(shape, generator=g, dtype=F64) + 1
        observation = 3 * torch.randn(batch, generator=g, dtype=F64)
    if mode == "none":
        return observation, ensemble, member_dim, None, None
    if mode == "members":
        weights = torch.rand(members, generator=g, dtype=F64)
        weights[draw(st.integers(0, members - 1))] += 0.5
        view = [1] * len(shape)
        view[member_dim] = members
        full = weights.reshape(view).expand(shape)
        return observation, ensemble, member_dim, weights, full
    rank = len(shape) if mode == "full" else draw(st.integers(member_dim + 1, len(shape)))
    weights = torch.rand(shape[:rank], generator=g, dtype=F64)
    weights = torch.where(weights < 0.2, torch.zeros_like(weights), weights)  # exact zeros
    weights = weights + 0.3 * (torch.arange(members, dtype=F64) == 0).reshape(
        [members if d == member_dim else 1 for d in range(rank)]
    )
    full = weights.reshape(*weights.shape, *([1] * (len(shape) - rank))).expand(shape)
    return observation, ensemble, member_dim, weights, full


@HYPOTHESIS
@given(ensemble_cases())
def test_crps_matches_properscoring(case):
    observation, ensemble, member_dim, weights, full = case
    ours = metrics.crps_ensemble(observation, ensemble, member_dim=member_dim, weights=weights)
    forecasts = np.moveaxis(ensemble.numpy(), member_dim, -1)
    reference = properscoring.crps_ensemble(
        observation.numpy(),
        forecasts,
        weights=None if full is None else np.moveaxis(full.numpy(), member_dim, -1),
    )
    assert ours.shape == observation.shape
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-6, atol=1e-6)


@HYPOTHESIS
@given(ensemble_cases())
def test_crps_matches_brute_force_pair_sums_standard_and_fair(case):
    observation, ensemble, member_dim, weights, full = case
    x = ensemble.movedim(member_dim, 0)
    w = torch.ones_like(x) if full is None else full.movedim(member_dim, 0)
    for fair in (False, True):
        if fair and (x.shape[0] < 2 or bool(((w > 0).sum(0) < 2).any())):
            continue  # fair CRPS needs two members with positive weight
        ours = metrics.crps_ensemble(
            observation, ensemble, member_dim=member_dim, weights=weights, fair=fair
        )
        torch.testing.assert_close(
            ours, _brute_force_crps(observation, x, w, fair), rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize("members", [2, 3, 5, 16, 31, 32, 33, 64, 65, 100])
@pytest.mark.parametrize("ties", [False, True])
def test_crps_matches_properscoring_across_member_counts(members, ties):
    """Covers the sorting network (≤ 64 members, padded to powers of two) and torch.sort."""
    g = _generator(members)
    if ties:
        ensemble = torch.randint(-3, 4, (members, 6, 9), generator=g).to(F64)
    else:
        ensemble = torch.randn(members, 6, 9, generator=g, dtype=F64)
    ensemble[:, 0, 0] = 1e300  # huge but finite values sort like any other
    truth = torch.randn(6, 9, generator=g, dtype=F64)
    before = ensemble.clone()
    ours = metrics.crps_ensemble(truth, ensemble)
    reference = properscoring.crps_ensemble(truth.numpy(), np.moveaxis(ensemble.numpy(), 0, -1))
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-6, atol=1e-6)
    assert torch.equal(ensemble, before)
    fair = metrics.crps_ensemble(truth, ensemble, fair=True)
    brute = _brute_force_crps(truth, ensemble, torch.ones_like(ensemble), fair=True)
    torch.testing.assert_close(fair[1:], brute[1:], rtol=1e-9, atol=1e-9)


def test_crps_is_differentiable():
    g = _generator(5)
    ensemble = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    truth = torch.randn(3, generator=g, dtype=F64, requires_grad=True)
    weights = (torch.rand(5, 3, generator=g, dtype=F64) + 0.1).requires_grad_()
    for fair in (False, True):
        assert torch.autograd.gradcheck(
            lambda e, y, fair=fair: metrics.crps_ensemble(y, e, fair=fair), (ensemble, truth)
        )
        assert torch.autograd.gradcheck(
            lambda e, y, w, fair=fair: metrics.crps_ensemble(y, e, weights=w, fair=fair),
            (ensemble, truth, weights),
        )
    recorded = metrics.crps_ensemble(truth, ensemble)  # torch.sort path
    with torch.no_grad():  # sorting-network path
        torch.testing.assert_close(metrics.crps_ensemble(truth, ensemble), recorded.detach())


def test_crps_nan_member_gives_nan_only_at_that_point():
    ensemble = torch.randn(8, 5, dtype=F64, generator=_generator(4))
    ensemble[3, 2] = math.nan
    for weights in (None, torch.ones(8, dtype=F64)):
        score = metrics.crps_ensemble(torch.zeros(5, dtype=F64), ensemble, weights=weights)
        assert score.isnan().tolist() == [False, False, True, False, False]


def test_crps_of_exact_one_member_ensemble_is_zero_and_one_member_is_absolute_error():
    g = _generator(1)
    truth = torch.randn(5, 2, 16, generator=g, dtype=F64)
    assert torch.equal(metrics.crps_ensemble(truth, truth[None]), torch.zeros_like(truth))
    other = torch.randn(1, 5, 2, 16, generator=g, dtype=F64)
    torch.testing.assert_close(metrics.crps_ensemble(truth, other), (other[0] - truth).abs())


def test_weighted_crps_with_equal_weights_equals_unweighted():
    g = _generator(2)
    ensemble = torch.randn(12, 4, 3, 10, generator=g, dtype=F64)
    truth = torch.randn(4, 3, 10, generator=g, dtype=F64)
    for fair in (False, True):
        plain = metrics.crps_ensemble(truth, ensemble, fair=fair)
        for weights in (torch.full((12,), 7.0, dtype=F64), torch.full((12, 4), 0.5, dtype=F64)):
            weighted = metrics.crps_ensemble(truth, ensemble, weights=weights, fair=fair)
            torch.testing.assert_close(weighted, plain, rtol=1e-12, atol=1e-12)


def test_crps_member_dim_is_only_a_layout():
    g = _generator(3)
    ensemble = torch.randn(6, 4, 5, generator=g, dtype=F64)  # (members, time, x)
    truth = torch.randn(4, 5, generator=g, dtype=F64)
    weights = torch.rand(6, 4, generator=g, dtype=F64)
    for fair in (False, True):
        reference = metrics.crps_ensemble(truth, ensemble, weights=weights, fair=fair)
        moved = metrics.crps_ensemble(
            truth, ensemble.movedim(0, 1), member_dim=1, weights=weights.T, fair=fair
        )
        last = metrics.crps_ensemble(
            truth, ensemble.movedim(0, -1), member_dim=-1, weights=weights.T[:, None, :], fair=fair
        )
        torch.testing.assert_close(moved, reference)
        torch.testing.assert_close(last, reference)


@pytest.mark.parametrize("members", [4, 16, 64])
def test_fair_crps_is_unbiased_for_gaussian_and_standard_has_the_known_bias(members):
    """E[fair CRPS] = CRPS(N(0,σ²), y) exactly; the standard one is higher by σ/(N√π)."""
    points, sigma = 20_000, 1.3
    g = _generator(10 + members)
    y = 1.5 * torch.randn(points, generator=g, dtype=F64)
    ensemble = sigma * torch.randn(members, points, generator=g, dtype=F64)
    closed = _gaussian_crps(y, sigma)
    for fair, bias in ((True, 0.0), (False, sigma / (members * math.sqrt(math.pi)))):
        difference = metrics.crps_ensemble(y, ensemble, fair=fair) - closed
        standard_error = difference.std() / math.sqrt(points)
        assert abs(difference.mean() - bias) < Z_SIGMA * standard_error
        if fair:  # the check can fail: the standard estimator's bias is resolved
            assert sigma / (members * math.sqrt(math.pi)) > 2 * Z_SIGMA * standard_error


def test_fair_crps_approaches_gaussian_crps_pointwise_as_members_grow():
    """Pointwise error shrinks like N^(-1/2): mean |CRPS_N − CRPS| ratio ≈ √(256/4) = 8."""
    points, sigma = 4_000, 1.0
    g = _generator(11)
    y = torch.randn(points, generator=g, dtype=F64)
    closed = _gaussian_crps(y, sigma)
    errors = []
    for members in (4, 256):
        ensemble = sigma * torch.randn(members, points, generator=g, dtype=F64)
        errors.append((metrics.crps_ensemble(y, ensemble, fair=True) - closed).abs().mean())
    assert errors[1] < errors[0] / 4


def test_crps_float32_and_broadcast_observation():
    g = _generator(12)
    ensemble = torch.randn(8, 3, 16, generator=g)
    observation = torch.randn(16, generator=g)  # broadcast over time
    score = metrics.crps_ensemble(observation, ensemble)
    assert score.dtype == torch.float32 and score.shape == (3, 16)
    torch.testing.assert_close(score, metrics.crps_ensemble(observation.expand(3, 16), ensemble))


def test_crps_rejects_bad_input():
    ensemble = torch.randn(4, 3, dtype=F64)
    truth = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError):
        metrics.crps_ensemble(truth, ensemble[:1], fair=True)
    with pytest.raises(ValueError):
        metrics.crps_ensemble(truth, ensemble, weights=torch.ones(5, dtype=F64))
    with pytest.raises(ValueError):
        metrics.crps_ensemble(truth, ensemble, weights=-torch.ones(4, dtype=F64))


# ----------------------------------------------------------------------------- RMSE, spread


def test_rmse_of_perfect_ensemble_is_zero():
    g = _generator(20)
    truth = torch.randn(7, 2, 32, generator=g, dtype=F64)
    zero = torch.tensor(0.0, dtype=F64)
    torch.testing.assert_close(
        metrics.rmse(truth, truth.expand(5, 7, 2, 32)), zero, atol=1e-15, rtol=0
    )
    assert metrics.rmse(truth, truth[None]) == 0
    offsets = torch.randn(3, 7, 2, 32, generator=g, dtype=F64)
    symmetric = torch.cat([truth + offsets, truth - offsets])  # mean is exactly the truth
    torch.testing.assert_close(metrics.rmse(truth, symmetric), zero, atol=1e-15, rtol=0)


def test_rmse_dims_per_time_and_weights():
    g = _generator(21)
    ensemble = torch.randn(6, 5, 2, 8, generator=g, dtype=F64)  # (members, time, channels, x)
    truth = torch.randn(5, 2, 8, generator=g, dtype=F64)
    error2 = (ensemble.mean(0) - truth) ** 2
    per_time = metrics.rmse(truth, ensemble, dims=(1, 2))
    assert per_time.shape == (5,)
    torch.testing.assert_close(per_time, error2.mean((1, 2)).sqrt())
    torch.testing.assert_close(metrics.rmse(truth, ensemble), error2.mean().sqrt())
    torch.testing.assert_close(metrics.rmse(truth, ensemble, dims=()), error2.sqrt())
    weights = torch.rand(6, 5, generator=g, dtype=F64)  # (members, time)
    normalised = weights / weights.sum(0)
    mean = (normalised[:, :, None, None] * ensemble).sum(0)
    torch.testing.assert_close(metrics.ensemble_mean(ensemble, weights=weights), mean)
    torch.testing.assert_close(
        metrics.rmse(truth, ensemble, weights=weights, dims=(-2, -1)),
        ((mean - truth) ** 2).mean((1, 2)).sqrt(),
    )


def test_weighted_spread_reduces_to_sample_std_and_matches_reliability_formula():
    g = _generator(22)
    ensemble = torch.randn(9, 4, 10, generator=g, dtype=F64)
    torch.testing.assert_close(metrics.spread(ensemble), ensemble.std(0))
    torch.testing.assert_close(
        metrics.spread(ensemble, weights=torch.full((9,), 3.0, dtype=F64)), ensemble.std(0)
    )
    weights = torch.rand(9, 4, 10, generator=g, dtype=F64)
    w = weights / weights.sum(0)
    mean = (w * ensemble).sum(0)
    expected = ((w * (ensemble - mean) ** 2).sum(0) / (1 - (w**2).sum(0))).sqrt()
    torch.testing.assert_close(metrics.spread(ensemble, weights=weights), expected)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_spread_skill_ratio_is_one_for_exchangeable_ensemble(scale):
    """Truth and members iid N(0,1): SSR = 1; tolerance from the delta method.

    log SSR = const + ½ log mean(s²) − ½ log mean(e²), with s² and e² = (m − y)²
    independent for Gaussian draws, so sd(log SSR) ≈ ½ sqrt(var(s²)/(P mean(s²)²) +
    var(e²)/(P mean(e²)²)).  Shrinking the members by ``scale`` must be detected.
    """
    members, time, space = 10, 20, 1000
    g = _generator(23)
    truth = torch.randn(time, space, generator=g, dtype=F64)
    ensemble = scale * torch.randn(members, time, space, generator=g, dtype=F64)
    ssr = metrics.spread_skill_ratio(truth, ensemble)
    variance = ensemble.var(0)
    error2 = (ensemble.mean(0) - truth) ** 2
    points = variance.numel()
    sd_log = 0.5 * math.sqrt(
        variance.var() / (points * variance.mean() ** 2)
        + error2.var() / (points * error2.mean() ** 2)
    )
    expected = scale / math.sqrt(scale**2 + (1 - scale**2) * members / (members + 1))
    assert abs(math.log(ssr) - math.log(expected)) < Z_SIGMA * sd_log
    if scale < 1:  # the tolerance is tight enough to see the under-dispersion
        assert abs(math.log(ssr)) > Z_SIGMA * sd_log
    per_time = metrics.spread_skill_ratio(truth, ensemble, dims=-1)
    assert per_time.shape == (time,)
    torch.testing.assert_close(
        per_time, math.sqrt(1.1) * (variance.mean(-1) / error2.mean(-1)).sqrt()
    )


# ----------------------------------------------------------------------------- rank / PIT


@pytest.mark.parametrize("discrete", [False, True])
def test_rank_histogram_uniform_for_exchangeable_ensemble(discrete):
    """Chi-square test at level ALPHA; discrete draws exercise the random tie-breaking."""
    members, points = 9, 20_000
    g = _generator(30)
    if discrete:
        draws = torch.randint(0, 3, (members + 1, points), generator=g).to(F64)
    else:
        draws = torch.randn(members + 1, points, generator=g, dtype=F64)
    counts = metrics.rank_histogram(draws[0], draws[1:], generator=_generator(31))
    assert counts.shape == (members + 1,) and counts.dtype == torch.int64
    assert int(counts.sum()) == points
    assert stats.chisquare(counts.numpy()).pvalue > ALPHA


def test_rank_histogram_detects_underdispersion():
    g = _generator(32)
    truth = torch.randn(5_000, generator=g, dtype=F64)
    ensemble = 0.5 * torch.randn(9, 5_000, generator=g, dtype=F64)
    counts = metrics.rank_histogram(truth, ensemble, generator=_generator(33))
    assert stats.chisquare(counts.numpy()).pvalue < ALPHA
    interior = counts[1:-1].double().mean()
    assert counts[0] > 2 * interior and counts[-1] > 2 * interior  # U shape


def test_rank_histogram_places_truth_exactly_without_ties():
    ensemble = torch.tensor([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]], dtype=F64)  # (3, 2)
    truth = torch.tensor([1.5, 9.0], dtype=F64)
    counts = metrics.rank_histogram(truth, ensemble)
    assert counts.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("discrete", [False, True])
def test_pit_uniform_for_exchangeable_ensemble_and_consistent_with_ranks(discrete):
    members, points = 7, 20_000
    g = _generator(34)
    if discrete:
        draws = torch.randint(0, 4, (members + 1, points), generator=g).to(F64)
    else:
        draws = torch.randn(members + 1, points, generator=g, dtype=F64)
    pit = metrics.pit_values(draws[0], draws[1:], generator=_generator(35))
    assert pit.shape == (points,)
    assert bool(((pit >= 0) & (pit <= 1)).all())
    assert stats.kstest(pit.numpy(), "uniform").pvalue > ALPHA
    ranks = metrics.rank_histogram(draws[0], draws[1:], generator=_generator(35))
    binned = torch.bincount((pit * (members + 1)).floor().long(), minlength=members + 1)
    assert torch.equal(binned, ranks)
    equal = metrics.pit_values(
        draws[0], draws[1:], weights=torch.ones(members, dtype=F64), generator=_generator(35)
    )
    torch.testing.assert_close(equal, pit)


def test_weighted_pit_uses_weighted_cdf_and_effective_size():
    """PIT ~ U[n F(y−)/(n+1), (n F(y) + 1)/(n+1)], n = 1/Σw² (here 8/3, not N = 3)."""
    points = 4_000
    ensemble = torch.tensor([0.0, 1.0, 2.0], dtype=F64)[:, None].expand(3, points)
    weights = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    truth = torch.full((points,), 1.5, dtype=F64)
    pit = metrics.pit_values(truth, ensemble, weights=weights, generator=_generator(36))
    size = 8 / 3
    low, high = size * 0.75 / (size + 1), (size * 0.75 + 1) / (size + 1)
    # extremes of `points` uniforms lie within ~ (high − low) · 10 / points of the ends
    slack = 10 * (high - low) / points
    assert low <= float(pit.min()) < low + slack
    assert high - slack < float(pit.max()) <= high


# ----------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("n", [7, 8, 32])
def test_energy_spectrum_1d_parseval_and_single_mode(n):
    g = _generator(40)
    field = torch.randn(3, 4, n, generator=g, dtype=F64)
    spectrum = metrics.energy_spectrum(field, space_dims=1)
    assert spectrum.shape == (n // 2 + 1,)
    torch.testing.assert_close(spectrum.sum(), (field**2).mean())
    per_sample = metrics.energy_spectrum(field, space_dims=1, reduce_batch=False)
    torch.testing.assert_close(per_sample.sum(-1), (field**2).mean(-1))
    x = torch.arange(n, dtype=F64) * 2 * math.pi / n
    mode = metrics.energy_spectrum(2.0 + 3.0 * torch.cos(3 * x + 0.4), space_dims=1)
    expected = torch.zeros(n // 2 + 1, dtype=F64)
    expected[0], expected[3] = 4.0, 4.5
    torch.testing.assert_close(mode, expected)


@pytest.mark.parametrize("n", [7, 16])
def test_energy_spectrum_2d_parseval_and_single_mode(n):
    g = _generator(41)
    field = torch.randn(2, 3, n, n, generator=g, dtype=F64)
    spectrum = metrics.energy_spectrum(field, space_dims=2)
    torch.testing.assert_close(spectrum.sum(), (field**2).mean())
    x = torch.arange(n, dtype=F64) * 2 * math.pi / n
    mode = torch.cos(3 * x[:, None] + 2 * x[None, :])  # |k| = √13 ≈ 3.61 → shell 4
    expected = torch.zeros_like(spectrum)
    expected[4] = 0.5
    torch.testing.assert_close(metrics.energy_spectrum(mode, space_dims=2), expected)


@pytest.mark.parametrize("length", [2 * math.pi, 1.0])
def test_kolmogorov_energy_spectrum_single_mode_and_total_kinetic_energy(length):
    n = 16
    x = torch.arange(n, dtype=F64) * length / n
    kappa = 3 * 2 * math.pi / length
    # ω = cos(κ x): ψ = ω/κ², v = −∂ψ/∂x = sin(κx)/κ, KE = ½ mean v² = 1/(4κ²)
    vorticity = torch.cos(kappa * x)[:, None].expand(n, n)
    spectrum = metrics.kolmogorov_energy_spectrum(vorticity, length=length)
    expected = torch.zeros_like(spectrum)
    expected[3] = 1 / (4 * kappa**2)
    torch.testing.assert_close(spectrum, expected)
    # random field: total = ½ mean |u|² with u from the stream function, ∇²ψ = −ω
    # (odd n: no Nyquist mode, whose spectral derivative is not real)
    n = 15
    g = _generator(42)
    vorticity = torch.randn(2, n, n, generator=g, dtype=F64)
    k = torch.fft.fftfreq(n, d=length / n, dtype=F64) * 2 * math.pi
    kx, ky = k[:, None], k[None, :]
    k2 = kx**2 + ky**2
    psi_hat = torch.fft.fft2(vorticity) / torch.where(k2 > 0, k2, torch.inf)
    u = torch.fft.ifft2(1j * ky * psi_hat).real
    v = torch.fft.ifft2(-1j * kx * psi_hat).real
    total = metrics.kolmogorov_energy_spectrum(vorticity, length=length).sum()
    torch.testing.assert_close(total, 0.5 * (u**2 + v**2).mean())


def test_spectrum_relative_error_scores_only_energetic_wavenumbers():
    true = torch.tensor([0.5, 0.3, 0.195, 0.005], dtype=F64)
    pred = torch.tensor([0.5, 0.6, 0.195 * 1.1, 1.0], dtype=F64)
    error = metrics.spectrum_relative_error(pred, true, min_energy_fraction=0.01)
    torch.testing.assert_close(error[:3], torch.tensor([0.0, 1.0, 0.1], dtype=F64))
    assert torch.isnan(error[3])
    worst = metrics.max_spectrum_relative_error(pred, true)
    torch.testing.assert_close(worst, torch.tensor(1.0, dtype=F64))
    batched = metrics.max_spectrum_relative_error(torch.stack([pred, true]), true)
    torch.testing.assert_close(batched, torch.tensor([1.0, 0.0], dtype=F64))
    assert torch.isnan(metrics.max_spectrum_relative_error(pred, true, min_energy_fraction=0.9))


# ----------------------------------------------------------------------------- correlation


def test_pearson_correlation_matches_numpy():
    g = _generator(50)
    a = torch.randn(4, 3, 20, generator=g, dtype=F64)
    b = a + torch.randn(4, 3, 20, generator=g, dtype=F64)
    rho = metrics.pearson_correlation(a, b, dims=(1, 2))
    expected = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for i in range(4)]
    np.testing.assert_allclose(rho.numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(
        metrics.pearson_correlation(a, 3 * a - 1, dims=-1), torch.ones(4, 3, dtype=F64)
    )


def test_high_correlation_time_constructed_example():
    g = _generator(51)
    time, space = 10, 64
    truth = torch.randn(time, 1, space, generator=g, dtype=F64)  # (time, channels, x)
    prediction = truth.expand(3, time, 1, space).clone()  # (members, time, channels, x)
    prediction[0, 4:] = -truth[4:]  # corr −1 from lead 4 on
    prediction[1, 6] = torch.randn(1, space, generator=g, dtype=F64)  # dips at 6, recovers
    prediction[2] = truth + 0.1 * torch.randn(time, 1, space, generator=g, dtype=F64)  # never
    result = metrics.high_correlation_time(truth, prediction, time_dim=1, dt=0.5)
    torch.testing.assert_close(result, torch.tensor([2.0, 3.0, 5.0], dtype=F64))
    same = metrics.high_correlation_time(truth, prediction, time_dim=-3, dt=0.5)
    torch.testing.assert_close(same, result)
    constant = metrics.high_correlation_time(truth, torch.zeros_like(truth), time_dim=0)
    assert float(constant) == 0.0  # correlation undefined counts as lost


# ----------------------------------------------------------------------------- blow-up


def test_blow_up_flags_nonfinite_and_large_values():
    ensemble = torch.zeros(4, 3, 5)
    assert not bool(metrics.blow_up(ensemble))
    ensemble[1, 2, 0] = math.nan
    ensemble[2, 0, 4] = math.inf
    ensemble[3, 1, 1] = -2e3
    assert bool(metrics.blow_up(ensemble))
    assert metrics.blow_up(ensemble, dims=(1, 2)).tolist() == [False, True, True, True]
    assert metrics.blow_up(ensemble, threshold=1e4, dims=(1, 2)).tolist() == [
        False,
        True,
        True,
        False,
    ]


# ----------------------------------------------------------------------------- purity


def test_functions_do_not_mutate_inputs_and_keep_dtype():
    g = _generator(60)
    ensemble = torch.randn(5, 3, 2, 8, 8, generator=g)  # (members, time, channels, x, y)
    truth = torch.randn(3, 2, 8, 8, generator=g)
    weights = torch.rand(5, 3, generator=g)
    spectrum = torch.rand(9, generator=g)
    inputs = (ensemble, truth, weights, spectrum)
    copies = [t.clone() for t in inputs]
    outputs = [
        metrics.ensemble_mean(ensemble, weights=weights),
        metrics.rmse(truth, ensemble, weights=weights, dims=(1, 2, 3)),
        metrics.crps_ensemble(truth, ensemble, weights=weights, fair=True),
        metrics.crps_ensemble(truth, ensemble),
        metrics.spread(ensemble, weights=weights),
        metrics.spread_skill_ratio(truth, ensemble),
        metrics.pit_values(truth, ensemble, weights=weights, generator=g),
        metrics.energy_spectrum(ensemble, space_dims=2),
        metrics.energy_spectrum(ensemble, space_dims=1),
        metrics.kolmogorov_energy_spectrum(ensemble),
        metrics.spectrum_relative_error(spectrum, spectrum),
        metrics.high_correlation_time(truth, ensemble, time_dim=1),
    ]
    metrics.rank_histogram(truth, ensemble, generator=g)
    metrics.blow_up(ensemble)
    for original, copy in zip(inputs, copies, strict=True):
        assert torch.equal(original, copy)
    for output in outputs:
        assert output.dtype == torch.float32
