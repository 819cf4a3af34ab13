# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · A new strategy: ensemble 3D-Var, from interface to benchmark
#
# Adding a data-assimilation method to `ardm_infer` means writing one class against the
# strategy interface and registering it. After that it runs through `assimilate`, the
# benchmark, the report and the figures exactly like the built-in strategies, on the same
# truth and observations. This notebook writes a 3D-Var analysis, checks it against the
# contract the built-in strategies are tested with, compares it with the exact Kalman
# filter on the linear-Gaussian twin, and benchmarks it on Kuramoto–Sivashinsky (KS).
#
# Sizes: `ARDM_INFER_SMOKE=1` runs tiny problems (CI); the default benchmark assimilates
# 80 KS frames, about 5 minutes on one laptop CPU core.

# %%
import dataclasses
import inspect
import math
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ardm_infer
from ardm_infer import bench
from ardm_infer.ardm import analytic_ardm, sampler_twin
from ardm_infer.bench import figures, report
from ardm_infer.dynamics import LinearGaussianTwin, kalman_filter
from ardm_infer.strategies import (
    Strategy,
    StrategyState,
    available_strategies,
    config_fields,
    get_strategy,
    option,
    propagate,
    register,
    unregister,
    validate_config,
)

SMOKE = os.environ.get("ARDM_INFER_SMOKE", "0") not in ("", "0")
OUT = Path(os.environ.get("ARDM_INFER_TUTORIAL_OUT", "results/tutorials")) / "05_custom_strategy"
OUT.mkdir(parents=True, exist_ok=True)


def save(fig, name):
    """Save a figure under OUT and show it (a no-op under a non-interactive backend)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.show()
    plt.close(fig)
    return path


# %% [markdown]
# ## 1. The interface
#
# A strategy is *data in, ensemble out*:
#
# * `name` (the registry key) and `Config`, a **frozen** dataclass of its options;
# * `lookahead(config) -> int`: how many frames of *future* observations `step` reads
#   (0 for a filter, which reads frame t's observation only);
# * `init(process, problem, members, config, generator) -> StrategyState`: the state holds
#   the window of the last k frames of every member, `(members, trajectories, k, C, *space)`;
# * `step(process, problem, state, t, config, generator) -> StrategyState`: produce frame t
#   (0-based in the horizon) of every member, assimilating its observation if any, and
#   return `state.push(frame)`: a *new* state with the frame appended and the window slid.
#
# The rules that make strategies comparable are enforced by `assimilate`: all randomness
# comes from `generator`; `problem` is a view that holds the context and the observations
# of frames up to t + lookahead (`problem.observed(t)`, `problem.observation_at(t)`,
# `problem.mask_at(t)`, `problem.frame(t)` for the likelihood) and raises on the truth or
# on anything later; the state is an immutable value passed along, never hidden in the
# object (`state.record(key=value)` appends a per-frame diagnostic); the process is
# advanced only through `propagate(process, window, generator, guidance=None, frame=t)`,
# which runs the ARDM's sampler (with an optional guidance) or a numerical solver, and
# returns the new frame with its KL and log-density ratio. `assimilate` times the run and
# counts denoiser calls.
#
# ## 2. The method: 3D-Var with perturbed observations
#
# 3D-Var analyses each new frame with a *prescribed* background covariance B instead of
# the flow-dependent sample covariance of an EnKF. With H selecting the observed points
# and R = σ_y² I, every member i is updated with its own perturbed observation (so that the
# analysis ensemble keeps a spread consistent with the gain):
#
#     x_a^i = x_f^i + B Hᵀ (H B Hᵀ + R)⁻¹ (y + ε^i − H x_f^i),     ε^i ~ N(0, R).
#
# In the library's lifted convention (observations on the full grid, a mask M), the same
# update is x_a = x_f + B S⁻¹ M(y + ε − x_f) with S = M B M + diag(σ_y² on observed points,
# 1 elsewhere): S is block-diagonal with an identity block on the unobserved points, so
# nothing needs gathering and masks may differ between trajectories and frames.
#
# B = D C D with a periodic Gaussian correlation C of length L grid points and
# standard deviations D. Classical 3D-Var fixes D (`background_std`, one number). An
# ARDM started from the true context has forecast errors that grow from 10⁻³ to 10⁻¹ over
# a hundred frames, which no fixed number matches; with `background_std=None` the
# variances are taken from the forecast ensemble itself (flow-dependent variances, static
# correlations, a "hybrid" in the DA literature's sense). The method needs a 1-D grid
# (frames `(1, n)`): the dense n × n covariance would be too large in 2-D.


# %%
def periodic_gaussian_correlation(n, length_scale, dtype, device):
    """Wrapped Gaussian correlation on a ring of n points, (n, n).

    C_ij ∝ Σ_k exp(−(i − j + k n)² / (2 L²)) over the periodic images k, normalised to a
    unit diagonal. A Gaussian of the *periodic distance* alone is not positive
    semi-definite once L is a sizeable fraction of n; the sum over images is.
    """
    i = torch.arange(n, dtype=dtype, device=device)
    images = torch.arange(-3, 4, dtype=dtype, device=device) * n
    offset = i[:, None, None] - i[None, :, None] + images
    c = torch.exp(-0.5 * (offset / length_scale) ** 2).sum(-1)
    return c / c.diagonal()[0]


def var3d_analysis(forecast, observation, mask, sigma, config, generator):
    """3D-Var analysis of every member.

    Args:
        forecast: (members, trajectories, 1, n).
        observation: lifted, (trajectories, 1, n).
        mask: bool, (trajectories, 1, n).
        sigma: observation noise std.
        config: the strategy's Config.
        generator: draws the observation perturbations.

    Returns:
        The analysis, (members, trajectories, 1, n).
    """
    members, trajectories, _, n = forecast.shape
    x = forecast.reshape(members, trajectories, n)
    y = observation.reshape(trajectories, n).to(x)
    m = mask.reshape(trajectories, n).to(x)
    correlation = periodic_gaussian_correlation(n, config.length_scale, x.dtype, x.device)
    if config.background_std is None:
        std = config.inflation * x.std(dim=0)  # (trajectories, n), from the ensemble
    else:
        std = x.new_full((trajectories, n), config.background_std)
    b = std[:, :, None] * correlation * std[:, None, :]  # (trajectories, n, n)
    s = b * (m[:, :, None] * m[:, None, :]) + torch.diag_embed(sigma**2 * m + (1 - m))
    if config.perturb:
        y = y + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    innovation = m * (y - x)  # (members, trajectories, n)
    weights = torch.cholesky_solve(innovation.permute(1, 2, 0), torch.linalg.cholesky(s))
    increment = torch.einsum("tij,tjm->mti", b, weights)
    return (x + increment).reshape(forecast.shape)


# %% [markdown]
# The strategy around it: forecast every member one frame with the process, analyse if
# the frame is observed, push. Each option is declared once with `option(default, doc,
# range...)`: `validate_config` then refuses a wrong type or an out-of-range value with an
# error naming the option, and `config_fields` lists the declarations (the CLI prints
# them). `unregister` first, so that re-running the notebook does not trip over the
# registry's refusal to register a name twice.

# %%
unregister("3dvar")


@register
class ThreeDVar:
    """Ensemble 3D-Var: a Gaussian-correlation background covariance and perturbed
    observations; variances fixed or from the forecast ensemble."""

    name = "3dvar"

    @dataclass(frozen=True)
    class Config:
        """Options of ensemble 3D-Var."""

        background_std: float | None = option(
            None,
            "Fixed background standard deviation, or None to take it from the forecast "
            "ensemble at every point and frame.",
            low=0.0,
            low_open=True,
            optional=True,
        )
        length_scale: float = option(
            4.0, "Correlation length L of B, in grid points.", low=0.0, low_open=True
        )
        inflation: float = option(
            1.0,
            "Factor on the ensemble standard deviations (background_std=None).",
            low=0.0,
            low_open=True,
        )
        perturb: bool = option(
            True,
            "Perturb the observations of every member (else all members get the same gain "
            "applied to the same innovation, and the analysis spread collapses).",
            kind=bool,
        )

        def __post_init__(self):
            validate_config(self)  # type, finiteness and range of every option

    def lookahead(self, config):
        return 0  # a filter: frame t's observation only

    def init(self, process, problem, members, config, generator):
        if len(problem.frame_shape) != 2 or problem.frame_shape[0] != 1:
            raise ValueError(f"3dvar needs 1-D frames (1, n), got {problem.frame_shape}")
        if not problem.is_mask:
            raise ValueError("3dvar needs a mask observation operator (lifted observations)")
        k = process.context_length
        context = problem.context[:, -k:]  # (trajectories, k, 1, n)
        window = context.unsqueeze(0).expand(members, *context.shape).clone()
        return StrategyState(window=window, diagnostics={"innovation_rms": ()})

    def step(self, process, problem, state, t, config, generator):
        with torch.no_grad():
            frame = propagate(process, state.window, generator, frame=t).frame
            if problem.observed(t):
                y, mask = problem.observation_at(t), problem.mask_at(t)
                residual = (y - frame.mean(0))[mask]
                state = state.record(innovation_rms=float(residual.square().mean().sqrt()))
                frame = var3d_analysis(frame, y, mask, problem.sigma, config, generator)
        return state.push(frame)


print(available_strategies())
for declared in config_fields(ThreeDVar.Config):
    print(f"  {declared.name}: {declared.type}, {declared.range}, default {declared.default!r}")

# %% [markdown]
# ## 3. Conformance: the contract every registered strategy is tested with
#
# The library's test suite runs the same checks over the whole registry; here they are as
# assertions, on the linear-Gaussian twin with its analytic (exact) denoiser, which makes
# every check fast: the right protocol and signatures, a frozen Config, the output shape,
# determinism under a fixed generator (and sensitivity to it), finite values, no mutation
# of the problem, a cost record, and the limit σ_y → ∞ in which any strategy must
# reproduce the unguided forecast in distribution.

# %%
DIM = 32
twin = LinearGaussianTwin.default(dim=DIM)
twin_ardm = analytic_ardm(twin)


def twin_problem(trajectories, horizon, spec, seed):
    """A problem on the twin: frames (trajectories, 1 + horizon, 1, DIM), float64."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, DIM, generator=g, dtype=torch.float64)
    x0 = x0 @ torch.linalg.cholesky(twin.stationary_covariance()).T
    frames = torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2)
    return ardm_infer.make_problem(frames, 1, spec, g)


strategy = get_strategy("3dvar")
assert isinstance(strategy, Strategy)
reference = get_strategy("forecast")
for method in ("lookahead", "init", "step"):
    mine = list(inspect.signature(getattr(strategy, method)).parameters)
    assert mine == list(inspect.signature(getattr(reference, method)).parameters), method
try:
    strategy.Config().length_scale = 1.0
    raise AssertionError("Config must be frozen")
except dataclasses.FrozenInstanceError:
    pass

problem = twin_problem(3, 6, "stride=4, every=1, sigma=0.3", seed=0)
before = {f: getattr(problem, f).clone() for f in ("truth", "context", "observation", "mask")}
runs = [
    ardm_infer.assimilate(
        twin_ardm, problem, "3dvar", members=6, generator=torch.Generator().manual_seed(seed)
    )
    for seed in (1, 1, 2)
]
assert runs[0].ensemble.shape == (6, problem.trajectories, problem.horizon, 1, DIM)
assert torch.equal(runs[0].ensemble, runs[1].ensemble), "not deterministic under a generator"
assert not torch.equal(runs[0].ensemble, runs[2].ensemble), "ignores the generator"
assert torch.isfinite(runs[0].ensemble).all()
for f, value in before.items():
    assert torch.equal(getattr(problem, f), value), f"mutated problem.{f}"
cost = runs[0].cost
assert cost.wall_seconds > 0 and cost.frames == problem.horizon
assert cost.denoiser_calls > 0 and cost.peak_memory_bytes > 0
print("conformance: ok;", cost)

# %% [markdown]
# The σ_y → ∞ limit, with a tolerance from the Monte-Carlo error: with N members per run
# the difference of two ensemble means has standard error √((v₁ + v₂)/N), and the
# difference of two variances about (v₁ + v₂)√(2/(N − 1)). Five standard errors at every
# (trajectory, frame, point) keeps the false-alarm rate of this many comparisons small.

# %%
members = 100 if SMOKE else 400
vague = problem.with_sigma(1e8)
ens_a = ardm_infer.assimilate(
    twin_ardm, vague, "3dvar", members=members, generator=torch.Generator().manual_seed(3)
).ensemble[..., 0, :]
ens_b = ardm_infer.assimilate(
    twin_ardm, vague, "forecast", members=members, generator=torch.Generator().manual_seed(4)
).ensemble[..., 0, :]
(m1, v1), (m2, v2) = (ens_a.mean(0), ens_a.var(0)), (ens_b.mean(0), ens_b.var(0))
assert ((m1 - m2).abs() < 5 * ((v1 + v2) / members).sqrt()).all()
assert ((v1 - v2).abs() < 5 * (v1 + v2) * math.sqrt(2 / (members - 1))).all()
print("σ_y → ∞ reproduces the forecast: ok")

# %% [markdown]
# ## 4. Against the exact answer
#
# On the twin the filtering posterior is Gaussian and the Kalman filter computes it
# exactly. The analytic ARDM samples the twin's transition only up to the discretisation
# of its S sub-steps; `sampler_twin` is the linear-Gaussian model it samples *exactly*, so
# its Kalman filter is the oracle free of that error. The distance of an ensemble mean to
# the oracle's mean measures the method, not the luck of the truth. 3D-Var has one
# structural knob, the correlation length L of B; the oracle lets us tune it honestly.

# %%
horizon = 8 if SMOKE else 30
members = 32 if SMOKE else 128
problem = twin_problem(8, horizon, "stride=4, every=1, sigma=0.3", seed=10)
oracle = sampler_twin(twin, twin_ardm.schedule)
kf = kalman_filter(
    oracle,
    problem.observation[:, :, 0],
    problem.mask[:, 0],
    problem.sigma,
    problem.context[:, -1, 0],
    torch.zeros(DIM, DIM, dtype=torch.float64),
)


def distance_to_kalman(name, **options):
    """RMS over trajectories, frames and points of (ensemble mean − Kalman mean)."""
    res = ardm_infer.assimilate(
        twin_ardm,
        problem,
        name,
        members=members,
        generator=torch.Generator().manual_seed(5),
        **options,
    )
    return float((res.ensemble.mean(0)[:, :, 0] - kf.mean).square().mean().sqrt())


lengths = [0.5, 1.0, 2.0, 4.0, 8.0]
sweep = {
    "3dvar, ensemble variances": [distance_to_kalman("3dvar", length_scale=L) for L in lengths],
    "3dvar, fixed std 0.6": [
        distance_to_kalman("3dvar", length_scale=L, background_std=0.6) for L in lengths
    ],
}
baselines = {name: distance_to_kalman(name) for name in ("forecast", "enkf")}

fig, ax = plt.subplots(figsize=(6, 3.5))
for label, values in sweep.items():
    ax.plot(lengths, values, "o-", label=label)
for (name, value), style in zip(baselines.items(), (":", "--"), strict=True):
    ax.axhline(value, color="k", ls=style, lw=1, label=f"{name} ({members} members)")
ax.set_xscale("log", base=2)
ax.set_xlabel("correlation length L of B (grid points)")
ax.set_ylabel("RMS(ensemble mean − Kalman mean)")
ax.set_title("linear-Gaussian twin: distance to the exact posterior mean", fontsize=10)
ax.legend(fontsize=8)
save(fig, "twin_distance_to_kalman")

# %% [markdown]
# The twin's forecast errors are correlated over about one grid point, and 3D-Var with
# L ≈ 1 comes close to the exact filter (closer than an EnKF of the same size, whose
# sample covariance carries Monte-Carlo noise); longer correlations spread each
# observation over points it says nothing about, and the analysis degrades towards (or
# beyond) the unguided forecast. The right L is a property of the model's errors, which is
# why it has to be tuned per PDE: for KS we use L = 4 grid points (one length unit).

# %% [markdown]
# ## 5. Benchmark on Kuramoto–Sivashinsky
#
# The registered name is all the benchmark needs. A `(label, name, config)` tuple adds a
# second column of the same strategy with other options. (The cells run in this process;
# with `workers > 1` or Ray the class must live in an importable module, not a notebook,
# so that the workers can find it.) `vc` is left out to keep the run short: its L-BFGS
# windows cost 10–20 forecasts per frame.

# %%
others = [s for s in available_strategies() if s not in ("3dvar", "vc")]
columns = [*others, "3dvar", ("3dvar-fixed", "3dvar", ThreeDVar.Config(background_std=0.02))]
ds = bench.benchmark(
    "ks",
    strategies=columns,
    regimes=["sparse"],
    horizon=4 if SMOKE else 80,
    trajectories=2 if SMOKE else 3,
    members=4 if SMOKE else 8,
    progress=False,
)
print(report.format_table(report.summary(ds)))
paths = [
    figures.plot_metric_time(ds, OUT, "rmse"),
    figures.plot_accuracy_cost(ds, OUT),
    figures.plot_spread_skill(ds, OUT),
]
print(*paths, sep="\n")

# %% [markdown]
# What the full run shows (80 frames and 3 trajectories, so the intervals are wide):
# every method tracks the forecast for tens of frames, while the forecast error is far
# below σ_y; then the EnKF pulls ahead, halving the error by frame 80, because its
# flow-dependent covariance spreads each observation along the directions in which the
# ensemble is actually uncertain. Fixed-variance 3D-Var does worst: `background_std=0.02`
# trusts the observations more than the early forecast deserves and injects their noise,
# which the ARDM then propagates. With variances from the ensemble, 3D-Var no longer
# hurts, but it does not help either: the gain follows the error growth, yet a prescribed
# Gaussian correlation is a poor stand-in for the error structure of KS. The classic
# contrast between static and flow-dependent background covariances, reproduced with a
# strategy of a few dozen lines and one benchmark call.
#
# Finally, leave the registry as we found it:

# %%
unregister("3dvar")
assert "3dvar" not in available_strategies()
