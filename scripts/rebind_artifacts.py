"""Re-bind artifacts (weights + card) to the current artifact format, tensors untouched.

Cards are bound to their weights in both directions (``ardm_infer.artifacts``): the card
holds the sha256 of the weights file, the weights' metadata the digest of the card.  This
script brings artifacts written before that binding (format ``.../1``) to the current format:
for every ``.safetensors`` given (default: the shipped ones in ``ardm_infer/checkpoints``),
ARDM denoisers first, it sets the card's ``format``, rewrites the weights' metadata (the
tensors are checked bit-identical) and the card's ``sha256``.  A controller card records the
sha256 of the ARDM it was trained for; where that ARDM was re-bound in the same call, the
record follows the ARDM's new sha256 (so pass a controller together with its ARDM).  Every
artifact is loaded, verified, afterwards.  Running it again changes nothing (files are written
deterministically)::

    python scripts/rebind_artifacts.py                 # the shipped artifacts
    python scripts/rebind_artifacts.py runs/ks/ardm-ks.safetensors runs/ks/controller-ks.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ardm_infer.ardm.artifact import ARTIFACT_FORMAT, load_artifact
from ardm_infer.ardm.artifact import CARD_KIND as ARDM_KIND
from ardm_infer.ardm.pretrained import CHECKPOINT_DIR
from ardm_infer.artifacts import bind_card, card_path, file_sha256
from ardm_infer.controller.artifact import CARD_KIND as CONTROLLER_KIND
from ardm_infer.controller.artifact import CONTROLLER_ARTIFACT_FORMAT, load_controller

FORMATS = {ARDM_KIND: ARTIFACT_FORMAT, CONTROLLER_KIND: CONTROLLER_ARTIFACT_FORMAT}
LOADERS = {ARDM_KIND: load_artifact, CONTROLLER_KIND: load_controller}


def rebind(paths: list[Path]) -> dict[str, tuple[str, str]]:
    """Re-bind every artifact in ``paths``; returns ``{path: (old sha256, new sha256)}``."""
    cards = {path: json.loads(card_path(path).read_text(encoding="utf-8")) for path in paths}
    unknown = [str(p) for p, card in cards.items() if card.get("kind") not in FORMATS]
    if unknown:
        raise SystemExit(f"error: not an ARDM or controller artifact: {', '.join(unknown)}")
    order = sorted(paths, key=lambda p: (cards[p]["kind"] != ARDM_KIND, str(p)))
    renamed: dict[str, str] = {}
    changes: dict[str, tuple[str, str]] = {}
    for path in order:
        card = dict(cards[path])
        old = file_sha256(path)
        if card.get("sha256") != old:
            raise SystemExit(f"error: {path} does not match its card's sha256; not re-binding")
        card["format"] = FORMATS[card["kind"]]
        trained_for = card.get("ardm")
        if isinstance(trained_for, dict) and trained_for.get("weights_sha256") in renamed:
            card["ardm"] = {**trained_for, "weights_sha256": renamed[trained_for["weights_sha256"]]}
        new = bind_card(path, card)["sha256"]
        renamed[old] = new
        changes[str(path)] = (old, new)
    for path in order:
        LOADERS[cards[path]["kind"]](path)  # verifies the result
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="weights files (.safetensors)")
    args = parser.parse_args(argv)
    paths = args.paths or sorted(CHECKPOINT_DIR.glob("*.safetensors"))
    for path, (old, new) in rebind(paths).items():
        print(f"{path}: sha256 {old[:12]} -> {new[:12]}{' (unchanged)' if old == new else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
