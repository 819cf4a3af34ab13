"""The controller's training rollout: the one guided rollout and the one J of :mod:`ardm_infer.soc`.

A window of L frames is rolled out with the controller active (the preview of window frame
j holds frames j .. j + Lambda - 1 of the window) and scored by J (docs/design.md §2):

    J_path = sum_j l(y_j, x_j) + w sum_{j,s} l(y_j, x0_hat_{j,s}) + beta sum_j KL_j,

through :func:`ardm_infer.soc.guided_rollout`, :class:`ardm_infer.soc.ArrivalCosts` and
:func:`ardm_infer.soc.objective_terms`.  Shapes: context ``(B, k, C, *space)``, window
observations and masks ``(B, L, C, *space)``, per-window terms ``(B,)``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..soc.objective import ArrivalCosts, objective_terms, window_observations
from ..soc.rollouts import guided_rollout
from .network import Controller, ControllerGuidance
from .preview import preview_window

__all__ = ["controlled_rollout"]


def controlled_rollout(
    ardm: Any,
    network: Controller,
    context: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: torch.Tensor,
    generator: torch.Generator,
    *,
    beta: float = 1.0,
    arrival_weight: float = 0.0,
    detach_context: bool = False,
    truth: torch.Tensor | None = None,
    terminal: str = "observations",
) -> dict[str, torch.Tensor]:
    """Roll the ARDM over a window with the controller active and evaluate J.

    The preview of window frame j holds frames j..j+Lambda-1 of ``observation`` (zero past
    the window).  Differentiable w.r.t. the network's parameters when grad is enabled.

    Args:
        ardm: an :class:`~ardm_infer.ardm.ARDM` (stochastic schedule).
        network: the :class:`Controller`.
        context: ``(B, k, C, *space)``, or ``(M * B, k, C, *space)`` for B ensembles of M
            members (members-major; the members of window b share its observations).
        observation: lifted ``(B, L, C, *space)``.
        mask: bool ``(B, L, C, *space)``.
        sigma: sigma_y ``(B,)``.
        generator: sampler noise (on the data's device).
        beta, arrival_weight, detach_context: see
            :class:`~ardm_infer.controller.ControllerTrainConfig`.
        truth: the window's true frames ``(B, L, C, *space)`` (needed by the truth costs).
        terminal: ``"observations"``: sum_j l(y_j, x_j); ``"truth"``: sum_j |x_j -
            truth_j|^2 / (2 sigma_y^2) over the whole state, per member; ``"crps"``: the
            fair CRPS of the window's M members against the truth, summed over every point
            of every frame, over sigma_y (the same value on each member's row; M >= 2).

    Returns:
        ``{"objective", "terminal", "arrival", "kl"}`` each ``(M * B,)`` and ``"frames"``
        ``(M * B, L, C, *space)``.
    """
    if terminal not in ("observations", "truth", "crps"):
        raise ValueError(f"terminal must be 'observations', 'truth' or 'crps', got {terminal!r}")
    if terminal != "observations" and truth is None:
        raise ValueError(f"terminal={terminal!r} needs the true frames (truth=...)")
    groups = observation.shape[0]
    members = context.shape[0] // groups
    if members * groups != context.shape[0]:
        raise ValueError(f"{context.shape[0]} contexts are not a multiple of {groups} windows")
    if terminal == "crps" and members < 2:
        raise ValueError("terminal='crps' needs ensembles of at least 2 members")
    lam = network.config.preview
    length = observation.shape[1]
    guidances = []
    for j in range(length):
        preview = preview_window(observation, mask, j, lam)
        guidances.append(ControllerGuidance(network, preview.y, preview.mask, sigma))
    # The objective's observations per sampler row (the members of a window share its own).
    tile = (members,) + (1,) * (observation.ndim - 1)
    rows = sigma.to(observation)
    if members > 1:
        rows = rows.repeat(members)
        observation = observation.repeat(tile)
        mask = mask.repeat(tile) if mask.ndim == observation.ndim else mask
    observations = window_observations(observation, mask, rows)
    arrival = None
    if arrival_weight > 0:
        arrival = ArrivalCosts(observations, arrival_weight)
        guidances = arrival.wrap(guidances)
    run = guided_rollout(
        ardm, context, length, generator, guidances, record=False, detach_context=detach_context
    )
    cost = None if arrival is None else arrival.total_like(run.kl)
    terms = objective_terms(run, observations, beta=beta, arrival=cost)
    if terminal != "observations":
        frames = run.frames
        if tuple(truth.shape) != (groups, *frames.shape[1:]):
            raise ValueError(
                f"truth must be {(groups, *frames.shape[1:])}, got {tuple(truth.shape)}"
            )
        truth = truth.to(frames)
        if terminal == "truth":
            sq = (frames - truth.repeat(tile)).square().flatten(1).sum(1)
            cost = sq / (2 * rows.to(sq) ** 2)
        else:
            ens = frames.reshape(members, groups, *frames.shape[1:])
            skill = (ens - truth).abs().mean(0)
            pairs = (ens[:, None] - ens[None]).abs().sum((0, 1)) / (2 * members * (members - 1))
            crps = (skill - pairs).flatten(1).sum(1) / sigma.to(frames)
            cost = crps.repeat(members)
        terms = type(terms)(
            objective=cost + terms.arrival + beta * terms.kl,
            terminal=cost,
            arrival=terms.arrival,
            kl=terms.kl,
        )
    return {
        "objective": terms.objective,
        "terminal": terms.terminal,
        "arrival": terms.arrival,
        "kl": terms.kl,
        "frames": run.frames,
    }
