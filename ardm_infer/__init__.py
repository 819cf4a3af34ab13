"""ardm_infer: data assimilation with autoregressive diffusion models.

Public entry points:

- :mod:`ardm_infer.dynamics` — numerical truth (KS, Kolmogorov, Lorenz-96, linear-Gaussian).
- :func:`load_dataset`, :class:`DataConfig` — cached trajectory data sets.
- :mod:`ardm_infer.observe` — operators, the one log-likelihood, regimes.
- :mod:`ardm_infer.metrics` — scoring functions shared by every strategy.
- :mod:`ardm_infer.ardm` — the ARDM process, schedule and guided kernel.
- :mod:`ardm_infer.guidance` — the seam between the ARDM and strategies.
- :mod:`ardm_infer.soc` — SOC accounting: control energy, path weights, J, exact twin control.
- :func:`load_ardm` — the shipped KS and Kolmogorov ARDMs.
- :func:`assimilate` — run any registered strategy on a :class:`Problem`.
- :func:`summary` — the table of a benchmark result (``ardm_infer.bench``).
"""

from . import dynamics, metrics, observe, soc, strategies
from ._version import __version__, code_version
from .ardm import ARDM, Schedule
from .ardm.pretrained import load_ardm
from .bench.stats import summary
from .data import DataConfig, Dataset, default_data_config, load_dataset
from .guidance import Guidance, SubStepState
from .observe import Regime, parse_regime, preset
from .process import Process, rollout
from .strategies import Problem, assimilate, available_strategies, make_problem

__all__ = [
    "ARDM",
    "DataConfig",
    "Dataset",
    "Guidance",
    "Problem",
    "Process",
    "Regime",
    "Schedule",
    "SubStepState",
    "__version__",
    "assimilate",
    "available_strategies",
    "code_version",
    "default_data_config",
    "dynamics",
    "load_ardm",
    "load_dataset",
    "make_problem",
    "metrics",
    "observe",
    "parse_regime",
    "preset",
    "rollout",
    "soc",
    "strategies",
    "summary",
]
