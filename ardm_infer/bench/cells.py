"""One benchmark cell: a (strategy, regime) pair run on the test trajectories and scored.

:class:`CellTask` holds everything a cell needs (it is sent to worker processes);
:func:`run_cell` builds the problem, runs the strategy and returns the cell's
``xarray.Dataset`` (the layout of :mod:`ardm_infer.bench.core`); :func:`score` is the
scoring of one ensemble, the same for every strategy (docs/design.md §7).

The process of a cell is a shipped ARDM or an ARDM artifact (``ardm="ks"`` or a
``.safetensors`` path; normalised units of its training data), or ``ardm="solver"``: the
system's numerical solver run in the normalised units of the system's default data set
(:class:`~ardm_infer.systems.NormalisedProcess`), so that the same regimes and scores apply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics
from .._version import code_version
from ..initial import parse_initial
from ..observe import parse_regime
from ..systems import NormalisedProcess, get_system
from .specs import StrategySpec, jsonable

__all__ = [
    "CELL_FORMAT",
    "SOLVER",
    "CellTask",
    "artifact_hashes",
    "derived_seed",
    "load_process",
    "run_cell",
    "score",
]

CELL_FORMAT = 2
"""Version of the cell file layout; part of every cell key (2: checksum, failures, device)."""

SOLVER = "solver"
"""The ``ardm=`` value that runs the system's numerical solver as the process."""


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
    device: str = "cpu"
    initial: str = "exact"
    split: str = "test"
    first_trajectory: int = 0

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
                "config": jsonable(self.spec.config),
            },
            "horizon": self.horizon,
            "trajectories": self.trajectories,
            "members": self.members,
            "seed": self.seed,
            "start": self.start,
            "field_times": list(self.field_times),
            "device": self.device,
            "initial": self.initial,
            "split": self.split,
            "first_trajectory": self.first_trajectory,
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


def artifact_hashes(ardm: str, spec: StrategySpec, pde: str | None = None) -> dict[str, Any]:
    """What a cell's numbers rest on besides its description: the sha256 (from the cards) of
    the ARDM and of a controller given by name or path; for ``ardm="solver"`` the key of the
    data set whose statistics normalise the solver."""
    from ..ardm.pretrained import CHECKPOINT_DIR, SHIPPED, checkpoint_path

    if ardm == SOLVER:
        from ..data import default_data_config

        out: dict[str, Any] = {"ardm": None, "data": default_data_config(str(pde)).key()[:24]}
    else:
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
def _load_ardm(ardm: str, device: str = "cpu") -> Any:
    from ..ardm.pretrained import load_ardm

    return load_ardm(ardm, device=device)


@lru_cache(maxsize=4)
def _load_data(data_json: str) -> Any:
    from ..data import DataConfig, load_dataset

    return load_dataset(DataConfig.from_dict(json.loads(data_json)))


@lru_cache(maxsize=4)
def _load_solver(pde: str) -> tuple[Any, Any]:
    from ..data import default_data_config

    system = get_system(pde)
    config = default_data_config(system.name)
    dataset = _load_data(json.dumps(config.to_dict(), sort_keys=True))
    solver = system.make_solver(config.solver)
    process = NormalisedProcess(solver, dataset.mean, dataset.std, name=f"{system.name}-solver")
    return process, dataset


def load_process(ardm: str, pde: str, device: str = "cpu") -> tuple[Any, Any]:
    """The process of a cell and the data set it is scored on (cached per process).

    Args:
        ardm: a shipped ARDM name, an artifact path, or ``"solver"``.
        pde: the system (for ``"solver"``).
        device: where the ARDM's weights live (a solver follows its inputs).

    Returns:
        ``(process, dataset)``: an ARDM and its training data set (from its card), or for
        ``ardm="solver"`` the system's solver in normalised units and its default data set.
    """
    if ardm == SOLVER:
        return _load_solver(pde)
    process = _load_ardm(ardm, device)
    data_json = json.dumps(process.card["data_config"], sort_keys=True)
    return process, _load_data(data_json)


def _problem_frames(task: CellTask, process: Any, dataset: Any, lead: int = 0) -> torch.Tensor:
    """Test frames ``(trajectories, lead + k + horizon, C, *space)`` from ``task.start`` on,
    normalised (``lead``: the spin-up of a background start).  ``task.split`` is ``"test"``
    (the benchmark) or ``"val"`` (tuning, :mod:`ardm_infer.tuning`); the trajectories are
    ``first_trajectory .. first_trajectory + trajectories - 1`` of that split."""
    if task.split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {task.split!r}")
    test = dataset.test if task.split == "test" else dataset.val
    first = task.first_trajectory
    k = process.context_length + lead
    need = task.start + k + task.horizon
    if first + task.trajectories > test.shape[0]:
        raise ValueError(
            f"trajectories {first}..{first + task.trajectories - 1} requested; the {task.split} "
            f"split has {test.shape[0]}"
        )
    if need > test.shape[1]:
        raise ValueError(
            f"start {task.start} + spin-up {lead} + context {k - lead} + horizon {task.horizon}"
            f" = {need} frames; "
            f"the test trajectories have {test.shape[1]}"
        )
    frames = test[first : first + task.trajectories, task.start : need]
    return dataset.normalise(frames).to(torch.float32)


def _solver_config(dataset: Any) -> Any:
    return getattr(getattr(dataset, "config", None), "solver", None)


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
        pde: a registered system (its spectrum and physics diagnostics are used).
        truth: ``(trajectories, H, C, *space)``, normalised units.
        ensemble: ``(members, trajectories, H, C, *space)``.
        log_weights: per frame ``(members, trajectories)`` normalised log-weights, or None.
        dataset: for the physical units of the physics diagnostics (``denormalise``; its
            ``config.solver`` where the diagnostic has parameters).
        generator: rank-histogram tie breaking.

    Returns:
        ``rmse, crps, crps_fair, spread, corr, spectrum_error, physics, blow_up``:
        ``(trajectories, H)``; ``high_corr_time`` ``(trajectories,)``; ``rank_hist``
        ``(members + 1,)``; ``mean`` ``(trajectories, H, C, *space)``.
    """
    system = get_system(pde)
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
    spec_pred = system.spectrum(safe).mean(dim=0)
    spec_true = system.spectrum(truth)
    spectrum_error = metrics.max_spectrum_relative_error(spec_pred, spec_true)
    phys = dataset.denormalise(safe)
    physics = system.physics(phys, _solver_config(dataset)).mean(dim=0)
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


def _on_device(problem: Any, device: torch.device) -> Any:
    """The problem with every tensor field moved to ``device`` (a no-op on its own device)."""
    changes = {
        f.name: getattr(problem, f.name).to(device)
        for f in dataclasses.fields(problem)
        if torch.is_tensor(getattr(problem, f.name))
    }
    if problem.background is not None:
        background = problem.background
        changes["background"] = dataclasses.replace(
            background,
            **{
                f.name: getattr(background, f.name).to(device)
                for f in dataclasses.fields(background)
            },
        )
    return dataclasses.replace(problem, **changes)


def _failed_scores(task: CellTask, frame_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """The scores of a failed cell: NaN metrics, no blow-up, empty rank counts."""
    n, h = task.trajectories, task.horizon
    nan = torch.full((n, h), float("nan"), dtype=torch.float64)
    scores = {
        name: nan.clone()
        for name in ("rmse", "crps", "crps_fair", "spread", "corr", "spectrum_error", "physics")
    }
    scores["blow_up"] = torch.zeros(n, h, dtype=torch.bool)
    scores["high_corr_time"] = torch.full((n,), float("nan"), dtype=torch.float64)
    scores["rank_hist"] = torch.zeros(task.members + 1, dtype=torch.int64)
    scores["mean"] = torch.full((n, h, *frame_shape), float("nan"), dtype=torch.float64)
    return scores


def run_cell(task: CellTask) -> Any:
    """Run one (strategy, regime) cell and score it; returns its ``xarray.Dataset``.

    An exception raised by the strategy (a refused process or config, a non-finite
    ensemble, ...) does not propagate: the cell is returned as *failed*, with ``failed``
    True, the exception in ``failure`` (``"ValueError: ..."``) and NaN metrics, so that the
    other cells of a benchmark still run.  Errors of the set-up (data, problem) propagate.
    The problem (truth and observations) is built on the CPU, so it is the same on every
    device; the strategy runs on ``task.device``; scoring is on the CPU.
    """
    from ..strategies.base import assimilate, make_problem

    started = time.perf_counter()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    device = torch.device(task.device)
    process, dataset = load_process(task.ardm, task.pde, task.device)
    initial = parse_initial(task.initial)
    if initial.kind != "exact":
        initial = dataclasses.replace(initial, members=task.members)
    frames = _problem_frames(task, process, dataset, lead=initial.lead)
    regime = parse_regime(task.regime, pde=task.pde)
    k = process.context_length
    g_obs = torch.Generator().manual_seed(derived_seed(task.seed, "observe", task.regime))
    g_start = torch.Generator().manual_seed(derived_seed(task.seed, "initial"))
    pool = None
    if initial.kind == "climatology":  # unrelated trajectories: the training split
        pool = dataset.normalise(dataset.train).to(torch.float32)
    problem = make_problem(
        frames,
        k,
        regime,
        g_obs,
        horizon=task.horizon,
        pde=task.pde,
        initial=initial,
        process=process,
        pool=pool,
        initial_generator=g_start,
    )
    g_run = torch.Generator(device=device).manual_seed(derived_seed(task.seed, "run", task.regime))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    failure = ""
    run_started = time.perf_counter()
    try:
        result = assimilate(
            process,
            _on_device(problem, device),
            task.spec.name,
            members=task.members,
            generator=g_run,
            config=task.spec.config,
            progress=task.progress,
        )
    except Exception as error:  # recorded in the cell; the benchmark goes on
        failure = f"{type(error).__name__}: {error}"
    if failure:
        s = _failed_scores(task, problem.frame_shape)
        nan = float("nan")
        costs = (time.perf_counter() - run_started, nan, nan, nan, nan)
        diagnostics: dict[str, Any] = {}
    else:
        weights = None
        if result.log_weights is not None:
            weights = result.diagnostics.get("log_weights")
        if weights is not None and len(weights) != task.horizon:
            weights = None
        if weights is not None:
            weights = [w.cpu() for w in weights]
        g_rank = torch.Generator().manual_seed(derived_seed(task.seed, "rank", task.regime))
        ensemble = result.ensemble.cpu()
        s = score(task.pde, problem.truth, ensemble, weights, dataset, g_rank)
        cost = result.cost
        costs = (
            cost.wall_seconds,
            cost.ms_per_frame,
            float(cost.denoiser_calls),
            float(cost.vjps),
            float(cost.peak_memory_bytes),
        )
        diagnostics = result.diagnostics
    ds = _cell_dataset(task, problem, dataset, s, costs, failure)
    ds.attrs["strategy_diagnostics"] = json.dumps(_small_diagnostics(diagnostics))
    ds.attrs["cell_seconds"] = time.perf_counter() - started
    ds.attrs["initial"] = problem.initial
    if problem.background is not None:
        ds.attrs["initial_error"] = json.dumps(
            {
                name: [round(float(v), 6) for v in getattr(problem.background, name)]
                for name in ("member_rmse", "mean_rmse", "spread")
            }
        )
    return ds


def _cell_dataset(
    task: CellTask,
    problem: Any,
    dataset: Any,
    s: dict[str, torch.Tensor],
    costs: Sequence[float],
    failure: str,
) -> Any:
    """The cell's ``xarray.Dataset`` from its problem (CPU), scores and costs
    ``(wall_seconds, ms_per_frame, denoiser_calls, vjps, peak_memory_bytes)``."""
    import xarray as xr

    system = get_system(task.pde)
    space_names = system.space_dims
    ft = list(task.field_times)
    idx = [t - 1 for t in ft]
    field_dims = ("field_time", "channel", *space_names)
    truth_phys = system.physics(
        dataset.denormalise(problem.truth.double()), _solver_config(dataset)
    )
    time_dim = problem.mask.ndim - len(problem.frame_shape) - 1
    observed = problem.mask.movedim(time_dim, 0).reshape(task.horizon, -1).any(dim=-1)
    obs_mask = torch.stack([problem.mask_at(i)[0] for i in idx], dim=0)
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
    names = ("wall_seconds", "ms_per_frame", "denoiser_calls", "vjps", "peak_memory_bytes")
    for name, value in zip(names, costs, strict=True):
        data_vars[name] = (("strategy", "regime"), np.asarray([[value]], dtype=np.float64))
    data_vars["truth_field"] = (field_dims, problem.truth[0, idx].double().numpy())
    data_vars["mean_field"] = (("strategy", "regime", *field_dims), cell(s["mean"][0, idx]))
    data_vars["obs_mask"] = (("regime", *field_dims), obs_mask.numpy()[None])
    data_vars["failed"] = (("strategy", "regime"), np.asarray([[bool(failure)]]))
    data_vars["failure"] = (("strategy", "regime"), np.asarray([[failure]], dtype=str))
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs["cell"] = json.dumps(task.description(), sort_keys=True)
    ds.attrs["key"] = task.key()
    ds.attrs["artifacts"] = json.dumps(
        artifact_hashes(task.ardm, task.spec, task.pde), sort_keys=True
    )
    ds.attrs["code_version"] = code_version()
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
