"""The summary figure: strategies × regimes, CRPS skill against the forecast, significance.

``draw_summary`` returns the :class:`~matplotlib.figure.Figure`; ``plot_summary`` saves it
as PNG and returns the path (see :mod:`ardm_infer.bench.figures`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .palette import strategy_colors
from .plotting import figure, save, title
from .stats import SkillScores, lookaheads, present_cells, skill_scores

SKILL_LIMIT = 1.0
"""The colour scale spans skill in [-SKILL_LIMIT, SKILL_LIMIT]; beyond it colours saturate."""


def _lookahead_text(frames: int) -> str:
    if frames < 0:
        return "look-ahead ?"
    return f"look-ahead {frames} frame" + ("" if frames == 1 else "s")


def _cell_text(scores: SkillScores, s: int, r: int, present: np.ndarray) -> tuple[str, str]:
    """``(main text, interval text)`` of one cell of the grid."""
    if scores.failed[s, r]:
        return "failed", ""
    if not present[s, r]:
        return "not run", ""
    if scores.strategies[s] == scores.reference:
        return "reference", ""
    value = scores.skill[s, r]
    if not math.isfinite(value):
        return "–", ""
    mark = {1: " ▲", -1: " ▼"}.get(int(scores.significant[s, r]), "")
    main = f"{value:+.2f}{mark}" if abs(value) < 100 else f"{value:+.2g}{mark}"
    low, high = scores.low[s, r], scores.high[s, r]
    interval = f"[{low:+.2f}, {high:+.2f}]" if math.isfinite(low) and abs(low) < 100 else ""
    return main, interval


def draw_summary(
    ds: xr.Dataset, metric: str = "crps", reference: str = "forecast", confidence: float = 0.95
) -> Figure:
    """The figure of :func:`plot_summary`."""
    scores = skill_scores(ds, metric=metric, reference=reference, confidence=confidence)
    present = present_cells(ds)
    n_s, n_r = len(scores.strategies), len(scores.regimes)
    ahead = lookaheads(ds)
    colors = strategy_colors(scores.strategies)
    shown = np.where(np.isfinite(scores.skill), scores.skill, np.nan)
    shown[scores.strategies.index(scores.reference)] = np.nan  # grey: the reference itself
    fig = figure(max(7.0, 2.6 + 1.45 * n_r), max(3.2, 1.6 + 0.62 * n_s))
    ax = fig.subplots()
    cmap = _colormap()
    image = ax.imshow(shown, cmap=cmap, norm=Normalize(-SKILL_LIMIT, SKILL_LIMIT), aspect="auto")
    for s in range(n_s):
        for r in range(n_r):
            main, interval = _cell_text(scores, s, r, present)
            value = shown[s, r]
            dark = math.isfinite(value) and abs(value) > 0.6 * SKILL_LIMIT
            color = "white" if dark else "black"
            y = s - (0.12 if interval else 0.0)
            ax.text(r, y, main, ha="center", va="center", fontsize=9, color=color)
            if interval:
                ax.text(r, s + 0.22, interval, ha="center", va="center", fontsize=6.5, color=color)
    ax.set_xticks(range(n_r), scores.regimes, rotation=20, ha="right")
    labels = [f"{name}\n{_lookahead_text(ahead[name])}" for name in scores.strategies]
    ax.set_yticks(range(n_s), labels, fontsize=8)
    for tick, name in zip(ax.get_yticklabels(), scores.strategies, strict=True):
        tick.set_color(colors[name])
    ax.set_xticks(np.arange(n_r + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_s + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    level = f"{100 * confidence:g}%"
    fig.colorbar(
        image,
        ax=ax,
        extend="both",
        label=f"{metric.upper()} skill (colours clipped to ±{SKILL_LIMIT:g})",
    )
    fig.suptitle(
        f"{metric.upper()} skill vs {scores.reference}: 1 − {metric.upper()} / "
        f"{metric.upper()} of {scores.reference} ({title(ds)})\n"
        f"brackets: paired {level} interval over trajectories; ▲/▼: it lies above/below 0",
        fontsize=10,
    )
    return fig


def _colormap():
    """RdBu with a light grey for cells without a value (reference, failed, not run)."""
    from matplotlib import colormaps

    return colormaps["RdBu"].with_extremes(bad="#e8e8e8")


def plot_summary(
    ds: xr.Dataset,
    out_dir: str | Path,
    metric: str = "crps",
    reference: str = "forecast",
    confidence: float = 0.95,
) -> Path:
    """Strategies (rows) × regimes (columns): skill relative to the forecast.

    Each cell holds the skill score ``1 − mean(CRPS) / mean(CRPS_forecast)`` over the
    trajectories (:func:`~ardm_infer.bench.stats.skill_scores`; positive: better than the
    unguided forecast, 1: perfect), its paired ``confidence`` interval in brackets, and ▲
    (▼) when that interval lies above (below) 0 — the paired test of the summary table.
    Colours saturate beyond ±:data:`SKILL_LIMIT` (a diverged strategy's skill can be far
    below −1; the number stays exact).  Row labels give each strategy's look-ahead (frames
    of future observations it may read; ``?`` when the results do not record it).  Failed
    and missing cells say so.  If ``reference`` did not run, the first strategy is used.

    Returns:
        ``out_dir/summary.png``.
    """
    return save(draw_summary(ds, metric, reference, confidence), out_dir, "summary")
