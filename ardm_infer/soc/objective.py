"""The one control objective J (docs/design.md §2), for the SOC checks, ``vc`` and training.

Over a window of T frames with observations y_j = H_j x_j + noise,

    J_path = sum_j l(y_j, x_j) + sum_{j,s} w_s l(y_j, x0_hat_{j,s}) + beta sum_j KL_j,
    l(y, x) = |y - H x|^2 / (2 sigma_y^2)      (= -log p(y | x) + const),

with KL_j the control energy the kernel reports for frame j; J(u) = E_{Q^u}[J_path].  With
beta = 1 and w = 0, J(u) = KL(Q^u || posterior path measure) - log E_P[exp(-sum_j l)], so
min J = -log p(y) - (n_obs / 2) log(2 pi sigma_y^2).

Every J of the library is :func:`objective_terms` (``vc`` per window at test time, the
controller's training windows, :func:`control_objective` for recorded rollouts), with l the
library's one likelihood (:class:`~ardm_infer.observe.FrameObservation`).  The arrival
costs w_s l(y_j, x0_hat_{j,s}) are recorded either live during the rollout by
:class:`ArrivalCosts` (differentiable: ``vc``, training) or afterwards from the kernel's
records by :func:`recorded_arrival_cost` (detached: checks); both evaluate the same
:func:`arrival_weight_of` and :meth:`FrameObservation.cost`.

Shapes: per-path terms ``(batch,)``; window observations ``(batch, T, C, *space)`` (lifted)
with masks ``(T, C, *space)`` or ``(batch, T, C, *space)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..guidance import Guidance, SubStepState
from ..observe import FrameObservation
from .rollouts import GuidedRollout

__all__ = [
    "ArrivalCosts",
    "ObjectiveTerms",
    "arrival_weight_of",
    "control_objective",
    "objective_terms",
    "recorded_arrival_cost",
    "terminal_cost",
    "window_observations",
]

ArrivalWeight = float | Sequence[float]
"""w_s: one float for every sub-step, or S floats in the kernel's order (s = S, ..., 1)."""


@dataclass(frozen=True)
class ObjectiveTerms:
    """The terms of J_path for a batch of paths, each ``(batch,)``.

    Attributes:
        objective: terminal + arrival + beta * kl.
        terminal: sum_j l(y_j, x_j).
        arrival: sum_{j,s} w_s l(y_j, x0_hat_{j,s}) (zeros without arrival costs).
        kl: sum_j KL_j, the control energy reported by the kernel.
    """

    objective: torch.Tensor
    terminal: torch.Tensor
    arrival: torch.Tensor
    kl: torch.Tensor


def window_observations(
    observation: torch.Tensor, mask: torch.Tensor, sigma: float | torch.Tensor
) -> list[FrameObservation | None]:
    """Per-frame observations of a window of lifted observations (None: frame unobserved).

    Args:
        observation: lifted y, ``(batch, T, channels, *space)``.
        mask: bool, ``(T, channels, *space)`` or ``(batch, T, channels, *space)``.
        sigma: sigma_y > 0, a float or ``(batch,)``.

    Returns:
        T entries, each a :class:`~ardm_infer.observe.FrameObservation` of ``(batch, ...)``
        or None where no batch element observes anything.
    """
    batched = mask.ndim == observation.ndim
    out: list[FrameObservation | None] = []
    for j in range(observation.shape[1]):
        y = observation[:, j]
        m = (mask[:, j] if batched else mask[j]).expand_as(y)
        out.append(FrameObservation(y, sigma, mask=m) if bool(m.any()) else None)
    return out


def arrival_weight_of(weight: ArrivalWeight, substep: int, substeps: int) -> float:
    """w_s of sub-step s (S..1) from a float or a sequence in the kernel's order."""
    if isinstance(weight, int | float):
        return float(weight)
    weights = list(weight)
    if len(weights) != substeps:
        raise ValueError(f"need {substeps} arrival weights, got {len(weights)}")
    return float(weights[substeps - substep])


def _has_arrival(weight: ArrivalWeight) -> bool:
    if isinstance(weight, int | float):
        return weight != 0
    return any(float(w) != 0 for w in weight)


def objective_terms(
    rollout: GuidedRollout,
    observations: Sequence[FrameObservation | None],
    *,
    beta: float = 1.0,
    arrival: torch.Tensor | None = None,
) -> ObjectiveTerms:
    """J_path's terms of a rollout (module docstring), differentiable when the rollout is.

    Args:
        rollout: a :class:`~ardm_infer.soc.GuidedRollout` of T frames.
        observations: T entries, the observation of frame j or None (no cost).
        beta: weight of the KL.
        arrival: the arrival costs ``(batch,)`` (from :class:`ArrivalCosts` or
            :func:`recorded_arrival_cost`), or None for w = 0.

    Returns:
        :class:`ObjectiveTerms`.
    """
    frames = rollout.frames
    if len(observations) != frames.shape[1]:
        raise ValueError(
            f"need one observation (or None) per frame ({frames.shape[1]}), got {len(observations)}"
        )
    zeros = torch.zeros(frames.shape[0], dtype=frames.dtype, device=frames.device)
    terminal, kl = zeros, zeros
    for j, observation in enumerate(observations):  # frame by frame, as the rollout ran
        if observation is not None:
            terminal = terminal + observation.cost(frames[:, j])
        kl = kl + rollout.kl[:, j]
    arrival = zeros if arrival is None else arrival
    return ObjectiveTerms(
        objective=terminal + arrival + beta * kl, terminal=terminal, arrival=arrival, kl=kl
    )


def recorded_arrival_cost(
    rollout: GuidedRollout,
    observations: Sequence[FrameObservation | None],
    weight: ArrivalWeight,
) -> torch.Tensor:
    """sum_{j,s} w_s l(y_j, x0_hat_{j,s}) from a recorded rollout's (detached) x0_hat.

    Returns:
        ``(batch,)``.
    """
    if not rollout.recorded:
        raise ValueError("arrival costs need a recorded rollout (record=True)")
    frames = rollout.frames
    total = torch.zeros(frames.shape[0], dtype=frames.dtype, device=frames.device)
    for j, observation in enumerate(observations):
        infos = rollout.substeps[j]
        per_frame: torch.Tensor | float = 0.0
        for info in infos:
            w = arrival_weight_of(weight, info.substep, len(infos))
            if w and observation is not None:
                per_frame = per_frame + w * observation.cost(info.x0_hat)
        total = total + per_frame
    return total


class ArrivalCosts:
    """Records w_s l(y_j, x0_hat_{j,s}) live, at every sub-step of the frames it guides.

    :meth:`wrap` gives one guidance per frame that records the cost (differentiable through
    ``x0_hat`` when gradients are on) and then returns the wrapped guidance's control (or no
    control); pass them to :func:`~ardm_infer.soc.guided_rollout` and :attr:`total` to
    :func:`objective_terms`.

    Args:
        observations: one per frame of the window (None = no cost).
        weight: w_s.
    """

    def __init__(
        self, observations: Sequence[FrameObservation | None], weight: ArrivalWeight
    ) -> None:
        self.observations = list(observations)
        self.weight = weight
        self.per_frame: list[torch.Tensor | float] = [0.0] * len(self.observations)

    def wrap(self, guidance: Guidance | Sequence[Guidance | None] | None = None) -> list[Guidance]:
        """One recording guidance per frame around ``guidance`` (one, one per frame, None)."""
        frames = len(self.observations)
        if guidance is None or isinstance(guidance, Guidance):
            inner: list[Guidance | None] = [guidance] * frames
        else:
            inner = list(guidance)
            if len(inner) != frames:
                raise ValueError(f"need one guidance per frame ({frames}), got {len(inner)}")
        return [_ArrivalRecorder(self, j, g) for j, g in enumerate(inner)]

    def add(self, frame: int, state: SubStepState) -> None:
        """Record the arrival cost of one sub-step of window frame ``frame``."""
        observation = self.observations[frame]
        w = arrival_weight_of(self.weight, state.substep, state.substeps)
        if w and observation is not None:
            self.per_frame[frame] = self.per_frame[frame] + w * observation.cost(state.x0_hat)

    def total_like(self, reference: torch.Tensor) -> torch.Tensor:
        """sum_j of the recorded costs, ``(batch,)`` in ``reference``'s dtype and device."""
        total = torch.zeros(reference.shape[0], dtype=reference.dtype, device=reference.device)
        for cost in self.per_frame:
            total = total + cost
        return total


class _ArrivalRecorder:
    """Guidance of one frame: record the arrival cost, then delegate the control."""

    def __init__(self, owner: ArrivalCosts, frame: int, inner: Guidance | None) -> None:
        self.owner = owner
        self.frame = frame
        self.inner = inner
        self.needs_grad = bool(getattr(inner, "needs_grad", False))

    def control(self, state: SubStepState) -> torch.Tensor | None:
        self.owner.add(self.frame, state)
        return None if self.inner is None else self.inner.control(state)


def terminal_cost(
    frames: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
) -> torch.Tensor:
    """sum_j l(y_j, x_j) = sum_j |M_j (y_j - x_j)|^2 / (2 sigma_y^2) over a window.

    The terminal term of :func:`objective_terms`, with the library's one observation cost.

    Args:
        frames: x, ``(batch, T, channels, *space)``.
        observation: lifted y, ``(batch, T, channels, *space)``.
        mask: bool, ``(T, channels, *space)`` or ``(batch, T, channels, *space)``.
        sigma: sigma_y > 0, a float or ``(batch,)``.

    Returns:
        ``(batch,)``.
    """
    zeros = torch.zeros(frames.shape[0], dtype=frames.dtype, device=frames.device)
    total = zeros
    for j, frame in enumerate(window_observations(observation, mask, sigma)):
        if frame is not None:
            total = total + frame.cost(frames[:, j])
    return total


def control_objective(
    rollout: GuidedRollout,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    beta: float = 1.0,
    arrival_weight: ArrivalWeight = 0.0,
) -> torch.Tensor:
    """The single-path control objective J_path of a rollout, whose Q^u-mean is J(u).

    :func:`objective_terms` with lifted window observations; arrival costs (w_s > 0) are
    evaluated from the recorded x0_hat (:func:`recorded_arrival_cost`).  With beta = 1 and
    w = 0, E_{Q^u}[J_path] = KL(Q^u || posterior) - log E_P[exp(-sum_j l)].

    Args:
        rollout: a :class:`~ardm_infer.soc.GuidedRollout` (recorded if any w_s > 0).
        observation: lifted y, ``(batch, T, channels, *space)``.
        mask: bool, ``(T, channels, *space)`` or ``(batch, T, channels, *space)``.
        sigma: sigma_y > 0, a float or ``(batch,)``.
        beta: weight of the KL.
        arrival_weight: w_s, a float for every sub-step or a sequence of S floats in the
            recorded order (s = S, ..., 1).

    Returns:
        ``(batch,)``.
    """
    observations = window_observations(observation, mask, sigma)
    arrival = None
    if _has_arrival(arrival_weight):
        arrival = recorded_arrival_cost(rollout, observations, arrival_weight)
    return objective_terms(rollout, observations, beta=beta, arrival=arrival).objective
