"""Every figure kind rendered from a small saved result with a diverged and a failed cell.

The result is built here with the benchmark's layout (see ``ardm_infer.bench.core``),
written to netCDF and read back, then every ``draw_*`` figure is inspected: every strategy
named, one colour per strategy in every figure, axis limits set by the strategies that stay
on scale, no interval below zero for non-negative metrics, readable observation marks and
log ticks.  The PNGs themselves are written by ``make_figures`` in ``test_make_figures``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ardm_infer.bench import figures, stats
from ardm_infer.bench.palette import KNOWN_COLORS, strategy_colors
from ardm_infer.bench.report import load_results

STRATEGIES = ("forecast", "controller", "dps", "enkf", "smc", "vc")
REGIMES = ("dense", "sparse-gappy", "random")
DIVERGED = ("dps", "dense")  # RMSE grows to 1e6 and blows up after frame 10
FAILED = ("vc", "random")  # recorded as failed: NaN metrics, a reason
HORIZON = 24
MEMBERS = 4
NX = 16


def saved_result(tmp: Path, pde: str = "ks", trajectories: int = 2) -> xr.Dataset:
    """A small benchmark result (netCDF round trip) with a diverged and a failed cell.

    ``enkf`` is far better than the forecast on every trajectory (tiny RMSE with a large
    spread between trajectories, so an unclipped interval would reach below zero);
    ``dps`` diverges on ``dense``; ``vc`` failed on ``random``; ``dense`` is observed every
    frame, ``sparse-gappy`` every 8th frame.
    """
    rng = np.random.default_rng(1)
    s_, r_, n_, h_ = len(STRATEGIES), len(REGIMES), trajectories, HORIZON
    shape = (s_, r_, n_, h_)
    growth = np.linspace(0.2, 1.0, h_)
    rmse = growth * (1.0 + 0.1 * rng.random(shape))
    enkf = STRATEGIES.index("enkf")
    rmse[enkf] = 0.05 * growth * (1.0 + 0.9 * rng.random((r_, n_, h_)))
    d_s, d_r = STRATEGIES.index(DIVERGED[0]), REGIMES.index(DIVERGED[1])
    rmse[d_s, d_r, :, 10:] = np.geomspace(10.0, 1e6, h_ - 10)
    blow_up = np.zeros(shape, dtype=bool)
    blow_up[d_s, d_r, :, 12:] = True
    space = {"x": np.arange(NX)} if pde == "ks" else {"x": np.arange(NX), "y": np.arange(NX)}
    space_shape = tuple(len(v) for v in space.values())
    field_time = np.arange(1, h_ + 1) if pde == "ks" else np.array([1, h_ // 2, h_])
    xs = np.linspace(0, 2 * np.pi, NX, endpoint=False)
    truth = np.sin(xs + 0.3 * field_time[:, None])[:, None]  # (field_time, channel, x)
    if pde != "ks":
        truth = truth[..., None] * np.cos(xs)
    means = truth[None, None] + 0.3 * rng.standard_normal((s_, r_, *truth.shape))
    means[d_s, d_r, field_time > 10] *= 1e5
    observed = np.ones((r_, h_), dtype=bool)
    observed[1] = np.arange(1, h_ + 1) % 8 == 0
    obs_mask = np.zeros((r_, len(field_time), 1, *space_shape), dtype=bool)
    obs_mask[..., ::4] = True
    obs_mask &= observed[:, field_time - 1].reshape(r_, -1, *([1] * (1 + len(space_shape))))
    physics = 10.0 + rng.standard_normal(shape)
    physics[d_s, d_r, :, 10:] = 1e7
    rank_hist = rng.integers(50, 150, (s_, r_, MEMBERS + 1)).astype(float)
    rank_hist[d_s, d_r] = [5000, 0, 0, 0, 5000]
    per_time = ("strategy", "regime", "trajectory", "time")
    cell = ("strategy", "regime")
    ds = xr.Dataset(
        {
            "rmse": (per_time, rmse),
            "crps": (per_time, 0.5 * rmse),
            "crps_fair": (per_time, 0.48 * rmse),
            "spread": (per_time, 0.8 * rmse),
            "corr": (per_time, 1.0 - 0.5 * growth * np.ones(shape)),
            "spectrum_error": (per_time, 0.1 * rng.random(shape)),
            "physics": (per_time, physics),
            "blow_up": (per_time, blow_up.astype(float)),  # as the engine's merge leaves it
            "truth_physics": (("trajectory", "time"), 10.0 + np.zeros((n_, h_))),
            "high_corr_time": (
                ("strategy", "regime", "trajectory"),
                rng.integers(1, h_, (s_, r_, n_)).astype(float),
            ),
            "rank_hist": (("strategy", "regime", "rank"), rank_hist),
            "observed": (("regime", "time"), observed),
            "wall_seconds": (cell, 1.0 + rng.random((s_, r_))),
            # a narrow cost range (one decade is not covered): readable log ticks needed
            "ms_per_frame": (cell, np.outer(np.linspace(10.0, 14.0, s_), np.ones(r_))),
            "denoiser_calls": (cell, np.full((s_, r_), 100.0)),
            "vjps": (cell, np.full((s_, r_), 20.0)),
            "peak_memory_bytes": (cell, np.full((s_, r_), 2.0**24)),
            "failed": (cell, np.zeros((s_, r_), dtype=bool)),
            "failure": (cell, np.full((s_, r_), "", dtype=object)),
            "truth_field": (("field_time", "channel", *space), truth),
            "mean_field": (("strategy", "regime", "field_time", "channel", *space), means),
            "obs_mask": (("regime", "field_time", "channel", *space), obs_mask),
        },
        coords={
            "strategy": list(STRATEGIES),
            "lookahead": ("strategy", [0, 3, 0, 0, 0, -1]),
            "regime": list(REGIMES),
            "trajectory": np.arange(n_),
            "time": np.arange(1, h_ + 1),
            "rank": np.arange(MEMBERS + 1),
            "field_time": field_time,
            "channel": [0],
            **space,
        },
        attrs={
            "pde": pde,
            "members": MEMBERS,
            "horizon": h_,
            "seed": 0,
            "config": json.dumps({"pde": pde, "members": MEMBERS, "horizon": h_}),
            "code_version": "0.1.0+test",
            "created": "2026-01-01T00:00:00",
        },
    )
    f = {"strategy": FAILED[0], "regime": FAILED[1]}
    for name, value in ds.data_vars.items():
        if ("strategy" in value.dims and "trajectory" in value.dims) or name == "mean_field":
            ds[name].loc[f] = np.nan
    ds["rank_hist"].loc[f] = np.nan
    ds["failed"].loc[f] = True
    ds["failure"].loc[f] = "ValueError: the ensemble is non-finite at frame 3 of trajectory 0"
    path = tmp / f"results_{pde}_{trajectories}.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    return load_results(path)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    return saved_result(tmp_path_factory.mktemp("result"))


@pytest.fixture(scope="module")
def drawn(result: xr.Dataset) -> dict[str, Figure]:
    """Every figure kind, drawn once for the module."""
    return {
        "summary": figures.draw_summary(result),
        "hovmoller": figures.draw_hovmoller(result, regime="dense"),
        "rmse_time": figures.draw_metric_time(result, "rmse"),
        "crps_time": figures.draw_metric_time(result, "crps"),
        "spread_skill": figures.draw_spread_skill(result),
        "rank_histograms": figures.draw_rank_histograms(result),
        "pit_ecdf": figures.draw_pit_ecdf(result),
        "accuracy_cost": figures.draw_accuracy_cost(result),
        "physics_time": figures.draw_physics_time(result),
    }


def all_texts(fig: Figure) -> list[str]:
    """Every string a reader sees: legend, suptitle, titles, labels, tick labels, texts."""
    out = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    out += [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_title("left"), ax.get_ylabel(), ax.get_xlabel()]
        out += [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels()]
        out += [t.get_text() for t in ax.texts]
    return out


def legend_colors(fig: Figure) -> dict[str, str]:
    """``{label: colour}`` of the figure legend's line handles."""
    out = {}
    for leg in fig.legends:
        for handle, text in zip(leg.legend_handles, leg.get_texts(), strict=True):
            if isinstance(handle, Line2D):
                out[text.get_text()] = to_hex(handle.get_color())
    return out


def data_axes(fig: Figure) -> list:
    """The panels (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


PALETTE = strategy_colors(STRATEGIES)


def test_palette_is_the_registered_colours():
    assert PALETTE == {s: KNOWN_COLORS[s] for s in STRATEGIES}
    assert len(set(PALETTE.values())) == len(STRATEGIES)


KINDS = (
    "summary",
    "hovmoller",
    "rmse_time",
    "crps_time",
    "spread_skill",
    "rank_histograms",
    "pit_ecdf",
    "accuracy_cost",
    "physics_time",
)


@pytest.mark.parametrize("kind", KINDS)
def test_every_strategy_is_named(drawn: dict[str, Figure], kind: str):
    texts = all_texts(drawn[kind])
    for strategy in STRATEGIES:
        assert any(strategy in t for t in texts), f"{strategy} missing from {kind}"


@pytest.mark.parametrize("kind", ["rmse_time", "crps_time", "spread_skill", "accuracy_cost"])
def test_legend_lists_every_strategy_in_its_colour(drawn: dict[str, Figure], kind: str):
    colors = legend_colors(drawn[kind])
    assert {s: colors[s] for s in STRATEGIES} == PALETTE


def test_lines_and_bars_use_the_palette(drawn: dict[str, Figure]):
    palette = set(PALETTE.values())
    rmse_colors = {to_hex(line.get_color()) for ax in drawn["rmse_time"].axes for line in ax.lines}
    assert palette <= rmse_colors  # every strategy drawn, in its colour
    assert rmse_colors - palette <= {"#000000"}  # the only other lines: black marks
    rank = drawn["rank_histograms"]
    for ax in rank.axes:
        ylabel = ax.get_ylabel().split("\n")[0]
        if ylabel:
            assert to_hex(ax.yaxis.label.get_color()) == PALETTE[ylabel]
        bars = {to_hex(p.get_facecolor()) for p in ax.patches}
        assert bars <= palette
    summary_ticks = drawn["summary"].axes[0].get_yticklabels()
    for tick in summary_ticks:
        assert to_hex(tick.get_color()) == PALETTE[tick.get_text().split("\n")[0]]


def on_scale_peak(ds: xr.Dataset, metric: str) -> float:
    """Largest trajectory-mean of ``metric`` over every cell but the diverged one."""
    curve = ds[metric].mean("trajectory")
    keep = ~((curve["strategy"] == DIVERGED[0]) & (curve["regime"] == DIVERGED[1]))
    return float(curve.where(keep).max())


@pytest.mark.parametrize("metric", ["rmse", "crps"])
def test_time_axis_limits_come_from_the_strategies_on_scale(drawn, result, metric):
    fig = drawn[f"{metric}_time"]
    peak = on_scale_peak(result, metric)
    assert float(result[metric].max()) > 1e5  # the diverged cell really is off the chart
    for ax in data_axes(fig):
        low, high = ax.get_ylim()
        assert low == 0.0 and peak <= high <= 1.25 * peak
    dense = next(ax for ax in fig.axes if ax.get_title() == "dense")
    notes = [t.get_text() for t in dense.texts]
    assert any(t.startswith("dps: off-scale from frame") for t in notes)
    assert "off-scale (clipped at the edge)" in legend_colors(fig)


def test_other_axes_limited_by_the_strategies_on_scale(drawn, result):
    rmse_peak = on_scale_peak(result, "rmse")
    for ax in data_axes(drawn["spread_skill"]):
        assert ax.get_xlim()[1] <= 1.25 * rmse_peak
    time_mean = result["rmse"].mean(("trajectory", "time"))
    on_scale = float(time_mean.where(time_mean < 1e3).max())
    for ax in data_axes(drawn["accuracy_cost"]):
        assert on_scale <= ax.get_ylim()[1] <= 1.5 * on_scale
    for ax in data_axes(drawn["physics_time"]):
        assert ax.get_ylim()[1] < 100.0  # the diverged diagnostic is 1e7
    for ax in data_axes(drawn["rank_histograms"]):
        assert ax.get_ylim()[1] < 3.0  # the diverged histogram reaches 2.5 x (N + 1)


def test_no_interval_below_zero(drawn, result):
    # without clipping the enkf band (2 trajectories: t quantile 12.7) reaches below 0
    mean, hw = stats.mean_band(result["rmse"].sel(strategy="enkf", regime="dense").values, 0.95)
    assert np.nanmin(mean - hw) < 0
    for kind in ("rmse_time", "crps_time"):
        bands = [
            c for ax in drawn[kind].axes for c in ax.collections if isinstance(c, PolyCollection)
        ]
        assert bands
        for band in bands:
            for path in band.get_paths():
                assert path.vertices[:, 1].min() >= 0.0
    bars = [c for ax in drawn["accuracy_cost"].axes for c in ax.collections]
    bars = [c for c in bars if isinstance(c, LineCollection)]
    assert bars
    for bar in bars:
        for segment in bar.get_segments():
            assert np.asarray(segment)[:, 1].min() >= 0.0


def test_observed_frames_marked_without_merging(drawn):
    fig = drawn["rmse_time"]
    panels = {ax.get_title(): ax for ax in fig.axes}

    def ticks(ax) -> int:
        return sum(line.get_xdata().size for line in ax.lines if line.get_marker() == "|")

    assert ticks(panels["dense"]) == 0  # every frame observed: said in words
    assert "observed: every frame" in [t.get_text() for t in panels["dense"].texts]
    assert ticks(panels["sparse-gappy"]) == HORIZON // 8


def test_narrow_log_range_has_readable_ticks(drawn):
    ax = data_axes(drawn["accuracy_cost"])[0]
    low, high = ax.get_xlim()
    assert ax.get_xscale() == "log" and high / low >= 3.0
    labels = [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]
    labels = [t for t in labels if t]
    assert len(labels) >= 2 and len(set(labels)) == len(labels)
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True))


def test_summary_cells(drawn):
    ax = drawn["summary"].axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[STRATEGIES.index("controller")] == "controller\nlook-ahead 3 frames"
    assert rows[STRATEGIES.index("vc")] == "vc\nlook-ahead ?"
    texts = {  # the main text of each cell (its interval, in brackets, sits below it)
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in ax.texts
        if not t.get_text().startswith("[")
    }
    enkf = STRATEGIES.index("enkf")
    assert all(texts[(enkf, r)].endswith("▲") for r in range(len(REGIMES)))
    d_s, d_r = STRATEGIES.index(DIVERGED[0]), REGIMES.index(DIVERGED[1])
    assert texts[(d_s, d_r)].endswith("▼")
    assert texts[(STRATEGIES.index(FAILED[0]), REGIMES.index(FAILED[1]))] == "failed"
    assert texts[(0, 0)] == "reference"


def test_skill_scores_by_hand(result):
    scores = stats.skill_scores(result, "crps")
    per_traj = result["crps"].mean("time")
    a = per_traj.sel(strategy="enkf", regime="random").values
    b = per_traj.sel(strategy="forecast", regime="random").values
    s, r = STRATEGIES.index("enkf"), REGIMES.index("random")
    assert scores.skill[s, r] == pytest.approx(1 - a.mean() / b.mean())
    d = b - a
    hw = stats.critical_value(2) * d.std(ddof=1) / np.sqrt(2)
    assert scores.low[s, r] == pytest.approx((d.mean() - hw) / b.mean())
    assert scores.significant[s, r] == 1
    finite = np.isfinite(scores.high)
    assert (scores.high[finite] <= 1.0).all()  # a non-negative score: skill never above 1
    assert scores.failed[STRATEGIES.index("vc"), r] and np.isnan(
        scores.skill[STRATEGIES.index("vc"), r]
    )


def test_titles_use_correct_plurals(tmp_path: Path):
    one = saved_result(tmp_path, trajectories=1)
    title = figures.draw_metric_time(one, "rmse")._suptitle.get_text()
    assert "1 trajectory)" in title and "4 members" in title
    assert "trajectories" not in title


def test_lookahead_coordinate_is_optional(result):
    fig = figures.draw_summary(result.drop_vars("lookahead"))
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert all(r.endswith("look-ahead ?") for r in rows)


def test_make_figures(result, tmp_path: Path):
    paths = figures.make_figures(result, tmp_path)
    assert paths[0].name == "summary.png"
    names = {p.stem for p in paths}
    assert {"hovmoller_sparse-gappy", "rmse_time", "accuracy_cost", "pit_ecdf"} <= names
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert figures.figure_caption(p) != p.stem.replace("_", " ")


def test_kolmogorov_snapshots(tmp_path: Path):
    ds = saved_result(tmp_path, pde="kolmogorov")
    fig = figures.draw_vorticity_snapshots(ds, regime="dense")
    texts = all_texts(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert "truth" in titles and all(s in titles for s in STRATEGIES)
    assert any("vorticity" in t for t in texts)


def test_claims_script_uses_the_palette(result):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "controller_claims.py"
    spec = importlib.util.spec_from_file_location("controller_claims", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    long = result.sel(strategy=["forecast", "controller", "dps"], regime=["dense", "sparse-gappy"])
    fig = module.draw_long_horizon(long)
    colors = legend_colors(fig)
    assert {s: colors[s] for s in long["strategy"].values} == {
        s: PALETTE[s] for s in ("forecast", "controller", "dps")
    }
