"""Observation regimes, presets and the spec parser (ardm_infer.observe.regimes)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ardm_infer.observe import (
    PDE_NAMES,
    PRESET_NAMES,
    Full,
    RandomFraction,
    Regime,
    Stride,
    parse_regime,
    preset,
)
from ardm_infer.systems import get_system

FAST = settings(max_examples=60, deadline=None)
SLOWER = settings(max_examples=25, deadline=None)

KS_FRAME = (1, 256)
KOLMOGOROV_FRAME = (1, 64, 64)
LORENZ96_FRAME = (1, 40)
FRAMES = {"ks": KS_FRAME, "kolmogorov": KOLMOGOROV_FRAME, "lorenz96": LORENZ96_FRAME}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- strategies

strides = st.one_of(
    st.integers(1, 64).map(Stride),
    st.tuples(st.integers(1, 16), st.integers(1, 16)).map(Stride),
)
spatials = st.one_of(
    strides,
    st.floats(1e-6, 1.0, exclude_min=False).map(RandomFraction),
    st.just(Full()),
)
regimes = st.builds(
    Regime,
    spatial=spatials,
    every=st.integers(1, 40),
    sigma=st.floats(1e-6, 1e6),
    offset=st.integers(0, 20),
    name=st.none() | st.sampled_from(PRESET_NAMES),
)


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("pde", PDE_NAMES)
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_match_the_design_table(name, pde):
    regime = preset(name, pde)
    assert regime.name == name
    assert regime.sigma == 0.05 and regime.offset == 0
    assert regime.every == (8 if name.endswith("-gappy") else 1)
    if name.startswith("random"):
        assert regime.spatial == RandomFraction(0.02)
    else:
        stride = {"dense": 4, "sparse": 16 if pde == "ks" else 8}[name.split("-")[0]]
        assert regime.spatial == Stride(stride)
        assert stride == get_system(pde).preset_strides[name.split("-")[0]]


@pytest.mark.parametrize(
    ("name", "pde", "frame", "observed_per_frame"),
    [
        ("dense", "ks", KS_FRAME, 64),
        ("sparse", "ks", KS_FRAME, 16),
        ("random", "ks", KS_FRAME, 5),  # round(0.02 * 256) = round(5.12)
        ("dense", "kolmogorov", KOLMOGOROV_FRAME, 16 * 16),
        ("sparse", "kolmogorov", KOLMOGOROV_FRAME, 8 * 8),
        ("random", "kolmogorov", KOLMOGOROV_FRAME, 82),  # round(0.02 * 4096) = round(81.92)
        ("dense", "lorenz96", LORENZ96_FRAME, 10),
        ("sparse", "lorenz96", LORENZ96_FRAME, 5),
        ("random", "lorenz96", LORENZ96_FRAME, 1),  # round(0.02 * 40) = round(0.8)
    ],
)
def test_preset_masks_observe_the_expected_number_of_points(name, pde, frame, observed_per_frame):
    masks = preset(name, pde).masks(frame, 16, generator())
    assert masks.shape == (16, *frame)
    assert torch.equal(masks.flatten(1).sum(-1), torch.full((16,), observed_per_frame))
    gappy = preset(f"{name}-gappy", pde).masks(frame, 16, generator())
    assert torch.equal(gappy.flatten(1).sum(-1) > 0, torch.arange(1, 17) % 8 == 0)


def test_preset_spellings_are_equal():
    expected = preset("sparse-gappy", "ks")
    for spelling in ["sparse-gappy", "Sparse_Gappy", "  SPARSE  gappy ", "sparse--gappy"]:
        assert preset(spelling, "KS") == expected
        assert parse_regime(spelling, pde="ks") == expected
    assert preset("sparse", "kolmogorov-2d") == preset("sparse", "kolmogorov")


def test_sparse_spellings_compare_equal_and_draw_identical_observations():
    spellings = [
        preset("sparse", "ks"),
        parse_regime("sparse", pde="ks"),
        parse_regime("every=1 , sigma=0.05, stride=16"),
        parse_regime("STRIDE = 16,SIGMA=5e-2 ,every=1"),
        parse_regime("stride=16, every=1, sigma=0.05, offset=0"),
        Regime(Stride((16,)), every=1, sigma=0.05),
    ]
    truth = torch.randn(2, 12, *KS_FRAME, generator=generator(1))
    reference_observation, reference_mask = spellings[0].observe(truth, generator(2))
    for regime in spellings:
        assert regime == spellings[0] and hash(regime) == hash(spellings[0])
        observation, mask = regime.observe(truth, generator(2))
        assert torch.equal(observation, reference_observation)
        assert torch.equal(mask, reference_mask)


def test_two_dimensional_stride_spellings_are_equal():
    square = parse_regime("stride=8x8, every=1, sigma=0.05")
    assert square == parse_regime("stride=8, every=1, sigma=0.05")
    assert square == parse_regime("sparse", pde="kolmogorov") == Regime(Stride((8, 8)), 1, 0.05)
    assert torch.equal(
        square.masks(KOLMOGOROV_FRAME, 3), preset("sparse", "kolmogorov").masks(KOLMOGOROV_FRAME, 3)
    )


def test_random_presets_need_no_pde_and_dense_is_the_same_everywhere():
    assert parse_regime("random") == preset("random", "ks") == preset("random", "kolmogorov")
    assert parse_regime("dense-gappy") == preset("dense-gappy", "kolmogorov")


def test_preset_with_overrides():
    regime = parse_regime("sparse-gappy, sigma=0.5", pde="ks")
    assert regime == Regime(Stride(16), every=8, sigma=0.5)
    assert regime.name is None
    assert parse_regime("random, stride=4") == Regime(Stride(4), every=1, sigma=0.05)
    assert parse_regime("full, dense-gappy") == Regime(Full(), every=8, sigma=0.05)


def test_equality_ignores_name():
    assert Regime(Full(), 1, 0.1, name="a") == Regime(Full(), 1, 0.1, name="b")
    assert len({Regime(Full(), 1, 0.1, name="a"), Regime(Full(), 1, 0.1)}) == 1
    assert Regime(Full(), 1, 0.1) != Regime(Full(), 2, 0.1)


def test_parse_regime_returns_a_regime_unchanged():
    regime = preset("random", "ks")
    assert parse_regime(regime) is regime


# ----------------------------------------------------------------------------- parser


@FAST
@given(regime=regimes)
def test_spec_round_trip(regime):
    spec = regime.spec()
    assert parse_regime(spec) == regime
    assert parse_regime(spec).spec() == spec


@st.composite
def respelled(draw):
    """A regime and a different spelling of its spec (order, whitespace, case, forms)."""
    regime = draw(regimes)
    spatial = regime.spatial
    if isinstance(spatial, Stride):
        if isinstance(spatial.step, int):
            copies = draw(st.sampled_from([1, 1, 2]))  # "8" or "8x8"
            value = "x".join([str(spatial.step)] * copies)
        else:
            value = draw(st.sampled_from(["x", " x ", "X"])).join(str(s) for s in spatial.step)
        items = [f"stride={value}"]
    elif isinstance(spatial, RandomFraction):
        items = [f"fraction={spatial.fraction!r}"]
    else:
        items = ["full"]
    items += [f"every={regime.every}", f"sigma={regime.sigma!r}"]
    if regime.offset or draw(st.booleans()):
        items.append(f"offset={regime.offset}")
    order = draw(st.permutations(range(len(items))))
    spaces = st.sampled_from(["", " ", "  ", "\t"])
    pieces = []
    for index in order:
        key_value = items[index].split("=", 1)
        if len(key_value) == 2:
            item = key_value[0] + draw(spaces) + "=" + draw(spaces) + key_value[1]
        else:
            item = key_value[0]
        if draw(st.booleans()):
            item = item.upper()
        pieces.append(draw(spaces) + item + draw(spaces))
    return regime, ",".join(pieces)


@FAST
@given(case=respelled())
def test_spellings_whitespace_and_order_do_not_matter(case):
    regime, spelling = case
    assert parse_regime(spelling) == regime


@SLOWER
@given(case=respelled(), seed=st.integers(0, 2**31))
def test_equal_spellings_draw_identical_masks_and_observations(case, seed):
    regime, spelling = case
    parsed = parse_regime(spelling)
    two_dimensional = isinstance(regime.spatial, Stride) and not isinstance(
        regime.spatial.step, int
    )
    frame = (1, 16, 16) if two_dimensional else (2, 64)
    horizon = regime.offset + regime.every + 3
    try:
        regime.validate(frame, horizon)
    except ValueError:
        assume(False)
    truth = torch.randn(2, horizon, *frame, generator=generator(seed))
    first = regime.observe(truth, generator(seed + 1))
    second = parsed.observe(truth, generator(seed + 1))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_percentages_and_exponents():
    assert parse_regime("fraction=2%, every=1, sigma=0.05") == preset("random", "ks")
    assert parse_regime("fraction = 0.3 %, every=1, sigma=1e0") == Regime(
        RandomFraction(0.003), 1, 1.0
    )


keys = st.sampled_from(["stride", "fraction", "every", "sigma", "offset", "full", "x", ""])
values = st.one_of(
    st.sampled_from(["8", "8x8", "0", "-1", "0.5", "2%", "nan", "inf", "1e-3", "", "x", "1e400"]),
    st.text(max_size=6),
)
junk_items = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", keys, values),
    st.sampled_from((*PRESET_NAMES, "full", "spars", "", " ")),
    st.text(max_size=8),
)


def assert_parses_or_explains(spec, pde=None):
    try:
        regime = parse_regime(spec, pde=pde)
    except ValueError as error:
        message = str(error)
        assert len(message) > 20
        assert any(word in message for word in ("spec", "preset", "expected", "must", "pde")), (
            message
        )
    else:
        assert isinstance(regime, Regime)
        assert parse_regime(regime.spec()) == regime


@settings(max_examples=150, deadline=None)
@given(spec=st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_value_error(spec):
    assert_parses_or_explains(spec)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(junk_items, min_size=1, max_size=5), pde=st.sampled_from([None, "ks"]))
def test_near_miss_specs_parse_or_raise_value_error(items, pde):
    assert_parses_or_explains(",".join(items), pde=pde)


@pytest.mark.parametrize(
    ("spec", "pde", "match"),
    [
        ("", None, "empty regime spec"),
        ("spares", "ks", r"unknown regime preset 'spares'; did you mean 'sparse'"),
        ("dnse-gapy", "ks", r"did you mean 'dense-gappy'"),
        ("zzz", "ks", "known presets: dense"),
        ("stirde=16, every=1, sigma=0.1", None, r"unknown key 'stirde'.*did you mean 'stride'"),
        ("colour=red, every=1, sigma=0.1", None, "expected keys: stride, fraction"),
        ("stride=sixteen, every=1, sigma=0.1", None, "malformed value for stride"),
        ("stride=8x, every=1, sigma=0.1", None, "malformed value for stride"),
        ("stride=0, every=1, sigma=0.1", None, "stride must be an integer >= 1"),
        ("stride=16, every=0, sigma=0.1", None, "every must be an integer >= 1"),
        ("stride=16, every=1.5, sigma=0.1", None, "malformed value for every"),
        ("stride=16, every=1, sigma=0.1, offset=-2", None, "offset must be an integer >= 0"),
        ("stride=16, every=1, sigma=0", None, "sigma .* must be positive"),
        ("stride=16, every=1, sigma=-0.1", None, "sigma .* must be positive"),
        ("stride=16, every=1, sigma=nan", None, "positive and finite"),
        ("stride=16, every=1, sigma=inf", None, "positive and finite"),
        ("stride=16, every=1, sigma=abc", None, "malformed value for sigma"),
        ("stride=16, every=1, sigma=", None, "missing value for sigma"),
        ("fraction=0, every=1, sigma=0.1", None, r"fraction must be in \(0, 1\]"),
        ("fraction=1.5, every=1, sigma=0.1", None, r"fraction must be in \(0, 1\]"),
        ("fraction=150%, every=1, sigma=0.1", None, r"fraction must be in \(0, 1\]"),
        ("fraction=a%, every=1, sigma=0.1", None, "malformed value for fraction"),
        ("stride=16, sigma=0.1", None, "missing every="),
        ("stride=16, every=1", None, "missing sigma="),
        ("every=1, sigma=0.1", None, "missing a spatial pattern"),
        ("stride=16, fraction=0.1, every=1, sigma=0.1", None, "more than one spatial pattern"),
        ("full, stride=4, every=1, sigma=0.1", None, "more than one spatial pattern"),
        ("stride=16, every=1, every=2, sigma=0.1", None, "duplicate key 'every'"),
        ("sparse, dense", "ks", "more than one preset"),
        ("full=1, every=1, sigma=0.1", None, "'full' takes no value"),
        ("stride=16,, every=1, sigma=0.1", None, "empty item"),
        ("sparse", None, r"depends on the PDE .*pass pde="),
        ("sparse", "navier-stokes", "no observation presets for pde 'navier-stokes'"),
        ("sparse", "kolmogorv", "did you mean 'kolmogorov'"),
    ],
)
def test_malformed_specs_raise_helpful_value_errors(spec, pde, match):
    with pytest.raises(ValueError, match=match):
        parse_regime(spec, pde=pde)


def test_non_string_spec_is_a_type_error():
    with pytest.raises(TypeError, match="str or a Regime"):
        parse_regime(16)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Stride(0), "positive integer"),
        (lambda: Stride((8, 0)), "positive integer"),
        (lambda: Stride(2.5), "positive integer"),  # type: ignore[arg-type]
        (lambda: Stride(()), "empty"),
        (lambda: RandomFraction(0.0), r"\(0, 1\]"),
        (lambda: RandomFraction(1.01), r"\(0, 1\]"),
        (lambda: RandomFraction(float("nan")), r"\(0, 1\]"),
        (lambda: Regime(Full(), every=0, sigma=0.1), "every must be a positive integer"),
        (lambda: Regime(Full(), every=1.0, sigma=0.1), "every must be a positive integer"),  # type: ignore[arg-type]
        (lambda: Regime(Full(), every=1, sigma=0.0), "sigma"),
        (lambda: Regime(Full(), every=1, sigma=-1.0), "sigma"),
        (lambda: Regime(Full(), every=1, sigma=float("inf")), "sigma"),
        (lambda: Regime(Full(), every=1, sigma=float("nan")), "sigma"),
        (lambda: Regime(Full(), every=1, sigma=0.1, offset=-1), "offset"),
        (lambda: Regime("full", every=1, sigma=0.1), "spatial must be"),  # type: ignore[arg-type]
    ],
)
def test_invalid_parts_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_stride_canonical_forms():
    assert Stride((8, 8)) == Stride(8) and Stride((16,)) == Stride(16)
    assert Stride((8, 4)).step == (8, 4) and Stride((8, 4)).spec() == "stride=8x4"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("regime", "frame", "horizon", "match"),
    [
        (Regime(Stride(16), 1, 0.1), (1, 8), 4, "stride 16 is larger than the grid"),
        (Regime(Stride((4, 32)), 1, 0.1), (1, 16, 16), 4, "larger than the grid: spatial axis 1"),
        (Regime(Stride((4, 4)), 1, 0.1), (1, 16, 16), 4, None),
        (Regime(Stride((4, 2)), 1, 0.1), (1, 16), 4, "has 2 entries but the grid has 1"),
        (Regime(RandomFraction(0.001), 1, 0.1), (1, 256), 4, "observes nothing"),
        (Regime(Full(), 8, 0.1), (1, 16), 5, r"observes no frame .* horizon of 5"),
        (Regime(Full(), 2, 0.1, offset=4), (1, 16), 5, r"first observed frame would be t=6"),
        (Regime(Full(), 1, 0.1), (1, 16), 0, "horizon must be a positive integer"),
        (Regime(Full(), 1, 0.1), (16,), 3, "at least one spatial axis"),
    ],
)
def test_validate_errors(regime, frame, horizon, match):
    if match is None:
        regime.validate(frame, horizon)
        return
    with pytest.raises(ValueError, match=match):
        regime.validate(frame, horizon)
    with pytest.raises(ValueError, match=match):  # masks validates too
        regime.masks(frame, horizon, generator())


def test_random_regime_requires_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        preset("random", "ks").masks(KS_FRAME, 4)
    with pytest.raises(ValueError, match="Generator"):
        preset("sparse", "ks").observe(torch.zeros(1, 4, *KS_FRAME), None)  # type: ignore[arg-type]


def test_observe_rejects_badly_shaped_truth():
    with pytest.raises(ValueError, match=r"\(batch, horizon, channels, \*space\)"):
        preset("sparse", "ks").observe(torch.zeros(4, 256), generator())


# ----------------------------------------------------------------------------- masks


@FAST
@given(every=st.integers(1, 10), offset=st.integers(0, 10), extra=st.integers(0, 25))
def test_temporal_pattern(every, offset, extra):
    horizon = offset + every + extra
    regime = Regime(Stride(2), every=every, sigma=0.1, offset=offset)
    masks = regime.masks((1, 8), horizon)
    observed = masks.flatten(1).any(-1)
    expected = torch.tensor(
        [t > offset and (t - offset) % every == 0 for t in range(1, horizon + 1)]
    )
    assert torch.equal(observed, expected)
    assert torch.equal(regime.observed_frames(horizon), expected)
    assert not masks[~expected].any()  # unobserved frames are all False
    assert int(observed.sum()) == (horizon - offset) // every


@FAST
@given(
    steps=st.one_of(
        st.tuples(st.sampled_from([1, 2, 4, 8, 16, 32])),
        st.tuples(st.sampled_from([1, 2, 4, 8]), st.sampled_from([1, 2, 4, 8, 16])),
    ),
    every=st.integers(1, 3),
)
def test_strided_masks_observe_one_over_stride_per_axis(steps, every):
    frame = (2, 32) if len(steps) == 1 else (1, 16, 32)
    regime = Regime(Stride(steps), every=every, sigma=0.1)
    masks = regime.masks(frame, 6)
    for frame_mask in masks[regime.observed_frames(6)]:
        for axis, step in enumerate(steps):
            other = tuple(a + 1 for a in range(len(steps)) if a != axis)
            per_axis = frame_mask.any(dim=other) if other else frame_mask
            line = per_axis.any(0) if per_axis.ndim > 1 else per_axis
            assert line.float().mean().item() == 1 / step
        assert frame_mask.float().mean().item() == 1 / math.prod(steps)


@SLOWER
@given(
    fraction=st.floats(0.005, 1.0),
    every=st.integers(1, 4),
    offset=st.integers(0, 3),
    seed=st.integers(0, 2**31),
    two_dimensional=st.booleans(),
)
def test_random_masks_count_redraw_and_determinism(fraction, every, offset, seed, two_dimensional):
    frame = (1, 16, 16) if two_dimensional else (2, 256)
    n_points = 256
    count = round(fraction * n_points)
    assume(count >= 1)
    horizon = offset + 4 * every
    regime = Regime(RandomFraction(fraction), every=every, sigma=0.1, offset=offset)
    masks = regime.masks(frame, horizon, generator(seed))
    observed = regime.observed_frames(horizon)
    # exactly round(f n) locations on every observed frame, nothing elsewhere
    per_location = masks[:, 0]
    counts = per_location.flatten(1).sum(-1)
    assert torch.equal(counts, torch.where(observed, count, 0))
    assert torch.equal(masks, masks[:, :1].expand_as(masks))  # all channels alike
    # deterministic under a fixed generator
    assert torch.equal(masks, regime.masks(frame, horizon, generator(seed)))
    # redrawn each observed frame (unless every location is observed)
    if count < n_points:
        frames = per_location[observed].flatten(1)
        assert len({tuple(row.tolist()) for row in frames}) > 1 or frames.shape[0] == 1


def test_random_masks_differ_between_frames_and_generators():
    regime = preset("random", "ks")
    masks = regime.masks(KS_FRAME, 20, generator(1))
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 20
    assert not torch.equal(masks, regime.masks(KS_FRAME, 20, generator(2)))


def test_gappy_random_observes_the_same_points_as_its_every_step_twin():
    every_step = preset("random", "ks").masks(KS_FRAME, 24, generator(3))
    gappy = preset("random-gappy", "ks").masks(KS_FRAME, 24, generator(3))
    observed = preset("random-gappy", "ks").observed_frames(24)
    assert torch.equal(gappy[observed], every_step[observed])


def test_masks_do_not_use_the_global_rng():
    regime = preset("random", "kolmogorov")
    torch.manual_seed(0)
    first = regime.masks(KOLMOGOROV_FRAME, 3, generator(5))
    torch.manual_seed(1)
    assert torch.equal(first, regime.masks(KOLMOGOROV_FRAME, 3, generator(5)))


# ----------------------------------------------------------------------------- observe


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize("pde", PDE_NAMES)
def test_observe_shapes_zeros_and_noise(name, pde):
    frame = FRAMES[pde]
    assert frame == get_system(pde).frame_shape(None)
    regime = preset(name, pde)
    truth = torch.randn(3, 16, *frame, generator=generator(6), dtype=torch.float64)
    before = truth.clone()
    observation, mask = regime.observe(truth, generator(7))
    assert torch.equal(truth, before)  # no mutation of inputs
    assert observation.shape == truth.shape and observation.dtype == torch.float64
    assert mask.shape == (16, *frame) and mask.dtype == torch.bool
    assert torch.all(observation[:, ~mask] == 0)
    residual = (observation - truth)[:, mask]
    n = residual.numel()
    assert abs(residual.std().item() - regime.sigma) < 5 * regime.sigma / math.sqrt(2 * n)
    again = regime.observe(truth, generator(7))
    assert torch.equal(again[0], observation) and torch.equal(again[1], mask)


def test_observe_is_consistent_with_masks_for_the_same_generator():
    regime = preset("random-gappy", "ks")
    truth = torch.zeros(2, 16, *KS_FRAME)
    _, mask = regime.observe(truth, generator(8))
    assert torch.equal(mask, regime.masks(KS_FRAME, 16, generator(8)))


def test_str_shows_name_and_spec():
    assert str(preset("sparse", "ks")) == "sparse (stride=16, every=1, sigma=0.05)"
    assert str(Regime(Full(), 2, 0.5, offset=1)) == "full, every=2, sigma=0.5, offset=1"


def test_random_spelling_shuffle_example():
    # a concrete, readable instance of the order-invariance property
    items = ["stride=4x8", "every=3", "sigma=0.25", "offset=2"]
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(items)
        assert parse_regime(" , ".join(items)) == Regime(Stride((4, 8)), 3, 0.25, offset=2)
