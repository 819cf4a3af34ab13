"""The regime distribution of controller training draws ``Regime``s, and every training mask
is the mask of its regime: a training chain is, frame for frame, the benchmark's problem of a
regime that has a spec string (stride phase included)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm_infer.controller.chains import Chains
from ardm_infer.observe import (
    RandomFraction,
    Regime,
    RegimeDistribution,
    Stride,
    parse_regime,
    resolve_regimes,
    subsample_mask,
)

# ------------------------------------------------------------------------------ stride phase


def test_stride_phase_spec_round_trip_and_mask():
    regime = parse_regime("stride=8x4, phase=1x3, every=2, sigma=0.1, offset=1")
    assert regime.spatial == Stride((8, 4), phase=(1, 3))
    assert regime.spec() == "stride=8x4, phase=1x3, every=2, sigma=0.1, offset=1"
    assert parse_regime(regime.spec()) == regime
    masks = regime.masks((1, 16, 8), 5)
    expected = subsample_mask((1, 16, 8), (8, 4), (1, 3))
    assert torch.equal(masks[2], expected) and torch.equal(masks[4], expected)  # t = 3, 5
    assert not masks[[0, 1, 3]].any()
    # phase 0 is the plain stride, and spelled without phase
    assert parse_regime("stride=16, phase=0, every=1, sigma=0.1") == Regime(Stride(16), 1, 0.1)
    assert parse_regime("sparse, phase=2", pde="ks").spatial == Stride(16, phase=2)
    assert Stride((4, 4), phase=(2, 2)) == Stride(4, phase=2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("stride=4, phase=4, every=1, sigma=0.1", "smaller than the stride"),
        ("fraction=0.1, phase=1, every=1, sigma=0.1", "needs a stride"),
        ("full, phase=1, every=1, sigma=0.1", "needs a stride"),
        ("stride=4, phase=x, every=1, sigma=0.1", "malformed value for phase"),
        ("stride=4, phase=1, phase=2, every=1, sigma=0.1", "duplicate key 'phase'"),
    ],
)
def test_bad_phases_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_regime(spec)


def test_window_masks_continue_the_problem_masks():
    """Windows of a run, from any start, are the slices of the run's masks."""
    for regime in (
        parse_regime("stride=4, phase=3, every=3, sigma=0.2, offset=2"),
        parse_regime("full, every=1, sigma=0.2"),
    ):
        whole = regime.masks((1, 12), 20)
        for start in (0, 1, 7, 15):
            assert torch.equal(regime.window_masks((1, 12), start, 5), whole[start : start + 5])
    rnd = parse_regime("fraction=0.25, every=2, sigma=0.1")
    whole = rnd.masks((1, 4, 4), 8, torch.Generator().manual_seed(3))
    a = rnd.window_masks((1, 4, 4), 0, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, whole[:4])


# ------------------------------------------------------------------------------ draws


def test_draws_are_regimes_within_the_distribution():
    dist = RegimeDistribution.randomised((1, 64, 64))
    g = torch.Generator().manual_seed(0)
    regimes = dist.draw(400, (1, 64, 64), g)
    strided = [r for r in regimes if isinstance(r.spatial, Stride)]
    random = [r for r in regimes if isinstance(r.spatial, RandomFraction)]
    # P(stride) = 1/2: the count is Binomial(400, 1/2), sd 10; 5 sd either side
    assert 150 < len(strided) < 250 and len(strided) + len(random) == 400
    assert {r.spatial.steps(2) for r in strided} <= {(2, 2), (4, 4), (8, 8), (16, 16)}
    assert any(r.spatial.phase != 0 for r in strided)  # spatial_phase=True
    assert all(0.05 <= r.sigma <= 0.5 and r.every in (1, 2, 4, 8) for r in regimes)
    assert all(0 <= r.offset < r.every for r in regimes)
    low, high = dist.fractions
    assert all(low <= r.spatial.fraction <= high for r in random)
    for regime in regimes:  # every draw has a spec the benchmark parses back to it
        assert parse_regime(regime.spec()) == regime
        regime.validate((1, 64, 64), regime.offset + regime.every)
    # the point mass of a preset is that preset, up to its temporal offset
    fixed = resolve_regimes("sparse-gappy", (1, 256), pde="ks")
    drawn = fixed.draw(16, (1, 256), g)
    preset = parse_regime("sparse-gappy", pde="ks")
    assert all(r == Regime(preset.spatial, 8, preset.sigma, offset=r.offset) for r in drawn)
    assert len({r.offset for r in drawn}) > 1


def test_masks_of_a_window_are_the_regimes_window_masks():
    dist = RegimeDistribution.randomised((1, 32))
    regimes = dist.draw(12, (1, 32), torch.Generator().manual_seed(1))
    clock = torch.arange(12) * 3
    masks = RegimeDistribution.masks(regimes, clock, 5, (1, 32), torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    for b, regime in enumerate(regimes):
        assert torch.equal(masks[b], regime.window_masks((1, 32), int(clock[b]), 5, g))


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    two_d=st.booleans(),
    reset=st.sampled_from([0.0, 0.3, 1.0]),
    window=st.integers(1, 4),
)
def test_every_training_mask_is_the_mask_of_its_regime(seed, two_d, reset, window):
    """Over several windows of the training chains (resets included): each chain's mask is
    its regime's window mask at the chain's clock -- exactly for strided regimes, and for
    random ones the same observed frames with exactly round(f n) points each; its sigma_y is
    the regime's, and its observation is zero off the mask."""
    shape = (1, 8, 8) if two_d else (1, 32)
    n_points = 64 if two_d else 32
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(3, 40, *shape, generator=g)
    dist = RegimeDistribution.randomised(shape)
    chains = Chains(5, frames, 2)
    streaks: dict[int, list[torch.Tensor]] = {}
    for _ in range(6):
        _, _, observation, mask, sigma, _ = chains.advance(frames, window, dist, reset, g)
        for b, regime in enumerate(chains.regimes):
            start = int(chains.clock[b])
            observed = regime.observed_frames(window, start=start)
            assert torch.equal(mask[b].flatten(1).any(1), observed)
            if isinstance(regime.spatial, Stride):
                assert torch.equal(mask[b], regime.window_masks(shape, start, window))
            else:
                counts = mask[b].flatten(1).sum(1)[observed]
                assert bool((counts == round(regime.spatial.fraction * n_points)).all())
            assert float(sigma[b]) == float(torch.tensor(regime.sigma, dtype=torch.float32))
            assert not observation[b][~mask[b]].any()
            if start == 0:
                streaks[b] = []
            streaks.setdefault(b, []).append(mask[b])
        chains.push(torch.zeros(5, window, *shape))
    # a chain that was not reset is one benchmark problem: its windows join into the
    # regime's masks from t = 1 (strided regimes, whose masks use no randomness)
    for b, parts in streaks.items():
        regime = chains.regimes[b]
        total = len(parts) * window
        assert int(chains.clock[b]) == total
        if isinstance(regime.spatial, Stride) and regime.offset + regime.every <= total:
            assert torch.equal(torch.cat(parts), regime.masks(shape, total))
