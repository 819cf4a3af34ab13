"""The systems registry: one :class:`System` per dynamical system, looked up by name.

Generic code (data generation, regime presets, the benchmark, reports and figures, artifact
loading) asks the registry instead of branching on a PDE name::

    from ardm_infer.systems import get_system
    system = get_system("ks")
    system.space_dims, system.physics_label, system.preset_strides, system.short_horizon

A new system is one module (a :class:`System` subclass, see :mod:`ardm_infer.systems.ks`) plus
one row below (or a call to :func:`register_system` from user code).

Shipped rows: ``ks`` (Kuramoto–Sivashinsky 1-D), ``kolmogorov`` (Kolmogorov flow 2-D),
``lorenz96`` (Lorenz-96, 40 variables).
"""

from __future__ import annotations

import difflib
import re

from .base import DataSizes, NormalisedProcess, System
from .kolmogorov import KolmogorovSystem
from .ks import KuramotoSivashinskySystem
from .lorenz96 import Lorenz96System

__all__ = [
    "DataSizes",
    "NormalisedProcess",
    "System",
    "available_systems",
    "canonical_name",
    "get_system",
    "lookup_system",
    "register_system",
    "unregister_system",
]

_SYSTEMS: dict[str, System] = {}
_ALIASES: dict[str, str] = {}


def _spelling(name: str) -> str:
    """Lower case; runs of blanks, ``_`` and ``-`` as one ``-`` (as regime names)."""
    return re.sub(r"[\s_-]+", "-", name.strip().lower())


def register_system(system: System) -> System:
    """Add ``system`` under its name and aliases (``ValueError`` if one is taken)."""
    if not isinstance(system, System):
        raise TypeError(f"register_system takes a System instance, got {type(system).__name__}")
    names = [system.name, *system.aliases]
    for spelling in map(_spelling, names):
        owner = _ALIASES.get(spelling)
        if owner is not None and owner != system.name:
            raise ValueError(f"the name {spelling!r} already belongs to the system {owner!r}")
    if system.name in _SYSTEMS:
        raise ValueError(f"a system named {system.name!r} is already registered")
    _SYSTEMS[system.name] = system
    for spelling in map(_spelling, names):
        _ALIASES[spelling] = system.name
    return system


def unregister_system(name: str) -> None:
    """Remove a system and its aliases from the registry (tests and tutorials)."""
    system = _SYSTEMS.pop(name, None)
    if system is None:
        return
    for spelling in [k for k, v in _ALIASES.items() if v == name]:
        del _ALIASES[spelling]


def available_systems() -> tuple[str, ...]:
    """Canonical names of the registered systems, in registration order."""
    return tuple(_SYSTEMS)


def lookup_system(name: object) -> System | None:
    """The system called ``name`` (any registered spelling), or None."""
    if not isinstance(name, str):
        return None
    canonical = _ALIASES.get(_spelling(name))
    return None if canonical is None else _SYSTEMS[canonical]


def get_system(name: object) -> System:
    """The system called ``name`` (any registered spelling); ``ValueError`` suggesting close
    names otherwise."""
    system = lookup_system(name)
    if system is not None:
        return system
    key = _spelling(name) if isinstance(name, str) else ""
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.5)
    hint = ("did you mean " + " or ".join(repr(c) for c in close) + "? ") if close else ""
    raise ValueError(f"unknown pde {name!r}; {hint}known systems: {', '.join(available_systems())}")


def canonical_name(name: object) -> str:
    """The canonical name of the system called ``name`` (``"KS-1D"`` -> ``"ks"``)."""
    return get_system(name).name


# The registry rows.
register_system(KuramotoSivashinskySystem())
register_system(KolmogorovSystem())
register_system(Lorenz96System())
