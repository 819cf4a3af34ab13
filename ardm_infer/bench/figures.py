"""Benchmark figures (PNG) from the result :class:`xarray.Dataset` of the engine.

Every ``plot_*`` function draws one figure with matplotlib's object-oriented API (no pyplot
state, no GUI backend: safe in scripts, tests and on headless machines), saves it as PNG at
:data:`DPI` and returns the path; the matching ``draw_*`` returns the
:class:`~matplotlib.figure.Figure` instead (for notebooks and tests).  :func:`make_figures`
draws all that apply to the dataset's PDE and variables.

Conventions: one colour per strategy, the same in every figure of the project
(:func:`strategy_colors`, also used by the scripts under ``benchmarks/``); panels per regime
in a grid of at most three columns; a (strategy, regime) cell whose ``rmse`` is NaN
everywhere was not run and is left out (a cell recorded as ``failed`` is named in its panel);
means over trajectories use the finite values only; time is the frame index after the
context (``time`` coordinate).  Axis limits come from the cells that stay on scale; a cell
that blew up or whose RMSE peaks above three times the forecast's is drawn clipped and named
(:func:`~ardm_infer.bench.plotting.offscale_cells`).  Confidence bands and error bars of
non-negative metrics are clipped at 0.  Fields (``truth_field``, ``mean_field``,
``obs_mask``) are those of trajectory 0.

Modules: :mod:`~ardm_infer.bench.plotting` (shared layout and scales),
:mod:`~ardm_infer.bench.figures_summary`, :mod:`~ardm_infer.bench.figures_fields`,
:mod:`~ardm_infer.bench.figures_curves`, :mod:`~ardm_infer.bench.figures_calibration`.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from .figures_calibration import (
    draw_pit_ecdf,
    draw_rank_histograms,
    pit_available,
    plot_pit_ecdf,
    plot_rank_histograms,
)
from .figures_curves import (
    draw_accuracy_cost,
    draw_metric_time,
    draw_physics_time,
    draw_spread_skill,
    plot_accuracy_cost,
    plot_metric_time,
    plot_physics_time,
    plot_spread_skill,
)
from .figures_fields import (
    draw_hovmoller,
    draw_vorticity_snapshots,
    plot_hovmoller,
    plot_vorticity_snapshots,
)
from .figures_summary import draw_summary, plot_summary
from .palette import strategy_colors
from .plotting import DPI, default_regime

__all__ = [
    "DPI",
    "default_regime",
    "draw_accuracy_cost",
    "draw_hovmoller",
    "draw_metric_time",
    "draw_physics_time",
    "draw_pit_ecdf",
    "draw_rank_histograms",
    "draw_spread_skill",
    "draw_summary",
    "draw_vorticity_snapshots",
    "figure_caption",
    "make_figures",
    "plot_accuracy_cost",
    "plot_hovmoller",
    "plot_metric_time",
    "plot_physics_time",
    "plot_pit_ecdf",
    "plot_rank_histograms",
    "plot_spread_skill",
    "plot_summary",
    "plot_vorticity_snapshots",
    "strategy_colors",
]

_OFFSCALE = "strategies off-scale (blown up or above 3× the forecast's peak) are clipped and named"

_CAPTIONS = {
    "summary": (
        "Summary. CRPS skill score 1 − CRPS/CRPS_forecast per strategy and regime (time and "
        "trajectory means; positive: better than the unguided forecast), with its paired 95% "
        "interval over trajectories in brackets; ▲ (▼): the interval lies above (below) 0. "
        "Colours saturate at ±1. Row labels give each strategy's look-ahead (frames of future "
        "observations it may read)."
    ),
    "hovmoller": (
        "Hovmöller diagrams. Trajectory 0: truth, each strategy's ensemble mean (left) and "
        "its error mean − truth (right); grid position vertical, frame after the context "
        "horizontal. Fields and errors each share one symmetric colour scale (errors: from "
        "the strategies that stay on scale); dots mark observed points."
    ),
    "vorticity": (
        "Vorticity snapshots. Trajectory 0: truth and each strategy's ensemble mean at a few "
        "frames, one shared colour scale; dots on the truth mark observed points."
    ),
    "rmse_time": (
        "RMSE over time. RMSE of the ensemble mean, mean over trajectories with its confidence "
        f"band (clipped at 0), one panel per regime; {_OFFSCALE}. Ticks on the time axis mark "
        "observed frames (in words when every frame is observed)."
    ),
    "crps_time": (
        "CRPS over time. Mean over trajectories with its confidence band (clipped at 0), one "
        f"panel per regime; {_OFFSCALE}. Ticks on the time axis mark observed frames (in words "
        "when every frame is observed)."
    ),
    "spread_skill": (
        "Spread vs skill. Per frame, corrected spread sqrt((N+1)/N)·RMS spread against "
        "RMS error over trajectories; points on the dashed 1:1 line are calibrated, below "
        f"it over-confident; {_OFFSCALE}."
    ),
    "rank_histograms": (
        "Rank histograms. Frequency of the truth's rank among the members, normalised so "
        "that a calibrated ensemble gives 1 (dashed); U-shape: over-confident, dome: "
        "under-confident, slope: biased. Bars of off-scale strategies are clipped."
    ),
    "pit_ecdf": (
        "PIT-ECDF difference. ECDF of the probability integral transform of the truth minus "
        "the uniform CDF, with a simultaneous confidence band for a calibrated ensemble "
        "(grey); a curve leaving the band indicates miscalibration: an S rising first is "
        "over-confident (U-shaped rank histogram), one falling first under-confident, a "
        "single arch above (below) zero a truth mostly below (above) the members."
    ),
    "accuracy_cost": (
        "Accuracy vs cost. Time-averaged RMSE (with its confidence interval over "
        "trajectories, clipped at 0) against wall-clock milliseconds per frame for all "
        f"trajectories and members of the cell at once, log scale; {_OFFSCALE} at the top."
    ),
    "physics_time": (
        "Physics diagnostic over time. Mean over trajectories of the diagnostic averaged over "
        f"the members (each member's diagnostic, then their mean), truth dashed black; {_OFFSCALE}."
    ),
}


def figure_caption(path: str | Path) -> str:
    """Caption of a figure written by this module, from its file name."""
    stem = Path(path).stem
    for key in sorted(_CAPTIONS, key=len, reverse=True):
        if stem.startswith(key):
            return _CAPTIONS[key]
    return stem.replace("_", " ")


def _field_figure(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """The field figure of the dataset's geometry (to be chosen by the systems registry)."""
    if "y" in ds["truth_field"].dims:
        return plot_vorticity_snapshots(ds, out_dir)
    return plot_hovmoller(ds, out_dir)


def make_figures(ds: xr.Dataset, out_dir: str | Path, confidence: float = 0.95) -> list[Path]:
    """Draw every figure that applies to the dataset; return the PNG paths in report order.

    The summary (CRPS skill vs forecast, if ``crps``); KS (a ``field`` without ``y``):
    Hovmöller; Kolmogorov (fields with ``y``): vorticity snapshots; then RMSE and CRPS over
    time, spread vs skill, rank histograms and PIT-ECDF (if ``rank_hist``; the PIT-ECDF
    needs scipy and ArviZ), accuracy vs cost (if ``ms_per_frame``) and the physics
    diagnostic (if ``physics`` and ``truth_physics``).  ``confidence`` is the level of the
    bands, error bars and significance marks.
    """
    paths: list[Path] = []
    if "crps" in ds:
        paths.append(plot_summary(ds, out_dir, confidence=confidence))
    if "truth_field" in ds and "mean_field" in ds:
        paths.append(_field_figure(ds, out_dir))
    for metric in ("rmse", "crps"):
        if metric in ds:
            paths.append(plot_metric_time(ds, out_dir, metric, confidence))
    if "spread" in ds:
        paths.append(plot_spread_skill(ds, out_dir))
    if "rank_hist" in ds:
        paths.append(plot_rank_histograms(ds, out_dir))
        if pit_available():
            paths.append(plot_pit_ecdf(ds, out_dir, confidence=confidence))
    if "ms_per_frame" in ds:
        paths.append(plot_accuracy_cost(ds, out_dir, confidence))
    if "physics" in ds and "truth_physics" in ds:
        paths.append(plot_physics_time(ds, out_dir))
    return paths
