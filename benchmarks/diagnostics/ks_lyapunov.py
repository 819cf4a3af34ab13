"""Estimate the leading Lyapunov exponent of the KS data-set configuration.

Benettin et al. (1980) two-trajectory method: a reference and a perturbed trajectory
(perturbation norm ``eps`` in float64) are integrated together; every ``interval`` time units
the separation is measured, its log-growth accumulated and the perturbation rescaled back
to ``eps``.  Several independent trajectories run as one batch; the printed uncertainty is
the standard error over them.

    python benchmarks/diagnostics/ks_lyapunov.py [--length 64] [--grid 256] [--time 1000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ardm_infer.dynamics import KSConfig, KuramotoSivashinsky


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=float, default=KSConfig.length)
    parser.add_argument("--grid", type=int, default=KSConfig.grid)
    parser.add_argument("--dt", type=float, default=KSConfig.dt)
    parser.add_argument("--output-interval", type=float, default=KSConfig.output_interval)
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--time", type=float, default=1000.0, help="averaging time")
    parser.add_argument("--interval", type=float, default=1.0, help="renormalisation interval")
    parser.add_argument("--eps", type=float, default=1e-8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cfg = KSConfig(args.length, args.grid, args.dt, args.output_interval)
    ks = KuramotoSivashinsky(cfg)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    u = ks.integrate(ks.random_initial_condition(args.trajectories, g), round(100 / cfg.dt))
    d = torch.randn(u.shape, generator=g, dtype=torch.float64)
    d = d - d.mean(-1, keepdim=True)  # the mean is conserved: perturb only the dynamics
    v = u + args.eps * d / d.norm(dim=-1, keepdim=True)
    steps = round(args.interval / cfg.dt)
    n_intervals = round(args.time / args.interval)
    logs = torch.zeros(args.trajectories, dtype=torch.float64)
    for _ in range(n_intervals):
        both = ks.integrate(torch.cat([u, v]), steps)
        u, v = both[: args.trajectories], both[args.trajectories :]
        sep = (v - u).norm(dim=-1)
        logs += torch.log(sep / args.eps)
        v = u + (v - u) * (args.eps / sep).unsqueeze(-1)
    lam = logs / (n_intervals * args.interval)
    mean = lam.mean().item()
    se = lam.std().item() / math.sqrt(args.trajectories)
    lyap_time = 1 / mean
    frames_per_lt = lyap_time / cfg.output_interval
    print(f"config: {cfg}")
    print(f"per-trajectory exponents: {[round(x, 4) for x in lam.tolist()]}")
    print(f"elapsed: {time.perf_counter() - t0:.1f} s")
    print(
        f"lyapunov_exponent={mean:.4f} stderr={se:.4f} lyapunov_time={lyap_time:.2f} "
        f"frames_per_lyapunov_time={frames_per_lt:.1f} "
        f"lyapunov_times_in_140={140 / frames_per_lt:.1f} "
        f"lyapunov_times_in_640={640 / frames_per_lt:.1f}"
    )


if __name__ == "__main__":
    main()
