"""What the library knows about one dynamical system, in one place (docs/design.md §3, §6, §7).

A :class:`System` gathers everything generic code would otherwise get by branching on a PDE
name: the frame shape and the names of its spatial dimensions, the solver and its config,
the default data set, the physics and spectrum diagnostics of the benchmark, labels and
units for tables and figures, the strides of the named observation regimes, the benchmark's
horizons and the names of the shipped artifacts.  A new system is one module defining a
subclass plus one row in :mod:`ardm_infer.systems` (see ``register_system``).

Shapes: a frame is ``(channels, *space)`` with ``len(space) == len(space_dims)``; the
diagnostics take fields ``(..., channels, *space)`` and reduce the frame.

:class:`NormalisedProcess` runs a system's numerical solver as a process in the normalised
units of a data set, so that the benchmark scores a solver with exactly the observation
regimes (whose noise is in normalised units, §6) and units it uses for an ARDM.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .. import metrics

__all__ = ["DataSizes", "NormalisedProcess", "System"]


@dataclass(frozen=True)
class DataSizes:
    """The default data set of a system, apart from its solver config.

    Attributes:
        train, val, test: trajectories per split.
        frames: frames per trajectory (after the burn-in).
        burn_in: time units integrated and discarded before the first frame.
    """

    train: int
    val: int
    test: int
    frames: int
    burn_in: float


class System(abc.ABC):
    """One dynamical system: a subclass sets the class attributes and the diagnostics.

    Attributes:
        name: the canonical name (``"ks"``); ``DataConfig.pde`` and ``benchmark(pde=...)``.
        aliases: other accepted spellings (compared after lower-casing, ``_``/space -> ``-``).
        title: a heading, e.g. ``"Kuramoto–Sivashinsky (1-D)"``.
        short_title: a short label for figure titles, e.g. ``"KS"``.
        space_dims: names of the spatial dimensions of a frame, e.g. ``("x",)``.
        channels: channels of a frame.
        field_label: what a frame holds, e.g. ``"u"`` or ``"vorticity ω"``.
        physics_name: the benchmark's physics diagnostic in words, e.g. ``"total variation"``.
        physics_label: an axis label for it, e.g. ``"total variation of u"``.
        physics_units: its units (``""``: the system's non-dimensional units).
        preset_strides: ``{"dense": s, "sparse": s}``, the observation stride of the named
            regimes (per spatial axis; docs/design.md §6).
        quick_horizon: frames of the benchmark's ``quick`` preset.
        short_horizon, long_horizon: the evaluation horizons of docs/design.md §7 (the
            ``paper`` preset runs the short one).
        field_times: frames of trajectory 0 the benchmark stores as fields (None: all).
        shipped_ardm: name of the shipped ARDM (``load_ardm(name)``), or None.
        shipped_controller: name of the shipped controller, or None.
        solver_config_type: the solver's frozen config dataclass.
        data_sizes: the default data set (:class:`DataSizes`).
    """

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    title: ClassVar[str]
    short_title: ClassVar[str]
    space_dims: ClassVar[tuple[str, ...]]
    channels: ClassVar[int] = 1
    field_label: ClassVar[str]
    physics_name: ClassVar[str]
    physics_label: ClassVar[str]
    physics_units: ClassVar[str] = ""
    preset_strides: ClassVar[Mapping[str, int]]
    quick_horizon: ClassVar[int]
    short_horizon: ClassVar[int]
    long_horizon: ClassVar[int]
    field_times: ClassVar[int | None] = None
    shipped_ardm: ClassVar[str | None] = None
    shipped_controller: ClassVar[str | None] = None
    solver_config_type: ClassVar[type]
    data_sizes: ClassVar[DataSizes]

    # ------------------------------------------------------------------ solver and data

    def solver_config(self, values: Mapping[str, Any] | Any | None = None) -> Any:
        """The solver config: the default (None), or one built from a dict (a card's
        ``data_config["solver"]``); a config instance is returned as is."""
        if values is None:
            return self.solver_config_type()
        if isinstance(values, self.solver_config_type):
            return values
        if not isinstance(values, Mapping):
            raise TypeError(
                f"solver config of {self.name!r} must be a {self.solver_config_type.__name__} "
                f"or a dict, got {type(values).__name__}"
            )
        return self.solver_config_type(**values)

    @abc.abstractmethod
    def make_solver(self, solver_config: Any) -> Any:
        """The numerical solver for ``solver_config`` (also a process on stored frames)."""
        ...

    @abc.abstractmethod
    def space_shape(self, solver_config: Any) -> tuple[int, ...]:
        """Spatial shape of a stored frame, one entry per :attr:`space_dims`."""
        ...

    def frame_shape(self, solver_config: Any, channels: int | None = None) -> tuple[int, ...]:
        """``(channels, *space)`` of a stored frame (``channels`` default :attr:`channels`)."""
        count = self.channels if channels is None else channels
        return (count, *self.space_shape(self.solver_config(solver_config)))

    def stored_frame(self, state: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """The stored frame ``(batch, *space)`` of a solver state (default: the state)."""
        return state

    # ------------------------------------------------------------------ diagnostics

    @abc.abstractmethod
    def physics(self, fields: torch.Tensor, solver_config: Any) -> torch.Tensor:
        """The physics diagnostic of physical-unit fields ``(..., channels, *space)`` ->
        ``(...)``; ``solver_config`` supplies parameters such as a viscosity."""
        ...

    def spectrum(self, fields: torch.Tensor) -> torch.Tensor:
        """Per-field energy spectrum ``(..., channels, *space)`` -> ``(..., K)`` of channel 0
        (default: :func:`ardm_infer.metrics.energy_spectrum`, Parseval-normalised)."""
        return metrics.energy_spectrum(
            self.first_channel(fields), space_dims=len(self.space_dims), reduce_batch=False
        )

    def first_channel(self, fields: torch.Tensor) -> torch.Tensor:
        """Channel 0 of ``(..., channels, *space)`` -> ``(..., *space)``."""
        return fields.select(-1 - len(self.space_dims), 0)

    # ------------------------------------------------------------------ presets

    def preset_stride(self, base: str) -> int:
        """Stride of the named regime ``base`` (``"dense"`` or ``"sparse"``)."""
        return self.preset_strides[base]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (for ``ardm-infer`` listings and result attributes)."""
        return {
            "name": self.name,
            "title": self.title,
            "space_dims": list(self.space_dims),
            "frame_shape": list(self.frame_shape(None)),
            "physics": self.physics_label,
            "preset_strides": dict(self.preset_strides),
            "horizons": {
                "quick": self.quick_horizon,
                "short": self.short_horizon,
                "long": self.long_horizon,
            },
            "shipped_ardm": self.shipped_ardm,
            "shipped_controller": self.shipped_controller,
            "data_sizes": dataclasses.asdict(self.data_sizes),
        }

    def __repr__(self) -> str:
        return f"<system {self.name!r}: {self.title}>"


class NormalisedProcess:
    """A numerical process seen in normalised units: ``z -> (step(z s + m) - m) / s``.

    Args:
        process: a process on physical-unit frames (e.g. :class:`~ardm_infer.dynamics.Lorenz96`).
        mean, std: per-channel statistics ``(channels,)`` of the data set (its train split).
        name: a label (``"lorenz96-solver"``).

    Frames are ``(batch, k, channels, *space)`` in and ``(batch, channels, *space)`` out, in
    the dtype and on the device of the input; the statistics follow the input.
    """

    def __init__(
        self, process: Any, mean: torch.Tensor, std: torch.Tensor, name: str = "solver"
    ) -> None:
        self.process = process
        self.mean = mean
        self.std = std
        self.name = name

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.process.frame_shape)

    @property
    def context_length(self) -> int:
        return int(self.process.context_length)

    @property
    def stochastic(self) -> bool:
        return bool(self.process.stochastic)

    def _statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, *([1] * (len(self.frame_shape) - 1)))
        return self.mean.to(x).reshape(shape), self.std.to(x).reshape(shape)

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch, k, channels, *space)`` normalised -> ``(batch, channels, *space)``."""
        mean, std = self._statistics(context)
        following = self.process.step(context * std + mean, generator)
        return (following - mean) / std

    def __repr__(self) -> str:
        return f"NormalisedProcess({self.name})"
