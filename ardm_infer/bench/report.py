"""Benchmark report: the summary as terminal, markdown and CSV tables, and a markdown report.

Input is the result :class:`xarray.Dataset` of the benchmark engine (see
``ardm_infer.bench.core``); the statistics (time means, intervals over trajectories, the
paired test, the summary table) live in :mod:`ardm_infer.bench.stats` and are re-exported
here (:func:`summary`, :func:`critical_value`, ...).  This module formats them and writes
``report.md``, ``summary.csv`` and the figures of :mod:`ardm_infer.bench.figures`.

A cell recorded as failed (``failed``/``failure`` variables) has a row that says so, and its
reason is listed under the tables; each strategy's look-ahead (the ``lookahead`` coordinate;
``?`` when unknown) is a column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd
import xarray as xr

from .figures import figure_caption, make_figures
from .plotting import system_labels
from .stats import (
    SUMMARY_COLUMNS,
    critical_value,
    interval_kind,
    summary,
    trajectory_time_means,
)

__all__ = [
    "SUMMARY_COLUMNS",
    "critical_value",
    "format_table",
    "interval_kind",
    "load_results",
    "markdown_table",
    "summary",
    "trajectory_time_means",
    "write_report",
    "write_summary_csv",
]

SUMMARY_CSV = "summary.csv"
"""File name of the summary table written beside ``results.nc`` by :func:`write_report`."""


# ----------------------------------------------------------------------------- formatting


def _num(value: float, digits: int = 3) -> str:
    """Compact number: ``digits`` significant digits, no exponent below 1e5; ``-`` if NaN."""
    if value is None or not math.isfinite(value):
        return "-" if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{max(digits - 1, 1)}e}"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:#.{digits}g}"


def _pm(value: float, hw: float) -> str:
    """``value ± half-width`` with the decimals of the half-width's 2 significant digits or
    of the value's 3, whichever is finer (at most 6: strategies are compared on their means,
    which a wide interval over few trajectories must not round away); the value alone (4
    significant digits) when the half-width is NaN or 0."""
    if not (math.isfinite(value) and math.isfinite(hw) and hw > 0):
        return _num(value, 4)
    by_hw = 1 - math.floor(math.log10(hw))
    by_value = 2 - math.floor(math.log10(abs(value))) if value != 0 else 0
    decimals = min(max(by_hw, by_value, 0), 6)
    return f"{value:.{decimals}f} ± {hw:.{decimals}f}"


def _count(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.0f}"


def _ratio(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}"


def _percent(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.0f}%"


def _lookahead(value: int) -> str:
    return "?" if value is None or not math.isfinite(value) or value < 0 else str(int(value))


def _confidence_label(df: pd.DataFrame) -> str:
    return f"{100 * float(df.attrs.get('confidence', 0.95)):g}%"


def _failed(row) -> bool:
    return bool(getattr(row, "failed", False))


def failure_lines(summary_df: pd.DataFrame) -> list[str]:
    """``"<strategy> @ <regime>: <reason>"`` for every failed row of :func:`summary`."""
    if "failed" not in summary_df:
        return []
    rows = summary_df[summary_df["failed"].astype(bool)]
    return [
        f"{r.strategy} @ {r.regime}: {str(r.failure).strip() or 'no reason recorded'}"
        for r in rows.itertuples(index=False)
    ]


def _main_cells(row, mark: Sequence[str]) -> list[str]:
    """RMSE, CRPS, SSR, ms/frame, ×forecast and blow-up of one row (``mark``: best marks)."""
    if _failed(row):
        return ["failed", "-", "-", "-", "-", "-"]
    return [
        mark[0] if mark[0] else _pm(row.rmse, row.rmse_hw),
        mark[1] if mark[1] else _pm(row.crps, row.crps_hw),
        _num(row.ssr, 3),
        _num(row.ms_per_frame, 3),
        _ratio(row.cost_ratio),
        _percent(row.blow_up_fraction),
    ]


def format_table(summary_df: pd.DataFrame) -> str:
    """Fixed-width plain-text table of :func:`summary` for the terminal.

    One line per (regime, strategy), regimes separated by a rule; columns look-ahead,
    RMSE ± hw, CRPS ± hw, SSR, ms/frame, ×forecast (cost ratio) and blow-up fraction; a
    ``*`` follows significantly best entries; failed cells say ``failed``, with their
    reasons under the table.  A footer explains the half-width and the ``*``.
    """
    level = _confidence_label(summary_df)
    header = (
        "regime",
        "strategy",
        "ahead",
        "config",
        f"RMSE ± {level} hw",
        f"CRPS ± {level} hw",
        "SSR",
        "ms/frame",
        "×forecast",
        "blow-up",
    )
    body: list[tuple[str, ...] | None] = []
    previous = None
    for row in summary_df.itertuples(index=False):
        if previous is not None and row.regime != previous:
            body.append(None)
        previous = row.regime
        marks = (
            _pm(row.rmse, row.rmse_hw) + ("*" if row.rmse_best else " "),
            _pm(row.crps, row.crps_hw) + ("*" if row.crps_best else " "),
        )
        cells = _main_cells(row, marks)
        lookahead = _lookahead(getattr(row, "lookahead", -1))
        source = _config_label(getattr(row, "config", ""))
        body.append((str(row.regime), str(row.strategy), lookahead, source, *cells))
    lines_data = [header, *(b for b in body if b is not None)]
    widths = [max(len(r[i]) for r in lines_data) for i in range(len(header))]
    left = {0, 1}

    def render(cols: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [render(header), rule]
    for b in body:
        lines.append(rule if b is None else render(b))
    interval = "Student-t" if summary_df.attrs.get("interval", "t") == "t" else "normal"
    lines.append("")
    lines.append(
        f"hw: {level} {interval} half-width over trajectories; "
        f"*: significantly lowest on the regime (paired {level} intervals vs every other "
        "strategy); ahead: frames of future observations read (?: unknown); config: tuned "
        "on validation trajectories, untrusted (too few tuning trials), default (library "
        "defaults), given, or — (nothing to tune); SSR 1 = calibrated; ×forecast: ms/frame "
        "relative to forecast"
    )
    failures = failure_lines(summary_df)
    if failures:
        lines.append("failed cells:")
        lines += [f"  {text}" for text in failures]
    return "\n".join(lines)


_MAIN_HEADER = ("RMSE ± {level}", "CRPS ± {level}", "SSR", "ms/frame", "× forecast", "blow-up")
_DIAGNOSTICS_HEADER = (
    "fair CRPS",
    "corr",
    "corr ≥ 0.8 (frames)",
    "spectrum err",
    "physics err",
    "denoiser calls",
    "VJPs",
    "peak mem (MiB)",
    "wall (s)",
)


def _diagnostic_cells(row) -> list[str]:
    if _failed(row):
        return ["failed", *["-"] * (len(_DIAGNOSTICS_HEADER) - 1)]
    return [
        _num(row.crps_fair, 4),
        _num(row.corr),
        _num(row.high_corr_time),
        _num(row.spectrum_error),
        _num(row.physics_error),
        _count(row.denoiser_calls),
        _count(row.vjps),
        _num(row.peak_memory_bytes / 2**20),
        _num(row.wall_seconds),
    ]


def _config_label(source: str) -> str:
    """Short form of a cell's ``config_source`` for the tables."""
    if not source:
        return "?"
    if source == "nothing to tune":
        return "—"
    short = "untrusted" if source.startswith("tuned, untrusted") else source.split(",")[0]
    return short + ("+cap" if "capped" in source else "")


def markdown_table(summary_df: pd.DataFrame, kind: Literal["main", "diagnostics"] = "main") -> str:
    """GitHub-flavoured markdown table of :func:`summary`.

    Args:
        summary_df: output of :func:`summary`.
        kind: ``"main"``: look-ahead, RMSE ± hw, CRPS ± hw (significantly best in bold),
            SSR, ms/frame, ×forecast, blow-up; ``"diagnostics"``: fair CRPS, correlation,
            high-correlation time, spectrum error, physics error, denoiser calls, VJPs,
            peak memory and wall time.  Failed cells say ``failed``.

    Returns:
        The table, one line per (regime, strategy), without a trailing newline.
    """
    level = _confidence_label(summary_df)
    if kind == "main":
        header = [
            "regime",
            "strategy",
            "look-ahead",
            "config",
            *(h.format(level=level) for h in _MAIN_HEADER),
        ]
    elif kind == "diagnostics":
        header = ["regime", "strategy", *_DIAGNOSTICS_HEADER]
    else:
        raise ValueError(f"kind must be 'main' or 'diagnostics', got {kind!r}")

    def bold(text: str, flag: bool) -> str:
        return f"**{text}**" if flag else text

    rows = []
    for row in summary_df.itertuples(index=False):
        labels = [str(row.regime), str(row.strategy)]
        if kind == "main":
            marks = (
                bold(_pm(row.rmse, row.rmse_hw), bool(row.rmse_best)),
                bold(_pm(row.crps, row.crps_hw), bool(row.crps_best)),
            )
            lookahead = _lookahead(getattr(row, "lookahead", -1))
            source = _config_label(getattr(row, "config", ""))
            rows.append([*labels, lookahead, source, *_main_cells(row, marks)])
        else:
            rows.append([*labels, *_diagnostic_cells(row)])
    align = ["---", "---", *["--:"] * (len(header) - 2)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_summary_csv(summary_df: pd.DataFrame, path: str | Path) -> Path:
    """Write :func:`summary` as CSV (every column of :data:`SUMMARY_COLUMNS`, full precision).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary_df.to_csv(path, index=False, float_format="%.10g")
    return path


# ----------------------------------------------------------------------------- report

_LEGEND = """\
- **look-ahead**: frames of future observations the strategy may read at each step (0 for a
  filter; `?`: not recorded in the results).
- **RMSE**: root-mean-square error of the ensemble mean over the full state, averaged over
  the {horizon} assimilated frames of each trajectory, then over the {n}.
- **CRPS**: continuous ranked probability score of the ensemble (standard estimator),
  averaged over grid points, frames and trajectories.  Lower is better for both.
- **± x**: half-width of the {level} confidence interval of the mean over trajectories,
  from the spread of the per-trajectory time averages ({interval} quantile with n − 1
  degrees of freedom).
- **Bold** (`*` in the terminal table): significantly best on the regime — the lowest mean,
  and for every other strategy run on that regime the {level} confidence interval of the
  paired per-trajectory difference (same truth, same observations) lies entirely below
  zero.  No mark means no strategy is distinguishable from all others with these
  trajectories.
- **SSR**: spread–skill ratio sqrt((N+1)/N) · sqrt(mean spread²) / sqrt(mean RMSE²) with
  N = {members}; 1 is calibrated, below 1 over-confident, above 1 under-confident.
- **ms/frame**: wall-clock milliseconds per assimilated frame, for all trajectories and
  members of the cell at once (the cell's wall time divided by the horizon);
  **× forecast**: the same relative to the unguided forecast on that regime.
- **blow-up**: fraction of trajectories whose ensemble left the finite range; frames with a
  non-finite metric are left out of the time averages.
- **failed**: the cell stopped with an error; its reason is listed under the tables and the
  other cells ran.
"""


def _pretty_config(config: object) -> str:
    """The ``config`` attribute as indented JSON (verbatim when not JSON)."""
    if isinstance(config, str):
        try:
            return json.dumps(json.loads(config), indent=2, sort_keys=True)
        except ValueError:
            return config
    return json.dumps(config, indent=2, sort_keys=True, default=str)


def _metadata(ds: xr.Dataset) -> list[str]:
    attrs = ds.attrs
    meta = [
        ("strategies", ", ".join(str(s) for s in ds["strategy"].values)),
        ("regimes", ", ".join(str(r) for r in ds["regime"].values)),
        ("trajectories", str(ds.sizes.get("trajectory", 0))),
        ("members", str(attrs.get("members", "?"))),
        ("horizon (frames)", str(attrs.get("horizon", ds.sizes.get("time", "?")))),
        ("seed", str(attrs.get("seed", "?"))),
        ("code version", f"`{attrs.get('code_version', 'unknown')}`"),
        ("created", str(attrs.get("created", "unknown"))),
    ]
    return [f"- **{k}**: {v}" for k, v in meta]


def _diagnostics_section(table: pd.DataFrame, pde: str) -> list[str]:
    physics = system_labels(pde)["physics"] if pde else "physics diagnostic"
    return [
        "## Diagnostics",
        "",
        "Time means as above.  *corr*: Pearson correlation of ensemble mean and truth; "
        "*corr ≥ 0.8*: frames from the start until the correlation first drops below 0.8; "
        "*spectrum err*: largest relative error of the members' average energy spectrum; "
        f"*physics err*: relative error of the {physics} (computed per member, then averaged "
        "over the members) against the truth's; *peak mem*: on a GPU the peak memory the "
        "CUDA allocator held during the cell, on a CPU the peak resident memory of the whole "
        "process so far (it includes data and models loaded before the cell).",
        "",
        markdown_table(table, "diagnostics"),
        "",
    ]


def _figures_section(ds: xr.Dataset, out: Path, confidence: float) -> list[str]:
    paths = make_figures(ds, out / "figures", confidence=confidence)
    if not paths:
        return []
    lines = ["## Figures", ""]
    for p in paths:
        rel = Path(p).resolve().relative_to(out.resolve()).as_posix()
        caption = figure_caption(p)
        heading = caption.split(".")[0]
        lines += [f"### {heading}", "", f"![{heading}]({rel})", "", caption, ""]
    return lines


def write_report(
    ds: xr.Dataset,
    out_dir: str | Path,
    confidence: float = 0.95,
    figures: bool = True,
) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/summary.csv`` and the figures (``figures/``).

    The report holds the run's metadata (PDE, members, horizon, seed, code version, creation
    time), the main summary table (:func:`markdown_table`), the failed cells with their
    reasons, a legend of the columns and the significance rule, the diagnostics table, the
    figures of :func:`ardm_infer.bench.figures.make_figures` (the summary figure first)
    embedded with relative links, and the configuration JSON.  ``summary.csv`` is
    :func:`summary` with every column (:func:`write_summary_csv`), beside ``results.nc``
    when ``out_dir`` is the benchmark's output folder.

    Args:
        ds: result dataset.
        out_dir: output folder (created if needed).
        confidence: level of the intervals and of the best marking.
        figures: draw and embed the figures.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary(ds, confidence=confidence)
    write_summary_csv(table, out / SUMMARY_CSV)
    attrs = ds.attrs
    pde = str(attrs.get("pde", ""))
    lines = [f"# Benchmark report: {system_labels(pde)['title']}", "", *_metadata(ds)]
    lines += ["", "## Results", "", markdown_table(table, "main"), ""]
    failures = failure_lines(table)
    if failures:
        lines += ["**Failed cells** (the other cells ran):", ""]
        lines += [f"- {text}" for text in failures] + [""]
    lines += [f"The same table with every column: [{SUMMARY_CSV}]({SUMMARY_CSV}).", ""]
    n = ds.sizes.get("trajectory", 0)
    interval = "Student-t" if table.attrs["interval"] == "t" else "standard normal"
    legend = _LEGEND.format(
        horizon=attrs.get("horizon", ds.sizes.get("time", "?")),
        n=f"{n} trajector{'y' if n == 1 else 'ies'}",
        level=_confidence_label(table),
        interval=interval,
        members=f"{attrs.get('members', '?')} member{'' if attrs.get('members') == 1 else 's'}",
    )
    lines += ["### Legend", "", legend, *_diagnostics_section(table, pde)]
    if figures:
        lines += _figures_section(ds, out, confidence)
    lines += _cell_configs_section(ds)
    config = _pretty_config(attrs.get("config", "{}"))
    lines += ["## Configuration", "", "```json", config, "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _cell_configs_section(ds: xr.Dataset) -> list[str]:
    """The settings each (strategy, regime) cell ran with, where they differ from the
    strategy's given configuration (tuned cells)."""
    if "config_source" not in ds:
        return []
    import json

    lines = ["## Settings per cell", "", str(ds.attrs.get("tuned", "")), ""]
    base = {
        str(label): json.loads(str(cfg))
        for label, cfg in zip(ds["strategy"].values, ds["strategy_config"].values, strict=True)
    }
    rows = []
    for i, label in enumerate(ds["strategy"].values):
        for j, regime in enumerate(ds["regime"].values):
            cell = json.loads(str(ds["cell_config"].values[i, j]))
            changed = {k: v for k, v in cell.items() if base[str(label)].get(k) != v}
            source = str(ds["config_source"].values[i, j])
            text = ", ".join(f"{k}={_short(v)}" for k, v in sorted(changed.items())) or "—"
            rows.append(f"| {regime} | {label} | {source} | {text} |")
    lines += [
        "| regime | strategy | config | settings (changed from the given) |",
        "|---|---|---|---|",
    ]
    return [*lines, *rows, ""]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def load_results(path: str | Path) -> xr.Dataset:
    """Open a result netCDF file written by the benchmark and load it into memory.

    The file is closed before returning.  Boolean variables that the netCDF round trip
    stored as integers are left as xarray decodes them.

    Raises:
        ValueError: the file is not a readable netCDF file (truncated, another format) or
            not a benchmark result (no ``strategy``/``regime`` dimensions or no ``rmse``,
            ``crps`` and ``spread`` variables); the message names the file.
    """
    path = Path(path)
    try:
        with xr.open_dataset(path) as ds:
            loaded = ds.load()
    except FileNotFoundError:
        raise
    except Exception as err:  # h5py/netCDF raise OSError, ValueError or their own types
        raise ValueError(
            f"{path} is not a readable netCDF file ({type(err).__name__}: {err}); "
            "a truncated or foreign file? rerun the benchmark to rewrite it"
        ) from err
    missing = [d for d in ("strategy", "regime", "trajectory", "time") if d not in loaded.dims]
    missing += [v for v in ("rmse", "crps", "spread") if v not in loaded]
    if missing:
        raise ValueError(
            f"{path} is not an ardm-infer benchmark result (missing {', '.join(missing)})"
        )
    return loaded
