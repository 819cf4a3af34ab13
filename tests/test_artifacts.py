"""Artifacts: the card schema, the card bound to its weights, JSON artifacts, checkpoints.

Every way a card and its weights can disagree -- an edited card (grid size, normalisation
std), a missing key, a wrong type, weights swapped between cards, a corrupt or truncated
file, an artifact of the older unbound format -- is refused with a message that names what
is wrong; the shipped artifacts load and the shipped controllers record exactly the ARDM
they are used with.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ardm_infer import load_ardm
from ardm_infer.ardm.artifact import load_artifact, save_artifact
from ardm_infer.ardm.nets import DenoiserConfig, build_denoiser
from ardm_infer.ardm.pretrained import CHECKPOINT_DIR, SHIPPED
from ardm_infer.artifacts import (
    CARD_FIELDS,
    bind_card,
    card_digest,
    file_sha256,
    load_json_artifact,
    read_checkpoint,
    save_json_artifact,
)
from ardm_infer.controller.artifact import ardm_identity, load_controller

ROOT = Path(__file__).resolve().parent.parent


def random_denoiser(seed: int = 0):
    """A small denoiser with random (non-zero) weights."""
    cfg = DenoiserConfig(dims=1, channels=1, context_frames=2, base_channels=8, groups=4)
    model = build_denoiser(cfg, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def denoiser_card_fields(grid: int = 32) -> dict:
    """The trainer-written keys of a valid denoiser card (for a KS grid of ``grid`` points)."""
    return {
        "name": "ardm-test",
        "training_config": {"steps": 1},
        "steps_completed": 1,
        "wall_seconds": 0.5,
        "device": "cpu",
        "history": [],
        "data_config": {"pde": "ks", "solver": {"grid": grid}},
        "data_key": "key",
        "normalisation": {"mean": [0.0], "std": [1.5]},
        "final_train_loss": 0.3,
        "final_val_loss": None,
    }


def _saved(tmp_path: Path, name: str = "m", seed: int = 0) -> tuple[Path, dict]:
    path = tmp_path / f"{name}.safetensors"
    return path, save_artifact(random_denoiser(seed), denoiser_card_fields(), path)


def _write_card(path: Path, card: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(card, indent=2))


def test_the_card_is_bound_and_files_are_deterministic(tmp_path):
    path, card = _saved(tmp_path)
    data = path.read_bytes()
    assert card["sha256"] == file_sha256(path)
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["card_sha256"] == card_digest(card)
    assert bind_card(path, card) == card  # binding the same card again ...
    assert path.read_bytes() == data  # ... writes the same bytes (canonical header)


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (lambda c: c["data_config"]["solver"].update(grid=16), "grid size"),
        (lambda c: c["normalisation"].update(std=[2.0]), "normalisation std"),
        (lambda c: c.update(final_val_loss=0.01), "a reported loss"),
    ],
)
def test_an_edited_card_is_refused(tmp_path, edit, what):
    path, card = _saved(tmp_path)
    edited = json.loads(json.dumps(card))
    edit(edited)
    assert edited != card, what
    _write_card(path, edited)
    with pytest.raises(ValueError, match="was edited after it was written"):
        load_artifact(path)
    _write_card(path, card)  # the original card loads again
    load_artifact(path)


@pytest.mark.parametrize("key", ["normalisation", "data_config", "sha256", "normalisation.std"])
def test_a_card_missing_a_key_is_refused(tmp_path, key):
    path, card = _saved(tmp_path)
    head, _, leaf = key.partition(".")
    if leaf:
        card[head] = {k: v for k, v in card[head].items() if k != leaf}
    else:
        del card[head]
    _write_card(path, card)
    with pytest.raises(ValueError, match=f"missing the required key '{key}'") as info:
        load_artifact(path)
    assert str(path.with_suffix(".json")) in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("steps_completed", "12", "an integer"),
        ("steps_completed", True, "an integer"),
        ("wall_seconds", None, "a number"),
        ("normalisation", [1.0], "an object"),
        ("history", {}, "a list"),
    ],
)
def test_a_card_with_a_wrong_type_is_refused(tmp_path, key, value, expected):
    path, card = _saved(tmp_path)
    card[key] = value
    _write_card(path, card)
    with pytest.raises(ValueError, match=f"key '{key}' must be {expected}") as info:
        load_artifact(path)
    assert str(path.with_suffix(".json")) in str(info.value)


def test_bad_normalisation_values_are_refused(tmp_path):
    """Values that the schema's types allow but that make no sense (std <= 0, wrong length)
    are refused even when the card is bound to them (it was written that way)."""
    for std in ([0.0], [1.0, 1.0]):
        path = tmp_path / f"n{len(std)}{std[0]}.safetensors"
        fields = {**denoiser_card_fields(), "normalisation": {"mean": [0.0] * len(std), "std": std}}
        save_artifact(random_denoiser(), fields, path)
        with pytest.raises(ValueError, match=r"normalisation\.(mean|std)"):
            load_artifact(path)


def test_a_card_that_fails_the_schema_is_never_written(tmp_path):
    path = tmp_path / "m.safetensors"
    fields = {k: v for k, v in denoiser_card_fields().items() if k != "data_key"}
    with pytest.raises(ValueError, match="data_key"):
        save_artifact(random_denoiser(), fields, path)
    assert not path.exists() and not path.with_suffix(".json").exists()


def test_weights_swapped_between_cards_are_refused(tmp_path):
    a, card_a = _saved(tmp_path, "a", seed=0)
    b, card_b = _saved(tmp_path, "b", seed=1)
    shutil.copy(b, a)  # a's card, b's weights
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_artifact(a)
    # ... and a card whose sha256 was edited to match the swapped weights is still refused:
    # the weights carry the digest of their own card
    _write_card(a, {**card_a, "sha256": card_b["sha256"]})
    with pytest.raises(ValueError, match="was edited after it was written"):
        load_artifact(a)
    _write_card(a, card_b)  # b's weights with b's card (under another name) are fine
    load_artifact(a)


def test_corrupt_truncated_or_cardless_weights_are_refused(tmp_path):
    path, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_artifact(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_artifact(path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_artifact(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="no card"):
        load_artifact(path)
    with pytest.raises(FileNotFoundError):
        load_artifact(tmp_path / "absent.safetensors")


def test_a_card_of_another_kind_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    with pytest.raises(ValueError, match="not a ardm_controller card"):
        load_controller(path)


def _old_format_artifact(tmp_path: Path) -> Path:
    """An artifact as written before cards were bound to weights (format .../1)."""
    model = random_denoiser()
    path = tmp_path / "old.safetensors"
    config = json.dumps(model.config.to_dict(), sort_keys=True)
    metadata = {"format": "ardm_infer.denoiser/1", "model_config": config}
    save_file(dict(model.state_dict()), str(path), metadata=metadata)
    card = {
        **denoiser_card_fields(),
        "format": "ardm_infer.denoiser/1",
        "kind": "ardm_denoiser",
        "model_config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "code_version": "0.1.0",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "weights_file": path.name,
        "sha256": file_sha256(path),
    }
    _write_card(path, card)
    return path


def test_old_format_is_refused_and_the_rebind_script_upgrades_it(tmp_path):
    path = _old_format_artifact(tmp_path)
    before = load_file(str(path))
    with pytest.raises(ValueError, match=r"rebind_artifacts\.py"):
        load_artifact(path)
    rebind = runpy.run_path(str(ROOT / "scripts" / "rebind_artifacts.py"))["rebind"]
    ((old, new),) = rebind([path]).values()
    assert old != new
    _, card = load_artifact(path)
    assert card["format"] == "ardm_infer.denoiser/2" and card["sha256"] == new
    after = load_file(str(path))
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)
    (again,) = rebind([path]).values()
    assert again == (new, new)  # repeatable: nothing changes the second time


def test_bind_card_binds_an_intended_edit(tmp_path):
    path, card = _saved(tmp_path)
    tensors = load_file(str(path))
    edited = {**card, "sampler": {"sigma_out": 0.002}}
    rebound = bind_card(path, edited)
    _, loaded = load_artifact(path)
    assert loaded == rebound and loaded["sampler"] == {"sigma_out": 0.002}
    assert loaded["sha256"] != card["sha256"]
    assert all(torch.equal(v, tensors[k]) for k, v in load_file(str(path)).items())
    with pytest.raises(ValueError, match="model_config"):
        bind_card(path, {**rebound, "model_config": {**rebound["model_config"], "groups": 2}})


# ----------------------------------------------------------------------------- JSON artifacts


def test_json_artifact_round_trip_and_refusals(tmp_path):
    path = tmp_path / "tuned.json"
    payload = {"dps": {"scale": 0.5}, "regime": "sparse"}
    save_json_artifact(payload, path, kind="tuned-configs", model_sha256="a" * 64)
    assert load_json_artifact(path, kind="tuned-configs", model_sha256="a" * 64) == payload
    with pytest.raises(ValueError, match=r"made for the model with sha256 a{64}, not"):
        load_json_artifact(path, kind="tuned-configs", model_sha256="b" * 64)
    with pytest.raises(ValueError, match="expected 'other'"):
        load_json_artifact(path, kind="other", model_sha256="a" * 64)
    document = json.loads(path.read_text())
    document["payload"]["dps"]["scale"] = 5.0
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="edited"):
        load_json_artifact(path, kind="tuned-configs", model_sha256="a" * 64)
    with pytest.raises(ValueError, match="model_sha256"):
        save_json_artifact(payload, path, kind="tuned-configs", model_sha256="")


def test_a_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": "something/1"})
    with pytest.raises(ValueError, match="cannot resume"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- shipped


@pytest.mark.parametrize("pde", SHIPPED)
def test_shipped_artifacts_verify_and_controllers_fit_their_ardm(pde):
    ardm = load_ardm(pde)
    assert set(CARD_FIELDS[None]) <= set(ardm.card)
    controller = load_controller(CHECKPOINT_DIR / f"controller-{pde}.safetensors")
    assert controller.card["ardm"] == ardm_identity(ardm)
    assert controller.card["ardm"]["weights_sha256"] == ardm.card["sha256"]


def test_an_edited_shipped_card_is_refused(tmp_path):
    """The issue's example: a 256-point KS model's card edited to 128 points."""
    src = CHECKPOINT_DIR / "ardm-ks.safetensors"
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    card = json.loads(src.with_suffix(".json").read_text())
    assert card["data_config"]["solver"]["grid"] == 256
    card["data_config"]["solver"]["grid"] = 128
    _write_card(dst, card)
    with pytest.raises(ValueError, match="was edited"):
        load_ardm(str(dst))


def test_inference_never_imports_training_code():
    code = (
        "import sys, ardm_infer, ardm_infer.strategies.controller, ardm_infer.bench;"
        "ardm_infer.load_ardm('ks');"
        "from ardm_infer.strategies.controller import resolve_controller;"
        "resolve_controller('ks');"
        "print(sorted(m for m in sys.modules if m.startswith('ardm_infer') and "
        "('training' in m)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.stdout.strip() == "[]", out.stdout
