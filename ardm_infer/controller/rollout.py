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
) -> dict[str, torch.Tensor]:
    """Roll the ARDM over a window with the controller active and evaluate J.

    The preview of window frame j holds frames j..j+Lambda-1 of ``observation`` (zero past
    the window).  Differentiable w.r.t. the network's parameters when grad is enabled.

    Args:
        ardm: an :class:`~ardm_infer.ardm.ARDM` (stochastic schedule).
        network: the :class:`Controller`.
        context: ``(B, k, C, *space)``.
        observation: lifted ``(B, L, C, *space)``.
        mask: bool ``(B, L, C, *space)``.
        sigma: sigma_y ``(B,)``.
        generator: sampler noise (on the data's device).
        beta, arrival_weight, detach_context: see
            :class:`~ardm_infer.controller.ControllerTrainConfig`.
        truth: the window's true frames ``(B, L, C, *space)``: if given, the terminal cost
            is sum_j |x_j - truth_j|^2 / (2 sigma_y^2) over the whole state (the
            ``terminal="truth"`` training cost) instead of sum_j l(y_j, x_j).

    Returns:
        ``{"objective", "terminal", "arrival", "kl"}`` each ``(B,)`` and ``"frames"``
        ``(B, L, C, *space)``.
    """
    lam = network.config.preview
    length = observation.shape[1]
    guidances = []
    for j in range(length):
        preview = preview_window(observation, mask, j, lam)
        guidances.append(ControllerGuidance(network, preview.y, preview.mask, sigma))
    observations = window_observations(observation, mask, sigma.to(observation))
    arrival = None
    if arrival_weight > 0:
        arrival = ArrivalCosts(observations, arrival_weight)
        guidances = arrival.wrap(guidances)
    run = guided_rollout(
        ardm, context, length, generator, guidances, record=False, detach_context=detach_context
    )
    cost = None if arrival is None else arrival.total_like(run.kl)
    terms = objective_terms(run, observations, beta=beta, arrival=cost)
    if truth is not None:
        if tuple(truth.shape) != tuple(run.frames.shape):
            raise ValueError(f"truth must be {tuple(run.frames.shape)}, got {tuple(truth.shape)}")
        sq = (run.frames - truth.to(run.frames)).square().flatten(1).sum(1)
        terminal = sq / (2 * sigma.to(sq) ** 2)
        terms = type(terms)(
            objective=terminal + terms.arrival + beta * terms.kl,
            terminal=terminal,
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
