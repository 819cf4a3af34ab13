"""Observations: operators, noise, the one log-likelihood, regimes and distributions over them
(docs/design.md §2, §6).

Canonical representation: an observation of frames ``(..., channels, *space)`` is kept
*lifted* to the full grid (zeros where unobserved) together with a boolean mask of the
same (or broadcastable) shape.  :class:`LinearOperator` covers any other linear ``H`` with
vector observations ``(..., n_observations)``.
"""

from .distribution import RegimeDistribution, resolve_regimes
from .likelihood import (
    FrameObservation,
    ObservationModel,
    log_likelihood,
    log_likelihood_linear,
    observation_cost,
    observation_cost_linear,
    observation_distribution,
)
from .operators import (
    LinearOperator,
    MaskOperator,
    ObservationOperator,
    add_noise,
    local_average_operator,
    random_mask,
    subsample_mask,
)
from .regimes import (
    PDE_NAMES,
    PRESET_NAMES,
    Full,
    RandomFraction,
    Regime,
    Spatial,
    Stride,
    parse_regime,
    preset,
)

__all__ = [
    "PDE_NAMES",
    "PRESET_NAMES",
    "FrameObservation",
    "Full",
    "LinearOperator",
    "MaskOperator",
    "ObservationModel",
    "ObservationOperator",
    "RandomFraction",
    "Regime",
    "RegimeDistribution",
    "Spatial",
    "Stride",
    "add_noise",
    "local_average_operator",
    "log_likelihood",
    "log_likelihood_linear",
    "observation_cost",
    "observation_cost_linear",
    "observation_distribution",
    "parse_regime",
    "preset",
    "random_mask",
    "resolve_regimes",
    "subsample_mask",
]
