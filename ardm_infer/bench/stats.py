"""Statistics of benchmark results: intervals over trajectories, the paired test, the summary.

Input is the result :class:`xarray.Dataset` of the benchmark engine (see
``ardm_infer.bench.core``).  The parts used here:

* ``rmse``, ``crps``, ``spread`` (required) and optionally ``crps_fair``, ``corr``,
  ``spectrum_error``, ``physics``, ``blow_up``: dims ``(strategy, regime, trajectory, time)``;
* ``truth_physics``: ``(trajectory, time)``; ``high_corr_time``:
  ``(strategy, regime, trajectory)``;
* ``ms_per_frame``, ``wall_seconds``, ``denoiser_calls``, ``vjps``, ``peak_memory_bytes``
  and optionally ``failed`` (bool) and ``failure`` (str): ``(strategy, regime)``;
* optionally the coordinate ``lookahead`` on ``strategy`` (frames of future observations
  each strategy may read; absent or -1: unknown);
* attrs ``members`` and ``pde``.

A (strategy, regime) cell whose ``rmse`` is NaN everywhere was not run and gets no row,
unless it is marked ``failed`` (then it gets a row with NaN metrics and its reason).

The statistics:

* time averages are taken per trajectory over the finite frames (a frame whose metric is
  NaN or ±inf, e.g. after a blow-up, is left out; the blow-up fraction is its own column);
  the reported value is the mean over trajectories of these per-trajectory averages;
* the confidence half-width of a mean over ``n`` trajectories is
  ``q · s / sqrt(n)`` with ``s`` the sample standard deviation (``ddof=1``) of the
  per-trajectory averages and ``q`` the two-sided quantile of Student's t with ``n − 1``
  degrees of freedom (scipy), or of the standard normal when scipy is not installed; it
  is NaN for ``n < 2``;
* a strategy is marked best on a regime for a metric when its mean is the lowest and, for
  every other strategy run on that regime, the confidence interval of the mean paired
  difference (per trajectory: same truth, same observations) lies entirely below zero.
  Requiring every pairwise interval to exclude zero is an intersection–union test, so the
  mark has the stated confidence without a multiplicity correction;
* SSR ``= sqrt((N + 1) / N) · sqrt(mean spread²) / sqrt(mean rmse²)`` with ``N`` the number
  of members and the means over all trajectories and (finite) frames: 1 for a calibrated
  ensemble (the factor corrects the finite-ensemble bias of the ensemble-mean error);
* the skill score of a strategy against a reference (:func:`skill_scores`) is
  ``1 − mean(score) / mean(score_ref)`` with the paired interval of the difference.

This module imports only numpy at import time (pandas and xarray when called), so that
``ardm_infer.summary`` costs nothing until it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = [
    "SUMMARY_COLUMNS",
    "SkillScores",
    "beats_reference",
    "cell_failures",
    "critical_value",
    "finite_mean",
    "interval_kind",
    "lookaheads",
    "mean_and_half_width",
    "mean_band",
    "present_cells",
    "skill_scores",
    "summary",
    "trajectory_time_means",
]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "regime",
    "lookahead",
    "config",
    "n_trajectories",
    "rmse",
    "rmse_hw",
    "crps",
    "crps_hw",
    "crps_fair",
    "ssr",
    "corr",
    "high_corr_time",
    "spectrum_error",
    "physics_error",
    "blow_up_fraction",
    "ms_per_frame",
    "cost_ratio",
    "wall_seconds",
    "denoiser_calls",
    "vjps",
    "peak_memory_bytes",
    "rmse_best",
    "crps_best",
    "failed",
    "failure",
)
"""Columns of :func:`summary`, in order."""

PER_TIME = ("strategy", "regime", "trajectory", "time")
PER_CELL = ("strategy", "regime")
COST_NAMES = ("ms_per_frame", "wall_seconds", "denoiser_calls", "vjps", "peak_memory_bytes")


# ----------------------------------------------------------------------------- intervals


def interval_kind() -> str:
    """``"t"`` when scipy is importable (Student-t intervals), else ``"normal"``."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        return "normal"
    return "t"


def critical_value(n: int, confidence: float = 0.95) -> float:
    """Two-sided critical value for a mean of ``n`` independent values.

    Student's t quantile ``t_{(1 + confidence) / 2, n − 1}`` when scipy is installed,
    otherwise the standard normal quantile ``z_{(1 + confidence) / 2}``.  NaN for ``n < 2``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n < 2:
        return math.nan
    p = 0.5 * (1.0 + confidence)
    if interval_kind() == "t":
        from scipy import stats

        return float(stats.t.ppf(p, n - 1))
    return NormalDist().inv_cdf(p)


def mean_and_half_width(values: np.ndarray, confidence: float) -> tuple[float, float, int]:
    """Mean, confidence half-width and count of the finite entries of a 1-D array."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, n
    return mean, critical_value(n, confidence) * float(v.std(ddof=1)) / math.sqrt(n), n


def finite_mean(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean over ``axis`` of the finite entries; NaN where there are none (no warning)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    total = np.where(finite, v, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    return np.divide(
        total, count, out=np.full(np.shape(total), np.nan), where=count > 0, casting="unsafe"
    )


def mean_band(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 (trajectories) of finite values and its confidence half-width.

    ``values``: ``(trajectory, time)``.  Returns two ``(time,)`` arrays; the half-width is
    NaN where fewer than two trajectories are finite.
    """
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    n = finite.sum(axis=0)
    mean = finite_mean(v, axis=0)
    dev = np.where(finite, v - mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((dev**2).sum(axis=0) / (n - 1))
    table = {int(k): critical_value(int(k), confidence) for k in np.unique(n)}
    crit = np.array([table[int(k)] for k in n])
    with np.errstate(invalid="ignore", divide="ignore"):
        hw = np.where(n >= 2, crit * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, hw


# ----------------------------------------------------------------------------- dataset access


def _per_time(ds: xr.Dataset, name: str) -> xr.DataArray | None:
    """``ds[name]`` as ``(strategy, regime, trajectory, time)`` float, or None if absent."""
    if name not in ds:
        return None
    return ds[name].transpose(*PER_TIME).astype(float)


def trajectory_time_means(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Per-trajectory time average of a per-frame metric over its finite frames.

    Args:
        ds: result dataset.
        name: a variable with dims ``(strategy, regime, trajectory, time)``.

    Returns:
        ``(strategy, regime, trajectory)`` float; NaN where a trajectory has no finite frame.
    """
    import xarray as xr

    da = _per_time(ds, name)
    if da is None:
        raise KeyError(f"the result dataset has no variable {name!r}")
    dims = ("strategy", "regime", "trajectory")
    return xr.DataArray(finite_mean(da.values, axis=-1), dims=dims, coords={d: da[d] for d in dims})


def _cell_values(ds: xr.Dataset, name: str) -> np.ndarray | None:
    """``(strategy, regime)`` float values of a per-cell variable, or None."""
    if name not in ds:
        return None
    return ds[name].transpose(*PER_CELL).astype(float).values


def cell_failures(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(strategy, regime)`` arrays: ``failed`` (bool) and ``failure`` (str, "" if none).

    Both variables are optional in the dataset (all False / empty when absent); a netCDF
    round trip may have turned the flags into floats (NaN: not failed).
    """
    shape = (ds.sizes["strategy"], ds.sizes["regime"])
    failed = np.zeros(shape, dtype=bool)
    if "failed" in ds:
        v = np.asarray(ds["failed"].transpose(*PER_CELL).values)
        failed = v if v.dtype == bool else np.nan_to_num(v.astype(float), nan=0.0) > 0
    reasons = np.full(shape, "", dtype=object)
    if "failure" in ds:
        raw = ds["failure"].transpose(*PER_CELL).values
        for idx, value in np.ndenumerate(raw):
            text = (
                "" if value is None or (isinstance(value, float) and math.isnan(value)) else value
            )
            reasons[idx] = text.decode() if isinstance(text, bytes) else str(text)
    failed = failed | (reasons != "")
    return failed, reasons


def lookaheads(ds: xr.Dataset) -> dict[str, int]:
    """Look-ahead (frames of future observations read) per strategy label; -1 = unknown."""
    labels = [str(s) for s in ds["strategy"].values]
    if "lookahead" not in ds.coords and "lookahead" not in ds:
        return dict.fromkeys(labels, -1)
    values = np.asarray(ds["lookahead"].values, dtype=float).reshape(-1)
    if values.size != len(labels):
        return dict.fromkeys(labels, -1)
    return {
        label: int(v) if math.isfinite(v) and v >= 0 else -1
        for label, v in zip(labels, values, strict=True)
    }


def present_cells(ds: xr.Dataset) -> np.ndarray:
    """``(strategy, regime)`` bool: cells with any finite RMSE (cells that ran to the end)."""
    rmse = ds["rmse"].transpose(*PER_TIME).astype(float)
    return np.isfinite(rmse.values).any(axis=(2, 3))


# ----------------------------------------------------------------------------- tests and scores


def _ssr(spread: np.ndarray, rmse: np.ndarray, members: int) -> float:
    """Corrected spread-skill ratio over the entries where both are finite (1-D inputs)."""
    ok = np.isfinite(spread) & np.isfinite(rmse)
    if not ok.any():
        return math.nan
    mse = float(np.mean(rmse[ok] ** 2))
    if mse == 0.0:
        return math.nan
    factor = math.sqrt((members + 1) / members) if members > 0 else math.nan
    return factor * math.sqrt(float(np.mean(spread[ok] ** 2))) / math.sqrt(mse)


def _best_flags(per_traj: np.ndarray, present: np.ndarray, confidence: float) -> np.ndarray:
    """Significantly-best marks of one metric.

    Args:
        per_traj: ``(strategy, regime, trajectory)`` per-trajectory time averages (lower is
            better).
        present: ``(strategy, regime)`` bool, cells that were run.
        confidence: confidence level of the paired intervals.

    Returns:
        ``(strategy, regime)`` bool: True for at most one strategy per regime.
    """
    n_strat, n_reg, _ = per_traj.shape
    flags = np.zeros((n_strat, n_reg), dtype=bool)
    means = finite_mean(per_traj, axis=-1)
    for r in range(n_reg):
        cand = [s for s in range(n_strat) if present[s, r] and np.isfinite(means[s, r])]
        if len(cand) < 2:
            continue
        best = min(cand, key=lambda s: means[s, r])
        significant = True
        for other in cand:
            if other == best:
                continue
            diff = per_traj[best, r] - per_traj[other, r]
            mean, hw, n = mean_and_half_width(diff, confidence)
            if n < 2 or not math.isfinite(hw) or not mean + hw < 0.0:
                significant = False
                break
        flags[best, r] = significant
    return flags


@dataclass(frozen=True)
class SkillScores:
    """Skill of every strategy against a reference, per regime (:func:`skill_scores`).

    Attributes:
        strategies, regimes: the labels of the rows and columns.
        reference: the reference strategy label.
        metric: the per-frame score compared (lower is better), e.g. ``"crps"``.
        skill: ``(strategy, regime)`` ``1 − mean(score) / mean(score_ref)``; NaN where the
            cell or the reference did not run.
        low, high: ``(strategy, regime)`` the paired ``confidence`` interval of the skill
            (``high`` clipped at 1, the best possible skill).
        significant: ``(strategy, regime)`` int: +1 significantly better than the reference,
            -1 significantly worse, 0 neither (or not testable).
        failed: ``(strategy, regime)`` bool, cells recorded as failed.
        confidence: the level of the intervals.
    """

    strategies: list[str]
    regimes: list[str]
    reference: str
    metric: str
    skill: np.ndarray
    low: np.ndarray
    high: np.ndarray
    significant: np.ndarray
    failed: np.ndarray
    confidence: float


def skill_scores(
    ds: xr.Dataset, metric: str = "crps", reference: str = "forecast", confidence: float = 0.95
) -> SkillScores:
    """Skill score of each strategy relative to ``reference`` on each regime.

    With per-trajectory time means ``a_i`` (strategy) and ``b_i`` (reference) over the same
    ``n`` trajectories (same truth, same observations), the skill is
    ``1 − mean(a) / mean(b)`` (1 perfect, 0 no better than the reference, negative worse).
    Its interval is that of the paired difference ``d_i = b_i − a_i`` divided by
    ``mean(b)``: ``[mean(d) ± hw(d)] / mean(b)`` with the Student-t half-width of
    :func:`mean_and_half_width`; the denominator is treated as fixed, so the interval
    excludes 0 exactly when the paired test of the summary table does.  Since the score is
    non-negative the skill cannot exceed 1: the upper end is clipped there.

    Args:
        ds: result dataset.
        metric: a per-frame score where lower is better (``"crps"``, ``"rmse"``).
        reference: the reference strategy label; if it did not run, the first strategy.
        confidence: interval level in (0, 1).

    Returns:
        :class:`SkillScores`.
    """
    strategies = [str(s) for s in ds["strategy"].values]
    regimes = [str(r) for r in ds["regime"].values]
    if reference not in strategies:
        reference = strategies[0]
    per_traj = trajectory_time_means(ds, metric).transpose(*PER_CELL, "trajectory").values
    present = present_cells(ds)
    failed, _ = cell_failures(ds)
    shape = (len(strategies), len(regimes))
    skill, low, high = (np.full(shape, np.nan) for _ in range(3))
    significant = np.zeros(shape, dtype=int)
    ref = strategies.index(reference)
    for r in range(len(regimes)):
        if not present[ref, r]:
            continue
        base = per_traj[ref, r]
        for s in range(len(strategies)):
            if not present[s, r]:
                continue
            diff = base - per_traj[s, r]
            ok = np.isfinite(diff)
            denom = float(base[ok].mean()) if ok.any() else math.nan
            if not (math.isfinite(denom) and denom > 0):
                continue
            mean, hw, n = mean_and_half_width(diff[ok], confidence)
            skill[s, r] = mean / denom
            if n >= 2 and math.isfinite(hw) and s != ref:
                low[s, r] = (mean - hw) / denom
                high[s, r] = min((mean + hw) / denom, 1.0)  # a score >= 0: skill <= 1
                significant[s, r] = 1 if low[s, r] > 0 else -1 if high[s, r] < 0 else 0
    return SkillScores(
        strategies, regimes, reference, metric, skill, low, high, significant, failed, confidence
    )


# ----------------------------------------------------------------------------- summary table


def _cell_statistics(ds: xr.Dataset, confidence: float) -> dict[str, Any]:
    """Arrays the summary rows are read from (all ``(strategy, regime, ...)``)."""
    rmse = _per_time(ds, "rmse")
    spread = _per_time(ds, "spread")
    if rmse is None or spread is None or "crps" not in ds:
        raise KeyError("the result dataset needs the variables 'rmse', 'crps' and 'spread'")
    stats: dict[str, Any] = {"rmse_v": rmse.values, "spread_v": spread.values}
    stats["per_traj"] = {
        name: trajectory_time_means(ds, name).values
        for name in ("rmse", "crps", "crps_fair", "corr", "spectrum_error")
        if name in ds
    }
    stats["present"] = np.isfinite(rmse.values).any(axis=(2, 3))
    stats["physics_err"] = None
    physics = _per_time(ds, "physics")
    if physics is not None and "truth_physics" in ds:
        truth = ds["truth_physics"].transpose("trajectory", "time").astype(float).values
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(physics.values - truth) / np.abs(truth)
        stats["physics_err"] = finite_mean(rel, axis=-1)
    stats["blow"] = None
    if "blow_up" in ds:
        b = ds["blow_up"].transpose(*PER_TIME).astype(float).values
        stats["blow"] = (np.nan_to_num(b, nan=0.0) > 0).any(axis=-1).mean(axis=-1)
    stats["hct"] = None
    if "high_corr_time" in ds:
        h = ds["high_corr_time"].transpose("strategy", "regime", "trajectory")
        stats["hct"] = finite_mean(h.astype(float).values, axis=-1)
    stats["cells"] = {name: _cell_values(ds, name) for name in COST_NAMES}
    stats["best"] = {
        m: _best_flags(stats["per_traj"][m], stats["present"], confidence) for m in ("rmse", "crps")
    }
    stats["failed"], stats["failure"] = cell_failures(ds)
    return stats


def _summary_row(
    stats: dict[str, Any], s: int, r: int, ref: int | None, members: int, confidence: float
) -> dict[str, Any]:
    """The summary columns of cell (s, r) except its labels."""
    per_traj, cells = stats["per_traj"], stats["cells"]

    def tmean(name: str) -> float:
        values = per_traj.get(name)
        return math.nan if values is None else float(finite_mean(values[s, r], -1))

    def cell(name: str) -> float:
        values = cells.get(name)
        return math.nan if values is None else float(values[s, r])

    def optional(name: str) -> float:
        values = stats[name]
        return math.nan if values is None else float(values[s, r])

    rmse_mean, rmse_hw, n = mean_and_half_width(per_traj["rmse"][s, r], confidence)
    crps_mean, crps_hw, _ = mean_and_half_width(per_traj["crps"][s, r], confidence)
    ratio = math.nan
    ms = cells["ms_per_frame"]
    if ms is not None and ref is not None and stats["present"][ref, r]:
        denom = float(ms[ref, r])
        if math.isfinite(denom) and denom > 0:
            ratio = float(ms[s, r]) / denom
    return {
        "n_trajectories": n,
        "rmse": rmse_mean,
        "rmse_hw": rmse_hw,
        "crps": crps_mean,
        "crps_hw": crps_hw,
        "crps_fair": tmean("crps_fair"),
        "ssr": _ssr(stats["spread_v"][s, r].ravel(), stats["rmse_v"][s, r].ravel(), members),
        "corr": tmean("corr"),
        "high_corr_time": optional("hct"),
        "spectrum_error": tmean("spectrum_error"),
        "physics_error": (
            math.nan
            if stats["physics_err"] is None
            else float(finite_mean(stats["physics_err"][s, r], -1))
        ),
        "blow_up_fraction": optional("blow"),
        "ms_per_frame": cell("ms_per_frame"),
        "cost_ratio": ratio,
        "wall_seconds": cell("wall_seconds"),
        "denoiser_calls": cell("denoiser_calls"),
        "vjps": cell("vjps"),
        "peak_memory_bytes": cell("peak_memory_bytes"),
        "rmse_best": bool(stats["best"]["rmse"][s, r]),
        "crps_best": bool(stats["best"]["crps"][s, r]),
        "failed": bool(stats["failed"][s, r]),
        "failure": str(stats["failure"][s, r]),
    }


def beats_reference(
    ds: xr.Dataset, reference: str = "forecast", metric: str = "rmse", confidence: float = 0.95
) -> dict[str, tuple[str | None, bool]]:
    """Per regime: the strategy (other than ``reference``) with the lowest time-mean
    ``metric``, and whether ``reference`` is significantly worse than it (the paired
    ``confidence`` interval of the per-trajectory differences lies above zero).

    Returns:
        ``{regime: (best label or None, significant)}``; None where no other strategy has a
        finite score (or ``reference`` was not run: then every entry is ``(None, False)``).
    """
    strategies = [str(s) for s in ds["strategy"].values]
    regimes = [str(r) for r in ds["regime"].values]
    if reference not in strategies:
        return {r: (None, False) for r in regimes}
    per_traj = np.asarray(trajectory_time_means(ds, metric).values, dtype=float)
    means = finite_mean(per_traj, axis=-1)
    ref = strategies.index(reference)
    out: dict[str, tuple[str | None, bool]] = {}
    for r, regime in enumerate(regimes):
        cand = [s for s in range(len(strategies)) if s != ref and np.isfinite(means[s, r])]
        if not cand:
            out[regime] = (None, False)
            continue
        best = min(cand, key=lambda s: means[s, r])
        diff = per_traj[ref, r] - per_traj[best, r]
        mean, half, n = mean_and_half_width(diff, confidence)
        out[regime] = (strategies[best], bool(n >= 2 and mean - half > 0.0))
    return out


def summary(ds: xr.Dataset, confidence: float = 0.95, reference: str = "forecast") -> pd.DataFrame:
    """One row per (strategy, regime) cell that was run, ordered by regime then strategy.

    Columns (:data:`SUMMARY_COLUMNS`); "time mean" is the mean over trajectories of the
    per-trajectory averages over finite frames (:func:`trajectory_time_means`):

    * ``lookahead``: frames of future observations the strategy may read in that cell (-1:
      unknown);
    * ``config``: where the cell's configuration came from (``"tuned"``, ``"tuned,
      untrusted (n trials)"``, ``"default"``, ``"given"``; ``""`` for older results);
    * ``n_trajectories``: trajectories with a finite RMSE time mean;
    * ``rmse``, ``crps``, ``crps_fair``, ``corr``, ``spectrum_error``: time means;
      ``rmse_hw``, ``crps_hw``: their confidence half-widths over trajectories
      (Student-t with n − 1 dof if scipy is installed, else normal; see
      :func:`critical_value`);
    * ``ssr``: ``sqrt((N+1)/N) · sqrt(mean spread²) / sqrt(mean rmse²)``, ``N`` =
      ``attrs["members"]``, means over all trajectories and frames where both are finite;
    * ``high_corr_time``: mean over trajectories (frames);
    * ``physics_error``: time mean of ``|physics − truth_physics| / |truth_physics|``;
    * ``blow_up_fraction``: fraction of trajectories with a blow-up at any frame;
    * ``ms_per_frame``, ``wall_seconds``, ``denoiser_calls``, ``vjps``,
      ``peak_memory_bytes``: copied; ``cost_ratio``: ``ms_per_frame`` over that of
      ``reference`` (default ``forecast``) on the same regime (NaN if it was not run there);
    * ``rmse_best``, ``crps_best``: significantly lowest on the regime (paired intervals
      against every other strategy lie below zero; see the module docstring);
    * ``failed``, ``failure``: the cell stopped with an error (its metrics are NaN) and why.

    Missing optional variables give NaN columns.  ``df.attrs`` carries ``confidence``,
    ``interval`` (``"t"`` or ``"normal"``), ``members`` and ``pde``.

    Args:
        ds: result dataset.
        confidence: level of the half-widths and of the best marking, in (0, 1).
        reference: strategy label that ``cost_ratio`` divides by.

    Returns:
        The summary table.
    """
    import pandas as pd

    members = int(ds.attrs.get("members", 0))
    strategies = [str(s) for s in ds["strategy"].values]
    regimes = [str(r) for r in ds["regime"].values]
    stats = _cell_statistics(ds, confidence)
    ahead = lookaheads(ds)
    ref = strategies.index(reference) if reference in strategies else None
    rows = []
    for r, regime in enumerate(regimes):
        for s, strategy in enumerate(strategies):
            if not (stats["present"][s, r] or stats["failed"][s, r]):
                continue
            row = {
                "strategy": strategy,
                "regime": regime,
                "lookahead": int(ds["cell_lookahead"].values[s, r])
                if "cell_lookahead" in ds
                else ahead[strategy],
                "config": str(ds["config_source"].values[s, r]) if "config_source" in ds else "",
            }
            row.update(_summary_row(stats, s, r, ref, members, confidence))
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    df.attrs.update(
        confidence=confidence,
        interval=interval_kind(),
        members=members,
        pde=str(ds.attrs.get("pde", "")),
    )
    return df
