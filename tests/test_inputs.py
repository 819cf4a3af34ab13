"""Bad and edge inputs at the API boundary: a clear error that names the argument, or a
finite result (issue 14: never a NaN ensemble, a raw torch traceback or a truncated value).

Every property draws one input to break (or to push to an edge) and asserts one of:

* ``ValueError`` / ``TypeError`` whose message names the argument (or option) that was
  broken;
* a finite result (a :class:`~ardm_infer.strategies.Problem` whose tensors are finite, an
  ensemble without NaN or inf);
* for ``assimilate`` only, a :class:`~ardm_infer.strategies.DivergenceError` that names the
  frame and the trajectories: the documented stop of a run whose ensemble goes non-finite
  (valid but extreme options may legitimately diverge; the run must stop, not return NaN).

Sizes are tiny (the linear-Gaussian twin with its analytic ARDM, d = 6, 4 sub-steps, 2
trajectories, 3 frames, <= 4 members) and ``max_examples`` is set per property; the number
of generated cases is ``CASES`` (printed by ``test_the_number_of_generated_cases``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ardm_infer.ardm import Schedule, analytic_ardm
from ardm_infer.controller import ControllerConfig, build_controller
from ardm_infer.dynamics import LinearGaussianTwin
from ardm_infer.observe import Regime, parse_regime
from ardm_infer.strategies import (
    DivergenceError,
    Problem,
    assimilate,
    available_strategies,
    config_fields,
    get_strategy,
    make_problem,
)

DIM, TRAJECTORIES, FRAMES = 6, 2, 4  # frames: 1 context + 3 horizon
SPEC = "stride=2, every=1, sigma=0.3"
EXAMPLES = {"make_problem": 80, "assimilate": 150, "config": 120, "parse_regime": 100}
CASES = sum(EXAMPLES.values())
SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}

TWIN = LinearGaussianTwin.default(dim=DIM)
ARDM = analytic_ardm(TWIN, Schedule(substeps=4, sigma_max=20.0, sigma_min=0.01, sigma_out=0.001))


def _controller():
    net = build_controller(
        ControllerConfig(dims=1, channels=1, context_frames=1, preview=2, width=8, groups=4)
    )
    with torch.no_grad():
        weight = net.out_conv.conv.weight
        weight.copy_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    return net.eval()


CONTROLLER = _controller()
#: the cheapest valid configuration of every strategy (the inputs under test change it)
SMALL = {
    "vc": {"iterations": 2, "window": 2},
    "controller": {"controller": CONTROLLER},
}


def twin_frames(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(TRAJECTORIES, DIM, generator=g, dtype=torch.float64)
    return torch.cat([x0[:, None], TWIN.trajectory(x0, FRAMES - 1, g)], 1).unsqueeze(2)


def names_it(error: Exception, *names: str) -> bool:
    message = str(error)
    return any(name in message for name in names)


def finite_problem(problem: Problem) -> bool:
    return all(
        bool(torch.isfinite(x).all()) for x in (problem.truth, problem.context, problem.observation)
    )


# --------------------------------------------------------------------------- make_problem

BAD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf])
INTEGERS_AND_JUNK = st.one_of(
    st.integers(-3, 6),
    st.sampled_from([2.5, 1.0, "1", "x", None, True, False, [1]]),
)


@st.composite
def make_problem_cases(draw):
    """(argument broken, kwargs of make_problem)."""
    frames = twin_frames(draw(st.integers(0, 3)))
    kwargs = {
        "frames": frames,
        "context_length": 1,
        "regime": SPEC,
        "generator": torch.Generator().manual_seed(1),
    }
    which = draw(
        st.sampled_from(
            ["frames-value", "frames-type", "frames-shape", "context_length", "horizon",
             "regime", "generator"]
        )
    )  # fmt: skip
    if which == "frames-value":
        bad = frames.clone()
        index = tuple(draw(st.integers(0, n - 1)) for n in bad.shape)
        bad[index] = draw(BAD_NUMBERS)
        kwargs["frames"] = bad
        return "frames", kwargs
    if which == "frames-type":
        kind = draw(st.sampled_from(["float16", "float32", "int64", "numpy", "list", "str"]))
        converted = {
            "float16": lambda: frames.half(),
            "float32": lambda: frames.float(),
            "int64": lambda: (10 * frames).round().long(),
            "numpy": lambda: frames.numpy(),
            "list": lambda: frames.tolist(),
            "str": lambda: "frames",
        }[kind]()
        kwargs["frames"] = converted
        return "frames", kwargs
    if which == "frames-shape":
        kwargs["frames"] = frames.reshape(draw(st.sampled_from([(-1,), (2, -1), (2, 4, -1)])))
        return "frames", kwargs
    if which == "horizon":
        kwargs["horizon"] = draw(INTEGERS_AND_JUNK)
        return "horizon", kwargs
    if which == "context_length":
        kwargs["context_length"] = draw(INTEGERS_AND_JUNK)
        return "context_length", kwargs
    if which == "regime":
        kwargs["regime"] = draw(
            st.sampled_from(
                ["", "dense", "stride=0, every=1, sigma=0.3", "stride=2, every=1, sigma=nan",
                 "stride=2, every=1, sigma=-1", "stride=2, every=9, sigma=0.3", "full",
                 "fraction=0.5, every=1, sigma=0.3", "full, every=2, sigma=1e-6", 3, None]
            )
        )  # fmt: skip
        return "regime", kwargs
    kwargs["generator"] = draw(st.sampled_from([None, 0, "g", np.random.default_rng(0)]))
    return "generator", kwargs


@settings(max_examples=EXAMPLES["make_problem"], **SETTINGS)
@given(case=make_problem_cases())
def test_make_problem_names_the_bad_argument_or_gives_a_finite_problem(case):
    which, kwargs = case
    aliases = {
        "frames": ("frames",),
        "context_length": ("context_length", "frames"),
        "horizon": ("horizon", "frames"),
        "regime": ("regime", "spec", "preset", "every", "horizon", "stride"),
        "generator": ("generator", "Generator"),
    }[which]
    try:
        problem = make_problem(**kwargs)
    except (ValueError, TypeError) as error:
        event(f"{which}: {type(error).__name__}")
        assert names_it(error, *aliases), (which, str(error))
        return
    event(f"{which}: finite problem")
    assert finite_problem(problem)
    assert problem.context.dtype in (torch.float32, torch.float64)
    assert problem.horizon >= 1 and problem.context.shape[1] >= 1


def test_make_problem_edges_by_hand():
    frames = twin_frames()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="context_length"):
        make_problem(frames, -1, SPEC, g)
    with pytest.raises(TypeError, match="context_length"):
        make_problem(frames, 1.5, SPEC, g)
    with pytest.raises(ValueError, match="frames"):
        make_problem(frames.clone().index_fill_(1, torch.tensor([0]), math.nan), 1, SPEC, g)
    half = make_problem(frames.half(), 1, SPEC, g)
    assert half.truth.dtype == torch.float32  # noise drawn at float32 precision at least
    from_numpy = make_problem(frames.numpy(), 1, SPEC, torch.Generator().manual_seed(0))
    reference = make_problem(frames, 1, SPEC, torch.Generator().manual_seed(0))
    assert torch.equal(from_numpy.observation, reference.observation)


# --------------------------------------------------------------------------- Problem inputs


def test_problem_checks_observations_where_observed_and_accepts_a_float_mask():
    problem = make_problem(twin_frames(), 1, SPEC, torch.Generator().manual_seed(0))
    observed = problem.observation.clone()
    observed[0, 1, 0, 0] = math.nan  # stride 2: point 0 is observed
    with pytest.raises(ValueError, match="observation"):
        dataclasses.replace(problem, observation=observed)
    unobserved = problem.observation.clone()
    unobserved[0, 1, 0, 1] = math.nan  # point 1 is not: ignored (set to 0)
    ignored = dataclasses.replace(problem, observation=unobserved)
    assert torch.equal(ignored.observation, problem.observation)
    as_float = dataclasses.replace(problem, mask=problem.mask.double())
    assert as_float.mask.dtype == torch.bool and torch.equal(as_float.mask, problem.mask)
    with pytest.raises(ValueError, match="mask"):
        dataclasses.replace(problem, mask=0.5 * problem.mask.double())
    for sigma, error in ((0.0, ValueError), (math.nan, ValueError), ("0.3", TypeError)):
        with pytest.raises(error, match="sigma"):
            problem.with_sigma(sigma)
    context = problem.context.clone()
    context[1, 0, 0, 3] = math.inf
    with pytest.raises(ValueError, match="context"):
        dataclasses.replace(problem, context=context)


# --------------------------------------------------------------------------- assimilate

#: values tried for any option: valid, edge and invalid (each Config validates its own)
VALID_NUMBERS = [0, 1, 2, 3, 0.0, 0.1, 0.5, 1.0, 1.5, 1e-3, 10.0]
INVALID_VALUES = [-1.0, math.nan, math.inf, -math.inf, 2.5, "2", None, True, [1]]
NAMES = ["etkf", "perturbed", "adam", "lbfgs", "chung", "score", "ks", "x"]
OPTION_VALUES = st.sampled_from(VALID_NUMBERS + INVALID_VALUES + NAMES)


def option_values(field):
    """Values for one option: mostly of its type (valid or edge), sometimes anything."""
    if field.type.startswith("str"):
        typed = st.sampled_from(NAMES)
    elif field.type.startswith(("float", "int")):
        typed = st.sampled_from([*VALID_NUMBERS, -1.0, math.nan, math.inf, 2.5])
    else:
        typed = OPTION_VALUES
    return st.one_of(typed, typed, OPTION_VALUES)


@st.composite
def assimilate_cases(draw):
    """(strategy, argument broken, kwargs of assimilate)."""
    name = draw(st.sampled_from(available_strategies()))
    frames = twin_frames(draw(st.integers(0, 3)))
    kwargs = {
        "process": ARDM,
        "problem": make_problem(frames, 1, SPEC, torch.Generator().manual_seed(1)),
        "strategy": name,
        "members": draw(st.sampled_from([2, 3, 4])),
        "generator": torch.Generator().manual_seed(draw(st.integers(0, 9))),
        **SMALL.get(name, {}),
    }
    which = draw(st.sampled_from(["option", "option", "members", "problem", "generator"]))
    if which == "option":
        fields = [f.name for f in config_fields(get_strategy(name).Config)]
        if not fields:
            which = "members"
        else:
            field = draw(st.sampled_from(fields))
            declared = next(f for f in config_fields(get_strategy(name).Config) if f.name == field)
            kwargs[field] = draw(option_values(declared))
            return name, field, kwargs
    if which == "members":
        kwargs["members"] = draw(st.sampled_from([0, -1, 1, 2.5, "4", None, True, 2.0]))
        return name, "members", kwargs
    if which == "problem":
        kind = draw(st.sampled_from(["float32", "sigma-small", "sigma-large", "float-mask"]))
        problem = kwargs["problem"]
        if kind == "float32":
            problem = problem.to(torch.float32)
        elif kind == "sigma-small":
            problem = problem.with_sigma(1e-3)
        elif kind == "sigma-large":
            problem = problem.with_sigma(1e6)
        else:
            problem = dataclasses.replace(problem, mask=problem.mask.double())
        kwargs["problem"] = problem
        return name, "problem", kwargs
    kwargs["generator"] = draw(st.sampled_from([None, 0, "g"]))
    return name, "generator", kwargs


@settings(max_examples=EXAMPLES["assimilate"], **SETTINGS)
@given(case=assimilate_cases())
def test_assimilate_names_the_bad_argument_or_gives_a_finite_ensemble(case):
    name, which, kwargs = case
    try:
        result = assimilate(**kwargs)
    except (ValueError, TypeError, FileNotFoundError) as error:
        event(f"{type(error).__name__}")
        if isinstance(error, FileNotFoundError):  # a string is a path to an artifact
            assert which == "controller", str(error)
        names = (which, "Generator") if which == "generator" else (which,)
        assert names_it(error, *names), (name, which, str(error))
        return
    except DivergenceError as error:
        event("DivergenceError")
        assert error.strategy == name and "frame t=" in str(error), str(error)
        assert error.trajectories, str(error)
        return
    event("finite ensemble")
    members = kwargs["members"]
    assert result.ensemble.shape == (members, TRAJECTORIES, FRAMES - 1, 1, DIM)
    assert torch.isfinite(result.ensemble).all(), (name, which)


def test_assimilate_edges_by_hand():
    problem = make_problem(twin_frames(), 1, SPEC, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    for members, error in ((2.5, TypeError), ("4", TypeError), (0, ValueError)):
        with pytest.raises(error, match="members"):
            assimilate(ARDM, problem, "forecast", members=members, generator=g)
    with pytest.raises(TypeError, match="scale"):
        assimilate(ARDM, problem, "dps", members=2, generator=g, scale="2")
    with pytest.raises(TypeError, match="window"):
        assimilate(ARDM, problem, "vc", members=2, generator=g, window=2.5)
    with pytest.raises(TypeError, match="iterations"):
        assimilate(ARDM, problem, "vc", members=2, generator=g, iterations=1.5)
    with pytest.raises(ValueError, match="beta"):
        assimilate(ARDM, problem, "vc", members=2, generator=g, beta=math.nan)
    with pytest.raises(ValueError, match="arrival_weight"):
        assimilate(ARDM, problem, "vc", members=2, generator=g, arrival_weight=math.inf)
    with pytest.raises(ValueError, match="scale"):
        assimilate(ARDM, problem, "dps", members=2, generator=g, scale=math.nan)
    # float64 problems run in a float32 model's dtype
    float_model = analytic_ardm(TWIN, ARDM.schedule)
    float_model.denoiser = _Float32Denoiser(float_model.denoiser)
    result = assimilate(float_model, problem, "forecast", members=2, generator=g)
    assert result.ensemble.dtype == torch.float32


class _Float32Denoiser(torch.nn.Module):
    """The analytic denoiser behind a float32 parameter: a stand-in for a learned net."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float32))

    def forward(self, z, sigma, context):
        assert z.dtype == torch.float32 and context.dtype == torch.float32
        return self.inner(z, sigma, context) + 0 * self.anchor


def test_a_diverging_run_stops_with_the_frame_the_trajectories_and_a_hint():
    problem = make_problem(twin_frames(), 1, SPEC, torch.Generator().manual_seed(1))
    with pytest.raises(DivergenceError, match=r"frame t=0 for trajectories \[0, 1\].*scale"):
        assimilate(
            ARDM,
            problem.with_sigma(1e-150),
            "dps",
            members=2,
            generator=torch.Generator().manual_seed(0),
            max_step=None,
        )


# --------------------------------------------------------------------------- every Config


@st.composite
def config_cases(draw):
    name = draw(st.sampled_from([n for n in available_strategies() if n != "forecast"]))
    fields = config_fields(get_strategy(name).Config)
    field = draw(st.sampled_from(fields))
    return name, field, draw(option_values(field))


@settings(max_examples=EXAMPLES["config"], **SETTINGS)
@given(case=config_cases())
def test_every_config_validates_every_field(case):
    name, field, value = case
    config_class = get_strategy(name).Config
    try:
        config = config_class(**{field.name: value})
    except (ValueError, TypeError) as error:
        event(type(error).__name__)
        assert f"Config.{field.name}" in str(error), str(error)
        return
    event("valid Config")
    stored = getattr(config, field.name)
    if field.type.startswith("float"):
        assert stored is None or (isinstance(stored, float) and math.isfinite(stored))
    if field.type.startswith("int"):
        optional_none = stored is None and field.type.endswith("or None")
        assert optional_none or (isinstance(stored, int) and not isinstance(stored, bool))
    if field.type.startswith("bool"):
        assert isinstance(stored, bool)


@pytest.mark.parametrize("name", available_strategies())
def test_every_config_field_is_declared(name):
    """Type, range and doc of every option live in its field metadata (config_fields)."""
    config_class = get_strategy(name).Config
    for field in dataclasses.fields(config_class):
        declared = next(f for f in config_fields(config_class) if f.name == field.name)
        assert declared.doc, f"{name}.Config.{field.name} has no declaration (use option())"
        assert declared.type and declared.range
        assert declared.name in (config_class.__doc__ or "")  # documented by register
    config_class()  # the defaults are valid (controller: None until a network is given)


# --------------------------------------------------------------------------- parse_regime

VALID_SPATIAL = st.sampled_from(
    ["stride=2", "stride=4", "stride=2x2", "fraction=0.5", "fraction=2%", "full"]
)
SPATIAL = st.one_of(
    VALID_SPATIAL,
    VALID_SPATIAL,
    st.sampled_from(["stride=0", "stride=-1", "stride=", "fraction=0", "fraction=1.5", "dense",
                     "sparse", "random-gappy"]),
)  # fmt: skip
VALID_EVERY = st.sampled_from(["every=1", "every=3"])
EVERY = st.one_of(VALID_EVERY, VALID_EVERY, st.sampled_from(["every=0", "every=1.5", "every=x"]))
VALID_SIGMA = st.sampled_from(["sigma=0.1", "sigma=1e-6", "sigma=2"])
SIGMA = st.one_of(
    VALID_SIGMA,
    VALID_SIGMA,
    st.sampled_from(["sigma=0", "sigma=-1", "sigma=nan", "sigma=inf", "sigma="]),
)
EXTRA = st.sampled_from(["offset=1", "offset=-1", "bogus=1", "=", "", "sigma=0.2", "full"])


@st.composite
def regime_specs(draw):
    """Mostly well-formed specs with one or two things wrong (or nothing), in any order."""
    items = [draw(part) for part in (SPATIAL, EVERY, SIGMA)]
    items = [item for item in items if draw(st.integers(0, 7)) < 7]  # sometimes drop one
    if draw(st.integers(0, 3)) == 3:
        items.append(draw(EXTRA))
    order = draw(st.permutations(items))
    return ", ".join(order)


@settings(max_examples=EXAMPLES["parse_regime"], **SETTINGS)
@given(spec=regime_specs(), pde=st.sampled_from([None, "ks", "ks", "kolmogorov", "x"]))
def test_parse_regime_names_the_spec_or_gives_a_valid_regime(spec, pde):
    try:
        regime = parse_regime(spec, pde=pde)
    except (ValueError, TypeError) as error:
        event(type(error).__name__)
        assert names_it(error, "regime", "pde"), str(error)
        return
    event("valid Regime")
    assert isinstance(regime, Regime)
    assert math.isfinite(regime.sigma) and regime.sigma > 0 and regime.every >= 1
    assert parse_regime(regime.spec()) == regime


def test_parse_regime_refuses_non_strings():
    for spec in (3, None, ["dense"]):
        with pytest.raises(TypeError, match="regime spec"):
            parse_regime(spec)


def test_the_number_of_generated_cases():
    print(f"generated cases: {CASES} ({EXAMPLES})")
    assert CASES == 450
