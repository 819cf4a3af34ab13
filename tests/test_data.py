"""Data sets: splits, normalisation, cache keyed by config, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ardm_infer.data as data_mod
from ardm_infer.data import DataConfig, cache_path, default_data_config, load_dataset
from ardm_infer.dynamics import KSConfig


def small_config(**changes) -> DataConfig:
    cfg = DataConfig(
        "ks",
        KSConfig(length=32.0, grid=32, dt=0.1, output_interval=0.2),
        train=3,
        val=2,
        test=2,
        frames=6,
        burn_in=5.0,
    )
    return cfg.replace(**changes)


def test_splits_shapes_and_independence(tmp_path: Path):
    ds = load_dataset(small_config(), cache_dir=tmp_path)
    assert ds.train.shape == (3, 6, 1, 32)
    assert ds.val.shape == (2, 6, 1, 32) and ds.test.shape == (2, 6, 1, 32)
    assert ds.train.dtype == torch.float32
    assert not torch.allclose(ds.train[:2], ds.val)  # different seeds per split
    assert not torch.allclose(ds.val, ds.test)
    x = ds.test
    torch.testing.assert_close(ds.denormalise(ds.normalise(x)), x)
    z = ds.normalise(ds.train)
    assert abs(z.mean().item()) < 1e-5 and abs(z.std().item() - 1) < 1e-3


def test_generation_is_deterministic_and_batch_size_free(tmp_path: Path):
    a = load_dataset(small_config(), use_cache=False)
    b = load_dataset(small_config(batch_size=1), use_cache=False)
    torch.testing.assert_close(a.train, b.train, atol=1e-6, rtol=1e-6)
    assert small_config().key() == small_config(batch_size=1).key()


def test_cache_hit_and_config_keying(tmp_path: Path, monkeypatch):
    cfg = small_config()
    first = load_dataset(cfg, cache_dir=tmp_path)
    assert first.generation_seconds is not None and first.path.is_dir()
    calls = []
    real = data_mod.generate_split
    monkeypatch.setattr(
        data_mod, "generate_split", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    second = load_dataset(cfg, cache_dir=tmp_path)
    assert calls == [] and second.generation_seconds is None
    torch.testing.assert_close(first.train, second.train)
    # Any parameter change, including a solver one, must map to a different file.
    for changed in (
        small_config(seed=1),
        small_config(frames=7),
        small_config(solver=KSConfig(length=33.0, grid=32, dt=0.1, output_interval=0.2)),
    ):
        assert cache_path(changed, tmp_path) != cache_path(cfg, tmp_path)
    third = load_dataset(small_config(seed=1), cache_dir=tmp_path)
    assert calls == [1, 1, 1]  # one per split
    assert not torch.allclose(third.train, first.train)


def test_interrupted_write_leaves_no_complete_looking_file(tmp_path: Path, monkeypatch):
    cfg = small_config()
    target = cache_path(cfg, tmp_path) / "val.safetensors"
    real_save = data_mod.save_file
    saved = []

    def dying_save(tensors, filename, metadata=None):
        if metadata["split"] == "train":  # the first split completes normally
            saved.append(filename)
            return real_save(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"half a file")  # partial bytes, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(data_mod, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg, cache_dir=tmp_path)
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["train.safetensors"]
    monkeypatch.undo()
    calls = []
    real = data_mod.generate_split
    monkeypatch.setattr(
        data_mod, "generate_split", lambda c, split, **k: calls.append(split) or real(c, split, **k)
    )
    ds = load_dataset(cfg, cache_dir=tmp_path)  # resumes: only the missing splits
    assert calls == ["val", "test"]
    assert ds.generation_seconds is not None and target.exists()
    torch.testing.assert_close(ds.train, load_dataset(cfg, use_cache=False).train)


def test_corrupt_or_mismatched_cache_file_is_regenerated(tmp_path: Path, capsys):
    cfg = small_config()
    good = load_dataset(cfg, cache_dir=tmp_path)
    f = good.path / "train.safetensors"
    f.write_bytes(f.read_bytes()[:100])  # truncated by e.g. a full disk
    ds = load_dataset(cfg, cache_dir=tmp_path)
    assert ds.generation_seconds is not None
    torch.testing.assert_close(ds.train, good.train)
    assert "unreadable" in capsys.readouterr().err


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="unknown pde"):
        default_data_config("navier")
    with pytest.raises(TypeError, match="KSConfig"):
        DataConfig("ks", object(), 1, 1, 1, 5, 0.0)
    with pytest.raises(ValueError, match="multiple of dt"):
        KSConfig(dt=0.03, output_interval=0.2)


def test_env_var_sets_cache_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ARDM_INFER_CACHE", str(tmp_path / "c"))
    assert str(cache_path(small_config())).startswith(str(tmp_path / "c"))


def test_cli_data_command(tmp_path: Path, capsys):
    from ardm_infer.cli import main

    rc = main(
        [
            "data",
            "--pde",
            "lorenz96",
            "--cache-dir",
            str(tmp_path),
            "--train",
            "2",
            "--val",
            "1",
            "--test",
            "1",
            "--frames",
            "5",
            "--quiet",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "train: shape (2, 5, 1, 40)" in out and "generated in" in out
