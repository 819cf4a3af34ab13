"""The benchmark: one call runs strategies × regimes and scores them (docs/design.md §7).

- :func:`benchmark` — run a grid of (strategy, regime) cells; returns an ``xarray.Dataset``.
- :func:`bench_preset` — the ``quick`` and ``paper`` sizes.
- :class:`StrategySpec`, :func:`strategy_spec` — a labelled, configured strategy column.
- :func:`strategy_configs` — the configuration each strategy of a result ran.
- :class:`ResultFolderError` — an ``out`` folder that is busy, another run's or not writable
  (:mod:`ardm_infer.bench.folder`).
- :mod:`ardm_infer.bench.stats` — time means, intervals over trajectories, the paired test,
  skill scores and :func:`~ardm_infer.bench.stats.summary` (also ``ardm_infer.summary``).
- :mod:`ardm_infer.bench.report` — terminal, markdown and CSV tables and ``report.md``.
- :mod:`ardm_infer.bench.figures` — every figure (one palette: :mod:`ardm_infer.bench.palette`).

Imports run one way: ``report`` → ``figures`` → ``plotting`` → ``stats`` and ``palette``.
"""

from .core import (
    SOLVER,
    BenchPreset,
    CellTask,
    ResultFolderError,
    StrategySpec,
    bench_preset,
    benchmark,
    combine_cells,
    run_cell,
    score,
    strategy_configs,
    strategy_spec,
)

__all__ = [
    "SOLVER",
    "BenchPreset",
    "CellTask",
    "ResultFolderError",
    "StrategySpec",
    "bench_preset",
    "benchmark",
    "combine_cells",
    "run_cell",
    "score",
    "strategy_configs",
    "strategy_spec",
]
