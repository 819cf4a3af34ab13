"""The ARDM denoiser as an artifact: ``<name>.safetensors`` (EMA weights) + ``<name>.json``.

The card holds the data, model and training configs, the normalisation statistics of the
training data, final losses, history, wall time, code version and the sha256 of the weights;
card and weights are bound to each other and verified on loading
(:mod:`ardm_infer.artifacts`).  Inference code loads through here, never through the trainer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..artifacts import card_path, load_verified_module, save_module
from .nets import Denoiser, DenoiserConfig

__all__ = ["ARTIFACT_FORMAT", "CARD_KIND", "card_path", "load_artifact", "save_artifact"]

ARTIFACT_FORMAT = "ardm_infer.denoiser/2"
CARD_KIND = "ardm_denoiser"


def save_artifact(model: Denoiser, card_fields: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Save ``model``'s weights at ``path`` (``.safetensors``) and its card beside it.

    ``card_fields`` must hold the keys the schema requires of a denoiser card
    (:data:`ardm_infer.artifacts.CARD_FIELDS`); the rest is added here.

    Returns:
        The card.
    """
    return save_module(model, card_fields, path, format=ARTIFACT_FORMAT, kind=CARD_KIND)


def _check_normalisation(card: dict[str, Any], channels: int, path: Path) -> None:
    for key in ("mean", "std"):
        values = card["normalisation"][key]
        ok = len(values) == channels and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
        if not ok or (key == "std" and min(values) <= 0):
            raise ValueError(
                f"card {card_path(path)}: key 'normalisation.{key}' must hold {channels} finite "
                f"numbers{' > 0' if key == 'std' else ''}, got {values!r:.80}"
            )


def load_artifact(
    path: str | Path, device: str | torch.device | None = None
) -> tuple[Denoiser, dict[str, Any]]:
    """Load a denoiser saved by :func:`save_artifact` (read-only: eval mode, no grad on
    parameters; gradients still flow to the inputs), verified by
    :func:`~ardm_infer.artifacts.load_verified_module` plus its normalisation statistics
    (one finite mean and one positive std per channel).

    Returns:
        ``(denoiser, card)``.
    """
    denoiser, card = load_verified_module(
        path,
        CARD_KIND,
        "ARDM denoiser",
        DenoiserConfig,
        Denoiser,
        device,
        format=ARTIFACT_FORMAT,
    )
    _check_normalisation(card, denoiser.config.channels, Path(path))
    return denoiser, card
