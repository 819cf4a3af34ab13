"""The shipped checkpoints load in one call, sample finite frames, and refuse corruption."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ardm_infer import load_ardm
from ardm_infer.ardm.pretrained import CHECKPOINT_DIR, SHIPPED, checkpoint_path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_samples(name):
    ardm = load_ardm(name)
    assert ardm.card["data_config"]["pde"] == name
    k = ardm.context_length
    g = torch.Generator().manual_seed(0)
    context = torch.randn(2, k, *ardm.frame_shape, generator=g)
    with torch.no_grad():
        frame = ardm.step(context, g)
    assert frame.shape == (2, *ardm.frame_shape)
    assert torch.isfinite(frame).all()
    assert ardm.std.shape == (ardm.frame_shape[0],) and (ardm.std > 0).all()


@pytest.mark.parametrize("name", SHIPPED)
def test_corrupt_or_mismatched_checkpoint_is_refused(name, tmp_path: Path):
    src = checkpoint_path(name)
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    load_ardm(str(dst))  # an intact copy loads
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_ardm(str(dst))
    other = next(n for n in SHIPPED if n != name)
    shutil.copy(src, dst)
    shutil.copy(checkpoint_path(other).with_suffix(".json"), dst.with_suffix(".json"))
    with pytest.raises(ValueError):
        load_ardm(str(dst))


def test_unknown_or_missing_checkpoint_has_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="expected one of"):
        load_ardm("navier-stokes")
    with pytest.raises(FileNotFoundError, match="train-ardm"):
        load_ardm(str(tmp_path / "nothing.safetensors"))


def test_shipped_artifacts_are_small():
    total = sum(p.stat().st_size for p in CHECKPOINT_DIR.glob("*") if p.is_file())
    assert total < 30 * 2**20


@pytest.mark.parametrize("strategy", ["forecast", "dps", "smc", "enkf", "vc"])
def test_strategies_run_on_the_shipped_ks_ardm(strategy):
    from ardm_infer import assimilate, make_problem
    from ardm_infer.data import DataConfig, load_dataset

    ardm = load_ardm("ks")
    data = load_dataset(DataConfig.from_dict(ardm.card["data_config"]))
    g = torch.Generator().manual_seed(0)
    frames = data.normalise(data.test[:1, : ardm.context_length + 2])
    problem = make_problem(frames, ardm.context_length, "sparse", g, pde="ks")
    options = {"vc": {"iterations": 2, "window": 2}}.get(strategy, {})
    result = assimilate(ardm, problem, strategy, members=3, generator=g, **options)
    assert result.ensemble.shape == (3, 1, 2, 1, 256)
    assert torch.isfinite(result.ensemble).all()
    # Two frames of a model whose short-range error is ~1e-2: every strategy stays close.
    assert (result.ensemble - problem.truth).abs().mean() < 0.2


def test_card_and_normalisation_are_constructor_attributes():
    """``load_ardm`` builds the ARDM with its card and normalisation; an ARDM built without
    them (e.g. analytic) has None, not a missing attribute."""
    from ardm_infer import ARDM

    ardm = load_ardm("ks")
    assert torch.equal(ardm.std, torch.tensor(ardm.card["normalisation"]["std"]))
    assert torch.equal(ardm.mean, torch.tensor(ardm.card["normalisation"]["mean"]))
    bare = ARDM(ardm.denoiser, ardm.schedule, ardm.frame_shape, ardm.context_length)
    assert bare.card is None and bare.mean is None and bare.std is None
