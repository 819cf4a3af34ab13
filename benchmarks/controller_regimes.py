"""One controller across regimes vs one controller per regime (beyond arXiv 2510.06637).

    python benchmarks/controller_regimes.py
        --single runs/controller-ks-sparse/controller-ks.safetensors
        [--pde ks] [--trained-on sparse] [--trajectories N] [--horizon H] [--out DIR]

The paper trains one controller per observation regime.  The shipped controller is trained
across randomised regimes (the mask and sigma_y are inputs).  This script scores both, with
the unguided ``forecast`` as reference, on all six regimes of held-out test trajectories
(same observations and sampler noise for every strategy), and prints the table and a last
line

    randomised_beats_single=<n>/6 single_on_its_regime_rmse=<x> randomised_on_it_rmse=<x>

(a regime counts when the randomised controller's time- and trajectory-averaged RMSE is
below the single-regime controller's).  Both controllers must be trained for the same ARDM
with the same preset (``ardm-infer train-controller --pde ks --regimes sparse --out ...``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ardm_infer.bench import benchmark
from ardm_infer.bench.report import format_table, summary
from ardm_infer.strategies import get_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--single",
        required=True,
        help="single-regime controller artifact",
    )
    parser.add_argument("--trained-on", default="sparse", help="the regime it was trained on")
    parser.add_argument("--pde", choices=["ks", "kolmogorov"], default="ks")
    parser.add_argument("--trajectories", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=140)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    config = get_strategy("controller").Config
    out = Path(args.out or f"results/controller_regimes_{args.pde}")
    ds = benchmark(
        pde=args.pde,
        strategies=[
            "forecast",
            ("randomised", "controller", config(controller=args.pde)),
            (f"single-{args.trained_on}", "controller", config(controller=args.single)),
        ],
        regimes="all",
        horizon=args.horizon,
        trajectories=args.trajectories,
        members=args.members,
        seed=args.seed,
        out=out,
        resume=True,
        preset="paper",
    )
    print(format_table(summary(ds)))
    rmse = ds.rmse.mean(("trajectory", "time"))
    single = f"single-{args.trained_on}"
    wins = int((rmse.sel(strategy="randomised") < rmse.sel(strategy=single)).sum())
    own_single = float(rmse.sel(strategy=single, regime=args.trained_on))
    own_random = float(rmse.sel(strategy="randomised", regime=args.trained_on))
    numbers = {
        "randomised_beats_single": wins,
        "regimes": int(ds.sizes["regime"]),
        "single_on_its_regime_rmse": own_single,
        "randomised_on_it_rmse": own_random,
        "rmse": {
            str(s): {str(r): float(rmse.sel(strategy=s, regime=r)) for r in ds.regime.values}
            for s in ds.strategy.values
        },
    }
    (out / "comparison.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(
        f"randomised_beats_single={wins}/{ds.sizes['regime']} "
        f"single_on_its_regime_rmse={own_single:.4f} randomised_on_it_rmse={own_random:.4f}"
    )


if __name__ == "__main__":
    main()
