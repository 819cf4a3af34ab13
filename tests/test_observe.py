"""Observation operators, noise and the one log-likelihood (ardm_infer.observe)."""

from __future__ import annotations

import math

import pyro.distributions as pyro_distributions
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ardm_infer.observe import (
    LinearOperator,
    MaskOperator,
    ObservationOperator,
    add_noise,
    log_likelihood,
    log_likelihood_linear,
    observation_cost,
    observation_cost_linear,
    observation_distribution,
    random_mask,
    subsample_mask,
)

FAST = settings(max_examples=40, deadline=None)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# 1-D grids (channels, n) and 2-D grids (channels, ny, nx), small enough to be fast.
frame_shapes = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(1, 64)),
    st.tuples(st.integers(1, 2), st.integers(1, 16), st.integers(1, 16)),
)


def selection_matrix(mask: torch.Tensor) -> torch.Tensor:
    """Rows of the identity picking the observed entries of a frame mask."""
    flat = mask.reshape(-1)
    return torch.eye(flat.numel(), dtype=torch.float64)[flat]


# ----------------------------------------------------------------------------- masks


@FAST
@given(shape=frame_shapes, data=st.data())
def test_subsample_mask_observes_every_stride_th_point(shape, data):
    space = shape[1:]
    strides = tuple(data.draw(st.integers(1, n)) for n in space)
    offsets = tuple(data.draw(st.integers(0, s - 1)) for s in strides)
    mask = subsample_mask(shape, strides, offsets)
    assert mask.shape == shape and mask.dtype == torch.bool
    # every channel observed at the same locations
    assert torch.equal(mask, mask[:1].expand_as(mask))
    # the count per axis is ceil((n - offset) / stride), so the total is the product
    expected = math.prod(
        math.ceil((n - o) / s) for n, s, o in zip(space, strides, offsets, strict=True)
    )
    assert int(mask[0].sum()) == expected
    # every observed index is offset + k * stride on each axis; with the count above this
    # pins the mask down to exactly that set
    indices = mask[0].nonzero()
    assert torch.all(indices >= torch.tensor(offsets))
    assert torch.all((indices - torch.tensor(offsets)) % torch.tensor(strides) == 0)


@pytest.mark.parametrize(
    ("shape", "stride", "fraction"),
    [
        ((1, 256), 16, 1 / 16),
        ((1, 256), 4, 1 / 4),
        ((1, 64, 64), 8, 1 / 64),
        ((2, 64, 32), (4, 8), 1 / 32),
    ],
)
def test_subsample_mask_observed_fraction_is_one_over_stride_per_axis(shape, stride, fraction):
    mask = subsample_mask(shape, stride)
    assert mask.float().mean().item() == pytest.approx(fraction, abs=0)


def test_subsample_mask_int_and_tuple_strides_agree():
    assert torch.equal(subsample_mask((1, 32, 32), 8), subsample_mask((1, 32, 32), (8, 8)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_shape": (1, 8), "stride": 16}, "larger than"),
        ({"frame_shape": (1, 8, 8), "stride": (2, 2, 2)}, "one per spatial axis"),
        ({"frame_shape": (1, 8), "stride": 0}, "positive"),
        ({"frame_shape": (1, 8), "stride": 4, "offset": 4}, "offset"),
        ({"frame_shape": (8,), "stride": 2}, "spatial axis"),
    ],
)
def test_subsample_mask_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        subsample_mask(**kwargs)


@FAST
@given(
    shape=frame_shapes,
    fraction=st.floats(0.01, 1.0),
    frames=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_random_mask_has_exactly_round_fraction_n_points(shape, fraction, frames, seed):
    n_points = math.prod(shape[1:])
    count = round(fraction * n_points)
    if count < 1:
        with pytest.raises(ValueError, match="observe nothing"):
            random_mask(shape, fraction, generator(seed))
        return
    mask = random_mask(shape, fraction, generator(seed), batch_shape=(frames,))
    assert mask.shape == (frames, *shape)
    assert torch.equal(mask[:, 0].flatten(1).sum(-1), torch.full((frames,), count))
    assert torch.equal(mask, mask[:, :1].expand_as(mask))  # all channels alike
    again = random_mask(shape, fraction, generator(seed), batch_shape=(frames,))
    assert torch.equal(mask, again)  # deterministic under a fixed generator


def test_random_masks_differ_between_frames_and_seeds():
    masks = random_mask((1, 256), 0.02, generator(1), batch_shape=(10,))
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 10
    other = random_mask((1, 256), 0.02, generator(2), batch_shape=(10,))
    assert not torch.equal(masks, other)


def test_random_mask_is_uniform_over_locations():
    # each location is chosen with probability k / n; check the empirical frequency
    draws, n, k = 4000, 20, 5
    masks = random_mask((1, n), k / n, generator(3), batch_shape=(draws,))
    frequency = masks[:, 0].double().mean(0)
    p = k / n
    standard_error = math.sqrt(p * (1 - p) / draws)
    assert torch.all((frequency - p).abs() < 5 * standard_error)


@pytest.mark.parametrize(
    ("fraction", "match"),
    [(0.0, r"\(0, 1\]"), (1.5, r"\(0, 1\]"), (float("nan"), r"\(0, 1\]"), (0.001, "nothing")],
)
def test_random_mask_errors(fraction, match):
    with pytest.raises(ValueError, match=match):
        random_mask((1, 64), fraction, generator())


def test_random_mask_requires_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        random_mask((1, 64), 0.5, None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- operators


def test_mask_operator_lifts_with_zeros():
    mask = subsample_mask((2, 12), 3)
    state = torch.randn(5, 4, 2, 12, generator=generator())
    operator = MaskOperator(mask)
    assert isinstance(operator, ObservationOperator)
    lifted = operator.apply(state)
    assert lifted.shape == state.shape
    assert torch.equal(lifted[..., mask], state[..., mask])
    assert torch.all(lifted[..., ~mask] == 0)
    assert torch.equal(operator.adjoint(lifted), lifted)
    assert operator.observed_count == 8


def test_mask_operator_keeps_nonfinite_values_out_of_unobserved_points():
    mask = torch.tensor([[True, False]])
    state = torch.tensor([[1.0, float("nan")]])
    assert torch.equal(MaskOperator(mask).apply(state), torch.tensor([[1.0, 0.0]]))


@FAST
@given(shape=frame_shapes, n_observations=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_linear_operator_apply_and_adjoint_are_transposes(shape, n_observations, seed):
    g = generator(seed)
    n_state = math.prod(shape)
    matrix = torch.randn(n_observations, n_state, generator=g, dtype=torch.float64)
    operator = LinearOperator(matrix, shape)
    assert isinstance(operator, ObservationOperator)
    state = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    vector = torch.randn(3, n_observations, generator=g, dtype=torch.float64)
    observed = operator.apply(state)
    assert observed.shape == (3, n_observations)
    torch.testing.assert_close(observed, state.reshape(3, -1) @ matrix.T)
    # <H x, y> = <x, H^T y>
    left = (observed * vector).sum(-1)
    right = (state * operator.adjoint(vector)).flatten(1).sum(-1)
    torch.testing.assert_close(left, right)


def test_linear_operator_errors():
    with pytest.raises(ValueError, match="columns"):
        LinearOperator(torch.zeros(3, 10), (1, 8))
    with pytest.raises(ValueError, match="frame shape"):
        LinearOperator(torch.zeros(3, 8), (1, 8)).apply(torch.zeros(2, 1, 9))
    flat = LinearOperator(torch.eye(4)[:2])
    assert torch.equal(flat.apply(torch.arange(8.0).view(2, 4)), torch.tensor([[0.0, 1], [4, 5]]))


# ----------------------------------------------------------------------------- noise


def test_add_noise_statistics_and_zeros_where_unobserved():
    sigma = 0.3
    mask = subsample_mask((1, 100), 2)
    clean = MaskOperator(mask).apply(torch.ones(500, 1, 100, dtype=torch.float64))
    noisy = add_noise(clean, sigma, generator(4), mask)
    assert noisy.dtype == clean.dtype and noisy.shape == clean.shape
    assert torch.all(noisy[..., ~mask] == 0)
    residual = (noisy - clean)[..., mask]
    n = residual.numel()
    # mean within 5 standard errors; std within 5 standard errors of the sample std
    assert abs(residual.mean().item()) < 5 * sigma / math.sqrt(n)
    assert abs(residual.std().item() - sigma) < 5 * sigma / math.sqrt(2 * n)


def test_add_noise_is_deterministic_and_uses_only_the_generator():
    clean = torch.zeros(4, 8)
    torch.manual_seed(0)
    first = add_noise(clean, 1.0, generator(5))
    torch.manual_seed(1)  # the global RNG must not matter
    second = add_noise(clean, 1.0, generator(5))
    assert torch.equal(first, second)
    assert not torch.equal(first, add_noise(clean, 1.0, generator(6)))


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_add_noise_rejects_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        add_noise(torch.zeros(3), sigma, generator())


# ----------------------------------------------------------------------------- likelihood


def gaussian_log_normaliser(n_observed: torch.Tensor, sigma: float) -> torch.Tensor:
    """log of the Gaussian normalising constant: -(n / 2) log(2 pi sigma^2)."""
    return -0.5 * n_observed * math.log(2 * math.pi * sigma**2)


@st.composite
def likelihood_cases(draw):
    shape = draw(frame_shapes)
    members = draw(st.integers(1, 4))
    sigma = draw(st.floats(0.05, 5.0))
    seed = draw(st.integers(0, 2**31))
    g = generator(seed)
    mask = torch.rand(shape, generator=g) < draw(st.floats(0.0, 1.0))
    state = torch.randn(members, *shape, generator=g, dtype=torch.float64)
    observation = MaskOperator(mask).apply(
        torch.randn(members, *shape, generator=g, dtype=torch.float64)
    )
    return observation, state, mask, sigma


@FAST
@given(case=likelihood_cases())
def test_log_likelihood_matches_hand_written_gaussian(case):
    observation, state, mask, sigma = case
    result = log_likelihood(observation, state, mask, sigma)
    assert result.shape == state.shape[:1] and result.dtype == torch.float64
    terms = (
        -0.5 * ((observation - state) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    )
    expected = (terms * mask).flatten(1).sum(-1)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


@FAST
@given(case=likelihood_cases())
def test_cost_is_minus_log_likelihood_minus_normaliser(case):
    observation, state, mask, sigma = case
    cost = observation_cost(observation, state, mask, sigma)
    n_observed = mask.sum().to(torch.float64)
    expected = -log_likelihood(observation, state, mask, sigma) + gaussian_log_normaliser(
        n_observed, sigma
    )
    torch.testing.assert_close(cost, expected, rtol=1e-12, atol=1e-10)
    hand = (((observation - state) * mask) ** 2).flatten(1).sum(-1) / (2 * sigma**2)
    torch.testing.assert_close(cost, hand, rtol=1e-12, atol=1e-12)


@FAST
@given(case=likelihood_cases())
def test_log_likelihood_gradient_is_masked_residual_over_variance(case):
    observation, state, mask, sigma = case
    state = state.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(log_likelihood(observation, state, mask, sigma).sum(), state)
    expected = mask * (observation - state.detach()) / sigma**2
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-12)
    # and the cost's gradient is its negative
    (cost_gradient,) = torch.autograd.grad(
        observation_cost(observation, state, mask, sigma).sum(), state
    )
    torch.testing.assert_close(cost_gradient, -expected, rtol=1e-12, atol=1e-12)


@FAST
@given(case=likelihood_cases())
def test_selection_matrix_linear_operator_agrees_with_mask(case):
    observation, state, mask, sigma = case
    operator = LinearOperator(selection_matrix(mask), mask.shape)
    vector = operator.apply(observation)
    torch.testing.assert_close(
        log_likelihood_linear(vector, state, operator, sigma),
        log_likelihood(observation, state, mask, sigma),
        rtol=1e-12,
        atol=1e-12,
    )
    torch.testing.assert_close(
        observation_cost_linear(vector, state, operator, sigma),
        observation_cost(observation, state, mask, sigma),
        rtol=1e-12,
        atol=1e-12,
    )
    # the adjoint lifts the vector back to the canonical representation
    torch.testing.assert_close(operator.adjoint(vector), observation)


def test_log_likelihood_ignores_values_at_unobserved_points():
    mask = torch.tensor([[True, False, True]])
    state = torch.zeros(2, 1, 3)
    lifted = torch.tensor([[1.0, 0.0, 2.0]])
    with_nan = torch.tensor([[1.0, float("nan"), 2.0]])
    torch.testing.assert_close(
        log_likelihood(lifted, state, mask, 0.5), log_likelihood(with_nan, state, mask, 0.5)
    )


def test_log_likelihood_window_mask_and_frame_ndim():
    g = generator(7)
    mask = random_mask((1, 16), 0.25, g, batch_shape=(5,))  # (time, channels, space)
    state = torch.randn(3, 5, 1, 16, generator=g, dtype=torch.float64)
    observation = MaskOperator(mask).apply(torch.randn(3, 5, 1, 16, generator=g).double())
    per_frame = log_likelihood(observation, state, mask, 0.1, frame_ndim=2)
    whole = log_likelihood(observation, state, mask, 0.1)
    assert per_frame.shape == (3, 5) and whole.shape == (3,)
    torch.testing.assert_close(per_frame.sum(-1), whole)
    cost = observation_cost(observation, state, mask, 0.1, frame_ndim=2)
    assert cost.shape == (3, 5)


def test_log_likelihood_per_channel_sigma_and_broadcast_observation():
    g = generator(8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    sigma = torch.tensor([[0.1], [2.0]], dtype=torch.float64)
    state = torch.randn(6, 2, 4, generator=g, dtype=torch.float64)
    observation = torch.randn(2, 4, generator=g, dtype=torch.float64)  # one obs, 6 members
    result = log_likelihood(observation, state, mask, sigma)
    expected = torch.distributions.Normal(state, sigma).log_prob(observation).flatten(1).sum(-1)
    torch.testing.assert_close(result, expected)
    cost = observation_cost(observation, state, mask, sigma)
    hand = (0.5 * ((observation - state) / sigma) ** 2).flatten(1).sum(-1)
    torch.testing.assert_close(cost, hand)


def test_observation_distribution_is_a_pyro_distribution():
    mask = subsample_mask((1, 8, 8), 2)
    state = torch.zeros(3, 1, 8, 8)
    distribution = observation_distribution(state, mask, 1.0)
    assert isinstance(distribution, pyro_distributions.Independent)
    assert distribution.batch_shape == (3,) and distribution.event_shape == (1, 8, 8)


def test_log_likelihood_float32_default():
    mask = subsample_mask((1, 32), 4)
    state = torch.zeros(2, 1, 32)
    assert log_likelihood(torch.zeros(1, 32), state, mask, 0.1).dtype == torch.float32


def test_log_likelihood_rejects_non_boolean_mask():
    with pytest.raises(ValueError, match="boolean"):
        log_likelihood(torch.zeros(1, 4), torch.zeros(1, 4), torch.ones(1, 4), 1.0)
