"""Lorenz-96 (40 variables, F = 8, a frame every 0.05), see :mod:`ardm_infer.dynamics.lorenz96`.

The classical twin-experiment model (Sakov & Oke 2008).  No ARDM or controller is shipped for
it: ``benchmark(pde="lorenz96")`` runs the numerical model itself as the process (in the
normalised units of its data set), so ``forecast``, ``smc`` and ``enkf`` go through the same
cells as on an ARDM and the guided strategies refuse it by name.

Choices (stated here, used by the presets and the benchmark): regimes observe every 4th
variable (``dense``, 10 of 40, the KS fraction) or every 8th (``sparse``, 5 of 40); the
horizons are 200 / 800 frames (10 / 40 time units, about 17 / 67 Lyapunov times at a leading
exponent of 1.7); the physics diagnostic is the mean energy ``½ mean_i x_i²``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch

from ..dynamics import Lorenz96, Lorenz96Config
from .base import DataSizes, System

__all__ = ["Lorenz96System", "mean_energy"]


def mean_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean energy of a Lorenz-96 state, ``½ mean_i x_i²``.

    Args:
        x: ``(..., n)``.

    Returns:
        ``(...)``.
    """
    return 0.5 * x.square().mean(dim=-1)


class Lorenz96System(System):
    """Lorenz-96: 40 variables, presets stride 4 / 8, horizons 200 / 800."""

    name = "lorenz96"
    aliases = ("l96", "lorenz-96")
    title = "Lorenz-96 (40 variables)"
    short_title = "Lorenz-96"
    space_dims = ("x",)
    field_label = "x"
    physics_name = "mean energy"
    physics_label = "mean energy ½⟨x²⟩"
    preset_strides = MappingProxyType({"dense": 4, "sparse": 8})
    quick_horizon = 64
    short_horizon = 200
    long_horizon = 800
    field_times = None
    shipped_ardm = None
    shipped_controller = None
    solver_config_type = Lorenz96Config
    data_sizes = DataSizes(train=16, val=4, test=8, frames=1000, burn_in=20.0)

    def make_solver(self, solver_config: Any) -> Lorenz96:
        return Lorenz96(self.solver_config(solver_config))

    def space_shape(self, solver_config: Any) -> tuple[int, ...]:
        return (int(self.solver_config(solver_config).variables),)

    def physics(self, fields: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """Mean energy ``½ ⟨x²⟩``, ``(..., 1, n)`` -> ``(...)``."""
        return mean_energy(fields[..., 0, :])
