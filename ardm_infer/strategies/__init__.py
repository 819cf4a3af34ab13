"""Interchangeable inference strategies behind one interface and a registry.

``ardm_infer.assimilate(process, problem, strategy="enkf", members=32, generator=g)``.
Each strategy lives in its own module and imports none of the others; composition (e.g. SMC
with a DPS proposal) goes through Config.
"""

from . import controller, dps, enkf, forecast, smc, vc  # noqa: F401  (registers)
from .base import (
    Cost,
    DivergenceError,
    Problem,
    ProblemView,
    Propagation,
    Strategy,
    StrategyContractError,
    StrategyResult,
    StrategyState,
    assimilate,
    available_strategies,
    config_fields,
    get_strategy,
    make_problem,
    propagate,
    register,
    unregister,
)
from .config import ConfigField, option, validate_config

__all__ = [
    "ConfigField",
    "Cost",
    "DivergenceError",
    "Problem",
    "ProblemView",
    "Propagation",
    "Strategy",
    "StrategyContractError",
    "StrategyResult",
    "StrategyState",
    "assimilate",
    "available_strategies",
    "config_fields",
    "get_strategy",
    "make_problem",
    "option",
    "propagate",
    "register",
    "unregister",
    "validate_config",
]
