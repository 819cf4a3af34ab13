"""Learned artifacts: atomic files, the card and its schema, verified loading, checkpoints.

Everything a trainer writes and inference reads lives here, once (docs/design.md §3:
"learned things are artifacts ... loaded read-only").

Network artifact = ``<name>.safetensors`` (the weights) + ``<name>.json`` (the card).
The two are bound in both directions:

- the card's ``sha256`` is the sha256 of the weights file (weights swapped or corrupted are
  refused);
- the weights file's metadata holds ``card_sha256``, the sha256 of the card's canonical JSON
  (:func:`card_digest`: every key but ``sha256``, sorted keys, no spaces), so any edit of the
  card after it was written -- a grid size, a normalisation std -- is refused.

A card must hold the keys of :data:`CARD_FIELDS` (common ones plus the ones of its ``kind``)
with the stated types; a missing key or a wrong type is refused with a ``ValueError`` naming
the key and the file.  Safetensors files are written with a canonical header (sorted keys), so
the same tensors and metadata always give the same bytes and the same sha256.

JSON artifacts (tuned strategy settings and the like) are plain JSON files bound to the
sha256 of the model they were made for (:func:`save_json_artifact`, :func:`load_json_artifact`).

Checkpoints (resumable training): one format, :data:`CHECKPOINT_FORMAT`, for every trainer:
``checkpoint.safetensors`` holds the modules (``module.<name>.<parameter>``), the optimiser's
tensors (``optimizer.<index>.<key>``), the generators' states (``generator.<name>``) and the
trainer's extra tensors (``extra.<name>``); its metadata holds the run state and the
optimiser's hyper-parameters as JSON (so tensors and state can never be out of step), mirrored
to the readable ``checkpoint.json``.

Shapes: none; tensors are stored as given (moved to the CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as _save_bytes

__all__ = [
    "CARD_FIELDS",
    "CHECKPOINT_FORMAT",
    "JSON_ARTIFACT_FORMAT",
    "Checkpoint",
    "atomic_save_tensors",
    "atomic_write_text",
    "bind_card",
    "canonical_json",
    "card_digest",
    "card_path",
    "check_card",
    "file_sha256",
    "load_json_artifact",
    "load_verified_module",
    "read_card",
    "read_checkpoint",
    "restore_checkpoint",
    "save_json_artifact",
    "save_module",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "ardm_infer.checkpoint/2"
JSON_ARTIFACT_FORMAT = "ardm_infer.json-artifact/1"
CARD_DIGEST_KEY = "card_sha256"

_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))

CARD_FIELDS: dict[str | None, dict[str, tuple[type, ...]]] = {
    None: {
        "format": (str,),
        "kind": (str,),
        "name": (str,),
        "model_config": (dict,),
        "parameters": (int,),
        "code_version": (str,),
        "created_utc": (str,),
        "weights_file": (str,),
        "sha256": (str,),
        "training_config": (dict,),
        "steps_completed": (int,),
        "wall_seconds": _NUMBER,
        "device": (str,),
        "history": (list,),
    },
    "ardm_denoiser": {
        "data_config": (dict,),
        "data_config.pde": (str,),
        "data_config.solver": (dict,),
        "data_key": (str,),
        "normalisation": (dict,),
        "normalisation.mean": (list,),
        "normalisation.std": (list,),
        "final_train_loss": _OPTIONAL_NUMBER,
        "final_val_loss": _OPTIONAL_NUMBER,
    },
    "ardm_controller": {
        "regimes": (dict,),
        "ardm": (dict,),
        "ardm.name": (str,),
        "ardm.frame_shape": (list,),
        "ardm.context_length": (int,),
        "ardm.schedule": (dict,),
        "ardm.weights_sha256": (str, type(None)),
        "final_val_objective": _OPTIONAL_NUMBER,
    },
}
"""Required card keys and their types: ``None`` holds the keys of every network card, the
others the keys of one ``kind``; ``"a.b"`` is key ``b`` of the dict at key ``a``."""


KINDS = tuple(k for k in CARD_FIELDS if k is not None)


# --------------------------------------------------------------------------------- files


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _atomic_write_bytes(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: temporary file, fsync, ``os.replace``."""
    _atomic_write_bytes(text.encode("utf-8"), Path(path))


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Safetensors bytes with a canonical header (sorted keys), so equal content gives equal
    bytes (the library's own header order varies from one process to the next)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    raw = _save_bytes(cpu, metadata=dict(metadata))
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    encoded = text.encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + raw[8 + size :]


def atomic_save_tensors(
    tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], path: str | Path
) -> None:
    """Save tensors (moved to the CPU) and string metadata as safetensors, atomically and
    deterministically (same content, same bytes)."""
    _atomic_write_bytes(_safetensors_bytes(tensors, metadata), Path(path))


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    return load_file(str(path)), metadata


# --------------------------------------------------------------------------------- cards


def card_path(weights_path: str | Path) -> Path:
    """The card that belongs to a weights file: same name, ``.json`` suffix."""
    return Path(weights_path).with_suffix(".json")


def canonical_json(value: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def card_digest(card: Mapping[str, Any]) -> str:
    """sha256 of the card's canonical JSON without its ``sha256`` key (which names the
    weights file, whose metadata holds this digest)."""
    body = {k: v for k, v in card.items() if k != "sha256"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def _describe(types: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        dict: "an object",
        list: "a list",
        type(None): "null",
    }
    words = [names[t] for t in types if not (t is int and float in types)]
    return " or ".join(words)


def check_card(card: Any, kind: str, source: str | Path) -> None:
    """``ValueError`` unless ``card`` has every key of :data:`CARD_FIELDS` for ``kind`` with
    the stated type (booleans are not numbers); the message names the key and ``source``."""
    if not isinstance(card, dict):
        raise ValueError(f"card {source} is not a JSON object")
    if kind not in CARD_FIELDS or kind is None:
        raise ValueError(f"card {source} has an unknown kind {kind!r}; known: {KINDS}")
    if card.get("kind") != kind:
        raise ValueError(f"card {source} is not a {kind} card (kind={card.get('kind')!r})")
    for key, types in {**CARD_FIELDS[None], **CARD_FIELDS[kind]}.items():
        holder: Any = card
        *parents, leaf = key.split(".")
        for part in parents:
            holder = holder[part]  # the parent was checked to be a dict before
        if leaf not in holder:
            raise ValueError(f"card {source} is missing the required key {key!r}")
        value = holder[leaf]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(
                f"card {source}: key {key!r} must be {_describe(types)}, "
                f"got {type(value).__name__} {value!r:.60}"
            )


def read_card(path: str | Path, kind: str, label: str) -> dict[str, Any]:
    """Read and schema-check the card of the weights file ``path`` (``ValueError`` if it is
    missing, not JSON, of another kind or incomplete)."""
    cpath = card_path(path)
    if not cpath.is_file():
        raise ValueError(
            f"{label} {path} has no card: expected {cpath}; refusing to load unverified weights"
        )
    try:
        card = json.loads(cpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"card {cpath} is not valid JSON ({err})") from err
    check_card(card, kind, cpath)
    return card


def _write_card(card: dict[str, Any], path: Path) -> None:
    atomic_write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", card_path(path))


def _bind(
    tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], card: dict[str, Any], path: Path
) -> dict[str, Any]:
    """Write weights bound to ``card`` and the card (with the weights' sha256) beside them."""
    card = {k: v for k, v in card.items() if k != "sha256"}
    card["weights_file"] = path.name
    metadata = {**metadata, "format": card["format"], CARD_DIGEST_KEY: card_digest(card)}
    atomic_save_tensors(tensors, metadata, path)
    card["sha256"] = file_sha256(path)
    check_card(card, card["kind"], card_path(path))
    _write_card(card, path)
    return card


def save_module(
    module: torch.nn.Module,
    card_fields: Mapping[str, Any],
    path: str | Path,
    *,
    format: str,
    kind: str,
) -> dict[str, Any]:
    """Save a network's weights at ``path`` (``.safetensors``) and its card beside it.

    The card holds ``card_fields`` plus ``format``, ``kind``, ``model_config``
    (``module.config.to_dict()``), ``parameters``, ``code_version``, ``created_utc``,
    ``weights_file`` and ``sha256``; it must satisfy :data:`CARD_FIELDS` for ``kind`` (checked
    before the card is written).  Weights are written first, both atomically.

    Returns:
        The card.
    """
    from ._version import code_version

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"artifact path must end in .safetensors, got {path}")
    model_config = module.config.to_dict()
    card = {
        **card_fields,
        "format": format,
        "kind": kind,
        "model_config": model_config,
        "parameters": sum(p.numel() for p in module.parameters()),
        "code_version": code_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights_file": path.name,
        "sha256": "",
    }
    check_card(card, kind, card_path(path))
    metadata = {"model_config": json.dumps(model_config, sort_keys=True)}
    return _bind(dict(module.state_dict()), metadata, card, path)


def bind_card(path: str | Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Bind an edited ``card`` to the existing weights at ``path`` on purpose.

    The tensors are rewritten bit-identically; only the weights' metadata (``format`` and
    the card digest) and the card's ``weights_file`` / ``sha256`` change.  The card must pass
    :func:`check_card` and its ``model_config`` must equal the one stored with the weights.
    Used after a deliberate card edit (``benchmarks/tune_sampler.py --write``) and by
    ``scripts/rebind_artifacts.py``.

    Returns:
        The card as written.
    """
    path = Path(path)
    card = dict(card)
    check_card(card, card.get("kind"), card_path(path))
    tensors, metadata = _read_safetensors(path)
    stored = json.loads(metadata.get("model_config", "null"))
    if stored != card["model_config"]:
        raise ValueError(
            f"card model_config {card['model_config']} differs from the one stored with "
            f"{path} ({stored}); refusing to bind"
        )
    written = _bind(tensors, {"model_config": metadata["model_config"]}, card, path)
    after = load_file(str(path))
    if after.keys() != tensors.keys() or any(not torch.equal(after[k], tensors[k]) for k in after):
        raise RuntimeError(f"rebinding changed the tensors of {path}")  # cannot happen
    return written


def load_verified_module(
    path: str | Path,
    kind: str,
    label: str,
    config_type: Any,
    build: Callable[[Any], torch.nn.Module],
    device: str | torch.device | None = None,
    *,
    format: str,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a network artifact (weights + JSON card), verifying it first.

    Checks, in order: the card exists, is JSON, has ``kind`` and every key of
    :data:`CARD_FIELDS` with its type; its ``format`` is ``format``; the sha256 of the weights
    file equals the card's (weights not corrupt, not another card's); the file is safetensors;
    the card digest bound into the weights equals the card's (card not edited); the model
    config stored with the weights equals the card's; the tensors fit ``build(config)``
    exactly and are finite.  Any failure raises ``ValueError`` saying which check failed (a
    missing weights file raises ``FileNotFoundError``); nothing is ever loaded silently.

    Args:
        path: the ``.safetensors`` weights file.
        kind: the card's expected ``kind``.
        label: a human name for messages (e.g. "ARDM denoiser").
        config_type: class with ``from_dict``/``to_dict`` for the card's ``model_config``.
        build: ``config -> nn.Module``.
        device: where to put the module (default CPU).
        format: the expected artifact format.

    Returns:
        ``(module in eval mode with frozen parameters, card)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {label} weights file at {path}")
    cpath = card_path(path)
    card = read_card(path, kind, label)
    if card["format"] != format:
        raise ValueError(
            f"card {cpath} has format {card['format']!r}, this version reads {format!r}; "
            "an artifact written before cards were bound to their weights can be re-bound "
            f"with `python scripts/rebind_artifacts.py {path}`"
        )
    actual = file_sha256(path)
    if actual != card["sha256"]:
        raise ValueError(
            f"sha256 mismatch for {path}: file has {actual}, card {cpath} says "
            f"{card['sha256']}; the weights are corrupt or the card belongs to another {label}"
        )
    try:
        tensors, metadata = _read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from err
    digest = card_digest(card)
    if metadata.get(CARD_DIGEST_KEY) != digest:
        raise ValueError(
            f"card {cpath} was edited after it was written: its digest {digest} differs from "
            f"the {metadata.get(CARD_DIGEST_KEY)} bound into {path}; refusing to load (restore "
            "the card, or bind an intended edit with ardm_infer.artifacts.bind_card)"
        )
    try:
        config = config_type.from_dict(card["model_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"card {cpath} has an invalid model_config ({err})") from err
    stored = json.loads(metadata.get("model_config", "null"))
    if isinstance(stored, dict):
        # Fields added to a config after an artifact was written take their defaults on both
        # sides; compare the configs, not their spellings.
        try:
            stored = config_type.from_dict(stored).to_dict()
        except (TypeError, ValueError):
            pass
    if stored != config.to_dict():
        raise ValueError(
            f"card {cpath} does not match the weights {path}: model_config {config.to_dict()} "
            f"vs {stored} stored with the weights"
        )
    module = build(config)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"weights {path} do not fit the architecture in card {cpath}: {err}"
        ) from err
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"weights {path} contain non-finite values in {bad[:5]}")
    module.eval().requires_grad_(False)
    if device is not None:
        module.to(device)
    return module, card


# --------------------------------------------------------------------------- JSON artifacts


def save_json_artifact(
    payload: Mapping[str, Any], path: str | Path, *, kind: str, model_sha256: str
) -> dict[str, Any]:
    """Write a JSON artifact made for one model (e.g. tuned strategy settings).

    The file holds ``format``, ``kind``, ``model_sha256`` (the ``sha256`` of the card of the
    model it was made for), ``code_version``, ``created_utc``, the ``payload`` and ``sha256``,
    the digest of all the rest (:func:`card_digest`), so an edited file is refused.

    Returns:
        The whole document as written.
    """
    from ._version import code_version

    if not isinstance(model_sha256, str) or not model_sha256:
        raise ValueError(f"model_sha256 must be the model card's sha256; got {model_sha256!r}")
    document = {
        "format": JSON_ARTIFACT_FORMAT,
        "kind": kind,
        "model_sha256": model_sha256,
        "code_version": code_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "payload": dict(payload),
    }
    document["sha256"] = card_digest(document)
    atomic_write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", path)
    return document


def load_json_artifact(path: str | Path, *, kind: str, model_sha256: str) -> dict[str, Any]:
    """The payload of a JSON artifact written by :func:`save_json_artifact`, verified.

    ``ValueError`` (naming the file) if it is not JSON, not of this format and ``kind``, was
    edited after it was written, or was made for another model than ``model_sha256``.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != JSON_ARTIFACT_FORMAT:
        raise ValueError(f"{path} is not a {JSON_ARTIFACT_FORMAT} artifact")
    if document.get("kind") != kind:
        raise ValueError(f"{path} holds {document.get('kind')!r}, expected {kind!r}")
    if document.get("sha256") != card_digest(document):
        raise ValueError(f"{path} was edited after it was written (its digest does not match)")
    if document.get("model_sha256") != model_sha256:
        raise ValueError(
            f"{path} was made for the model with sha256 {document.get('model_sha256')}, not "
            f"for this one ({model_sha256}); make it again for this model"
        )
    return document["payload"]


# ----------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    """A checkpoint as read: its tensors (prefixed names) and its run state (JSON)."""

    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]
    optimizer: dict[str, Any]

    def extra(self) -> dict[str, torch.Tensor]:
        """The trainer's extra tensors, without the ``extra.`` prefix."""
        return _strip(self.tensors, "extra.")


def _strip(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def write_checkpoint(
    directory: str | Path,
    *,
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator],
    extra: Mapping[str, torch.Tensor],
    state: Mapping[str, Any],
) -> None:
    """Write ``directory/checkpoint.safetensors`` (and its mirror ``checkpoint.json``)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"module.{name}.{k}": v for k, v in module.state_dict().items()})
    osd = optimizer.state_dict()
    other: dict[str, dict[str, Any]] = {}
    for idx, st in osd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                other.setdefault(str(idx), {})[key] = value
    tensors.update({f"generator.{name}": g.get_state() for name, g in generators.items()})
    tensors.update({f"extra.{name}": v for name, v in extra.items()})
    opt_json = {"param_groups": osd["param_groups"], "state_other": other}
    atomic_save_tensors(
        tensors,
        {
            "format": CHECKPOINT_FORMAT,
            "state": json.dumps(dict(state), sort_keys=True),
            "optimizer": json.dumps(opt_json, sort_keys=True),
        },
        directory / "checkpoint.safetensors",
    )
    mirror = {**state, "optimizer": opt_json}
    atomic_write_text(
        json.dumps(mirror, indent=2, sort_keys=True) + "\n", directory / "checkpoint.json"
    )


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint` (``ValueError`` if unreadable or
    of another format, with the advice to delete it or start afresh)."""
    try:
        tensors, metadata = _read_safetensors(Path(path))
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {metadata.get('format')!r} != {CHECKPOINT_FORMAT!r}")
        return Checkpoint(tensors, json.loads(metadata["state"]), json.loads(metadata["optimizer"]))
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"cannot resume from {path} ({err}); delete it or pass resume=False"
        ) from err


def restore_checkpoint(
    checkpoint: Checkpoint,
    *,
    modules: Mapping[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    generators: Mapping[str, torch.Generator],
) -> None:
    """Load a checkpoint's modules, optimiser and generator states in place (strict)."""
    tensors = checkpoint.tensors
    for name, module in modules.items():
        module.load_state_dict(_strip(tensors, f"module.{name}."), strict=True)
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in _strip(tensors, "optimizer.").items():
        idx, field = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[field] = value
    for idx, extra in checkpoint.optimizer["state_other"].items():
        opt_state.setdefault(int(idx), {}).update(extra)
    groups = checkpoint.optimizer["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    for name, generator in generators.items():
        generator.set_state(tensors[f"generator.{name}"])
