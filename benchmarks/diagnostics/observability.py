"""How much one frame of sparse observations can tell an 8-member ensemble of the ARDM.

On the validation split (never test), with the protocol's background start:

1. the ARDM's own error: the RMSE of its one-frame forecast from the exact context, against
   persistence (the frame-to-frame change) and climatology;
2. the spatial autocorrelation of the forecast error ``truth - ensemble mean`` after
   ``--lead`` frames (the first analysis frame of a gappy regime), per axis, and its
   correlation length (first lag below 1/e, in grid points);
3. one ETKF analysis of that forecast with the ``sparse`` preset's stride of the system
   (sigma 0.05), without and with localisation radii: its RMSE against the forecast's.

An observation informs the grid points whose error is correlated with the error where it
sits; with a correlation length well below the stride, most of the frame is out of reach of
one frame's observations whatever the analysis (the Kolmogorov ``sparse-gappy`` note in the
README).

4. optionally (``--ensemble-sizes 8,16``), the tuned EnKF of the shipped settings for
   ``--regime`` (with ``update_context``) against the forecast over ``--horizon`` frames on
   the validation trajectories, per ensemble size: does a larger ensemble close the gap?

    python benchmarks/diagnostics/observability.py [--pde kolmogorov] [--trajectories 4]
        [--ensemble-sizes 8,16 --regime sparse-gappy --horizon 60]   (about 20 min)

Last line: ``pde=... one_step_rmse=... persistence_rmse=... climatology_rmse=...
error_corr_length=... stride=... forecast_rmse=... analysis_rmse_global=...
analysis_rmse_best_localised=... best_radius=...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

from ardm_infer.bench.cells import CellTask, _problem_frames, load_process
from ardm_infer.bench.specs import StrategySpec
from ardm_infer.initial import PROTOCOL_INITIAL, parse_initial
from ardm_infer.observe import parse_regime, preset
from ardm_infer.strategies import get_strategy
from ardm_infer.strategies.base import assimilate, make_problem
from ardm_infer.strategies.enkf_mask import etkf_analysis

RADII = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def _problem(pde, process, dataset, regime, horizon, trajectories, members, initial):
    spec = StrategySpec("forecast", "forecast", get_strategy("forecast").Config())
    task = CellTask(
        pde,
        pde,
        regime,
        spec,
        horizon,
        trajectories,
        members,
        0,
        0,
        (horizon,),
        initial=initial,
        split="val",
        first_trajectory=0,
    )
    start = parse_initial(initial)
    if start.kind != "exact":
        start = dataclasses.replace(start, members=members)
    frames = _problem_frames(task, process, dataset, lead=start.lead)
    return make_problem(
        frames,
        process.context_length,
        parse_regime(regime, pde=pde),
        torch.Generator().manual_seed(1),
        horizon=horizon,
        pde=pde,
        initial=start,
        process=process,
        initial_generator=torch.Generator().manual_seed(2),
    )


def _autocorrelation(field: torch.Tensor) -> list[torch.Tensor]:
    """Per spatial axis, the autocorrelation ``(lags,)`` of ``(batch, *space)`` (periodic)."""
    dims = tuple(range(1, field.ndim))
    f = torch.fft.fftn(field - field.mean(dims, keepdim=True), dim=dims)
    ac = torch.fft.ifftn(f * f.conj(), dim=dims).real.mean(0)
    ac = ac / ac.flatten()[0]
    out = []
    for axis in range(ac.ndim):
        index = [0] * ac.ndim
        index[axis] = slice(None)
        out.append(ac[tuple(index)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pde", default="kolmogorov", choices=["ks", "kolmogorov"])
    parser.add_argument("--trajectories", type=int, default=4)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--lead", type=int, default=8, help="frames before the analysis")
    parser.add_argument("--ensemble-sizes", default="", help="e.g. 8,16 (item 4; slow)")
    parser.add_argument("--regime", default="sparse-gappy", help="item 4's regime")
    parser.add_argument("--horizon", type=int, default=60, help="item 4's frames")
    args = parser.parse_args()
    torch.manual_seed(0)
    pde, members = args.pde, args.members
    process, dataset = load_process(pde, pde)
    stride = preset("sparse", pde).spatial.step
    regime = f"stride={stride}, every=1, sigma=0.05"
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731

    exact = _problem(pde, process, dataset, regime, 1, args.trajectories, members, "exact")
    one = assimilate(process, exact, "forecast", members=members, generator=g(3)).ensemble
    one_step = (one[:, :, 0].mean(0) - exact.truth[:, 0]).square().mean().sqrt().item()
    before = exact.context[:, -1]
    persistence = (exact.truth[:, 0] - before).square().mean().sqrt().item()
    climatology = exact.truth[:, 0].square().mean().sqrt().item()
    print(
        f"one-frame forecast RMSE {one_step:.3f}, persistence {persistence:.3f}, "
        f"climatology {climatology:.3f} (normalised units)"
    )

    problem = _problem(
        pde, process, dataset, regime, args.lead, args.trajectories, members, PROTOCOL_INITIAL
    )
    run = assimilate(process, problem, "forecast", members=members, generator=g(4))
    ensemble = run.ensemble[:, :, -1]  # (members, trajectories, C, *space)
    truth = problem.truth[:, -1]
    error = (ensemble.mean(0) - truth).flatten(0, 1)  # (trajectories * C, *space)
    length = math.inf
    for axis, ac in enumerate(_autocorrelation(error)):
        lags = ac[: 2 * stride + 1]
        print(
            f"forecast-error autocorrelation, axis {axis}, lags 0..{len(lags) - 1}: "
            + " ".join(f"{v:.2f}" for v in lags.tolist())
        )
        below = (ac < 1 / math.e).nonzero()
        length = min(length, float(below[0, 0]) if below.numel() else math.inf)
    mask = problem.mask[-1] if problem.mask.ndim == truth.ndim else problem.mask[:, -1]
    mask = mask.expand(truth.shape)
    observation = problem.observation[:, -1]

    def rmse(x: torch.Tensor) -> float:
        return (x.mean(0) - truth).square().mean().sqrt().item()

    forecast = rmse(ensemble)
    glob = rmse(etkf_analysis(ensemble, observation, mask, 0.05, 1.0, None))
    local = {r: rmse(etkf_analysis(ensemble, observation, mask, 0.05, 1.0, r)) for r in RADII}
    print(
        f"after {args.lead} frames: forecast RMSE {forecast:.3f}, spread "
        f"{ensemble.var(0).mean().sqrt().item():.3f}; one ETKF analysis of the stride-"
        f"{stride} observations ({int(mask[0].sum())} points): global {glob:.3f}, "
        + ", ".join(f"radius {r:g} {v:.3f}" for r, v in local.items())
    )
    best = min(local, key=local.get)
    if args.ensemble_sizes:
        _ensemble_sizes(args, pde)
    print(
        f"pde={pde} one_step_rmse={one_step:.3f} persistence_rmse={persistence:.3f} "
        f"climatology_rmse={climatology:.3f} error_corr_length={length:g} stride={stride} "
        f"forecast_rmse={forecast:.3f} analysis_rmse_global={glob:.3f} "
        f"analysis_rmse_best_localised={local[best]:.3f} best_radius={best:g}"
    )


def _ensemble_sizes(args: argparse.Namespace, pde: str) -> None:
    """Item 4: tuned EnKF against the forecast on validation, per ensemble size."""
    from ardm_infer.tuned_settings import resolve_tuned, tuned_entry
    from ardm_infer.tuning import validation_evaluator

    process, _ = load_process(pde, pde)
    payload, _ = resolve_tuned(True, pde, process.card.get("sha256"))
    entry = tuned_entry(payload or {}, args.regime, "enkf", pde)
    if entry is None:
        raise SystemExit(f"no shipped tuned enkf entry for {pde} {args.regime!r}")
    spec = entry["regime_spec"]
    config = {**entry["config"], "update_context": True}
    for members in (int(m) for m in args.ensemble_sizes.split(",")):
        scores = {}
        for name, overrides in (("forecast", {}), ("enkf", config)):
            evaluate = validation_evaluator(
                pde,
                pde,
                spec,
                name,
                horizon=args.horizon,
                members=members,
                chunk_size=args.trajectories,
                initial=PROTOCOL_INITIAL,
            )
            scores[name] = evaluate(overrides, 0)
        print(
            f"{args.regime}, {args.horizon} frames, {members} members (validation): "
            f"enkf RMSE {scores['enkf'][1]:.3f} CRPS {scores['enkf'][0]:.3f}, forecast RMSE "
            f"{scores['forecast'][1]:.3f} CRPS {scores['forecast'][0]:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
