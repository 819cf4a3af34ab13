"""The protocol's initial conditions: exact, background, climatology."""

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
