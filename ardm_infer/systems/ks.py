"""Kuramoto–Sivashinsky (1-D, periodic): u_t = -u u_x - u_xx - u_xxxx (docs/design.md §3).

Frames ``(1, grid)`` on ``[0, L)``; the default data set is L = 64, 256 points, a frame every
0.2 time units (see :mod:`ardm_infer.dynamics.ks`).  The benchmark's physics diagnostic is
the periodic total variation of u, its spectrum the 1-D Parseval-normalised energy spectrum.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch

from ..dynamics import KSConfig, KuramotoSivashinsky
from .base import DataSizes, System

__all__ = ["KuramotoSivashinskySystem", "total_variation"]


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Total variation of a periodic 1-D field (Kuramoto–Sivashinsky diagnostic).

    ``TV(u) = Σ_x |u_{x+1} − u_x|`` with ``u_n = u_0`` (periodic in the last dimension).

    Args:
        u: ``(..., n)``.

    Returns:
        ``(...)``.
    """
    return (u.roll(-1, dims=-1) - u).abs().sum(dim=-1)


class KuramotoSivashinskySystem(System):
    """KS: 256 points, presets stride 4 (dense) / 16 (sparse), horizons 140 / 640."""

    name = "ks"
    aliases = ("ks1d", "ks-1d", "kuramoto-sivashinsky")
    title = "Kuramoto–Sivashinsky (1-D)"
    short_title = "KS"
    space_dims = ("x",)
    field_label = "u"
    physics_name = "total variation"
    physics_label = "total variation of u"
    preset_strides = MappingProxyType({"dense": 4, "sparse": 16})
    quick_horizon = 48
    short_horizon = 140
    long_horizon = 640
    field_times = None
    shipped_ardm = "ks"
    shipped_controller = "ks"
    solver_config_type = KSConfig
    data_sizes = DataSizes(train=128, val=16, test=32, frames=700, burn_in=100.0)

    def make_solver(self, solver_config: Any) -> KuramotoSivashinsky:
        return KuramotoSivashinsky(self.solver_config(solver_config))

    def space_shape(self, solver_config: Any) -> tuple[int, ...]:
        return (int(self.solver_config(solver_config).grid),)

    def physics(self, fields: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """Total variation of u, ``(..., 1, n)`` -> ``(...)``."""
        return total_variation(fields[..., 0, :])
