"""ARDM training: EDM loss, training pairs, smoke training, exact resume, artifacts."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_artifacts import denoiser_card_fields, random_denoiser

from ardm_infer.ardm.nets import DenoiserConfig, build_denoiser
from ardm_infer.ardm.training import (
    TrainConfig,
    ardm_presets,
    edm_loss,
    learning_rate,
    load_artifact,
    sample_training_pairs,
    save_artifact,
    train_ardm,
)
from ardm_infer.data import DataConfig, load_dataset
from ardm_infer.dynamics import KSConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = DataConfig(
        "ks",
        KSConfig(length=32, grid=32, dt=0.1, output_interval=0.2),
        train=4,
        val=2,
        test=1,
        frames=24,
        burn_in=5.0,
    )
    return load_dataset(cfg, cache_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def smoke():
    return ardm_presets("ks")["smoke"]


@pytest.fixture(scope="module")
def smoke_run(tiny, smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    return out, train_ardm(tiny, *smoke, out, progress=False)


def test_presets_are_consistent():
    for pde, dims in (("ks", 1), ("kolmogorov", 2), ("lorenz96", 1)):
        presets = ardm_presets(pde)
        assert {"default", "smoke"} <= set(presets)
        for model_cfg, train_cfg in presets.values():
            assert model_cfg.dims == dims
            assert TrainConfig.from_dict(json.loads(json.dumps(train_cfg.to_dict()))) == train_cfg
        assert presets["smoke"][1].steps < 50
    with pytest.raises(ValueError, match="unknown pde"):
        ardm_presets("navier")


def test_learning_rate_schedule():
    tc = TrainConfig(steps=100, batch_size=1, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, tc) == pytest.approx(1e-4)
    assert learning_rate(9, tc) == pytest.approx(1e-3)
    assert learning_rate(10, tc) == pytest.approx(1e-3)
    assert learning_rate(55, tc) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert learning_rate(100, tc) == pytest.approx(1e-4)
    rates = [learning_rate(s, tc) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_training_pairs_are_consecutive_windows():
    n, length, k = 3, 10, 2
    # frame value = 100 * trajectory + time, so windows are readable
    frames = (100 * torch.arange(n)[:, None] + torch.arange(length)[None, :]).float()
    frames = frames[:, :, None, None].expand(n, length, 1, 4).clone()
    g = torch.Generator().manual_seed(0)
    target, context = sample_training_pairs(frames, k, 64, g)
    assert target.shape == (64, 1, 4) and context.shape == (64, k, 1, 4)
    t = target[:, 0, 0]
    assert torch.equal(context[:, 0, 0, 0], t - 2) and torch.equal(context[:, 1, 0, 0], t - 1)
    assert ((t % 100) >= k).all() and ((t % 100) < length).all()
    assert len(set((t // 100).tolist())) == n  # every trajectory is drawn


def test_edm_loss_weighting():
    # A fresh denoiser has F = 0, so D = c_skip z; with x = 0 the weighted error is
    # lambda c_skip^2 sigma^2 |eps|^2 = sigma_d^2 / (sigma^2 + sigma_d^2) |eps|^2.
    sd = 0.7
    model = build_denoiser(
        DenoiserConfig(dims=1, channels=1, context_frames=1, base_channels=4, sigma_data=sd)
    )
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(3, 1, 8)
    eps = torch.randn(3, 1, 8, generator=g)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    loss = edm_loss(model, x, torch.zeros(3, 1, 1, 8), sigma, eps)
    expected = sd**2 / (sigma**2 + sd**2) * eps.square().mean(dim=(1, 2))
    torch.testing.assert_close(loss, expected)


def test_smoke_training_decreases_loss_and_writes_artifact(smoke_run, tiny, smoke):
    out, result = smoke_run
    model_cfg, train_cfg = smoke
    assert result["completed"] and result["step"] == train_cfg.steps
    history = result["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == train_cfg.steps
    # same fixed validation draws each time, so the numbers are comparable
    assert history[-1]["val_loss"] < 0.97 * history[0]["val_loss"]
    assert all(math.isfinite(v) for v in history[-1]["val_mse_by_sigma"].values())
    weights, card_file = out / "ardm-ks.safetensors", out / "ardm-ks.json"
    assert result["weights_path"] == weights and weights.exists() and card_file.exists()
    assert (out / "checkpoint.safetensors").exists() and (out / "checkpoint.json").exists()
    card = json.loads(card_file.read_text())
    assert card["data_config"] == json.loads(json.dumps(tiny.config.to_dict()))
    assert DenoiserConfig.from_dict(card["model_config"]) == model_cfg
    assert TrainConfig.from_dict(card["training_config"]) == train_cfg
    assert card["final_val_loss"] == history[-1]["val_loss"]
    assert card["final_train_loss"] == history[-1]["train_loss"]
    assert card["wall_seconds"] > 0 and card["code_version"].startswith("0.")
    assert card["normalisation"]["std"] == pytest.approx(tiny.std.tolist())
    model, loaded_card = load_artifact(weights)
    assert loaded_card == card and model.config == model_cfg
    assert not any(p.requires_grad for p in model.parameters())


def test_resume_after_interruption_equals_uninterrupted(smoke_run, tiny, smoke, tmp_path):
    ref_dir, ref = smoke_run
    model_cfg, train_cfg = smoke
    first = train_ardm(tiny, model_cfg, train_cfg, tmp_path, progress=False, stop_after=6)
    assert not first["completed"] and first["step"] == 6
    assert not (tmp_path / "ardm-ks.safetensors").exists()
    resumed = train_ardm(tiny, model_cfg, train_cfg, tmp_path, progress=False)
    assert resumed["completed"] and resumed["step"] == train_cfg.steps
    a = load_file(str(ref_dir / "ardm-ks.safetensors"))
    b = load_file(str(tmp_path / "ardm-ks.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in h.items() if k != "lr"} for h in ref["history"]]
    assert [{k: v for k, v in h.items() if k != "lr"} for h in resumed["history"]] == strip
    # a checkpoint of another run is refused
    other = dataclasses.replace(train_cfg, lr=1e-3)
    with pytest.raises(ValueError, match="different run"):
        train_ardm(tiny, model_cfg, other, tmp_path, progress=False)
    # only the length may change on resume: the finished run is extended, and the card says so
    longer = train_ardm(
        tiny, model_cfg, dataclasses.replace(train_cfg, steps=14), tmp_path, progress=False
    )
    assert longer["step"] == 14 and longer["history"][-1]["step"] == 14
    assert longer["card"]["schedule_changes"] == [{"at_step": 12, "steps": [12, 14]}]
    # ... a checkpoint of another run is refused unless asked to start afresh; then the
    # result differs
    fresh = train_ardm(tiny, model_cfg, other, tmp_path, resume=False, progress=False)
    c = load_file(str(fresh["weights_path"]))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_artifact_round_trip(tmp_path):
    model = random_denoiser()
    path = tmp_path / "m.safetensors"
    card = save_artifact(model, {**denoiser_card_fields(), "note": "test"}, path)
    loaded, loaded_card = load_artifact(path)
    assert loaded_card == card and card["note"] == "test" and len(card["sha256"]) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    g = torch.Generator().manual_seed(2)
    z, ctx = torch.randn(2, 1, 32, generator=g), torch.randn(2, 2, 1, 32, generator=g)
    sigma = torch.tensor([0.3, 3.0])
    torch.testing.assert_close(loaded(z, sigma, ctx), model(z, sigma, ctx), rtol=0, atol=0)
    # DPS needs gradients w.r.t. the input even though the weights are frozen
    zg = z.clone().requires_grad_(True)
    loaded(zg, sigma, ctx).sum().backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0


KILLED_RUN = """
import os, sys
import ardm_infer.artifacts as artifacts
from ardm_infer.ardm.training import ardm_presets, train_ardm
from ardm_infer.data import DataConfig, load_dataset
from ardm_infer.dynamics import KSConfig

calls = []
write = artifacts._atomic_write_bytes

def write_then_die(data, path):
    calls.append(path)
    if len(calls) == 3:  # the step-8 checkpoint: killed half-way through writing it
        artifacts._tmp_name(path).write_bytes(data[: len(data) // 2])
        os._exit(9)
    write(data, path)

artifacts._atomic_write_bytes = write_then_die
cfg = DataConfig("ks", KSConfig(length=32, grid=32, dt=0.1, output_interval=0.2), train=4,
                 val=2, test=1, frames=24, burn_in=5.0)
data = load_dataset(cfg, cache_dir=sys.argv[1])
train_ardm(data, *ardm_presets("ks")["smoke"], sys.argv[2], progress=False)
"""


def test_a_killed_run_resumes_to_the_uninterrupted_weights(smoke_run, tiny, smoke, tmp_path):
    """A process killed while writing a checkpoint leaves the previous one intact (atomic
    writes); resuming from it gives the uninterrupted run's weights bit for bit."""
    import os
    import subprocess
    import sys

    ref_dir, _ = smoke_run
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path / "data"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},  # same reductions
    )
    assert proc.returncode == 9, proc.stderr
    assert json.loads((out / "checkpoint.json").read_text())["step"] == 4
    assert not (out / "ardm-ks.safetensors").exists()
    resumed = train_ardm(tiny, *smoke, out, progress=False)
    assert resumed["completed"]
    a = load_file(str(ref_dir / "ardm-ks.safetensors"))
    b = load_file(str(out / "ardm-ks.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
