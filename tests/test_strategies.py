"""Conformance over the strategy registry and the exact checks on the linear-Gaussian twin."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from ardm_infer.ardm import Schedule, analytic_ardm
from ardm_infer.controller import ControllerConfig, build_controller
from ardm_infer.dynamics import LinearGaussianTwin, kalman_filter
from ardm_infer.observe import LinearOperator, ObservationModel, local_average_operator
from ardm_infer.strategies import (
    DivergenceError,
    Problem,
    ProblemView,
    StrategyContractError,
    StrategyState,
    assimilate,
    available_strategies,
    get_strategy,
    make_problem,
    propagate,
    register,
    unregister,
)
from ardm_infer.strategies.base import Strategy, initial_window

DIM = 8
SMALL = {
    "vc": {"iterations": 4, "window": 2},
    # An untrained (zero-initialised) controller: conformance only needs the interface.
    "controller": {
        "controller": build_controller(
            ControllerConfig(dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4)
        )
    },
}


def twin_problem(trajectories=3, horizon=6, spec="stride=2, every=1, sigma=0.3", seed=0):
    twin = LinearGaussianTwin.default(dim=DIM)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, DIM, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2)
    return twin, make_problem(frames, 1, spec, g)


@pytest.fixture(scope="module")
def setup():
    twin, problem = twin_problem()
    ardm = analytic_ardm(
        twin, Schedule(substeps=8, sigma_max=50.0, sigma_min=0.01, sigma_out=0.001)
    )
    return twin, ardm, problem


def test_registry_holds_the_strategies_and_rejects_unknown_names():
    names = available_strategies()
    for expected in ("forecast", "dps", "vc"):
        assert expected in names
    with pytest.raises(ValueError, match=r"unknown strategy .enfk."):
        get_strategy("enfk")
    with pytest.raises(ValueError, match="unknown strategy 'nudging'"):
        get_strategy("nudging")


@pytest.mark.parametrize("name", available_strategies())
def test_conformance(name, setup):
    _, ardm, problem = setup
    strat = get_strategy(name)
    assert isinstance(strat, Strategy)
    reference = inspect.signature(get_strategy("forecast").step)
    assert list(inspect.signature(strat.step).parameters) == list(reference.parameters)
    assert list(inspect.signature(strat.init).parameters) == list(
        inspect.signature(get_strategy("forecast").init).parameters
    )
    with pytest.raises(Exception):  # noqa: B017  frozen dataclass
        strat.Config().__setattr__("x", 1)
    before = {k: getattr(problem, k).clone() for k in ("truth", "context", "observation", "mask")}
    kwargs = SMALL.get(name, {})
    a = assimilate(
        ardm, problem, name, members=6, generator=torch.Generator().manual_seed(1), **kwargs
    )
    b = assimilate(
        ardm, problem, name, members=6, generator=torch.Generator().manual_seed(1), **kwargs
    )
    c = assimilate(
        ardm, problem, name, members=6, generator=torch.Generator().manual_seed(2), **kwargs
    )
    assert a.ensemble.shape == (6, problem.trajectories, problem.horizon, 1, DIM)
    assert torch.equal(a.ensemble, b.ensemble), "not deterministic under a fixed generator"
    assert not torch.equal(a.ensemble, c.ensemble)
    assert torch.isfinite(a.ensemble).all()
    for k, v in before.items():
        assert torch.equal(getattr(problem, k), v), f"{name} mutated problem.{k}"
    assert a.cost.wall_seconds > 0 and a.cost.frames == problem.horizon
    assert a.cost.denoiser_calls > 0 and a.cost.peak_memory_bytes > 0
    if a.log_weights is not None:
        assert a.log_weights.shape == (6, problem.trajectories)
        torch.testing.assert_close(
            torch.logsumexp(a.log_weights, 0),
            torch.zeros(problem.trajectories, dtype=torch.float64),
        )


def _snapshot(state):
    """Every tensor a state holds (window, frames, weights, diagnostics), cloned."""
    tensors = {"window": state.window.clone()}
    tensors.update({f"frame{i}": f.clone() for i, f in enumerate(state.frames)})
    if state.log_weights is not None:
        tensors["log_weights"] = state.log_weights.clone()
    for key, value in state.diagnostics.items():
        items = value if isinstance(value, tuple) else (value,)
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor):
                tensors[f"{key}{i}"] = item.clone()
    return tensors, {k: len(v) for k, v in state.diagnostics.items() if isinstance(v, tuple)}


@pytest.mark.parametrize("name", available_strategies())
def test_step_is_pure_and_the_state_immutable(name, setup):
    """step returns a new state with one more frame and leaves its input state untouched."""
    _, ardm, problem = setup
    strat = get_strategy(name)
    config = strat.Config(**SMALL.get(name, {}))
    lookahead = strat.lookahead(config)
    assert isinstance(lookahead, int) and lookahead >= 0
    g = torch.Generator().manual_seed(1)
    state = strat.init(ardm, ProblemView.of(problem, -1, lookahead, name), 6, config, g)
    assert isinstance(state, StrategyState) and state.frames == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.window = state.window  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.diagnostics["new"] = 1  # type: ignore[index]
    for t in range(problem.horizon):
        tensors, lengths = _snapshot(state)
        view = ProblemView.of(problem, t, lookahead, name)
        new = strat.step(ardm, view, state, t, config, g)
        assert new is not state and len(new.frames) == t + 1
        after, after_lengths = _snapshot(state)
        assert after_lengths == lengths, f"{name} grew the records of its input state"
        assert after.keys() == tensors.keys()
        for key, value in tensors.items():
            assert torch.equal(after[key], value), f"{name}.step changed its input state's {key}"
        state = new


@pytest.mark.parametrize("name", available_strategies())
def test_no_strategy_reads_past_its_lookahead(name, setup):
    """Frames up to T0 do not change when every observation after T0 + lookahead does."""
    _, ardm, problem = setup
    strat = get_strategy(name)
    kwargs = SMALL.get(name, {})
    if name == "controller":  # an untrained controller ignores observations: give it weights
        kwargs = {"controller": _randomised_controller()}
    lookahead = strat.lookahead(strat.Config(**kwargs))
    cut = 1
    later = torch.arange(problem.horizon) > cut + lookahead
    assert later.any(), "the problem is too short for this check"
    scrambled = problem.observation.clone()
    scrambled[:, later] = scrambled[:, later] + 5.0 * torch.randn(
        scrambled[:, later].shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    other = dataclasses.replace(problem, observation=scrambled)
    runs = [
        assimilate(ardm, p, name, members=6, generator=torch.Generator().manual_seed(1), **kwargs)
        for p in (problem, other)
    ]
    early = slice(0, cut + 1)
    assert torch.equal(runs[0].ensemble[:, :, early], runs[1].ensemble[:, :, early])
    assert not torch.equal(runs[0].ensemble, runs[1].ensemble) or name == "forecast"


def _randomised_controller():
    net = build_controller(
        ControllerConfig(dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4)
    )
    with torch.no_grad():
        weight = net.out_conv.conv.weight
        weight.copy_(0.3 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(4)))
    return net.eval()


def test_the_view_hides_the_truth_and_the_future(setup):
    _, _, problem = setup
    view = ProblemView.of(problem, 2, 1, "probe")
    assert torch.equal(view.observation_at(3), problem.observation[:, 3])
    assert torch.equal(view.mask_at(3), problem.mask_at(3))
    assert view.observed(3) and view.frame(3) is not None
    assert view.window(2, 4).horizon == 2  # frames 2, 3
    for read in (
        lambda: view.truth,
        lambda: view.observation,
        lambda: view.mask,
        lambda: view.observation_model,
        lambda: view.observation_at(4),
        lambda: view.mask_at(4),
        lambda: view.observed(4),
        lambda: view.frame(4),
        lambda: view.window(2, 5),
    ):
        with pytest.raises(StrategyContractError, match="'probe'"):
            read()
    assert not any(isinstance(v, torch.Tensor) and v is problem.truth for v in vars_of(view))


def vars_of(view):
    return [getattr(view, slot) for slot in type(view).__slots__]


class _Cheat:
    """A strategy that reads one frame further than it declares (or forgets to push)."""

    name = "cheat"

    @dataclasses.dataclass(frozen=True)
    class Config:
        reach: int = 1
        push: bool = True

    def lookahead(self, config):
        return 0

    def init(self, process, problem, members, config, generator):
        return StrategyState(window=initial_window(problem, members, process.context_length))

    def step(self, process, problem, state, t, config, generator):
        if t + config.reach < problem.horizon:
            problem.observation_at(t + config.reach)
        frame = propagate(process, state.window, generator, frame=t).frame
        return state.push(frame) if config.push else state


def test_assimilate_enforces_the_contract(setup):
    _, ardm, problem = setup
    register(_Cheat)
    try:
        g = torch.Generator().manual_seed(0)
        with pytest.raises(StrategyContractError, match="lookahead"):
            assimilate(ardm, problem, "cheat", members=2, generator=g)
        assimilate(ardm, problem, "cheat", members=2, generator=g, reach=0)
        with pytest.raises(RuntimeError, match=r"return state\.push"):
            assimilate(ardm, problem, "cheat", members=2, generator=g, reach=0, push=False)
    finally:
        unregister("cheat")

    class NoLookahead:
        name = "no-lookahead"
        Config = _Cheat.Config

    with pytest.raises(TypeError, match="lookahead"):
        register(NoLookahead)


def test_assimilate_validates_its_inputs(setup):
    _, ardm, problem = setup
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="Generator"):
        assimilate(ardm, problem, "forecast", members=2)
    with pytest.raises(ValueError, match="members"):
        assimilate(ardm, problem, "forecast", members=0, generator=g)
    with pytest.raises(TypeError, match="Config"):
        assimilate(ardm, problem, "dps", members=2, generator=g, config=get_strategy("vc").Config())
    twin = LinearGaussianTwin.default(dim=DIM)
    with pytest.raises(ValueError, match="ARDM"):
        assimilate(twin, problem, "dps", members=2, generator=g)


def _moments(result):
    e = result.ensemble[..., 0, :]  # (M, N, T, d)
    return e.mean(0), e.var(0)


@pytest.mark.parametrize("name", available_strategies())
def test_infinite_observation_noise_reproduces_the_forecast(name, setup):
    _, ardm, problem = setup
    vague = problem.with_sigma(1e8)
    members = 400
    kwargs = SMALL.get(name, {})
    res = assimilate(
        ardm, vague, name, members=members, generator=torch.Generator().manual_seed(3), **kwargs
    )
    ref = assimilate(
        ardm, vague, "forecast", members=members, generator=torch.Generator().manual_seed(4)
    )
    m1, v1 = _moments(res)
    m2, v2 = _moments(ref)
    se_mean = torch.sqrt((v1 + v2) / members)
    assert ((m1 - m2).abs() < 5 * se_mean + 1e-9).all()
    se_var = (v1 + v2) * math.sqrt(2 / (members - 1))
    assert ((v1 - v2).abs() < 5 * se_var).all()


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("dps", {}),
        ("dps", {"variant": "chung", "scale": 0.5}),
        ("vc", {"iterations": 15, "learning_rate": 0.2}),
    ],
)
def test_guided_strategies_move_toward_the_kalman_mean(name, kwargs, setup):
    twin, ardm, problem = setup
    x0 = problem.context[:, -1, 0]
    kf = kalman_filter(
        twin,
        problem.observation[:, :, 0],
        problem.mask[:, 0],
        problem.sigma,
        x0,
        1e-12 * torch.eye(DIM, dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(5)
    fc = assimilate(ardm, problem, "forecast", members=64, generator=g).ensemble.mean(0)[..., 0, :]
    gd = assimilate(ardm, problem, name, members=64, generator=g, **kwargs).ensemble.mean(0)[
        ..., 0, :
    ]
    err_fc = (fc - kf.mean).square().mean().sqrt()
    err_gd = (gd - kf.mean).square().mean().sqrt()
    assert err_gd < 0.6 * err_fc, (err_gd, err_fc)


@pytest.mark.parametrize("variant", ["etkf", "perturbed"])
def test_enkf_on_the_analytic_ardm_matches_the_kalman_filter_of_its_sampler(variant, setup):
    """Large-N EnKF on the exact ARDM against the Kalman filter of the twin it samples."""
    from ardm_infer.ardm import sampler_twin

    twin, ardm, problem = setup
    oracle = sampler_twin(twin, ardm.schedule)
    kf = kalman_filter(
        oracle,
        problem.observation[:, :, 0],
        problem.mask[:, 0],
        problem.sigma,
        problem.context[:, -1, 0],
        1e-12 * torch.eye(DIM, dtype=torch.float64),
    )
    members = 3000
    res = assimilate(
        ardm,
        problem,
        "enkf",
        members=members,
        generator=torch.Generator().manual_seed(11),
        variant=variant,
    )
    mean, var = _moments(res)
    kvar = torch.diagonal(kf.covariance, dim1=-2, dim2=-1)
    # Standard errors sqrt(var / N) (mean) and var sqrt(2 / N) (variance).  Sampling errors
    # of earlier gains propagate into the mean, so it gets a wider allowance: observed
    # z-scores over seeds were up to 9 (mean) and 3.4 (variance); against the plain twin's
    # filter (the sampler's finite-S under-dispersion) they are about 75 and 25.
    assert ((mean - kf.mean).abs() < 15 * torch.sqrt(kvar / members)).all()
    assert ((var - kvar).abs() < 6 * kvar * math.sqrt(2 / members)).all()


# ------------------------------------------------------------------ a linear observation operator

LINEAR_SPEC = "full, every=1, sigma=0.3"


def linear_problem(operator, trajectories=3, horizon=6, seed=0, twin=None):
    twin = twin or LinearGaussianTwin.default(dim=DIM)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, DIM, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2)
    return make_problem(frames, 1, LINEAR_SPEC, g, operator=operator)


def kalman_linear(model, problem):
    """Exact filter of x_t = A x_{t-1} + N(0, Q), y_t = H x_t + N(0, sigma^2 I) from a known
    x_0: means and variances ``(trajectories, horizon, d)``."""
    A, Q = model.transition, model.process_covariance
    H = problem.observation_model.operator.matrix.to(torch.float64)
    noise = problem.sigma**2 * torch.eye(H.shape[0], dtype=torch.float64)
    mean = problem.context[:, -1, 0]
    cov = torch.zeros(DIM, DIM, dtype=torch.float64).expand(mean.shape[0], DIM, DIM)
    means, variances = [], []
    for t in range(problem.horizon):
        mean, cov = mean @ A.T, A @ cov @ A.T + Q
        gain = cov @ H.T @ torch.linalg.inv(H @ cov @ H.T + noise)
        innovation = problem.observation[:, t] - mean @ H.T
        mean = mean + (gain @ innovation.unsqueeze(-1)).squeeze(-1)
        cov = cov - gain @ H @ cov
        means.append(mean)
        variances.append(torch.diagonal(cov, dim1=-2, dim2=-1))
    return torch.stack(means, 1), torch.stack(variances, 1)


@pytest.mark.parametrize("name", available_strategies())
def test_a_linear_observation_operator_runs_end_to_end(name, setup):
    """Local averages (not a mask) through every strategy; the controller refuses by name."""
    _, ardm, _ = setup
    problem = linear_problem(local_average_operator((1, DIM), width=3, stride=2))
    assert problem.mask is None and problem.observation.shape == (3, 6, DIM // 2)
    kwargs = SMALL.get(name, {})
    g = torch.Generator().manual_seed(1)
    if name == "controller":
        with pytest.raises(ValueError, match=r"controller .*mask observation operator"):
            assimilate(ardm, problem, name, members=4, generator=g, **kwargs)
        return
    result = assimilate(ardm, problem, name, members=4, generator=g, **kwargs)
    assert result.ensemble.shape == (4, 3, 6, 1, DIM)
    assert torch.isfinite(result.ensemble).all()
    forecast = assimilate(ardm, problem, "forecast", members=4, generator=g)
    if name != "forecast":  # the observations were used
        assert not torch.allclose(result.ensemble, forecast.ensemble)


def _as_selection_matrix(problem):
    """The same observations, with H = rows of the identity at the (shared) mask points."""
    points = torch.nonzero(problem.mask_at(0)[0].flatten()).flatten()
    matrix = torch.eye(DIM, dtype=torch.float64)[points]
    model = ObservationModel(
        problem.observation.flatten(2)[..., points],
        problem.sigma,
        operator=LinearOperator(matrix, (1, DIM)),
        observed_frames=torch.ones(problem.horizon, dtype=torch.bool),
    )
    return Problem(truth=problem.truth, context=problem.context, observation_model=model)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("forecast", {}),
        ("dps", {}),
        ("dps", {"variant": "chung", "scale": 0.5}),
        ("smc", {}),
        ("enkf", {"variant": "etkf"}),
        ("enkf", {"variant": "perturbed"}),
        ("vc", {"iterations": 4, "window": 2}),
    ],
)
def test_a_selection_matrix_gives_the_mask_results(name, kwargs, setup):
    """H = M written as a matrix takes the linear path of every strategy and must give what
    the mask path gives, up to round-off (same random draws, different algebra)."""
    _, ardm, problem = setup
    as_matrix = _as_selection_matrix(problem)
    runs = [
        assimilate(ardm, p, name, members=6, generator=torch.Generator().manual_seed(3), **kwargs)
        for p in (problem, as_matrix)
    ]
    torch.testing.assert_close(runs[1].ensemble, runs[0].ensemble, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["enkf", "smc"])
def test_local_averages_match_the_exact_kalman_filter(name, setup):
    """EnKF and SMC with a local-average H against the Kalman filter of the sampler's twin;
    tolerances: 5 standard errors sqrt(var / N) of the ensemble mean (Bonferroni over the 144
    compared entries), widened for the EnKF by the gain-estimation error as in
    test_enkf_on_the_analytic_ardm_matches_the_kalman_filter_of_its_sampler."""
    from ardm_infer.ardm import sampler_twin

    twin, ardm, _ = setup
    oracle = sampler_twin(twin, ardm.schedule)
    problem = linear_problem(local_average_operator((1, DIM), width=3, stride=2), twin=oracle)
    members = 2000
    result = assimilate(
        ardm, problem, name, members=members, generator=torch.Generator().manual_seed(12)
    )
    mean, variance = kalman_linear(oracle, problem)
    ensemble = result.ensemble[..., 0, :]  # (M, N, T, d)
    if result.log_weights is None:
        estimate = ensemble.mean(0)
        allowance = 15.0
    else:  # the filtering particles of frame t carry the weights of frame t
        weights = torch.stack(result.diagnostics["log_weights"], 2).exp().unsqueeze(-1)
        estimate = (weights * ensemble).sum(0)
        ess = torch.stack(result.diagnostics["ess"], 1).unsqueeze(-1)
        allowance = 5.0 * math.sqrt(members) / ess.sqrt()
    assert ((estimate - mean).abs() < allowance * torch.sqrt(variance / members)).all()


# ------------------------------------------------------------------ behaviour at the edges


def test_vc_shares_the_sampler_noise_with_the_forecast(setup):
    """Common random numbers: vc's emitted rollouts draw the generator's stream, so without
    observations it is the forecast bit for bit, and with them frames before the first
    observation are too."""
    _, ardm, problem = setup
    blind = dataclasses.replace(problem, mask=torch.zeros_like(problem.mask))
    runs = {
        name: assimilate(
            ardm, p, name, members=5, generator=torch.Generator().manual_seed(7), **kw
        ).ensemble
        for name, p, kw in (
            ("forecast", blind, {}),
            ("vc", blind, {"window": 2, "iterations": 3}),
        )
    }
    assert torch.equal(runs["vc"], runs["forecast"])
    late = dataclasses.replace(
        problem, mask=problem.mask.clone().index_fill_(0, torch.arange(2), 0)
    )
    vc = assimilate(
        ardm, late, "vc", members=5, generator=torch.Generator().manual_seed(7), window=2
    ).ensemble
    assert torch.equal(vc[:, :, :2], runs["forecast"][:, :, :2])
    assert not torch.equal(vc[:, :, 2:], runs["forecast"][:, :, 2:])


@pytest.mark.parametrize("sigma", [1e-3, 1e-5])
def test_dps_is_finite_and_still_helps_at_small_sigma(sigma, setup):
    """The score step grows like 1/sigma_y^2; bounded at max_step tau_s it stays finite and
    still moves toward the truth (the twin, observed every frame)."""
    _, ardm, problem = setup
    sharp = problem.with_sigma(sigma)
    g = torch.Generator().manual_seed(3)
    dps = assimilate(ardm, sharp, "dps", members=8, generator=g)
    assert torch.isfinite(dps.ensemble).all() and dps.diagnostics["bounded_steps"] > 0
    forecast = assimilate(ardm, sharp, "forecast", members=8, generator=g)
    truth = problem.truth.unsqueeze(0)
    points = problem.mask.unsqueeze(0).expand_as(dps.ensemble)
    error_dps = (dps.ensemble - truth)[points].square().mean()
    error_forecast = (forecast.ensemble - truth)[points].square().mean()
    assert error_dps < 0.5 * error_forecast, (error_dps, error_forecast)


def test_dps_on_the_ks_ardm_at_small_sigma_stays_finite():
    """The case of issue 14: sigma_y = 5e-3 drove the default DPS to ~1e20 and then NaN."""
    from ardm_infer import load_ardm

    ardm = load_ardm("ks")
    g = torch.Generator().manual_seed(0)
    field = torch.randn(1, ardm.context_length + 4, 1, 256, generator=g)
    frames = torch.fft.irfft(torch.fft.rfft(field, dim=-1)[..., :12], n=256, dim=-1) * 8
    problem = make_problem(frames, ardm.context_length, "stride=16, every=1, sigma=0.005", g)
    result = assimilate(ardm, problem, "dps", members=2, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(result.ensemble).all()
    assert result.diagnostics["bounded_steps"] > 0
    unbounded = get_strategy("dps").Config(max_step=None)
    with pytest.raises(DivergenceError, match="frame t="):
        assimilate(
            ardm, problem, "dps", members=2, generator=torch.Generator().manual_seed(1),
            config=unbounded,
        )  # fmt: skip


def test_dps_last_substeps_guides_only_the_last_substeps():
    """``last_substeps=n`` leaves sub-steps s > n unguided (their KL is zero) and spends one
    VJP per guided sub-step and batch element."""
    from ardm_infer.ardm import Schedule, analytic_ardm
    from ardm_infer.dynamics import LinearGaussianTwin

    twin = LinearGaussianTwin.default(dim=6)
    ardm = analytic_ardm(twin, Schedule(substeps=6, sigma_max=20.0, sigma_min=0.01))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 3, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "stride=2, every=1, sigma=0.3", g)
    runs = {
        n: assimilate(
            ardm,
            problem,
            "dps",
            members=3,
            generator=torch.Generator().manual_seed(1),
            last_substeps=n,
        )
        for n in (None, 2, 6)
    }
    assert runs[None].cost.vjps == 3 * 2 * 6 * 3  # members * trajectories * substeps * frames
    assert runs[2].cost.vjps == 3 * 2 * 2 * 3
    assert torch.equal(runs[6].ensemble, runs[None].ensemble)  # all 6 sub-steps: the default
    assert not torch.equal(runs[2].ensemble, runs[None].ensemble)
    with pytest.raises(ValueError, match="last_substeps"):
        get_strategy("dps").Config(last_substeps=0)


def test_controller_scale_scales_the_control():
    """``scale=0`` is the forecast bit for bit (same noise); ``scale=2`` about quadruples the
    KL of the first frame (exactly at its first sub-step; later sub-steps see latents that the
    control has moved, so the ratio is only near 4)."""
    from ardm_infer.ardm import Schedule, analytic_ardm
    from ardm_infer.dynamics import LinearGaussianTwin

    net = build_controller(
        ControllerConfig(dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4)
    )
    with torch.no_grad():
        weight = net.out_conv.conv.weight
        weight.copy_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    net.eval()
    twin = LinearGaussianTwin.default(dim=6)
    ardm = analytic_ardm(twin, Schedule(substeps=4, sigma_max=20.0, sigma_min=0.01))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 3, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "stride=2, every=1, sigma=0.3", g)

    def run(name, **options):
        return assimilate(
            ardm, problem, name, members=3, generator=torch.Generator().manual_seed(1), **options
        )

    zero = run("controller", controller=net, scale=0.0)
    assert torch.equal(zero.ensemble, run("forecast").ensemble)
    one, two = run("controller", controller=net), run("controller", controller=net, scale=2.0)
    kl1, kl2 = one.diagnostics["kl"][0], two.diagnostics["kl"][0]
    assert bool((kl1 > 0).all())
    ratio = float(kl2.sum() / kl1.sum())
    assert 3.0 < ratio < 5.0, ratio
