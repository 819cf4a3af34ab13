"""The one-call benchmark: every strategy on every regime, scored the same way (docs/design.md §7).

:func:`benchmark` runs a grid of *cells*, one per (strategy, regime), on held-out test
trajectories of a system (:mod:`ardm_infer.systems`) with a trained ARDM or the system's
numerical solver (``ardm="solver"``), and returns an :class:`xarray.Dataset`:

coords
    ``strategy`` (labels) with, per strategy, ``strategy_name`` (the registered name),
    ``lookahead`` (frames past the current one the strategy may read, from its
    ``lookahead(config)``; -1 where it declares none) and ``strategy_config`` (JSON of the
    Config that ran; :func:`strategy_configs` reads them back), ``regime`` (names or spec
    strings), ``trajectory``,
    ``time`` (1..H, the frame index after the k context frames), ``rank`` (0..members),
    ``field_time`` (the times at which fields of trajectory 0 are stored: every frame for
    KS, a few for Kolmogorov), ``channel``, ``x`` (and ``y`` in 2-D).
per (strategy, regime, trajectory, time)
    ``rmse`` (ensemble mean vs truth over the full state), ``crps`` and ``crps_fair``
    (spatial means), ``spread`` (square root of the spatially averaged unbiased ensemble
    variance, without the sqrt((N+1)/N) factor), ``corr`` (Pearson correlation of ensemble
    mean and truth), ``spectrum_error`` (largest relative error of the member-averaged
    energy spectrum over wavenumbers carrying >= 1 % of the energy), ``physics`` (KS:
    the system's diagnostic, e.g. KS total variation, Kolmogorov dissipation ν⟨ω²⟩;
    member average, physical units),
    ``blow_up`` (any member non-finite or beyond 1e3).
per (trajectory, time)
    ``truth_physics``; per (regime, time) ``observed``.
per (strategy, regime, trajectory)
    ``high_corr_time`` (frames until the correlation first drops below 0.8).
per (strategy, regime, rank)
    ``rank_hist`` (counts over trajectories, times and points; random tie-breaking).
per (strategy, regime)
    ``config_source`` (where the cell's settings came from: ``"tuned"``, ``"tuned,
    untrusted (<n> trials)"``, ``"default"``, ``"given"``, possibly with ``", capped by the
    preset"``), ``cell_config`` (JSON of the Config that ran), ``cell_lookahead``;
    ``failed`` (bool) and ``failure`` (``""``, or the exception that stopped the cell, e.g.
    ``"ValueError: dps needs an ARDM process"``; a failed cell has NaN metrics, no blow-up,
    zero rank counts, and only ``wall_seconds`` of its costs);
    cost: ``wall_seconds``, ``ms_per_frame`` (wall time per assimilated frame, all
    trajectories and members of the cell at once), ``denoiser_calls``, ``vjps``,
    ``peak_memory_bytes``.
fields of trajectory 0
    ``truth_field`` (field_time, channel, *space), ``mean_field`` (strategy, regime,
    field_time, channel, *space), ``obs_mask`` (regime, field_time, channel, *space).
attrs
    ``pde``, ``members``, ``horizon``, ``seed``, ``config`` (JSON of the whole run),
    ``code_version``, ``created``, ``seconds``, ``cells_reused``, ``cells_failed``, ``tuned``
    (which tuned settings the run used, or why none).

Weighted strategies (``smc``) are scored with their weights at each frame (``rmse``,
``crps``, ``spread``, ``corr`` and the fields use the weighted mean); the rank histogram and
the spectra use the particles unweighted.

Randomness.  Cell (s, r) draws its observations from a generator seeded by (seed, r) only,
so every strategy sees the *same* observations of a regime, and runs the strategy with a
generator seeded by (seed, r) as well (common random numbers: the unguided and guided
samplers draw the same noise, so differences between strategies are not sampling noise).
A cell's result depends only on its inputs, never on which executor ran it or in what
order (sequential, ``workers`` local processes, or Ray).  The truth and observations are
drawn on the CPU; ``device`` says where the strategies run.

Failures.  An exception inside a strategy (a refused process, a non-finite ensemble...)
fails its cell only: it is recorded (``failed``, ``failure``), reported on stderr, and the
other cells run.

Persistence.  With ``out`` set, each finished cell is written atomically to
``out/cells/<label>__<regime>__<key>.nc`` (netCDF via h5netcdf) with its full configuration
and the checksum of its data; ``resume=True`` reuses cells whose key and checksum match, so
an interrupted run (Ctrl-C, kill) loses at most the cells in flight.  The combined result is
``out/results.nc``.  The folder is locked by the run writing it and refuses a run of another
configuration unless ``resume`` or ``overwrite`` is set (:mod:`ardm_infer.bench.folder`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import code_version
from ..initial import PROTOCOL_INITIAL, parse_initial
from ..observe import PRESET_NAMES, parse_regime
from ..strategies.base import available_strategies
from ..systems import get_system, lookup_system
from .cells import CELL_FORMAT, SOLVER, CellTask, derived_seed, load_process, run_cell, score
from .folder import ResultFolder, ResultFolderError
from .progress import Progress, progress_mode
from .specs import StrategySpec, cell_specs, configured_spec, jsonable, lookahead, strategy_spec

__all__ = [
    "CELL_FORMAT",
    "SOLVER",
    "BenchPreset",
    "CellTask",
    "ResultFolderError",
    "StrategySpec",
    "bench_preset",
    "benchmark",
    "combine_cells",
    "derived_seed",
    "run_cell",
    "score",
    "strategy_configs",
    "strategy_spec",
]


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class BenchPreset:
    """Sizes of a named benchmark run for one PDE.

    Attributes:
        horizon: frames assimilated after the context.
        trajectories: held-out test trajectories.
        members: ensemble members (particles for smc).
        strategy_options: per-strategy Config overrides (e.g. fewer vc iterations).
        field_times: how many frames of trajectory 0 to store as fields (None: all).
        initial: the initial condition (:func:`ardm_infer.initial.parse_initial`).
        strategies: the strategies run when ``benchmark(strategies=None)`` (None: all).
    """

    horizon: int
    trajectories: int
    members: int
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    field_times: int | None = None
    initial: str = "exact"
    strategies: tuple[str, ...] | None = None


BENCH_PACKAGES = ("xarray", "pandas", "matplotlib", "h5netcdf", "scipy", "arviz")
"""What the benchmark, its reports and figures need beyond the core (the ``bench`` extra)."""


def require_bench_extra() -> None:
    """``ImportError`` naming the missing packages and the extra that installs them."""
    import importlib.util

    missing = [name for name in BENCH_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"the benchmark needs {', '.join(missing)}: pip install 'ardm_infer[bench]'"
        )


QUICK_STRATEGIES = ("forecast", "controller", "dps", "enkf", "smc")
"""What ``quick`` runs: every strategy but vc, whose frame costs ~10x the forecast's at the
settings where it assimilates (at one L-BFGS iteration per window it equals the forecast)."""


def bench_preset(name: str, pde: str) -> BenchPreset:
    """The ``quick`` (default) or ``paper`` sizes for a system (``"ks"``, ``"kolmogorov"``,
    ``"lorenz96"``); the horizons and stored field frames come from the system
    (:mod:`ardm_infer.systems`).

    ``quick`` is sized to run five strategies on all six regimes of KS in about ten minutes
    on two CPU cores while telling them apart: the protocol's background start
    (:data:`~ardm_infer.initial.PROTOCOL_INITIAL`), 48 frames (KS; the gappy regimes see six
    observed frames), 8 test trajectories (a paired Student-t interval over 2 would need a
    difference 12.7 standard errors wide, over 8 it needs 2.4), 4 members, every strategy at
    its shipped tuned settings.  It leaves ``vc`` out (:data:`QUICK_STRATEGIES`): at one
    L-BFGS iteration per 2-frame window it equals the forecast to three digits on every
    regime (measured), and at settings where it assimilates its frame costs about ten
    forecast frames; name it in ``strategies`` to run it (capped at one iteration per
    2-frame window).
    ``paper`` is the evaluation protocol of docs/design.md §7 at the short horizon (KS 140,
    Kolmogorov 60 frames) with 8 trajectories and 16 members, every strategy at its tuned
    settings.
    """
    system = get_system(pde)
    if name == "quick":
        return BenchPreset(
            horizon=system.quick_horizon,
            trajectories=8,
            members=4,
            strategy_options={"vc": {"iterations": 1, "window": 2}},
            field_times=system.field_times,
            initial=PROTOCOL_INITIAL,
            strategies=QUICK_STRATEGIES,
        )
    if name == "paper":
        return BenchPreset(
            horizon=system.short_horizon,
            trajectories=8,
            members=16,
            field_times=system.field_times,
            initial=PROTOCOL_INITIAL,
        )
    raise ValueError(f"unknown benchmark preset {name!r}; expected 'quick' or 'paper'")


# ----------------------------------------------------------------------------- executors


def _run_local(tasks: list[CellTask], workers: int) -> Iterable[tuple[int, Any]]:
    if workers <= 1:
        for i, task in enumerate(tasks):
            yield i, run_cell(task)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(run_cell, task): i for i, task in enumerate(tasks)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _run_ray(tasks: list[CellTask], address: str | None) -> Iterable[tuple[int, Any]]:
    try:
        import ray
    except ImportError as err:
        raise ImportError("executor='ray' needs Ray: pip install 'ardm_infer[ray]'") from err
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_cell)
        refs = {remote.remote(task): i for i, task in enumerate(tasks)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield refs[done[0]], ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def combine_cells(cells: Sequence[Any], labels: Sequence[str], regimes: Sequence[str]) -> Any:
    """Assemble cell datasets into one (strategy, regime, ...) dataset.

    Variables with a ``strategy`` dimension are laid out on the (strategy, regime) grid
    (NaN for cells that were not run); per-regime variables (``observed``, ``obs_mask``)
    are taken from the first cell of each regime; the rest (truth) from the first cell.
    """
    import xarray as xr

    first = cells[0]
    per_cell = [name for name, v in first.data_vars.items() if "strategy" in v.dims]
    per_regime = [
        name for name, v in first.data_vars.items() if "regime" in v.dims and name not in per_cell
    ]
    shared = [name for name in first.data_vars if name not in per_cell and name not in per_regime]
    grid = xr.combine_by_coords(
        [c[per_cell] for c in cells],
        data_vars="all",
        coords="different",
        compat="no_conflicts",
        join="outer",
        combine_attrs="drop",
    )
    grid = grid.reindex(strategy=list(labels), regime=list(regimes))
    seen: dict[str, Any] = {}
    for c in cells:
        r = str(c.regime.values[0])
        seen.setdefault(r, c[per_regime])
    regime_part = xr.concat(
        [seen[r] for r in regimes if r in seen],
        dim="regime",
        data_vars="all",
        coords="different",
        compat="equals",
        join="outer",
    )
    merged = xr.merge(
        [grid, regime_part, first[shared]], compat="override", join="outer", combine_attrs="drop"
    )
    # Encodings read from cell files (e.g. a fixed string width '<U5' of one regime name)
    # must not be applied to the combined variables: they would truncate names on writing.
    return merged.drop_encoding()


# ----------------------------------------------------------------------------- the driver


def _regime_names(regimes: str | Sequence[str] | None, pde: str) -> list[str]:
    if regimes is None or regimes == "all":
        return list(PRESET_NAMES)
    if isinstance(regimes, str):
        regimes = [regimes]
    names = [str(r) for r in regimes]
    if not names:
        raise ValueError("regimes is empty; pass 'all', a preset name or spec strings")
    for name in names:
        parse_regime(name, pde=pde)  # clear errors up front
    if len(set(names)) != len(names):
        raise ValueError(f"regimes repeat: {names}")
    return names


def _field_times(horizon: int, count: int | None) -> tuple[int, ...]:
    if count is None or count >= horizon:
        return tuple(range(1, horizon + 1))
    return tuple(int(t) for t in np.unique(np.linspace(1, horizon, count).round().astype(int)))


def _strategy_specs(
    strategies: Sequence[Any] | None,
    options: dict[str, dict[str, Any]],
    pde: str,
) -> list[StrategySpec]:
    if isinstance(strategies, str):
        strategies = [strategies]
    names = available_strategies() if strategies is None else list(strategies)
    if not names:
        raise ValueError("strategies is empty; pass None for every registered strategy")
    specs = []
    for item in names:
        if isinstance(item, str) and item in options:
            item = configured_spec(item, options[item], pde)
        specs.append(strategy_spec(item, pde))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"strategy labels repeat: {labels}; label them with (label, name, config)")
    return specs


def _device_name(device: str | torch.device | None) -> str:
    if device is None:
        return "cpu"
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda'; got {device!r}"
        ) from err


def _check_sizes(**sizes: Any) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    for name in ("horizon", "trajectories", "members", "workers", "threads"):
        if name in sizes and sizes[name] < 1:
            raise ValueError(f"{name} must be >= 1, got {sizes[name]}")
    if sizes.get("start", 0) < 0:
        raise ValueError(f"start must be >= 0, got {sizes['start']}")


def _strategy_coordinates(
    specs: Sequence[StrategySpec],
    cells: dict[tuple[str, str], tuple[StrategySpec, str]] | None = None,
    regimes: Sequence[str] = (),
) -> dict[str, Any]:
    """Per-strategy coordinates: the registered name, the look-ahead (-1: undeclared; the
    largest over the regimes where tuned configurations differ) and the configuration the
    strategy was given before tuning (JSON)."""
    ahead = []
    for s in specs:
        values = [lookahead(cells[(s.label, r)][0]) for r in regimes] if cells else []
        ahead.append(max(values) if values else lookahead(s))
    return {
        "strategy_name": ("strategy", np.asarray([s.name for s in specs], dtype=str)),
        "lookahead": ("strategy", np.asarray(ahead, dtype=np.int64)),
        "strategy_config": (
            "strategy",
            np.asarray([json.dumps(jsonable(s.config), sort_keys=True) for s in specs], dtype=str),
        ),
    }


def _cell_variables(
    specs: Sequence[StrategySpec],
    cells: dict[tuple[str, str], tuple[StrategySpec, str]],
    regimes: Sequence[str],
) -> dict[str, Any]:
    """Per (strategy, regime): ``config_source``, ``cell_config`` (JSON of the Config that
    ran) and ``cell_lookahead``."""

    def grid(fn: Any, dtype: Any) -> Any:
        values = [[fn(*cells[(s.label, r)]) for r in regimes] for s in specs]
        return (("strategy", "regime"), np.asarray(values, dtype=dtype))

    return {
        "config_source": grid(lambda spec, source: source, str),
        "cell_config": grid(
            lambda spec, source: json.dumps(jsonable(spec.config), sort_keys=True), str
        ),
        "cell_lookahead": grid(lambda spec, source: lookahead(spec), np.int64),
    }


def strategy_configs(ds: Any) -> dict[str, dict[str, Any]]:
    """The configuration each strategy of a benchmark result ran, by label.

    Returns:
        ``{label: {"name": registered name, "config": {field: value}, "lookahead": int,
        "regimes": {regime: {"source": str, "config": {...}, "lookahead": int}}}}``: the
        configuration the strategy was given and, per regime, what ran there (``source``
        ``"tuned"``, ``"default"``, ...).  Results written before per-cell configurations
        existed have no ``"regimes"``; older ones still come from the ``config`` attribute,
        with look-ahead -1.
    """
    labels = [str(v) for v in ds["strategy"].values]
    if "strategy_config" in ds.coords:
        out = {
            label: {
                "name": str(ds["strategy_name"].values[i]),
                "config": json.loads(str(ds["strategy_config"].values[i])),
                "lookahead": int(ds["lookahead"].values[i]),
            }
            for i, label in enumerate(labels)
        }
        if "config_source" in ds:
            regimes = [str(r) for r in ds["regime"].values]
            for i, label in enumerate(labels):
                out[label]["regimes"] = {
                    r: {
                        "source": str(ds["config_source"].values[i, j]),
                        "config": json.loads(str(ds["cell_config"].values[i, j])),
                        "lookahead": int(ds["cell_lookahead"].values[i, j]),
                    }
                    for j, r in enumerate(regimes)
                }
        return out
    run = json.loads(ds.attrs["config"])
    by_label = {s["label"]: s for s in run["strategies"]}
    return {
        label: {
            "name": by_label[label]["name"],
            "config": by_label[label]["config"],
            "lookahead": -1,
        }
        for label in labels
    }


def _warn_older(results: Sequence[Any], out_dir: Path | None) -> None:
    older = sorted(
        {
            str(r.attrs.get("code_version"))
            for r in results
            if r is not None and r.attrs.get("code_version") != code_version()
        }
    )
    if older:
        reused = sum(r is not None for r in results)
        warnings.warn(
            f"reusing {reused} finished cells, some computed by code version(s) "
            f"{', '.join(older)} (this is {code_version()}); delete {out_dir}/cells to "
            "recompute them",
            stacklevel=3,
        )


def benchmark(
    pde: str = "ks",
    strategies: Sequence[Any] | None = None,
    regimes: str | Sequence[str] | None = "all",
    horizon: int | None = None,
    trajectories: int | None = None,
    members: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    preset: str = "quick",
    ardm: str | None = None,
    start: int = 0,
    resume: bool = False,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    threads: int | None = None,
    progress: bool | str = True,
    strategy_options: dict[str, dict[str, Any]] | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    initial: str | None = None,
    tuned: bool | str | Path = True,
) -> Any:
    """Run strategies × regimes on held-out test trajectories and score them.

    Args:
        pde: a registered system: ``"ks"``, ``"kolmogorov"`` or ``"lorenz96"``
            (:mod:`ardm_infer.systems`).
        strategies: names, Configs, ``(label, name[, config])`` tuples or
            :class:`StrategySpec`; default: every registered strategy.
        regimes: ``"all"`` (the six presets), or names / spec strings.
        horizon, trajectories, members: override the preset's sizes.
        seed: the run's seed (observations, sampler noise, tie breaking).
        out: folder for cell files, ``results.nc``; None keeps everything in memory.  The
            run locks it; see :mod:`ardm_infer.bench.folder`.
        preset: ``"quick"`` (default) or ``"paper"`` (see :func:`bench_preset`).
        ardm: the process: a shipped ARDM (``"ks"``, ``"kolmogorov"``), an artifact path, or
            ``"solver"`` (the system's numerical solver in normalised units; guided
            strategies refuse it).  Default: the system's shipped ARDM, else ``"solver"``.
        start: first frame of the test trajectories used as context.
        resume: reuse the verified finished cells in ``out`` whose configuration matches
            (a cell whose data fail their checksum, or that failed, is recomputed).
        workers: local processes running cells in parallel (1 = in this process).
        executor: ``"local"`` or ``"ray"``.
        ray_address: passed to ``ray.init`` (None: start a local Ray instance).
        threads: torch threads inside each cell (None: unchanged; workers default to 1).
        progress: True (bars on a terminal, one line per finished cell with its time and
            the ETA otherwise), ``"bars"``, ``"lines"`` or False.
        strategy_options: per-strategy-name Config overrides for names given as strings.
        device: where the strategies run (``"cpu"``, ``"cuda"``, ...; default CPU).  The
            truth and observations are drawn on the CPU, so they are the same everywhere.
        overwrite: let this run replace another run's results in ``out``.
        initial: the initial condition (docs/protocol.md; :mod:`ardm_infer.initial`):
            ``"exact"`` (the true context), ``"background(error=0.05, spinup=8)"`` (an
            uncertain start spun up by the process; ``start`` is then the frame perturbed) or
            ``"climatology"``.  Its ensemble has the run's ``members``.  Default: the
            preset's (``quick``: the protocol's background start).
        tuned: which settings the strategies named as plain strings run with.  True (the
            default): the configurations tuned on validation trajectories that ship with the
            package for this PDE and ARDM (:mod:`ardm_infer.tuning`), per (regime,
            strategy), falling back to the library defaults where there is no entry or the
            ARDM is not the one they were tuned on (the run says so).  False: the library
            defaults.  A path: a file written by :func:`ardm_infer.tuning.tune` (refused if it
            was tuned on another ARDM).  ``strategy_options`` are applied on top; strategies
            given as Configs, tuples or specs run exactly as given.  The result's
            ``config_source`` and ``cell_config`` say what each cell ran.

    Returns:
        The :class:`xarray.Dataset` described in the module docstring.
    """
    require_bench_extra()
    pde = get_system(pde).name
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    _check_sizes(workers=workers, seed=seed, start=start)
    if threads is not None:
        _check_sizes(threads=threads)
    if resume and out is None:
        raise ValueError("resume=True needs out= (the folder of the interrupted run)")
    if resume and overwrite:
        raise ValueError(
            "resume=True reuses the cells in out, overwrite=True deletes them: pick one"
        )
    device_name = _device_name(device)
    mode = progress_mode(progress)
    sizes = bench_preset(preset, pde)
    initial = parse_initial(sizes.initial if initial is None else initial).spec()
    horizon = sizes.horizon if horizon is None else horizon
    trajectories = sizes.trajectories if trajectories is None else trajectories
    members = sizes.members if members is None else members
    _check_sizes(horizon=horizon, trajectories=trajectories, members=members)
    horizon, trajectories, members = int(horizon), int(trajectories), int(members)
    seed, start, workers = int(seed), int(start), int(workers)
    options = {**sizes.strategy_options, **(strategy_options or {})}
    if strategies is None and sizes.strategies is not None:
        strategies = list(sizes.strategies)
    specs = _strategy_specs(strategies, options, pde)
    labels = [s.label for s in specs]
    regime_names = _regime_names(regimes, pde)
    if ardm is None:
        ardm = get_system(pde).shipped_ardm or SOLVER
    process, _ = load_process(ardm, pde)
    trained_on = process.card["data_config"]["pde"] if ardm != SOLVER else pde
    if lookup_system(trained_on) is not get_system(pde):
        raise ValueError(f"the ARDM {ardm!r} models {trained_on!r}, not pde={pde!r}")
    frame_shape = tuple(process.frame_shape)
    for name in regime_names:
        parse_regime(name, pde=pde).validate(frame_shape, horizon)
    from ..tuned_settings import resolve_tuned, tuned_entry

    payload, tuned_note = resolve_tuned(
        tuned, pde, process.card.get("sha256") if ardm != SOLVER else None
    )
    cells = cell_specs(
        strategies,
        specs,
        regime_names,
        sizes.strategy_options,
        strategy_options or {},
        lambda regime, name: None if payload is None else tuned_entry(payload, regime, name, pde),
        pde,
    )
    field_times = _field_times(horizon, sizes.field_times)
    if threads is None and (workers > 1 or executor == "ray"):
        threads = 1
    tasks = [
        CellTask(
            pde,
            ardm,
            r,
            cells[(s.label, r)][0],
            horizon,
            trajectories,
            members,
            seed,
            start,
            field_times,
            threads,
            progress=mode == "bars" and workers == 1 and executor == "local",
            device=device_name,
            initial=initial,
        )
        for r in regime_names
        for s in specs
    ]
    run_config = {
        "pde": pde,
        "preset": preset,
        "ardm": ardm,
        "strategies": [t.description()["strategy"] for t in tasks[: len(specs)]],
        "tuned": tuned_note,
        "cells": {
            f"{label} | {regime}": {"source": source, "config": jsonable(spec.config)}
            for (label, regime), (spec, source) in cells.items()
        },
        "regimes": regime_names,
        "horizon": horizon,
        "trajectories": trajectories,
        "members": members,
        "seed": seed,
        "start": start,
        "device": device_name,
        "initial": initial,
    }
    folder = ResultFolder(out).open(run_config, resume, overwrite) if out is not None else None
    try:
        results: list[Any] = [None] * len(tasks)
        if folder is not None and resume:
            results = [folder.read(task) for task in tasks]
        todo = [i for i, r in enumerate(results) if r is None]
        done_before = len(tasks) - len(todo)
        _warn_older(results, folder.path if folder is not None else None)
        report = Progress(len(tasks), done_before, f"bench {pde}", mode)
        pending = [tasks[i] for i in todo]
        if executor == "ray":
            runner = _run_ray(pending, ray_address)
        else:
            runner = _run_local(pending, workers)
        t0 = time.perf_counter()
        try:
            for j, ds in runner:
                i = todo[j]
                results[i] = ds
                if folder is not None:
                    folder.write(tasks[i], ds)
                report.cell_done(tasks[i].spec.label, tasks[i].regime, ds)
        finally:
            report.close()
        combined = combine_cells(results, labels, regime_names)
        combined = combined.assign_coords(_strategy_coordinates(specs, cells, regime_names))
        combined = combined.assign(_cell_variables(specs, cells, regime_names))
        combined.attrs.update(
            pde=pde,
            members=members,
            horizon=horizon,
            seed=seed,
            config=json.dumps(run_config, sort_keys=True),
            code_version=code_version(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=time.perf_counter() - t0,
            cells_reused=done_before,
            cells_failed=int(np.asarray(combined["failed"].values).sum()),
            tuned=tuned_note,
        )
        if folder is not None:
            folder.finish(combined)
    finally:
        if folder is not None:
            folder.release()
    return combined
