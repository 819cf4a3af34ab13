"""Lorenz-96 (Lorenz 1996): dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, cyclic indices.

The classical data-assimilation test-bed: 40 variables, F = 8, RK4 with dt = 0.05 between
analyses (Sakov & Oke 2008).  States are ``(batch, variables)``; as a process, frames are
``(batch, 1, variables)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Lorenz96Config:
    """Attributes: variables (n), forcing F, dt of RK4, output_interval (multiple of dt)."""

    variables: int = 40
    forcing: float = 8.0
    dt: float = 0.05
    output_interval: float = 0.05

    def __post_init__(self) -> None:
        if self.variables < 4 or self.dt <= 0:
            raise ValueError(f"invalid Lorenz96Config: {self}")
        ratio = self.output_interval / self.dt
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("output_interval must be a multiple of dt")

    @property
    def substeps(self) -> int:
        return round(self.output_interval / self.dt)


class Lorenz96:
    """Batched RK4 Lorenz-96 solver and deterministic process."""

    context_length = 1
    stochastic = False

    def __init__(self, config: Lorenz96Config | None = None) -> None:
        self.config = config or Lorenz96Config()

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (1, self.config.variables)

    def tendency(self, x: torch.Tensor) -> torch.Tensor:
        """dx/dt for ``(batch, n)``."""
        return (
            (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1)
            - x
            + self.config.forcing
        )

    def integrate(self, x: torch.Tensor, steps: int, dt: float | None = None) -> torch.Tensor:
        """``steps`` classical RK4 steps of size ``dt`` (default config.dt) on ``(batch, n)``."""
        h = self.config.dt if dt is None else dt
        f = self.tendency
        for _ in range(steps):
            k1 = f(x)
            k2 = f(x + 0.5 * h * k1)
            k3 = f(x + 0.5 * h * k2)
            k4 = f(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x

    def trajectory(self, x0: torch.Tensor, frames: int) -> torch.Tensor:
        """``(batch, n)`` -> ``(batch, frames, n)`` at the output interval."""
        out = []
        x = x0
        for _ in range(frames):
            x = self.integrate(x, self.config.substeps)
            out.append(x)
        return torch.stack(out, dim=1)

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Process interface: ``(batch, k, 1, n)`` -> ``(batch, 1, n)``."""
        return self.integrate(context[:, -1, 0], self.config.substeps).unsqueeze(1)

    def random_initial_condition(
        self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """``F`` plus small Gaussian perturbations, ``(batch, n)``."""
        n = self.config.variables
        dev = generator.device
        x = torch.randn(batch, n, generator=generator, dtype=torch.float64, device=dev)
        return (self.config.forcing + 0.01 * x).to(dtype)
