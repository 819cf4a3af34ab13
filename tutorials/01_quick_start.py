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
# # 01 · Quick start: one problem, every strategy, one table
#
# A pretrained autoregressive diffusion model (ARDM) of the Kuramoto–Sivashinsky (KS)
# equation is a *stochastic sequential process*: given the last k frames it samples the
# next one by running S denoising sub-steps from noise. Data assimilation (DA) steers that
# process towards sparse, noisy observations. `ardm_infer` hides every DA method behind one
# interface, so swapping methods is a change of one string, and every method is scored by
# the same code on the same truth and the same observations.
#
# This notebook
#
# 1. loads the shipped KS ARDM and picks a named observation regime,
# 2. builds one assimilation `Problem` from held-out test trajectories,
# 3. runs every registered strategy on it with `ardm_infer.assimilate`,
# 4. runs the same comparison through the one-call benchmark and reads its table and
#    figures.
#
# **Sizes.** With `ARDM_INFER_SMOKE=1` everything is tiny (a few frames) so that CI can
# execute the notebook in about a minute; the numbers are then *not* a comparison of the
# methods (see the remark at the end of section 3). Without it the notebook assimilates
# 100 frames, which takes 10–15 minutes on one laptop CPU core, most of it in `vc`.

# %%
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ardm_infer
from ardm_infer import bench, metrics
from ardm_infer.bench import figures, report
from ardm_infer.strategies import get_strategy

SMOKE = os.environ.get("ARDM_INFER_SMOKE", "0") not in ("", "0")
OUT = Path(os.environ.get("ARDM_INFER_TUTORIAL_OUT", "results/tutorials")) / "01_quick_start"
OUT.mkdir(parents=True, exist_ok=True)

HORIZON = 4 if SMOKE else 100  # frames assimilated after the context
TRAJECTORIES = 2 if SMOKE else 3  # held-out test trajectories in the benchmark
MEMBERS = 4 if SMOKE else 8  # ensemble members (particles for smc)


def save(fig, name):
    """Save a figure under OUT and show it (a no-op under a non-interactive backend)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.show()
    plt.close(fig)
    return path


# %% [markdown]
# ## 1. The model and the regime
#
# `load_ardm("ks")` returns an `ARDM` process in *normalised units* (the training data's
# per-channel mean removed and divided by its standard deviation), so an observation noise
# `sigma = 0.05` is 5 % of the field's standard deviation. The card stored beside the
# weights records how it was trained and which sampler was tuned for it.

# %%
ardm = ardm_infer.load_ardm("ks")
schedule = ardm.schedule
print(f"frame shape (channels, x) = {ardm.frame_shape}, context frames k = {ardm.context_length}")
print(f"parameters: {ardm.card['parameters']:,}; sub-steps per frame S = {schedule.substeps}")
print(f"sampler: {schedule}")

# %% [markdown]
# A *regime* is a spatial pattern × a temporal interval × a noise level. The six named
# presets are defined once for each PDE; any other regime is a spec string or is built
# from parts (tutorial 06). `sparse` observes every 16th of the 256 grid points at every
# frame with noise 0.05 (docs/protocol.md says why); spelling it out as a spec gives the
# same regime.

# %%
regime = ardm_infer.preset("sparse", "ks")
print(regime)
assert regime == ardm_infer.parse_regime("stride=16, every=1, sigma=0.05")

# %% [markdown]
# ## 2. A problem from held-out trajectories
#
# The data set the ARDM was trained on is regenerated from its config (or read from the
# cache). A `Problem` holds the truth (for scoring only: strategies never read it), the k
# given context frames, the lifted observations (zeros where unobserved) and their mask.
# `make_problem` draws the masks and the observation noise from the generator you pass:
# there is no hidden global random state anywhere in the library.

# %%
data = ardm_infer.load_dataset(ardm_infer.DataConfig.from_dict(ardm.card["data_config"]))
k = ardm.context_length
frames = data.normalise(data.test[:1, : k + HORIZON]).float()  # (1, k + H, 1, 256)
problem = ardm_infer.make_problem(frames, k, regime, torch.Generator().manual_seed(0), pde="ks")
print(f"truth {tuple(problem.truth.shape)}, context {tuple(problem.context.shape)}")
print(f"observed points per frame: {int(problem.mask_at(0)[0].sum())} of 256")

# %% [markdown]
# ## 3. Every strategy, one call each
#
# `assimilate(process, problem, strategy, members, generator, **options)` runs any
# registered strategy. Options are the fields of the strategy's frozen `Config`
# dataclass. Two strategies need a choice here:
#
# * `controller` needs a trained network; `"ks"` selects the controller shipped with the
#   library (`ardm_infer/checkpoints/controller-ks.safetensors`, trained offline on
#   rollouts of this ARDM; its JSON card records the regimes it was trained on; tutorial
#   04 trains one);
# * `vc` optimises the sub-step controls of every window of frames with L-BFGS at test
#   time; we use short windows and few iterations to keep it affordable.
#
# Every run gets a generator with the same seed: the samplers then draw the same noise
# (common random numbers), so differences between strategies are not sampling noise.

# %%
OPTIONS = {
    "controller": {"controller": "ks"},
    "vc": {"window": 2, "iterations": 2} if SMOKE else {"window": 4, "iterations": 3},
}
# forecast first (the reference), then the rest in registry order
STRATEGIES = sorted(ardm_infer.available_strategies(), key=lambda name: name != "forecast")
print("registered strategies:", STRATEGIES)
for name in STRATEGIES:
    print(f"  {name:10s} Config fields: {list(get_strategy(name).Config.__dataclass_fields__)}")

# %%
results = {}
for name in STRATEGIES:
    t0 = time.perf_counter()
    results[name] = ardm_infer.assimilate(
        ardm,
        problem,
        name,
        members=MEMBERS,
        generator=torch.Generator().manual_seed(1),
        **OPTIONS.get(name, {}),
    )
    print(f"{name:10s} done in {time.perf_counter() - t0:5.1f} s")

# %% [markdown]
# Each result holds the ensemble `(members, trajectories, horizon, channels, x)`, optional
# normalised log-weights (only `smc` has them), the cost (wall time, denoiser calls,
# vector–Jacobian products through the denoiser, peak memory) and strategy-specific
# diagnostics. Scoring is done by `ardm_infer.metrics`, identically for every strategy;
# weighted ensembles are scored with their weights.

# %%
truth = problem.truth.double()  # (1, H, 1, 256)
space = (2, 3)  # channel and grid dimensions of (trajectories, H, C, x)
rmse_time = {}
print(f"{'strategy':10s} {'RMSE':>8s} {'spread':>8s} {'ms/frame':>9s} {'denoiser calls':>15s}")
for name, res in results.items():
    ens = res.ensemble.double()
    weights = None
    if res.log_weights is not None:
        # per-frame weights (members, trajectories) -> broadcast over the frame
        w = torch.stack([lw.double() for lw in res.diagnostics["log_weights"]], 2).exp()
        weights = w[..., None, None].expand_as(ens)
    rmse_time[name] = metrics.rmse(truth, ens, weights=weights, dims=space)[0]
    spread = metrics.spread(ens, weights=weights).square().mean(dim=space).sqrt()[0]
    print(
        f"{name:10s} {float(rmse_time[name].mean()):8.4f} {float(spread.mean()):8.4f} "
        f"{res.cost.ms_per_frame:9.0f} {res.cost.denoiser_calls:15,d}"
    )

# %% [markdown]
# Hovmöller diagrams (space vertical, time horizontal) of the truth and of each
# strategy's error `ensemble mean − truth` on one shared colour scale; black dots mark the
# observed points.

# %%
t_axis = torch.arange(1, HORIZON + 1)
obs_t, obs_x = torch.nonzero(problem.mask[:, 0], as_tuple=True)
errors = {n: (r.ensemble.mean(0)[0, :, 0] - problem.truth[0, :, 0]) for n, r in results.items()}
emax = max(float(e.abs().max()) for e in errors.values()) or 1.0
fig, axes = plt.subplots(
    1 + len(errors),
    1,
    figsize=(9, 1.4 * (1 + len(errors))),
    sharex=True,
    sharey=True,
    layout="constrained",
)
extent = (0.5, HORIZON + 0.5, -0.5, 255.5)
axes[0].imshow(
    problem.truth[0, :, 0].T, aspect="auto", origin="lower", cmap="RdBu_r", extent=extent
)
axes[0].set_title("truth u (normalised)", loc="left", fontsize=9)
for ax, (name, err) in zip(axes[1:], errors.items(), strict=True):
    im = ax.imshow(
        err.T, aspect="auto", origin="lower", cmap="PuOr", vmin=-emax, vmax=emax, extent=extent
    )
    ax.scatter(t_axis[obs_t], obs_x, s=min(1.0, 200 / len(obs_t)), c="k", alpha=0.5)
    ax.set_title(f"{name}: error of the ensemble mean", loc="left", fontsize=9)
for ax in axes:
    ax.set_ylabel("x")
axes[-1].set_xlabel("frame after the context")
fig.colorbar(im, ax=axes, label="error of the mean (truth panel: qualitative)", shrink=0.6)
save(fig, "hovmoller_errors")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, r in rmse_time.items():
    ax.plot(t_axis, r, label=name, lw=1.5, color=figures.strategy_colors(STRATEGIES)[name])
ax.axhline(regime.sigma, color="k", ls=":", lw=1, label="observation noise σ_y")
ax.set_yscale("log")
ax.set_xlabel("frame after the context")
ax.set_ylabel("RMSE of the ensemble mean")
ax.legend(fontsize=8, ncol=2)
save(fig, "rmse_over_time")

# %% [markdown]
# **How to read this.** All strategies start from the *true* context, and the KS ARDM is
# accurate: the error of its unguided forecast grows roughly exponentially (the Lyapunov
# time of this KS configuration is 60 frames), from about 10⁻³ after one frame to a few
# 10⁻² after a hundred, up to the observation noise σ_y = 0.05. While the forecast
# error is far below σ_y, an observation carries less information than the forecast
# already has and no method can improve much on it: over the few frames of the smoke run
# all curves coincide. Over the 100 frames of the full run the EnKF separates first (from
# about frame 30 on this trajectory), the other methods by less or not at all. One
# trajectory is an anecdote; the benchmark below averages over several, with confidence
# intervals.

# %% [markdown]
# ## 4. The same comparison as one benchmark call
#
# `ardm_infer.bench.benchmark` runs a grid of (strategy × regime) *cells* on the first
# `trajectories` held-out test trajectories and returns an `xarray.Dataset` with per-frame
# metrics (RMSE, CRPS, spread, correlation, spectrum and physics errors, blow-up flags),
# rank histograms, the fields of trajectory 0 and the cost of every cell. Every strategy
# of a regime sees the same observations and the same sampler noise. With `out=` every
# finished cell is written to disk and `resume=True` continues an interrupted run;
# `workers=` or `executor="ray"` run cells in parallel.

# %%
ds = bench.benchmark(
    "ks",
    strategies=STRATEGIES,
    regimes=["sparse"],
    horizon=HORIZON,
    trajectories=TRAJECTORIES,
    members=MEMBERS,
    strategy_options=OPTIONS,
    progress=False,
)
print(dict(ds.sizes))
print(sorted(ds.data_vars))

# %% [markdown]
# `report.summary` reduces the dataset to one row per cell: time-averaged metrics with
# confidence half-widths over trajectories (Student-t), the spread–skill ratio (SSR, 1 when
# calibrated) and the cost relative to the forecast. A `*` marks a strategy whose error
# is significantly the lowest: paired intervals (same truth, same observations) against
# every other strategy lie below zero. With few trajectories or a short horizon there is
# usually no `*`: that is the honest answer.

# %%
table = report.summary(ds)
print(report.format_table(table))
table[["strategy", "rmse", "crps", "ssr", "ms_per_frame", "cost_ratio"]]

# %% [markdown]
# `figures.make_figures` draws every figure that applies to the dataset (Hovmöller,
# metrics over time, spread–skill, rank histograms, PIT, accuracy vs cost, physics);
# `report.write_report` writes the same as a markdown report.

# %%
paths = figures.make_figures(ds, OUT / "benchmark")
for p in paths:
    print(p)
image = plt.imread(OUT / "benchmark" / "accuracy_cost.png")
fig, ax = plt.subplots(figsize=(10, 4))
ax.imshow(image)
ax.set_axis_off()
plt.show()
plt.close(fig)

# %% [markdown]
# ## Where next
#
# * `02_ardm_process.py`: what happens inside one frame (sub-steps, x0_hat, the guidance
#   seam).
# * `03_soc_view.py`: guidance as stochastic optimal control: control energy, KL and
#   importance weights.
# * `04_train_controller.py`: train an amortised controller and use it as a strategy and
#   as an SMC proposal.
# * `05_custom_strategy.py`: add your own method and benchmark it against these.
# * `06_regimes_calibration.py`: custom irregular regimes, spread–skill and rank
#   histograms.
