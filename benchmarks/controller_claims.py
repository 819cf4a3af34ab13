"""The amortised controller's claims, measured on held-out test trajectories.

    python benchmarks/controller_claims.py --pde ks|kolmogorov [--trajectories N]
        [--long-trajectories N] [--long-members N] [--vc-frames N] [--out DIR] [--no-long]

Runs :func:`ardm_infer.benchmark` (so every number here is also in ``results.nc``):

- accuracy: ``forecast``, ``controller`` (the shipped controller of the PDE) and ``dps`` on
  all six regimes at the short horizon of the protocol (KS 140, Kolmogorov 60 frames), 16
  members, ``--trajectories`` test trajectories;
- cost: wall time per assimilated frame of each cell; ``vc`` (its defaults: 4-frame windows,
  20 L-BFGS iterations, the same ARDM and sub-steps) is timed on the first ``--vc-frames``
  frames of the ``dense`` regime only (its accuracy is not part of the claims, and its cost
  per frame does not depend on the horizon);
- long horizon (KS only): ``forecast``, ``controller`` and ``dps`` over 640 frames in the
  sparse regimes, RMSE over time in ``long_horizon_rmse.png`` and a blow-up check.

Cells are saved as they finish: rerunning the same command resumes.  The last line is

    regimes_beating_forecast=<n>/6 regimes_beating_dps=<n>/6 cost_vs_forecast=<x>
    speedup_vs_dps=<x> speedup_vs_vc=<x>

where a regime counts as beaten when the controller's time- and trajectory-averaged RMSE
*and* CRPS are both below the other strategy's; cost ratios are means over the six regimes
of the per-regime ratios of wall time per frame (vc: its one cell).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ardm_infer.bench import benchmark
from ardm_infer.bench.report import format_table, summary

SHORT = {"ks": 140, "kolmogorov": 60}
LONG = {"ks": 640}
MEMBERS = 16


def draw_long_horizon(ds):
    """RMSE over time per sparse regime, one line per strategy (trajectory mean).

    The report's RMSE-over-time figure: the project's one palette, axis limits set by the
    strategies that stay on scale (a diverging one is clipped and named in its panel).
    """
    from ardm_infer.bench.figures import draw_metric_time

    return draw_metric_time(ds, "rmse")


def long_horizon_figure(ds, path: Path) -> Path:
    """:func:`draw_long_horizon` saved as PNG at ``path``."""
    from ardm_infer.bench.figures import DPI

    draw_long_horizon(ds).savefig(path, dpi=DPI)
    return path


def claims(short, vc) -> dict[str, float | int]:
    """The last line's numbers from the short-horizon results and the vc cell."""
    mean = short[["rmse", "crps"]].mean(("trajectory", "time"))
    beat_forecast = beat_dps = 0
    for regime in short.regime.values:
        c = mean.sel(strategy="controller", regime=regime)
        f = mean.sel(strategy="forecast", regime=regime)
        d = mean.sel(strategy="dps", regime=regime)
        beat_forecast += int(c.rmse < f.rmse and c.crps < f.crps)
        beat_dps += int(c.crps < d.crps and c.rmse < d.rmse)
    ms = short.ms_per_frame
    controller_ms = ms.sel(strategy="controller")
    vc_ms = float(vc.ms_per_frame.sel(strategy="vc").values.squeeze())
    dense_controller = float(controller_ms.sel(regime="dense"))
    return {
        "regimes": int(short.sizes["regime"]),
        "regimes_beating_forecast": beat_forecast,
        "regimes_beating_dps": beat_dps,
        "cost_vs_forecast": float((controller_ms / ms.sel(strategy="forecast")).mean()),
        "speedup_vs_dps": float((ms.sel(strategy="dps") / controller_ms).mean()),
        "speedup_vs_vc": vc_ms / dense_controller,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pde", choices=["ks", "kolmogorov"], default="ks")
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--long-trajectories", type=int, default=1)
    parser.add_argument("--long-members", type=int, default=MEMBERS)
    parser.add_argument("--vc-frames", type=int, default=8)
    parser.add_argument("--controller", default=None, help="controller artifact (default shipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="default results/controller_claims_<pde>")
    parser.add_argument("--no-long", action="store_true", help="skip the long-horizon run")
    args = parser.parse_args()

    from ardm_infer.strategies import get_strategy

    out = Path(args.out or f"results/controller_claims_{args.pde}")
    controller = get_strategy("controller").Config(controller=args.controller or args.pde)
    strategies = ["forecast", ("controller", "controller", controller), "dps"]
    common = dict(pde=args.pde, members=MEMBERS, seed=args.seed, resume=True, preset="paper")
    short = benchmark(
        strategies=strategies,
        regimes="all",
        horizon=SHORT[args.pde],
        trajectories=args.trajectories,
        out=out / "short",
        **common,
    )
    vc = benchmark(
        strategies=["vc"],
        regimes=["dense"],
        horizon=args.vc_frames,
        trajectories=args.trajectories,
        out=out / "vc_cost",
        **common,
    )
    print(
        f"\n{args.pde}: horizon {SHORT[args.pde]}, {args.trajectories} test trajectories, "
        f"{MEMBERS} members, seed {args.seed}"
    )
    print(format_table(summary(short)))
    print(
        f"vc (defaults, dense, first {args.vc_frames} frames): "
        f"{float(vc.ms_per_frame.values.squeeze()):.0f} ms/frame"
    )
    if args.pde in LONG and not args.no_long:
        long = benchmark(
            strategies=strategies,
            regimes=["sparse", "sparse-gappy"],
            horizon=LONG[args.pde],
            trajectories=args.long_trajectories,
            out=out / "long",
            **{**common, "members": args.long_members},
        )
        figure = long_horizon_figure(long, out / "long_horizon_rmse.png")
        blown = long.blow_up.any(("trajectory", "time")).to_series()
        print(f"long horizon ({LONG[args.pde]} frames): figure {figure}")
        for (strategy, regime), flag in blown.items():
            final = float(long.rmse.sel(strategy=strategy, regime=regime).isel(time=-1).mean())
            print(f"  {strategy:10s} {regime:13s} blow_up={bool(flag)} final_rmse={final:.3f}")
    numbers = claims(short, vc)
    (out / "claims.json").write_text(json.dumps(numbers, indent=2) + "\n")
    n = numbers["regimes"]
    print(
        f"regimes_beating_forecast={numbers['regimes_beating_forecast']}/{n} "
        f"regimes_beating_dps={numbers['regimes_beating_dps']}/{n} "
        f"cost_vs_forecast={numbers['cost_vs_forecast']:.2f} "
        f"speedup_vs_dps={numbers['speedup_vs_dps']:.2f} "
        f"speedup_vs_vc={numbers['speedup_vs_vc']:.1f}"
    )


if __name__ == "__main__":
    main()
