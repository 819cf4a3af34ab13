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
    run_study,
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


def test_a_study_resumes_from_its_storage(twin_objective, tmp_path):
    _, evaluate = twin_objective

    def space(trial, points):
        return {"inflation": trial.suggest_float("inflation", 1.0, 2.0)}

    args = ("resume", tmp_path / "tune.db", "enkf", get_strategy("enkf").Config, evaluate)
    first = run_study(
        *args, chunks=1, frame_points=8, trials=4, seconds=None, progress=False, space=space
    )
    again = run_study(
        *args, chunks=1, frame_points=8, trials=4, seconds=None, progress=False, space=space
    )
    more = run_study(
        *args, chunks=1, frame_points=8, trials=6, seconds=None, progress=False, space=space
    )
    assert first.trials == again.trials == 4 and again.seconds < first.seconds
    assert more.trials == 6


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
    assert cli.main(args) == 0  # resumes: no new trials, the same choice
    again = load_tuned(tmp_path / "tuned.json", load_ardm("ks").card["sha256"])
    assert again["entries"] == payload["entries"]
    assert "too few trials" in first
    assert cli.main([*args[:-2], "--out", str(tmp_path / "tuned.json"), "--initial", "x"]) == 2
