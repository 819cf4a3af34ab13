"""Benchmark report: summary tables with confidence intervals and a markdown report.

Input is the result :class:`xarray.Dataset` of the benchmark engine (see
``ardm_infer.bench.core``).  The parts used here:

* ``rmse``, ``crps``, ``spread`` (required) and optionally ``crps_fair``, ``corr``,
  ``spectrum_error``, ``physics``, ``blow_up``: dims ``(strategy, regime, trajectory, time)``;
* ``truth_physics``: ``(trajectory, time)``; ``high_corr_time``:
  ``(strategy, regime, trajectory)``;
* ``ms_per_frame``, ``wall_seconds``, ``denoiser_calls``, ``vjps``, ``peak_memory_bytes``:
  ``(strategy, regime)``;
* attrs ``pde``, ``members``, ``horizon``, ``seed``, ``config`` (JSON), ``code_version``,
  ``created``.

A (strategy, regime) cell whose ``rmse`` is NaN everywhere was not run and gets no row.

Statistics (all documented again in the report's legend):

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
  ensemble (the factor corrects the finite-ensemble bias of the ensemble-mean error).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

__all__ = [
    "SUMMARY_COLUMNS",
    "critical_value",
    "format_table",
    "interval_kind",
    "load_results",
    "markdown_table",
    "summary",
    "trajectory_time_means",
    "write_report",
]

SUMMARY_COLUMNS: tuple[str, ...] = (
    "strategy",
    "regime",
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
)
"""Columns of :func:`summary`, in order."""

_PER_TIME = ("strategy", "regime", "trajectory", "time")
_PER_CELL = ("strategy", "regime")

_PDE_TITLES = {"ks": "Kuramoto–Sivashinsky (1-D)", "kolmogorov": "Kolmogorov flow (2-D)"}


# ----------------------------------------------------------------------------- statistics


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


def _mean_and_half_width(values: np.ndarray, confidence: float) -> tuple[float, float, int]:
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


def _finite_mean(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Mean over ``axis`` of the finite entries; NaN where there are none (no warning)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    total = np.where(finite, v, 0.0).sum(axis=axis)
    count = finite.sum(axis=axis)
    return np.divide(
        total, count, out=np.full(np.shape(total), np.nan), where=count > 0, casting="unsafe"
    )


def _per_time(ds: xr.Dataset, name: str) -> xr.DataArray | None:
    """``ds[name]`` as ``(strategy, regime, trajectory, time)`` float, or None if absent."""
    if name not in ds:
        return None
    return ds[name].transpose(*_PER_TIME).astype(float)


def trajectory_time_means(ds: xr.Dataset, name: str) -> xr.DataArray:
    """Per-trajectory time average of a per-frame metric over its finite frames.

    Args:
        ds: result dataset.
        name: a variable with dims ``(strategy, regime, trajectory, time)``.

    Returns:
        ``(strategy, regime, trajectory)`` float; NaN where a trajectory has no finite frame.
    """
    da = _per_time(ds, name)
    if da is None:
        raise KeyError(f"the result dataset has no variable {name!r}")
    dims = ("strategy", "regime", "trajectory")
    return xr.DataArray(
        _finite_mean(da.values, axis=-1), dims=dims, coords={d: da[d] for d in dims}
    )


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
    means = _finite_mean(per_traj, axis=-1)
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
            mean, hw, n = _mean_and_half_width(diff, confidence)
            if n < 2 or not math.isfinite(hw) or not mean + hw < 0.0:
                significant = False
                break
        flags[best, r] = significant
    return flags


def _cell_values(ds: xr.Dataset, name: str) -> np.ndarray | None:
    """``(strategy, regime)`` float values of a per-cell variable, or None."""
    if name not in ds:
        return None
    return ds[name].transpose(*_PER_CELL).astype(float).values


def summary(ds: xr.Dataset, confidence: float = 0.95, reference: str = "forecast") -> pd.DataFrame:
    """One row per (strategy, regime) cell that was run, ordered by regime then strategy.

    Columns (:data:`SUMMARY_COLUMNS`); "time mean" is the mean over trajectories of the
    per-trajectory averages over finite frames (:func:`trajectory_time_means`):

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
      against every other strategy lie below zero; see the module docstring).

    Missing optional variables give NaN columns.  ``df.attrs`` carries ``confidence``,
    ``interval`` (``"t"`` or ``"normal"``), ``members`` and ``pde``.

    Args:
        ds: result dataset.
        confidence: level of the half-widths and of the best marking, in (0, 1).
        reference: strategy label that ``cost_ratio`` divides by.

    Returns:
        The summary table.
    """
    members = int(ds.attrs.get("members", 0))
    strategies = [str(s) for s in ds["strategy"].values]
    regimes = [str(r) for r in ds["regime"].values]
    n_s, n_r = len(strategies), len(regimes)

    rmse = _per_time(ds, "rmse")
    spread = _per_time(ds, "spread")
    if rmse is None or spread is None or "crps" not in ds:
        raise KeyError("the result dataset needs the variables 'rmse', 'crps' and 'spread'")
    rmse_v, spread_v = rmse.values, spread.values
    per_traj = {
        name: trajectory_time_means(ds, name).values
        for name in ("rmse", "crps", "crps_fair", "corr", "spectrum_error")
        if name in ds
    }
    present = np.isfinite(rmse_v).any(axis=(2, 3))

    physics_err = None
    physics = _per_time(ds, "physics")
    if physics is not None and "truth_physics" in ds:
        truth = ds["truth_physics"].transpose("trajectory", "time").astype(float).values
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(physics.values - truth) / np.abs(truth)
        physics_err = _finite_mean(rel, axis=-1)

    blow = None
    if "blow_up" in ds:
        b = ds["blow_up"].transpose(*_PER_TIME).astype(float).values
        blow = (np.nan_to_num(b, nan=0.0) > 0).any(axis=-1).mean(axis=-1)

    hct = None
    if "high_corr_time" in ds:
        h = ds["high_corr_time"].transpose("strategy", "regime", "trajectory")
        hct = _finite_mean(h.astype(float).values, axis=-1)

    cost_names = ("ms_per_frame", "wall_seconds", "denoiser_calls", "vjps", "peak_memory_bytes")
    cells = {name: _cell_values(ds, name) for name in cost_names}
    ms = cells["ms_per_frame"]
    best = {m: _best_flags(per_traj[m], present, confidence) for m in ("rmse", "crps")}
    f_idx = strategies.index(reference) if reference in strategies else None

    def cell(name: str, s: int, r: int) -> float:
        values = cells.get(name)
        return math.nan if values is None else float(values[s, r])

    rows = []
    for r in range(n_r):
        for s in range(n_s):
            if not present[s, r]:
                continue
            rmse_mean, rmse_hw, n = _mean_and_half_width(per_traj["rmse"][s, r], confidence)
            crps_mean, crps_hw, _ = _mean_and_half_width(per_traj["crps"][s, r], confidence)
            ratio = math.nan
            if ms is not None and f_idx is not None and present[f_idx, r]:
                denom = float(ms[f_idx, r])
                if math.isfinite(denom) and denom > 0:
                    ratio = float(ms[s, r]) / denom

            def tmean(name: str, s: int = s, r: int = r) -> float:
                values = per_traj.get(name)
                return math.nan if values is None else float(_finite_mean(values[s, r], -1))

            rows.append(
                {
                    "strategy": strategies[s],
                    "regime": regimes[r],
                    "n_trajectories": n,
                    "rmse": rmse_mean,
                    "rmse_hw": rmse_hw,
                    "crps": crps_mean,
                    "crps_hw": crps_hw,
                    "crps_fair": tmean("crps_fair"),
                    "ssr": _ssr(spread_v[s, r].ravel(), rmse_v[s, r].ravel(), members),
                    "corr": tmean("corr"),
                    "high_corr_time": math.nan if hct is None else float(hct[s, r]),
                    "spectrum_error": tmean("spectrum_error"),
                    "physics_error": (
                        math.nan
                        if physics_err is None
                        else float(_finite_mean(physics_err[s, r], -1))
                    ),
                    "blow_up_fraction": math.nan if blow is None else float(blow[s, r]),
                    "ms_per_frame": cell("ms_per_frame", s, r),
                    "cost_ratio": ratio,
                    "wall_seconds": cell("wall_seconds", s, r),
                    "denoiser_calls": cell("denoiser_calls", s, r),
                    "vjps": cell("vjps", s, r),
                    "peak_memory_bytes": cell("peak_memory_bytes", s, r),
                    "rmse_best": bool(best["rmse"][s, r]),
                    "crps_best": bool(best["crps"][s, r]),
                }
            )
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    df.attrs.update(
        confidence=confidence,
        interval=interval_kind(),
        members=members,
        pde=str(ds.attrs.get("pde", "")),
    )
    return df


# ----------------------------------------------------------------------------- formatting


def _num(value: float, digits: int = 3) -> str:
    """Compact number: ``digits`` significant digits, no exponent below 1e5; ``-`` if NaN."""
    if value is None or not math.isfinite(value):
        return "-" if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{max(digits - 1, 1)}e}"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:#.{digits}g}"


def _pm(value: float, hw: float) -> str:
    """``value ± half-width`` with the decimals of the half-width's 2 significant digits or
    of the value's 3, whichever is finer (at most 6: strategies are compared on their means,
    which a wide interval over few trajectories must not round away); the value alone (4
    significant digits) when the half-width is NaN or 0."""
    if not (math.isfinite(value) and math.isfinite(hw) and hw > 0):
        return _num(value, 4)
    by_hw = 1 - math.floor(math.log10(hw))
    by_value = 2 - math.floor(math.log10(abs(value))) if value != 0 else 0
    decimals = min(max(by_hw, by_value, 0), 6)
    return f"{value:.{decimals}f} ± {hw:.{decimals}f}"


def _count(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.0f}"


def _ratio(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}"


def _percent(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.0f}%"


def _confidence_label(df: pd.DataFrame) -> str:
    return f"{100 * float(df.attrs.get('confidence', 0.95)):g}%"


def format_table(summary_df: pd.DataFrame) -> str:
    """Fixed-width plain-text table of :func:`summary` for the terminal.

    One line per (regime, strategy), regimes separated by a rule; columns RMSE ± hw,
    CRPS ± hw, SSR, ms/frame, ×forecast (cost ratio) and blow-up fraction; a ``*`` follows
    significantly best entries.  A footer explains the half-width and the ``*``.
    """
    level = _confidence_label(summary_df)
    header = (
        "regime",
        "strategy",
        f"RMSE ± {level} hw",
        f"CRPS ± {level} hw",
        "SSR",
        "ms/frame",
        "×forecast",
        "blow-up",
    )
    body: list[tuple[str, ...] | None] = []
    previous = None
    for row in summary_df.itertuples(index=False):
        if previous is not None and row.regime != previous:
            body.append(None)
        previous = row.regime
        body.append(
            (
                str(row.regime),
                str(row.strategy),
                _pm(row.rmse, row.rmse_hw) + ("*" if row.rmse_best else " "),
                _pm(row.crps, row.crps_hw) + ("*" if row.crps_best else " "),
                _num(row.ssr, 3),
                _num(row.ms_per_frame, 3),
                _ratio(row.cost_ratio),
                _percent(row.blow_up_fraction),
            )
        )
    lines_data = [header, *(b for b in body if b is not None)]
    widths = [max(len(r[i]) for r in lines_data) for i in range(len(header))]
    left = {0, 1}

    def render(cols: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [render(header), rule]
    for b in body:
        lines.append(rule if b is None else render(b))
    interval = "Student-t" if summary_df.attrs.get("interval", "t") == "t" else "normal"
    lines.append("")
    lines.append(
        f"hw: {level} {interval} half-width over trajectories; "
        f"*: significantly lowest on the regime (paired {level} intervals vs every other "
        "strategy); SSR 1 = calibrated; ×forecast: ms/frame relative to forecast"
    )
    return "\n".join(lines)


def markdown_table(summary_df: pd.DataFrame, kind: Literal["main", "diagnostics"] = "main") -> str:
    """GitHub-flavoured markdown table of :func:`summary`.

    Args:
        summary_df: output of :func:`summary`.
        kind: ``"main"``: RMSE ± hw, CRPS ± hw (significantly best in bold), SSR,
            ms/frame, ×forecast, blow-up; ``"diagnostics"``: fair CRPS, correlation,
            high-correlation time, spectrum error, physics error, denoiser calls, VJPs,
            peak memory and wall time.

    Returns:
        The table, one line per (regime, strategy), without a trailing newline.
    """
    level = _confidence_label(summary_df)
    if kind == "main":
        header = [
            "regime",
            "strategy",
            f"RMSE ± {level}",
            f"CRPS ± {level}",
            "SSR",
            "ms/frame",
            "× forecast",
            "blow-up",
        ]
    elif kind == "diagnostics":
        header = [
            "regime",
            "strategy",
            "fair CRPS",
            "corr",
            "corr ≥ 0.8 (frames)",
            "spectrum err",
            "physics err",
            "denoiser calls",
            "VJPs",
            "peak mem (MiB)",
            "wall (s)",
        ]
    else:
        raise ValueError(f"kind must be 'main' or 'diagnostics', got {kind!r}")

    def bold(text: str, flag: bool) -> str:
        return f"**{text}**" if flag else text

    rows = []
    for row in summary_df.itertuples(index=False):
        if kind == "main":
            cells = [
                str(row.regime),
                str(row.strategy),
                bold(_pm(row.rmse, row.rmse_hw), bool(row.rmse_best)),
                bold(_pm(row.crps, row.crps_hw), bool(row.crps_best)),
                _num(row.ssr),
                _num(row.ms_per_frame),
                _ratio(row.cost_ratio),
                _percent(row.blow_up_fraction),
            ]
        else:
            cells = [
                str(row.regime),
                str(row.strategy),
                _num(row.crps_fair, 4),
                _num(row.corr),
                _num(row.high_corr_time),
                _num(row.spectrum_error),
                _num(row.physics_error),
                _count(row.denoiser_calls),
                _count(row.vjps),
                _num(row.peak_memory_bytes / 2**20),
                _num(row.wall_seconds),
            ]
        rows.append(cells)
    align = ["---", "---", *["--:"] * (len(header) - 2)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- report

_LEGEND = """\
- **RMSE**: root-mean-square error of the ensemble mean over the full state, averaged over
  the {horizon} assimilated frames of each trajectory, then over the {n} trajectories.
- **CRPS**: continuous ranked probability score of the ensemble (standard estimator),
  averaged over grid points, frames and trajectories.  Lower is better for both.
- **± x**: half-width of the {level} confidence interval of the mean over trajectories,
  from the spread of the per-trajectory time averages ({interval} quantile with n − 1
  degrees of freedom).
- **Bold** (`*` in the terminal table): significantly best on the regime — the lowest mean,
  and for every other strategy run on that regime the {level} confidence interval of the
  paired per-trajectory difference (same truth, same observations) lies entirely below
  zero.  No mark means no strategy is distinguishable from all others with these
  trajectories.
- **SSR**: spread–skill ratio sqrt((N+1)/N) · sqrt(mean spread²) / sqrt(mean RMSE²) with
  N = {members} members; 1 is calibrated, below 1 over-confident, above 1 under-confident.
- **ms/frame**: wall-clock milliseconds per assimilated frame and trajectory;
  **× forecast**: the same relative to the unguided forecast on that regime.
- **blow-up**: fraction of trajectories whose ensemble left the finite range; frames with a
  non-finite metric are left out of the time averages.
"""


def _pretty_config(config: object) -> str:
    """The ``config`` attribute as indented JSON (verbatim when not JSON)."""
    if isinstance(config, str):
        try:
            return json.dumps(json.loads(config), indent=2, sort_keys=True)
        except ValueError:
            return config
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def write_report(
    ds: xr.Dataset,
    out_dir: str | Path,
    confidence: float = 0.95,
    figures: bool = True,
) -> Path:
    """Write ``out_dir/report.md`` (and the figures under ``out_dir/figures/``).

    The report holds the run's metadata (PDE, members, horizon, seed, code version, creation
    time), the main summary table (:func:`markdown_table`), a legend of the columns and the
    significance rule, the diagnostics table, the figures of
    :func:`ardm_infer.bench.figures.make_figures` embedded with relative links, and the
    configuration JSON.

    Args:
        ds: result dataset.
        out_dir: output folder (created if needed).
        confidence: level of the intervals and of the best marking.
        figures: draw and embed the figures.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary(ds, confidence=confidence)
    attrs = ds.attrs
    pde = str(attrs.get("pde", ""))
    level = _confidence_label(table)
    interval = "Student-t" if table.attrs["interval"] == "t" else "standard normal"

    lines = [f"# Benchmark report: {_PDE_TITLES.get(pde, pde or 'unknown PDE')}", ""]
    meta = [
        ("strategies", ", ".join(str(s) for s in ds["strategy"].values)),
        ("regimes", ", ".join(str(r) for r in ds["regime"].values)),
        ("trajectories", str(ds.sizes.get("trajectory", 0))),
        ("members", str(attrs.get("members", "?"))),
        ("horizon (frames)", str(attrs.get("horizon", ds.sizes.get("time", "?")))),
        ("seed", str(attrs.get("seed", "?"))),
        ("code version", f"`{attrs.get('code_version', 'unknown')}`"),
        ("created", str(attrs.get("created", "unknown"))),
    ]
    lines += [f"- **{k}**: {v}" for k, v in meta]
    lines += ["", "## Results", "", markdown_table(table, "main"), "", "### Legend", ""]
    lines.append(
        _LEGEND.format(
            horizon=attrs.get("horizon", ds.sizes.get("time", "?")),
            n=ds.sizes.get("trajectory", "?"),
            level=level,
            interval=interval,
            members=attrs.get("members", "?"),
        )
    )
    lines += [
        "## Diagnostics",
        "",
        "Time means as above.  *corr*: Pearson correlation of ensemble mean and truth; "
        "*corr ≥ 0.8*: frames from the start until the correlation first drops below 0.8; "
        "*spectrum err*: largest relative error of the members' energy spectrum; *physics "
        "err*: relative error of the ensemble mean's "
        + (
            "total variation"
            if pde == "ks"
            else "dissipation"
            if pde == "kolmogorov"
            else "physics diagnostic"
        )
        + " against the truth's; *peak mem*: peak accelerator memory.",
        "",
        markdown_table(table, "diagnostics"),
        "",
    ]
    if figures:
        from ardm_infer.bench.figures import figure_caption, make_figures

        paths = make_figures(ds, out / "figures", confidence=confidence)
        if paths:
            lines += ["## Figures", ""]
            for p in paths:
                rel = Path(p).resolve().relative_to(out.resolve()).as_posix()
                caption = figure_caption(p)
                title = caption.split(".")[0]
                lines += [f"### {title}", "", f"![{title}]({rel})", "", caption, ""]
    lines += [
        "## Configuration",
        "",
        "```json",
        _pretty_config(attrs.get("config", "{}")),
        "```",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def load_results(path: str | Path) -> xr.Dataset:
    """Open a result netCDF file written by ``Dataset.to_netcdf`` and load it into memory.

    The file is closed before returning.  Boolean variables that the netCDF round trip
    stored as integers are left as xarray decodes them.
    """
    with xr.open_dataset(Path(path)) as ds:
        return ds.load()
