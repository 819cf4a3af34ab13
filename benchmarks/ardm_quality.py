"""Quality report of a shipped ARDM against its numerical solver (held-out test trajectories).

    python benchmarks/ardm_quality.py --pde ks|kolmogorov [--out DIR] [--quick]

Unguided ensembles start from the true context frames of the test split:

- stability: ``--rollouts`` rollouts (default 32) of the long horizon (KS 640, Kolmogorov 180
  frames) must stay finite, and the energy spectrum time-averaged over the second half must
  be within 25% of the solver's (all test frames) on every wavenumber carrying at least 1%
  of the energy;
- skill: high-correlation time (Pearson corr >= 0.8) of the 16-member ensemble mean, next to
  that of the numerical solver started from the true frame perturbed at the observation-noise
  level (0.1 in normalised units);
- calibration: spread-skill ratio of the 16-member ensemble over the first 50 frames;
- cost: milliseconds per frame per member, denoiser calls per frame.

The last line is
``stable=<bool> spectrum_max_rel_err=<x> ssr=<x> corr_time=<x> solver_corr_time=<x>
ms_per_frame_member=<x>``; figures go to ``--out`` (default ``results/ardm_quality_<pde>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ardm_infer import metrics
from ardm_infer.ardm.pretrained import load_ardm
from ardm_infer.ardm.process import count_denoiser_calls
from ardm_infer.data import DataConfig, load_dataset, make_solver
from ardm_infer.dynamics import spectral_resample

LONG = {"ks": 640, "kolmogorov": 180}
NOISE = 0.1  # observation noise level, normalised units


def ensemble_rollout(ardm, context, steps, generator, desc):
    """``context (batch, k, C, *space)`` -> frames ``(batch, steps, C, *space)``."""
    frames = []
    window = context
    with torch.inference_mode():
        for _ in tqdm(range(steps), desc=desc, file=sys.stderr, leave=False):
            nxt = ardm.step(window, generator)
            frames.append(nxt)
            window = torch.cat([window[:, 1:], nxt.unsqueeze(1)], dim=1)
    return torch.stack(frames, 1)


def spectrum(pde, x):
    """Time- and sample-averaged spectrum of physical fields ``(..., C, *space)``."""
    if pde == "ks":
        return metrics.energy_spectrum(x[..., 0, :], space_dims=1)
    return metrics.kolmogorov_energy_spectrum(x[..., 0, :, :])


def solver_forecast(pde, dataset, truth_phys, start, steps, generator):
    """Solver from the true frame at ``start`` plus noise at NOISE * std, ``(n, steps, ...)``."""
    solver = make_solver(pde, dataset.config.solver)
    x0 = truth_phys[:, start, 0].double()
    x0 = x0 + NOISE * dataset.std.double() * torch.randn(
        x0.shape, generator=generator, dtype=torch.float64
    )
    if pde == "kolmogorov":
        x0 = spectral_resample(x0, dataset.config.solver.grid)
    return solver.trajectory(x0, steps).unsqueeze(2).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pde", choices=["ks", "kolmogorov"], default="ks")
    parser.add_argument("--rollouts", type=int, default=32)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--trajectories", type=int, default=4, help="for the skill ensemble")
    parser.add_argument("--calibration-trajectories", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=None, help="long horizon (frames)")
    parser.add_argument("--skill-horizon", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="artifact path (default: shipped)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    pde = args.pde
    if args.quick:
        args.rollouts, args.members, args.trajectories = 4, 4, 2
        args.calibration_trajectories = 2
        args.horizon = args.horizon or 20
        args.skill_horizon = args.skill_horizon or 20
    horizon = args.horizon or LONG[pde]
    out = Path(args.out or f"results/ardm_quality_{pde}")
    out.mkdir(parents=True, exist_ok=True)

    ardm = load_ardm(args.checkpoint or pde)
    dataset = load_dataset(DataConfig.from_dict(ardm.card["data_config"]), progress=True)
    k = ardm.context_length
    test = dataset.test  # physical units (n, frames, C, *space)
    n_test = test.shape[0]
    if test.shape[1] < k + horizon:
        raise SystemExit(f"test trajectories have {test.shape[1]} frames; need {k + horizon}")
    dt = dataset.config.solver.output_interval
    g = torch.Generator().manual_seed(args.seed)
    z = dataset.normalise(test)

    # --- stability: rollouts over the long horizon (test trajectories cycled) --------------
    idx = torch.arange(args.rollouts) % n_test
    t0 = time.perf_counter()
    long = ensemble_rollout(ardm, z[idx, :k], horizon, g, "stability rollouts")
    long_seconds = time.perf_counter() - t0
    long_phys = dataset.denormalise(long)
    finite = bool(torch.isfinite(long).all())
    half = horizon // 2
    spec_model = spectrum(pde, long_phys[:, half:])
    # The solver's spectrum of the statistically steady attractor: every test frame (more
    # samples than the same window alone, so the reference itself is not the noisy side).
    spec_true = spectrum(pde, test[:, k:])
    rel = metrics.spectrum_relative_error(spec_model, spec_true, 0.01)
    max_rel = float(metrics.max_spectrum_relative_error(spec_model, spec_true, 0.01))
    stable = finite and max_rel <= 0.25

    # --- skill and calibration: a members x trajectories ensemble -------------------------
    skill_h = min(args.skill_horizon or (200 if pde == "ks" else 100), horizon)
    m, nt = args.members, min(args.trajectories, n_test)
    ctx = z[:nt, :k].repeat_interleave(m, 0)
    ens = ensemble_rollout(ardm, ctx, skill_h, g, "ensemble").reshape(
        nt, m, skill_h, *ardm.frame_shape
    )
    ens = ens.transpose(0, 1)  # (members, trajectories, time, C, *space)
    truth_z = z[:nt, k : k + skill_h]
    mean = ens.mean(0)
    corr_time = metrics.high_correlation_time(truth_z, mean, time_dim=1, dt=dt).mean().item()
    # Calibration: a 16-member ensemble on more trajectories over the first 50 frames (the
    # spread-skill ratio of a handful of trajectories is too noisy to judge).
    calib = min(50, horizon)
    nc = min(args.calibration_trajectories, n_test)
    cal = ensemble_rollout(ardm, z[:nc, :k].repeat_interleave(m, 0), calib, g, "calibration")
    cal = cal.reshape(nc, m, calib, *ardm.frame_shape).transpose(0, 1)
    ssr = metrics.spread_skill_ratio(z[:nc, k : k + calib], cal).item()
    solver = solver_forecast(pde, dataset, test[:nt], k - 1, skill_h, g)
    solver_corr = (
        metrics.high_correlation_time(test[:nt, k : k + skill_h], solver, time_dim=1, dt=dt)
        .mean()
        .item()
    )

    # --- cost --------------------------------------------------------------------------------
    batch = 16
    t0 = time.perf_counter()
    with count_denoiser_calls() as counter:
        ensemble_rollout(ardm, z[:1, :k].repeat(batch, *([1] * (z.ndim - 1))), 5, g, "timing")
    ms = 1000 * (time.perf_counter() - t0) / (5 * batch)
    calls_per_frame = counter.calls / (5 * batch)

    print(
        f"ARDM {ardm.name}: k={k}, S={ardm.schedule.substeps}, eta={ardm.schedule.eta}, "
        f"params trained {ardm.card.get('wall_seconds', float('nan')):.0f} s"
    )
    print(
        f"stability: {args.rollouts} rollouts x {horizon} frames, finite={finite}, "
        f"{long_seconds:.0f} s"
    )
    scored = (~torch.isnan(rel)).nonzero().flatten().tolist()
    print("spectrum relative error (wavenumbers with >= 1% of the energy):")
    for i in scored:
        print(
            f"  k={i:3d}  model {spec_model[i]:.4g}  solver {spec_true[i]:.4g}  "
            f"rel err {rel[i]:.3f}"
        )
    print(
        f"skill: {nt} trajectories x {m} members; corr time (ensemble mean) {corr_time:.2f}, "
        f"solver from perturbed truth {solver_corr:.2f} (time units)"
    )
    print(
        f"calibration: {nc} trajectories x {m} members, spread-skill ratio over the first "
        f"{calib} frames {ssr:.3f}"
    )
    print(f"cost: {ms:.2f} ms per frame per member, {calls_per_frame:.0f} denoiser calls per frame")
    _figures(pde, out, test, long_phys, idx, k, horizon, spec_model, spec_true, dt)
    print(f"figures in {out}")
    print(
        f"stable={stable} spectrum_max_rel_err={max_rel:.3f} ssr={ssr:.3f} "
        f"corr_time={corr_time:.2f} solver_corr_time={solver_corr:.2f} "
        f"ms_per_frame_member={ms:.2f}"
    )


def _figures(pde, out, test, long_phys, idx, k, horizon, spec_model, spec_true, dt):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    kk = torch.arange(len(spec_true))
    ax.loglog(kk[1:], spec_true[1:], label="solver", color="k")
    ax.loglog(kk[1:], spec_model[1:], label="ARDM", color="C1", ls="--")
    ax.set_xlabel("wavenumber")
    ax.set_ylabel("energy")
    ax.set_title(f"{pde}: spectrum, second half of {horizon} frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spectrum.png", dpi=120)
    plt.close(fig)
    if pde == "ks":
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        truth = test[idx[0], k : k + horizon, 0]
        model = long_phys[0, :, 0]
        vmax = float(truth.abs().max())
        extent = (0, truth.shape[-1], horizon * dt, 0)
        for ax, field, title in ((axes[0], truth, "solver"), (axes[1], model, "ARDM sample")):
            im = ax.imshow(
                field, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, extent=extent
            )
            ax.set_title(title)
            ax.set_xlabel("grid point")
        axes[0].set_ylabel("time")
        fig.colorbar(im, ax=axes, shrink=0.8)
        fig.savefig(out / "hovmoller.png", dpi=110)
        plt.close(fig)
    else:
        times = [0, horizon // 2, horizon - 1]
        fig, axes = plt.subplots(2, 3, figsize=(9, 6))
        vmax = float(test[idx[0], k:].abs().max())
        for j, t in enumerate(times):
            for i, (field, name) in enumerate(
                ((test[idx[0], k + t, 0], "solver"), (long_phys[0, t, 0], "ARDM"))
            ):
                axes[i, j].imshow(field, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                axes[i, j].set_title(f"{name}, frame {t + 1}")
                axes[i, j].axis("off")
        fig.tight_layout()
        fig.savefig(out / "snapshots.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
