"""Time ``ardm_infer.metrics.crps_ensemble`` against ``properscoring.crps_ensemble``.

Workload: 64 trajectories × 256 grid points × 32 members, float64, the same data for
both (members last for properscoring, members first for ours).  Each timing is the
best wall-clock time of ``--repeats`` runs.  properscoring (numpy) runs on one core,
so torch is pinned to ``--threads`` threads, 1 by default (apples to apples, and
robust on a shared machine where extra OpenMP threads wait on busy cores).  The
last line printed is exactly ``speedup=<ratio>`` (properscoring time / our time).

Usage::

    python benchmarks/crps_speed.py [--repeats 5] [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import properscoring
import torch

from ardm_infer.metrics import crps_ensemble

TRAJECTORIES, POINTS, MEMBERS = 64, 256, 32


def best_time(function: Callable[[], object], repeats: int) -> float:
    """Best wall-clock time in seconds of ``repeats`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best counts")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for ours")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random ensemble")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    observation_np = rng.standard_normal((TRAJECTORIES, POINTS))
    forecasts_np = rng.standard_normal((TRAJECTORIES, POINTS, MEMBERS))  # members last
    observation = torch.from_numpy(observation_np)
    ensemble = torch.from_numpy(np.moveaxis(forecasts_np, -1, 0).copy())  # members first

    ours = crps_ensemble(observation, ensemble).numpy()
    reference = properscoring.crps_ensemble(observation_np, forecasts_np)
    difference = float(np.max(np.abs(ours - reference)))
    if difference > 1e-6:
        raise SystemExit(f"crps_ensemble disagrees with properscoring: max |diff| {difference}")

    ours_s = best_time(lambda: crps_ensemble(observation, ensemble), args.repeats)
    reference_s = best_time(
        lambda: properscoring.crps_ensemble(observation_np, forecasts_np), args.repeats
    )
    print(
        f"workload: {TRAJECTORIES} trajectories x {POINTS} points x {MEMBERS} members, "
        f"float64, best of {args.repeats}; torch threads {torch.get_num_threads()}; "
        f"max |ours - properscoring| = {difference:.1e}"
    )
    print(f"ardm_infer.metrics.crps_ensemble: {ours_s * 1e3:9.3f} ms")
    print(f"properscoring.crps_ensemble:      {reference_s * 1e3:9.3f} ms")
    print(f"speedup={reference_s / ours_s:.1f}")


if __name__ == "__main__":
    main()
