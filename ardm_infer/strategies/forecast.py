"""``forecast``: the unguided ensemble, the floor every method must beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..process import Process
from .base import Problem, StrategyState, initial_window, propagate, register


@register
class Forecast:
    """Members run the process from the true context, ignoring all observations."""

    name = "forecast"

    @dataclass(frozen=True)
    class Config:
        """No options."""

    def init(
        self,
        process: Process,
        problem: Problem,
        members: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        return StrategyState(window=initial_window(problem, members, process.context_length))

    def step(
        self,
        process: Process,
        problem: Problem,
        state: StrategyState,
        t: int,
        config: Config,
        generator: torch.Generator,
    ) -> StrategyState:
        with torch.no_grad():
            state.push(propagate(process, state.window, generator, frame=t).frame)
        return state
