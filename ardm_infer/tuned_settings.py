"""Reading tuned settings: the shipped files, their entries, and which a benchmark run uses.

The writing side (the studies that make these files) is :mod:`ardm_infer.tuning`; this module
is what :func:`ardm_infer.benchmark` needs, without Optuna.  A file is a JSON artifact
(:mod:`ardm_infer.artifacts`) of kind :data:`TUNED_KIND`, bound to the sha256 of the card of
the ARDM it was tuned on, with payload
``{"protocol": {...}, "entries": {regime: {strategy: {"config": ..., "trusted": ...}}}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "TUNED_DIR",
    "TUNED_KIND",
    "load_tuned",
    "resolve_tuned",
    "shipped_tuned_path",
    "tuned_entry",
]

TUNED_KIND = "ardm_infer.tuned-configs"
"""The kind of the JSON artifact that holds tuned configurations (:mod:`ardm_infer.artifacts`)."""


def load_tuned(path: str | Path, model_sha256: str) -> dict[str, Any]:
    """The payload of a tuned-configurations file made for the model with card sha256
    ``model_sha256`` (``ValueError`` naming the file otherwise)."""
    from .artifacts import load_json_artifact

    return load_json_artifact(path, kind=TUNED_KIND, model_sha256=model_sha256)


# ----------------------------------------------------------------------------- shipped configs

TUNED_DIR = Path(__file__).parent / "tuned"
"""Where the package ships its tuned configurations: ``<system>.json`` per system."""


def shipped_tuned_path(pde: str) -> Path | None:
    """The shipped tuned-configurations file of a system, or None if it has none."""
    from .systems import get_system

    path = TUNED_DIR / f"{get_system(pde).name}.json"
    return path if path.is_file() else None


def tuned_entry(
    payload: dict[str, Any], regime: str, strategy: str, pde: str
) -> dict[str, Any] | None:
    """The entry of ``payload`` for ``strategy`` on ``regime`` (matched as regimes, not as
    strings: ``"sparse"`` finds an entry tuned as ``"stride=16, every=1, sigma=0.05"`` when
    the preset has that noise), or None."""
    from .observe import parse_regime

    wanted = parse_regime(regime, pde=pde)
    for key, entries in payload.get("entries", {}).items():
        if strategy in entries and parse_regime(key, pde=pde) == wanted:
            return entries[strategy]
    return None


def resolve_tuned(
    tuned: bool | str | Path | None, pde: str, model_sha256: str | None
) -> tuple[dict[str, Any] | None, str]:
    """The tuned configurations a benchmark run uses, and a sentence saying which.

    Args:
        tuned: True (the shipped file of ``pde``, if it was tuned on this ARDM), False /
            None (library defaults), or a path to a file written by
            :func:`ardm_infer.tuning.tune` (refused with ``ValueError`` if it was tuned on
            another ARDM).
        model_sha256: the card sha256 of the run's ARDM (None: the numerical solver).

    Returns:
        ``(payload or None, why)``.
    """
    if tuned is None or tuned is False:
        return None, "library defaults (untuned)"
    if tuned is True:
        path = shipped_tuned_path(pde)
        if path is None:
            return None, f"library defaults (no tuned configurations ship for {pde})"
        if model_sha256 is None:
            return None, "library defaults (the shipped configurations are for the shipped ARDM)"
        try:
            bound_to = json.loads(path.read_text()).get("model_sha256")
        except (OSError, ValueError, AttributeError):
            bound_to = None  # load_tuned below says what is wrong with the file
        if bound_to is not None and bound_to != model_sha256:
            return None, (
                "library defaults (the shipped configurations were tuned on the shipped ARDM, "
                "not this one; tune this ARDM with `ardm-infer tune` and pass tuned=<file>)"
            )
        return load_tuned(path, model_sha256), f"tuned ({path.name}, shipped)"
    path = Path(tuned)
    if model_sha256 is None:
        raise ValueError(
            f"tuned configurations {path} are bound to an ARDM; the numerical solver has none"
        )
    return load_tuned(path, model_sha256), f"tuned ({path})"
