"""The one-call benchmark: grid, scoring, persistence, resume after a kill, executors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ardm_infer import metrics
from ardm_infer.bench import StrategySpec, benchmark, score, strategy_spec
from ardm_infer.bench.core import CellTask, derived_seed, run_cell
from ardm_infer.strategies import get_strategy

TINY = dict(horizon=2, trajectories=1, members=2, progress=False)


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
