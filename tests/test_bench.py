"""The one-call benchmark: grid, scoring, persistence, resume after a kill, executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ardm_infer import metrics
from ardm_infer.bench import StrategySpec, benchmark, score, strategy_spec
from ardm_infer.bench.core import CellTask, derived_seed, run_cell
from ardm_infer.strategies import get_strategy

TINY = dict(horizon=2, trajectories=1, members=2, progress=False, initial="exact", tuned=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    ds = benchmark(
        "ks", strategies=["forecast", "enkf"], regimes=["sparse", "dense"], out=out, **TINY
    )
    return ds, out


def test_one_call_fills_the_strategy_regime_grid(tiny):
    ds, out = tiny
    assert list(ds.strategy.values) == ["forecast", "enkf"]
    assert list(ds.regime.values) == ["sparse", "dense"]
    for name in ("rmse", "crps", "crps_fair", "spread", "corr", "spectrum_error", "physics"):
        assert ds[name].dims == ("strategy", "regime", "trajectory", "time")
        assert np.isfinite(ds[name].values).all(), name
    assert ds.rank_hist.sum("rank").values.tolist() == [[2 * 256] * 2] * 2
    assert (ds.ms_per_frame > 0).all()
    assert (ds.denoiser_calls.sel(strategy="forecast") == 2 * 2 * 16).all()
    assert json.loads(ds.attrs["config"])["regimes"] == ["sparse", "dense"]
    assert ds.attrs["code_version"]
    assert (out / "results.nc").exists() and len(list((out / "cells").glob("*.nc"))) == 4


def test_scores_match_the_metrics_module():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(2, 3, 1, 16, generator=g)
    ens = truth + 0.3 * torch.randn(5, 2, 3, 1, 16, generator=g)

    class Identity:
        def denormalise(self, x):
            return x

    s = score("ks", truth, ens, None, Identity(), torch.Generator().manual_seed(1))
    expected = metrics.rmse(truth.double(), ens.double(), dims=(2, 3))
    torch.testing.assert_close(s["rmse"], expected)
    crps = metrics.crps_ensemble(truth.double(), ens.double()).mean(dim=(2, 3))
    torch.testing.assert_close(s["crps"], crps)
    var = ens.double().var(dim=0).mean(dim=(2, 3))
    torch.testing.assert_close(s["spread"], var.sqrt())
    assert s["rank_hist"].sum() == 2 * 3 * 16
    assert s["high_corr_time"].shape == (2,)


def test_weighted_scores_use_the_weights():
    truth = torch.zeros(1, 1, 1, 4)
    ens = torch.stack([torch.zeros(1, 1, 1, 4), torch.ones(1, 1, 1, 4)])
    lw = [torch.log(torch.tensor([[1.0], [1e-12]]))]

    class Identity:
        def denormalise(self, x):
            return x

    s = score("ks", truth, ens, lw, Identity(), torch.Generator().manual_seed(0))
    assert s["rmse"].item() < 1e-6
    unweighted = score("ks", truth, ens, None, Identity(), torch.Generator().manual_seed(0))
    assert unweighted["rmse"].item() == pytest.approx(0.5)


def test_strategies_as_names_configs_and_labelled_tuples():
    vc = get_strategy("vc").Config(iterations=1, window=1)
    specs = [
        strategy_spec("dps", "ks"),
        strategy_spec(vc, "ks"),
        strategy_spec(("dps-half", "dps", get_strategy("dps").Config(scale=0.5)), "ks"),
        strategy_spec("controller", "ks"),
    ]
    assert [s.label for s in specs] == ["dps", "vc", "dps-half", "controller"]
    assert specs[1].config.iterations == 1
    assert specs[3].config.controller == "ks"
    with pytest.raises(ValueError, match="did you mean"):
        strategy_spec("dsp", "ks")
    with pytest.raises(TypeError, match="a strategy is"):
        strategy_spec(3, "ks")
    with pytest.raises(ValueError, match="repeat"):
        benchmark("ks", strategies=["dps", "dps"], regimes=["sparse"], **TINY)


def test_bad_inputs_fail_before_any_work():
    with pytest.raises(ValueError, match="unknown pde"):
        benchmark("navier", **TINY)
    with pytest.raises(ValueError, match="preset"):
        benchmark("ks", regimes=["spares"], **TINY)
    with pytest.raises(ValueError, match="resume"):
        benchmark("ks", resume=True, **TINY)
    with pytest.raises(ValueError, match="quick"):
        benchmark("ks", preset="huge", **TINY)


def test_configured_strategy_changes_the_result():
    dps = get_strategy("dps").Config
    ds = benchmark(
        "ks",
        strategies=[("dps-0", "dps", dps(scale=0.0)), ("dps-1", "dps", dps(scale=2.0))],
        regimes=["dense"],
        **TINY,
    )
    a = ds.mean_field.sel(strategy="dps-0").values
    b = ds.mean_field.sel(strategy="dps-1").values
    assert not np.array_equal(a, b)


def _cells_equal(a, b):
    for name in ("rmse", "crps", "spread", "mean_field", "rank_hist"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_resume_reuses_finished_cells_only(tiny, tmp_path):
    ds, out = tiny
    again = benchmark(
        "ks",
        strategies=["forecast", "enkf"],
        regimes=["sparse", "dense"],
        out=out,
        resume=True,
        **TINY,
    )
    assert again.attrs["cells_reused"] == 4
    _cells_equal(ds, again)
    # A different configuration never reuses the files.
    other = benchmark(
        "ks", strategies=["forecast"], regimes=["sparse"], out=out, resume=True, seed=1, **TINY
    )
    assert other.attrs["cells_reused"] == 0


def test_cell_result_is_independent_of_the_process(tiny):
    ds, _ = tiny
    spec = strategy_spec("enkf", "ks")
    task = CellTask("ks", "ks", "dense", spec, 2, 1, 2, 0, 0, (1, 2))
    cell = run_cell(task)
    np.testing.assert_array_equal(
        cell.rmse.values[0, 0], ds.rmse.sel(strategy="enkf", regime="dense").values
    )
    assert derived_seed(0, "run", "dense") == derived_seed(0, "run", "dense")
    assert derived_seed(0, "run", "dense") != derived_seed(1, "run", "dense")


def test_workers_give_identical_results(tiny):
    ds, _ = tiny
    par = benchmark(
        "ks",
        strategies=["forecast", "enkf"],
        regimes=["sparse", "dense"],
        workers=2,
        threads=torch.get_num_threads(),
        **TINY,
    )
    _cells_equal(ds, par)


def test_ray_executor_gives_identical_results(tiny):
    ds, _ = tiny
    par = benchmark(
        "ks",
        strategies=["forecast", "enkf"],
        regimes=["sparse", "dense"],
        executor="ray",
        threads=torch.get_num_threads(),
        **TINY,
    )
    _cells_equal(ds, par)


def test_killed_run_resumes_without_loss(tmp_path):
    """Kill the CLI after its first cell is saved; --resume finishes with identical numbers."""
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "ardm_infer.cli",
        "bench",
        "--pde",
        "ks",
        "--strategies",
        "forecast,enkf",
        "--regimes",
        "sparse,dense,random",
        "--horizon",
        "3",
        "--trajectories",
        "1",
        "--members",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--no-figures",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if list((out / "cells").glob("*.nc")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = list((out / "cells").glob("*.nc"))
    assert 1 <= len(saved) < 6
    assert not (out / "results.nc").exists()
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    from ardm_infer.bench.report import load_results

    resumed = load_results(out / "results.nc")
    assert resumed.attrs["cells_reused"] >= len(saved)
    fresh = benchmark(
        "ks",
        strategies=["forecast", "enkf"],
        regimes=["sparse", "dense", "random"],
        horizon=3,
        trajectories=1,
        members=2,
        progress=False,
        threads=1,
    )
    _cells_equal(fresh, resumed)


def test_short_horizon_gappy_regime_is_a_clear_error(monkeypatch):
    import ardm_infer.bench.core as core

    monkeypatch.setattr(core, "run_cell", None)  # must fail before running any cell
    with pytest.raises(ValueError, match="observes no frame"):
        benchmark("ks", strategies=["forecast"], regimes=["sparse-gappy"], **TINY)


def test_spec_is_a_dataclass_with_label():
    s = StrategySpec("a", "forecast")
    assert strategy_spec(s, "ks").config is not None


def test_resume_recomputes_cells_of_other_checkpoints(tiny, monkeypatch):
    """A retrained checkpoint (other sha256 in its card) never reuses old cells."""
    import ardm_infer.bench.cells as cells

    _, out = tiny
    args = dict(strategies=["forecast", "enkf"], regimes=["sparse", "dense"], out=out)
    assert benchmark("ks", resume=True, **args, **TINY).attrs["cells_reused"] == 4
    real = cells.artifact_hashes
    monkeypatch.setattr(
        cells,
        "artifact_hashes",
        lambda ardm, spec, pde=None: {**real(ardm, spec, pde), "ardm": "retrained"},
    )
    assert benchmark("ks", resume=True, **args, **TINY).attrs["cells_reused"] == 0
    hashes = real("ks", strategy_spec("controller", "ks"))
    assert hashes["ardm"] and hashes["controller"]


def test_names_survive_a_round_trip_through_cell_files(tmp_path):
    """Regime names of different lengths, combined from cell files, are written unclipped."""
    from ardm_infer.bench.report import load_results

    args = dict(strategies=["forecast"], regimes=["dense", "dense-gappy"], out=tmp_path)
    tiny = {**TINY, "horizon": 8}
    benchmark("ks", **args, **tiny)
    again = benchmark("ks", resume=True, **args, **tiny)
    assert again.attrs["cells_reused"] == 2
    on_disk = load_results(tmp_path / "results.nc")
    assert list(on_disk.regime.values) == ["dense", "dense-gappy"]
    assert list(on_disk.strategy.values) == ["forecast"]


# ----------------------------------------------------------------------------- systems, failures


def test_lorenz96_runs_the_solver_through_the_same_cells():
    """No ARDM ships for Lorenz-96: the solver is the process; guided strategies fail by name."""
    from ardm_infer.data import default_data_config, load_dataset
    from ardm_infer.systems.lorenz96 import mean_energy

    ds = benchmark(
        "lorenz96",
        strategies=["forecast", "dps", "enkf"],
        regimes=["dense", "sparse"],
        horizon=4,
        trajectories=2,
        members=3,
        progress=False,
        initial="exact",
    )
    config = json.loads(ds.attrs["config"])
    assert ds.attrs["pde"] == "lorenz96" and config["ardm"] == "solver"
    assert ds.sizes["x"] == 40 and ds.attrs["cells_failed"] == 2
    assert ds.failed.sel(strategy="dps").values.all()
    for reason in ds.failure.sel(strategy="dps").values:
        assert reason.startswith("ValueError: dps") and "ARDM" in str(reason)
    assert np.isnan(ds.rmse.sel(strategy="dps").values).all()
    for name in ("forecast", "enkf"):
        assert not ds.failed.sel(strategy=name).values.any()
        assert list(ds.failure.sel(strategy=name).values) == ["", ""]
        assert np.isfinite(ds.rmse.sel(strategy=name).values).all()
    # the deterministic solver from the true context: only float32 round-off separates them
    assert float(ds.rmse.sel(strategy="forecast").max()) < 1e-4
    truth = load_dataset(default_data_config("lorenz96")).test[:2, 1:5, 0].double()
    np.testing.assert_allclose(ds.truth_physics.values, mean_energy(truth).numpy(), rtol=1e-5)


class _Explodes:
    """A strategy that runs forecast and raises on its second frame; declares a look-ahead."""

    name = "explodes"

    @dataclass(frozen=True)
    class Config:
        horizon_seen: int = 2

    def __init__(self):
        self.inner = get_strategy("forecast")
        self.steps = 0

    def lookahead(self, config):
        return config.horizon_seen

    # Delegation whatever the signatures of the strategy contract (forecast reads no config).
    def init(self, *args, **kwargs):
        self.steps = 0
        return self.inner.init(*args, **kwargs)

    def step(self, *args, **kwargs):
        self.steps += 1
        if self.steps > 1:
            raise FloatingPointError("ensemble non-finite at frame 1 (test)")
        return self.inner.step(*args, **kwargs)


@pytest.fixture
def explodes():
    from ardm_infer.strategies.base import register, unregister

    register(_Explodes)
    try:
        yield
    finally:
        unregister("explodes")


def test_a_failing_cell_is_recorded_and_the_others_run(explodes, tmp_path, capsys):
    from ardm_infer.bench.report import load_results

    args = dict(strategies=["forecast", "explodes"], regimes=["dense", "sparse"], out=tmp_path)
    ds = benchmark("ks", **args, **TINY)
    err = capsys.readouterr().err
    assert err.count("FAILED (FloatingPointError: ensemble non-finite at frame 1 (test))") == 2
    assert ds.failed.values.tolist() == [[False, False], [True, True]]
    assert ds.attrs["cells_failed"] == 2
    assert np.isfinite(ds.rmse.sel(strategy="forecast").values).all()
    assert np.isnan(ds.rmse.sel(strategy="explodes").values).all()
    assert (ds.rank_hist.sel(strategy="explodes") == 0).all()
    assert not ds.blow_up.sel(strategy="explodes").values.any()
    on_disk = load_results(tmp_path / "results.nc")
    assert str(on_disk.failure.sel(strategy="explodes", regime="sparse").values) == (
        "FloatingPointError: ensemble non-finite at frame 1 (test)"
    )
    assert str(on_disk.failure.sel(strategy="forecast", regime="dense").values) == ""
    # resume reuses the finished cells and retries the failed ones
    again = benchmark("ks", resume=True, **args, **TINY)
    assert again.attrs["cells_reused"] == 2
    assert capsys.readouterr().err.count("failed last time") == 2


def test_lookahead_names_and_configs_are_recorded_per_strategy(explodes, tmp_path):
    from ardm_infer.bench.core import strategy_configs
    from ardm_infer.bench.report import load_results

    config = _Explodes.Config(horizon_seen=5)
    ds = benchmark(
        "ks",
        strategies=["forecast", ("boom", "explodes", config)],
        regimes=["dense"],
        out=tmp_path,
        **TINY,
    )
    forecast = get_strategy("forecast")
    declared = getattr(forecast, "lookahead", None)
    expected = -1 if declared is None else int(declared(forecast.Config()))
    assert ds.lookahead.sel(strategy="forecast").item() == expected
    assert ds.lookahead.sel(strategy="boom").item() == 5
    assert ds.lookahead.dims == ("strategy",)
    configs = strategy_configs(load_results(tmp_path / "results.nc"))
    assert configs["boom"] == {
        "name": "explodes",
        "config": {"horizon_seen": 5},
        "lookahead": 5,
        "regimes": {"dense": {"source": "given", "config": {"horizon_seen": 5}, "lookahead": 5}},
    }
    assert configs["forecast"]["name"] == "forecast"


def test_progress_in_a_log_is_one_plain_line_per_cell(capsys):
    args = dict(strategies=["forecast"], regimes=["dense", "sparse"])
    benchmark("ks", **args, **{**TINY, "progress": True})
    err = capsys.readouterr().err  # captured: not a terminal
    lines = [line for line in err.splitlines() if line.startswith("bench ks")]
    assert len(lines) == 2, err
    assert lines[0].startswith("bench ks: cell 1/2 forecast @ dense done in ")
    assert lines[1].startswith("bench ks: cell 2/2 forecast @ sparse done in ")
    assert all("ETA" in line for line in lines)
    assert "\r" not in err and "\x1b" not in err


def test_device_is_recorded_and_checked():
    ds = benchmark("ks", strategies=["forecast"], regimes=["dense"], device="cpu", **TINY)
    assert json.loads(ds.attrs["config"])["device"] == "cpu"
    assert json.loads(ds.attrs["config"])["strategies"][0]["name"] == "forecast"
    with pytest.raises(ValueError, match="device"):
        benchmark("ks", strategies=["forecast"], regimes=["dense"], device="abacus", **TINY)


def test_empty_or_mistyped_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="strategies is empty"):
        benchmark("ks", strategies=[], regimes=["dense"], **TINY)
    with pytest.raises(ValueError, match="regimes is empty"):
        benchmark("ks", strategies=["forecast"], regimes=[], **TINY)
    with pytest.raises(TypeError, match="members"):
        benchmark("ks", strategies=["forecast"], regimes=["dense"], **{**TINY, "members": 2.5})
    with pytest.raises(ValueError, match="progress"):
        benchmark("ks", strategies=["forecast"], regimes=["dense"], **{**TINY, "progress": "x"})
    with pytest.raises(ValueError, match="models 'ks', not pde='kolmogorov'"):
        benchmark("kolmogorov", ardm="ks", strategies=["forecast"], regimes=["dense"], **TINY)
