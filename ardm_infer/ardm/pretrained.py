"""Shipped checkpoints: ``load_ardm("ks")`` / ``load_ardm("kolmogorov")``.

Each checkpoint is ``ardm_infer/checkpoints/ardm-<pde>.safetensors`` with its JSON card
(data config, model config, training config, final losses, code version, sha256 and the
normalisation statistics).  Loading verifies the card's schema, the sha256 of the weights
against the card and the card's digest bound into the weights, and refuses a corrupt,
mismatched or edited artifact with a clear error (:mod:`ardm_infer.artifacts`); no pickle is
involved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..systems import get_system
from .artifact import load_artifact
from .process import ARDM
from .schedule import Schedule

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
SHIPPED = ("ks", "kolmogorov")


def checkpoint_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name`` (``"ks"`` or ``"kolmogorov"``), or of a file."""
    if not isinstance(name, str | Path):
        raise TypeError(
            f"ARDM name must be {' or '.join(map(repr, SHIPPED))} or the path of a "
            f".safetensors artifact, got {name!r} ({type(name).__name__})"
        )
    if name in SHIPPED:
        return CHECKPOINT_DIR / f"ardm-{name}.safetensors"
    path = Path(name)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"unknown ARDM {name!r}: expected one of {SHIPPED} or a path to a .safetensors file"
        )
    return path


def load_ardm(
    name: str = "ks",
    schedule: Schedule | None = None,
    device: str | torch.device | None = None,
) -> ARDM:
    """Load a trained ARDM as a process in normalised units.

    Args:
        name: ``"ks"``, ``"kolmogorov"`` or the path of a ``.safetensors`` artifact with its
            ``.json`` card beside it.
        schedule: sampling schedule (default: the card's ``sampler`` entry, chosen on the
            validation split by ``benchmarks/tune_sampler.py``, else :class:`Schedule` ()).
        device: where to put the weights (default CPU).

    Returns:
        An :class:`ARDM` whose ``card`` (dict), ``mean`` and ``std`` (``(channels,)``, the
        normalisation of its training data) come from its verified card.
    """
    path = checkpoint_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"no ARDM checkpoint at {path}; train one with `ardm-infer train-ardm --pde "
            f"{name if name in SHIPPED else 'ks'} --ship ardm_infer/checkpoints` from a git "
            "checkout"
        )
    denoiser, card = load_artifact(path, device=device or "cpu")
    cfg = denoiser.config
    data = card["data_config"]
    frame_shape = get_system(data["pde"]).frame_shape(data["solver"], cfg.channels)
    if schedule is None:
        sampler = {k: v for k, v in card.get("sampler", {}).items() if k != "chosen_by"}
        schedule = Schedule(**sampler)
    return ARDM(
        denoiser,
        schedule,
        frame_shape,
        cfg.context_frames,
        name=f"ardm-{data['pde']}",
        card=card,
        mean=torch.tensor(card["normalisation"]["mean"]),
        std=torch.tensor(card["normalisation"]["std"]),
    )
