"""``ardm-infer bench``: merge the command line, a run file and a preset; check; run; record.

Precedence: an option given on the command line, else the run file's ``[bench]`` value,
else the preset's (``--preset``: the sizes of ``bench_preset`` or a named run of
:data:`RECIPES`).  Everything is checked (strategy names, regimes, options, the output
folder, the device) before a model is loaded.  After the run, the merged request (and the run
file's text) is stored in ``results.nc`` as the attribute ``cli_request``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli_options import (
    CliError,
    check_device,
    check_out,
    load_run_file,
    parse_sets,
    regime_list,
    split_names,
)
from .initial import parse_initial

__all__ = ["PDES", "RECIPES", "cmd_bench"]

PDES = ("ks", "kolmogorov")

RECIPES: dict[str, dict[str, Any]] = {
    "first-look": {
        "pde": "ks",
        "strategies": ["forecast", "enkf"],
        "regimes": ["sparse"],
        "horizon": 64,
        "trajectories": 4,
        "members": 8,
        "threads": 1,
    },
}
"""Named runs of ``ardm-infer bench --preset`` that are not sizes of ``bench_preset``: the
values are defaults below the command line and the run file; the benchmark runs them with
the ``quick`` sizes for everything they do not set, unless ``bench_preset`` knows the name."""


def _known_bench_preset(name: str, pde: str) -> Any | None:
    from .bench.core import bench_preset

    try:
        return bench_preset(name, pde)
    except ValueError:
        return None


def _pick(args: argparse.Namespace, file: dict[str, Any], key: str, default: Any = None) -> Any:
    """The command line's value of ``key`` if given, else the run file's, else ``default``."""
    value = getattr(args, key, None)
    return value if value is not None else file.get(key, default)


def _bench_lists(args: argparse.Namespace, file: dict[str, Any], recipe: dict[str, Any]):
    """``(strategies or None, regimes or "all")`` from the command line, file and recipe."""
    from .observe import PRESET_NAMES

    if args.strategies is not None:
        strategies = split_names(args.strategies, "--strategies")
    else:
        value = file.get("strategies", recipe.get("strategies"))
        strategies = split_names(value, "strategies") if isinstance(value, str) else value
        if strategies is not None and not strategies:
            raise CliError("strategies in the run file is empty; give at least one name")
    values = ([args.regimes] if args.regimes is not None else []) + list(args.regime or [])
    if values:
        if [v.strip() for v in values] == ["all"]:
            return strategies, "all"
        return strategies, regime_list(values, "--regimes", PRESET_NAMES)
    value = file.get("regimes", recipe.get("regimes", "all"))
    if isinstance(value, str):
        if value.strip() == "all":
            return strategies, "all"
        return strategies, regime_list([value], "regimes", PRESET_NAMES)
    items = [v.strip() for v in value if v.strip()]  # an array: one regime per item
    if not items:
        raise CliError("regimes in the run file is empty; give 'all' or a list of regimes")
    return strategies, items


def _tuned_choice(args: argparse.Namespace, file: dict[str, Any]) -> bool | str:
    """True (the shipped tuned configurations), False (``--untuned``) or a file (``--tuned``)."""
    untuned = bool(getattr(args, "untuned", False)) or file.get("tuned") is False
    path = getattr(args, "tuned", None)
    if path is None and isinstance(file.get("tuned"), str):
        path = file["tuned"]
    if untuned and path is not None:
        raise CliError("--untuned runs the library defaults and --tuned names a file: pick one")
    if path is not None:
        if not Path(path).is_file():
            raise CliError(f"--tuned: no such file {path}")
        return str(path)
    return not untuned


def _bench_request(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``benchmark`` needs, merged from the command line, run file and preset."""
    run = load_run_file(args.config) if args.config else None
    file = run.bench if run else {}
    preset = _pick(args, file, "preset", "quick")
    recipe = RECIPES.get(preset, {})
    if preset not in RECIPES and _known_bench_preset(preset, "ks") is None:
        raise CliError(
            f"preset {preset!r} is unknown; expected quick, paper or {', '.join(RECIPES)}"
        )
    pde = _pick(args, file, "pde", recipe.get("pde"))
    if pde is not None and pde not in PDES:
        raise CliError(f"pde {pde!r} is unknown; expected one of {', '.join(PDES)}")
    strategies, regimes = _bench_lists(args, file, recipe)
    request: dict[str, Any] = {
        "preset": preset,
        "pdes": [pde] if pde else (list(PDES) if preset == "paper" else ["ks"]),
        "strategies": strategies,
        "regimes": regimes,
        "seed": _pick(args, file, "seed", 0),
        "initial": _pick(args, file, "initial", recipe.get("initial")),
        "tuned": _tuned_choice(args, file),
        "start": _pick(args, file, "start", recipe.get("start", 0)),
        "resume": bool(_pick(args, file, "resume", False)),
        "workers": _pick(args, file, "workers", 1),
        "executor": _pick(args, file, "executor", "local"),
        "figures": bool(_pick(args, file, "figures", True)),
        "ardm": _pick(args, file, "ardm"),
        "device": check_device(_pick(args, file, "device")),
        "threads": _pick(args, file, "threads", recipe.get("threads")),
        "run_file": None if run is None else str(run.path),
        "run_file_text": None if run is None else run.text,
    }
    for key in ("horizon", "trajectories", "members"):
        request[key] = _pick(args, file, key, recipe.get(key))
    for key in ("horizon", "trajectories", "members", "workers", "threads"):
        if request[key] is not None and not (isinstance(request[key], int) and request[key] >= 1):
            raise CliError(f"{key} must be an integer >= 1, got {request[key]!r}")
    try:
        if request["initial"] is not None:
            request["initial"] = parse_initial(request["initial"]).spec()
    except (TypeError, ValueError) as err:
        raise CliError(f"initial: {err}") from None
    if not (isinstance(request["start"], int) and request["start"] >= 0):
        raise CliError(f"start must be an integer >= 0, got {request['start']!r}")
    if request["executor"] not in ("local", "ray"):
        raise CliError(f"executor must be 'local' or 'ray', got {request['executor']!r}")
    options = {name: dict(values) for name, values in recipe.get("options", {}).items()}
    for name, values in (run.options if run else {}).items():
        options[name] = {**options.get(name, {}), **values}
    for name, values in parse_sets(args.set or []).items():
        options[name] = {**options.get(name, {}), **values}
    controller = _pick(args, file, "controller")
    if controller is not None:
        options["controller"] = {**options.get("controller", {}), "controller": controller}
    request["strategy_options"] = options
    out = _pick(args, file, "out")
    request["out"] = Path(out) if out else Path(f"results/bench-{preset}")
    return request


def _check_bench_request(request: dict[str, Any]) -> None:
    """Clear errors before any model is loaded: names, regimes, options, the folder."""
    from .observe import parse_regime
    from .strategies import available_strategies, get_strategy

    names = request["strategies"] or available_strategies()
    for name in names:
        try:
            get_strategy(name)
        except ValueError as err:  # it names the registered strategies
            raise CliError(str(err)) from None
    for name in request["strategy_options"]:
        if name not in names:
            raise CliError(
                f"options are set for {name!r}, which is not among the strategies run "
                f"({', '.join(names)})"
            )
    if request["regimes"] != "all":
        for pde in request["pdes"]:
            for spec in request["regimes"]:
                try:
                    parse_regime(spec, pde=pde)
                except ValueError as err:
                    raise CliError(f"regime {spec!r}: {err}") from None
    check_out(request["out"])


def _benchmark_kwargs(request: dict[str, Any], pde: str, out: Path) -> dict[str, Any]:
    from .bench import benchmark

    known = _known_bench_preset(request["preset"], pde) is not None
    kwargs = {
        "pde": pde,
        "strategies": request["strategies"],
        "regimes": request["regimes"],
        "horizon": request["horizon"],
        "trajectories": request["trajectories"],
        "members": request["members"],
        "seed": request["seed"],
        "initial": request["initial"],
        "start": request["start"],
        "out": out,
        "preset": request["preset"] if known else "quick",
        "ardm": request["ardm"],
        "resume": request["resume"],
        "workers": request["workers"],
        "executor": request["executor"],
        "threads": request["threads"],
        "strategy_options": request["strategy_options"],
        "tuned": request["tuned"],
    }
    if request["device"] is not None:
        if "device" not in inspect.signature(benchmark).parameters:
            raise CliError(
                "--device: this version of ardm_infer.benchmark() does not take a device; "
                "run on the CPU (leave --device out)"
            )
        kwargs["device"] = request["device"]
    return kwargs


def _record_request(ds: Any, out: Path, request: dict[str, Any], argv: Sequence[str]) -> None:
    """Store the command (and the run file's text) in ``results.nc`` and beside it."""
    record = {
        "argv": list(argv),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in request.items()},
    }
    ds.attrs["cli_request"] = json.dumps(record, sort_keys=True, default=str)
    path = out / "results.nc"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.cli.tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    os.replace(tmp, path)
    if request["run_file_text"] is not None:
        (out / "run.toml").write_text(request["run_file_text"], encoding="utf-8")


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _against_forecast(ds: Any) -> str:
    """One line: in how many regimes the forecast is significantly worse than the best."""
    from .bench.stats import beats_reference

    verdicts = beats_reference(ds)
    if all(best is None for best, _ in verdicts.values()):
        return "forecast vs best: (no forecast, or nothing else to compare)"
    wins = sum(significant for _, significant in verdicts.values())
    parts = [
        f"{regime} {best}{'*' if significant else ''}"
        for regime, (best, significant) in verdicts.items()
        if best is not None
    ]
    return (
        f"forecast significantly worse than the best strategy (time-mean RMSE, paired 95%): "
        f"{wins}/{len(verdicts)} regimes [{', '.join(parts)}; *: significant]"
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import benchmark
    from .bench.report import format_table, summary, write_report

    request = _bench_request(args)
    _check_bench_request(request)
    root = request["out"]
    for pde in request["pdes"]:
        out = check_out(root / pde if len(request["pdes"]) > 1 else root)
        ds = benchmark(**_benchmark_kwargs(request, pde, out), progress=not args.quiet)
        _record_request(ds, out, request, getattr(args, "argv", []))
        members = _plural(int(ds.attrs["members"]), "member")
        trajectories = _plural(ds.sizes["trajectory"], "trajectory", "trajectories")
        horizon, seed = ds.attrs["horizon"], ds.attrs["seed"]
        print(f"\n{pde}: {members}, horizon {horizon}, {trajectories}, seed {seed}")
        print(format_table(summary(ds)))
        print(_against_forecast(ds))
        report = write_report(ds, out, figures=request["figures"])
        print(f"report: {report}")
        print(f"results: {out / 'results.nc'} (table: {out / 'summary.csv'})")
    return 0
