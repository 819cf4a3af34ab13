"""Benchmark figures (PNG) from the result :class:`xarray.Dataset` of the engine.

Every function draws one figure with matplotlib's object-oriented API (no pyplot state,
no GUI backend: safe in scripts, tests and on headless machines), saves it as PNG at
:data:`DPI` and returns the path.  :func:`make_figures` draws all that apply to the
dataset's PDE and variables.

Conventions: one colour per strategy, the same in every figure (:func:`strategy_colors`);
panels per regime in a grid of at most three columns; a (strategy, regime) cell whose
``rmse`` is NaN everywhere was not run and is left out; means over trajectories use the
finite values only; time is the frame index after the context (``time`` coordinate).
Fields (``truth_field``, ``mean_field``, ``obs_mask``) are those of trajectory 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ardm_infer.bench.report import _finite_mean, critical_value

__all__ = [
    "DPI",
    "default_regime",
    "figure_caption",
    "make_figures",
    "plot_accuracy_cost",
    "plot_hovmoller",
    "plot_metric_time",
    "plot_physics_time",
    "plot_pit_ecdf",
    "plot_rank_histograms",
    "plot_spread_skill",
    "plot_vorticity_snapshots",
    "strategy_colors",
]

DPI = 120
"""Resolution of every PNG."""

_KNOWN_COLORS = {
    "forecast": "#7f7f7f",
    "controller": "#1f77b4",
    "dps": "#ff7f0e",
    "smc": "#2ca02c",
    "enkf": "#d62728",
    "vc": "#9467bd",
}
_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939")

_METRIC_LABELS = {
    "rmse": "RMSE of ensemble mean",
    "crps": "CRPS (spatial mean)",
    "crps_fair": "fair CRPS (spatial mean)",
    "spread": "spread",
    "corr": "correlation with truth",
}
_FIELD_LABELS = {"ks": "u", "kolmogorov": "vorticity ω"}
_PHYSICS_LABELS = {"ks": "total variation of u", "kolmogorov": "dissipation"}

_CAPTIONS = {
    "hovmoller": (
        "Hovmöller diagrams. Trajectory 0: truth, each strategy's ensemble mean (left) and "
        "its error mean − truth (right); grid position vertical, frame after the context "
        "horizontal. Fields and errors each share one symmetric colour scale; dots mark "
        "observed points."
    ),
    "vorticity": (
        "Vorticity snapshots. Trajectory 0: truth and each strategy's ensemble mean at a few "
        "frames, one shared colour scale; dots on the truth mark observed points."
    ),
    "rmse_time": (
        "RMSE over time. Mean over trajectories with its confidence band, one panel per "
        "regime; ticks on the time axis mark observed frames."
    ),
    "crps_time": (
        "CRPS over time. Mean over trajectories with its confidence band, one panel per "
        "regime; ticks on the time axis mark observed frames."
    ),
    "spread_skill": (
        "Spread vs skill. Per frame, corrected spread sqrt((N+1)/N)·RMS spread against "
        "RMS error over trajectories; points on the dashed 1:1 line are calibrated, below "
        "it over-confident."
    ),
    "rank_histograms": (
        "Rank histograms. Frequency of the truth's rank among the members, normalised so "
        "that a calibrated ensemble gives 1 (dashed); U-shape: over-confident, dome: "
        "under-confident, slope: biased."
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
        "trajectories) against wall-clock milliseconds per frame, log scale."
    ),
    "physics_time": (
        "Physics diagnostic over time. Mean over trajectories of the ensemble mean's "
        "diagnostic, truth dashed black."
    ),
}


# ----------------------------------------------------------------------------- helpers


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    """A fixed colour per strategy label: known names keep their colour across reports."""
    colors: dict[str, str] = {}
    extra = iter(_EXTRA_COLORS * (1 + len(strategies) // len(_EXTRA_COLORS)))
    for name in strategies:  # exact names first
        if name in _KNOWN_COLORS:
            colors[name] = _KNOWN_COLORS[name]
    for name in strategies:  # labels such as "dps-0.5" take their base's colour if free
        if name in colors:
            continue
        base = next((k for k in _KNOWN_COLORS if name.startswith(k)), None)
        if base is not None and _KNOWN_COLORS[base] not in colors.values():
            colors[name] = _KNOWN_COLORS[base]
        else:
            colors[name] = next(extra)
    return {name: colors[name] for name in strategies}


def figure_caption(path: str | Path) -> str:
    """Caption of a figure written by this module, from its file name."""
    stem = Path(path).stem
    for key in sorted(_CAPTIONS, key=len, reverse=True):
        if stem.startswith(key):
            return _CAPTIONS[key]
    return stem.replace("_", " ")


def _names(ds: xr.Dataset, dim: str) -> list[str]:
    return [str(v) for v in ds[dim].values]


def _present(ds: xr.Dataset) -> np.ndarray:
    """``(strategy, regime)`` bool: cells with any finite RMSE (cells that were run)."""
    rmse = ds["rmse"].transpose("strategy", "regime", "trajectory", "time").astype(float)
    return np.isfinite(rmse.values).any(axis=(2, 3))


def _field_present(ds: xr.Dataset, strategy: str, regime: str) -> bool:
    field = ds["mean_field"].sel(strategy=strategy, regime=regime).astype(float).values
    return bool(np.isfinite(field).any())


def default_regime(ds: xr.Dataset) -> str:
    """The sparsest regime: lowest observed fraction in ``obs_mask``; else the first."""
    regimes = _names(ds, "regime")
    if "obs_mask" not in ds or len(regimes) == 1:
        return regimes[0]
    mask = ds["obs_mask"].fillna(0).astype(bool).astype(float)
    frac = mask.mean(dim=[d for d in mask.dims if d != "regime"]).values
    return regimes[int(np.argmin(frac))]


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def _panel_axes(fig: Figure, n: int, sharex: bool = True, sharey: bool = True) -> list[Axes]:
    """``n`` panels in a grid of at most three columns; surplus axes removed."""
    rows, cols = _grid(n)
    axes = fig.subplots(rows, cols, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def _save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    return path


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _robust_absmax(values: np.ndarray, q: float = 99.5) -> float:
    """Symmetric colour limit: the ``q`` percentile of ``|values|`` (finite), at least tiny."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    return max(float(np.percentile(v, q)), 1e-12)


def _mean_band(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 (trajectories) of finite values and its confidence half-width.

    ``values``: ``(trajectory, time)``.  Returns two ``(time,)`` arrays; the half-width is
    NaN where fewer than two trajectories are finite.
    """
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    n = finite.sum(axis=0)
    mean = _finite_mean(v, axis=0)
    dev = np.where(finite, v - mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = np.sqrt((dev**2).sum(axis=0) / (n - 1))
    table = {int(k): critical_value(int(k), confidence) for k in np.unique(n)}
    crit = np.array([table[int(k)] for k in n])
    with np.errstate(invalid="ignore", divide="ignore"):
        hw = np.where(n >= 2, crit * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, hw


def _flags(values: np.ndarray) -> np.ndarray:
    """Boolean view of a mask that a merge or netCDF round trip may have made float (NaN:
    False)."""
    v = np.asarray(values)
    if v.dtype == bool:
        return v
    return np.nan_to_num(v.astype(float), nan=0.0) > 0


def _observed_times(ds: xr.Dataset, regime: str) -> np.ndarray:
    """Frames with observations on ``regime`` (from ``observed`` or ``obs_mask``)."""
    times = ds["time"].values
    if "observed" in ds:
        obs = ds["observed"]
        extra = [d for d in obs.dims if d not in ("regime", "time")]
        if extra:  # tolerate a broadcast copy over strategy/trajectory
            obs = obs.fillna(0).astype(bool).any(dim=extra)
        return times[_flags(obs.sel(regime=regime).transpose("time").values)]
    if "obs_mask" in ds:
        mask = ds["obs_mask"].sel(regime=regime).fillna(0).astype(bool)
        flags = mask.any(dim=[d for d in mask.dims if d != "field_time"]).values
        return ds["field_time"].values[flags]
    return times[:0]


def _mark_observed(ax: Axes, times: np.ndarray) -> None:
    """Short ticks at the bottom of the axis at the observed frames."""
    if times.size:
        ax.plot(
            times,
            np.zeros(times.size),
            linestyle="none",
            marker="|",
            markersize=6,
            color="black",
            alpha=0.6,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )


def _strategy_legend(fig: Figure, strategies: Sequence[str], extra: Sequence = ()) -> None:
    colors = strategy_colors(strategies)
    handles = [Line2D([], [], color=colors[s], lw=2, label=s) for s in strategies]
    fig.legend(handles=[*handles, *extra], loc="outside right upper", frameon=False)


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _title(ds: xr.Dataset) -> str:
    pde = {"ks": "KS", "kolmogorov": "Kolmogorov"}.get(str(ds.attrs.get("pde", "")), "")
    members = ds.attrs.get("members")
    parts = [
        pde,
        f"{members} members" if members is not None else "",
        f"{ds.sizes.get('trajectory', 0)} trajectories",
    ]
    return ", ".join(p for p in parts if p)


# ----------------------------------------------------------------------------- fields


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


def plot_hovmoller(
    ds: xr.Dataset,
    out_dir: str | Path,
    regime: str | None = None,
    channel: int = 0,
) -> Path:
    """Hovmöller diagrams of a 1-D PDE (KS) for one regime, trajectory 0.

    Rows: truth (with the truth at observed points beside it), then per strategy its
    ensemble mean and its error ``mean − truth``.  Grid position ``x`` vertical, frame
    (``field_time``) horizontal.  Fields share one symmetric colour scale (from the truth),
    errors another (99.5th percentile of all errors shown).

    Args:
        ds: result dataset with ``truth_field`` ``(field_time, channel, x)``,
            ``mean_field`` ``(strategy, regime, field_time, channel, x)`` and optionally
            ``obs_mask`` ``(regime, field_time, channel, x)``.
        out_dir: folder of the PNG.
        regime: regime to show; default :func:`default_regime`.
        channel: channel index (position along ``channel``).

    Returns:
        ``out_dir/hovmoller_<regime>.png``.
    """
    regime = regime or default_regime(ds)
    strategies = [s for s in _names(ds, "strategy") if _field_present(ds, s, regime)]
    t = ds["field_time"].values
    x = ds["x"].values
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
        mask = (
            ds["obs_mask"].sel(regime=regime).isel(channel=channel).transpose("field_time", "x")
        ).values
        mask = _flags(mask)

    vmax = _robust_absmax(truth, 100.0)
    emax = _robust_absmax(np.stack(list(errors.values()))) if errors else 1.0
    field_norm = Normalize(-vmax, vmax)
    err_norm = Normalize(-emax, emax)
    label = _FIELD_LABELS.get(str(ds.attrs.get("pde", "")), "field")

    rows = 1 + len(strategies)
    fig = _figure(11.0, 1.6 + 1.5 * rows)
    axes = fig.subplots(rows, 2, sharex=True, sharey=True, squeeze=False)
    obs_t, obs_x = np.nonzero(mask) if mask is not None else (np.array([], int),) * 2
    dot_size = float(np.clip(2000.0 / max(obs_t.size, 1), 0.3, 4.0))

    def draw(ax: Axes, data: np.ndarray, norm: Normalize, title: str, dots: bool):
        im = _image(ax, t, x, data.T, norm)
        if dots and obs_t.size:
            ax.scatter(
                t[obs_t], x[obs_x], s=dot_size, c="black", alpha=0.45, linewidths=0, rasterized=True
            )
        ax.set_title(title, fontsize=9, loc="left")
        return im

    im_field = draw(axes[0, 0], truth, field_norm, "truth", dots=False)
    if mask is not None:
        ax = axes[0, 1]
        ax.set_facecolor("#f0f0f0")
        ax.scatter(
            t[obs_t],
            x[obs_x],
            c=truth[obs_t, obs_x],
            cmap="RdBu_r",
            norm=field_norm,
            s=2.5 * dot_size,
            marker="s",
            linewidths=0,
            rasterized=True,
        )
        ax.set_title(f"truth at observed points ({regime})", fontsize=9, loc="left")
    else:
        axes[0, 1].set_axis_off()
    im_err = None
    for i, s in enumerate(strategies, start=1):
        draw(axes[i, 0], means[s], field_norm, f"{s}: ensemble mean", dots=False)
        im_err = draw(axes[i, 1], errors[s], err_norm, f"{s}: error (mean − truth)", dots=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("x (grid point)")
    for ax in axes[-1, :]:
        ax.set_xlabel("frame after context")
    fig.colorbar(im_field, ax=axes[:, 0], label=label, location="bottom", shrink=0.8, aspect=40)
    if im_err is not None:
        fig.colorbar(
            im_err,
            ax=axes[:, 1],
            label=f"error in {label} (dots: observed)",
            extend="both",
            location="bottom",
            shrink=0.8,
            aspect=40,
        )
    fig.suptitle(f"Hovmöller, regime {regime}, trajectory 0 ({_title(ds)})")
    return _save(fig, out_dir, f"hovmoller_{_safe_name(regime)}")


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
        regime: regime to show; default :func:`default_regime`.
        times: ``field_time`` values to show.
        channel: channel index.

    Returns:
        ``out_dir/vorticity_<regime>.png``.
    """
    regime = regime or default_regime(ds)
    strategies = [s for s in _names(ds, "strategy") if _field_present(ds, s, regime)]
    ft = ds["field_time"].values
    if times is None:
        idx = sorted({0, len(ft) // 2, len(ft) - 1})
        times = [int(ft[i]) for i in idx]
    truth = ds["truth_field"].isel(channel=channel).transpose("field_time", "x", "y")
    vmax = _robust_absmax(truth.sel(field_time=list(times)).values, 100.0)
    norm = Normalize(-vmax, vmax)
    label = _FIELD_LABELS.get(str(ds.attrs.get("pde", "")), "field")

    cols = 1 + len(strategies)
    fig = _figure(0.8 + 2.0 * cols, 0.6 + 2.15 * len(times))
    axes = fig.subplots(len(times), cols, squeeze=False, sharex=True, sharey=True)
    im = None
    for i, tv in enumerate(times):
        panels = [("truth", truth.sel(field_time=tv).values)]
        for s in strategies:
            field = (
                ds["mean_field"]
                .sel(strategy=s, regime=regime, field_time=tv)
                .isel(channel=channel)
                .transpose("x", "y")
                .astype(float)
                .values
            )
            panels.append((s, field))
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
            m = (
                ds["obs_mask"]
                .sel(regime=regime, field_time=tv)
                .isel(channel=channel)
                .transpose("x", "y")
                .values
            )
            m = _flags(m)
            ox, oy = np.nonzero(m)
            axes[i, 0].scatter(ox, oy, s=1.5, c="black", alpha=0.4, linewidths=0)
    if im is not None:
        fig.colorbar(im, ax=axes, label=label, shrink=0.8, aspect=30)
    fig.suptitle(f"{label}, regime {regime}, trajectory 0 ({_title(ds)})")
    return _save(fig, out_dir, f"vorticity_{_safe_name(regime)}")


# ----------------------------------------------------------------------------- curves


def plot_metric_time(
    ds: xr.Dataset, out_dir: str | Path, metric: str = "rmse", confidence: float = 0.95
) -> Path:
    """A per-frame metric over time: one panel per regime, a line per strategy.

    Lines are means over trajectories of the finite values, with the ``confidence`` band
    of the mean (Student-t over trajectories); ticks on the time axis mark observed frames.

    Args:
        ds: result dataset with ``metric`` of dims ``(strategy, regime, trajectory, time)``.
        out_dir: folder of the PNG.
        metric: variable name, e.g. ``"rmse"`` or ``"crps"``.
        confidence: level of the bands.

    Returns:
        ``out_dir/<metric>_time.png``.
    """
    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    present = _present(ds)
    colors = strategy_colors(strategies)
    da = ds[metric].transpose("strategy", "regime", "trajectory", "time").astype(float).values
    t = ds["time"].values
    rows, _ = _grid(len(regimes))
    fig = _figure(13.0, 0.9 + 2.9 * rows)
    axes = _panel_axes(fig, len(regimes))
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        for s, name in enumerate(strategies):
            if not present[s, r]:
                continue
            mean, hw = _mean_band(da[s, r], confidence)
            ax.plot(t, mean, color=colors[name], lw=1.4)
            ok = np.isfinite(hw)
            ax.fill_between(
                t, mean - hw, mean + hw, where=ok, color=colors[name], alpha=0.18, linewidth=0
            )
        _mark_observed(ax, _observed_times(ds, regime))
        ax.set_title(regime)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    cols = _grid(len(regimes))[1]
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel(_METRIC_LABELS.get(metric, metric))
        if i >= len(regimes) - cols:
            ax.set_xlabel("frame after context")
            ax.xaxis.set_tick_params(labelbottom=True)
    obs = Line2D(
        [], [], color="black", marker="|", linestyle="none", markersize=8, label="observed frame"
    )
    band = Line2D([], [], color="grey", lw=6, alpha=0.3, label=f"{100 * confidence:g}% CI of mean")
    _strategy_legend(
        fig, [s for i, s in enumerate(strategies) if present[i].any()], extra=[band, obs]
    )
    fig.suptitle(f"{_METRIC_LABELS.get(metric, metric)} over time ({_title(ds)})")
    return _save(fig, out_dir, f"{metric}_time")


def plot_spread_skill(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Spread vs skill per frame: one panel per regime, one point series per strategy.

    For every frame, ``x`` = RMS over trajectories of the RMSE, ``y`` =
    ``sqrt((N+1)/N)`` × RMS over trajectories of the spread (``N`` = members), so that a
    calibrated ensemble lies on the 1:1 line.  Points of a strategy are joined in time
    order; the last frame is marked larger.

    Returns:
        ``out_dir/spread_skill.png``.
    """
    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    present = _present(ds)
    colors = strategy_colors(strategies)
    n = int(ds.attrs.get("members", 0))
    factor = math.sqrt((n + 1) / n) if n > 0 else 1.0
    rmse = ds["rmse"].transpose("strategy", "regime", "trajectory", "time").astype(float).values
    spread = ds["spread"].transpose("strategy", "regime", "trajectory", "time").astype(float).values
    rows, cols = _grid(len(regimes))
    fig = _figure(13.0, 0.9 + 3.6 * rows)
    axes = _panel_axes(fig, len(regimes), sharex=False, sharey=False)
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        top = 0.0
        for s, name in enumerate(strategies):
            if not present[s, r]:
                continue
            err = np.sqrt(_finite_mean(rmse[s, r] ** 2, axis=0))
            spr = factor * np.sqrt(_finite_mean(spread[s, r] ** 2, axis=0))
            ok = np.isfinite(err) & np.isfinite(spr)
            if not ok.any():
                continue
            ax.plot(
                err[ok], spr[ok], color=colors[name], lw=0.8, alpha=0.6, marker="o", markersize=2.5
            )
            last = np.flatnonzero(ok)[-1]
            ax.plot(
                err[last],
                spr[last],
                color=colors[name],
                marker="o",
                markersize=6,
                markeredgecolor="black",
                markeredgewidth=0.6,
            )
            top = max(top, float(np.max(err[ok])), float(np.max(spr[ok])))
        top = top * 1.05 if top > 0 else 1.0
        ax.plot([0, top], [0, top], color="black", lw=1, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(regime)
        ax.grid(alpha=0.3)
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel("corrected spread")
        if i >= len(regimes) - cols:
            ax.set_xlabel("RMSE of ensemble mean")
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
    _strategy_legend(fig, [s for i, s in enumerate(strategies) if present[i].any()], extra)
    fig.suptitle(f"Spread vs skill per frame ({_title(ds)})")
    return _save(fig, out_dir, "spread_skill")


def plot_physics_time(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Physics diagnostic of the ensemble mean over time vs the truth's, per regime.

    Lines: mean over trajectories of ``physics`` per strategy; dashed black: mean of
    ``truth_physics``.

    Returns:
        ``out_dir/physics_time.png``.
    """
    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    present = _present(ds)
    colors = strategy_colors(strategies)
    phys = ds["physics"].transpose("strategy", "regime", "trajectory", "time").astype(float)
    truth = ds["truth_physics"].transpose("trajectory", "time").astype(float).values
    t = ds["time"].values
    truth_mean = _finite_mean(truth, axis=0)
    rows, cols = _grid(len(regimes))
    fig = _figure(13.0, 0.9 + 2.9 * rows)
    axes = _panel_axes(fig, len(regimes))
    label = _PHYSICS_LABELS.get(str(ds.attrs.get("pde", "")), "physics diagnostic")
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        for s, name in enumerate(strategies):
            if present[s, r]:
                ax.plot(t, _finite_mean(phys.values[s, r], axis=0), color=colors[name], lw=1.3)
        ax.plot(t, truth_mean, color="black", lw=1.3, ls="--")
        ax.set_title(regime)
        ax.grid(alpha=0.3)
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel(label)
        if i >= len(regimes) - cols:
            ax.set_xlabel("frame after context")
            ax.xaxis.set_tick_params(labelbottom=True)
    truth_handle = Line2D([], [], color="black", lw=1.3, ls="--", label="truth")
    _strategy_legend(fig, [s for i, s in enumerate(strategies) if present[i].any()], [truth_handle])
    fig.suptitle(f"{label[:1].upper()}{label[1:]} of the ensemble mean ({_title(ds)})")
    return _save(fig, out_dir, "physics_time")


# ----------------------------------------------------------------------------- calibration


def _rank_counts(ds: xr.Dataset) -> np.ndarray:
    """``(strategy, regime, rank)`` float counts (NaN → 0)."""
    counts = ds["rank_hist"].transpose("strategy", "regime", "rank").astype(float).values
    return np.nan_to_num(counts, nan=0.0)


def plot_rank_histograms(ds: xr.Dataset, out_dir: str | Path) -> Path:
    """Grid strategy (rows) × regime (columns) of normalised rank histograms.

    Bar ``r`` is the frequency of rank ``r`` times ``N + 1`` (``N + 1`` = number of ranks),
    so a calibrated ensemble gives bars of height 1 (dashed line).  All panels share the
    y axis; cells not run are blank.

    Returns:
        ``out_dir/rank_histograms.png``.
    """
    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    counts = _rank_counts(ds)
    totals = counts.sum(axis=-1)
    colors = strategy_colors(strategies)
    ranks = ds["rank"].values
    n_bins = len(ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = counts / totals[..., None] * n_bins
    top = float(np.nanmax(np.where(totals[..., None] > 0, freq, np.nan), initial=1.0))
    fig = _figure(1.4 + 2.0 * len(regimes), 0.9 + 1.45 * len(strategies))
    axes = fig.subplots(len(strategies), len(regimes), squeeze=False, sharex=True, sharey=True)
    for s, name in enumerate(strategies):
        for r, regime in enumerate(regimes):
            ax = axes[s, r]
            if totals[s, r] > 0:
                ax.bar(ranks, freq[s, r], width=1.0, color=colors[name], alpha=0.85, linewidth=0)
            else:
                ax.text(
                    0.5,
                    0.5,
                    "not run",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                    fontsize=8,
                )
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_ylim(0, top * 1.05)
            ax.tick_params(labelsize=7)
            if s == 0:
                ax.set_title(regime, fontsize=9)
            if r == 0:
                ax.set_ylabel(f"{name}\nfreq × (N+1)", fontsize=8)
            if s == len(strategies) - 1:
                ax.set_xlabel("rank of truth", fontsize=8)
    fig.suptitle(f"Rank histograms ({_title(ds)})")
    return _save(fig, out_dir, "rank_histograms")


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
    uses all points.

    Returns:
        ``out_dir/pit_ecdf.png``.
    """
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ announces its refactor with a FutureWarning
        import arviz as az

    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    counts = _rank_counts(ds)
    colors = strategy_colors(strategies)
    size = effective_size or int(ds.sizes.get("trajectory", 1) * ds.sizes.get("time", 1))
    size = max(size, 2)
    eval_points = np.linspace(0.0, 1.0, 101)
    rows, cols = _grid(len(regimes))
    fig = _figure(13.0, 0.9 + 2.9 * rows)
    axes = _panel_axes(fig, len(regimes))
    shown = set()
    for r, (ax, regime) in enumerate(zip(axes, regimes, strict=True)):
        band = True
        for s, name in enumerate(strategies):
            if counts[s, r].sum() <= 0:
                continue
            values = _pit_sample(counts[s, r], size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                az.plot_ecdf(
                    values,
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
    for i, ax in enumerate(axes):
        ax.set_xlabel("")
        ax.set_ylabel("")
        if i % cols == 0:
            ax.set_ylabel("ECDF − uniform CDF")
        if i >= len(regimes) - cols:
            ax.set_xlabel("PIT")
            ax.xaxis.set_tick_params(labelbottom=True)
    band_handle = Line2D(
        [],
        [],
        color="grey",
        lw=6,
        alpha=0.3,
        label=f"{100 * confidence:g}% simultaneous band, n = {size}",
    )
    _strategy_legend(fig, [s for s in strategies if s in shown], [band_handle])
    fig.suptitle(f"PIT-ECDF difference ({_title(ds)})")
    return _save(fig, out_dir, "pit_ecdf")


# ----------------------------------------------------------------------------- cost


def plot_accuracy_cost(ds: xr.Dataset, out_dir: str | Path, confidence: float = 0.95) -> Path:
    """Time-averaged RMSE vs wall-clock ms per frame (log x): one panel per regime.

    One marker per strategy (labelled), with the confidence interval of the RMSE over
    trajectories as error bar; panels share both axes.

    Returns:
        ``out_dir/accuracy_cost.png``.
    """
    from ardm_infer.bench.report import summary

    table = summary(ds, confidence=confidence)
    strategies, regimes = _names(ds, "strategy"), _names(ds, "regime")
    colors = strategy_colors(strategies)
    rows, cols = _grid(len(regimes))
    fig = _figure(13.0, 0.9 + 2.9 * rows)
    axes = _panel_axes(fig, len(regimes))
    for ax, regime in zip(axes, regimes, strict=True):
        sub = table[(table["regime"] == regime) & (table["ms_per_frame"] > 0)]
        for row in sub.itertuples(index=False):
            yerr = row.rmse_hw if math.isfinite(row.rmse_hw) else None
            ax.errorbar(
                row.ms_per_frame,
                row.rmse,
                yerr=yerr,
                color=colors[row.strategy],
                marker="o",
                markersize=6,
                capsize=3,
                linestyle="none",
            )
            ax.annotate(
                row.strategy,
                (row.ms_per_frame, row.rmse),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=7,
                color=colors[row.strategy],
            )
        ax.set_xscale("log")
        ax.set_title(regime)
        ax.grid(alpha=0.3, which="both")
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel("time-averaged RMSE")
        if i >= len(regimes) - cols:
            ax.set_xlabel("wall ms per frame (log)")
            ax.xaxis.set_tick_params(labelbottom=True)
    shown = [s for s in strategies if s in set(table["strategy"])]
    _strategy_legend(fig, shown)
    fig.suptitle(f"Accuracy vs cost ({_title(ds)}; bars: {100 * confidence:g}% CI)")
    return _save(fig, out_dir, "accuracy_cost")


# ----------------------------------------------------------------------------- all


def _pit_available() -> bool:
    """Whether scipy and ArviZ import (the PIT-ECDF figure needs both)."""
    try:
        import scipy.stats  # noqa: F401

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import arviz  # noqa: F401
    except ImportError:
        return False
    return True


def make_figures(ds: xr.Dataset, out_dir: str | Path, confidence: float = 0.95) -> list[Path]:
    """Draw every figure that applies to the dataset; return the PNG paths in report order.

    KS (a ``field`` without ``y``): Hovmöller; Kolmogorov (fields with ``y``): vorticity
    snapshots; then RMSE and CRPS over time, spread vs skill, rank histograms and
    PIT-ECDF (if ``rank_hist``; the PIT-ECDF needs scipy and ArviZ), accuracy vs cost (if
    ``ms_per_frame``) and the physics diagnostic (if ``physics`` and ``truth_physics``).
    ``confidence`` is the level of the bands and error bars.
    """
    paths: list[Path] = []
    if "truth_field" in ds and "mean_field" in ds:
        if "y" in ds["truth_field"].dims:
            paths.append(plot_vorticity_snapshots(ds, out_dir))
        else:
            paths.append(plot_hovmoller(ds, out_dir))
    for metric in ("rmse", "crps"):
        if metric in ds:
            paths.append(plot_metric_time(ds, out_dir, metric, confidence))
    if "spread" in ds:
        paths.append(plot_spread_skill(ds, out_dir))
    if "rank_hist" in ds:
        paths.append(plot_rank_histograms(ds, out_dir))
        if _pit_available():
            paths.append(plot_pit_ecdf(ds, out_dir, confidence=confidence))
    if "ms_per_frame" in ds:
        paths.append(plot_accuracy_cost(ds, out_dir, confidence))
    if "physics" in ds and "truth_physics" in ds:
        paths.append(plot_physics_time(ds, out_dir))
    return paths
