"""The ``enkf`` strategy: exact Kalman oracle, prior limit, localisation, conformance.

Statistical tolerances come from Monte-Carlo error:

* Against the Kalman filter, the EnKF mean and variance at ``N`` members have an error of
  order ``1/sqrt(N)`` whose constant (gain-estimation noise times the innovation) has no
  simple closed form.  We measure it: ``REPLICATES`` independent runs at ``SMALL`` members
  give the per-entry standard deviation of the estimator, which is scaled by
  ``sqrt(SMALL / LARGE)`` to the large run.  ``Z = 6`` covers the 144 entries x 2
  moments compared per run (Bonferroni with a t-distribution of ``REPLICATES - 1`` degrees
  of freedom: family-wise false-alarm rate below 1e-3).
* In the prior limit (sigma -> infinity) the members are independent draws of the prior,
  so the standard errors are exact: ``sqrt(var / N)`` for the mean and
  ``var sqrt(2 / (N - 1))`` for the variance; ``Z_EXACT = 5`` (Bonferroni over 144 entries).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

import ardm_infer.strategies.enkf  # noqa: F401  (registers "enkf")
from ardm_infer.dynamics import LinearGaussianTwin, kalman_filter
from ardm_infer.strategies import Problem, assimilate, available_strategies, make_problem
from ardm_infer.strategies.enkf import (
    EnsembleKalmanFilter,
    etkf_analysis,
    gaspari_cohn,
    periodic_distance,
    perturbed_analysis,
)

DIM, TRAJECTORIES, HORIZON, SIGMA = 8, 3, 6, 0.5
SMALL, LARGE, REPLICATES = 200, 2000, 30
Z, Z_EXACT = 6.0, 5.0
VARIANTS = ("etkf", "perturbed")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def twin_problem(dtype: torch.dtype = torch.float64) -> tuple[LinearGaussianTwin, Problem]:
    """The twin and a problem whose masks differ per trajectory and per frame.

    Frame t = 2 is unobserved everywhere and trajectory 1 observes nothing at t = 4.
    """
    twin = LinearGaussianTwin.default(dim=DIM, dtype=dtype)
    g = generator(0)
    x0 = 2 * torch.randn(TRAJECTORIES, DIM, generator=g, dtype=torch.float64)
    truth = LinearGaussianTwin.default(dim=DIM).trajectory(x0, HORIZON, g)
    mask = torch.rand(TRAJECTORIES, HORIZON, DIM, generator=g) < 0.5
    mask[:, 2] = False
    mask[1, 4] = False
    noise = torch.randn(truth.shape, generator=g, dtype=torch.float64)
    observation = torch.where(mask, truth + SIGMA * noise, 0.0)
    problem = Problem(
        truth=truth.unsqueeze(2).to(dtype),
        context=x0.view(TRAJECTORIES, 1, 1, DIM).to(dtype),
        observation=observation.unsqueeze(2).to(dtype),
        mask=mask.unsqueeze(2),
        sigma=SIGMA,
    )
    return twin, problem


def exact_filter(problem: Problem, sigma: float | None = None, observed: bool = True):
    """Kalman filter of the twin (float64) from the exactly known context (covariance 0)."""
    twin = LinearGaussianTwin.default(dim=DIM)
    mask = problem.mask[..., 0, :]  # (traj, T, d) or (T, d)
    mask = mask if observed else torch.zeros_like(mask)
    return kalman_filter(
        twin,
        problem.observation[:, :, 0].double(),
        mask,
        problem.sigma if sigma is None else sigma,
        initial_mean=problem.context[:, -1, 0].double(),
        initial_covariance=torch.zeros(DIM, DIM, dtype=torch.float64),
    )


def moments(ensemble: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance ``(trajectories, horizon, d)`` of ``(members, traj, T, 1, d)``."""
    e = ensemble[:, :, :, 0].double()
    return e.mean(0), e.var(0)


@functools.cache
def replicate_spread(variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry std of the EnKF mean and variance at SMALL members over REPLICATES runs."""
    twin, problem = twin_problem()
    means, variances = [], []
    for seed in range(REPLICATES):
        result = assimilate(
            twin, problem, "enkf", members=SMALL, generator=generator(1000 + seed), variant=variant
        )
        m, v = moments(result.ensemble)
        means.append(m)
        variances.append(v)
    return torch.stack(means).std(0), torch.stack(variances).std(0)


# --------------------------------------------------------------------------- exact oracle


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", VARIANTS)
def test_large_ensemble_matches_the_kalman_filter(variant, dtype):
    twin, problem = twin_problem(dtype)
    kf = exact_filter(problem)
    var_kf = torch.diagonal(kf.covariance, dim1=-2, dim2=-1)
    sd_mean, sd_var = replicate_spread(variant)
    # The measured spread must itself be an O(1/sqrt(N)) Monte-Carlo error, not a blow-up.
    assert (sd_mean < 4 * (var_kf / SMALL).sqrt()).all()
    assert (sd_var < 4 * var_kf * math.sqrt(2 / (SMALL - 1))).all()

    result = assimilate(
        twin, problem, "enkf", members=LARGE, generator=generator(7), variant=variant
    )
    assert result.ensemble.dtype == dtype
    assert result.ensemble.shape == (LARGE, TRAJECTORIES, HORIZON, 1, DIM)
    mean, var = moments(result.ensemble)
    scale = math.sqrt(SMALL / LARGE)
    mean_err = (mean - kf.mean).abs() / (Z * sd_mean * scale)
    var_err = (var - var_kf).abs() / (Z * sd_var * scale)
    assert mean_err.max() < 1, f"mean off by {mean_err.max():.2f} tolerances"
    assert var_err.max() < 1, f"variance off by {var_err.max():.2f} tolerances"
    # analyses happen exactly on the frames observed by some trajectory
    assert result.diagnostics["analysis_frames"] == [0, 1, 3, 4, 5]


def test_the_kalman_comparison_can_fail():
    """A wrong observation noise (sigma / 2 in the filter) is detected by the same test."""
    twin, problem = twin_problem()
    kf = exact_filter(problem)
    sd_mean, _ = replicate_spread("etkf")
    wrong = assimilate(
        twin, problem.with_sigma(SIGMA / 2), "enkf", members=LARGE, generator=generator(7)
    )
    mean, _ = moments(wrong.ensemble)
    assert ((mean - kf.mean).abs() / (Z * sd_mean * math.sqrt(SMALL / LARGE))).max() > 1


# --------------------------------------------------------------------------- prior limit


def test_infinite_noise_etkf_is_the_forecast():
    """The ETKF draws no random numbers, so with sigma -> infinity it is the forecast run."""
    twin, problem = twin_problem()
    enkf = assimilate(twin, problem.with_sigma(1e8), "enkf", members=64, generator=generator(3))
    forecast = assimilate(twin, problem, "forecast", members=64, generator=generator(3))
    torch.testing.assert_close(enkf.ensemble, forecast.ensemble, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", VARIANTS)
def test_infinite_noise_matches_the_prior_distribution(variant):
    """Against the exact prior (no observations) with exact standard errors; the problem
    comes from ``make_problem`` with a random regime shared by the trajectories."""
    twin = LinearGaussianTwin.default(dim=DIM)
    g = generator(11)
    x0 = torch.randn(TRAJECTORIES, DIM, generator=g, dtype=torch.float64)
    frames = torch.cat([x0.unsqueeze(1), twin.trajectory(x0, HORIZON, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "fraction=0.5, every=1, sigma=0.5", g).with_sigma(1e8)
    members = LARGE
    result = assimilate(
        twin, problem, "enkf", members=members, generator=generator(5), variant=variant
    )
    assert len(result.diagnostics["analysis_frames"]) == HORIZON
    prior = exact_filter(problem, observed=False)
    var_prior = torch.diagonal(prior.covariance, dim1=-2, dim2=-1)
    mean, var = moments(result.ensemble)
    assert ((mean - prior.mean).abs() / (var_prior / members).sqrt()).max() < Z_EXACT
    se_var = var_prior * math.sqrt(2 / (members - 1))
    assert ((var - var_prior).abs() / se_var).max() < Z_EXACT


def test_unobserved_problem_is_the_forecast_exactly():
    twin, problem = twin_problem()
    blind = dataclasses.replace(problem, mask=torch.zeros_like(problem.mask))
    for variant in VARIANTS:
        enkf = assimilate(twin, blind, "enkf", members=8, generator=generator(2), variant=variant)
        forecast = assimilate(twin, blind, "forecast", members=8, generator=generator(2))
        assert torch.equal(enkf.ensemble, forecast.ensemble)
        assert enkf.diagnostics["analysis_frames"] == []


# --------------------------------------------------------------------------- analysis algebra


def random_frame(space, members=10, trajectories=3, channels=2, seed=0, dtype=torch.float64):
    """Random forecast ``(members, traj, C, *space)``, observation and per-trajectory mask
    (trajectory 1 observes nothing)."""
    g = generator(seed)
    ensemble = torch.randn(members, trajectories, channels, *space, generator=g, dtype=dtype)
    ensemble = ensemble + torch.randn(trajectories, channels, *space, generator=g, dtype=dtype)
    observation = torch.randn(trajectories, channels, *space, generator=g, dtype=dtype)
    mask = torch.rand(trajectories, channels, *space, generator=g) < 0.4
    mask[1] = False
    return ensemble, observation, mask


def kalman_update(ensemble, observation, mask, sigma, inflation):
    """Exact Kalman mean and covariance from the sample moments, per trajectory; the
    anomalies of trajectories that observe something are inflated first."""
    members, n = ensemble.shape[:2]
    x = ensemble.reshape(members, n, -1)
    mean = x.mean(0)
    observed = mask.reshape(n, -1).any(-1, keepdim=True)
    a = (x - mean) * (1 + (inflation - 1) * observed.double())
    p = torch.einsum("mni,mnj->nij", a, a) / (members - 1)
    h = mask.reshape(n, -1).double()
    s = h.unsqueeze(-1) * p * h.unsqueeze(-2) + torch.diag_embed(h * sigma**2 + (1 - h))
    k = (p * h.unsqueeze(-2)) @ torch.linalg.inv(s)
    d = (observation.reshape(n, -1) - mean) * h
    mean_a = mean + (k @ d.unsqueeze(-1)).squeeze(-1)
    p_a = p - (k * h.unsqueeze(-2)) @ p
    return mean_a, p_a


@pytest.mark.parametrize("space", [(12,), (6, 5)])
@pytest.mark.parametrize("radius", [None, 1e7])
def test_etkf_is_the_exact_square_root_update(space, radius):
    """ETKF analysis mean and covariance equal the Kalman update of the sample moments
    (also as an LETKF with an infinite radius), and an unobserved trajectory is untouched."""
    ensemble, observation, mask = random_frame(space)
    analysis = etkf_analysis(ensemble, observation, mask, 0.7, 1.2, radius)
    mean_a, p_a = kalman_update(ensemble, observation, mask, 0.7, 1.2)
    members, n = ensemble.shape[:2]
    x = analysis.reshape(members, n, -1)
    torch.testing.assert_close(x.mean(0), mean_a, rtol=0, atol=1e-10)
    a = x - x.mean(0)
    torch.testing.assert_close(
        torch.einsum("mni,mnj->nij", a, a) / (members - 1), p_a, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(analysis[:, 1], ensemble[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("space", [(12,), (6, 5)])
def test_perturbed_mean_is_the_kalman_mean_and_solvers_agree(space):
    ensemble, observation, mask = random_frame(space)
    mean_a, _ = kalman_update(ensemble, observation, mask, 0.7, 1.2)
    out = {
        solve_in: perturbed_analysis(
            ensemble, observation, mask, 0.7, generator(4), 1.2, solve_in=solve_in
        )
        for solve_in in ("ensemble", "observation")
    }
    localised = perturbed_analysis(ensemble, observation, mask, 0.7, generator(4), 1.2, 1e7)
    torch.testing.assert_close(out["ensemble"], out["observation"], rtol=0, atol=1e-10)
    torch.testing.assert_close(localised, out["observation"], rtol=0, atol=1e-9)
    members, n = ensemble.shape[:2]
    torch.testing.assert_close(
        out["ensemble"].reshape(members, n, -1).mean(0), mean_a, rtol=0, atol=1e-10
    )
    torch.testing.assert_close(out["ensemble"][:, 1], ensemble[:, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_huge_radius_equals_no_localisation_through_assimilate(variant):
    twin, problem = twin_problem()
    runs = [
        assimilate(
            twin,
            problem,
            "enkf",
            members=12,
            generator=generator(9),
            variant=variant,
            inflation=1.05,
            localisation_radius=radius,
        ).ensemble
        for radius in (None, 1e7)
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- localisation


def test_gaspari_cohn_values():
    c = 3.0
    r = torch.tensor([0.0, c, 2 * c, 2.5 * c], dtype=torch.float64)
    torch.testing.assert_close(
        gaspari_cohn(r, c), torch.tensor([1.0, 5 / 24, 0.0, 0.0], dtype=torch.float64)
    )
    eps = torch.tensor([c - 1e-9, c + 1e-9, 2 * c - 1e-6], dtype=torch.float64)
    values = gaspari_cohn(eps, c)
    assert abs(values[0] - values[1]) < 1e-8 and 0 <= values[2] < 1e-12  # continuous
    grid = torch.linspace(0, 2 * c, 101, dtype=torch.float64)
    assert (gaspari_cohn(grid, c).diff() <= 1e-15).all()  # non-increasing


def test_periodic_distance_per_axis():
    space = (10, 7)
    a = torch.tensor([0, 0, 0])
    b = torch.tensor([9 * 7, 6, 9 * 7 + 6])  # (9, 0), (0, 6), (9, 6): all neighbours via wrap
    torch.testing.assert_close(
        periodic_distance(a, b, space, torch.float64),
        torch.tensor([1.0, 1.0, math.sqrt(2)], dtype=torch.float64),
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("space", [(20,), (12, 10)])
def test_localisation_has_compact_support(variant, space):
    """One observation at the grid origin moves only locations within 2c (wrapping)."""
    radius = 2.0
    ensemble, observation, _ = random_frame(space, members=8, trajectories=2, seed=3)
    mask = torch.zeros_like(observation, dtype=torch.bool)
    mask.view(2, 2, -1)[:, 0, 0] = True  # channel 0 at location 0
    if variant == "etkf":
        analysis = etkf_analysis(ensemble, observation, mask, 0.5, 1.0, radius)
    else:
        analysis = perturbed_analysis(ensemble, observation, mask, 0.5, generator(1), 1.0, radius)
    locations = torch.arange(math.prod(space))
    distance = periodic_distance(locations, torch.tensor(0), space, torch.float64)
    moved = (analysis - ensemble).abs().reshape(8, 2, 2, -1).amax(dim=(0, 1, 2)) > 1e-9
    assert not moved[distance >= 2 * radius].any()
    assert moved[distance < 2 * radius].all()
    assert moved[distance == 1].sum() == 2 * len(space)  # wrap-around neighbours too


# --------------------------------------------------------------------------- conformance


def test_registered_and_config_validation():
    assert "enkf" in available_strategies()
    config = EnsembleKalmanFilter.Config()
    assert config.variant == "etkf" and config.inflation == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.inflation = 2.0
    for bad in (
        {"variant": "square-root"},
        {"inflation": 0.0},
        {"localisation_radius": -1.0},
        {"initial_spread": -0.1},
    ):
        with pytest.raises(ValueError):
            EnsembleKalmanFilter.Config(**bad)


def test_one_member_is_refused():
    twin, problem = twin_problem()
    with pytest.raises(ValueError, match=">= 2 members"):
        assimilate(twin, problem, "enkf", members=1, generator=generator(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_deterministic_and_inputs_not_mutated(variant):
    twin, problem = twin_problem()
    before = {f.name: getattr(problem, f.name) for f in dataclasses.fields(problem)}
    copies = {k: v.clone() for k, v in before.items() if isinstance(v, torch.Tensor)}
    options = {"variant": variant, "inflation": 1.1, "localisation_radius": 2.0}
    runs = [
        assimilate(
            twin, problem, "enkf", members=6, generator=generator(4), initial_spread=0.3, **options
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].ensemble, runs[1].ensemble)
    for name, value in copies.items():
        assert torch.equal(getattr(problem, name), value), name
    diagnostics = runs[0].diagnostics
    assert len(diagnostics["innovation_rms"]) == len(diagnostics["analysis_frames"])
    assert diagnostics["innovation_rms"][0].shape == (TRAJECTORIES,)
    assert torch.isnan(diagnostics["innovation_rms"][3][1])  # trajectory 1 blind at t = 4
    other = assimilate(twin, problem, "enkf", members=6, generator=generator(5), **options)
    assert not torch.equal(runs[0].ensemble, other.ensemble)


@pytest.mark.parametrize("radius", [None, 2.0])
def test_float32_analysis_matches_float64(radius):
    ensemble, observation, mask = random_frame((6, 5), members=12)
    reference = etkf_analysis(ensemble, observation, mask, 0.7, 1.1, radius)
    single = etkf_analysis(ensemble.float(), observation.float(), mask, 0.7, 1.1, radius)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), reference, rtol=0, atol=1e-4)
    perturbed = perturbed_analysis(
        ensemble.float(), observation.float(), mask, 0.7, generator(0), 1.1, radius
    )
    assert perturbed.dtype == torch.float32 and torch.isfinite(perturbed).all()
    reference = perturbed_analysis(ensemble, observation, mask, 0.7, generator(0), 1.1, radius)
    torch.testing.assert_close(perturbed.double().mean(0), reference.mean(0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_unobserved_values_are_ignored(variant):
    """Lifted observations may hold anything (even NaN) where unobserved."""
    twin, problem = twin_problem()
    poisoned = dataclasses.replace(
        problem, observation=torch.where(problem.mask, problem.observation, torch.nan)
    )
    options = {"variant": variant, "localisation_radius": 3.0}
    clean = assimilate(twin, problem, "enkf", members=6, generator=generator(1), **options)
    dirty = assimilate(twin, poisoned, "enkf", members=6, generator=generator(1), **options)
    assert torch.equal(clean.ensemble, dirty.ensemble)
    assert all(torch.isfinite(r[[0, 2]]).all() for r in dirty.diagnostics["innovation_rms"])


# --------------------------------------------------------------------------- context update


class SecondOrderTwin:
    """x_{t+1} = A x_t + B x_{t-1} + w, w ~ N(0, Q): a process of context length 2, Markov
    in its window [x_t, x_{t-1}] and not in x_t alone.  ``augmented`` is that window's
    first-order twin (state ``(2d,)``, a negligible noise on the copied half), whose Kalman
    filter is the exact reference."""

    context_length = 2
    stochastic = True

    def __init__(self, dim: int = DIM) -> None:
        base = LinearGaussianTwin.default(dim=dim)
        eye = torch.eye(dim, dtype=torch.float64)
        self.a, self.b, self.q = base.transition, -0.7 * eye, base.process_covariance
        self._chol = torch.linalg.cholesky(self.q)
        zero = torch.zeros_like(eye)
        self.augmented = LinearGaussianTwin(
            torch.cat([torch.cat([self.a, self.b], 1), torch.cat([eye, zero], 1)], 0),
            torch.block_diag(self.q, 1e-12 * eye),
        )

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (1, self.a.shape[0])

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch, 2, 1, d)`` -> ``(batch, 1, d)``."""
        x, before = context[:, -1, 0], context[:, -2, 0]
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return (x @ self.a.T + before @ self.b.T + noise @ self._chol.T).unsqueeze(1)


@functools.cache
def second_order_problem() -> tuple[SecondOrderTwin, Problem, object]:
    """The twin, a problem observing every other entry of frames 0, 1, 3, 4, 5 (sigma 0.5,
    so that the analyses change the context markedly), and its exact Kalman filter."""
    twin = SecondOrderTwin()
    g = generator(21)
    start = 2 * torch.randn(TRAJECTORIES, 2 * DIM, generator=g, dtype=torch.float64)
    truth = twin.augmented.trajectory(start, HORIZON, g)[..., :DIM]
    mask = torch.zeros(TRAJECTORIES, HORIZON, DIM, dtype=torch.bool)
    mask[:, :, ::2] = True
    mask[:, 2] = False
    observation = torch.where(
        mask, truth + SIGMA * torch.randn(truth.shape, generator=g, dtype=torch.float64), 0.0
    )
    context = torch.stack([start[:, DIM:], start[:, :DIM]], 1)  # oldest first
    problem = Problem(
        truth=truth.unsqueeze(2),
        context=context.unsqueeze(2),
        observation=observation.unsqueeze(2),
        mask=mask.unsqueeze(2),
        sigma=SIGMA,
    )
    hidden = torch.zeros_like(mask)
    kf = kalman_filter(
        twin.augmented,
        torch.cat([observation, torch.zeros_like(observation)], -1),
        torch.cat([mask, hidden], -1),
        SIGMA,
        initial_mean=start,
        initial_covariance=torch.zeros(2 * DIM, 2 * DIM, dtype=torch.float64),
    )
    return twin, problem, kf


@functools.cache
def second_order_spread(update_context: bool) -> torch.Tensor:
    """Per-entry std of the ETKF mean at SMALL members over REPLICATES runs."""
    twin, problem, _ = second_order_problem()
    means = [
        moments(
            assimilate(
                twin,
                problem,
                "enkf",
                members=SMALL,
                generator=generator(3000 + seed),
                update_context=update_context,
            ).ensemble
        )[0]
        for seed in range(REPLICATES)
    ]
    return torch.stack(means).std(0)


def test_context_update_is_the_kalman_filter_of_the_window():
    """With a second-order process, updating the context frames makes the EnKF the Kalman
    filter of the window [x_t, x_{t-1}]; analysing x_t alone is detectably not."""
    twin, problem, kf = second_order_problem()
    exact = kf.mean[..., :DIM]
    scale = math.sqrt(SMALL / LARGE)
    errors = {}
    for update_context in (True, False):
        sd = second_order_spread(update_context)
        result = assimilate(
            twin,
            problem,
            "enkf",
            members=LARGE,
            generator=generator(9),
            update_context=update_context,
        )
        errors[update_context] = (moments(result.ensemble)[0] - exact).abs() / (Z * sd * scale)
    assert errors[True].max() < 1, f"mean off by {errors[True].max():.2f} tolerances"
    assert errors[False].max() > 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_context_update_with_the_smoother_runs_the_same_filter(variant):
    """The smoother's filter underneath takes the same context updates: its last frame is
    the context-updating filter's, and differs from the plain filter's."""
    twin, problem, _ = second_order_problem()
    runs = {
        (lag, update): assimilate(
            twin,
            problem,
            "enkf",
            members=40,
            generator=generator(15),
            variant=variant,
            lag=lag,
            update_context=update,
        ).ensemble
        for lag, update in ((0, True), (2, True), (0, False))
    }
    torch.testing.assert_close(runs[2, True][:, :, -1], runs[0, True][:, :, -1])
    assert not torch.allclose(runs[0, True][:, :, -1], runs[0, False][:, :, -1])
    # frame 0 is analysed before any context update acts
    torch.testing.assert_close(runs[0, True][:, :, 0], runs[0, False][:, :, 0])


def test_context_update_with_one_context_frame_changes_nothing():
    twin, problem = twin_problem()
    runs = [
        assimilate(
            twin, problem, "enkf", members=16, generator=generator(4), update_context=update
        ).ensemble
        for update in (True, False)
    ]
    assert torch.equal(runs[0], runs[1])
