"""The controller as an artifact: ``<name>.safetensors`` + ``<name>.json`` card.

The card holds the network and training configs, the regime distribution, the identity of
the ARDM it was trained for (name, frame shape, context length, schedule, the sha256 of its
weights), data identity, final losses, history, wall time and code version; card and weights
are bound to each other and verified on loading (:mod:`ardm_infer.artifacts`).  The inference
strategy loads through here, never through the trainer.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..artifacts import load_verified_module, save_module
from .network import Controller, ControllerConfig

__all__ = [
    "CARD_KIND",
    "CONTROLLER_ARTIFACT_FORMAT",
    "ardm_identity",
    "load_controller",
    "save_controller",
]

CONTROLLER_ARTIFACT_FORMAT = "ardm_infer.controller/2"
CARD_KIND = "ardm_controller"


def save_controller(
    network: Controller, card_fields: dict[str, Any], path: str | Path
) -> dict[str, Any]:
    """Save ``network``'s weights at ``path`` (``.safetensors``) and its card beside it.

    ``card_fields`` must hold the keys the schema requires of a controller card
    (:data:`ardm_infer.artifacts.CARD_FIELDS`); the rest is added here.

    Returns:
        The card.
    """
    return save_module(
        network, card_fields, path, format=CONTROLLER_ARTIFACT_FORMAT, kind=CARD_KIND
    )


def load_controller(path: str | Path, device: str | torch.device | None = None) -> Controller:
    """Load a controller saved by :func:`save_controller` (read-only, eval mode), verified by
    :func:`~ardm_infer.artifacts.load_verified_module` (any failure: ``ValueError`` naming
    the check).

    Returns:
        The :class:`Controller` with ``card`` set.
    """
    network, card = load_verified_module(
        path,
        CARD_KIND,
        "controller",
        ControllerConfig,
        Controller,
        device,
        format=CONTROLLER_ARTIFACT_FORMAT,
    )
    network.card = card
    return network


def ardm_identity(ardm: Any) -> dict[str, Any]:
    """What a controller card records of the ARDM it was trained for (key ``"ardm"``): name,
    frame shape, context length, schedule and the sha256 of its weights (from its card; None
    for an ARDM without one).  A controller fits an ARDM when the card's record equals
    ``ardm_identity`` of that ARDM."""
    card = getattr(ardm, "card", None)
    return {
        "name": getattr(ardm, "name", type(ardm).__name__),
        "frame_shape": list(ardm.frame_shape),
        "context_length": int(ardm.context_length),
        "schedule": asdict(ardm.schedule),
        "weights_sha256": card.get("sha256") if isinstance(card, dict) else None,
    }
