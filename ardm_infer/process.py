"""The process protocol: anything that advances a batch of states one physical frame.

Numerical dynamics (KS, Kolmogorov, Lorenz-96, the linear-Gaussian twin) and the ARDM
are all processes, so that ``forecast``, ``smc`` and ``enkf`` run on each of them
(docs/design.md §3).  A process maps the last ``context_length`` frames to the next frame.

Shapes: ``frame_shape = (channels, *space)``; a batch of contexts is
``(batch, context_length, channels, *space)`` and one step returns
``(batch, channels, *space)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:  # annotations only: the ARDM imports this module
    from .ardm.process import FrameResult
    from .ardm.schedule import Schedule
    from .guidance import Guidance


@runtime_checkable
class Process(Protocol):
    """A (possibly stochastic) map from the last k frames to the next frame."""

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """``(channels, *space)`` of one frame."""
        ...

    @property
    def context_length(self) -> int:
        """Number of past frames k the next frame depends on."""
        ...

    @property
    def stochastic(self) -> bool:
        """Whether :meth:`step` draws random numbers."""
        ...

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Advance one physical frame.

        Args:
            context: ``(batch, context_length, channels, *space)``.
            generator: source of randomness for stochastic processes.

        Returns:
            The next frame, ``(batch, channels, *space)``.
        """
        ...


@runtime_checkable
class GuidedProcess(Process, Protocol):
    """A process whose frames come from guided denoising sub-steps (the ARDM).

    Strategies that steer sub-steps (``dps``, ``vc``, ``controller``, guided ``smc``) need
    this protocol; ``isinstance(process, GuidedProcess)`` is the one check for it.
    """

    @property
    def schedule(self) -> Schedule:
        """The sampler's noise schedule (sub-steps, eta)."""
        ...

    def step_frame(
        self,
        context: torch.Tensor,
        generator: torch.Generator | None = None,
        guidance: Guidance | None = None,
        frame: int = 0,
        record: bool = False,
    ) -> FrameResult:
        """Generate the next frame ``(batch, channels, *space)`` from ``context``
        ``(batch, >= k, channels, *space)`` under ``guidance``, with its KL and log-ratio."""
        ...


def rollout(
    process: Process,
    context: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run ``process`` for ``steps`` frames from ``context``.

    Args:
        context: ``(batch, k, channels, *space)`` with ``k >= process.context_length``.
        steps: number of new frames.

    Returns:
        ``(batch, steps, channels, *space)``, the new frames only.
    """
    k = process.context_length
    if context.ndim < 3 or context.shape[1] < k:
        raise ValueError(
            f"context must have shape (batch, >= {k}, channels, *space); got {tuple(context.shape)}"
        )
    window = context[:, -k:]
    frames = []
    for _ in range(steps):
        nxt = process.step(window, generator)
        frames.append(nxt)
        window = torch.cat([window[:, 1:], nxt.unsqueeze(1)], dim=1)
    return torch.stack(frames, dim=1)
