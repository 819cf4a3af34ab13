"""Calibration figures: rank histograms and PIT-ECDF differences.

``draw_*`` return the :class:`~matplotlib.figure.Figure`; ``plot_*`` save it as PNG and
return the path (see :mod:`ardm_infer.bench.figures`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .palette import strategy_colors
from .plotting import (
    axis_top,
    figure,
    grid,
    label_outer,
    names,
    offscale_cells,
    panel_axes,
    save,
    strategy_legend,
    title,
)
from .stats import cell_failures


def _rank_counts(ds: xr.Dataset) -> np.ndarray:
    """``(strategy, regime, rank)`` float counts (NaN → 0)."""
    counts = ds["rank_hist"].transpose("strategy", "regime", "rank").astype(float).values
    return np.nan_to_num(counts, nan=0.0)


def _empty_panel(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey", fontsize=8
    )


def draw_rank_histograms(ds: xr.Dataset) -> Figure:
    """The figure of :func:`plot_rank_histograms`."""
    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    counts = _rank_counts(ds)
    totals = counts.sum(axis=-1)
    off = offscale_cells(ds)
    failed, _ = cell_failures(ds)
    colors = strategy_colors(strategies)
    ranks = ds["rank"].values
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = counts / totals[..., None] * len(ranks)
    ok = (totals > 0) & ~off
    top = axis_top([1.0, *(freq[ok].max(axis=-1) if ok.any() else [])], pad=1.05)
    fig = figure(1.4 + 2.0 * len(regimes), 0.9 + 1.45 * len(strategies))
    axes = fig.subplots(len(strategies), len(regimes), squeeze=False, sharex=True, sharey=True)
    for s, name in enumerate(strategies):
        for r, regime in enumerate(regimes):
            ax = axes[s, r]
            if totals[s, r] > 0:
                ax.bar(ranks, freq[s, r], width=1.0, color=colors[name], alpha=0.85, linewidth=0)
                ax.axhline(1.0, color="black", lw=0.8, ls="--")
                if freq[s, r].max() > top:
                    _empty_panel(ax, f"clipped: up to {freq[s, r].max():.3g}")
            else:
                _empty_panel(ax, "failed" if failed[s, r] else "not run")
            ax.set_ylim(0, top)
            ax.tick_params(labelsize=7)
            if s == 0:
                ax.set_title(regime, fontsize=9)
            if r == 0:
                ax.set_ylabel(f"{name}\nfreq × (N+1)", fontsize=8, color=colors[name])
            if s == len(strategies) - 1:
                ax.set_xlabel("rank of truth", fontsize=8)
    fig.suptitle(f"Rank histograms ({title(ds)})")
    return fig


def plot_rank_histograms(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Grid strategy (rows) × regime (columns) of normalised rank histograms.

    Bar ``r`` is the frequency of rank ``r`` times ``N + 1`` (``N + 1`` = number of ranks),
    so a calibrated ensemble gives bars of height 1 (dashed line).  All panels share the
    y axis, set by the cells that stay on scale (an off-scale ensemble puts the truth at an
    extreme rank; its bars are clipped and the panel says up to where); cells not run or
    failed say so.

    Returns:
        ``out_dir/rank_histograms.png``.
    """
    return save(draw_rank_histograms(ds), out_dir, "rank_histograms")


def _pit_sample(counts: np.ndarray, size: int) -> np.ndarray:
    """``size`` PIT values whose ECDF follows the PIT distribution implied by rank counts.

    Rank ``r`` of ``N + 1`` ranks maps to a PIT uniform on ``[r, r + 1] / (N + 1)``
    (randomised PIT), so the PIT CDF is piecewise linear through the cumulative rank
    frequencies; its quantiles at ``(i + 1/2) / size`` are returned.
    """
    n_bins = counts.size
    cdf = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    knots = np.linspace(0.0, 1.0, n_bins + 1)
    probs = (np.arange(size) + 0.5) / size
    keep = np.concatenate([[True], np.diff(cdf) > 0])  # strictly increasing for interp
    return np.interp(probs, cdf[keep], knots[keep])


def pit_available() -> bool:
    """Whether scipy and ArviZ import (the PIT-ECDF figure needs both)."""
    try:
        import scipy.stats  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import arviz  # noqa: F401
    except ImportError:
        return False
    return True


def draw_pit_ecdf(
    ds: xr.Dataset, effective_size: int | None = None, confidence: float = 0.95
) -> Figure:
    """The figure of :func:`plot_pit_ecdf`."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ announces its refactor with a FutureWarning
        import arviz as az

    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    counts = _rank_counts(ds)
    colors = strategy_colors(strategies)
    size = effective_size or int(ds.sizes.get("trajectory", 1) * ds.sizes.get("time", 1))
    size = max(size, 2)
    eval_points = np.linspace(0.0, 1.0, 101)
    fig = figure(13.0, 0.9 + 2.9 * grid(len(regimes))[0])
    axes = panel_axes(fig, len(regimes))
    shown = set()
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        band = True
        for s, name in enumerate(strategies):
            if counts[s, r].sum() <= 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                az.plot_ecdf(
                    _pit_sample(counts[s, r], size),
                    cdf=stats.uniform(0, 1).cdf,
                    difference=True,
                    confidence_bands="optimized" if band else False,
                    ci_prob=confidence,
                    eval_points=eval_points,
                    random_state=0,
                    ax=ax,
                    plot_kwargs={"color": colors[name], "lw": 1.3},
                    fill_kwargs={"color": "grey", "alpha": 0.2},
                    show=False,
                )
            band = False
            shown.add(name)
        ax.axhline(0.0, color="black", lw=0.6, zorder=0.5)
        ax.set_title(regime)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
        ax.set_xlabel("")
        ax.set_ylabel("")
    label_outer(axes, len(regimes), "ECDF − uniform CDF", "PIT")
    band_handle = Line2D(
        [],
        [],
        color="grey",
        lw=6,
        alpha=0.3,
        label=f"{100 * confidence:g}% simultaneous band, n = {size}",
    )
    strategy_legend(fig, [s for s in strategies if s in shown], [band_handle])
    fig.suptitle(f"PIT-ECDF difference ({title(ds)})")
    return fig


def plot_pit_ecdf(
    ds: xr.Dataset,
    out_dir: str | Path,
    effective_size: int | None = None,
    confidence: float = 0.95,
) -> Path:
    """PIT-ECDF difference plots (ArviZ ``plot_ecdf``), one panel per regime.

    The rank counts are turned into PIT values (:func:`_pit_sample`) and drawn with
    :func:`arviz.plot_ecdf` (``cdf`` = uniform, ``difference=True``); the first strategy of
    a panel also draws ArviZ's simultaneous ``confidence`` band (``"optimized"``) for a
    calibrated ensemble.  The band width depends on the number of independent PIT values,
    which neighbouring grid points of one frame are not: by default the band is drawn for
    ``effective_size`` = trajectories × frames, i.e. one independent value per forecast
    field, which is conservative (wider than for independent points).  The curve itself
    uses all points.  The y range is bounded by construction (|ECDF − CDF| ≤ 1).

    Returns:
        ``out_dir/pit_ecdf.png``.
    """
    return save(draw_pit_ecdf(ds, effective_size, confidence), out_dir, "pit_ecdf")
