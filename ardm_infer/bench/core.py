"""The one-call benchmark: every strategy on every regime, scored the same way (docs/design.md §7).

:func:`benchmark` runs a grid of *cells*, one per (strategy, regime), on held-out test
trajectories of a PDE with a trained ARDM, and returns an :class:`xarray.Dataset`:

coords
    ``strategy`` (labels), ``regime`` (names or spec strings), ``trajectory``,
    ``time`` (1..H, the frame index after the k context frames), ``rank`` (0..members),
    ``field_time`` (the times at which fields of trajectory 0 are stored: every frame for
    KS, a few for Kolmogorov), ``channel``, ``x`` (and ``y`` in 2-D).
per (strategy, regime, trajectory, time)
    ``rmse`` (ensemble mean vs truth over the full state), ``crps`` and ``crps_fair``
    (spatial means), ``spread`` (square root of the spatially averaged unbiased ensemble
    variance, without the sqrt((N+1)/N) factor), ``corr`` (Pearson correlation of ensemble
    mean and truth), ``spectrum_error`` (largest relative error of the member-averaged
    energy spectrum over wavenumbers carrying >= 1 % of the energy), ``physics`` (KS:
    total variation; Kolmogorov: dissipation ν⟨ω²⟩; member average, physical units),
    ``blow_up`` (any member non-finite or beyond 1e3).
per (trajectory, time)
    ``truth_physics``; per (regime, time) ``observed``.
per (strategy, regime, trajectory)
    ``high_corr_time`` (frames until the correlation first drops below 0.8).
per (strategy, regime, rank)
    ``rank_hist`` (counts over trajectories, times and points; random tie-breaking).
per (strategy, regime)
    cost: ``wall_seconds``, ``ms_per_frame`` (wall time per assimilated frame, all
    trajectories and members of the cell at once), ``denoiser_calls``, ``vjps``,
    ``peak_memory_bytes``.
fields of trajectory 0
    ``truth_field`` (field_time, channel, *space), ``mean_field`` (strategy, regime,
    field_time, channel, *space), ``obs_mask`` (regime, field_time, channel, *space).
attrs
    ``pde``, ``members``, ``horizon``, ``seed``, ``config`` (JSON of the whole run),
    ``code_version``, ``created``.

Weighted strategies (``smc``) are scored with their weights at each frame (``rmse``,
``crps``, ``spread``, ``corr`` and the fields use the weighted mean); the rank histogram and
the spectra use the particles unweighted.

Randomness.  Cell (s, r) draws its observations from a generator seeded by (seed, r) only,
so every strategy sees the *same* observations of a regime, and runs the strategy with a
generator seeded by (seed, r) as well (common random numbers: the unguided and guided
samplers draw the same noise, so differences between strategies are not sampling noise).
A cell's result depends only on its inputs, never on which executor ran it or in what
order (sequential, ``workers`` local processes, or Ray).

Persistence.  With ``out`` set, each finished cell is written atomically to
``out/cells/<key>.nc`` (netCDF via h5netcdf) with its full configuration; ``resume=True``
skips cells whose file exists with the same configuration, so an interrupted run (Ctrl-C,
kill) loses at most the cells in flight.  The combined result is ``out/results.nc``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import metrics
from .._version import code_version
from ..observe import PRESET_NAMES, parse_regime
from ..strategies.base import available_strategies, get_strategy

CELL_FORMAT = 1
"""Version of the cell file layout; part of every cell key."""

_DIMS_SPACE = {"ks": ("x",), "kolmogorov": ("x", "y")}


# ----------------------------------------------------------------------------- strategy specs


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as one column of the benchmark.

    Attributes:
        label: the name in the results (unique within a run).
        name: the registered strategy.
        config: its ``Config`` (None: the defaults, except ``controller`` which gets the
            shipped controller of the PDE).
    """

    label: str
    name: str
    config: Any = None


def _config_for(name: str, config: Any, pde: str) -> Any:
    strat = get_strategy(name)
    if config is None:
        config = strat.Config(controller=pde) if name == "controller" else strat.Config()
    if not isinstance(config, strat.Config):
        raise TypeError(f"config of {name!r} must be a {name}.Config, got {type(config).__name__}")
    return config


def strategy_spec(item: Any, pde: str) -> StrategySpec:
    """Normalise one entry of ``strategies=``.

    Accepted: a registered name (``"dps"``); a strategy ``Config`` instance
    (``get_strategy("vc").Config(iterations=5)``, labelled by the strategy name); a
    ``(label, name)`` or ``(label, name, config)`` tuple; or a :class:`StrategySpec`.
    """
    if isinstance(item, StrategySpec):
        return dataclasses.replace(item, config=_config_for(item.name, item.config, pde))
    if isinstance(item, str):
        return StrategySpec(item, item, _config_for(item, None, pde))
    if (
        isinstance(item, tuple)
        and len(item) in (2, 3)
        and all(isinstance(v, str) for v in item[:2])
    ):
        label, name = item[0], item[1]
        config = item[2] if len(item) == 3 else None
        return StrategySpec(label, name, _config_for(name, config, pde))
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        for name in available_strategies():
            if type(item) is get_strategy(name).Config:
                return StrategySpec(name, name, item)
        raise TypeError(f"{type(item).__qualname__} is not the Config of a registered strategy")
    raise TypeError(
        "a strategy is a registered name, a strategy Config, a (label, name[, config]) tuple "
        f"or a StrategySpec; got {item!r}"
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    card = getattr(value, "card", None)
    if isinstance(card, dict) and "sha256" in card:
        return f"{type(value).__name__}(sha256={card['sha256']})"
    return f"{type(value).__name__}@{id(value):x}"


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
    """

    horizon: int
    trajectories: int
    members: int
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    field_times: int | None = None


def bench_preset(name: str, pde: str) -> BenchPreset:
    """The ``quick`` (default) or ``paper`` sizes for ``pde`` ("ks" or "kolmogorov").

    ``quick`` is sized to run all six strategies on all six regimes of KS in under ten
    minutes on two CPU cores: 64 frames, 2 trajectories, 4 members, vc with one L-BFGS
    iteration per 2-frame window (at its defaults vc alone costs ~12x the forecast per
    frame).  It is a smoke-level comparison: the shipped KS ARDM's unguided error reaches
    the observation noise only after about 120 frames, so at 64 frames the strategies differ
    little; the claims are measured by ``benchmarks/controller_claims.py`` and ``paper``.
    ``paper`` is the evaluation protocol of docs/design.md §7 at the short horizon (KS 140,
    Kolmogorov 60 frames) with 8 trajectories and 16 members, every strategy at its defaults.
    """
    if pde not in _DIMS_SPACE:
        raise ValueError(f"unknown pde {pde!r}; expected 'ks' or 'kolmogorov'")
    fields = None if pde == "ks" else 6
    if name == "quick":
        horizon = {"ks": 64, "kolmogorov": 24}[pde]
        return BenchPreset(
            horizon=horizon,
            trajectories=2,
            members=4,
            strategy_options={"vc": {"iterations": 1, "window": 2}},
            field_times=fields,
        )
    if name == "paper":
        horizon = {"ks": 140, "kolmogorov": 60}[pde]
        return BenchPreset(horizon=horizon, trajectories=8, members=16, field_times=fields)
    raise ValueError(f"unknown benchmark preset {name!r}; expected 'quick' or 'paper'")


# ----------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class CellTask:
    """Everything one (strategy, regime) cell needs; picklable (sent to workers)."""

    pde: str
    ardm: str
    regime: str
    spec: StrategySpec
    horizon: int
    trajectories: int
    members: int
    seed: int
    start: int
    field_times: tuple[int, ...]
    threads: int | None = None
    progress: bool = field(default=False, compare=False)

    def description(self) -> dict[str, Any]:
        """JSON-able identity of the cell (its file key hashes this)."""
        return {
            "format": CELL_FORMAT,
            "pde": self.pde,
            "ardm": self.ardm,
            "regime": self.regime,
            "strategy": {
                "label": self.spec.label,
                "name": self.spec.name,
                "config": _jsonable(self.spec.config),
            },
            "horizon": self.horizon,
            "trajectories": self.trajectories,
            "members": self.members,
            "seed": self.seed,
            "start": self.start,
            "field_times": list(self.field_times),
        }

    def key(self) -> str:
        blob = json.dumps(self.description(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def filename(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.regime)
        label = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.spec.label)
        return f"{label}__{safe}__{self.key()}.nc"


def _card_sha256(weights: Path) -> str | None:
    card = weights.with_suffix(".json")
    try:
        return json.loads(card.read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def _artifact_hashes(ardm: str, spec: StrategySpec) -> dict[str, str | None]:
    """sha256 (from the cards) of the ARDM and of a controller given by name or path."""
    from ..ardm.pretrained import CHECKPOINT_DIR, SHIPPED, checkpoint_path

    out = {"ardm": _card_sha256(checkpoint_path(ardm))}
    controller = getattr(spec.config, "controller", None)
    if spec.name == "controller" and isinstance(controller, str | Path):
        if isinstance(controller, str) and controller in SHIPPED:
            path = CHECKPOINT_DIR / f"controller-{controller}.safetensors"
        else:
            path = Path(controller)
        out["controller"] = _card_sha256(path)
    return out


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@lru_cache(maxsize=4)
def _load_process(ardm: str) -> Any:
    from ..ardm.pretrained import load_ardm

    return load_ardm(ardm)


@lru_cache(maxsize=4)
def _load_data(data_json: str) -> Any:
    from ..data import DataConfig, load_dataset

    return load_dataset(DataConfig.from_dict(json.loads(data_json)))


def _problem_frames(task: CellTask, process: Any, dataset: Any) -> torch.Tensor:
    test = dataset.test
    k = process.context_length
    need = task.start + k + task.horizon
    if task.trajectories > test.shape[0]:
        raise ValueError(
            f"{task.trajectories} trajectories requested; the test split has {test.shape[0]}"
        )
    if need > test.shape[1]:
        raise ValueError(
            f"start {task.start} + context {k} + horizon {task.horizon} = {need} frames; "
            f"the test trajectories have {test.shape[1]}"
        )
    frames = test[: task.trajectories, task.start : need]
    return dataset.normalise(frames).to(torch.float32)


def _physics(pde: str, phys: torch.Tensor, dataset: Any) -> torch.Tensor:
    """Physics diagnostic of physical-unit fields ``(..., C, *space)`` -> ``(...)``."""
    if pde == "ks":
        return metrics.ks_total_variation(phys[..., 0, :])
    reynolds = float(dataset.config.solver.reynolds)
    return metrics.kolmogorov_dissipation(phys[..., 0, :, :], 1.0 / reynolds)


def _spectrum(pde: str, x: torch.Tensor) -> torch.Tensor:
    if pde == "ks":
        return metrics.energy_spectrum(x[..., 0, :], space_dims=1, reduce_batch=False)
    return metrics.kolmogorov_energy_spectrum(x[..., 0, :, :], reduce_batch=False)


def score(
    pde: str,
    truth: torch.Tensor,
    ensemble: torch.Tensor,
    log_weights: Sequence[torch.Tensor] | None,
    dataset: Any,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Per-time metrics of one cell.

    Args:
        pde: ``"ks"`` or ``"kolmogorov"``.
        truth: ``(trajectories, H, C, *space)``, normalised units.
        ensemble: ``(members, trajectories, H, C, *space)``.
        log_weights: per frame ``(members, trajectories)`` normalised log-weights, or None.
        dataset: for the physical units of the physics diagnostics.
        generator: rank-histogram tie breaking.

    Returns:
        ``rmse, crps, crps_fair, spread, corr, spectrum_error, physics, blow_up``:
        ``(trajectories, H)``; ``high_corr_time`` ``(trajectories,)``; ``rank_hist``
        ``(members + 1,)``; ``mean`` ``(trajectories, H, C, *space)``.
    """
    truth = truth.double()
    ens = ensemble.double()
    m, n, h = ens.shape[:3]
    space = tuple(range(2, truth.ndim))  # C and space of (n, H, C, *space)
    finite = torch.isfinite(ens).all()
    safe = torch.nan_to_num(ens, nan=0.0, posinf=1e6, neginf=-1e6) if not finite else ens
    if log_weights is not None:
        w = torch.stack([lw.double() for lw in log_weights], dim=2).exp()  # (m, n, H)
        w = w.reshape(m, n, h, *([1] * (truth.ndim - 2)))
        w = w.expand_as(safe)
    else:
        w = None
    rmse = metrics.rmse(truth, safe, weights=w, dims=space)
    crps = metrics.crps_ensemble(truth, safe, weights=w).mean(dim=space)
    if m >= 2:
        crps_fair = metrics.crps_ensemble(truth, safe, weights=w, fair=True).mean(dim=space)
    else:
        crps_fair = torch.full_like(crps, float("nan"))
    if m >= 2:
        spread = metrics.spread(safe, weights=w).square().mean(dim=space).sqrt()
    else:
        spread = torch.full_like(rmse, float("nan"))
    mean = metrics.ensemble_mean(safe, weights=w)
    corr = metrics.pearson_correlation(mean, truth, dims=space)
    spec_pred = _spectrum(pde, safe).mean(dim=0)
    spec_true = _spectrum(pde, truth)
    spectrum_error = metrics.max_spectrum_relative_error(spec_pred, spec_true)
    phys = dataset.denormalise(safe)
    physics = _physics(pde, phys, dataset).mean(dim=0)
    blow = metrics.blow_up(ens, dims=(0, *[d + 1 for d in space]))
    corr_ok = torch.nan_to_num(corr, nan=-1.0) >= 0.8
    below = (~corr_ok).to(torch.int64)
    first_bad = torch.where(
        below.any(dim=1), below.argmax(dim=1), torch.full_like(below[:, 0], h)
    ).double()
    ranks = metrics.rank_histogram(truth, safe, generator=generator)
    return {
        "rmse": rmse,
        "crps": crps,
        "crps_fair": crps_fair,
        "spread": spread,
        "corr": corr,
        "spectrum_error": spectrum_error,
        "physics": physics,
        "blow_up": blow,
        "high_corr_time": first_bad,
        "rank_hist": ranks,
        "mean": mean,
    }


def run_cell(task: CellTask) -> Any:
    """Run one (strategy, regime) cell and score it; returns its ``xarray.Dataset``."""
    import xarray as xr

    from ..strategies.base import assimilate, make_problem

    if task.threads is not None:
        torch.set_num_threads(task.threads)
    process = _load_process(task.ardm)
    data_json = json.dumps(process.card["data_config"], sort_keys=True)
    dataset = _load_data(data_json)
    frames = _problem_frames(task, process, dataset)
    regime = parse_regime(task.regime, pde=task.pde)
    k = process.context_length
    g_obs = torch.Generator().manual_seed(derived_seed(task.seed, "observe", task.regime))
    problem = make_problem(frames, k, regime, g_obs, horizon=task.horizon, pde=task.pde)
    g_run = torch.Generator().manual_seed(derived_seed(task.seed, "run", task.regime))
    result = assimilate(
        process,
        problem,
        task.spec.name,
        members=task.members,
        generator=g_run,
        config=task.spec.config,
        progress=task.progress,
    )
    weights = result.diagnostics.get("log_weights") if result.log_weights is not None else None
    if weights is not None and len(weights) != task.horizon:
        weights = None
    g_rank = torch.Generator().manual_seed(derived_seed(task.seed, "rank", task.regime))
    s = score(task.pde, problem.truth, result.ensemble, weights, dataset, g_rank)

    space_names = _DIMS_SPACE[task.pde]
    ft = list(task.field_times)
    idx = [t - 1 for t in ft]
    field_dims = ("field_time", "channel", *space_names)
    truth_phys = _physics(task.pde, dataset.denormalise(problem.truth.double()), dataset)
    time_dim = problem.mask.ndim - len(problem.frame_shape) - 1
    observed = problem.mask.movedim(time_dim, 0).reshape(task.horizon, -1).any(dim=-1)
    obs_mask = torch.stack([problem.mask_at(i)[0] for i in idx], dim=0)
    cost = result.cost
    spatial_shape = problem.frame_shape
    coords = {
        "strategy": [task.spec.label],
        "regime": [task.regime],
        "trajectory": np.arange(task.trajectories),
        "time": np.arange(1, task.horizon + 1),
        "rank": np.arange(task.members + 1),
        "field_time": np.asarray(ft, dtype=np.int64),
        "channel": np.arange(spatial_shape[0]),
        **{
            name: np.arange(size) for name, size in zip(space_names, spatial_shape[1:], strict=True)
        },
    }

    def cell(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()[None, None]

    per_time = ("strategy", "regime", "trajectory", "time")
    data_vars: dict[str, Any] = {
        name: (per_time, cell(s[name]))
        for name in ("rmse", "crps", "crps_fair", "spread", "corr", "spectrum_error", "physics")
    }
    data_vars["blow_up"] = (per_time, cell(s["blow_up"]))
    data_vars["high_corr_time"] = (("strategy", "regime", "trajectory"), cell(s["high_corr_time"]))
    data_vars["rank_hist"] = (("strategy", "regime", "rank"), cell(s["rank_hist"]))
    data_vars["truth_physics"] = (("trajectory", "time"), truth_phys.numpy())
    data_vars["observed"] = (("regime", "time"), observed.numpy()[None])
    for name, value in (
        ("wall_seconds", cost.wall_seconds),
        ("ms_per_frame", cost.ms_per_frame),
        ("denoiser_calls", float(cost.denoiser_calls)),
        ("vjps", float(cost.vjps)),
        ("peak_memory_bytes", float(cost.peak_memory_bytes)),
    ):
        data_vars[name] = (("strategy", "regime"), np.asarray([[value]], dtype=np.float64))
    data_vars["truth_field"] = (field_dims, problem.truth[0, idx].double().numpy())
    data_vars["mean_field"] = (("strategy", "regime", *field_dims), cell(s["mean"][0, idx]))
    data_vars["obs_mask"] = (("regime", *field_dims), obs_mask.numpy()[None])
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["cell"] = json.dumps(task.description(), sort_keys=True)
    ds.attrs["key"] = task.key()
    ds.attrs["artifacts"] = json.dumps(_artifact_hashes(task.ardm, task.spec), sort_keys=True)
    ds.attrs["code_version"] = code_version()
    ds.attrs["strategy_diagnostics"] = json.dumps(_small_diagnostics(result.diagnostics))
    return ds


def _small_diagnostics(diag: dict[str, Any]) -> dict[str, Any]:
    """Scalar summaries of a strategy's diagnostics (mean KL per frame, resamplings...)."""
    out: dict[str, Any] = {}
    for key, value in diag.items():
        if isinstance(value, int | float | bool | str):
            out[key] = value
        elif isinstance(value, list) and value and all(torch.is_tensor(v) for v in value):
            try:
                out[f"{key}_mean"] = float(torch.stack([v.double().mean() for v in value]).mean())
            except RuntimeError:
                continue
    return out


# ----------------------------------------------------------------------------- persistence


def _write_atomic(ds: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_cell(path: Path, task: CellTask) -> Any | None:
    import xarray as xr

    if not path.exists():
        return None
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as err:  # a corrupt or partial file: recompute the cell
        print(f"cell file {path} unreadable ({err}); recomputing", file=sys.stderr)
        return None
    if ds.attrs.get("key") != task.key():
        return None
    artifacts = json.dumps(_artifact_hashes(task.ardm, task.spec), sort_keys=True)
    if ds.attrs.get("artifacts") != artifacts:
        print(
            f"{path.name} was computed with other checkpoints (sha256 differs); recomputing",
            file=sys.stderr,
        )
        return None
    return ds


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
    for name in names:
        parse_regime(name, pde=pde)  # clear errors up front
    if len(set(names)) != len(names):
        raise ValueError(f"regimes repeat: {names}")
    return names


def _field_times(horizon: int, count: int | None) -> tuple[int, ...]:
    if count is None or count >= horizon:
        return tuple(range(1, horizon + 1))
    return tuple(int(t) for t in np.unique(np.linspace(1, horizon, count).round().astype(int)))


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
    progress: bool = True,
    strategy_options: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """Run strategies × regimes on held-out test trajectories and score them.

    Args:
        pde: ``"ks"`` or ``"kolmogorov"``.
        strategies: names, Configs, ``(label, name[, config])`` tuples or
            :class:`StrategySpec`; default: every registered strategy.
        regimes: ``"all"`` (the six presets), or names / spec strings.
        horizon, trajectories, members: override the preset's sizes.
        seed: the run's seed (observations, sampler noise, tie breaking).
        out: folder for cell files, ``results.nc``; None keeps everything in memory.
        preset: ``"quick"`` (default) or ``"paper"`` (see :func:`bench_preset`).
        ardm: the ARDM (``"ks"``/``"kolmogorov"`` or an artifact path; default ``pde``).
        start: first frame of the test trajectories used as context.
        resume: reuse finished cell files in ``out`` (same configuration only).
        workers: local processes running cells in parallel (1 = in this process).
        executor: ``"local"`` or ``"ray"``.
        ray_address: passed to ``ray.init`` (None: start a local Ray instance).
        threads: torch threads inside each cell (None: unchanged; workers default to 1).
        progress: progress bars (per cell and overall with an ETA) on stderr.
        strategy_options: per-strategy-name Config overrides for names given as strings.

    Returns:
        The :class:`xarray.Dataset` described in the module docstring.
    """

    if pde not in _DIMS_SPACE:
        raise ValueError(f"unknown pde {pde!r}; expected 'ks' or 'kolmogorov'")
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if resume and out is None:
        raise ValueError("resume=True needs out= (the folder of the interrupted run)")
    sizes = bench_preset(preset, pde)
    horizon = sizes.horizon if horizon is None else horizon
    trajectories = sizes.trajectories if trajectories is None else trajectories
    members = sizes.members if members is None else members
    if horizon < 1 or trajectories < 1 or members < 1:
        raise ValueError("horizon, trajectories and members must be >= 1")
    options = {**sizes.strategy_options, **(strategy_options or {})}
    names = available_strategies() if strategies is None else list(strategies)
    specs = []
    for item in names:
        if isinstance(item, str) and item in options:
            item = StrategySpec(item, item, get_strategy(item).Config(**options[item]))
            if item.name == "controller" and item.config.controller is None:
                item = dataclasses.replace(item, config=None)
        specs.append(strategy_spec(item, pde))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"strategy labels repeat: {labels}; label them with (label, name, config)")
    regime_names = _regime_names(regimes, pde)
    ardm = ardm or pde
    frame_shape = tuple(_load_process(ardm).frame_shape)
    for name in regime_names:
        parse_regime(name, pde=pde).validate(frame_shape, horizon)
    field_times = _field_times(horizon, sizes.field_times)
    if threads is None and (workers > 1 or executor == "ray"):
        threads = 1
    tasks = [
        CellTask(
            pde,
            ardm,
            r,
            s,
            horizon,
            trajectories,
            members,
            seed,
            start,
            field_times,
            threads,
            progress=progress and workers == 1 and executor == "local",
        )
        for r in regime_names
        for s in specs
    ]
    run_config = {
        "pde": pde,
        "preset": preset,
        "ardm": ardm,
        "strategies": [t.description()["strategy"] for t in tasks[: len(specs)]],
        "regimes": regime_names,
        "horizon": horizon,
        "trajectories": trajectories,
        "members": members,
        "seed": seed,
        "start": start,
    }
    out_dir = Path(out) if out is not None else None
    results: list[Any] = [None] * len(tasks)
    todo: list[int] = []
    for i, task in enumerate(tasks):
        if resume and out_dir is not None:
            results[i] = _read_cell(out_dir / "cells" / task.filename(), task)
        if results[i] is None:
            todo.append(i)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    done_before = len(tasks) - len(todo)
    older = sorted(
        {
            str(r.attrs.get("code_version"))
            for r in results
            if r is not None and r.attrs.get("code_version") != code_version()
        }
    )
    if older:
        warnings.warn(
            f"reusing {done_before} finished cells, some computed by code version(s) "
            f"{', '.join(older)} (this is {code_version()}); delete {out_dir}/cells to "
            "recompute them",
            stacklevel=2,
        )
    bar = tqdm(
        total=len(tasks),
        initial=done_before,
        desc=f"bench {pde}",
        unit="cell",
        disable=not progress,
        file=sys.stderr,
    )
    pending = [tasks[i] for i in todo]
    runner = _run_ray(pending, ray_address) if executor == "ray" else _run_local(pending, workers)
    t0 = time.perf_counter()
    for j, ds in runner:
        i = todo[j]
        results[i] = ds
        if out_dir is not None:
            _write_atomic(ds, out_dir / "cells" / tasks[i].filename())
        bar.set_postfix_str(f"{tasks[i].spec.label} @ {tasks[i].regime}", refresh=False)
        bar.update(1)
    bar.close()
    combined = combine_cells(results, labels, regime_names)
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
    )
    if out_dir is not None:
        _write_atomic(combined, out_dir / "results.nc")
    return combined
