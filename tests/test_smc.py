"""The ``smc`` strategy against exact and peer answers.

Oracles: the Kalman filter of the linear-Gaussian twin (filtering moments and log-evidence,
Kalman 1960), Pyro's ``SMCFilter`` on the same model, and the forecast limit sigma -> infinity.

Tolerances come from the Monte-Carlo error of the particle estimates, estimated from the
filter's own reported ESS:

* filtering mean of coordinate i at frame t: se^2 = P_ii * sum_{s <= t} 1 / ESS_s, the
  importance-sampling variance P_ii / ESS accumulated over the frames whose errors the
  filter carries forward (conservative for this contracting model);
* filtering variance: se = P_ii * sqrt(2 * sum_{s <= t} 1 / ESS_s) (Gaussian sample variance);
* log-evidence: se^2 = sum_t (1 / ESS_t - 1 / N), the relative variance of each incremental
  evidence estimate (Doucet & Johansen 2009, §4.2 heuristics);

and assertions allow 5 standard errors (for the bit-level properties: exact equality).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import SMCFilter

import ardm_infer.observe.likelihood as likelihood_module
from ardm_infer.ardm import (
    DeterministicSamplerError,
    Schedule,
    analytic_ardm,
    sampler_transition_moments,
)
from ardm_infer.dynamics import LinearGaussianTwin
from ardm_infer.dynamics.linear_gaussian import kalman_filter
from ardm_infer.guidance import FunctionGuidance, ZeroGuidance
from ardm_infer.observe import observation_distribution
from ardm_infer.strategies import Problem, ProblemView, assimilate, get_strategy, make_problem
from ardm_infer.strategies.base import flat
from ardm_infer.strategies.dps import DPSGuidance
from ardm_infer.strategies.smc import SMC, effective_sample_size, systematic_resample

DIM = 4
REGIME = "stride=2, every=1, sigma=0.5"
Z = 5.0  # standard errors allowed in statistical assertions


@pytest.fixture(scope="module")
def twin() -> LinearGaussianTwin:
    return LinearGaussianTwin.default(dim=DIM)


@pytest.fixture(scope="module")
def ardm(twin):
    return analytic_ardm(twin)


@pytest.fixture(scope="module")
def sampler_twin(twin, ardm) -> LinearGaussianTwin:
    """The twin the analytic ARDM *actually* samples at its finite number of sub-steps.

    With the linear denoiser the sampler's output given x is exactly Gaussian with mean
    A_eff x and covariance Q_eff (:func:`sampler_transition_moments`), so the Kalman filter of
    (A_eff, Q_eff) is the exact oracle and the tests see Monte-Carlo error only.
    """
    eye = torch.eye(DIM, dtype=torch.float64)
    columns = [sampler_transition_moments(twin, ardm.schedule, e)[0] for e in eye]
    covariance = sampler_transition_moments(twin, ardm.schedule, torch.zeros(DIM).double())[1]
    return LinearGaussianTwin(torch.stack(columns, 1), 0.5 * (covariance + covariance.T))


def twin_problem(
    twin: LinearGaussianTwin, trajectories: int, horizon: int, seed: int, regime: str = REGIME
) -> Problem:
    """Truth from the twin, ``frames (trajectories, 1 + horizon, 1, d)``, observed by ``regime``."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, twin.dim, generator=g, dtype=twin.transition.dtype)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2)
    return make_problem(frames, context_length=1, regime=regime, generator=g)


def kalman(model: LinearGaussianTwin, problem: Problem):
    """Exact filter started at the known context frame (covariance 1e-12 I)."""
    d = problem.frame_shape[-1]
    return kalman_filter(
        model,
        problem.observation[:, :, 0],
        problem.mask[..., 0, :],
        problem.sigma,
        initial_mean=problem.context[:, -1, 0],
        initial_covariance=1e-12 * torch.eye(d, dtype=problem.observation.dtype),
    )


def filtering_moments(result):
    """Weighted mean, variance ``(trajectories, horizon, d)``; ESS ``(trajectories, horizon)``."""
    weights = torch.stack(result.diagnostics["log_weights"], 2).exp().unsqueeze(-1)
    x = result.ensemble[:, :, :, 0]  # (members, trajectories, horizon, d)
    mean = (weights * x).sum(0)
    var = (weights * (x - mean).square()).sum(0)
    ess = torch.stack(result.diagnostics["ess"], 1)
    return mean, var, ess


def assert_matches_kalman(result, exact, members: int) -> None:
    """Moments at every frame and the log-evidence within Z Monte-Carlo standard errors."""
    mean, var, ess = filtering_moments(result)
    P = torch.diagonal(exact.covariance, dim1=-2, dim2=-1)
    accumulated = (1 / ess).cumsum(1).unsqueeze(-1)
    mean_se = (P * accumulated).sqrt()
    var_se = P * (2 * accumulated).sqrt()
    assert ((mean - exact.mean).abs() < Z * mean_se).all(), (mean - exact.mean) / mean_se
    assert ((var - P).abs() < Z * var_se).all(), (var - P) / var_se
    evidence = result.diagnostics["log_evidence"][-1]
    evidence_se = torch.stack([1 / e - 1 / members for e in result.diagnostics["ess"]]).sum(0)
    evidence_se = evidence_se.sqrt()
    error = evidence - exact.log_likelihood
    assert (error.abs() < Z * evidence_se).all(), error / evidence_se


def twisted_proposal(model: LinearGaussianTwin, strength: float = 1.0):
    """A guided proposal: the twisted (h-transform) mean shift of the twin's sampler.

    For the Gaussian denoiser, h_{s-1}(z) = p(y | z_{s-1} = z) is Gaussian:
    N(y; M x0(z), M Sigma M^T + sigma_y^2 I) with x0(z) = mu + G (z - mu),
    G = Q (Q + sigma_{s-1}^2 I)^-1, Sigma = sigma_{s-1}^2 G and mu = A c.  The control is
    the Langevin-type shift u_s = strength tau_s^2 grad log h_{s-1}(m) (twisted SMC:
    Guarniero, Johansen & Lee 2017; Wu et al. 2023).  A mean shift cannot also shrink the
    sub-step covariance, so the proposal is good but not optimal and SMC must correct it.
    The flat batch is members-major, so per-trajectory data are tiled.
    """
    A, Q = model.transition, model.process_covariance
    eye = torch.eye(Q.shape[0], dtype=Q.dtype)

    def factory(problem: ProblemView, t: int):
        if not problem.observed(t):
            return None
        y, mask = problem.observation_at(t)[:, 0], problem.mask_at(t)[:, 0]
        noise = torch.full((), problem.sigma**2, dtype=y.dtype)

        def control(state):
            reps = state.z.shape[0] // y.shape[0]
            y_rep, h = y.repeat(reps, 1), mask.repeat(reps, 1).to(y.dtype)
            mu = state.context[:, -1, 0] @ A.T
            G = Q @ torch.linalg.inv(Q + state.sigma_next**2 * eye)
            x0 = mu + (state.mean[:, 0] - mu) @ G.T
            S = h[:, :, None] * (state.sigma_next**2 * G) * h[:, None, :] + torch.diag_embed(
                torch.where(h > 0, noise, 1.0)
            )
            score = torch.linalg.solve(S, (h * (y_rep - x0)).unsqueeze(-1)).squeeze(-1)
            return (strength * state.tau**2 * (h * score) @ G).unsqueeze(1)

        return FunctionGuidance(control)

    return factory


# ----------------------------------------------------------------------------------------
# Exact oracle: the Kalman filter


def test_registered_and_shapes(twin):
    assert isinstance(get_strategy("smc"), SMC)
    problem = twin_problem(twin, trajectories=3, horizon=4, seed=0)
    result = assimilate(
        twin, problem, "smc", members=32, generator=torch.Generator().manual_seed(0)
    )
    assert result.ensemble.shape == (32, 3, 4, 1, DIM)
    assert result.log_weights.shape == (32, 3)
    torch.testing.assert_close(result.log_weights.logsumexp(0), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(result.log_weights, result.diagnostics["log_weights"][-1])
    diag = result.diagnostics
    assert len(diag["ess"]) == len(diag["resampled"]) == len(diag["log_evidence"]) == 4
    assert torch.equal(diag["resample_count"], torch.stack(diag["resampled"]).sum(0))


def test_bootstrap_on_the_twin_matches_the_kalman_filter(twin):
    members = 20000
    problem = twin_problem(twin, trajectories=6, horizon=6, seed=0)
    result = assimilate(
        twin, problem, "smc", members=members, generator=torch.Generator().manual_seed(1)
    )
    assert (result.diagnostics["resample_count"] > 0).all()  # the resampling path is exercised
    assert_matches_kalman(result, kalman(twin, problem), members)


def test_the_kalman_check_detects_a_wrong_model(twin):
    """The tolerances are tight enough to see a 20% error in the observation noise."""
    members = 20000
    problem = twin_problem(twin, trajectories=6, horizon=6, seed=0)
    result = assimilate(
        twin, problem, "smc", members=members, generator=torch.Generator().manual_seed(1)
    )
    with pytest.raises(AssertionError):
        assert_matches_kalman(result, kalman(twin, problem.with_sigma(0.6)), members)


def test_bootstrap_on_the_analytic_ardm_matches_the_kalman_filter(ardm, sampler_twin):
    members = 2000
    problem = twin_problem(sampler_twin, trajectories=4, horizon=4, seed=2)
    result = assimilate(
        ardm, problem, "smc", members=members, generator=torch.Generator().manual_seed(3)
    )
    assert_matches_kalman(result, kalman(sampler_twin, problem), members)


def test_guided_proposal_gives_the_same_posterior_with_better_ess(twin, ardm, sampler_twin):
    members = 2000
    problem = twin_problem(sampler_twin, trajectories=4, horizon=4, seed=2)
    exact = kalman(sampler_twin, problem)
    boot = assimilate(
        ardm, problem, "smc", members=members, generator=torch.Generator().manual_seed(4)
    )
    guided = assimilate(
        ardm,
        problem,
        "smc",
        members=members,
        generator=torch.Generator().manual_seed(4),
        proposal=twisted_proposal(twin),
    )
    # The proposal really differs from the prior, and the weights correct it exactly.
    assert torch.stack(guided.diagnostics["kl"]).mean() > 0.2
    assert_matches_kalman(guided, exact, members)
    # Bootstrap and guided agree with each other within their combined error.
    mean_b, _, ess_b = filtering_moments(boot)
    mean_g, _, ess_g = filtering_moments(guided)
    P = torch.diagonal(exact.covariance, dim1=-2, dim2=-1)
    se = (P * ((1 / ess_b).cumsum(1) + (1 / ess_g).cumsum(1)).unsqueeze(-1)).sqrt()
    assert ((mean_b - mean_g).abs() < Z * se).all()
    pairs = zip(boot.diagnostics["ess"], guided.diagnostics["ess"], strict=True)
    ev_se = sum(1 / a + 1 / b for a, b in pairs)
    ev_diff = boot.diagnostics["log_evidence"][-1] - guided.diagnostics["log_evidence"][-1]
    assert (ev_diff.abs() < Z * ev_se.sqrt()).all()
    # Better proposal: higher ESS on average (by far more than the ESS's own MC error).
    assert ess_g.mean() > 1.3 * ess_b.mean(), (ess_g.mean(), ess_b.mean())


def test_dps_proposal_composes_through_config(ardm, sampler_twin):
    """docs/design.md §1: "SMC with a DPS proposal" is plain Config; the weights make it exact."""
    members = 2000
    problem = twin_problem(sampler_twin, trajectories=4, horizon=4, seed=2)

    def dps_proposal(problem: ProblemView, t: int):
        tiled = (members, *problem.observation_at(t).shape)
        return DPSGuidance(
            flat(problem.observation_at(t).unsqueeze(0).expand(tiled)),
            flat(problem.mask_at(t).unsqueeze(0).expand(tiled)),
            problem.sigma,
            scale=0.25,
        )

    result = assimilate(
        ardm,
        problem,
        "smc",
        members=members,
        generator=torch.Generator().manual_seed(4),
        proposal=dps_proposal,
    )
    assert_matches_kalman(result, kalman(sampler_twin, problem), members)
    # One VJP per sub-step and particle on every (observed) frame.
    assert result.cost.vjps == ardm.schedule.substeps * members * 4 * 4


def test_zero_control_proposal_is_bit_identical_to_bootstrap(ardm, twin):
    problem = twin_problem(twin, trajectories=2, horizon=3, seed=5)
    runs = [
        assimilate(
            ardm, problem, "smc", members=64, generator=torch.Generator().manual_seed(6), **kw
        )
        for kw in ({}, {"proposal": lambda problem, t: ZeroGuidance()})
    ]
    assert torch.equal(runs[0].ensemble, runs[1].ensemble)
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)
    assert torch.equal(
        runs[0].diagnostics["log_evidence"][-1], runs[1].diagnostics["log_evidence"][-1]
    )


class _Deterministic:
    """x_{t+1} = A x_t exactly: a stand-in for deterministic numerical dynamics (Lorenz-96)."""

    context_length = 1
    stochastic = False

    def __init__(self, transition: torch.Tensor) -> None:
        self.transition = transition
        self.frame_shape = (1, transition.shape[0])

    def step(self, context, generator=None):
        return context[:, -1] @ self.transition.T.to(context)


def test_process_noise_filters_the_jittered_model(twin):
    """``process_noise`` turns x' = A x into x' = A x + p xi: Kalman with Q = p^2 I is exact."""
    members, p = 20000, 0.4
    problem = twin_problem(twin, trajectories=4, horizon=5, seed=7)
    jittered = LinearGaussianTwin(twin.transition, p**2 * torch.eye(DIM, dtype=torch.float64))
    result = assimilate(
        _Deterministic(twin.transition),
        problem,
        "smc",
        members=members,
        generator=torch.Generator().manual_seed(8),
        process_noise=p,
    )
    assert_matches_kalman(result, kalman(jittered, problem), members)


# ----------------------------------------------------------------------------------------
# Peer: Pyro's SMCFilter on the same model


class _PyroTwinModel:
    """The twin as a Pyro SMC model: x_t ~ N(A x_{t-1}, Q), y_t ~ the library's likelihood."""

    def __init__(self, twin: LinearGaussianTwin, members: int, sigma: float) -> None:
        self.A = twin.transition
        self.scale_tril = torch.linalg.cholesky(twin.process_covariance)
        self.members = members
        self.sigma = sigma

    def init(self, state, initial):
        state["x"] = initial.expand(self.members, -1).clone()

    def transition(self, state, t):
        loc = state["x"] @ self.A.T
        return pyro.sample(f"x_{t}", dist.MultivariateNormal(loc, scale_tril=self.scale_tril))

    def step(self, state, t, observation, mask):
        x = self.transition(state, t)
        pyro.sample(
            f"y_{t}",
            observation_distribution(x, mask, self.sigma, frame_ndim=1),
            obs=observation,
        )
        state["x"] = x


class _PyroBootstrapGuide(_PyroTwinModel):
    """Bootstrap guide: propose from the prior transition."""

    def init(self, state, initial):
        pass

    def step(self, state, t, observation, mask):
        self.transition(state, t)


def test_agrees_with_pyro_smc_filter(twin):
    members, horizon = 5000, 5
    problem = twin_problem(twin, trajectories=1, horizon=horizon, seed=9)
    ours = assimilate(
        twin, problem, "smc", members=members, generator=torch.Generator().manual_seed(10)
    )
    model = _PyroTwinModel(twin, members, problem.sigma)
    guide = _PyroBootstrapGuide(twin, members, problem.sigma)
    with torch.random.fork_rng(devices=[]):  # Pyro draws from the global RNG: isolate it
        pyro.set_rng_seed(11)
        smc = SMCFilter(model, guide, num_particles=members, max_plate_nesting=0)
        smc.init(initial=problem.context[0, -1, 0])
        for t in range(horizon):
            smc.step(t, problem.observation[0, t, 0], problem.mask_at(t)[0, 0])
        empirical = smc.get_empirical()["x"]
        pyro_mean = empirical.mean.double()
        pyro_var = empirical.variance.double()
    mean, var, ess = filtering_moments(ours)
    mean, var = mean[0, -1], var[0, -1]
    exact = kalman(twin, problem)
    P = torch.diagonal(exact.covariance[0, -1])
    accumulated = (1 / ess[0]).sum()
    # Two independent filters with the same N and threshold: the MC variances add.
    mean_se = (2 * P * accumulated).sqrt()
    var_se = P * (2 * 2 * accumulated).sqrt()
    assert ((mean - pyro_mean).abs() < Z * mean_se).all(), (mean - pyro_mean) / mean_se
    assert ((var - pyro_var).abs() < Z * var_se).all(), (var - pyro_var) / var_se
    # ...and Pyro's model is the same model (its filter matches Kalman too).
    assert ((pyro_mean - exact.mean[0, -1]).abs() < Z * mean_se).all()


# ----------------------------------------------------------------------------------------
# Limits, determinism, purity


@pytest.mark.parametrize("process_name", ["twin", "ardm"])
def test_infinite_sigma_reproduces_the_forecast_and_never_resamples(twin, ardm, process_name):
    process = twin if process_name == "twin" else ardm
    members = 256
    problem = twin_problem(twin, trajectories=3, horizon=4, seed=12).with_sigma(1e8)
    smc = assimilate(
        process, problem, "smc", members=members, generator=torch.Generator().manual_seed(13)
    )
    forecast = assimilate(
        process, problem, "forecast", members=members, generator=torch.Generator().manual_seed(13)
    )
    # No resampling draws no random numbers: the particles ARE the forecast, bit for bit.
    assert torch.equal(smc.ensemble, forecast.ensemble)
    assert int(smc.diagnostics["resample_count"].sum()) == 0
    assert torch.allclose(
        smc.log_weights, torch.full_like(smc.log_weights, -math.log(members)), atol=1e-9
    )
    assert all((e > members * (1 - 1e-9)).all() for e in smc.diagnostics["ess"])
    if process is twin:  # the evidence is then the Gaussian normalising constant
        torch.testing.assert_close(
            smc.diagnostics["log_evidence"][-1], kalman(twin, problem).log_likelihood
        )


def test_deterministic_under_a_fixed_generator(twin):
    problem = twin_problem(twin, trajectories=2, horizon=5, seed=14)

    def run(seed):
        return assimilate(
            twin, problem, "smc", members=200, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(15), run(15), run(16)
    assert int(a.diagnostics["resample_count"].sum()) > 0
    assert torch.equal(a.ensemble, b.ensemble) and torch.equal(a.log_weights, b.log_weights)
    for key in ("ess", "log_evidence", "log_weights", "resampled"):
        assert all(
            torch.equal(x, y) for x, y in zip(a.diagnostics[key], b.diagnostics[key], strict=True)
        )
    assert not torch.equal(a.ensemble, c.ensemble)


def test_inputs_and_state_are_not_mutated(twin, ardm):
    problem = twin_problem(twin, trajectories=2, horizon=3, seed=17)
    saved = {k: getattr(problem, k).clone() for k in ("truth", "context", "observation", "mask")}
    strategy = get_strategy("smc")
    config = SMC.Config(proposal=twisted_proposal(twin), ess_threshold=1.0)
    g = torch.Generator().manual_seed(18)
    state = strategy.init(ardm, ProblemView.of(problem, -1, 0, "smc"), 16, config, g)
    window, weights = state.window.clone(), state.log_weights.clone()
    new = strategy.step(ardm, ProblemView.of(problem, 0, 0, "smc"), state, 0, config, g)
    assert new is not state
    assert torch.equal(state.window, window) and torch.equal(state.log_weights, weights)
    assert state.frames == () and state.diagnostics["ess"] == () and state.vjps == 0
    newer = strategy.step(ardm, ProblemView.of(problem, 1, 0, "smc"), new, 1, config, g)
    assert len(new.frames) == 1 and len(new.diagnostics["ess"]) == 1
    assert len(newer.frames) == 2 and len(newer.diagnostics["log_evidence"]) == 2
    for key, value in saved.items():
        assert torch.equal(getattr(problem, key), value), key


# ----------------------------------------------------------------------------------------
# Errors


def test_weight_collapse_raises_naming_frame_and_trajectory(twin):
    """float32, sigma = 1e-30: every squared residual / sigma^2 overflows to inf."""
    twin32 = LinearGaussianTwin.default(dim=DIM, dtype=torch.float32)
    problem = twin_problem(twin32, trajectories=2, horizon=3, seed=19).with_sigma(1e-30)
    with pytest.raises(RuntimeError, match=r"t=0 for trajectories \[0, 1\]"):
        assimilate(twin32, problem, "smc", members=8, generator=torch.Generator().manual_seed(0))


def test_weight_collapse_of_one_trajectory_at_a_later_frame(twin, monkeypatch):
    real = likelihood_module.log_likelihood
    calls = []

    def collapsing(observation, state, mask, sigma, frame_ndim):
        out = real(observation, state, mask, sigma, frame_ndim=frame_ndim)
        calls.append(None)
        if len(calls) == 3:  # every frame is observed: the third call is frame t = 2
            out = out.clone()
            out[:, 1] = float("nan")
        return out

    problem = twin_problem(twin, trajectories=3, horizon=4, seed=20)
    monkeypatch.setattr(likelihood_module, "log_likelihood", collapsing)
    with pytest.raises(RuntimeError, match=r"t=2 for trajectories \[1\]"):
        assimilate(twin, problem, "smc", members=8, generator=torch.Generator().manual_seed(0))


def test_guided_proposal_needs_an_ardm_with_a_stochastic_sampler(twin, ardm):
    problem = twin_problem(twin, trajectories=1, horizon=2, seed=21)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="numerical process"):
        assimilate(twin, problem, "smc", members=4, generator=g, proposal=twisted_proposal(twin))
    ddim = ardm.with_schedule(Schedule(substeps=4, sigma_max=50.0, eta=0.0))
    with pytest.raises(DeterministicSamplerError, match="smc"):
        assimilate(ddim, problem, "smc", members=4, generator=g, proposal=twisted_proposal(twin))
    # The bootstrap filter needs no path weights: it runs on the deterministic sampler.
    assimilate(ddim, problem, "smc", members=4, generator=g)


def test_config_validation():
    with pytest.raises(ValueError, match="ess_threshold"):
        SMC.Config(ess_threshold=1.5)
    with pytest.raises(ValueError, match="process_noise"):
        SMC.Config(process_noise=-0.1)
    with pytest.raises(TypeError, match="proposal"):
        SMC.Config(proposal=ZeroGuidance())


def test_vjps_of_a_gradient_guidance_are_counted(ardm, twin):
    class Counting:
        needs_grad = True

        def __init__(self):
            self.vjps = 0

        def control(self, state):
            (grad,) = torch.autograd.grad(state.x0_hat.sum(), state.z)
            self.vjps += state.z.shape[0]
            return 1e-3 * grad

    problem = twin_problem(twin, trajectories=2, horizon=2, seed=22)
    result = assimilate(
        ardm,
        problem,
        "smc",
        members=8,
        generator=torch.Generator().manual_seed(0),
        proposal=lambda problem, t: Counting(),
    )
    assert result.cost.vjps == 2 * ardm.schedule.substeps * 8 * 2


# ----------------------------------------------------------------------------------------
# Systematic resampling (Kitagawa 1996)


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1.0)), min_size=1, max_size=12).filter(
        lambda w: sum(w) > 0
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_systematic_resampling_copies_floor_or_ceil_of_n_w(weights, seed):
    w = torch.tensor(weights, dtype=torch.float64)
    n = w.numel()
    log_weights = torch.stack([w.log(), torch.flip(w, [0]).log()], 1)  # two trajectories
    ancestors = systematic_resample(log_weights, torch.Generator().manual_seed(seed))
    assert ancestors.shape == (n, 2) and ancestors.dtype == torch.long
    for column, weight in ((0, w), (1, torch.flip(w, [0]))):
        expected = n * weight / weight.sum()
        counts = torch.bincount(ancestors[:, column], minlength=n).double()
        assert (counts >= torch.floor(expected - 1e-9)).all()
        assert (counts <= torch.ceil(expected + 1e-9)).all()
        assert (counts[weight == 0] == 0).all()


def test_systematic_resampling_is_unbiased():
    w = torch.tensor([0.05, 0.5, 0.15, 0.3], dtype=torch.float64)
    log_weights = w.log().unsqueeze(1).expand(4, 5000)  # 5000 independent trajectories
    ancestors = systematic_resample(log_weights, torch.Generator().manual_seed(0))
    counts = torch.nn.functional.one_hot(ancestors, 4).sum(0).double()  # (5000, 4)
    # Copies are floor or ceil of N w, so their std is at most 1/2: se <= 0.5 / sqrt(5000).
    assert ((counts.mean(0) - 4 * w).abs() < Z * 0.5 / math.sqrt(5000)).all()


def test_effective_sample_size():
    uniform = torch.full((10, 1), -math.log(10), dtype=torch.float64)
    torch.testing.assert_close(effective_sample_size(uniform), torch.tensor([10.0]).double())
    one = torch.tensor([[0.0], [-math.inf], [-math.inf]], dtype=torch.float64)
    torch.testing.assert_close(effective_sample_size(one), torch.tensor([1.0]).double())


def test_guided_strategies_name_themselves_on_a_deterministic_sampler(twin, ardm):
    problem = twin_problem(twin, trajectories=1, horizon=2, seed=22)
    ddim = ardm.with_schedule(Schedule(substeps=4, sigma_max=50.0, eta=0.0))
    for name in ("dps", "vc"):
        with pytest.raises(DeterministicSamplerError, match=name):
            assimilate(ddim, problem, name, members=2, generator=torch.Generator().manual_seed(0))
