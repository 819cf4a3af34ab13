"""Shared pieces of the benchmark figures: layout, legends, scales, marks.

Everything here works on the result :class:`xarray.Dataset` of the engine (see
``ardm_infer.bench.core``) with matplotlib's object-oriented API (no pyplot state).

Scales.  One definition decides which cells are *off-scale* (:func:`offscale_cells`): a
(strategy, regime) cell that blew up, or whose RMSE curve (mean over trajectories) peaks
above :data:`OFFSCALE_FACTOR` times the reference's peak on that regime (the unguided
``forecast`` when it ran and stayed finite, else the lower median of the cells run on the
regime).  Every figure with a data-dependent axis takes its limits from the other cells,
draws the off-scale ones clipped at the edge and says so in the panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

from .palette import strategy_colors
from .stats import PER_TIME, cell_failures, finite_mean, present_cells

DPI = 120
"""Resolution of every PNG."""

OFFSCALE_FACTOR = 3.0
"""A cell whose RMSE curve peaks above this many times the reference's is off-scale."""

MAX_OBSERVED_TICKS = 60
"""Above this many observed frames a panel says the cadence in words instead of ticks."""


# ----------------------------------------------------------------------------- systems


def system_labels(pde: str) -> dict[str, str]:
    """Display names of a system: ``short``, ``title``, ``field`` and ``physics``.

    The one place where figures and report branch on the PDE name (to be replaced by the
    systems registry's labels).
    """
    known = {
        "ks": ("KS", "Kuramoto–Sivashinsky (1-D)", "u", "total variation of u"),
        "kolmogorov": ("Kolmogorov", "Kolmogorov flow (2-D)", "vorticity ω", "dissipation"),
    }
    short, title, field, physics = known.get(
        pde, (pde, pde or "unknown PDE", "field", "physics diagnostic")
    )
    return {"short": short, "title": title, "field": field, "physics": physics}


# ----------------------------------------------------------------------------- dataset access


def names(ds: xr.Dataset, dim: str) -> list[str]:
    """The labels of ``dim`` as strings."""
    return [str(v) for v in ds[dim].values]


def per_time(ds: xr.Dataset, name: str) -> np.ndarray:
    """``ds[name]`` as a float ``(strategy, regime, trajectory, time)`` array."""
    return ds[name].transpose(*PER_TIME).astype(float).values


def field_present(ds: xr.Dataset, strategy: str, regime: str) -> bool:
    """Whether the stored mean field of a cell has any finite value."""
    field = ds["mean_field"].sel(strategy=strategy, regime=regime).astype(float).values
    return bool(np.isfinite(field).any())


def flags(values: np.ndarray) -> np.ndarray:
    """Boolean view of a mask that a merge or netCDF round trip may have made float (NaN:
    False)."""
    v = np.asarray(values)
    if v.dtype == bool:
        return v
    return np.nan_to_num(v.astype(float), nan=0.0) > 0


def default_regime(ds: xr.Dataset) -> str:
    """The sparsest regime: lowest observed fraction in ``obs_mask``; else the first."""
    regimes = names(ds, "regime")
    if "obs_mask" not in ds or len(regimes) == 1:
        return regimes[0]
    mask = ds["obs_mask"].fillna(0).astype(bool).astype(float)
    frac = mask.mean(dim=[d for d in mask.dims if d != "regime"]).values
    return regimes[int(np.argmin(frac))]


def shown_strategies(ds: xr.Dataset) -> list[str]:
    """Strategies that ran (or failed) on at least one regime, in dataset order."""
    failed, _ = cell_failures(ds)
    keep = present_cells(ds).any(axis=1) | failed.any(axis=1)
    return [s for s, k in zip(names(ds, "strategy"), keep, strict=True) if k]


# ----------------------------------------------------------------------------- scales


def offscale_cells(ds: xr.Dataset, reference: str = "forecast") -> np.ndarray:
    """``(strategy, regime)`` bool: cells drawn clipped (see the module docstring).

    Args:
        ds: result dataset with ``rmse`` and optionally ``blow_up``.
        reference: the strategy whose RMSE peak sets the scale of a regime.

    Returns:
        True where the cell ran and blew up, has a non-finite RMSE curve, or peaks above
        :data:`OFFSCALE_FACTOR` times the reference's peak.
    """
    present = present_cells(ds)
    with np.errstate(invalid="ignore"):
        curve = finite_mean(per_time(ds, "rmse"), axis=2)  # (strategy, regime, time)
        peak = np.where(np.isfinite(curve), curve, np.inf).max(axis=-1)
    blown = np.zeros_like(present)
    if "blow_up" in ds:
        blown = flags(ds["blow_up"].transpose(*PER_TIME).values).any(axis=(2, 3))
    strategies = names(ds, "strategy")
    ref = strategies.index(reference) if reference in strategies else None
    out = np.zeros_like(present)
    for r in range(present.shape[1]):
        run = np.flatnonzero(present[:, r])
        if run.size == 0:
            continue
        if ref is not None and present[ref, r] and not blown[ref, r] and np.isfinite(peak[ref, r]):
            scale = float(peak[ref, r])
        else:
            ordered = np.sort(peak[run, r])
            scale = float(ordered[(ordered.size - 1) // 2])  # lower median
        for s in run:
            out[s, r] = bool(blown[s, r]) or not peak[s, r] <= OFFSCALE_FACTOR * scale
    return out


def axis_top(values: Sequence[float], pad: float = 1.08) -> float:
    """An upper axis limit ``pad`` above the largest finite value (1 if there is none)."""
    v = np.asarray(list(values), dtype=float)
    v = v[np.isfinite(v)]
    top = float(v.max()) if v.size else 0.0
    return top * pad if top > 0 else 1.0


def robust_absmax(values: np.ndarray, q: float = 99.5) -> float:
    """Symmetric colour limit: the ``q`` percentile of ``|values|`` (finite), at least tiny."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 1.0
    return max(float(np.percentile(v, q)), 1e-12)


def _nice_log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks 1-2-5 per decade within ``[lo, hi]`` (1-1.5-2-3-5-7 within one decade; at
    least two)."""
    ticks = []
    mantissas = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if hi / lo < 10.0 else (1.0, 2.0, 5.0)
    for exponent in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in mantissas:
            v = m * 10.0**exponent
            if lo <= v <= hi:
                ticks.append(v)
    if len(ticks) < 2:
        ticks = [float(f"{lo:.2g}"), float(f"{hi:.2g}")]
    return ticks


def log_axis(ax: Axes, lo: float, hi: float, axis: str = "x") -> None:
    """A log axis on ``[lo, hi]`` (widened to at least a factor 3) with readable ticks.

    Ranges under three decades get 1-2-5 ticks (finer within one decade) labelled as plain
    numbers; wider ones keep matplotlib's decade ticks.  Minor ticks carry no labels, so
    labels never overlap.
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and lo > 0):
        return
    centre = math.sqrt(lo * hi)
    if hi / lo < 3.0:
        lo, hi = min(lo, centre / math.sqrt(3.0)), max(hi, centre * math.sqrt(3.0))
    lo, hi = lo / 1.25, hi * 1.25
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    if hi / lo < 1000.0:
        target.set_major_locator(FixedLocator(_nice_log_ticks(lo, hi)))
        target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


# ----------------------------------------------------------------------------- layout


def figure(width: float, height: float) -> Figure:
    """A constrained-layout figure (not attached to pyplot)."""
    return Figure(figsize=(width, height), layout="constrained")


def grid(n: int, ncols: int = 3) -> tuple[int, int]:
    """Rows and columns of a grid of ``n`` panels with at most ``ncols`` columns."""
    cols = max(1, min(ncols, n))
    return math.ceil(n / cols), cols


def panel_axes(fig: Figure, n: int, sharex: bool = True, sharey: bool = True) -> list[Axes]:
    """``n`` panels in a grid of at most three columns; surplus axes removed."""
    rows, cols = grid(n)
    axes = fig.subplots(rows, cols, sharex=sharex, sharey=sharey, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.remove()
    return list(axes[:n])


def label_outer(axes: Sequence[Axes], n: int, ylabel: str, xlabel: str) -> None:
    """Y labels on the first column, x labels (and tick labels) on the bottom panels."""
    cols = grid(n)[1]
    for i, ax in enumerate(axes):
        if i % cols == 0:
            ax.set_ylabel(ylabel)
        if i >= n - cols:
            ax.set_xlabel(xlabel)
            ax.xaxis.set_tick_params(labelbottom=True)


def save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """Write ``out_dir/name.png`` at :data:`DPI`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    return path


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits, ``-`` and ``_`` replaced."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def plural(count: int, word: str) -> str:
    """``"1 trajectory"``, ``"2 trajectories"``, ``"1 member"``, ``"4 members"``."""
    if count == 1:
        return f"1 {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}s"


def title(ds: xr.Dataset) -> str:
    """``"KS, 4 members, 1 trajectory"`` for the figure titles."""
    pde = str(ds.attrs.get("pde", ""))
    members = ds.attrs.get("members")
    parts = [
        system_labels(pde)["short"] if pde else "",
        plural(int(members), "member") if members is not None else "",
        plural(int(ds.sizes.get("trajectory", 0)), "trajectory"),
    ]
    return ", ".join(p for p in parts if p)


def strategy_legend(fig: Figure, strategies: Sequence[str], extra: Sequence = ()) -> None:
    """Figure legend at the right: one line per strategy in its colour, then ``extra``."""
    colors = strategy_colors(strategies)
    handles = [Line2D([], [], color=colors[s], lw=2, label=s) for s in strategies]
    fig.legend(handles=[*handles, *extra], loc="outside right upper", frameon=False)


OFFSCALE_HANDLE_LABEL = "off-scale (clipped at the edge)"


def offscale_handle() -> Line2D:
    """Legend entry of the clipping mark."""
    return Line2D(
        [], [], color="black", marker=6, linestyle="none", markersize=7, label=OFFSCALE_HANDLE_LABEL
    )


def panel_notes(ax: Axes, notes: Sequence[tuple[str, str]]) -> None:
    """Lines of text ``(text, colour)`` stacked in the upper left corner of a panel."""
    for i, (text, color) in enumerate(notes):
        ax.text(
            0.02,
            0.97 - 0.085 * i,
            text,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color=color,
            bbox={"facecolor": "white", "alpha": 0.75, "linewidth": 0, "pad": 1.0},
            zorder=5,
        )


def failure_notes(ds: xr.Dataset, regime: str) -> list[tuple[str, str]]:
    """Panel notes ``"<strategy>: failed"`` for the failed cells of a regime."""
    failed, _ = cell_failures(ds)
    r = names(ds, "regime").index(regime)
    strategies = names(ds, "strategy")
    colors = strategy_colors(strategies)
    return [(f"{s}: failed", colors[s]) for i, s in enumerate(strategies) if failed[i, r]]


# ----------------------------------------------------------------------------- observed frames


def observed_times(ds: xr.Dataset, regime: str) -> np.ndarray:
    """Frames with observations on ``regime`` (from ``observed`` or ``obs_mask``)."""
    times = ds["time"].values
    if "observed" in ds:
        obs = ds["observed"]
        extra = [d for d in obs.dims if d not in ("regime", "time")]
        if extra:  # tolerate a broadcast copy over strategy/trajectory
            obs = obs.fillna(0).astype(bool).any(dim=extra)
        return times[flags(obs.sel(regime=regime).transpose("time").values)]
    if "obs_mask" in ds:
        mask = ds["obs_mask"].sel(regime=regime).fillna(0).astype(bool)
        found = mask.any(dim=[d for d in mask.dims if d != "field_time"]).values
        return ds["field_time"].values[found]
    return times[:0]


def cadence(times: np.ndarray, horizon: int) -> str:
    """The observation times in words: ``"every frame"``, ``"every 8 frames"``, ...."""
    if times.size == 0:
        return "no frame"
    step = np.diff(times)
    if times.size == horizon:
        return "every frame"
    if step.size and np.all(step == step[0]):
        return f"every {int(step[0])} frames"
    return f"{times.size} of {horizon} frames"


def mark_observed(ax: Axes, times: np.ndarray, horizon: int) -> bool:
    """Ticks at the bottom of the axis at the observed frames, or the cadence in words.

    Ticks are drawn only when observations leave gaps and there are at most
    :data:`MAX_OBSERVED_TICKS` of them (on every-frame regimes they would merge into a bar);
    otherwise the lower left corner says ``"observed: every frame"`` (or the cadence).
    Returns whether ticks were drawn.
    """
    if times.size and times.size < horizon and times.size <= MAX_OBSERVED_TICKS:
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
        return True
    ax.text(
        0.01,
        0.02,
        f"observed: {cadence(times, horizon)}",
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=7,
        color="0.3",
    )
    return False


def observed_handle() -> Line2D:
    """Legend entry of the observed-frame ticks."""
    return Line2D(
        [], [], color="black", marker="|", linestyle="none", markersize=8, label="observed frame"
    )
