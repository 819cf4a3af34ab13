"""``ardm-infer tune``: search each strategy's settings on validation trajectories.

A thin layer over :func:`ardm_infer.tuning.tune`: per (regime, strategy) an Optuna study in
the SQLite file ``--storage`` (an interrupted tuning resumes where it stopped) and the best
configurations in the JSON artifact ``--out``, bound to the sha256 of the ARDM.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .cli_options import CliError, split_names

__all__ = ["add_tune_parser", "cmd_tune"]


def _budget(value: str | None, what: str, kind: type) -> Any:
    """``"30"`` (every strategy) or ``"enkf=40,dps=20"`` (per strategy)."""
    if value is None:
        return None
    try:
        if "=" not in value:
            return kind(value)
        out = {}
        for item in value.split(","):
            name, _, number = item.partition("=")
            out[name.strip()] = kind(number)
        return out
    except ValueError:
        raise CliError(f"{what} must be a number or name=number,...; got {value!r}") from None


def add_tune_parser(sub: Any, positive: Any) -> None:
    """Register ``tune`` on the subparsers ``sub`` (``positive``: the CLI's int >= 1 type)."""
    p = sub.add_parser(
        "tune",
        help="tune strategies on validation trajectories (Optuna; resumable)",
        description=__doc__.splitlines()[0].replace("``", ""),
    )
    p.add_argument("--pde", default="ks", help="the system")
    p.add_argument("--ardm", default=None, help="an ARDM artifact path (default: the shipped)")
    p.add_argument("--regimes", default="sparse", help="regimes separated by ';'")
    p.add_argument("--strategies", default="enkf", help="strategies separated by ','")
    p.add_argument("--trials", default="30", help="trials: N, or name=N,... per strategy")
    p.add_argument("--seconds", default=None, help="time budget: S, or name=S,... per strategy")
    p.add_argument("--horizon", type=positive, default=64, help="frames per validation run")
    p.add_argument("--members", type=positive, default=8, help="members")
    p.add_argument(
        "--validation-trajectories", type=positive, default=4, help="validation trajectories"
    )
    p.add_argument("--chunks", type=positive, default=2, help="pruning checkpoints per trial")
    p.add_argument(
        "--confirm-horizon",
        type=positive,
        default=None,
        help="frames the chosen setting must run on the validation trajectories without "
        "blowing up (else the next best is taken; default: no check)",
    )
    p.add_argument(
        "--confirm-trajectories",
        type=positive,
        default=None,
        help="validation trajectories of that check (default: --validation-trajectories)",
    )
    p.add_argument(
        "--initial",
        default=None,
        help="the initial condition (docs/protocol.md; default: the protocol's background)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the problems and the sampler")
    p.add_argument("--storage", default=None, help="SQLite file (default: runs/tune-<pde>.db)")
    p.add_argument("--out", default=None, help="tuned JSON (default: runs/tuned-<pde>.json)")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from .initial import PROTOCOL_INITIAL, parse_initial
    from .strategies import get_strategy
    from .tuning import tune

    strategies = split_names(args.strategies, "--strategies")
    for name in strategies:
        try:
            get_strategy(name)
        except ValueError as err:
            raise CliError(str(err)) from None
    regimes = [r.strip() for r in args.regimes.split(";") if r.strip()]
    if not regimes:
        raise CliError("--regimes is empty; name at least one regime")
    try:
        initial = parse_initial(args.initial or PROTOCOL_INITIAL).spec()
    except (TypeError, ValueError) as err:
        raise CliError(f"--initial: {err}") from None
    storage = Path(args.storage or f"runs/tune-{args.pde}.db")
    out = Path(args.out or f"runs/tuned-{args.pde}.json")
    storage.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = tune(
        args.pde,
        regimes,
        strategies,
        out=out,
        storage=storage,
        trials=_budget(args.trials, "--trials", int),
        seconds=_budget(args.seconds, "--seconds", float),
        horizon=args.horizon,
        members=args.members,
        validation_trajectories=args.validation_trajectories,
        chunks=args.chunks,
        confirm_horizon=args.confirm_horizon,
        confirm_trajectories=args.confirm_trajectories,
        initial=initial,
        ardm=args.ardm,
        seed=args.seed,
    )
    for regime, entries in payload["entries"].items():
        for name, entry in entries.items():
            flag = "" if entry["trusted"] else "  (too few trials to trust)"
            print(
                f"{regime:>14}  {name:10}  CRPS {entry['validation_crps']:.4g}  "
                f"RMSE {entry['validation_rmse']:.4g}  trials {entry['trials']}  "
                f"{entry['config']}{flag}"
            )
    print(f"tuned configurations: {out}")
    return 0
