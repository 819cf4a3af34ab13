"""The comparison rule of benchmarks/tuned_baselines.py: paired intervals over trajectories."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr


def _script():
    path = Path(__file__).parents[1] / "benchmarks" / "tuned_baselines.py"
    spec = importlib.util.spec_from_file_location("tuned_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(forecast, other):
    rmse = np.stack([np.asarray(forecast), np.asarray(other)])[:, None, :, None]
    rmse = np.repeat(rmse, 4, axis=-1)  # (strategy, regime, trajectory, time)
    return xr.Dataset(
        {"rmse": (("strategy", "regime", "trajectory", "time"), rmse)},
        coords={"strategy": ["forecast", "enkf"], "regime": ["sparse"], "time": [1, 2, 3, 4]},
    )


def test_a_strategy_beats_the_forecast_only_with_a_paired_interval_above_zero():
    beats = _script().paired_beats
    # consistently lower on every trajectory: the paired difference is far from zero
    assert beats(
        _result([0.3, 0.1, 0.2, 0.4], [0.2, 0.05, 0.15, 0.3]), "enkf", "forecast", "sparse"
    )
    # lower on average, but one trajectory the other way: the interval straddles zero
    assert not beats(
        _result([0.3, 0.1, 0.2, 0.4], [0.1, 0.2, 0.1, 0.2]), "enkf", "forecast", "sparse"
    )
    # higher is never a win, and one trajectory is too few for an interval
    assert not beats(_result([0.1, 0.1, 0.1], [0.2, 0.3, 0.25]), "enkf", "forecast", "sparse")
    assert not beats(_result([0.5], [0.1]), "enkf", "forecast", "sparse")


def test_the_second_half_is_the_later_half_of_the_frames():
    ds = _result([1.0], [1.0])
    ds["rmse"][:] = np.arange(4.0)[None, None, None, :]
    assert _script().second_half_rmse(ds, "enkf", "sparse") == 2.5


def test_beats_reference_names_the_best_and_agrees_with_the_script():
    from ardm_infer.bench.stats import beats_reference

    clear = _result([0.3, 0.1, 0.2, 0.4], [0.2, 0.05, 0.15, 0.3])
    mixed = _result([0.3, 0.1, 0.2, 0.4], [0.1, 0.2, 0.1, 0.2])
    assert beats_reference(clear) == {"sparse": ("enkf", True)}
    assert beats_reference(mixed) == {"sparse": ("enkf", False)}
    script = _script()
    for ds in (clear, mixed):
        assert beats_reference(ds)["sparse"][1] == script.paired_beats(
            ds, "enkf", "forecast", "sparse"
        )
    assert beats_reference(clear, reference="none") == {"sparse": (None, False)}
