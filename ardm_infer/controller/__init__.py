"""The amortised controller of CA-ARDM (arXiv 2510.06637): preview buffer, network, training.

- :mod:`.preview`: the preview buffer (observations of frames t .. t + Lambda - 1 only).
- :mod:`.network`: the controller f_psi (u_s = tau_s f_psi, KL = |f|^2 / 2) and its
  :class:`~ardm_infer.guidance.Guidance`.
- :mod:`.training`: offline training by back-propagating J through frozen-ARDM rollouts
  (regimes drawn from an :class:`~ardm_infer.observe.RegimeDistribution`), presets.
- :mod:`.chains`: the on-policy training chains.
- :mod:`.artifact`: the safetensors artifact with its card (saving, verified loading).

The strategy that uses a trained controller is ``ardm_infer.strategies.controller``.
"""

from typing import Any

from ..observe import RegimeDistribution, resolve_regimes
from .artifact import load_controller, save_controller
from .network import (
    Controller,
    ControllerConfig,
    ControllerGuidance,
    build_controller,
    ensemble_statistics,
)
from .preview import Preview, preview_window

_TRAINING = (
    "ControllerTrainConfig",
    "controlled_rollout",
    "controller_presets",
    "train_controller",
)

__all__ = [
    "Controller",
    "ControllerConfig",
    "ControllerGuidance",
    "ControllerTrainConfig",
    "Preview",
    "RegimeDistribution",
    "build_controller",
    "controlled_rollout",
    "controller_presets",
    "ensemble_statistics",
    "load_controller",
    "preview_window",
    "resolve_regimes",
    "save_controller",
    "train_controller",
]


def __getattr__(name: str) -> Any:
    """The training names, imported on first use: inference code that loads a controller
    (``ardm_infer.strategies.controller``) never imports the trainer."""
    if name in _TRAINING:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
