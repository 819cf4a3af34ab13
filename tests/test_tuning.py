"""Tuning on validation trajectories: search spaces, the study, resuming, the tuned file."""

from __future__ import annotations

import math

import optuna  # noqa: F401  (the tuning extra is part of the test extra)
import pytest
import torch

from ardm_infer import assimilate, make_problem
from ardm_infer.ardm import analytic_ardm
from ardm_infer.artifacts import save_json_artifact
from ardm_infer.dynamics import LinearGaussianTwin
from ardm_infer.metrics import crps_ensemble
from ardm_infer.strategies import get_strategy
from ardm_infer.tuning import (
    SEARCH_SPACES,
    TUNED_KIND,
    best_trial,
    check_space,
    load_tuned,
    resolve_tuned,
    run_study,
    tuned_entry,
    validation_evaluator,
)


class _First:
    def __init__(self, pick: int) -> None:
        self.pick = pick

    def suggest_float(self, name, low, high, *, log=False):
        return low if self.pick == 0 else high

    def suggest_int(self, name, low, high, *, log=False):
        return low if self.pick == 0 else high

    def suggest_categorical(self, name, choices):
        return choices[self.pick % len(choices)]


@pytest.mark.parametrize("name", sorted(SEARCH_SPACES))
def test_every_search_space_builds_valid_configs(name):
    config_type = get_strategy(name).Config
    for pick in (0, 1):
        overrides = SEARCH_SPACES[name](_First(pick), 256)
        check_space(name, config_type, overrides)
        if name == "controller":
            overrides = {**overrides, "controller": "ks"}
        config_type(**overrides)  # every corner of the space is a valid Config


def test_trust_counts_pruned_trials_but_needs_some_complete_ones():
    from ardm_infer.tuning import MIN_COMPLETE_TRIALS, MIN_TRUSTED_TRIALS, is_trusted

    assert is_trusted(MIN_TRUSTED_TRIALS, MIN_COMPLETE_TRIALS)
    assert not is_trusted(MIN_TRUSTED_TRIALS - 1, MIN_TRUSTED_TRIALS - 1)
    assert not is_trusted(MIN_TRUSTED_TRIALS + 20, MIN_COMPLETE_TRIALS - 1)


def test_a_space_naming_a_missing_field_is_refused():
    with pytest.raises(ValueError, match="not fields of its Config"):
        check_space("enkf", get_strategy("enkf").Config, {"inflation": 1.1, "inflate": 2})


def test_best_trial_breaks_near_ties_by_rmse_and_skips_failures():
    values = [(0.100, 0.30, {}), (0.1004, 0.20, {}), (0.12, 0.10, {}), (math.nan, 0.0, {})]
    assert best_trial(values) == 1  # within 0.5 % of the best CRPS, lower RMSE
    assert best_trial(values[:1] + values[2:]) == 0
    with pytest.raises(ValueError, match="no trial"):
        best_trial([(math.inf, 1.0, {})])


@pytest.fixture(scope="module")
def twin_objective():
    """Time-mean CRPS of the EnKF on the linear twin as a function of its inflation, on two
    validation chunks (trajectories 0-1 and 2-3)."""
    twin = LinearGaussianTwin.default(dim=8)
    ardm = analytic_ardm(twin)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(4, 8, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 12, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "stride=2, every=1, sigma=0.5", g)

    def evaluate(overrides, chunk):
        rows = slice(2 * chunk, 2 * chunk + 2)
        sub = make_problem(
            frames[rows],
            1,
            "stride=2, every=1, sigma=0.5",
            torch.Generator().manual_seed(4 + chunk),
        )
        res = assimilate(
            ardm, sub, "enkf", members=6, generator=torch.Generator().manual_seed(5), **overrides
        )
        crps = crps_ensemble(sub.truth, res.ensemble).mean().item()
        rmse = (res.ensemble.mean(0) - sub.truth).square().mean().sqrt().item()
        return crps, rmse

    return problem, evaluate


def test_the_tuner_finds_what_a_fine_grid_finds(twin_objective, tmp_path):
    _, evaluate = twin_objective

    def space(trial, points):
        return {"inflation": trial.suggest_float("inflation", 1.0, 3.0)}

    grid = [1.0 + 0.05 * i for i in range(41)]
    scores = [sum(evaluate({"inflation": a}, c)[0] for c in (0, 1)) / 2 for a in grid]
    best_grid = min(scores)
    result = run_study(
        "twin-enkf",
        tmp_path / "tune.db",
        "enkf",
        get_strategy("enkf").Config,
        evaluate,
        chunks=2,
        frame_points=8,
        trials=30,
        seconds=None,
        progress=False,
        space=space,
    )
    # the objective is deterministic: the tuner's best is as good as the grid's best
    assert result.crps <= best_grid * 1.01
    assert result.complete >= 15  # the median pruner stops some, not most
    worst = max(scores)
    assert worst > best_grid * 1.05  # the inflation matters on this problem


def _inflation_space(trial, points):
    return {"inflation": trial.suggest_float("inflation", 1.0, 2.0)}


def _study_args(name, tmp_path, evaluate):
    return (name, tmp_path / "tune.db", "enkf", get_strategy("enkf").Config, evaluate)


_SMALL = dict(chunks=1, frame_points=8, seconds=None, progress=False, space=_inflation_space)


def test_a_study_resumes_from_its_storage(twin_objective, tmp_path):
    _, evaluate = twin_objective
    args = _study_args("resume", tmp_path, evaluate)
    first = run_study(*args, trials=4, **_SMALL)
    again = run_study(*args, trials=4, **_SMALL)
    more = run_study(*args, trials=6, **_SMALL)
    assert first.trials == again.trials == 4 and again.seconds < first.seconds
    assert more.trials == 6
    empty = run_study(*_study_args("empty", tmp_path, evaluate), trials=0, **_SMALL)
    assert empty is None  # a budget of 0 on a new study exports nothing


def test_a_setting_that_fails_the_stability_check_gives_way_to_the_next(twin_objective, tmp_path):
    _, evaluate = twin_objective
    args = _study_args("confirm", tmp_path, evaluate)
    kwargs = dict(trials=6, **_SMALL)
    plain = run_study(*args, **kwargs)
    checked: list[float] = []

    def confirm(overrides):
        checked.append(overrides["inflation"])
        if overrides["inflation"] == plain.overrides["inflation"]:
            raise FloatingPointError("diverged over the long horizon")

    chosen = run_study(*args, **kwargs, confirm=confirm, confirm_tag="h9")
    assert chosen.stable is True
    assert chosen.overrides["inflation"] != plain.overrides["inflation"]
    assert checked[0] == plain.overrides["inflation"] and len(checked) == 2
    again = run_study(*args, **kwargs, confirm=confirm, confirm_tag="h9")
    assert again.overrides == chosen.overrides and len(checked) == 2  # verdicts are cached

    def never(overrides):
        raise FloatingPointError("always diverges")

    none = run_study(*args, **kwargs, confirm=never, confirm_tag="h10")
    assert none.stable is False and none.overrides == plain.overrides


def test_the_tuned_file_round_trips_and_refuses_another_model(tmp_path):
    payload = {"protocol": {"pde": "ks"}, "entries": {"sparse": {"enkf": {"config": {}}}}}
    path = tmp_path / "tuned.json"
    save_json_artifact(payload, path, kind=TUNED_KIND, model_sha256="a" * 64)
    assert load_tuned(path, "a" * 64) == payload
    with pytest.raises(ValueError, match="made for the model"):
        load_tuned(path, "b" * 64)


def test_the_validation_evaluator_scores_validation_trajectories():
    evaluate = validation_evaluator(
        "ks", "ks", "sparse", "forecast", horizon=3, members=2, chunk_size=1
    )
    first, second = evaluate({}, 0), evaluate({}, 1)
    assert all(math.isfinite(v) for v in (*first, *second))
    assert first != second  # two different validation trajectories


def test_the_tune_command_writes_a_bound_file_and_resumes(tmp_path, capsys):
    from ardm_infer import cli, load_ardm

    args = [
        "tune",
        "--strategies",
        "forecast,enkf",
        "--regimes",
        "sparse",
        "--trials",
        "2",
        "--horizon",
        "3",
        "--members",
        "3",
        "--validation-trajectories",
        "2",
        "--chunks",
        "1",
        "--confirm-horizon",
        "4",
        "--storage",
        str(tmp_path / "t.db"),
        "--out",
        str(tmp_path / "tuned.json"),
    ]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    payload = load_tuned(tmp_path / "tuned.json", load_ardm("ks").card["sha256"])
    entries = payload["entries"]["sparse"]
    assert set(entries) == {"forecast", "enkf"}
    assert entries["forecast"]["trials"] == 1 and entries["enkf"]["trials"] == 2
    assert entries["enkf"]["trusted"] is False  # 2 trials are too few, and it says so
    assert payload["protocol"]["horizon"] == 3
    assert entries["enkf"]["stable_over"] == 4 and entries["enkf"]["stable"] is True
    assert entries["enkf"]["stable_trajectories"] == 2
    assert "stable" not in entries["forecast"]  # nothing was chosen, nothing to check
    assert cli.main(args) == 0  # resumes: no new trials, the same choice
    again = load_tuned(tmp_path / "tuned.json", load_ardm("ks").card["sha256"])
    assert again["entries"] == payload["entries"]
    assert "too few trials" in first
    assert cli.main([*args[:-2], "--out", str(tmp_path / "tuned.json"), "--initial", "x"]) == 2


def _tuned_file(tmp_path, sha, entries):
    path = tmp_path / "tuned.json"
    payload = {"protocol": {"pde": "ks"}, "entries": entries}
    save_json_artifact(payload, path, kind=TUNED_KIND, model_sha256=sha)
    return path


def test_tuned_entries_are_found_by_regime_not_by_spelling():
    entry = {"config": {"inflation": 1.1}}
    payload = {"entries": {"stride=16, every=1, sigma=0.05": {"enkf": entry}}}
    assert tuned_entry(payload, "sparse", "enkf", "ks") is entry
    assert tuned_entry(payload, "sparse, sigma=0.1", "enkf", "ks") is None  # another noise
    assert tuned_entry(payload, "sparse", "dps", "ks") is None


def test_a_tuned_file_of_another_ardm_is_refused_and_defaults_are_said(tmp_path):
    path = _tuned_file(tmp_path, "a" * 64, {})
    with pytest.raises(ValueError, match="made for the model"):
        resolve_tuned(path, "ks", "b" * 64)
    assert resolve_tuned(False, "ks", "b" * 64) == (None, "library defaults (untuned)")
    payload, why = resolve_tuned(True, "ks", "b" * 64)  # not the shipped ARDM
    assert payload is None and "not this one" in why


def test_the_benchmark_runs_each_regime_with_its_tuned_config(tmp_path):
    import json

    import numpy as np

    from ardm_infer import load_ardm
    from ardm_infer.bench import benchmark
    from ardm_infer.bench.specs import jsonable

    sha = load_ardm("ks").card["sha256"]
    path = _tuned_file(
        tmp_path,
        sha,
        {
            "sparse": {"enkf": {"config": {"inflation": 1.25, "rtps": 0.3}, "trusted": True}},
            "dense": {
                "enkf": {
                    "config": {"inflation": 1.05},
                    "trusted": False,
                    "trials": 3,
                    "complete_trials": 2,
                }
            },
            "stride=8, every=1, sigma=0.05": {
                "enkf": {
                    "config": {"inflation": 1.3},
                    "trusted": False,
                    "trials": 12,
                    "stable_over": 140,
                    "stable": False,
                }
            },
        },
    )
    given = ("enkf-given", "enkf", get_strategy("enkf").Config(inflation=1.5))
    kwargs = dict(
        regimes=["sparse", "dense", "stride=8, every=1, sigma=0.05", "random"],
        horizon=2,
        trajectories=1,
        members=3,
        progress=False,
        initial="exact",
    )
    ds = benchmark(strategies=["enkf", given], tuned=path, **kwargs)
    source = ds["config_source"].sel(strategy="enkf").values.tolist()
    assert source == [
        "tuned",
        "tuned, untrusted (3 trials)",
        "tuned, untrusted (blew up within 140 frames)",
        "default",
    ]
    assert ds["config_source"].sel(strategy="enkf-given").values.tolist() == ["given"] * 4
    cfg = [json.loads(str(c)) for c in ds["cell_config"].sel(strategy="enkf").values]
    assert (cfg[0]["inflation"], cfg[0]["rtps"]) == (1.25, 0.3)
    assert cfg[1]["inflation"] == 1.05 and cfg[3] == jsonable(get_strategy("enkf").Config())
    assert (
        json.loads(str(ds["cell_config"].sel(strategy="enkf-given").values[0]))["inflation"] == 1.5
    )
    # the tuned cell differs from the untuned one: the settings really ran
    untuned = benchmark(strategies=["enkf"], tuned=False, **kwargs)
    assert (untuned["config_source"].values == "default").all()
    assert not np.allclose(
        untuned["rmse"].sel(strategy="enkf", regime="sparse").values,
        ds["rmse"].sel(strategy="enkf", regime="sparse").values,
    )
    np.testing.assert_array_equal(
        untuned["rmse"].sel(strategy="enkf", regime="random").values,
        ds["rmse"].sel(strategy="enkf", regime="random").values,
    )
    from ardm_infer.bench import strategy_configs
    from ardm_infer.bench.report import format_table
    from ardm_infer.bench.stats import summary

    assert strategy_configs(ds)["enkf"]["regimes"]["sparse"]["config"]["inflation"] == 1.25
    table = format_table(summary(ds))
    assert "untrusted" in table and "tuned" in table and "given" in table
