"""Kolmogorov flow (2-D vorticity, periodic square), see :mod:`ardm_infer.dynamics.kolmogorov`.

Frames ``(1, n, n)`` of vorticity at the stored resolution ``output_grid`` (64 by default;
simulated at 128).  The benchmark's physics diagnostic is the mean dissipation rate
``ν ⟨ω²⟩``, its spectrum the kinetic-energy shell spectrum computed from the vorticity
(:func:`ardm_infer.metrics.kolmogorov_energy_spectrum`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch

from .. import metrics
from ..dynamics import KolmogorovConfig, KolmogorovFlow, spectral_resample
from .base import DataSizes, System

__all__ = ["KolmogorovSystem", "dissipation", "enstrophy"]


def enstrophy(vorticity: torch.Tensor) -> torch.Tensor:
    """Mean enstrophy of a 2-D flow, ``Z = ½ mean_x ω²``.

    Args:
        vorticity: ``(..., n_x, n_y)``.

    Returns:
        ``(...)``.
    """
    return 0.5 * vorticity.square().mean(dim=(-2, -1))


def dissipation(vorticity: torch.Tensor, viscosity: float) -> torch.Tensor:
    """Mean kinetic-energy dissipation rate of a 2-D periodic flow, ``ε = ν mean_x ω²``.

    For incompressible flow on a periodic domain ``ν ⟨|∇u|²⟩ = ν ⟨ω²⟩``, so
    ``ε = 2 ν Z`` with ``Z`` from :func:`enstrophy`.

    Args:
        vorticity: ``(..., n_x, n_y)``.
        viscosity: kinematic viscosity ``ν`` (``1/Re`` in non-dimensional units).

    Returns:
        ``(...)``.
    """
    return viscosity * vorticity.square().mean(dim=(-2, -1))


class KolmogorovSystem(System):
    """Kolmogorov flow: 64² frames, presets stride 4 / 8 per axis, horizons 60 / 180."""

    name = "kolmogorov"
    aliases = ("kolmogorov2d", "kolmogorov-2d")
    title = "Kolmogorov flow (2-D)"
    short_title = "Kolmogorov"
    space_dims = ("x", "y")
    field_label = "vorticity ω"
    physics_name = "dissipation"
    physics_label = "dissipation ν⟨ω²⟩"
    preset_strides = MappingProxyType({"dense": 4, "sparse": 8})
    quick_horizon = 24
    short_horizon = 60
    long_horizon = 180
    field_times = 6
    shipped_ardm = "kolmogorov"
    shipped_controller = "kolmogorov"
    solver_config_type = KolmogorovConfig
    data_sizes = DataSizes(train=24, val=4, test=8, frames=250, burn_in=10.0)

    def make_solver(self, solver_config: Any) -> KolmogorovFlow:
        return KolmogorovFlow(self.solver_config(solver_config))

    def space_shape(self, solver_config: Any) -> tuple[int, ...]:
        grid = int(self.solver_config(solver_config).output_grid)
        return (grid, grid)

    def stored_frame(self, state: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """Spectral truncation of the simulated vorticity to ``output_grid``."""
        return spectral_resample(state, self.solver_config(solver_config).output_grid)

    def physics(self, fields: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """Dissipation ``ν ⟨ω²⟩`` with ``ν = 1/Re``, ``(..., 1, n, n)`` -> ``(...)``."""
        reynolds = float(self.solver_config(solver_config).reynolds)
        return dissipation(fields[..., 0, :, :], 1.0 / reynolds)

    def spectrum(self, fields: torch.Tensor) -> torch.Tensor:
        """Kinetic-energy shell spectrum of the vorticity, ``(..., 1, n, n)`` -> ``(..., K)``."""
        return metrics.kolmogorov_energy_spectrum(fields[..., 0, :, :], reduce_batch=False)
