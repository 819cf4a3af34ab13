"""Curve figures: a metric over time, spread vs skill, the physics diagnostic, accuracy vs cost.

``draw_*`` return the :class:`~matplotlib.figure.Figure`; ``plot_*`` save it as PNG and
return the path (see :mod:`ardm_infer.bench.figures`).  Axis limits come from the cells that
stay on scale; off-scale cells (:func:`~ardm_infer.bench.plotting.offscale_cells`) are drawn
clipped, marked with a caret at the edge and named in their panel.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .palette import strategy_colors
from .plotting import (
    axis_top,
    failure_notes,
    figure,
    grid,
    label_outer,
    log_axis,
    mark_observed,
    names,
    observed_handle,
    observed_times,
    offscale_cells,
    offscale_handle,
    panel_axes,
    panel_notes,
    per_time,
    save,
    shown_strategies,
    strategy_legend,
    system_labels,
    title,
)
from .stats import finite_mean, mean_band, present_cells, summary

METRIC_LABELS = {
    "rmse": "RMSE of the ensemble mean",
    "crps": "CRPS (spatial mean)",
    "crps_fair": "fair CRPS (spatial mean)",
    "spread": "spread",
    "corr": "correlation with truth",
}
NONNEGATIVE = frozenset({"rmse", "crps", "crps_fair", "spread", "spectrum_error"})
"""Per-frame metrics that cannot be negative: their bands are clipped at 0."""


def _mark_offscale(ax: Axes, t: np.ndarray, curve: np.ndarray, top: float, color: str) -> str:
    """Caret at the top edge where ``curve`` first leaves the axis; returns the note."""
    above = np.flatnonzero(~(curve <= top))
    peak = np.nanmax(np.where(np.isfinite(curve), curve, np.nan)) if np.isfinite(curve).any() else 0
    if above.size == 0:
        return "blew up"
    first = int(above[0])
    ax.plot(t[first], top, marker=6, markersize=8, color=color, clip_on=False, zorder=6)
    peak_text = f"peak {peak:.3g}" if np.isfinite(curve).all() else "non-finite"
    return f"off-scale from frame {int(t[first])} ({peak_text})"


def draw_metric_time(ds: xr.Dataset, metric: str = "rmse", confidence: float = 0.95) -> Figure:
    """The figure of :func:`plot_metric_time`."""
    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    present, off = present_cells(ds), offscale_cells(ds)
    colors = strategy_colors(strategies)
    values = per_time(ds, metric)
    t = ds["time"].values
    bounded = metric in NONNEGATIVE
    curves = {
        (s, r): mean_band(values[s, r], confidence)
        for s, r in zip(*np.nonzero(present), strict=True)
    }
    top = axis_top(
        [
            np.nanmax(m)
            for (s, r), (m, _) in curves.items()
            if not off[s, r] and np.isfinite(m).any()
        ]
    )
    fig = figure(13.0, 0.9 + 2.9 * grid(len(regimes))[0])
    axes = panel_axes(fig, len(regimes))
    ticks = False
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        notes = []
        for s, name in enumerate(strategies):
            if (s, r) not in curves:
                continue
            mean, hw = curves[(s, r)]
            low = np.maximum(mean - hw, 0.0) if bounded else mean - hw
            ax.plot(t, mean, color=colors[name], lw=1.4)
            ok = np.isfinite(hw)
            ax.fill_between(t, low, mean + hw, where=ok, color=colors[name], alpha=0.18, lw=0)
            if off[s, r] and bounded:
                notes.append(
                    (f"{name}: {_mark_offscale(ax, t, mean, top, colors[name])}", colors[name])
                )
        panel_notes(ax, notes + failure_notes(ds, regime))
        ticks |= mark_observed(ax, observed_times(ds, regime), len(t))
        ax.set_title(regime)
        if bounded:
            ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    label = METRIC_LABELS.get(metric, metric)
    label_outer(axes, len(regimes), label, "frame after context")
    clip = " (clipped at 0)" if bounded else ""
    band = Line2D(
        [], [], color="grey", lw=6, alpha=0.3, label=f"{100 * confidence:g}% CI of mean{clip}"
    )
    extra = [band] + ([observed_handle()] if ticks else [])
    extra += [offscale_handle()] if off.any() else []
    strategy_legend(fig, shown_strategies(ds), extra=extra)
    fig.suptitle(f"{label[:1].upper()}{label[1:]} over time ({title(ds)})")
    return fig


def plot_metric_time(
    ds: xr.Dataset, out_dir: str | Path, metric: str = "rmse", confidence: float = 0.95
) -> Path:
    """A per-frame metric over time: one panel per regime, a line per strategy.

    Lines are means over trajectories of the finite values, with the ``confidence`` band
    of the mean (Student-t over trajectories), clipped at 0 for non-negative metrics
    (:data:`NONNEGATIVE`).  The y axis (shared) ends just above the highest mean of the
    cells that stay on scale; off-scale cells are clipped, marked and named in their panel.
    Observed frames are ticks on the time axis, or said in words on every-frame regimes.

    Args:
        ds: result dataset with ``metric`` of dims ``(strategy, regime, trajectory, time)``.
        out_dir: folder of the PNG.
        metric: variable name, e.g. ``"rmse"`` or ``"crps"``.
        confidence: level of the bands.

    Returns:
        ``out_dir/<metric>_time.png``.
    """
    return save(draw_metric_time(ds, metric, confidence), out_dir, f"{metric}_time")


def draw_spread_skill(ds: xr.Dataset) -> Figure:
    """The figure of :func:`plot_spread_skill`."""
    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    present, off = present_cells(ds), offscale_cells(ds)
    colors = strategy_colors(strategies)
    n = int(ds.attrs.get("members", 0))
    factor = math.sqrt((n + 1) / n) if n > 0 else 1.0
    rmse, spread = per_time(ds, "rmse"), per_time(ds, "spread")
    points = {}
    for s, r in zip(*np.nonzero(present), strict=True):
        err = np.sqrt(finite_mean(rmse[s, r] ** 2, axis=0))
        spr = factor * np.sqrt(finite_mean(spread[s, r] ** 2, axis=0))
        ok = np.isfinite(err) & np.isfinite(spr)
        if ok.any():
            points[(s, r)] = (err[ok], spr[ok])
    fig = figure(13.0, 0.9 + 3.6 * grid(len(regimes))[0])
    axes = panel_axes(fig, len(regimes), sharex=False, sharey=False)
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        notes = []
        top = axis_top(
            [max(e.max(), p.max()) for (s, q), (e, p) in points.items() if q == r and not off[s, q]]
        )
        for s, name in enumerate(strategies):
            if (s, r) not in points:
                continue
            err, spr = points[(s, r)]
            style = {"color": colors[name], "marker": "o"}
            ax.plot(err, spr, lw=0.8, alpha=0.6, markersize=2.5, **style)
            ax.plot(err[-1], spr[-1], markersize=6, markeredgecolor="black", mew=0.6, **style)
            if off[s, r]:
                notes.append(
                    (f"{name}: off-scale (up to {max(err.max(), spr.max()):.3g})", colors[name])
                )
        panel_notes(ax, notes + failure_notes(ds, regime))
        ax.plot([0, top], [0, top], color="black", lw=1, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(regime)
        ax.grid(alpha=0.3)
    label_outer(axes, len(regimes), "corrected spread", "RMSE of the ensemble mean")
    extra = [
        Line2D([], [], color="black", lw=1, ls="--", label="1:1 (calibrated)"),
        Line2D(
            [],
            [],
            color="grey",
            marker="o",
            markersize=6,
            markeredgecolor="black",
            linestyle="none",
            label="last frame",
        ),
    ]
    strategy_legend(fig, shown_strategies(ds), extra)
    fig.suptitle(f"Spread vs skill per frame ({title(ds)})")
    return fig


def plot_spread_skill(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Spread vs skill per frame: one panel per regime, one point series per strategy.

    For every frame, ``x`` = RMS over trajectories of the RMSE, ``y`` =
    ``sqrt((N+1)/N)`` × RMS over trajectories of the spread (``N`` = members), so that a
    calibrated ensemble lies on the 1:1 line.  Points of a strategy are joined in time
    order; the last frame is marked larger.  Both axes end just above the largest value of
    the cells that stay on scale; off-scale cells are clipped and named in their panel.

    Returns:
        ``out_dir/spread_skill.png``.
    """
    return save(draw_spread_skill(ds), out_dir, "spread_skill")


def _padded_range(values: np.ndarray, pad: float = 0.08) -> tuple[float, float]:
    """``(low, high)`` of the finite values widened by ``pad`` of their range each side."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    low, high = float(v.min()), float(v.max())
    width = high - low if high > low else max(abs(high), 1.0)
    return low - pad * width, high + pad * width


def draw_physics_time(ds: xr.Dataset) -> Figure:
    """The figure of :func:`plot_physics_time`."""
    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    present, off = present_cells(ds), offscale_cells(ds)
    colors = strategy_colors(strategies)
    phys = per_time(ds, "physics")
    truth = finite_mean(ds["truth_physics"].transpose("trajectory", "time").astype(float), 0)
    t = ds["time"].values
    curves = {
        (s, r): finite_mean(phys[s, r], axis=0) for s, r in zip(*np.nonzero(present), strict=True)
    }
    on_scale = [truth] + [c for (s, r), c in curves.items() if not off[s, r]]
    low, top = _padded_range(np.concatenate(on_scale))
    fig = figure(13.0, 0.9 + 2.9 * grid(len(regimes))[0])
    axes = panel_axes(fig, len(regimes))
    label = system_labels(str(ds.attrs.get("pde", "")))["physics"]
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        notes = []
        for s, name in enumerate(strategies):
            if (s, r) in curves:
                ax.plot(t, curves[(s, r)], color=colors[name], lw=1.3)
                if off[s, r]:
                    note = _mark_offscale(ax, t, curves[(s, r)], top, colors[name])
                    notes.append((f"{name}: {note}", colors[name]))
        panel_notes(ax, notes + failure_notes(ds, regime))
        ax.plot(t, truth, color="black", lw=1.3, ls="--")
        ax.set_ylim(low, top)
        ax.set_title(regime)
        ax.grid(alpha=0.3)
    label_outer(axes, len(regimes), label, "frame after context")
    extra = [Line2D([], [], color="black", lw=1.3, ls="--", label="truth")]
    strategy_legend(fig, shown_strategies(ds), extra + ([offscale_handle()] if off.any() else []))
    fig.suptitle(f"{label[:1].upper()}{label[1:]}, averaged over the members ({title(ds)})")
    return fig


def plot_physics_time(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Physics diagnostic over time, averaged over the members, vs the truth's, per regime.

    Lines: mean over trajectories of ``physics`` (the diagnostic of each member, averaged
    over the members) per strategy; dashed black: mean of ``truth_physics``.  The y axis
    spans the truth and the cells that stay on scale; off-scale cells are clipped, marked
    and named in their panel.

    Returns:
        ``out_dir/physics_time.png``.
    """
    return save(draw_physics_time(ds), out_dir, "physics_time")


def draw_accuracy_cost(ds: xr.Dataset, confidence: float = 0.95) -> Figure:
    """The figure of :func:`plot_accuracy_cost`."""
    table = summary(ds, confidence=confidence)
    table = table[~table["failed"] & (table["ms_per_frame"] > 0)]
    strategies, regimes = names(ds, "strategy"), names(ds, "regime")
    off = offscale_cells(ds)
    is_off = [
        bool(off[strategies.index(s), regimes.index(r)])
        for s, r in zip(table["strategy"], table["regime"], strict=True)
    ]
    table = table.assign(offscale=is_off)
    colors = strategy_colors(strategies)
    top = axis_top(table.loc[~table["offscale"], "rmse"], pad=1.25)
    fig = figure(13.0, 0.9 + 2.9 * grid(len(regimes))[0])
    axes = panel_axes(fig, len(regimes))
    for ax, regime in zip(axes, regimes, strict=True):
        notes = []
        for row in table[table["regime"] == regime].itertuples(index=False):
            color = colors[row.strategy]
            if row.offscale:  # a caret on the top edge; the value is written in the panel
                ax.plot(row.ms_per_frame, top, marker=6, markersize=9, color=color, clip_on=False)
                notes.append((f"{row.strategy}: off-scale (RMSE {row.rmse:.3g})", color))
                continue
            hw = row.rmse_hw if math.isfinite(row.rmse_hw) else 0.0
            ax.errorbar(
                row.ms_per_frame,
                row.rmse,
                yerr=[[min(hw, row.rmse)], [hw]],
                color=color,
                marker="o",
                markersize=7,
                capsize=3,
                linestyle="none",
            )
        panel_notes(ax, notes + failure_notes(ds, regime))
        ax.set_ylim(0, top)
        ax.set_title(regime)
        ax.grid(alpha=0.3, which="both")
    if len(table):
        log_axis(axes[0], float(table["ms_per_frame"].min()), float(table["ms_per_frame"].max()))
    label_outer(axes, len(regimes), "time-averaged RMSE", "wall ms per frame (log)")
    strategy_legend(fig, shown_strategies(ds), [offscale_handle()] if any(is_off) else [])
    fig.suptitle(f"Accuracy vs cost ({title(ds)}; bars: {100 * confidence:g}% CI, clipped at 0)")
    return fig


def plot_accuracy_cost(ds: xr.Dataset, out_dir: str | Path, confidence: float = 0.95) -> Path:
    """Time-averaged RMSE vs wall-clock ms per frame (log x): one panel per regime.

    One marker per strategy (in its colour, see the legend), with the confidence interval of
    the RMSE over trajectories as error bar (its lower end clipped at 0: an RMSE is never
    negative); panels share both axes.  The y axis ends above the cells that stay on scale;
    off-scale cells are drawn as a caret at the top edge, their RMSE written in the panel.
    The cost is the wall time per frame of all trajectories and members of the cell at once.

    Returns:
        ``out_dir/accuracy_cost.png``.
    """
    return save(draw_accuracy_cost(ds, confidence), out_dir, "accuracy_cost")
