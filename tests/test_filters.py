"""SMC resampling / regularisation / tempering, EnKF RTPS and the fixed-lag ensemble smoother.

Oracles and tolerances (each from the Monte-Carlo error of the quantity compared):

* resampling counts: over ``R`` independent resamplings the mean number of copies of particle
  i is N W_i; every scheme here has a count variance at most the multinomial one,
  N W_i (1 - W_i), so ``Z`` standard errors ``sqrt(N W_i (1 - W_i) / R)`` bound the error;
* the regularisation jitter's covariance: the sample covariance of ``n`` Gaussian draws has
  entry-wise standard error ``sqrt((C_ij^2 + C_ii C_jj) / n)``;
* SMC posterior moments against the Kalman filter: the ESS-based standard errors of
  ``tests/test_smc.py`` (importance-sampling variance P / ESS accumulated over frames);
* EnKF / smoother moments against the Kalman (RTS) smoother: the per-entry standard deviation
  of the estimator measured over ``REPLICATES`` runs at ``SMALL`` members, scaled by
  ``sqrt(SMALL / LARGE)`` (as ``tests/test_enkf.py``; the gain-estimation noise of an EnKF
  has no simple closed form), with ``Z = 6`` (Bonferroni over the entries compared).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from ardm_infer.ardm import analytic_ardm
from ardm_infer.dynamics import LinearGaussianTwin, Lorenz96, Lorenz96Config, kalman_filter
from ardm_infer.dynamics.linear_gaussian import fixed_lag_smoother
from ardm_infer.guidance import ZeroGuidance
from ardm_infer.strategies import Problem, assimilate, get_strategy, make_problem
from ardm_infer.strategies.enkf import etkf_analysis, relax_to_prior_spread
from ardm_infer.strategies.smc import (
    RESAMPLING_METHODS,
    SMC,
    regularisation_noise,
    resample_ancestors,
)

Z = 6.0
DIM, TRAJECTORIES, HORIZON, SIGMA = 8, 3, 6, 0.5
SMALL, LARGE, REPLICATES = 200, 2000, 30


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def twin_problem() -> tuple[LinearGaussianTwin, Problem]:
    """The 8-point twin, 3 trajectories, 6 frames, masks that differ per trajectory and frame
    (frame 2 unobserved everywhere)."""
    twin = LinearGaussianTwin.default(dim=DIM)
    g = generator(0)
    x0 = 2 * torch.randn(TRAJECTORIES, DIM, generator=g, dtype=torch.float64)
    truth = twin.trajectory(x0, HORIZON, g)
    mask = torch.rand(TRAJECTORIES, HORIZON, DIM, generator=g) < 0.5
    mask[:, 2] = False
    noise = torch.randn(truth.shape, generator=g, dtype=torch.float64)
    observation = torch.where(mask, truth + SIGMA * noise, 0.0)
    problem = Problem(
        truth=truth.unsqueeze(2),
        context=x0.view(TRAJECTORIES, 1, 1, DIM),
        observation=observation.unsqueeze(2),
        mask=mask.unsqueeze(2),
        sigma=SIGMA,
    )
    return twin, problem


def exact_filter(twin: LinearGaussianTwin, problem: Problem, initial_variance: float = 0.0):
    """Kalman filter of ``twin`` from the context with covariance ``initial_variance * I``."""
    return kalman_filter(
        twin,
        problem.observation[:, :, 0],
        problem.mask[..., 0, :],
        problem.sigma,
        initial_mean=problem.context[:, -1, 0],
        initial_covariance=initial_variance * torch.eye(DIM, dtype=torch.float64),
    )


# --------------------------------------------------------------------------- SMC: resampling


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_resampling_is_unbiased(method):
    members, trajectories, repeats = 50, 4, 4000
    g = generator(1)
    log_weights = torch.randn(members, trajectories, generator=g, dtype=torch.float64)
    log_weights[0, 1] = -math.inf  # a particle of zero weight is never chosen
    weights = torch.softmax(log_weights, 0)
    assert weights.max() <= 0.5  # the multinomial variance bounds every scheme's
    counts = torch.zeros(members, trajectories, dtype=torch.float64)
    draws = generator(2)
    for _ in range(repeats):
        ancestors = resample_ancestors(log_weights, method, draws)
        assert ancestors.shape == (members, trajectories)
        assert (ancestors[1:] >= ancestors[:-1]).all()  # sorted along members
        assert not (ancestors[:, 1] == 0).any()
        counts.scatter_add_(0, ancestors, torch.ones_like(counts))
    expected = members * weights
    se = (members * weights * (1 - weights) / repeats).sqrt()
    assert ((counts / repeats - expected).abs() <= Z * se + 1e-12).all()


def test_systematic_and_residual_keep_the_integer_part():
    """Systematic copies floor(N W) or ceil(N W) times; residual at least floor(N W)."""
    members = 40
    log_weights = torch.randn(members, 3, generator=generator(3), dtype=torch.float64)
    expected = members * torch.softmax(log_weights, 0)
    for seed in range(20):
        for method in ("systematic", "residual"):
            ancestors = resample_ancestors(log_weights, method, generator(seed))
            counts = torch.zeros_like(expected).scatter_add_(
                0, ancestors, torch.ones_like(expected)
            )
            assert (counts >= expected.floor()).all()
            if method == "systematic":
                assert (counts <= expected.ceil()).all()


def test_unknown_resampling_is_refused():
    with pytest.raises(ValueError, match="resampling must be one of"):
        SMC.Config(resampling="stochastic")
    with pytest.raises(ValueError, match="resampling must be one of"):
        resample_ancestors(torch.zeros(3, 1), "stochastic", generator(0))


# --------------------------------------------------------------------------- SMC: regularisation


@pytest.mark.parametrize("members", [60, 12])  # > 2 d: SVD-reduced factor; <= 2 d: direct
def test_regularisation_noise_has_the_weighted_covariance(members):
    """reg * h * C^(1/2) xi with C the unbiased weighted covariance and h = N^(-1/(d+4))."""
    d, draws, reg = 5, 3000, 0.8
    g = generator(4)
    window = torch.randn(members, 2, 1, 1, d, generator=g, dtype=torch.float64)
    window = window * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    log_weights = torch.log_softmax(torch.randn(members, 2, generator=g, dtype=torch.float64), 0)
    ancestors = torch.arange(members).unsqueeze(1).expand(members, 2).contiguous()
    active = torch.tensor([True, False])
    samples = torch.stack(
        [
            regularisation_noise(window, log_weights, ancestors, active, reg, False, generator(s))
            for s in range(draws // members + 1)
        ]
    )  # (repeats, members, 2, 1, 1, d)
    assert (samples[:, :, 1] == 0).all()  # inactive trajectory untouched
    noise = samples[:, :, 0].reshape(-1, d)
    w = log_weights[:, 0].exp()
    x = window[:, 0].reshape(members, d)
    mean = (w[:, None] * x).sum(0)
    cov = (w[:, None, None] * (x - mean)[:, :, None] * (x - mean)[:, None, :]).sum(0)
    cov = cov / (1 - w.square().sum())
    expected = (reg * members ** (-1 / (d + 4))) ** 2 * cov
    empirical = noise.T @ noise / noise.shape[0]  # zero-mean noise
    diag = torch.diagonal(expected)
    se = ((expected.square() + diag[:, None] * diag[None, :]) / noise.shape[0]).sqrt()
    assert ((empirical - expected).abs() < Z * se).all(), (empirical - expected) / se


def test_shrunk_kernel_keeps_mean_and_covariance():
    """Liu-West: m + a (x - m) + b C^(1/2) xi keeps the weighted mean and covariance; the
    plain kernel adds b^2 C."""
    members, d, repeats, reg = 30, 3, 400, 1.5
    window = torch.randn(members, 1, 1, 1, d, generator=generator(20), dtype=torch.float64)
    log_weights = torch.full((members, 1), -math.log(members), dtype=torch.float64)
    identity = torch.arange(members).unsqueeze(1)
    x = window.reshape(members, d)
    cov = torch.cov(x.T)
    b2 = min(reg * members ** (-1 / (d + 4)), 1.0) ** 2
    for kernel, expected in (("shrunk", cov), ("plain", (1 + b2) * cov)):
        moved = torch.stack(
            [
                (
                    window
                    + regularisation_noise(
                        window,
                        log_weights,
                        identity,
                        torch.tensor([True]),
                        reg,
                        False,
                        generator(s),
                        kernel,
                    )
                ).reshape(members, d)
                for s in range(repeats)
            ]
        )  # (repeats, members, d)
        centred = moved - x.mean(0)
        empirical = torch.einsum("rmi,rmj->ij", centred, centred) / (repeats * (members - 1))
        # Only the b C^(1/2) xi part is random (repeats * members draws); the standard error
        # of a sample covariance entry with the full C in place of b^2 C bounds its error.
        diag = torch.diagonal(expected)
        draws = repeats * members
        se = ((expected.square() + diag[:, None] * diag[None, :]) / draws).sqrt()
        assert ((empirical - expected).abs() < Z * se).all(), kernel
        if kernel == "shrunk":
            mean_se = (b2 * torch.diagonal(cov) / draws).sqrt()
            assert ((moved.mean((0, 1)) - x.mean(0)).abs() < Z * mean_se).all()


def test_regularisation_moves_only_duplicates_by_default():
    members = 8
    window = torch.randn(members, 1, 1, 1, 3, generator=generator(5), dtype=torch.float64)
    log_weights = torch.full((members, 1), -math.log(members), dtype=torch.float64)
    ancestors = torch.tensor([[0], [0], [1], [2], [4], [4], [4], [7]])
    noise = regularisation_noise(
        window, log_weights, ancestors, torch.tensor([True]), 1.0, True, generator(6)
    )
    moved = noise.reshape(members, -1).abs().sum(-1) > 0
    assert moved.tolist() == [True, True, False, False, True, True, True, False]


def test_regularisation_and_tempering_defaults_are_the_old_filter():
    """Explicit defaults give bit-identical output to the plain bootstrap filter."""
    twin, problem = twin_problem()
    plain = assimilate(twin, problem, "smc", members=64, generator=generator(7))
    spelled = assimilate(
        twin,
        problem,
        "smc",
        members=64,
        generator=generator(7),
        resampling="systematic",
        regularisation=0.0,
        tempering_ess=0.0,
        initial_spread=0.0,
        proposal_inflation=1.0,
    )
    assert torch.equal(plain.ensemble, spelled.ensemble)
    assert all(int(s.sum()) == 0 for s in plain.diagnostics["tempering_stages"])


# --------------------------------------------------------------------------- SMC: posteriors


class _Deterministic:
    """x' = A x (the twin without its process noise), for the process_noise tests."""

    context_length = 1
    stochastic = False

    def __init__(self, transition: torch.Tensor) -> None:
        self.transition = transition
        self.frame_shape = (1, transition.shape[0])

    def step(self, context, generator=None):
        return context[:, -1] @ self.transition.T.to(context)


def _smc_moments(result):
    """Weighted mean, variance ``(trajectories, horizon, d)`` and the accumulated 1/ESS."""
    weights = torch.stack(result.diagnostics["log_weights"], 2).exp().unsqueeze(-1)
    x = result.ensemble[:, :, :, 0]
    mean = (weights * x).sum(0)
    var = (weights * (x - mean).square()).sum(0)
    accumulated = (1 / torch.stack(result.diagnostics["ess"], 1)).cumsum(1).unsqueeze(-1)
    return mean, var, accumulated


def _assert_smc_matches(result, exact, allowance: float = 0.0):
    """SMC moments within Z ESS-based standard errors of ``exact`` (``allowance``: an extra
    relative bias allowed on the variance)."""
    mean, var, accumulated = _smc_moments(result)
    P = torch.diagonal(exact.covariance, dim1=-2, dim2=-1)
    mean_se, var_se = (P * accumulated).sqrt(), P * (2 * accumulated).sqrt()
    assert ((mean - exact.mean).abs() < Z * mean_se).all(), (mean - exact.mean) / mean_se
    assert ((var - P).abs() < Z * var_se + allowance * P).all(), (var - P) / var_se


def test_proposal_inflation_keeps_the_jittered_model_exact():
    """qroot: the jitter drawn with variance lambda p^2, reweighted by the exact p/q ratio,
    still filters x' = A x + p xi (the Kalman filter with Q = p^2 I), log-evidence included."""
    twin, problem = twin_problem()
    members, p = 20000, 0.4
    jittered = LinearGaussianTwin(twin.transition, p**2 * torch.eye(DIM, dtype=torch.float64))
    exact = exact_filter(jittered, problem)
    result = assimilate(
        _Deterministic(twin.transition),
        problem,
        "smc",
        members=members,
        generator=generator(8),
        process_noise=p,
        proposal_inflation=2.0,
    )
    _assert_smc_matches(result, exact)
    ess = result.diagnostics["ess"]
    evidence_se = torch.stack([1 / e - 1 / members for e in ess]).sum(0).sqrt()
    error = result.diagnostics["log_evidence"][-1] - exact.log_likelihood
    assert (error.abs() < Z * evidence_se).all(), error / evidence_se


def test_proposal_inflation_without_its_correction_is_detected():
    """The same check fails when the inflated jitter is not corrected in the weights."""
    twin, problem = twin_problem()
    p = 0.4
    jittered = LinearGaussianTwin(twin.transition, p**2 * torch.eye(DIM, dtype=torch.float64))
    result = assimilate(
        _Deterministic(twin.transition),
        problem,
        "smc",
        members=20000,
        generator=generator(8),
        process_noise=p * math.sqrt(2.0),  # the inflated proposal, uncorrected
    )
    with pytest.raises(AssertionError):
        _assert_smc_matches(result, exact_filter(jittered, problem))


@functools.cache
def _tempered_spread(members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry std of the tempered filter's weighted mean and variance over REPLICATES."""
    twin, problem = twin_problem()
    means, variances = [], []
    for seed in range(REPLICATES):
        result = assimilate(
            twin,
            problem.with_sigma(0.25),
            "smc",
            generator=generator(300 + seed),
            members=members,
            **TEMPERED,
        )
        mean, var, _ = _smc_moments(result)
        means.append(mean)
        variances.append(var)
    return torch.stack(means).std(0), torch.stack(variances).std(0)


TEMPERED = dict(regularisation=1.0, regularisation_kernel="shrunk", tempering_ess=0.5)


def test_tempering_on_the_twin_matches_the_kalman_filter():
    """Progressive correction with the moment-keeping (Liu-West) kernel on the Gaussian twin:
    at sigma = 0.25 the bootstrap weights collapse (ESS of a few particles), the stages keep
    the ESS at half the particles, and the posterior is Kalman's within the Monte-Carlo error
    measured over replicates (scaled from SMALL to LARGE particles)."""
    twin, problem = twin_problem()
    sharp = problem.with_sigma(0.25)
    exact = exact_filter(twin, sharp)
    result = assimilate(twin, sharp, "smc", members=LARGE, generator=generator(9), **TEMPERED)
    stages = torch.stack(result.diagnostics["tempering_stages"])
    assert stages.sum() > 0
    ess = torch.stack(result.diagnostics["ess"])
    assert (ess >= 0.5 * LARGE - 1e-6).all()  # every last stage keeps the target ESS
    sd_mean, sd_var = _tempered_spread(SMALL)
    scale = math.sqrt(SMALL / LARGE)
    mean, var, _ = _smc_moments(result)
    P = torch.diagonal(exact.covariance, dim1=-2, dim2=-1)
    assert ((mean - exact.mean).abs() < Z * sd_mean * scale).all()
    assert ((var - P).abs() < Z * sd_var * scale).all()
    bootstrap = assimilate(twin, sharp, "smc", members=LARGE, generator=generator(9))
    assert torch.stack(bootstrap.diagnostics["ess"]).min() < 0.01 * LARGE


def test_new_options_keep_guided_proposals_exact_on_the_ardm():
    """On the analytic ARDM a zero-control guided proposal (log-ratio 0 on every path) gives
    bit-identical particles, weights and evidence to the bootstrap filter with tempering,
    regularisation and another resampling scheme: the path weight enters every stage."""
    twin, problem = twin_problem()
    ardm = analytic_ardm(twin)
    options = dict(regularisation=0.5, tempering_ess=0.5, resampling="residual", initial_spread=0.1)
    runs = [
        assimilate(
            ardm,
            problem.with_sigma(0.2),
            "smc",
            members=64,
            generator=generator(23),
            **options,
            **extra,
        )
        for extra in ({}, {"proposal": lambda problem, t: ZeroGuidance()})
    ]
    assert torch.stack(runs[0].diagnostics["tempering_stages"]).sum() > 0
    assert torch.equal(runs[0].ensemble, runs[1].ensemble)
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)
    assert torch.equal(
        runs[0].diagnostics["log_evidence"][-1], runs[1].diagnostics["log_evidence"][-1]
    )


def test_regularised_smc_tracks_lorenz96():
    """Lorenz-96 with 10 variables (sigma_y = 1, every variable, uncertain start): the
    bootstrap filter without jitter keeps identical particles and loses the truth; the
    regularised (plain kernel) filter, with or without tempering, tracks it well below the
    observation error (benchmarks/lorenz96_twin.py runs the 40-variable set-up)."""
    model = Lorenz96(Lorenz96Config(variables=10))
    g = generator(10)
    x0 = model.integrate(model.random_initial_condition(4, g), 1000)
    truth = model.trajectory(x0, 100)
    context = x0 + torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    frames = torch.cat([context.unsqueeze(1), truth], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "full, every=1, sigma=1", g)
    errors = {}
    for label, options in (
        ("plain", {}),
        ("regularised", {"regularisation": 0.9}),
        ("tempered", {"regularisation": 0.9, "tempering_ess": 0.5}),
    ):
        result = assimilate(
            model,
            problem,
            "smc",
            members=300,
            generator=generator(11),
            initial_spread=1.0,
            **options,
        )
        error = (result.ensemble.mean(0) - problem.truth).square().mean((2, 3)).sqrt()
        errors[label] = error[:, 50:].mean(1)  # (trajectories,)
    assert (errors["plain"] > 2).all(), errors
    assert (errors["regularised"] < 0.4).all(), errors
    assert (errors["tempered"] < 0.4).all(), errors


# --------------------------------------------------------------------------- EnKF: RTPS


def test_rtps_relaxes_the_analysis_spread_as_defined():
    members, space = 12, (16,)
    g = generator(12)
    forecast = torch.randn(members, 3, 2, *space, generator=g, dtype=torch.float64)
    observation = torch.randn(3, 2, *space, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 2, *space, generator=g) < 0.4
    mask[1] = False  # trajectory 1 observes nothing
    analysis = etkf_analysis(forecast, observation, mask, 0.3, inflation=1.1)
    for alpha in (0.0, 0.3, 1.0):
        relaxed = relax_to_prior_spread(forecast, analysis, alpha, mask)
        torch.testing.assert_close(relaxed.mean(0), analysis.mean(0))
        target = (1 - alpha) * analysis.std(0) + alpha * forecast.std(0)
        torch.testing.assert_close(relaxed.std(0)[[0, 2]], target[[0, 2]])
        assert torch.equal(relaxed[:, 1], analysis[:, 1])
        if alpha == 0.0:
            assert torch.equal(relaxed, analysis)


@pytest.mark.parametrize("variant", ["etkf", "perturbed"])
def test_rtps_in_the_strategy(variant):
    """The strategy's analysis frames carry the RTPS spread; rtps=0 is bit-identical."""
    twin, problem = twin_problem()
    plain = assimilate(twin, problem, "enkf", members=30, generator=generator(13), variant=variant)
    zero = assimilate(
        twin, problem, "enkf", members=30, generator=generator(13), variant=variant, rtps=0.0
    )
    assert torch.equal(plain.ensemble, zero.ensemble)
    one = problem.__class__(
        truth=problem.truth[:, :1],
        context=problem.context,
        observation=problem.observation[:, :1],
        mask=problem.mask[:, :1],
        sigma=SIGMA,
    )
    forecast = assimilate(twin, one, "forecast", members=30, generator=generator(14))
    relaxed = assimilate(
        twin, one, "enkf", members=30, generator=generator(14), variant=variant, rtps=0.5
    )
    unrelaxed = assimilate(twin, one, "enkf", members=30, generator=generator(14), variant=variant)
    target = 0.5 * unrelaxed.ensemble.std(0) + 0.5 * forecast.ensemble.std(0)
    torch.testing.assert_close(relaxed.ensemble.std(0), target)
    torch.testing.assert_close(relaxed.ensemble.mean(0), unrelaxed.ensemble.mean(0))
    spread = relaxed.diagnostics["analysis_spread"][0]
    torch.testing.assert_close(spread, relaxed.ensemble[:, :, 0].var(0).mean((1, 2)).sqrt())


def test_rtps_keeps_an_uninflated_etkf_on_lorenz96():
    """On the Lorenz-96 twin (40 variables, sigma_y = 1) a 24-member ETKF without inflation
    loses the truth; relaxation to prior spread (alpha = 0.3) alone keeps it near the
    published square-root-filter accuracy (about 0.18, Sakov & Oke 2008)."""
    model = Lorenz96()
    g = generator(21)
    x0 = model.integrate(model.random_initial_condition(1, g), 2000)
    truth = model.trajectory(x0, 400)
    context = x0 + torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    frames = torch.cat([context.unsqueeze(1), truth], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "full, every=1, sigma=1", g)
    errors = {}
    for rtps in (0.0, 0.3):
        result = assimilate(
            model,
            problem,
            "enkf",
            members=24,
            generator=generator(22),
            initial_spread=1.0,
            rtps=rtps,
        )
        error = (result.ensemble.mean(0) - problem.truth).square().mean((0, 2, 3)).sqrt()
        errors[rtps] = error[200:].mean().item()
    assert errors[0.0] > 1.0, errors
    assert errors[0.3] < 0.3, errors


def test_rtps_validation():
    config = get_strategy("enkf").Config
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="rtps"):
            config(rtps=bad)


# --------------------------------------------------------------------------- EnKF: smoother


def test_fixed_lag_reference_interpolates_filter_and_smoother():
    """lag 0 is the filter; the smoother's variance never exceeds the filter's; a lag past the
    horizon equals the fixed-interval RTS smoother, which at the last frame is the filter."""
    twin, problem = twin_problem()
    kf = exact_filter(twin, problem)
    zero = fixed_lag_smoother(kf, twin, 0)
    torch.testing.assert_close(zero.mean, kf.mean)
    torch.testing.assert_close(zero.covariance, kf.covariance)
    variance = functools.partial(torch.diagonal, dim1=-2, dim2=-1)
    previous = variance(kf.covariance)
    for lag in (1, 2, HORIZON):
        smoothed = variance(fixed_lag_smoother(kf, twin, lag).covariance)
        assert (smoothed <= previous + 1e-12).all()
        previous = smoothed
    full = fixed_lag_smoother(kf, twin, 10 * HORIZON)
    torch.testing.assert_close(full.mean[:, -1], kf.mean[:, -1])
    torch.testing.assert_close(full.mean, fixed_lag_smoother(kf, twin, HORIZON).mean)


def _smoother_moments(ensemble: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(traj, T, d)`` and covariance ``(traj, T, d, d)`` of ``(members, traj, T, 1, d)``."""
    x = ensemble[:, :, :, 0].double()
    mean = x.mean(0)
    anomalies = x - mean
    cov = torch.einsum("mtsi,mtsj->tsij", anomalies, anomalies) / (x.shape[0] - 1)
    return mean, cov


@functools.cache
def _smoother_spread(variant: str, lag: int) -> tuple[torch.Tensor, torch.Tensor]:
    twin, problem = twin_problem()
    means, covs = [], []
    for seed in range(REPLICATES):
        result = assimilate(
            twin,
            problem,
            "enkf",
            members=SMALL,
            generator=generator(100 + seed),
            variant=variant,
            lag=lag,
        )
        m, c = _smoother_moments(result.ensemble)
        means.append(m)
        covs.append(c)
    return torch.stack(means).std(0), torch.stack(covs).std(0)


@pytest.mark.parametrize("variant", ["etkf", "perturbed"])
def test_fixed_lag_smoother_matches_the_kalman_smoother(variant):
    """Mean and full covariance of every emitted frame against the exact fixed-lag (RTS)
    smoother with the same lag; the same tolerance rejects the filter."""
    lag = 2
    twin, problem = twin_problem()
    kf = exact_filter(twin, problem)
    exact = fixed_lag_smoother(kf, twin, lag)
    sd_mean, sd_cov = _smoother_spread(variant, lag)
    result = assimilate(
        twin, problem, "enkf", members=LARGE, generator=generator(7), variant=variant, lag=lag
    )
    assert result.ensemble.shape == (LARGE, TRAJECTORIES, HORIZON, 1, DIM)
    mean, cov = _smoother_moments(result.ensemble)
    scale = math.sqrt(SMALL / LARGE)
    mean_tol, cov_tol = Z * sd_mean * scale, Z * sd_cov * scale + 1e-12
    assert ((mean - exact.mean).abs() < mean_tol).all(), ((mean - exact.mean) / mean_tol).max()
    assert ((cov - exact.covariance).abs() < cov_tol).all(), (
        (cov - exact.covariance) / cov_tol
    ).max()
    # The filter is not the smoother: at the frames with later observations the tolerance
    # separates them.
    filtered = ((cov - kf.covariance).abs() / cov_tol)[:, :-1]
    assert filtered.max() > 1


@pytest.mark.parametrize("variant", ["etkf", "perturbed"])
@pytest.mark.parametrize("localisation_radius", [None, 2.0])
def test_smoother_runs_the_filter_underneath(variant, localisation_radius):
    """The filter's own ensemble continues the forecast: the last frame (no later
    observations) is the lag-0 filter's, and without future observations nothing changes."""
    twin, problem = twin_problem()
    options = dict(variant=variant, localisation_radius=localisation_radius, inflation=1.05)
    filtered = assimilate(twin, problem, "enkf", members=40, generator=generator(15), **options)
    smoothed = assimilate(
        twin, problem, "enkf", members=40, generator=generator(15), lag=3, **options
    )
    torch.testing.assert_close(smoothed.ensemble[:, :, -1], filtered.ensemble[:, :, -1])
    assert smoothed.diagnostics["analysis_frames"] == filtered.diagnostics["analysis_frames"]
    assert not torch.allclose(smoothed.ensemble[:, :, 0], filtered.ensemble[:, :, 0])
    # Frame 1 is followed by unobserved frame 2: with lag 1 it sees nothing new.
    lag_one = assimilate(
        twin, problem, "enkf", members=40, generator=generator(15), lag=1, **options
    )
    torch.testing.assert_close(lag_one.ensemble[:, :, 1], filtered.ensemble[:, :, 1])


def test_localised_smoother_beats_the_filter_on_the_twin():
    """LETKF smoothing (Gaspari-Cohn radius 2 on the 8-point ring): over many trajectories
    the smoothed mean is closer to the truth than the filter's at frames with later data."""
    twin = LinearGaussianTwin.default(dim=DIM)
    g = generator(16)
    x0 = torch.randn(64, DIM, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 12, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "stride=2, every=1, sigma=0.5", g)
    options = dict(members=20, localisation_radius=2.0)
    errors = {}
    for lag in (0, 2):
        result = assimilate(twin, problem, "enkf", generator=generator(17), lag=lag, **options)
        errors[lag] = (result.ensemble.mean(0) - problem.truth).square().mean((2, 3))[:, :-2]
    difference = errors[0] - errors[2]  # (trajectories, frames) per-trajectory gains
    per_trajectory = difference.mean(1)
    se = per_trajectory.std() / math.sqrt(per_trajectory.numel())
    assert per_trajectory.mean() > Z * se / 2  # a one-sided 3-sigma improvement


def test_lag_and_lookahead():
    enkf, smc = get_strategy("enkf"), get_strategy("smc")
    assert enkf.lookahead(enkf.Config()) == 0
    assert enkf.lookahead(enkf.Config(lag=4)) == 4
    assert smc.lookahead(smc.Config()) == 0
    for bad in (-1, 1.5, True):  # out of range: ValueError; not an int: TypeError
        with pytest.raises((ValueError, TypeError), match="lag"):
            enkf.Config(lag=bad)


def test_smc_config_validation():
    for options, message in (
        ({"regularisation": -1.0}, "regularisation"),
        ({"tempering_ess": 1.0}, "tempering_ess"),
        ({"tempering_ess": 0.5}, "regularisation > 0"),
        ({"proposal_inflation": 0.5, "process_noise": 1.0}, "proposal_inflation"),
        ({"proposal_inflation": 2.0}, "process_noise > 0"),
        ({"initial_spread": -1.0}, "initial_spread"),
    ):
        with pytest.raises(ValueError, match=message):
            SMC.Config(**options)
