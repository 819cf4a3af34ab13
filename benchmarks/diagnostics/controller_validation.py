"""A controller artifact against the forecast on KS validation trajectories (never test).

Each cell is the benchmark's own cell on the ``val`` split
(:func:`ardm_infer.tuning.validation_evaluator`): the protocol's background start, 8 members,
validation trajectories 0..N-1, time-mean CRPS and RMSE.  For choosing among trained
controllers before anything is scored on test.

    python benchmarks/diagnostics/controller_validation.py ARTIFACT.safetensors
        [--pde ks] [--regimes sparse,dense] [--horizon 140] [--trajectories 4]

Last line: ``pde=... horizon=... <regime>_forecast_rmse=... <regime>_controller_rmse=...``.
"""

from __future__ import annotations

import argparse
import time

from ardm_infer.initial import PROTOCOL_INITIAL
from ardm_infer.tuning import validation_evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("controller", help="controller artifact (.safetensors with its card)")
    parser.add_argument("--pde", default="ks", choices=["ks", "kolmogorov"])
    parser.add_argument("--regimes", default="sparse,dense")
    parser.add_argument("--horizon", type=int, default=140)
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    summary = []
    for regime in args.regimes.split(","):
        for strategy, options in (
            ("forecast", {}),
            ("controller", {"controller": args.controller}),
        ):
            start = time.perf_counter()
            evaluate = validation_evaluator(
                args.pde,
                args.pde,
                regime,
                strategy,
                horizon=args.horizon,
                members=args.members,
                chunk_size=args.trajectories,
                initial=str(PROTOCOL_INITIAL),
            )
            crps, rmse = evaluate(options, 0)
            seconds = time.perf_counter() - start
            print(f"{regime:13s} {strategy:10s} crps={crps:.4f} rmse={rmse:.4f} ({seconds:.0f} s)")
            summary.append(f"{regime}_{strategy}_rmse={rmse:.4f}")
    print(f"pde={args.pde} horizon={args.horizon} " + " ".join(summary))


if __name__ == "__main__":
    main()
