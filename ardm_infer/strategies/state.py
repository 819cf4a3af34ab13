"""What a strategy passes from frame to frame, and what a run returns.

A strategy's state is an immutable value (docs/design.md §3: passed along, never hidden):
``step`` returns a new :class:`StrategyState` and never changes the one it was given.  The
state holds the window of the last k frames, the frames emitted so far, the log-weights,
per-frame diagnostics, the VJPs spent, and one typed ``carry`` that the strategy defines
itself (a frozen dataclass: e.g. ``vc``'s pending frames and warm-start controls, the
``controller``'s network).

Shapes: the window is ``(members, trajectories, k, C, *space)``; every frame
``(members, trajectories, C, *space)``; log-weights ``(members, trajectories)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["Cost", "StrategyResult", "StrategyState"]


def _frozen_diagnostics(diagnostics: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only mapping; list values become tuples (so they cannot grow in place)."""
    return MappingProxyType(
        {k: tuple(v) if isinstance(v, list) else v for k, v in diagnostics.items()}
    )


@dataclass(frozen=True, eq=False)
class StrategyState:
    """The state a strategy passes from frame to frame (immutable).

    Attributes:
        window: last k frames of every member, ``(members, trajectories, k, C, *space)``.
        frames: emitted frames so far, each ``(members, trajectories, C, *space)``.
        log_weights: normalised log-weights ``(members, trajectories)`` or None (equal).
        diagnostics: per-strategy records, read-only: per-frame records are tuples (one
            entry per frame, grown by :meth:`record`), other values (counters, labels) are
            set by :meth:`with_diagnostics`.
        vjps: VJPs spent so far (per batch element).
        carry: the strategy's own typed carry (a frozen dataclass it defines), or None.
    """

    window: torch.Tensor
    frames: tuple[torch.Tensor, ...] = ()
    log_weights: torch.Tensor | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    vjps: int = 0
    carry: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        object.__setattr__(self, "diagnostics", _frozen_diagnostics(self.diagnostics))

    def replace(self, **changes: Any) -> StrategyState:
        """A copy with ``changes`` (any field)."""
        return dataclasses.replace(self, **changes)

    def push(self, frame: torch.Tensor, **changes: Any) -> StrategyState:
        """The state after emitting ``frame`` ``(members, trajectories, C, *space)``: the frame
        appended and the window slid by one, plus ``changes`` to other fields."""
        window = torch.cat([self.window[:, :, 1:], frame.unsqueeze(2)], dim=2)
        return dataclasses.replace(self, window=window, frames=(*self.frames, frame), **changes)

    def record(self, **entries: Any) -> StrategyState:
        """Append one entry per key to the per-frame records (a new key starts a record)."""
        diagnostics = dict(self.diagnostics)
        for key, value in entries.items():
            diagnostics[key] = (*diagnostics.get(key, ()), value)
        return dataclasses.replace(self, diagnostics=diagnostics)

    def with_diagnostics(self, **values: Any) -> StrategyState:
        """Set diagnostics that are not per-frame records (counters, labels)."""
        return dataclasses.replace(self, diagnostics={**self.diagnostics, **values})


@dataclass
class Cost:
    """What a run cost.

    Attributes:
        wall_seconds: wall time of the run.
        denoiser_calls: network evaluations counted per batch element (0 for solvers),
            counted by the run itself (:func:`~ardm_infer.ardm.process.count_denoiser_calls`).
        vjps: vector-Jacobian products through the denoiser, per batch element.
        peak_memory_bytes: peak memory: CUDA max allocated on GPU, else the process's peak
            resident set size (a high-water mark over the whole process, not just this run).
        frames: physical frames assimilated.
    """

    wall_seconds: float = 0.0
    denoiser_calls: int = 0
    vjps: int = 0
    peak_memory_bytes: int = 0
    frames: int = 0

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.wall_seconds / max(self.frames, 1)


@dataclass
class StrategyResult:
    """Output of :func:`~ardm_infer.strategies.assimilate`.

    Attributes:
        strategy: registry name.
        config: the Config used.
        ensemble: ``(members, trajectories, horizon, C, *space)``.
        log_weights: ``(members, trajectories)`` normalised final log-weights, or None.
        cost: :class:`Cost`.
        diagnostics: strategy-specific records (ESS, resampling count, log-evidence, KL...),
            a plain dict whose per-frame records are lists.
    """

    strategy: str
    config: Any
    ensemble: torch.Tensor
    log_weights: torch.Tensor | None
    cost: Cost
    diagnostics: dict[str, Any]
