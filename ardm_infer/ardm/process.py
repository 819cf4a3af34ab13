"""The ARDM as a stochastic sequential process.

One physical step t -> t+1 runs S guided sub-steps (:func:`~ardm_infer.ardm.kernel.substep`)
from z_S ~ N(0, sigma_max^2 I) to z_0, the emitted frame, conditioned on the last k frames.
Everything is batched: the batch dimension holds members x trajectories flattened.
The ARDM works in normalised units (see :meth:`ardm_infer.data.Dataset.normalise`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from ..guidance import Guidance
from .kernel import Denoiser, SubStepInfo, substep
from .schedule import Schedule


@dataclass
class DenoiserCallCounter:
    """Denoiser evaluations counted per batch element, owned by whoever opened it.

    Attributes:
        calls: evaluations so far (a batch of B latents through one sub-step counts B).
    """

    calls: int = 0


_COUNTERS: ContextVar[tuple[DenoiserCallCounter, ...]] = ContextVar(
    "ardm_infer_denoiser_counters", default=()
)


@contextmanager
def count_denoiser_calls() -> Iterator[DenoiserCallCounter]:
    """Count the denoiser calls of every ARDM run inside the ``with`` block.

    Counters nest (an outer benchmark and an inner run each count what ran inside them) and
    are private to the thread / context that opened them, so concurrent runs never mix::

        with count_denoiser_calls() as counter:
            ardm.step_frame(context, generator)
        counter.calls  # batch * substeps
    """
    counter = DenoiserCallCounter()
    token = _COUNTERS.set((*_COUNTERS.get(), counter))
    try:
        yield counter
    finally:
        _COUNTERS.reset(token)


@dataclass(frozen=True)
class FrameResult:
    """One physical step of the ARDM.

    Attributes:
        frame: z_0, ``(batch, channels, *space)``.
        kl: sum over sub-steps of |u_s|^2 / (2 tau_s^2), ``(batch,)``.
        log_ratio: sum over sub-steps of log q_u - log p of the steps taken, ``(batch,)``.
        substeps: per-sub-step :class:`SubStepInfo` (S first), when recorded.
    """

    frame: torch.Tensor
    kl: torch.Tensor
    log_ratio: torch.Tensor
    substeps: list[SubStepInfo] = field(default_factory=list)


class ARDM:
    """An autoregressive diffusion model behind the :class:`~ardm_infer.process.Process` API.

    Args:
        denoiser: ``D(z, sigma, context)``; z ``(batch, C, *space)``, sigma ``(batch,)``,
            context ``(batch, k, C, *space)``.
        schedule: the sampling :class:`Schedule`.
        frame_shape: ``(channels, *space)``.
        context_length: k.
        name: label used in reports.
        card: the artifact card of a learned denoiser (None for analytic ones).
        mean, std: ``(channels,)``, the normalisation of the training data (the ARDM works
            in normalised units ``(x - mean) / std``); None when not known.
    """

    stochastic = True

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: Schedule,
        frame_shape: tuple[int, ...],
        context_length: int,
        name: str = "ardm",
        *,
        card: dict[str, Any] | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        if context_length < 1:
            raise ValueError("context_length must be >= 1")
        self.denoiser = denoiser
        self.schedule = schedule
        self._frame_shape = tuple(frame_shape)
        self._context_length = context_length
        self.name = name
        self.card = card
        self.mean = mean
        self.std = std

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._frame_shape

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def dtype(self) -> torch.dtype | None:
        """The floating dtype the denoiser computes in (its parameters'), or None if it has
        no parameters and works in the dtype of its input (the analytic denoiser)."""
        parameters = getattr(self.denoiser, "parameters", None)
        if callable(parameters):
            for parameter in parameters():
                return parameter.dtype
        return None

    def with_schedule(self, schedule: Schedule) -> ARDM:
        """The same model with another schedule (e.g. more sub-steps, or eta = 0)."""
        return ARDM(
            self.denoiser,
            schedule,
            self._frame_shape,
            self._context_length,
            self.name,
            card=self.card,
            mean=self.mean,
            std=self.std,
        )

    def _check_context(self, context: torch.Tensor) -> torch.Tensor:
        k = self._context_length
        if (
            context.ndim != 2 + len(self._frame_shape)
            or tuple(context.shape[2:]) != self._frame_shape
        ):
            raise ValueError(
                f"context must be (batch, >= {k}, {', '.join(map(str, self._frame_shape))}); "
                f"got {tuple(context.shape)}"
            )
        if context.shape[1] < k:
            raise ValueError(f"need at least {k} context frames, got {context.shape[1]}")
        return context[:, -k:]

    def step_frame(
        self,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
        guidance: Guidance | None = None,
        frame: int = 0,
        record: bool = False,
    ) -> FrameResult:
        """Generate the next frame for every batch element.

        Args:
            context: ``(batch, >= k, channels, *space)``; the last k frames are used.
            generator: the only source of randomness (initial latent, then one xi per sub-step).
            guidance: optional control at every sub-step.
            frame: frame index passed on to the guidance.
            record: keep the per-sub-step infos.
        """
        context = self._check_context(context)
        batch = context.shape[0]
        z = self.schedule.initial_latent(
            (batch, *self._frame_shape), generator, dtype=context.dtype, device=context.device
        )
        kl = torch.zeros(batch, dtype=context.dtype, device=context.device)
        log_ratio = torch.zeros_like(kl)
        infos: list[SubStepInfo] = []
        counters = _COUNTERS.get()
        for s in range(self.schedule.substeps, 0, -1):
            z, info = substep(
                self.denoiser, self.schedule, z, s, context, generator, guidance, frame
            )
            for counter in counters:
                counter.calls += batch
            kl = kl + info.kl
            log_ratio = log_ratio + info.log_ratio
            if record:
                infos.append(info)
        return FrameResult(frame=z, kl=kl, log_ratio=log_ratio, substeps=infos)

    def step(
        self,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
        guidance: Guidance | None = None,
    ) -> torch.Tensor:
        """Process interface: ``(batch, k, C, *space)`` -> next frame ``(batch, C, *space)``."""
        return self.step_frame(context, generator, guidance).frame
