"""Field figures of trajectory 0: Hovmöller diagrams (1-D) and snapshots (2-D).

``draw_*`` return the :class:`~matplotlib.figure.Figure`; ``plot_*`` save it as PNG and
return the path (see :mod:`ardm_infer.bench.figures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .plotting import (
    default_regime,
    field_present,
    figure,
    flags,
    names,
    offscale_cells,
    robust_absmax,
    safe_name,
    save,
    system_labels,
    title,
)
from .stats import cell_failures


def _image(ax: Axes, t: np.ndarray, x: np.ndarray, data: np.ndarray, norm: Normalize):
    """``data`` ``(len(x), len(t))`` as an image: antialiased ``imshow`` on a regular time
    grid (no aliasing when a panel has fewer pixels than points), else ``pcolormesh``."""
    step = np.diff(t)
    if t.size > 1 and np.all(step == step[0]):
        dt, dx = float(step[0]), float(x[1] - x[0]) if x.size > 1 else 1.0
        extent = (t[0] - dt / 2, t[-1] + dt / 2, x[0] - dx / 2, x[-1] + dx / 2)
        return ax.imshow(
            data,
            origin="lower",
            aspect="auto",
            extent=extent,
            cmap="RdBu_r",
            norm=norm,
            interpolation="antialiased",
        )
    return ax.pcolormesh(t, x, data, cmap="RdBu_r", norm=norm, shading="nearest", rasterized=True)


def _failed_note(ds: xr.Dataset, regime: str) -> str:
    failed, _ = cell_failures(ds)
    r = names(ds, "regime").index(regime)
    bad = [s for i, s in enumerate(names(ds, "strategy")) if failed[i, r]]
    return f"; failed: {', '.join(bad)}" if bad else ""


def _observed_panel(ax: Axes, t, x, truth, obs, norm: Normalize, size: float, regime: str):
    """The truth at the observed points ``obs = (time indices, x indices)``."""
    ax.set_facecolor("#f0f0f0")
    ax.scatter(
        t[obs[0]],
        x[obs[1]],
        c=truth[obs[0], obs[1]],
        cmap="RdBu_r",
        norm=norm,
        s=2.5 * size,
        marker="s",
        linewidths=0,
        rasterized=True,
    )
    ax.set_title(f"truth at observed points ({regime})", fontsize=9, loc="left")


def draw_hovmoller(ds: xr.Dataset, regime: str | None = None, channel: int = 0) -> Figure:
    """The figure of :func:`plot_hovmoller`."""
    regime = regime or default_regime(ds)
    strategies = [s for s in names(ds, "strategy") if field_present(ds, s, regime)]
    off = offscale_cells(ds)[:, names(ds, "regime").index(regime)]
    off_names = {s for s, o in zip(names(ds, "strategy"), off, strict=True) if o}
    t, x = ds["field_time"].values, ds["x"].values
    truth = ds["truth_field"].isel(channel=channel).transpose("field_time", "x").values
    means = {
        s: ds["mean_field"]
        .sel(strategy=s, regime=regime)
        .isel(channel=channel)
        .transpose("field_time", "x")
        .astype(float)
        .values
        for s in strategies
    }
    errors = {s: m - truth for s, m in means.items()}
    mask = None
    if "obs_mask" in ds:
        sel = ds["obs_mask"].sel(regime=regime).isel(channel=channel)
        mask = flags(sel.transpose("field_time", "x").values)
    on_scale = [e for s, e in errors.items() if s not in off_names]
    field_norm = Normalize(*(np.array([-1, 1]) * robust_absmax(truth, 100.0)))
    emax = robust_absmax(np.stack(on_scale)) if on_scale else 1.0
    err_norm = Normalize(-emax, emax)
    label = system_labels(str(ds.attrs.get("pde", "")))["field"]

    rows = 1 + len(strategies)
    fig = figure(11.0, 1.6 + 1.5 * rows)
    axes = fig.subplots(rows, 2, sharex=True, sharey=True, squeeze=False)
    obs = np.nonzero(mask) if mask is not None else (np.array([], int),) * 2
    dot_size = float(np.clip(2000.0 / max(obs[0].size, 1), 0.3, 4.0))

    def draw(ax: Axes, data: np.ndarray, norm: Normalize, text: str, dots: bool):
        im = _image(ax, t, x, data.T, norm)
        if dots and obs[0].size:
            ax.scatter(
                t[obs[0]],
                x[obs[1]],
                s=dot_size,
                c="black",
                alpha=0.45,
                linewidths=0,
                rasterized=True,
            )
        ax.set_title(text, fontsize=9, loc="left")
        return im

    im_field = draw(axes[0, 0], truth, field_norm, "truth", dots=False)
    if mask is not None:
        _observed_panel(axes[0, 1], t, x, truth, obs, field_norm, dot_size, regime)
    else:
        axes[0, 1].set_axis_off()
    im_err = None
    for i, s in enumerate(strategies, start=1):
        note = " (off-scale: colours saturate)" if s in off_names else ""
        draw(axes[i, 0], means[s], field_norm, f"{s}: ensemble mean{note}", dots=False)
        im_err = draw(axes[i, 1], errors[s], err_norm, f"{s}: error (mean − truth){note}", True)
    for ax in axes[:, 0]:
        ax.set_ylabel("x (grid point)")
    for ax in axes[-1, :]:
        ax.set_xlabel("frame after context")
    bar = {"location": "bottom", "shrink": 0.8, "aspect": 40}
    fig.colorbar(im_field, ax=axes[:, 0], label=label, **bar)
    if im_err is not None:
        fig.colorbar(
            im_err, ax=axes[:, 1], label=f"error in {label} (dots: observed)", extend="both", **bar
        )
    fig.suptitle(
        f"Hovmöller, regime {regime}, trajectory 0 ({title(ds)}){_failed_note(ds, regime)}"
    )
    return fig


def plot_hovmoller(
    ds: xr.Dataset, out_dir: str | Path, regime: str | None = None, channel: int = 0
) -> Path:
    """Hovmöller diagrams of a 1-D PDE (KS) for one regime, trajectory 0.

    Rows: truth (with the truth at observed points beside it), then per strategy its
    ensemble mean and its error ``mean − truth``.  Grid position ``x`` vertical, frame
    (``field_time``) horizontal.  Fields share one symmetric colour scale (from the truth),
    errors another (99.5th percentile of the errors of the strategies that stay on scale;
    off-scale ones, see :func:`~ardm_infer.bench.plotting.offscale_cells`, saturate and say
    so in their titles).

    Args:
        ds: result dataset with ``truth_field`` ``(field_time, channel, x)``,
            ``mean_field`` ``(strategy, regime, field_time, channel, x)`` and optionally
            ``obs_mask`` ``(regime, field_time, channel, x)``.
        out_dir: folder of the PNG.
        regime: regime to show; default :func:`~ardm_infer.bench.plotting.default_regime`.
        channel: channel index (position along ``channel``).

    Returns:
        ``out_dir/hovmoller_<regime>.png``.
    """
    regime = regime or default_regime(ds)
    return save(draw_hovmoller(ds, regime, channel), out_dir, f"hovmoller_{safe_name(regime)}")


def draw_vorticity_snapshots(
    ds: xr.Dataset,
    regime: str | None = None,
    times: Sequence[int] | None = None,
    channel: int = 0,
) -> Figure:
    """The figure of :func:`plot_vorticity_snapshots`."""
    regime = regime or default_regime(ds)
    strategies = [s for s in names(ds, "strategy") if field_present(ds, s, regime)]
    ft = ds["field_time"].values
    if times is None:
        times = [int(ft[i]) for i in sorted({0, len(ft) // 2, len(ft) - 1})]
    truth = ds["truth_field"].isel(channel=channel).transpose("field_time", "x", "y")
    vmax = robust_absmax(truth.sel(field_time=list(times)).values, 100.0)
    norm = Normalize(-vmax, vmax)
    label = system_labels(str(ds.attrs.get("pde", "")))["field"]

    cols = 1 + len(strategies)
    fig = figure(0.8 + 2.0 * cols, 0.6 + 2.15 * len(times))
    axes = fig.subplots(len(times), cols, squeeze=False, sharex=True, sharey=True)
    im = None
    for i, tv in enumerate(times):
        panels = [("truth", truth.sel(field_time=tv).values)]
        for s in strategies:
            cell = ds["mean_field"].sel(strategy=s, regime=regime, field_time=tv)
            panels.append((s, cell.isel(channel=channel).transpose("x", "y").astype(float).values))
        for j, (name, field) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(
                field.T, origin="lower", cmap="RdBu_r", norm=norm, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"frame {tv}")
        if "obs_mask" in ds:
            m = ds["obs_mask"].sel(regime=regime, field_time=tv).isel(channel=channel)
            ox, oy = np.nonzero(flags(m.transpose("x", "y").values))
            axes[i, 0].scatter(ox, oy, s=1.5, c="black", alpha=0.4, linewidths=0)
    if im is not None:
        fig.colorbar(im, ax=axes, label=label, shrink=0.8, aspect=30)
    fig.suptitle(f"{label}, regime {regime}, trajectory 0 ({title(ds)}){_failed_note(ds, regime)}")
    return fig


def plot_vorticity_snapshots(
    ds: xr.Dataset,
    out_dir: str | Path,
    regime: str | None = None,
    times: Sequence[int] | None = None,
    channel: int = 0,
) -> Path:
    """Snapshots of a 2-D field (Kolmogorov vorticity) for one regime, trajectory 0.

    Columns: truth, then each strategy's ensemble mean; rows: up to three frames
    (``field_time`` values; default first, middle and last).  One shared symmetric RdBu
    colour scale (from the truth).  Observed points are dotted on the truth.

    Args:
        ds: result dataset with ``truth_field`` ``(field_time, channel, x, y)``,
            ``mean_field`` ``(strategy, regime, field_time, channel, x, y)`` and optionally
            ``obs_mask`` ``(regime, field_time, channel, x, y)``.
        out_dir: folder of the PNG.
        regime: regime to show; default :func:`~ardm_infer.bench.plotting.default_regime`.
        times: ``field_time`` values to show.
        channel: channel index.

    Returns:
        ``out_dir/vorticity_<regime>.png``.
    """
    regime = regime or default_regime(ds)
    fig = draw_vorticity_snapshots(ds, regime, times, channel)
    return save(fig, out_dir, f"vorticity_{safe_name(regime)}")
