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
# # 04 · Train an amortised controller, use it as a strategy and as an SMC proposal
#
# Guided strategies such as `dps` and `vc` pay for every assimilated frame at test time
# (gradients through the denoiser, or a whole optimisation). The controller of CA-ARDM
# (arXiv 2510.06637) moves that cost offline: a small network f_ψ is trained once, on
# rollouts of the frozen ARDM, to output the control of every sub-step,
#
#     u_s = τ_s f_ψ(z_s, σ_s, x0_hat, context, preview of the next Λ observations),
#
# so that KL_s = |u_s|² / (2τ_s²) = |f_ψ|² / 2. It minimises the control objective
#
#     J(ψ) = E[ Σ_j ℓ(y_j, x_j) + w Σ_{j,s} ℓ(y_j, x0_hat_{j,s}) ] + β Σ KL,
#     ℓ(y, x) = |M (y − x)|² / (2σ_y²),
#
# by back-propagating through the sampler (reparameterised noise). With β = 1 and w = 0,
# J is the KL divergence from the controlled path measure to the posterior path measure,
# minus the log-evidence: the optimal controller samples the posterior.
#
# We train one on the linear-Gaussian twin, where the exact posterior is known, in
# seconds; the same call trains the KS and Kolmogorov controllers
# (`ardm-infer train-controller --pde ks`, sizes in `controller_presets`). Then we use it
# (a) as the `controller` strategy and (b) as the proposal of a particle filter, whose
# exact path weights correct whatever the network gets wrong.
#
# Sizes: `ARDM_INFER_SMOKE=1` trains for 60 steps (CI, about 10 s); the default trains
# for 300 steps and averages SMC over more seeds, about two minutes on a laptop CPU.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ardm_infer
from ardm_infer.ardm import Schedule, analytic_ardm, sampler_twin
from ardm_infer.controller import (
    ControllerConfig,
    ControllerTrainConfig,
    load_controller,
    train_controller,
)
from ardm_infer.dynamics import LinearGaussianTwin, kalman_filter
from ardm_infer.strategies.controller import controller_proposal

SMOKE = os.environ.get("ARDM_INFER_SMOKE", "0") not in ("", "0")
OUT = Path(os.environ.get("ARDM_INFER_TUTORIAL_OUT", "results/tutorials")) / "04_train_controller"
OUT.mkdir(parents=True, exist_ok=True)

STEPS = 60 if SMOKE else 300
SMC_SEEDS = 3 if SMOKE else 10


def save(fig, name):
    """Save a figure under OUT and show it (a no-op under a non-interactive backend)."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.show()
    plt.close(fig)
    return path


# %% [markdown]
# ## 1. The process and the data
#
# The twin is x_{t+1} = A x_t + N(0, Q) on a ring of 8 points; its ARDM uses the exact
# Gaussian denoiser, so the only approximation left is the sampler's 8 sub-steps.
# `sampler_twin` is the linear-Gaussian model that this sampler draws from exactly: its
# Kalman filter is our oracle. Training data are stationary trajectories of the twin.

# %%
DIM = 8
SPEC = "stride=2, every=1, sigma=0.3"  # every other point, every frame
twin = LinearGaussianTwin.default(dim=DIM)
schedule = Schedule(substeps=8, sigma_max=50.0, sigma_min=0.01, sigma_out=0.001)
ardm = analytic_ardm(twin, schedule)
oracle = sampler_twin(twin, schedule)


def twin_frames(trajectories, horizon, seed):
    """Stationary frames (trajectories, 1 + horizon, 1, DIM), float64, and the generator."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(trajectories, DIM, generator=g, dtype=torch.float64)
    x0 = x0 @ torch.linalg.cholesky(twin.stationary_covariance()).T
    return torch.cat([x0[:, None], twin.trajectory(x0, horizon, g)], 1).unsqueeze(2), g


train_frames, _ = twin_frames(64, 20, seed=5)
print(f"training frames {tuple(train_frames.shape)}")

# %% [markdown]
# ## 2. Training
#
# `ControllerConfig` is the architecture (it must match the ARDM: spatial dims, channels,
# k context frames) and the preview length Λ; `ControllerTrainConfig` is the optimisation:
# windows of L = Λ frames rolled out from (chains of) training contexts, `batch_size`
# windows per Adam step, β and w of J, and the observation regime, here one fixed spec
# (the shipped controllers draw a regime per window from a `RegimeDistribution`, so that
# one network serves all regimes: the mask and σ_y are inputs). The last layer starts at
# zero: an untrained controller *is* the prior sampler, bit for bit.
#
# `train_controller` writes resumable checkpoints and, at the end, an artifact
# (`.safetensors` weights + a JSON card with both configs, the ARDM it was trained for,
# losses, history and sha256) into `out_dir`, and returns the trained network.

# %%
network_config = ControllerConfig(
    dims=1,
    channels=1,
    context_frames=1,
    preview=1,
    width=16,
    blocks=2,
    dilations=(1, 2),
    embedding_dim=32,
    fourier_features=16,
)
train_config = ControllerTrainConfig(
    steps=STEPS,
    batch_size=16,
    beta=1.0,
    arrival_weight=0.0,
    lr=3e-3,
    warmup_steps=10,
    val_every=max(STEPS // 6, 1),
    val_batches=2,
    checkpoint_every=0,
    regimes=SPEC,
)
run_dir = OUT / "controller-run"
trained = train_controller(
    ardm,
    train_frames.float(),
    network_config,
    train_config,
    run_dir,
    resume=False,  # start afresh when the notebook is re-run
    progress=False,
)
print(f"{trained['step']} steps in {trained['wall_seconds']:.1f} s -> {trained['weights_path']}")

# %% [markdown]
# The history: J and its two parts on held-out chains. Training trades terminal cost
# (misfit to the observations) for control energy; with β = 1 the optimum stops where one
# more nat of KL no longer buys a nat of likelihood.

# %%
history = [h for h in trained["history"] if h.get("val_objective") is not None]
step = [h["step"] for h in history]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(step, [h["val_objective"] for h in history], "o-", label="J (validation)")
ax.plot(step, [h["val_terminal"] for h in history], "s-", label="observation cost Σ ℓ(y, x)")
ax.plot(step, [h["val_kl"] for h in history], "^-", label="control energy Σ KL")
ax.set_xlabel("Adam step")
ax.set_ylabel("nats per window")
ax.legend(fontsize=8)
ax.set_title("controller training on the linear-Gaussian twin", fontsize=10)
save(fig, "training_history")

# %% [markdown]
# ## 3. The controller as a strategy
#
# The `controller` strategy takes the network itself, the path of an artifact, or `"ks"` /
# `"kolmogorov"` for the shipped ones. Loading an artifact verifies its sha256 against the
# card. We compare ensemble means with the oracle's Kalman mean on fresh trajectories; the
# cost columns show what amortisation buys: no gradient through the denoiser (`dps` needs
# one VJP per sub-step and member) and no per-instance optimisation (`vc`).

# %%
frames, g = twin_frames(12, 10, seed=11)
problem = ardm_infer.make_problem(frames, 1, SPEC, g)
kf = kalman_filter(
    oracle,
    problem.observation[:, :, 0],
    problem.mask[:, 0],
    problem.sigma,
    problem.context[:, -1, 0],
    torch.zeros(DIM, DIM, dtype=torch.float64),
)
network = load_controller(trained["weights_path"])  # the same weights, from disk
print("card:", {key: network.card[key] for key in ("name", "code_version")})

candidates = {
    "forecast": {},
    "controller": {"controller": network},
    "dps": {},
    "vc": {"iterations": 10, "window": 1},
    "enkf": {},
}
print(f"{'strategy':11s} {'RMS to Kalman mean':>19s} {'VJPs/frame':>11s} {'ms/frame':>9s}")
for name, options in candidates.items():
    res = ardm_infer.assimilate(
        ardm, problem, name, members=32, generator=torch.Generator().manual_seed(1), **options
    )
    distance = (res.ensemble.mean(0)[:, :, 0] - kf.mean).square().mean().sqrt()
    print(
        f"{name:11s} {float(distance):19.3f} {res.cost.vjps / problem.horizon:11.0f} "
        f"{res.cost.ms_per_frame:9.1f}"
    )

# %% [markdown]
# On the twin the "denoiser" is a matrix product, so the controller network is the most
# expensive part of a sub-step; with the KS U-Net the controller adds about 20 % to the
# forecast's cost per frame (see `controller_presets`), while DPS roughly triples it.
#
# ## 4. The controller as an SMC proposal
#
# A learned control is only approximately optimal. Sequential Monte Carlo makes any
# proposal exact: every particle is propagated by the controlled sampler and reweighted
# by p(y_t | x_t) times the path density ratio dP/dQ^u, which the kernel reports exactly
# (discrete Girsanov: log q_u − log p = Σ_s (u_s·ξ_s)/τ_s + |u_s|²/(2τ_s²)).
# `controller_proposal(network)` builds the proposal factory `(problem, t) -> Guidance`
# that `smc` expects.
#
# The better the proposal, the more even the weights: a higher effective sample size
# (ESS) and a lower-variance estimate of the log-evidence log p(y_{1:T}), which the Kalman
# filter of the oracle gives exactly.

# %%
proposals = {"bootstrap (prior)": {}, "controller": {"proposal": controller_proposal(network)}}
evidence, ess = {}, {}
for label, options in proposals.items():
    runs = [
        ardm_infer.assimilate(
            ardm, problem, "smc", members=32, generator=torch.Generator().manual_seed(s), **options
        )
        for s in range(SMC_SEEDS)
    ]
    evidence[label] = torch.stack([r.diagnostics["log_evidence"][-1] for r in runs])  # (seeds, N)
    ess[label] = torch.stack([torch.stack(r.diagnostics["ess"]) for r in runs])  # (seeds, T, N)
exact = kf.log_likelihood  # (N,)
for label in proposals:
    error = evidence[label] - exact
    print(
        f"{label:18s} log-evidence error: mean {float(error.mean()):7.2f}, "
        f"std over seeds {float(evidence[label].std(0).mean()):5.2f}; "
        f"mean ESS {float(ess[label].mean()):5.1f} of 32"
    )

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for label in proposals:
    axes[0].plot(
        range(1, problem.horizon + 1), ess[label].mean(dim=(0, 2)), "o-", ms=3, label=label
    )
    axes[1].plot(exact, (evidence[label] - exact).mean(0), "o", label=f"{label} (mean over seeds)")
axes[0].set_xlabel("frame")
axes[0].set_ylabel("ESS (of 32 particles)")
axes[0].legend(fontsize=8)
axes[1].axhline(0, color="k", lw=1)
axes[1].set_xlabel("exact log p(y_1:T) per trajectory (Kalman)")
axes[1].set_ylabel("SMC estimate − exact")
axes[1].legend(fontsize=8)
save(fig, "smc_proposals")

# %% [markdown]
# exp of the SMC log-evidence estimate is unbiased for the evidence, so the estimate of
# its logarithm is biased *low*, by roughly half its variance (exactly so for a log-normal
# estimator): the bootstrap filter's few surviving particles give a noisy, strongly
# underestimated log p(y). The controlled proposal puts the particles where the
# observations are, and the same 32 particles estimate it to within a few nats, the
# closer the better the controller is trained.
#
# ## Where to go from here
#
# * KS and Kolmogorov: `controller_presets("ks")` holds the `"default"` configuration of
#   the shipped controller (network, training regimes, Λ, β, w; its docstring explains
#   the choices) and a `"smoke"` one; `ardm-infer train-controller --pde ks` runs it with
#   checkpoints and resume. The shipped controllers are used in tutorial 01 with
#   `Config(controller="ks")`.
# * Tutorial 03 looks at the same quantities (KL, log-ratio, importance weights) from the
#   stochastic-optimal-control side.
