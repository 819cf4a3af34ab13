"""Tuning: every strategy at its best, chosen on validation trajectories only.

For each (pde, regime, strategy) :func:`tune` searches the strategy's key settings with
Optuna (TPE sampler, median pruning over chunks of validation trajectories) and keeps the
configuration with the lowest **time-mean CRPS over the protocol's horizon** on the
*validation* split; among configurations within 0.5 % of the best CRPS the one with the
lowest time-mean RMSE wins (the tie-break).  Test trajectories are never read.

Each study lives in an SQLite file (Optuna's storage), so an interrupted tuning resumes
where it stopped: the trials already finished count towards the budget.  Budgets are per
strategy: a number of trials and a number of seconds, whichever ends first.

Search spaces (:data:`SEARCH_SPACES`) cover the settings a practitioner would tune, with
guidance strengths log-uniform over several decades:

==========  ===========================================================================
strategy    settings searched
==========  ===========================================================================
forecast    none (evaluated once, for the record)
enkf        variant, multiplicative inflation, RTPS, localisation radius, initial spread
dps         variant, scale (1e-3..1e3, log), the last sub-steps where guidance acts
smc         ESS threshold, process noise, proposal inflation, initial spread,
            regularisation (DAPPER-style kernel jitter)
vc          iterations (1..10), window (2, 4), beta (log)
controller  none, or its one scale (log)
==========  ===========================================================================

A search space only names fields its strategy's ``Config`` has; a field a space names and
the Config lacks is an error (so spaces cannot silently shrink).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .tuned_settings import (  # the reading side, re-exported here
    TUNED_DIR,
    TUNED_KIND,
    load_tuned,
    resolve_tuned,
    shipped_tuned_path,
    tuned_entry,
)

__all__ = [
    "SEARCH_SPACES",
    "TUNED_DIR",
    "TUNED_KIND",
    "StudyResult",
    "Trialish",
    "best_trial",
    "load_tuned",
    "resolve_tuned",
    "run_study",
    "shipped_tuned_path",
    "tune",
    "tuned_entry",
    "validation_evaluator",
]

MIN_TRUSTED_TRIALS = 10
"""Fewer finished trials than this (completed or pruned) and an entry is marked
``trusted: false``.  Pruned trials count: each was scored on the first validation chunk and
found worse than the running median there, which is what the TPE sampler learns from."""

MIN_COMPLETE_TRIALS = 3
"""Fewer fully evaluated trials than this and an entry is marked ``trusted: false`` whatever
the number of pruned ones."""


def is_trusted(trials: int, complete: int) -> bool:
    """Whether a study with ``trials`` finished trials, ``complete`` of them fully evaluated,
    explored its space enough to ship its best setting as tuned."""
    return trials >= MIN_TRUSTED_TRIALS and complete >= MIN_COMPLETE_TRIALS


TIE_TOLERANCE = 0.005
"""Relative CRPS band within which the lower RMSE decides."""


class Trialish(Protocol):
    """What a search space uses of an Optuna trial (so spaces are testable without Optuna)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float:
        """A float in [low, high] (log-uniform if ``log``)."""
        ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int:
        """An int in [low, high]."""
        ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        """One of ``choices``."""
        ...


def _enkf(trial: Any, frame_side: int) -> dict[str, Any]:
    radius = trial.suggest_categorical("localise", [False, True])
    out = {
        "variant": trial.suggest_categorical("variant", ["perturbed", "etkf"]),
        "inflation": trial.suggest_float("inflation", 1.0, 1.5),
        "rtps": trial.suggest_float("rtps", 0.0, 0.95),
        "initial_spread": trial.suggest_float("initial_spread", 1e-4, 0.1, log=True),
        "update_context": trial.suggest_categorical("update_context", [False, True]),
    }
    if radius:
        out["localisation_radius"] = trial.suggest_float(
            "localisation_radius", 2.0, max(4.0, frame_side / 4), log=True
        )
    return out


def _dps(trial: Any, frame_points: int) -> dict[str, Any]:
    return {
        "variant": trial.suggest_categorical("variant", ["score", "chung"]),
        "scale": trial.suggest_float("scale", 1e-3, 1e3, log=True),
        "last_substeps": trial.suggest_categorical("last_substeps", [1, 2, 3, 4, 8, None]),
    }


def _smc(trial: Any, frame_points: int) -> dict[str, Any]:
    out = {
        "ess_threshold": trial.suggest_float("ess_threshold", 0.1, 1.0),
        "process_noise": trial.suggest_float("process_noise", 1e-4, 0.3, log=True),
        "proposal_inflation": trial.suggest_float("proposal_inflation", 1.0, 4.0, log=True),
        "initial_spread": trial.suggest_float("initial_spread", 1e-4, 0.1, log=True),
    }
    if trial.suggest_categorical("regularise", [False, True]):
        out["regularisation"] = trial.suggest_float("regularisation", 0.05, 3.0, log=True)
    return out


def _vc(trial: Any, frame_points: int) -> dict[str, Any]:
    # iterations x window bound the cost: vc's frame costs about (iterations + 1) forecast
    # frames, so the space stops at 10 iterations (a tuning trial must stay affordable).
    return {
        "iterations": trial.suggest_categorical("iterations", [1, 2, 5, 10]),
        "window": trial.suggest_categorical("window", [2, 4]),
        "beta": trial.suggest_float("beta", 1e-4, 1.0, log=True),
    }


def _controller(trial: Any, frame_points: int) -> dict[str, Any]:
    if trial.suggest_categorical("rescale", [False, True]):
        return {"scale": trial.suggest_float("scale", 0.1, 10.0, log=True)}
    return {}


SEARCH_SPACES: dict[str, Callable[[Any, int], dict[str, Any]]] = {
    "forecast": lambda trial, points: {},
    "enkf": _enkf,
    "dps": _dps,
    "smc": _smc,
    "vc": _vc,
    "controller": _controller,
}
"""Per strategy: ``(trial, frame side) -> Config overrides``; the frame side is the shortest
spatial side of a frame in grid points (KS 256, Kolmogorov 64), which bounds the search range
of the localisation radius (distances are per axis in grid units)."""


@dataclass(frozen=True)
class StudyResult:
    """The outcome of one (pde, regime, strategy) study.

    Attributes:
        overrides: the chosen Config overrides (JSON-serialisable).
        crps, rmse: its validation time-mean CRPS and RMSE.
        trials: trials run in total (all sessions), complete: of which finished unpruned.
        seconds: wall time spent in this call.
        params: the chosen trial's raw search-space values (to warm-start another study).
        trial_seconds: wall time of all finished trials of the study, in every session
            (from Optuna's trial timestamps: a killed run's finished trials count).
        stable: whether the chosen setting passed the stability check (``confirm`` of
            :func:`run_study`); None when none was asked for.
    """

    overrides: dict[str, Any]
    crps: float
    rmse: float
    trials: int
    complete: int
    seconds: float
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    trial_seconds: float = 0.0
    stable: bool | None = None


def best_trial(values: Sequence[tuple[float, float, dict[str, Any]]]) -> int:
    """Index of the best ``(crps, rmse, overrides)``: lowest CRPS, RMSE breaks near-ties.

    Non-finite scores never win.  Raises ``ValueError`` if none is finite.
    """
    finite = [i for i, (c, r, _) in enumerate(values) if math.isfinite(c) and math.isfinite(r)]
    if not finite:
        raise ValueError("no trial finished with a finite score")
    best_crps = min(values[i][0] for i in finite)
    near = [i for i in finite if values[i][0] <= best_crps * (1 + TIE_TOLERANCE)]
    return min(near, key=lambda i: (values[i][1], values[i][0]))


MAX_CONFIRMED = 5
"""Candidates a stability check tries, best first, before giving up (:func:`run_study`)."""


def _confirmed(
    study: Any,
    complete: list[Any],
    scored: list[tuple[float, float, dict[str, Any]]],
    confirm: Callable[[dict[str, Any]], None],
    tag: str,
) -> tuple[int, bool]:
    """The index (into ``complete``) of the best candidate that passes ``confirm``, and
    whether one did (else the overall best, False).  Verdicts are cached in the study."""
    key = f"stable:{tag}"
    verdicts: dict[str, str] = dict(study.user_attrs.get(key, {}))
    remaining = list(range(len(scored)))
    first = None
    for _ in range(min(MAX_CONFIRMED, len(scored))):
        pick = remaining[best_trial([scored[i] for i in remaining])]
        first = pick if first is None else first
        number = str(complete[pick].number)
        if number not in verdicts:
            try:
                confirm(scored[pick][2])
                verdicts[number] = "ok"
            except FloatingPointError as err:
                verdicts[number] = f"unstable: {str(err)[:200]}"
            study.set_user_attr(key, verdicts)
        if verdicts[number] == "ok":
            return pick, True
        remaining.remove(pick)
        if not any(math.isfinite(scored[i][0]) for i in remaining):
            break
    return (first if first is not None else best_trial(scored)), False


def check_space(name: str, config_type: type, overrides: dict[str, Any]) -> None:
    """A search space may only name fields of its strategy's Config."""
    fields = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"search space of {name!r} names {unknown}, not fields of its Config")


def run_study(
    study_name: str,
    storage: str | Path,
    strategy: str,
    config_type: type,
    evaluate: Callable[[dict[str, Any], int], tuple[float, float]],
    chunks: int,
    frame_points: int,
    trials: int,
    seconds: float | None,
    seed: int = 0,
    progress: bool = True,
    space: Callable[[Any, int], dict[str, Any]] | None = None,
    label: str | None = None,
    warm_start: Sequence[dict[str, Any]] = (),
    confirm: Callable[[dict[str, Any]], None] | None = None,
    confirm_tag: str = "",
) -> StudyResult | None:
    """Run (or resume) one Optuna study and return its best configuration.

    Args:
        study_name: unique per (pde, regime, strategy, protocol).
        storage: the SQLite file.
        strategy: the registered name (selects :data:`SEARCH_SPACES`).
        config_type: the strategy's ``Config`` (to check the space and build configs).
        evaluate: ``(overrides, chunk) -> (crps, rmse)`` time-means on validation chunk
            ``chunk`` (0..chunks-1); raises ``FloatingPointError`` / ``ValueError`` for a
            configuration that fails (non-finite ensemble, refused setting).
        chunks: validation chunks; the trial's running mean is reported after each one
            and the median pruner may stop it.
        frame_points: the shortest spatial side of a frame in grid points (scales the
            localisation range; see :data:`SEARCH_SPACES`).
        trials: total trials wanted (finished ones in the storage count).
        seconds: wall-time budget of this call (None: no limit).
        seed: the TPE sampler's seed.
        progress: a bar over trials with the best score so far.
        space: a search space ``(trial, points) -> overrides`` other than the strategy's
            (:data:`SEARCH_SPACES`).
        label: the progress bar's name (default: ``study_name``).
        warm_start: raw parameter sets (``StudyResult.params`` of another study, e.g. the
            same strategy on another regime) tried first when the study is new.
        confirm: a stability check of a candidate's overrides (for example the same
            validation trajectories over the full evaluation horizon) that raises
            ``FloatingPointError`` when the run fails or blows up.  Candidates are tried in
            the order of the selection rule, at most :data:`MAX_CONFIRMED`; the first that
            passes is chosen.  Verdicts are cached in the study (user attribute
            ``stable:<confirm_tag>``), so a resumed study does not rerun them.  If none passes,
            the best is returned with ``stable=False``.

    Returns:
        The best finished trial's result, or None while the study has no unpruned trial with
        a finite score (``trials=0`` on a new study: nothing to export yet).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SEARCH_SPACES[strategy] if space is None else space
    storage_url = f"sqlite:///{Path(storage).resolve()}"
    study = optuna.create_study(
        study_name=study_name,
        storage=storage_url,
        direction="minimize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )

    def objective(trial: Any) -> float:
        overrides = space(trial, frame_points)
        check_space(strategy, config_type, overrides)
        crps_sum = rmse_sum = 0.0
        for chunk in range(chunks):
            try:
                crps, rmse = evaluate(overrides, chunk)
            except (FloatingPointError, ValueError) as err:
                trial.set_user_attr("failure", str(err)[:500])
                raise optuna.TrialPruned(f"failed: {err}") from None
            crps_sum += crps
            rmse_sum += rmse
            trial.report(crps_sum / (chunk + 1), chunk)
            if chunk + 1 < chunks and trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("rmse", rmse_sum / chunks)
        trial.set_user_attr("overrides", overrides)
        return crps_sum / chunks

    if not study.trials:
        for params in warm_start:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    done = len([t for t in study.trials if t.state.is_finished()])
    wanted = 1 if not _has_space(space) else trials
    todo = max(wanted - done, 0)
    t0 = time.perf_counter()
    if todo:
        callbacks = [_ProgressBar(label or study_name, todo)] if progress else []
        study.optimize(objective, n_trials=todo, timeout=seconds, callbacks=callbacks)
        for cb in callbacks:
            cb.close()
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    scored = [
        (t.value, t.user_attrs.get("rmse", math.inf), t.user_attrs["overrides"]) for t in complete
    ]
    if not any(math.isfinite(c) and math.isfinite(r) for c, r, _ in scored):
        return None  # nothing finished yet (budget 0, or every trial pruned or failed)
    index = best_trial(scored)
    stable = None
    if confirm is not None:
        index, stable = _confirmed(study, complete, scored, confirm, confirm_tag)
    best = scored[index]
    return StudyResult(
        overrides=best[2],
        crps=float(best[0]),
        rmse=float(best[1]),
        trials=len([t for t in study.trials if t.state.is_finished()]),
        complete=len(complete),
        seconds=time.perf_counter() - t0,
        params=dict(complete[index].params),
        stable=stable,
        trial_seconds=sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in study.trials
            if t.state.is_finished() and t.datetime_start and t.datetime_complete
        ),
    )


def _has_space(space: Callable[[Any, int], dict[str, Any]]) -> bool:
    class _Probe:
        used = False

        def suggest_float(self, name, low, high, *, log=False):
            self.used = True
            return low

        def suggest_int(self, name, low, high, *, log=False):
            self.used = True
            return low

        def suggest_categorical(self, name, choices):
            self.used = True
            return choices[0]

    probe = _Probe()
    space(probe, 64)
    return probe.used


class _ProgressBar:
    def __init__(self, name: str, total: int) -> None:
        import sys

        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=f"tune {name}", unit="trial", file=sys.stderr)

    def __call__(self, study: Any, trial: Any) -> None:
        try:
            best = f"best CRPS {study.best_value:.4g}"
        except ValueError:
            best = "no finished trial yet"
        self.bar.set_postfix_str(best, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- on validation data


def validation_evaluator(
    pde: str,
    ardm: str,
    regime: str,
    strategy: str,
    *,
    horizon: int,
    members: int,
    chunk_size: int,
    initial: str = "exact",
    seed: int = 0,
    start: int = 0,
) -> Callable[[dict[str, Any], int], tuple[float, float]]:
    """``(overrides, chunk) -> (crps, rmse)``: the time-mean CRPS and RMSE of ``strategy`` with
    ``overrides`` on validation trajectories ``chunk * chunk_size ..`` (the benchmark's own
    cell, on the ``val`` split: the same problem construction and scoring as the reported
    numbers).  A failed cell raises ``FloatingPointError`` with its reason."""
    from .bench.cells import CellTask, run_cell
    from .bench.specs import StrategySpec
    from .strategies import get_strategy

    config_type = get_strategy(strategy).Config

    def evaluate(overrides: dict[str, Any], chunk: int) -> tuple[float, float]:
        options = dict(overrides)
        if strategy == "controller" and "controller" not in options:
            options["controller"] = pde
        spec = StrategySpec(strategy, strategy, config_type(**options))
        task = CellTask(
            pde,
            ardm,
            regime,
            spec,
            horizon,
            chunk_size,
            members,
            seed,
            start,
            (horizon,),  # one stored field frame: tuning reads scores only
            initial=initial,
            split="val",
            first_trajectory=chunk * chunk_size,
        )
        ds = run_cell(task)
        if bool(ds["failed"].values.any()):
            raise FloatingPointError(str(ds["failure"].values.ravel()[0]))
        if "blow_up" in ds and bool(ds["blow_up"].values.any()):
            raise FloatingPointError("a member blew up (non-finite or beyond the blow-up bound)")
        crps = float(ds["crps"].mean())
        rmse = float(ds["rmse"].mean())
        if not (math.isfinite(crps) and math.isfinite(rmse)):
            raise FloatingPointError("non-finite score")
        return crps, rmse

    return evaluate


def tune(
    pde: str,
    regimes: Sequence[str],
    strategies: Sequence[str],
    *,
    out: str | Path,
    storage: str | Path,
    trials: dict[str, int] | int = 30,
    seconds: dict[str, float] | float | None = None,
    horizon: int = 64,
    members: int = 8,
    validation_trajectories: int = 4,
    chunks: int = 2,
    initial: str | None = None,
    ardm: str | None = None,
    seed: int = 0,
    progress: bool = True,
    confirm_horizon: int | None = None,
    confirm_trajectories: int | None = None,
) -> dict[str, Any]:
    """Tune ``strategies`` on ``regimes`` of ``pde`` on validation trajectories only.

    Every (regime, strategy) study resumes from ``storage`` (SQLite) and its best
    configuration is written, after each study, to the JSON artifact ``out``, bound to the
    sha256 of the ARDM's card (:func:`~ardm_infer.artifacts.save_json_artifact`); entries of
    other studies already in ``out`` are kept.  ``trials`` / ``seconds``: budgets, one number
    for every strategy or a dict per strategy.  An entry with fewer than
    :data:`MIN_TRUSTED_TRIALS` finished trials (completed or pruned) or fewer than
    :data:`MIN_COMPLETE_TRIALS` completed ones is written with ``trusted: false``.

    ``confirm_horizon``: before a setting is chosen it must run this many frames on the first
    ``confirm_trajectories`` validation trajectories (default: those tuned on) without
    failing or blowing up (settings tuned on a short horizon can diverge beyond it, and a rare
    divergence needs more trajectories to show); the best-ranked setting that does is
    shipped, and an entry whose candidates all diverged is written with ``stable: false,
    trusted: false``.  The check is not part of the protocol (it does not rename the studies)
    and its verdicts are cached in them.

    Returns:
        The payload written: ``{"protocol": {...}, "entries": {regime: {strategy: {...}}}}``.
    """
    from ._version import code_version
    from .artifacts import save_json_artifact
    from .bench.cells import load_process
    from .initial import PROTOCOL_INITIAL, parse_initial
    from .observe import parse_regime
    from .strategies import get_strategy
    from .systems import get_system

    system = get_system(pde)
    ardm = ardm or system.shipped_ardm
    initial = parse_initial(PROTOCOL_INITIAL if initial is None else initial).spec()
    confirm_trajectories = confirm_trajectories or validation_trajectories
    if validation_trajectories % chunks:
        raise ValueError(
            f"validation_trajectories={validation_trajectories} must be a multiple of "
            f"chunks={chunks}"
        )
    process, _ = load_process(ardm, system.name)
    model_sha = process.card["sha256"]
    points = min(process.frame_shape[1:])  # the shortest side: localisation is per axis
    protocol = {
        "pde": system.name,
        "ardm": ardm,
        "horizon": horizon,
        "members": members,
        "validation_trajectories": validation_trajectories,
        "initial": initial,
        "seed": seed,
        "objective": "time-mean CRPS on validation trajectories (RMSE breaks near-ties)",
    }
    payload: dict[str, Any] = {"protocol": protocol, "entries": {}}
    out = Path(out)
    if out.exists():
        previous = load_tuned(out, model_sha)
        if previous["protocol"] != protocol:
            raise ValueError(
                f"{out} holds configurations tuned under another protocol "
                f"({previous['protocol']}); write to another file"
            )
        payload = previous
    for name in strategies:  # cheap strategies first, when listed first
        warm: list[dict[str, Any]] = []
        for regime in regimes:
            spec = parse_regime(regime, pde=system.name).spec()
            budget = trials.get(name, 30) if isinstance(trials, dict) else trials
            limit = seconds.get(name) if isinstance(seconds, dict) else seconds
            evaluate = validation_evaluator(
                system.name,
                ardm,
                regime,
                name,
                horizon=horizon,
                members=members,
                chunk_size=validation_trajectories // chunks,
                initial=initial,
                seed=seed,
            )
            confirm = None
            if confirm_horizon is not None and _has_space(SEARCH_SPACES[name]):
                full = validation_evaluator(
                    system.name,
                    ardm,
                    regime,
                    name,
                    horizon=confirm_horizon,
                    members=members,
                    chunk_size=confirm_trajectories,
                    initial=initial,
                    seed=seed,
                )

                def confirm(overrides: dict[str, Any], full=full) -> None:
                    full(overrides, 0)

            study = f"{system.name}|{spec}|{name}|{json.dumps(protocol, sort_keys=True)}"
            result = run_study(
                study,
                storage,
                name,
                get_strategy(name).Config,
                evaluate,
                chunks,
                points,
                budget,
                limit,
                seed=seed,
                progress=progress,
                label=f"{regime} / {name}",
                warm_start=warm,
                confirm=confirm,
                confirm_tag=f"h{confirm_horizon}n{confirm_trajectories}",
            )
            if result is None:
                if progress:
                    print(f"{regime} / {name}: no finished trial yet, no entry written")
                continue
            warm = [result.params] if result.params else []
            checked = {}
            if confirm is not None:
                checked = {
                    "stable_over": confirm_horizon,
                    "stable_trajectories": confirm_trajectories,
                    "stable": bool(result.stable),
                }
            payload["entries"].setdefault(regime, {})[name] = {
                "regime_spec": spec,
                "config": result.overrides,
                "params": result.params,
                "validation_crps": result.crps,
                "validation_rmse": result.rmse,
                "trials": result.trials,
                "complete_trials": result.complete,
                "trusted": (
                    is_trusted(result.trials, result.complete)
                    or not _has_space(SEARCH_SPACES[name])
                )
                and result.stable is not False,
                "search_space": inspect.getsource(SEARCH_SPACES[name])
                if name != "forecast"
                else "none",
                "code_version": code_version(),
                "seconds": round(result.trial_seconds, 1),
                **checked,
            }
            save_json_artifact(payload, out, kind=TUNED_KIND, model_sha256=model_sha)
    return payload
