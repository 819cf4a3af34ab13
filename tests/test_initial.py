"""The protocol's initial conditions: exact, background, climatology."""

import numpy as np
import pytest
import torch

from ardm_infer.dynamics import LinearGaussianTwin
from ardm_infer.initial import (
    InitialCondition,
    draw_background,
    parse_initial,
    smooth_perturbation,
)


def test_spec_round_trip_and_errors():
    for spec in ("exact", "climatology(members=5)", "background(error=0.05, spinup=3)"):
        ic = parse_initial(spec)
        assert parse_initial(ic.spec()) == ic
    assert parse_initial("background") == InitialCondition("background")
    with pytest.raises(ValueError, match="unknown initial condition 'nowcast'"):
        parse_initial("nowcast")
    with pytest.raises(ValueError, match="keys are error, spinup"):
        parse_initial("background(noise=1)")
    with pytest.raises(ValueError, match="error='x'"):
        parse_initial("background(error=x)")
    with pytest.raises(ValueError, match="error must be > 0"):
        InitialCondition("background", error=0.0)
    with pytest.raises(TypeError, match="spinup must be an int"):
        InitialCondition("background", spinup=2.5)
    with pytest.raises(TypeError, match="finite"):
        InitialCondition("background", error=float("nan"))


@pytest.mark.parametrize("shape,dims", [((4, 1, 64), 1), ((3, 2, 16, 16), 2)])
def test_smooth_perturbation_has_unit_rms_and_only_low_modes(shape, dims):
    g = torch.Generator().manual_seed(0)
    field = smooth_perturbation(shape, dims, 4, g)
    frame = tuple(range(-dims - 1, 0))
    torch.testing.assert_close(field.square().mean(dim=frame), torch.ones(shape[0]))
    spec = torch.fft.fftn(field, dim=tuple(range(-dims, 0))).abs()
    n = shape[-1]
    k = torch.fft.fftfreq(n, 1.0 / n).abs()
    high = k >= 4
    assert spec[..., high].max() < 1e-4 * spec.max()
    if dims == 2:
        assert spec[..., high, :].max() < 1e-4 * spec.max()


def test_exact_is_none_and_background_is_calibrated_at_the_perturbation():
    twin = LinearGaussianTwin.default(dim=16)
    g = torch.Generator().manual_seed(1)
    n, m, err = 200, 50, 0.3
    frames = torch.randn(n, 6, 1, 16, generator=g, dtype=torch.float64).float()
    assert draw_background(InitialCondition("exact"), frames, 1, g) is None
    ic = InitialCondition("background", error=err, spinup=0, wavenumbers=4, members=m)
    bg = draw_background(ic, frames, 1, g, process=twin)
    assert bg.contexts.shape == (m, n, 1, 1, 16)
    assert bg.member_rmse.shape == bg.mean_rmse.shape == bg.spread.shape == (n,)
    # a common offset and a member deviation, both of rms `error`: over many trajectories the
    # squared spread averages error^2 and the squared mean error error^2 (1 + 1/M).  Each
    # trajectory's value is an average over 7 independent Fourier modes (|k| < 4, real
    # field): relative std of a squared rms ~ sqrt(2/7); 200 trajectories -> ~3.8 %; 4 sigma.
    tol = 4 * (2 / 7) ** 0.5 / n**0.5
    spread2 = bg.spread.square().mean()
    mean2 = bg.mean_rmse.square().mean()
    assert abs(spread2 / err**2 - 1) < tol
    assert abs(mean2 / (err**2 * (1 + 1 / m)) - 1) < tol
    torch.testing.assert_close(bg.member_rmse.square().mean(), spread2 * (m - 1) / m + mean2)


class _Shift:
    """A deterministic process: the next frame is the last one rolled by one point."""

    frame_shape = (1, 8)
    context_length = 1
    stochastic = False

    def step(self, context, generator=None):
        return context[:, -1].roll(1, dims=-1)


def test_background_spin_up_ends_on_the_true_context_time():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 1, 8, generator=g)
    frames = torch.stack([x0.roll(t, dims=-1) for t in range(6)], dim=1)  # (2, 6, 1, 8)
    ic = InitialCondition("background", error=1e-3, spinup=4, wavenumbers=2, members=3)
    bg = draw_background(ic, frames, 1, torch.Generator().manual_seed(3), process=_Shift())
    # the perturbed frame 0 advanced 4 frames is frame 4 plus the rolled perturbation
    at0 = InitialCondition("background", error=1e-3, spinup=0, wavenumbers=2, members=3)
    first = draw_background(at0, frames, 1, torch.Generator().manual_seed(3), process=_Shift())
    moved = (bg.contexts[:, :, 0] - frames[:, 4]).roll(-4, dims=-1)
    torch.testing.assert_close(moved, first.contexts[:, :, 0] - frames[:, 0])
    again = draw_background(ic, frames, 1, torch.Generator().manual_seed(3), process=_Shift())
    assert torch.equal(bg.contexts, again.contexts)
    with pytest.raises(ValueError, match="needs the process"):
        draw_background(ic, frames, 1, g)
    with pytest.raises(ValueError, match="spin-up 4"):
        draw_background(ic, frames[:, :3], 1, g, process=_Shift())


def test_climatology_draws_windows_of_the_pool():
    g = torch.Generator().manual_seed(4)
    pool = torch.arange(3 * 7 * 4, dtype=torch.float32).reshape(3, 7, 1, 4)
    frames = torch.zeros(2, 2, 1, 4)
    bg = draw_background(InitialCondition("climatology", members=6), frames, 2, g, pool=pool)
    assert bg.contexts.shape == (6, 2, 2, 1, 4)
    windows = {tuple(pool[i, t : t + 2].flatten().tolist()) for i in range(3) for t in range(6)}
    for m in range(6):
        for n in range(2):
            assert tuple(bg.contexts[m, n].flatten().tolist()) in windows
    with pytest.raises(ValueError, match="needs a pool"):
        draw_background(InitialCondition("climatology"), frames, 2, g)


# ------------------------------------------------------------------- through the library


def _twin_frames(n, length, seed):
    twin = LinearGaussianTwin.default(dim=8)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 8, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, length - 1, g)], 1).unsqueeze(2)
    return twin, frames


def test_make_problem_with_a_background_start():
    from ardm_infer import assimilate, make_problem

    twin, frames = _twin_frames(2, 12, 5)
    g = torch.Generator().manual_seed(0)
    exact = make_problem(frames[:, 3:], 1, "stride=2, every=1, sigma=0.3", g)
    spec = "background(error=0.2, spinup=3, members=4)"
    problem = make_problem(
        frames,
        1,
        "stride=2, every=1, sigma=0.3",
        torch.Generator().manual_seed(0),
        initial=spec,
        process=twin,
    )
    # the spin-up consumes 3 frames: same truth and observations as the exact problem on
    # frames[:, 3:], but a context known only through the background ensemble
    assert torch.equal(problem.truth, exact.truth)
    assert torch.equal(problem.observation, exact.observation)
    assert problem.background.contexts.shape == (4, 2, 1, 1, 8)
    torch.testing.assert_close(problem.context, problem.background.contexts.mean(0))
    assert problem.initial == parse_initial(spec).spec()
    result = assimilate(twin, problem, "forecast", members=4, generator=g)
    first = result.ensemble[:, :, 0]
    assert first.std(0).min() > 0  # members start apart
    with pytest.raises(ValueError, match="holds 4 members"):
        assimilate(twin, problem, "forecast", members=5, generator=g)


@pytest.mark.parametrize("initial", ["background(error=0.3, spinup=2)", "climatology"])
def test_every_strategy_runs_from_an_uncertain_start(initial):
    """Conformance over the registry: shapes, finiteness and determinism from a background or
    climatological start (controller: needs a trained network, covered in test_controller)."""
    from ardm_infer import assimilate, available_strategies, make_problem
    from ardm_infer.ardm import analytic_ardm

    twin, frames = _twin_frames(2, 10, 6)
    _, pool = _twin_frames(3, 6, 7)
    ardm = analytic_ardm(twin)
    problem = make_problem(
        frames,
        1,
        "stride=2, every=2, sigma=0.3",
        torch.Generator().manual_seed(1),
        initial=initial.replace(")", ", members=6)")
        if "(" in initial
        else "climatology(members=6)",
        process=ardm,
        pool=pool,
    )
    assert problem.background.member_rmse.shape == (2,)
    for name in available_strategies():
        if name == "controller":
            continue
        runs = [
            assimilate(ardm, problem, name, members=6, generator=torch.Generator().manual_seed(2))
            for _ in range(2)
        ]
        assert runs[0].ensemble.shape == (6, 2, problem.horizon, 1, 8), name
        assert bool(torch.isfinite(runs[0].ensemble).all()), name
        assert torch.equal(runs[0].ensemble, runs[1].ensemble), name


def test_benchmark_records_the_initial_condition(tmp_path):
    from ardm_infer.bench import benchmark

    kwargs = dict(
        strategies=["forecast", "enkf"],
        regimes=["sparse"],
        horizon=3,
        trajectories=2,
        members=3,
        progress=False,
    )
    ds = benchmark("ks", initial="background(error=0.05, spinup=2)", **kwargs)
    import json

    config = json.loads(ds.attrs["config"])
    assert config["initial"].startswith("background(error=0.05, spinup=2")
    assert bool(np.isfinite(ds["rmse"].values).all())
    exact = benchmark("ks", initial="exact", **kwargs)
    # an uncertain start costs accuracy at the first frames
    assert float(ds["rmse"].isel(time=0).mean()) > float(exact["rmse"].isel(time=0).mean())
