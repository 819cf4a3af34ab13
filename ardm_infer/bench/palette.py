"""The one strategy palette: a strategy keeps its colour in every figure of the project.

Used by the report figures (:mod:`ardm_infer.bench.figures`) and by the scripts under
``benchmarks/`` that draw their own figures.  Pure Python (no matplotlib import).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["KNOWN_COLORS", "strategy_color", "strategy_colors"]

KNOWN_COLORS: dict[str, str] = {
    "forecast": "#7f7f7f",
    "controller": "#1f77b4",
    "dps": "#ff7f0e",
    "smc": "#2ca02c",
    "enkf": "#d62728",
    "vc": "#9467bd",
}
"""Colours of the registered strategies (matplotlib's tab10 hues; forecast grey)."""

_EXTRA_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#637939")


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    """A fixed colour per strategy label: known names keep their colour across figures.

    Exact registered names get :data:`KNOWN_COLORS`; a label that starts with a registered
    name (``"dps-0.5"``) takes that colour if no exact name in ``strategies`` uses it; any
    other label gets the next of a fixed list of extra colours, in order of appearance.

    Args:
        strategies: labels, in the order they are shown.

    Returns:
        ``{label: "#rrggbb"}`` with distinct colours (up to 12 labels), in input order.
    """
    colors: dict[str, str] = {}
    extra = iter(_EXTRA_COLORS * (1 + len(strategies) // len(_EXTRA_COLORS)))
    for name in strategies:  # exact names first
        if name in KNOWN_COLORS:
            colors[name] = KNOWN_COLORS[name]
    for name in strategies:  # labels such as "dps-0.5" take their base's colour if free
        if name in colors:
            continue
        base = next((k for k in KNOWN_COLORS if name.startswith(k)), None)
        if base is not None and KNOWN_COLORS[base] not in colors.values():
            colors[name] = KNOWN_COLORS[base]
        else:
            colors[name] = next(extra)
    return {name: colors[name] for name in strategies}


def strategy_color(name: str) -> str:
    """The colour of one strategy label shown on its own (:func:`strategy_colors`)."""
    return strategy_colors([name])[name]
