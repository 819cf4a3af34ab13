"""``forecast``: the unguided ensemble, the floor every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..process import Process
from .base import ProblemView, StrategyState, initial_window, propagate, register


@register
class Forecast:
    """Members run the process from the true context, ignoring all observations."""

    name = "forecast"
    divergence_hint = "the process itself diverged from this context (check its units)"

    @dataclass(frozen=True)
    class Config:
        """No options."""

    def lookahead(self, config: Config) -> int:
        """Reads no observation at all."""
        return 0

    def init(
        self,
        process: Process,
        problem: ProblemView,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        return StrategyState(window=initial_window(problem, members, process.context_length))

    def step(
        self,
        process: Process,
        problem: ProblemView,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        with torch.no_grad():
            return state.push(propagate(process, state.window, generator, frame=t).frame)
