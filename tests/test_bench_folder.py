"""Result folders that can be trusted: checksummed cells, one writer, one configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import xarray as xr

from ardm_infer.bench import benchmark
from ardm_infer.bench.folder import ResultFolder, ResultFolderError, data_checksum
from ardm_infer.bench.report import load_results

TINY = dict(horizon=2, trajectories=1, members=2, progress=False, initial="exact", tuned=False)
GRID = dict(strategies=["forecast", "enkf"], regimes=["dense"])


def _agree(out):
    """config.json and results.nc describe the same run."""
    config = json.loads((out / "config.json").read_text())
    results = load_results(out / "results.nc")
    assert json.loads(results.attrs["config"]) == config
    return config


def test_checksum_survives_the_round_trip_and_sees_any_edit(tmp_path):
    ds = benchmark("ks", out=tmp_path, **GRID, **TINY)
    path = sorted((tmp_path / "cells").glob("enkf__*.nc"))[0]
    with xr.open_dataset(path, engine="h5netcdf") as cell:
        cell = cell.load()
    assert cell.attrs["checksum"] == data_checksum(cell)
    assert cell.failure.dtype.kind in "OU"  # strings come back as another dtype, same sum
    edited = cell.copy(deep=True)
    edited["rank_hist"][..., 0] += 1
    assert data_checksum(edited) != cell.attrs["checksum"]
    retitled = cell.copy()
    retitled.attrs["code_version"] = "forged"
    assert data_checksum(retitled) != cell.attrs["checksum"]
    assert ds.attrs["cells_reused"] == 0


def test_a_forged_cell_is_recomputed_on_resume(tmp_path, capsys):
    first = benchmark("ks", out=tmp_path, **GRID, **TINY)
    path = sorted((tmp_path / "cells").glob("enkf__*.nc"))[0]
    with xr.open_dataset(path, engine="h5netcdf") as cell:
        cell = cell.load()
    cell["rmse"][:] = 1e-9  # a forged score, attributes (and the old checksum) kept
    cell.to_netcdf(path, engine="h5netcdf")
    capsys.readouterr()
    again = benchmark("ks", out=tmp_path, resume=True, **GRID, **TINY)
    err = capsys.readouterr().err
    assert "does not match its checksum" in err and path.name in err
    assert again.attrs["cells_reused"] == 1
    np.testing.assert_array_equal(again.rmse.values, first.rmse.values)
    assert float(again.rmse.min()) > 1e-6
    # the recomputed file is intact again: a third run reuses both cells silently
    third = benchmark("ks", out=tmp_path, resume=True, **GRID, **TINY)
    assert third.attrs["cells_reused"] == 2
    assert "checksum" not in capsys.readouterr().err
    _agree(tmp_path)


def test_a_cell_without_checksum_is_recomputed(tmp_path, capsys):
    benchmark("ks", out=tmp_path, **GRID, **TINY)
    path = sorted((tmp_path / "cells").glob("forecast__*.nc"))[0]
    with xr.open_dataset(path, engine="h5netcdf") as cell:
        cell = cell.load()
    del cell.attrs["checksum"]
    cell.to_netcdf(path, engine="h5netcdf")
    again = benchmark("ks", out=tmp_path, resume=True, **GRID, **TINY)
    assert again.attrs["cells_reused"] == 1
    assert "has no checksum" in capsys.readouterr().err


_HOLDER = textwrap.dedent(
    """
    import pathlib, sys, time
    import ardm_infer.bench.core as core

    out, go = sys.argv[1], pathlib.Path(sys.argv[2])
    real = core.run_cell

    def gated(task):  # hold the folder until the test says go
        while not go.exists():
            time.sleep(0.05)
        return real(task)

    core.run_cell = gated
    core.benchmark("ks", strategies=["forecast"], regimes=["dense"], horizon=2,
                   trajectories=1, members=2, progress=False, out=out, initial="exact",
                   tuned=False)
    """
)


def test_a_second_run_on_a_busy_folder_is_refused(tmp_path):
    out, go = tmp_path / "run", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out), str(go)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lock = out / ".lock"
        deadline = time.time() + 240
        while time.time() < deadline and holder.poll() is None:
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.05)
        assert holder.poll() is None, holder.communicate()[1].decode()
        assert json.loads(lock.read_text())["pid"] == holder.pid
        args = dict(strategies=["forecast"], regimes=["dense"], out=out, **TINY)
        with pytest.raises(ResultFolderError, match="in use by another benchmark run") as err:
            benchmark("ks", **args)
        assert str(out) in str(err.value) and f"pid {holder.pid}" in str(err.value)
        with pytest.raises(ResultFolderError, match="in use"):
            benchmark("ks", resume=True, **args)
        go.touch()
        _, stderr = holder.communicate(timeout=300)
        assert holder.returncode == 0, stderr.decode()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not lock.exists()
    again = benchmark("ks", resume=True, **args)
    assert again.attrs["cells_reused"] == 1
    _agree(out)


def test_a_second_run_in_the_same_process_is_refused(tmp_path):
    config = {"run": 1}
    with ResultFolder(tmp_path).open(config):
        with pytest.raises(ResultFolderError, match="in use"):
            ResultFolder(tmp_path).open(config)
    with ResultFolder(tmp_path).open(config):  # released on exit
        pass


def test_the_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    script = "import os; print(os.getpid())"
    dead = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    pid = int(dead.stdout)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": "here", "started": "then"}))
    ds = benchmark("ks", strategies=["forecast"], regimes=["dense"], out=tmp_path, **TINY)
    assert ds.attrs["cells_reused"] == 0
    assert not (tmp_path / ".lock").exists()


def test_another_configuration_is_refused_unless_resume_or_overwrite(tmp_path):
    benchmark("ks", out=tmp_path, seed=0, **GRID, **TINY)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ResultFolderError, match=r"holds another run .*seed") as err:
        benchmark("ks", out=tmp_path, seed=1, **GRID, **TINY)
    assert str(tmp_path) in str(err.value) and "resume=True" in str(err.value)
    assert (tmp_path / "config.json").read_text() == before  # nothing touched
    assert _agree(tmp_path)["seed"] == 0
    assert not (tmp_path / ".lock").exists()
    # the same configuration again is allowed (recomputed) without resume
    benchmark("ks", out=tmp_path, seed=0, **GRID, **TINY)
    # overwrite replaces the other run: its cells go, config and results agree
    replaced = benchmark("ks", out=tmp_path, seed=1, overwrite=True, **GRID, **TINY)
    assert replaced.attrs["seed"] == 1
    assert len(list((tmp_path / "cells").glob("*.nc"))) == 2
    assert _agree(tmp_path)["seed"] == 1
    with pytest.raises(ValueError, match="pick one"):
        benchmark("ks", out=tmp_path, resume=True, overwrite=True, **GRID, **TINY)


def test_a_run_of_another_configuration_removes_the_old_results_first(tmp_path):
    """resume=True with another configuration: results.nc of the old run never stays beside
    the config.json of the new one, even if the new run dies before finishing."""
    import ardm_infer.bench.core as core

    benchmark("ks", out=tmp_path, seed=0, **GRID, **TINY)
    real = core.run_cell

    def dies(task):
        raise KeyboardInterrupt

    core.run_cell = dies
    try:
        with pytest.raises(KeyboardInterrupt):
            benchmark("ks", out=tmp_path, seed=1, resume=True, **GRID, **TINY)
    finally:
        core.run_cell = real
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 1
    assert not (tmp_path / "results.nc").exists()
    assert not (tmp_path / ".lock").exists()


def test_out_that_is_a_file_or_read_only_is_a_clear_error(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ResultFolderError, match="not a folder"):
        benchmark("ks", strategies=["forecast"], regimes=["dense"], out=a_file, **TINY)
    below_a_file = a_file / "run"  # cannot be created, whoever runs the test
    with pytest.raises(ResultFolderError, match="cannot write to the out folder"):
        benchmark("ks", strategies=["forecast"], regimes=["dense"], out=below_a_file, **TINY)
