"""Command-line interface: ``ardm-infer <command> ...`` (``ardm-infer --help`` lists them).

Commands: ``data``, ``train-ardm``, ``train-controller``, ``bench``, ``report``, ``regimes``,
``strategies``.  Every error is one line on stderr that starts with ``error:`` and a non-zero
exit status (2: bad input, i.e. a mistake in the command line or a run file or a value the
library refuses; 1: any other failure while running);
``--debug`` prints the traceback too.  Lists, strategy options (``--set``) and run files
(``--config run.toml``) are parsed by :mod:`ardm_infer.cli_options`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__, code_version
from .cli_bench import PDES, cmd_bench
from .cli_options import CliError, check_device, check_out, config_fields, strategy_lookahead

# ----------------------------------------------------------------------------- parser pieces


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: x)`` after options with a meaningful default (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.default in (None, False, argparse.SUPPRESS)
            or isinstance(action.default, list)
        ):
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CliError` (one ``error:`` line)."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{self.prog}: {message} (see {self.prog} --help)")


def _int_at_least(minimum: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    convert.__name__ = f"integer >= {minimum}"
    return convert


_POSITIVE = _int_at_least(1)
_NONNEGATIVE = _int_at_least(0)


def _check_ship(folder: str | None) -> None:
    """``--ship`` needs a folder (it no longer writes into the installed package)."""
    if folder == "":
        raise CliError(
            "--ship needs a FOLDER: it copies the artifact there under the shipped names and "
            "no longer writes into the installed package (to update the shipped set, give "
            "ardm_infer/checkpoints of a git checkout)"
        )
    if folder is not None:
        check_out(Path(folder), "--ship")


def _ship(files: Sequence[str | Path], folder: str, stem: str) -> None:
    """Copy an artifact (weights and card) into ``folder`` under the shipped names."""
    target = check_out(Path(folder), "--ship")
    for src in map(Path, files):
        shutil.copy2(src, target / f"{stem}{src.suffix}")
    print(f"copied as {stem}.safetensors / {stem}.json to {target}")


# ----------------------------------------------------------------------------- data, training


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


def _cmd_train_ardm(args: argparse.Namespace) -> int:
    from .ardm.training import ardm_presets, train_ardm
    from .data import default_data_config, load_dataset

    presets = ardm_presets(args.pde)
    if args.preset not in presets:
        raise CliError(
            f"--preset: unknown preset {args.preset!r}; expected one of {sorted(presets)}"
        )
    _check_ship(args.ship)
    device = check_device(args.device)
    out = check_out(Path(args.out or f"runs/ardm-{args.pde}-{args.preset}"))
    model_config, train_config = presets[args.preset]
    if args.steps is not None:
        train_config = train_config.__class__(**{**train_config.to_dict(), "steps": args.steps})
    dataset = load_dataset(default_data_config(args.pde), cache_dir=args.cache_dir, progress=True)
    result = train_ardm(
        dataset,
        model_config,
        train_config,
        out,
        resume=not args.no_resume,
        progress=True,
        device=device,
    )
    print(
        f"trained {result['step']} steps in {result['wall_seconds']:.0f} s; "
        f"final train loss {result['final_train_loss']:.4f}, "
        f"val loss {result['final_val_loss']:.4f}"
    )
    print(f"artifact: {result['weights_path']} (card {result['card_path']})")
    if args.ship:
        _ship([result["weights_path"], result["card_path"]], args.ship, f"ardm-{args.pde}")
    return 0


def _cmd_train_controller(args: argparse.Namespace) -> int:
    from .ardm.pretrained import load_ardm
    from .controller.training import controller_presets, train_controller
    from .data import DataConfig, load_dataset
    from .observe import parse_regime

    presets = controller_presets(args.pde)
    if args.preset not in presets:
        raise CliError(
            f"--preset: unknown preset {args.preset!r}; expected one of {sorted(presets)}"
        )
    _check_ship(args.ship)
    device = check_device(args.device)
    out = check_out(Path(args.out or f"runs/controller-{args.pde}-{args.preset}"))
    network_config, train_config = presets[args.preset]
    changes: dict[str, Any] = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.regimes in ("randomised", "presets"):
        changes["regimes"] = args.regimes
    elif args.regimes is not None:
        try:
            changes["regimes"] = parse_regime(args.regimes, pde=args.pde).spec()
        except ValueError as err:
            raise CliError(f"--regimes {args.regimes!r}: {err}") from None
    network_changes: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CliError(f"--set {item!r}: expected FIELD=VALUE (VALUE in JSON, e.g. 0.25)")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text.strip()
        if key in type(train_config).__dataclass_fields__:
            changes[key] = value
        elif key in type(network_config).__dataclass_fields__:
            network_changes[key] = value
        else:
            raise CliError(
                f"--set {key!r}: not a field of the training or network config; training: "
                f"{sorted(type(train_config).__dataclass_fields__)}, network: "
                f"{sorted(type(network_config).__dataclass_fields__)}"
            )
    try:
        if changes:
            train_config = type(train_config).from_dict({**train_config.to_dict(), **changes})
        if network_changes:
            network_config = type(network_config).from_dict(
                {**network_config.to_dict(), **network_changes}
            )
    except (TypeError, ValueError) as err:
        raise CliError(f"--set: {err}") from None
    ardm = load_ardm(args.ardm or args.pde, device=device)
    dataset = load_dataset(
        DataConfig.from_dict(ardm.card["data_config"]), cache_dir=args.cache_dir, progress=True
    )
    result = train_controller(
        ardm,
        dataset,
        network_config,
        train_config,
        out,
        resume=not args.no_resume,
        stop_after=args.stop_after,
        device=device,
    )
    if not result["completed"]:
        print(f"stopped at step {result['step']}; checkpoint in {out} (rerun to continue)")
        return 0
    print(f"controller: {result['weights_path']} (card {result['card_path']})")
    if args.ship:
        _ship([result["weights_path"], result["card_path"]], args.ship, f"controller-{args.pde}")
    return 0


# ----------------------------------------------------------------------------- report, lists


def _cmd_report(args: argparse.Namespace) -> int:
    from .bench.report import format_table, load_results, summary, write_report

    target = Path(args.dir)
    if target.is_file():
        paths = [target]
    elif target.is_dir():
        paths = [target / "results.nc"] if (target / "results.nc").exists() else []
        paths += sorted(target.glob("*/results.nc"))
        if not paths:
            raise CliError(f"no results.nc in {target} or its subfolders")
    else:
        raise CliError(f"{target}: no such file or folder")
    for path in paths:
        ds = load_results(path)
        print(f"\n{ds.attrs.get('pde')}: {path}")
        print(format_table(summary(ds)))
        print(f"report: {write_report(ds, check_out(path.parent, 'report folder'))}")
    return 0


def _cmd_regimes(args: argparse.Namespace) -> int:
    from .observe import PRESET_NAMES, parse_regime, preset

    if args.spec:
        try:
            regime = parse_regime(args.spec, pde=args.pde)
        except ValueError as err:
            raise CliError(f"regime {args.spec!r}: {err}") from None
        print(f"{args.spec!r} -> {regime.spec()}")
        return 0
    print(f"named regimes for pde={args.pde}:")
    for name in PRESET_NAMES:
        print(f"  {name:13s} {preset(name, args.pde).spec()}")
    return 0


def _default_text(value: Any) -> str:
    import dataclasses

    if value is dataclasses.MISSING:
        return "(required)"
    return repr(value)


def _plain(text: str) -> str:
    """Docstring text without reST markup (``x`` -> x, :class:`~a.B` -> B)."""
    text = re.sub(r":[a-z]+:`~?(?:[\w.]*\.)?([\w]+)`", r"\1", text)
    return text.replace("``", "")


def _describe_strategy(name: str) -> list[str]:
    from .strategies import get_strategy

    strategy = get_strategy(name)
    doc = (type(strategy).__doc__ or "").strip().splitlines()
    ahead = strategy_lookahead(name)
    if ahead is not None:
        ahead_text = f"{ahead} (with its defaults)"
    elif getattr(strategy, "lookahead", None) is not None:  # depends on a required option
        rule = (strategy.lookahead.__doc__ or "").strip().splitlines()
        ahead_text = f"depends on its options: {_plain(rule[0]) if rule else 'see its docs'}"
    else:
        ahead_text = "? (not declared)"
    lines = [f"{name}: {_plain(doc[0]) if doc else ''}".rstrip(), f"  look-ahead: {ahead_text}"]
    fields = config_fields(strategy.Config)
    lines.append("  options:" if fields else "  options: none")
    for f in fields:
        head = f"    {f.name}: {f.type} = {_default_text(f.default)}"
        lines.append(head + (f"   range: {f.range}" if f.range else ""))
        if f.doc:
            wrapped = textwrap.wrap(_plain(f.doc), width=92)
            lines += [f"        {w}" for w in wrapped]
    return lines


def _cmd_strategies(args: argparse.Namespace) -> int:
    from .strategies import available_strategies

    for name in args.names or available_strategies():
        print("\n".join(_describe_strategy(name)), end="\n\n")
    print(
        "look-ahead: frames of future observations a strategy may read (0: a filter). "
        "Set options with --set <strategy>.<option>=<value> or [options.<strategy>] in a "
        "run file (ardm-infer bench --help)."
    )
    return 0


# ----------------------------------------------------------------------------- the parser

_BENCH_EPILOG = """\
lists: --strategies forecast,enkf (names separated by ','); --regimes 'dense;sparse'
(regimes separated by ';', since a spec contains commas: --regimes 'dense;stride=16,
every=1, sigma=0.02'), or one --regime per regime. The old --regimes dense,sparse still
works (deprecated).

run file (--config run.toml): a [bench] table with any of pde, preset, strategies,
regimes (arrays), horizon, trajectories, members, seed, out, resume, workers, executor,
threads, device, ardm, controller, figures; and [options.<strategy>] tables of Config
fields, e.g.

    [bench]
    strategies = ["forecast", "dps"]
    regimes = ["sparse", "stride=16, every=1, sigma=0.02"]
    horizon = 64
    [options.dps]
    scale = 2.0

Options on the command line override the file; the file's text is recorded in results.nc
(attribute cli_request) and copied to <out>/run.toml. 'ardm-infer strategies' lists every
strategy's options."""


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, print the traceback as well",
    )


def _add_ship(parser: argparse.ArgumentParser, stem: str) -> None:
    parser.add_argument(
        "--ship",
        metavar="FOLDER",
        nargs="?",
        const="",
        default=None,
        help=f"also copy the artifact into FOLDER as {stem}-<pde>.safetensors/.json (the "
        "shipped names; to update the set shipped with the package, name its source folder "
        "ardm_infer/checkpoints in a git checkout)",
    )


def _data_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="generate (or read from cache) and summarise a data set")
    p.add_argument(
        "--pde", choices=["ks", "kolmogorov", "lorenz96"], default="ks", help="the system"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache root (default: $ARDM_INFER_CACHE or the user cache dir)",
    )
    p.add_argument("--train", type=_POSITIVE, default=None, help="train trajectories")
    p.add_argument("--val", type=_POSITIVE, default=None, help="validation trajectories")
    p.add_argument("--test", type=_POSITIVE, default=None, help="test trajectories")
    p.add_argument("--frames", type=_POSITIVE, default=None, help="frames per trajectory")
    p.add_argument("--seed", type=_NONNEGATIVE, default=None, help="base seed of the splits")
    p.add_argument("--no-cache", action="store_true", help="generate without reading/writing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)


def _train_parsers(sub: Any) -> None:
    p = sub.add_parser("train-ardm", help="train an ARDM denoiser (resumable)")
    p.add_argument(
        "--pde", choices=["ks", "kolmogorov", "lorenz96"], default="ks", help="the system"
    )
    p.add_argument(
        "--preset", default="default", help="model/training preset: 'default' or 'smoke'"
    )
    p.add_argument("--steps", type=_POSITIVE, default=None, help="override the number of steps")
    p.add_argument("--out", default=None, help="run folder (default: runs/ardm-<pde>-<preset>)")
    p.add_argument("--cache-dir", default=None, help="data cache root")
    p.add_argument("--device", default=None, help="torch device to train on (default: cpu)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    _add_ship(p, "ardm")
    p.set_defaults(func=_cmd_train_ardm)

    p = sub.add_parser("train-controller", help="train the amortised controller (resumable)")
    p.add_argument("--pde", choices=list(PDES), default="ks", help="the system")
    p.add_argument(
        "--preset",
        default="default",
        help="network/training preset: 'default', 'analysis' or 'smoke'",
    )
    p.add_argument(
        "--ardm",
        default=None,
        help="the ARDM to train against: 'ks', 'kolmogorov' or a .safetensors artifact path "
        "(default: the shipped ARDM of --pde)",
    )
    p.add_argument(
        "--regimes",
        default=None,
        help="'randomised' (wide distribution drawn per chain), 'presets' (the six named "
        "regimes drawn per chain) or one regime (preset name or spec); default: the preset's",
    )
    p.add_argument("--steps", type=_POSITIVE, default=None, help="override the number of steps")
    p.add_argument(
        "--set",
        action="append",
        metavar="FIELD=VALUE",
        help="override one field of the preset's training or network config (VALUE in JSON; "
        "repeatable), e.g. --set chain_reset=0.25 --set active_substeps=2",
    )
    p.add_argument(
        "--stop-after",
        type=_POSITIVE,
        default=None,
        help="checkpoint and stop after this many steps (resume later, or finish early with "
        "--steps equal to it)",
    )
    p.add_argument(
        "--out", default=None, help="run folder (default: runs/controller-<pde>-<preset>)"
    )
    p.add_argument("--cache-dir", default=None, help="data cache root")
    p.add_argument("--device", default=None, help="torch device to train on (default: cpu)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    _add_ship(p, "controller")
    p.set_defaults(func=_cmd_train_controller)


def _bench_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run strategies x regimes and score them (default: the quick KS benchmark)",
        description="Run strategies x regimes on held-out test trajectories and score them;\n"
        "writes results.nc, summary.csv, report.md and figures/ in --out.",
        epilog=_BENCH_EPILOG,
        formatter_class=lambda prog: _RawEpilogFormatter(prog),
    )
    p.add_argument("--config", metavar="RUN.toml", default=None, help="a run file (see below)")
    p.add_argument(
        "--preset",
        default=None,
        help="sizes: 'quick', 'paper' (the evaluation protocol), or 'first-look' (KS, an "
        "uncertain start, sparse observations with noise 0.05, forecast vs enkf over 64 "
        "frames; about a minute) (default: quick)",
    )
    p.add_argument("--pde", choices=list(PDES), default=None, help="default: ks; 'paper' runs both")
    p.add_argument(
        "--strategies", default=None, help="names separated by ',' (default: every registered)"
    )
    p.add_argument(
        "--regimes",
        default=None,
        help="'all' (default), or preset names and specs separated by ';'",
    )
    p.add_argument(
        "--regime",
        action="append",
        metavar="SPEC",
        help="one regime (preset name or spec); repeat for more",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="STRATEGY.OPTION=VALUE",
        help="a strategy Config option, e.g. dps.scale=2 (repeatable; see 'ardm-infer strategies')",
    )
    p.add_argument("--horizon", type=_POSITIVE, default=None, help="frames (default: the preset's)")
    p.add_argument(
        "--trajectories",
        type=_POSITIVE,
        default=None,
        help="test trajectories (default: the preset's)",
    )
    p.add_argument(
        "--members", type=_POSITIVE, default=None, help="members (default: the preset's)"
    )
    p.add_argument("--seed", type=_NONNEGATIVE, default=None, help="the run's seed (default: 0)")
    p.add_argument(
        "--initial",
        default=None,
        help="initial condition (docs/protocol.md): 'exact', 'climatology' or "
        "'background(error=0.05, spinup=8)' (default: the preset's: the protocol's background)",
    )
    p.add_argument(
        "--untuned",
        action="store_true",
        default=None,
        help="run every strategy at its library defaults instead of the shipped tuned settings",
    )
    p.add_argument(
        "--tuned",
        metavar="FILE.json",
        default=None,
        help="tuned settings written by 'ardm-infer tune' (default: the shipped ones)",
    )
    p.add_argument(
        "--start",
        type=_NONNEGATIVE,
        default=None,
        help="first test frame used (the perturbed one for a background start; default: 0)",
    )
    p.add_argument(
        "--ardm",
        default=None,
        help="'ks', 'kolmogorov' or an ARDM artifact path (default: --pde's)",
    )
    p.add_argument(
        "--controller",
        default=None,
        help="controller artifact path (or shipped name) for the 'controller' strategy "
        "(default: the shipped controller of --pde)",
    )
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    p.add_argument("--out", default=None, help="output folder (default: results/bench-<preset>)")
    p.add_argument(
        "--resume", action="store_true", default=None, help="reuse finished cells in --out"
    )
    p.add_argument(
        "--workers", type=_POSITIVE, default=None, help="local worker processes (default: 1)"
    )
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="default: local")
    p.add_argument(
        "--threads",
        type=_POSITIVE,
        default=None,
        help="torch threads per cell (default: unchanged)",
    )
    p.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        default=None,
        help="write report.md and summary.csv without figures",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_bench)


class _RawEpilogFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, the epilog's layout kept."""


def _other_parsers(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild the table, report and figures from saved results")
    p.add_argument("dir", help="a bench output folder (or a results.nc file)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("regimes", help="list the named observation regimes or parse a spec")
    p.add_argument("spec", nargs="?", default=None, help="a preset name or spec string")
    p.add_argument("--pde", choices=list(PDES), default="ks", help="the system")
    p.set_defaults(func=_cmd_regimes)

    p = sub.add_parser(
        "strategies",
        help="list the strategies: look-ahead and Config options with defaults and ranges",
    )
    p.add_argument("names", nargs="*", help="strategies to show (default: all)")
    p.set_defaults(func=_cmd_strategies)

    from .cli_tune import add_tune_parser

    add_tune_parser(sub, _POSITIVE)


def build_parser() -> argparse.ArgumentParser:
    """The ``ardm-infer`` argument parser with all subcommands."""
    parser = _Parser(
        prog="ardm-infer",
        description="Data assimilation with autoregressive diffusion models.",
        formatter_class=_Formatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"ardm-infer {__version__} (code {code_version()})"
    )
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in (_data_parser, _train_parsers, _bench_parser, _other_parsers):
        add(sub)
    for p in sub.choices.values():
        if p.formatter_class is argparse.HelpFormatter:
            p.formatter_class = _Formatter
        _add_debug(p)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, KeyError):
        text = f"KeyError: {text}"
    elif not isinstance(err, ValueError | TypeError | OSError):
        text = f"{type(err).__name__}: {text}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ardm-infer``; returns the exit status.

    Errors print one line starting with ``error:`` on stderr and return 2 for bad input (an
    option, a run file, or a value the library refuses with a ``ValueError``/``TypeError``)
    or 1 for any other failure while running; ``--debug`` prints the traceback first.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
        return int(args.func(args))
    except SystemExit as exit_:  # --help and --version
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            traceback.print_exc()
        hint = "" if debug or isinstance(err, CliError) else " (--debug shows the traceback)"
        print(f"error: {_one_line(err)}{hint}", file=sys.stderr)
        return 2 if isinstance(err, ValueError | TypeError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
