"""Command-line interface: ``ardm-infer <subcommand> ...`` (``ardm-infer --help`` lists them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_data(args: argparse.Namespace) -> int:
    from .data import default_data_config, load_dataset

    config = default_data_config(args.pde)
    changes = {
        k: getattr(args, k)
        for k in ("train", "val", "test", "frames", "seed")
        if getattr(args, k) is not None
    }
    if changes:
        config = config.replace(**changes)
    ds = load_dataset(
        config, cache_dir=args.cache_dir, progress=not args.quiet, use_cache=not args.no_cache
    )
    print(ds.summary())
    return 0


def _cmd_regimes(args: argparse.Namespace) -> int:
    from .observe import PRESET_NAMES, parse_regime, preset

    if args.spec:
        regime = parse_regime(args.spec, pde=args.pde)
        print(f"{args.spec!r} -> {regime.spec()}")
        return 0
    print(f"named regimes for pde={args.pde}:")
    for name in PRESET_NAMES:
        print(f"  {name:13s} {preset(name, args.pde).spec()}")
    return 0


def _cmd_train_ardm(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from .ardm.pretrained import CHECKPOINT_DIR
    from .ardm.training import ardm_presets, train_ardm
    from .data import default_data_config, load_dataset

    presets = ardm_presets(args.pde)
    if args.preset not in presets:
        raise ValueError(f"unknown preset {args.preset!r}; expected one of {sorted(presets)}")
    model_config, train_config = presets[args.preset]
    if args.steps is not None:
        train_config = train_config.__class__(**{**train_config.to_dict(), "steps": args.steps})
    dataset = load_dataset(default_data_config(args.pde), cache_dir=args.cache_dir, progress=True)
    out = Path(args.out or f"runs/ardm-{args.pde}-{args.preset}")
    result = train_ardm(
        dataset, model_config, train_config, out, resume=not args.no_resume, progress=True
    )
    print(
        f"trained {result['step']} steps in {result['wall_seconds']:.0f} s; "
        f"final train loss {result['final_train_loss']:.4f}, "
        f"val loss {result['final_val_loss']:.4f}"
    )
    print(f"artifact: {result['weights_path']} (card {result['card_path']})")
    if args.ship:
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        for src in (Path(result["weights_path"]), Path(result["card_path"])):
            shutil.copy2(src, CHECKPOINT_DIR / f"ardm-{args.pde}{src.suffix}")
        print(f"shipped to {CHECKPOINT_DIR}")
    return 0


def _cmd_train_controller(args: argparse.Namespace) -> int:
    import dataclasses
    import shutil
    from pathlib import Path

    from .ardm.pretrained import CHECKPOINT_DIR, load_ardm
    from .controller.training import controller_presets, train_controller
    from .data import DataConfig, load_dataset
    from .observe import parse_regime

    presets = controller_presets(args.pde)
    if args.preset not in presets:
        raise ValueError(f"unknown preset {args.preset!r}; expected one of {sorted(presets)}")
    network_config, train_config = presets[args.preset]
    ardm = load_ardm(args.pde)
    dataset = load_dataset(
        DataConfig.from_dict(ardm.card["data_config"]), cache_dir=args.cache_dir, progress=True
    )
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.regimes in ("randomised", "presets"):
        changes["regimes"] = args.regimes
    elif args.regimes is not None:
        changes["regimes"] = parse_regime(args.regimes, pde=args.pde).spec()
    if changes:
        train_config = dataclasses.replace(train_config, **changes)
    out = Path(args.out or f"runs/controller-{args.pde}-{args.preset}")
    result = train_controller(
        ardm,
        dataset,
        network_config,
        train_config,
        out,
        resume=not args.no_resume,
        stop_after=args.stop_after,
    )
    if not result["completed"]:
        print(f"stopped at step {result['step']}; checkpoint in {out} (rerun to continue)")
        return 0
    print(f"controller: {result['weights_path']} (card {result['card_path']})")
    if args.ship:
        CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
        for src in (Path(result["weights_path"]), Path(result["card_path"])):
            shutil.copy2(src, CHECKPOINT_DIR / f"controller-{args.pde}{src.suffix}")
        print(f"shipped to {CHECKPOINT_DIR}")
    return 0


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench import benchmark
    from .bench.report import format_table, summary, write_report

    pdes = [args.pde] if args.pde else (["ks", "kolmogorov"] if args.preset == "paper" else ["ks"])
    root = Path(args.out or f"results/bench-{args.preset}")
    regimes = "all" if args.regimes in (None, "all") else _regime_list(args.regimes)
    for pde in pdes:
        out = root / pde if len(pdes) > 1 else root
        ds = benchmark(
            pde=pde,
            strategies=_split(args.strategies),
            regimes=regimes,
            horizon=args.horizon,
            trajectories=args.trajectories,
            members=args.members,
            seed=args.seed,
            out=out,
            preset=args.preset,
            resume=args.resume,
            workers=args.workers,
            executor=args.executor,
            threads=args.threads,
            progress=not args.quiet,
        )
        print(
            f"\n{pde}: {ds.attrs['members']} members, horizon {ds.attrs['horizon']}, "
            f"{ds.sizes['trajectory']} trajectories, seed {ds.attrs['seed']}"
        )
        print(format_table(summary(ds)))
        if not args.no_figures:
            report = write_report(ds, out)
            print(f"report: {report}")
        print(f"results: {out / 'results.nc'}")
    return 0


def _regime_list(value: str) -> list[str]:
    """Regimes separated by ';' (spec strings contain commas) or by ',' for preset names."""
    from .observe import PRESET_NAMES

    if ";" in value:
        return [v.strip() for v in value.split(";") if v.strip()]
    parts = [v.strip() for v in value.split(",") if v.strip()]
    if all(p in PRESET_NAMES for p in parts):
        return parts
    return [value]


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .bench.report import format_table, load_results, summary, write_report

    folder = Path(args.dir)
    paths = [folder / "results.nc"] if (folder / "results.nc").exists() else []
    paths += sorted(folder.glob("*/results.nc"))
    if not paths:
        raise ValueError(f"no results.nc in {folder} or its subfolders")
    for path in paths:
        ds = load_results(path)
        print(f"\n{ds.attrs.get('pde')}: {path}")
        print(format_table(summary(ds)))
        print(f"report: {write_report(ds, path.parent)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ardm-infer`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="ardm-infer",
        description="Data assimilation with autoregressive diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("data", help="generate (or read from cache) and summarise a data set")
    p.add_argument("--pde", choices=["ks", "kolmogorov", "lorenz96"], default="ks")
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default: $ARDM_INFER_CACHE or the user cache dir)",
    )
    p.add_argument("--train", type=int, default=None, help="train trajectories")
    p.add_argument("--val", type=int, default=None, help="validation trajectories")
    p.add_argument("--test", type=int, default=None, help="test trajectories")
    p.add_argument("--frames", type=int, default=None, help="frames per trajectory")
    p.add_argument("--seed", type=int, default=None, help="base seed of the splits")
    p.add_argument("--no-cache", action="store_true", help="generate without reading/writing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train-ardm", help="train an ARDM denoiser (resumable)")
    p.add_argument("--pde", choices=["ks", "kolmogorov", "lorenz96"], default="ks")
    p.add_argument("--preset", default="default", help="model/training preset (default, smoke)")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument("--out", default=None, help="run folder (default runs/ardm-<pde>-<preset>)")
    p.add_argument("--cache-dir", default=None, help="data cache root")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument(
        "--ship", action="store_true", help="copy the result into the package's checkpoints folder"
    )
    p.set_defaults(func=_cmd_train_ardm)

    p = sub.add_parser("train-controller", help="train the amortised controller (resumable)")
    p.add_argument("--pde", choices=["ks", "kolmogorov"], default="ks")
    p.add_argument("--preset", default="default", help="network/training preset (default, smoke)")
    p.add_argument(
        "--regimes",
        default=None,
        help="'randomised' (wide distribution drawn per chain), 'presets' (the six named "
        "regimes drawn per chain) or one regime (preset name or spec); default: the preset's",
    )
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="checkpoint and stop after this many steps (resume later, or finish early with "
        "--steps equal to it)",
    )
    p.add_argument("--out", default=None, help="run folder")
    p.add_argument("--cache-dir", default=None, help="data cache root")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument(
        "--ship", action="store_true", help="copy the result into the package's checkpoints folder"
    )
    p.set_defaults(func=_cmd_train_controller)

    p = sub.add_parser(
        "bench",
        help="run strategies x regimes and score them (default: the quick KS benchmark)",
    )
    p.add_argument("--preset", choices=["quick", "paper"], default="quick")
    p.add_argument(
        "--pde",
        choices=["ks", "kolmogorov"],
        default=None,
        help="default: ks for quick, both for paper",
    )
    p.add_argument("--strategies", default=None, help="comma-separated names (default: all)")
    p.add_argument(
        "--regimes",
        default=None,
        help="'all' (default), preset names separated by commas, or specs separated by ';'",
    )
    p.add_argument("--horizon", type=int, default=None)
    p.add_argument("--trajectories", type=int, default=None)
    p.add_argument("--members", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default results/bench-<preset>)")
    p.add_argument("--resume", action="store_true", help="reuse finished cells in --out")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--threads", type=int, default=None, help="torch threads per cell")
    p.add_argument("--no-figures", action="store_true", help="skip the report and figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="rebuild the table, report and figures from saved results")
    p.add_argument("dir", help="a bench output folder")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("regimes", help="list the named observation regimes or parse a spec")
    p.add_argument("spec", nargs="?", default=None, help="a preset name or spec string")
    p.add_argument("--pde", choices=["ks", "kolmogorov"], default="ks")
    p.set_defaults(func=_cmd_regimes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ardm-infer``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as err:
        print(f"ardm-infer {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
