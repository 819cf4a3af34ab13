"""The benchmark: one call runs strategies × regimes and scores them (docs/design.md §7).

- :func:`benchmark` — run a grid of (strategy, regime) cells; returns an ``xarray.Dataset``.
- :func:`bench_preset` — the ``quick`` and ``paper`` sizes.
- :class:`StrategySpec`, :func:`strategy_spec` — a labelled, configured strategy column.
- :mod:`ardm_infer.bench.report`, :mod:`ardm_infer.bench.figures` — tables, report, figures.
"""

from .core import (
    BenchPreset,
    CellTask,
    StrategySpec,
    bench_preset,
    benchmark,
    combine_cells,
    run_cell,
    score,
    strategy_spec,
)

__all__ = [
    "BenchPreset",
    "CellTask",
    "StrategySpec",
    "bench_preset",
    "benchmark",
    "combine_cells",
    "run_cell",
    "score",
    "strategy_spec",
]
