"""Benchmark report tables and figures on small synthetic result datasets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ardm_infer.bench.figures import (
    default_regime,
    figure_caption,
    make_figures,
    plot_accuracy_cost,
    plot_hovmoller,
    plot_metric_time,
    plot_rank_histograms,
    plot_spread_skill,
    plot_vorticity_snapshots,
    strategy_colors,
)
from ardm_infer.bench.report import (
    SUMMARY_COLUMNS,
    critical_value,
    format_table,
    load_results,
    markdown_table,
    summary,
    trajectory_time_means,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic(
    pde: str = "ks",
    strategies: tuple[str, ...] = ("forecast", "dps", "enkf"),
    regimes: tuple[str, ...] = ("dense", "sparse"),
    trajectories: int = 3,
    horizon: int = 10,
    members: int = 4,
    nx: int = 16,
    seed: int = 0,
) -> xr.Dataset:
    """A result dataset with the engine's schema, random but plausible values."""
    rng = np.random.default_rng(seed)
    s_, r_, n_, h_ = len(strategies), len(regimes), trajectories, horizon
    per_time = ("strategy", "regime", "trajectory", "time")
    shape = (s_, r_, n_, h_)
    growth = np.linspace(0.2, 1.0, h_)
    rmse = growth * (1.0 + 0.2 * rng.random(shape))
    space = {"x": np.arange(nx)} if pde == "ks" else {"x": np.arange(nx), "y": np.arange(nx)}
    space_shape = tuple(len(v) for v in space.values())
    field_time = np.arange(1, h_ + 1) if pde == "ks" else np.array([1, h_ // 2, h_])
    ft = len(field_time)
    xs = np.linspace(0, 2 * np.pi, nx, endpoint=False)
    if pde == "ks":
        truth = np.sin(xs[None, None, :] + 0.3 * field_time[:, None, None])
    else:
        truth = np.sin(xs[None, None, :, None] + 0.2 * field_time[:, None, None, None]) * np.cos(
            xs[None, None, None, :]
        )
    means = truth[None, None] + 0.3 * rng.standard_normal((s_, r_, *truth.shape))
    obs_mask = np.zeros((r_, ft, 1, *space_shape), dtype=bool)
    for r in range(r_):
        stride = 2 * (r + 1)
        if pde == "ks":
            obs_mask[r, :, 0, ::stride] = True
        else:
            obs_mask[r, :, 0, ::stride, ::stride] = True
    observed = np.ones((r_, h_), dtype=bool)
    observed[-1, 1::2] = False  # the last regime is gappy
    obs_mask[-1, (field_time - 1) % 2 == 1] = False
    ds = xr.Dataset(
        {
            "rmse": (per_time, rmse),
            "crps": (per_time, 0.5 * rmse),
            "crps_fair": (per_time, 0.48 * rmse),
            "spread": (per_time, 0.8 * rmse),
            "corr": (per_time, 1.0 - 0.5 * growth * np.ones(shape)),
            "spectrum_error": (per_time, 0.1 * rng.random(shape)),
            "physics": (per_time, 10.0 + rng.standard_normal(shape)),
            "blow_up": (per_time, np.zeros(shape, dtype=bool)),
            "truth_physics": (("trajectory", "time"), 10.0 + np.zeros((n_, h_))),
            "high_corr_time": (
                ("strategy", "regime", "trajectory"),
                rng.integers(1, h_, (s_, r_, n_)),
            ),
            "rank_hist": (
                ("strategy", "regime", "rank"),
                rng.integers(50, 150, (s_, r_, members + 1)),
            ),
            "observed": (("regime", "time"), observed),
            "wall_seconds": (("strategy", "regime"), 1.0 + rng.random((s_, r_))),
            "ms_per_frame": (
                ("strategy", "regime"),
                np.outer(np.arange(1, s_ + 1) * 10.0, np.ones(r_)),
            ),
            "denoiser_calls": (("strategy", "regime"), np.full((s_, r_), 100.0)),
            "vjps": (("strategy", "regime"), np.full((s_, r_), 20.0)),
            "peak_memory_bytes": (("strategy", "regime"), np.full((s_, r_), 2.0**24)),
            "truth_field": (("field_time", "channel", *space), truth),
            "mean_field": (("strategy", "regime", "field_time", "channel", *space), means),
            "obs_mask": (("regime", "field_time", "channel", *space), obs_mask),
        },
        coords={
            "strategy": list(strategies),
            "regime": list(regimes),
            "trajectory": np.arange(n_),
            "time": np.arange(1, h_ + 1),
            "rank": np.arange(members + 1),
            "field_time": field_time,
            "channel": [0],
            **space,
        },
        attrs={
            "pde": pde,
            "members": members,
            "horizon": h_,
            "seed": seed,
            "config": json.dumps({"pde": pde, "members": members, "horizon": h_}),
            "code_version": "0.1.0+test",
            "created": "2026-01-01T00:00:00",
        },
    )
    return ds


def set_traj_values(ds: xr.Dataset, name: str, strategy: str, regime: str, values) -> None:
    """Make ``name`` constant in time with the given per-trajectory values."""
    v = np.asarray(values, dtype=float)[:, None] * np.ones(ds.sizes["time"])
    ds[name].loc[{"strategy": strategy, "regime": regime}] = v


def row(df, strategy: str, regime: str):
    sub = df[(df["strategy"] == strategy) & (df["regime"] == regime)]
    assert len(sub) == 1
    return sub.iloc[0]


# ----------------------------------------------------------------------------- summary


def test_summary_rows_and_columns():
    ds = synthetic()
    df = summary(ds)
    assert list(df.columns) == list(SUMMARY_COLUMNS)
    assert len(df) == 6
    assert list(df["regime"]) == ["dense"] * 3 + ["sparse"] * 3
    assert df.attrs["members"] == 4 and df.attrs["confidence"] == 0.95


def test_summary_hand_computed_numbers():
    ds = synthetic(members=4)
    set_traj_values(ds, "rmse", "dps", "dense", [1.0, 2.0, 3.0])
    set_traj_values(ds, "spread", "dps", "dense", [1.0, 1.0, 1.0])
    set_traj_values(ds, "crps", "dps", "dense", [0.5, 0.5, 0.8])
    df = summary(ds)
    r = row(df, "dps", "dense")
    assert r["rmse"] == pytest.approx(2.0)
    t975 = 4.302652729749464  # Student t, 2 dof
    assert critical_value(3, 0.95) == pytest.approx(t975)
    assert r["rmse_hw"] == pytest.approx(t975 * 1.0 / math.sqrt(3))
    crps = np.array([0.5, 0.5, 0.8])
    assert r["crps"] == pytest.approx(crps.mean())
    assert r["crps_hw"] == pytest.approx(t975 * crps.std(ddof=1) / math.sqrt(3))
    # SSR = sqrt((N+1)/N) sqrt(mean spread²) / sqrt(mean rmse²)
    assert r["ssr"] == pytest.approx(math.sqrt(5 / 4) * 1.0 / math.sqrt((1 + 4 + 9) / 3))
    # cost relative to forecast on the same regime: ms 20 / 10
    assert r["cost_ratio"] == pytest.approx(2.0)
    assert row(df, "forecast", "dense")["cost_ratio"] == pytest.approx(1.0)
    assert r["physics_error"] == pytest.approx(
        float(np.mean(np.abs(ds["physics"].sel(strategy="dps", regime="dense") - 10.0) / 10.0))
    )
    assert r["peak_memory_bytes"] == 2.0**24
    assert r["blow_up_fraction"] == 0.0


def test_time_means_skip_nonfinite_and_blow_up_fraction():
    ds = synthetic()
    rmse = ds["rmse"].sel(strategy="enkf", regime="sparse").values.copy()
    rmse[0, 5:] = np.inf
    rmse[1, :] = np.nan
    ds["rmse"].loc[{"strategy": "enkf", "regime": "sparse"}] = rmse
    ds["blow_up"].loc[{"strategy": "enkf", "regime": "sparse", "trajectory": 0}] = (
        np.arange(ds.sizes["time"]) >= 5
    )
    tm = trajectory_time_means(ds, "rmse").sel(strategy="enkf", regime="sparse").values
    assert tm[0] == pytest.approx(rmse[0, :5].mean())
    assert np.isnan(tm[1])
    r = row(summary(ds), "enkf", "sparse")
    assert r["n_trajectories"] == 2
    assert r["rmse"] == pytest.approx(np.mean([tm[0], tm[2]]))
    assert r["blow_up_fraction"] == pytest.approx(1 / 3)


def test_missing_cells_and_missing_reference():
    ds = synthetic()
    for name in ("rmse", "crps", "spread"):
        ds[name].loc[{"strategy": "forecast", "regime": "sparse"}] = np.nan
    df = summary(ds)
    assert len(df) == 5
    assert not ((df["strategy"] == "forecast") & (df["regime"] == "sparse")).any()
    assert df[df["regime"] == "sparse"]["cost_ratio"].isna().all()
    assert df[df["regime"] == "dense"]["cost_ratio"].notna().all()
    no_forecast = summary(ds.sel(strategy=["dps", "enkf"]))
    assert no_forecast["cost_ratio"].isna().all()


def test_best_marked_only_when_significant():
    ds = synthetic(strategies=("forecast", "dps", "enkf"))
    base = np.array([1.0, 2.0, 3.0])
    # dense: dps beats both others on every trajectory by a clear, consistent margin
    set_traj_values(ds, "rmse", "dps", "dense", base)
    set_traj_values(ds, "rmse", "enkf", "dense", base + np.array([0.50, 0.52, 0.49]))
    set_traj_values(ds, "rmse", "forecast", "dense", base + np.array([1.0, 1.1, 0.9]))
    # sparse: dps has the lowest mean but enkf's paired difference straddles zero
    set_traj_values(ds, "rmse", "dps", "sparse", base)
    set_traj_values(ds, "rmse", "enkf", "sparse", [1.5, 1.6, 3.1])
    set_traj_values(ds, "rmse", "forecast", "sparse", base + 2.0)
    df = summary(ds)
    dense = df[df["regime"] == "dense"].set_index("strategy")["rmse_best"]
    sparse = df[df["regime"] == "sparse"].set_index("strategy")["rmse_best"]
    assert dense.to_dict() == {"forecast": False, "dps": True, "enkf": False}
    assert not sparse.any()
    # the same data at a lower confidence level still does not pass ...
    assert not summary(ds, confidence=0.5).query("regime == 'sparse'")["rmse_best"].any()
    # ... and a single strategy on a regime is never "best"
    assert not summary(ds.sel(strategy=["dps"]))["rmse_best"].any()


def test_critical_value_edge_cases():
    assert math.isnan(critical_value(1))
    assert critical_value(1000, 0.95) == pytest.approx(1.96, abs=0.01)
    with pytest.raises(ValueError):
        critical_value(5, 1.5)


# ----------------------------------------------------------------------------- tables


def test_format_and_markdown_tables():
    ds = synthetic()
    set_traj_values(ds, "rmse", "dps", "dense", [0.1, 0.2, 0.3])
    df = summary(ds)
    assert row(df, "dps", "dense")["rmse_best"]
    text = format_table(df)
    lines = text.splitlines()
    assert lines[0].startswith("regime") and "RMSE ± 95% hw" in lines[0]
    body = [ln for ln in lines if ln.startswith(("dense", "sparse"))]
    assert len(body) == 6
    dps_dense = next(ln for ln in body if re.match(r"dense\s+dps\s", ln))
    assert "0.200 ± 0.248*" in dps_dense  # hw = t(2) · 0.1 / sqrt(3) = 0.248; 3 digits of 0.2
    assert len({len(ln) for ln in lines[:2]}) == 1  # header and rule aligned
    md = markdown_table(df)
    md_lines = md.splitlines()
    assert md_lines[0].startswith("| regime | strategy |")
    assert len(md_lines) == 2 + 6
    assert "**0.200 ± 0.248**" in md
    diag = markdown_table(df, "diagnostics")
    assert "peak mem (MiB)" in diag and "| 100 | 20 | 16.0 |" in diag
    with pytest.raises(ValueError):
        markdown_table(df, "other")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- files


def test_load_results_round_trip(tmp_path: Path):
    ds = synthetic(pde="kolmogorov")
    path = tmp_path / "results.nc"
    ds.to_netcdf(path)
    back = load_results(path)
    assert set(back.data_vars) == set(ds.data_vars)
    np.testing.assert_allclose(back["rmse"].values, ds["rmse"].values)
    assert back.attrs["pde"] == "kolmogorov" and back.attrs["members"] == 4
    assert list(back["strategy"].values) == list(ds["strategy"].values)
    path.unlink()  # the data were loaded: the file is no longer needed
    assert summary(back).equals(summary(ds))


@pytest.fixture(scope="module")
def ks_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``report.md`` of a KS synthetic dataset, figures included (drawn once per module)."""
    return write_report(synthetic(), tmp_path_factory.mktemp("report"))


def check_figures(paths: list[Path], pde: str) -> None:
    names = {p.stem for p in paths}
    field = "hovmoller_sparse" if pde == "ks" else "vorticity_sparse"
    expected = {field, "rmse_time", "crps_time", "spread_skill", "rank_histograms"}
    assert expected | {"pit_ecdf", "accuracy_cost", "physics_time"} <= names
    for p in paths:
        assert p.stat().st_size > 1000
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert figure_caption(p)


def test_make_figures_kolmogorov(tmp_path: Path):
    paths = make_figures(synthetic(pde="kolmogorov"), tmp_path)
    assert all(p.parent == tmp_path for p in paths)
    check_figures(paths, "kolmogorov")


def test_make_figures_ks(ks_report: Path):
    check_figures(sorted((ks_report.parent / "figures").glob("*.png")), "ks")


def test_figures_tolerate_missing_cells(tmp_path: Path):
    ds = synthetic(strategies=("forecast", "dps"), regimes=("dense", "sparse", "random"))
    for name in ("rmse", "crps", "spread", "mean_field"):
        ds[name].loc[{"strategy": "dps", "regime": "random"}] = np.nan
    ds["rank_hist"] = ds["rank_hist"].astype(float)
    ds["rank_hist"].loc[{"strategy": "dps", "regime": "random"}] = np.nan
    assert plot_hovmoller(ds, tmp_path, regime="random").stat().st_size > 1000
    for plot in (plot_metric_time, plot_spread_skill, plot_rank_histograms, plot_accuracy_cost):
        assert plot(ds, tmp_path).stat().st_size > 1000
    text = format_table(summary(ds))
    assert not re.search(r"^random\s+dps\s", text, re.M)
    assert re.search(r"^random\s+forecast\s", text, re.M)


def test_default_regime_and_colors():
    ds = synthetic(pde="kolmogorov", regimes=("dense", "sparse"))
    assert default_regime(ds) == "sparse"  # stride 4 in both directions is the sparsest
    colors = strategy_colors(["forecast", "dps", "dps-0.5", "new"])
    assert colors["forecast"] == strategy_colors(["forecast"])["forecast"]
    assert len(set(colors.values())) == 4


def test_vorticity_snapshot_times(tmp_path: Path):
    ds = synthetic(pde="kolmogorov")
    path = plot_vorticity_snapshots(ds, tmp_path, regime="dense", times=[1, 10])
    assert path.name == "vorticity_dense.png" and path.stat().st_size > 1000


def test_write_report(ks_report: Path):
    out = ks_report.parent
    assert ks_report.name == "report.md"
    text = ks_report.read_text(encoding="utf-8")
    assert "Kuramoto" in text and "0.1.0+test" in text and '"horizon": 10' in text
    assert "| regime | strategy |" in text and "paired" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == len(list((out / "figures").glob("*.png"))) >= 8
    for link in links:
        assert not Path(link).is_absolute()
        target = out / link
        assert target.is_file() and target.stat().st_size > 1000


def test_cells_merged_by_outer_join(tmp_path: Path):
    """The engine merges per-cell datasets: missing cells become NaN, bools become float."""
    ds = synthetic()
    ds["blow_up"].loc[{"strategy": "enkf", "regime": "dense", "trajectory": 2}] = True
    cells = [
        ds.sel(strategy=[s], regime=[r])
        for s in ("forecast", "dps", "enkf")
        for r in ("dense", "sparse")
        if (s, r) != ("dps", "sparse")
    ]
    merged = xr.merge(cells, compat="no_conflicts", join="outer", combine_attrs="override")
    merged["obs_mask"] = merged["obs_mask"].astype(float)
    assert merged["blow_up"].dtype == float
    df = summary(merged)
    assert len(df) == 5
    assert row(df, "enkf", "dense")["blow_up_fraction"] == pytest.approx(1 / 3)
    assert row(df, "forecast", "sparse")["blow_up_fraction"] == 0.0
    assert plot_hovmoller(merged, tmp_path).name == "hovmoller_sparse.png"
    assert plot_rank_histograms(merged, tmp_path).stat().st_size > 1000


# ----------------------------------------------------------------------------- failed cells, CSV


def with_failure(ds: xr.Dataset, strategy: str, regime: str, reason: str) -> xr.Dataset:
    """Mark a cell failed as the engine records it: NaN metrics, a flag and a reason."""
    ds = ds.copy(deep=True)
    ds["failed"] = (("strategy", "regime"), np.zeros((ds.sizes["strategy"], ds.sizes["regime"])))
    ds["failure"] = xr.full_like(ds["failed"], "", dtype=object)
    cell = {"strategy": strategy, "regime": regime}
    for name in ("rmse", "crps", "crps_fair", "spread", "corr"):
        ds[name].loc[cell] = np.nan
    ds["failed"].loc[cell] = 1.0
    ds["failure"].loc[cell] = reason
    return ds.assign_coords(lookahead=("strategy", [0, 0, -1]))


def test_failed_cells_and_lookahead_in_tables(tmp_path: Path):
    reason = "ValueError: dps: the ensemble is non-finite at frame 7 (trajectory 1)"
    ds = with_failure(synthetic(), "dps", "sparse", reason)
    path = tmp_path / "results.nc"
    ds.to_netcdf(path)
    back = load_results(path)  # the netCDF round trip makes the flags floats
    df = summary(back)
    failed = row(df, "dps", "sparse")
    assert failed["failed"] and failed["failure"] == reason and math.isnan(failed["rmse"])
    assert not row(df, "dps", "dense")["failed"]
    assert len(df) == 6 and list(df["lookahead"][:3]) == [0, 0, -1]
    text = format_table(df)
    assert re.search(r"^sparse\s+dps\s+0\s+\S+\s+failed\s", text, re.M)
    assert re.search(r"^dense\s+enkf\s+\?\s", text, re.M)
    assert f"dps @ sparse: {reason}" in text
    md = markdown_table(df)
    assert "| sparse | dps | 0 | ? | failed |" in md and "| look-ahead | config |" in md
    report = write_report(back, tmp_path, figures=False).read_text(encoding="utf-8")
    assert f"- dps @ sparse: {reason}" in report


def test_summary_csv_beside_results(tmp_path: Path):
    ds = synthetic()
    ds.to_netcdf(tmp_path / "results.nc")
    write_report(ds, tmp_path, figures=False)
    import pandas as pd

    csv = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False, na_values=[""])
    df = summary(ds)
    assert list(csv.columns) == list(SUMMARY_COLUMNS)
    np.testing.assert_allclose(csv["rmse"], df["rmse"], rtol=1e-9)
    assert list(csv["strategy"]) == list(df["strategy"])
    assert "summary.csv" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_load_results_refuses_truncated_and_foreign_files(tmp_path: Path):
    good = tmp_path / "results.nc"
    synthetic().to_netcdf(good)
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated\.nc is not a readable netCDF"):
        load_results(truncated)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"temperature": ("x", np.arange(3.0))}).to_netcdf(foreign)
    with pytest.raises(ValueError, match="not an ardm-infer benchmark result"):
        load_results(foreign)


def test_summary_at_top_level_and_no_import_circle():
    import subprocess
    import sys

    import ardm_infer

    assert ardm_infer.summary is summary
    code = (
        "import sys, ardm_infer; assert 'pandas' not in sys.modules; "
        "import ardm_infer.bench.figures; assert 'ardm_infer.bench.report' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
