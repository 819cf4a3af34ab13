"""Every strategy at its tuned best on held-out test trajectories, against the free forecast.

    python benchmarks/tuned_baselines.py --pde ks|kolmogorov [--horizon H] [--trajectories N]
        [--members M] [--regimes R;R;...] [--strategies a,b,...] [--out DIR] [--untuned]

Runs :func:`ardm_infer.benchmark` with the protocol's defaults (docs/protocol.md: the
background start, the presets' sigma_y) and the tuned settings that ship with the package
(``ardm_infer/tuned/<pde>.json``, chosen on *validation* trajectories by
``bash scripts/tune.sh <pde>``; test trajectories are only scored here).  Default sizes: the
protocol's short horizon (KS 140, Kolmogorov 60 frames), 4 test trajectories, 8 members (the
ensemble the settings were tuned with).  Strategies default to those with a tuned entry for
every regime run, plus ``forecast``.

Per regime it prints the summary table and, on the last line::

    pde=<p> enkf_beats_forecast=<n>/<r> best_beats_forecast=<n>/<r> blow_ups=<k>
        untuned_cells=<u> untrusted_cells=<v> trajectories=<N> horizon=<H>
        [enkf_second_half_rmse_<regime>=<x> ...]

``beats``: the time-mean RMSE is lower with the paired 95 % interval of the per-trajectory
difference excluding zero (Student-t over trajectories).  ``blow_ups``: (strategy, regime)
cells other than the forecast in which any member went non-finite or beyond 1e3, or that
failed.  ``untuned_cells``: cells that ran library defaults; ``untrusted_cells``: cells
that ran tuned settings marked untrusted (too few tuning trials, or unstable over the
evaluation horizon).  With ``--horizon`` above the short horizon the second-half time-mean RMSE of
``enkf`` is printed per regime (the long-horizon check: KS ``--horizon 640 --regimes
"sparse;random"``).

Cells are saved as they finish under ``--out``: rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ardm_infer.bench import benchmark
from ardm_infer.bench.report import format_table, summary
from ardm_infer.bench.stats import beats_reference, mean_and_half_width, trajectory_time_means
from ardm_infer.observe import PRESET_NAMES
from ardm_infer.systems import get_system
from ardm_infer.tuning import load_tuned, shipped_tuned_path, tuned_entry


def paired_beats(ds, better: str, worse: str, regime: str, confidence: float = 0.95) -> bool:
    """Whether ``better`` has a lower time-mean RMSE than ``worse`` on ``regime``, with the
    paired ``confidence`` interval of the per-trajectory difference excluding zero."""
    means = trajectory_time_means(ds, "rmse").sel(regime=regime)
    d = np.asarray(means.sel(strategy=worse) - means.sel(strategy=better), dtype=float)
    mean, half, n = mean_and_half_width(d, confidence)
    return bool(n >= 2 and mean - half > 0.0)


def second_half_rmse(ds, strategy: str, regime: str) -> float:
    """Time-mean RMSE over the second half of the horizon, averaged over trajectories."""
    rmse = ds["rmse"].sel(strategy=strategy, regime=regime)
    half = rmse.sizes["time"] // 2
    return float(np.nanmean(rmse.isel(time=slice(half, None)).values))


def tuned_strategies(pde: str, regimes: list[str]) -> list[str]:
    """``forecast`` and every strategy with a shipped tuned entry on all ``regimes``."""
    path = shipped_tuned_path(pde)
    if path is None:
        return ["forecast"]
    from ardm_infer import load_ardm

    payload = load_tuned(path, load_ardm(get_system(pde).shipped_ardm).card["sha256"])
    names = {n for entries in payload["entries"].values() for n in entries}
    order = ["forecast", "enkf", "smc", "dps", "controller", "vc"]
    return [
        n
        for n in order
        if n == "forecast" or (n in names and all(tuned_entry(payload, r, n, pde) for r in regimes))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pde", default="ks", choices=["ks", "kolmogorov"])
    parser.add_argument("--horizon", type=int, default=None)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--regimes", default=";".join(PRESET_NAMES), help="';'-separated")
    parser.add_argument("--strategies", default=None, help="','-separated (default: tuned)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--untuned", action="store_true", help="library defaults instead")
    args = parser.parse_args()

    system = get_system(args.pde)
    horizon = args.horizon or system.short_horizon
    regimes = [r.strip() for r in args.regimes.split(";") if r.strip()]
    strategies = (
        [s.strip() for s in args.strategies.split(",")]
        if args.strategies
        else tuned_strategies(system.name, regimes)
    )
    if "forecast" not in strategies:
        strategies = ["forecast", *strategies]
    out = Path(args.out or f"results/tuned-baselines-{system.name}-{horizon}")
    ds = benchmark(
        pde=system.name,
        strategies=strategies,
        regimes=regimes,
        horizon=horizon,
        trajectories=args.trajectories,
        members=args.members,
        preset="paper",
        out=out,
        resume=(out / "results.nc").exists() or (out / "cells").is_dir(),
        threads=1,
        tuned=not args.untuned,
    )
    table = summary(ds)
    print(format_table(table))
    print(ds.attrs.get("tuned", ""))

    others = [s for s in strategies if s != "forecast"]
    enkf_beats = (
        sum(paired_beats(ds, "enkf", "forecast", r) for r in regimes)
        if ("enkf" in strategies)
        else 0
    )
    best_beats = sum(significant for _, significant in beats_reference(ds).values())
    blow = np.asarray(ds["blow_up"].sel(strategy=others).any(dim=("trajectory", "time")).values)
    failed = np.asarray(ds["failed"].sel(strategy=others).values, dtype=bool)
    blow_ups = int((blow | failed).sum())
    sources = np.asarray(ds["config_source"].sel(strategy=others).values, dtype=str)
    untrusted = int(sum(s.startswith("tuned, untrusted") for s in sources.ravel()))
    untuned = int(sum(s != "tuned" for s in sources.ravel())) - untrusted
    line = (
        f"pde={system.name} enkf_beats_forecast={enkf_beats}/{len(regimes)} "
        f"best_beats_forecast={best_beats}/{len(regimes)} blow_ups={blow_ups} "
        f"untuned_cells={untuned} untrusted_cells={untrusted} "
        f"trajectories={ds.sizes['trajectory']} horizon={horizon}"
    )
    if horizon > system.short_horizon and "enkf" in strategies:
        for r in regimes:
            line += f" enkf_second_half_rmse_{r}={second_half_rmse(ds, 'enkf', r):.4f}"
    print(line)


if __name__ == "__main__":
    main()
