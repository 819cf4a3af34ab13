"""Before/after check for refactors: behaviour must not change.

Runs a fixed, small set of computations that touch every public path (shipped ARDMs and
controllers, every strategy through ``assimilate`` and ``benchmark``, both trainers) with
fixed seeds on one torch thread, and writes every output tensor to a safetensors file, or
compares them bit for bit with such a file::

    python scripts/equivalence.py --write /tmp/before.safetensors    # on the old code
    python scripts/equivalence.py --check /tmp/before.safetensors    # on the new code

The last line is ``equivalence=identical outputs=<n>`` or ``equivalence=DIFFERENT ...`` (exit
status 1) listing what changed.  Wall times, memory and code versions are left out; every
other number is compared exactly (NaN equal to NaN).  About 1-2 minutes on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from safetensors.torch import load_file, save_file

VOLATILE = {"wall_seconds", "ms_per_frame", "peak_memory_bytes"}


def _tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().contiguous()
    arr = np.asarray(x)
    if arr.dtype.kind in "US":
        arr = np.frombuffer("\x00".join(map(str, arr.ravel())).encode(), dtype=np.uint8)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return torch.from_numpy(np.array(arr, copy=True, order="C"))


def _bench_outputs(out: dict[str, torch.Tensor]) -> None:
    from ardm_infer.bench import benchmark

    ds = benchmark(
        "ks",
        strategies=None,
        regimes=["sparse", "dense-gappy", "random"],
        horizon=9,
        trajectories=2,
        members=3,
        seed=0,
        progress=False,
    )
    for name, var in ds.data_vars.items():
        if name in VOLATILE:
            continue
        out[f"bench/{name}"] = _tensor(var.values)
    for name, coord in ds.coords.items():
        out[f"bench/coord/{name}"] = _tensor(coord.values)


def _ardm_outputs(out: dict[str, torch.Tensor]) -> None:
    from ardm_infer import assimilate, load_ardm, make_problem

    for pde, shape in (("ks", (1, 256)), ("kolmogorov", (1, 64, 64))):
        ardm = load_ardm(pde)
        g = torch.Generator().manual_seed(11)
        field = torch.randn(2, 5, *shape, generator=g)
        # smooth the synthetic frames (low-pass) so they resemble the data
        dims = tuple(range(-len(shape) + 1, 0))
        spec = torch.fft.rfftn(field, dim=dims)
        keep = [slice(None)] * spec.ndim
        for d in dims[:-1]:
            spec.narrow(d, 8, spec.shape[d] - 16).zero_()
        spec[(*keep[:-1], slice(8, None))] = 0
        frames = torch.fft.irfftn(spec, s=shape[1:], dim=dims) * 4
        problem = make_problem(frames, 2, "sparse", torch.Generator().manual_seed(1), pde=pde)
        for strategy in ("forecast", "controller", "dps"):
            if pde == "kolmogorov" and strategy == "dps":
                continue
            opts = {"controller": pde} if strategy == "controller" else {}
            res = assimilate(
                ardm,
                problem,
                strategy,
                members=2,
                generator=torch.Generator().manual_seed(5),
                **opts,
            )
            out[f"ardm/{pde}/{strategy}"] = _tensor(res.ensemble)


def _twin_outputs(out: dict[str, torch.Tensor]) -> None:
    from ardm_infer import assimilate, make_problem
    from ardm_infer.ardm import analytic_ardm
    from ardm_infer.dynamics import LinearGaussianTwin

    twin = LinearGaussianTwin.default(dim=8)
    ardm = analytic_ardm(twin)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 8, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 6, g)], 1).unsqueeze(2)
    problem = make_problem(frames, 1, "stride=2, every=1, sigma=0.3", g)
    for name in ("forecast", "dps", "smc", "enkf", "vc"):
        res = assimilate(ardm, problem, name, members=6, generator=torch.Generator().manual_seed(2))
        out[f"twin/{name}"] = _tensor(res.ensemble)
        if res.log_weights is not None:
            out[f"twin/{name}/log_weights"] = _tensor(res.log_weights)
    for name in ("forecast", "smc", "enkf"):
        res = assimilate(twin, problem, name, members=6, generator=torch.Generator().manual_seed(3))
        out[f"twin-numerical/{name}"] = _tensor(res.ensemble)


def _training_outputs(out: dict[str, torch.Tensor], tmp: Path) -> None:
    from safetensors.torch import load_file as load

    from ardm_infer.ardm import analytic_ardm
    from ardm_infer.ardm.training import ardm_presets, train_ardm
    from ardm_infer.controller import ControllerConfig, ControllerTrainConfig, train_controller
    from ardm_infer.data import DataConfig, load_dataset
    from ardm_infer.dynamics import KSConfig, LinearGaussianTwin

    cfg = DataConfig(
        "ks",
        KSConfig(length=32, grid=32, dt=0.1, output_interval=0.2),
        train=4,
        val=2,
        test=1,
        frames=24,
        burn_in=5.0,
    )
    data = load_dataset(cfg, cache_dir=tmp / "data")
    model_cfg, train_cfg = ardm_presets("ks")["smoke"]
    res = train_ardm(data, model_cfg, train_cfg, tmp / "ardm", progress=False)
    for k, v in load(res["weights_path"]).items():
        out[f"train-ardm/{k}"] = v
    twin = LinearGaussianTwin.default(dim=8)
    ardm = analytic_ardm(twin)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(16, 8, generator=g, dtype=torch.float64)
    frames = torch.cat([x0[:, None], twin.trajectory(x0, 12, g)], 1).unsqueeze(2).float()
    config = ControllerConfig(
        dims=1,
        channels=1,
        context_frames=1,
        preview=1,
        width=8,
        blocks=1,
        dilations=(1,),
        embedding_dim=16,
        fourier_features=8,
    )
    train = ControllerTrainConfig(
        steps=12,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        val_every=6,
        val_batches=1,
        checkpoint_every=5,
        regimes="stride=2, every=1, sigma=0.3",
    )
    res = train_controller(ardm, frames, config, train, tmp / "ctrl", progress=False)
    for k, v in load(res["weights_path"]).items():
        out[f"train-controller/{k}"] = v


def collect() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    out: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        _twin_outputs(out)
        _ardm_outputs(out)
        _bench_outputs(out)
        _training_outputs(out, Path(tmp))
    return out


def compare(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    problems = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            problems.append(f"{key}: missing now")
        elif key not in before:
            problems.append(f"{key}: new output")
        else:
            a, b = before[key], after[key]
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"{key}: {tuple(a.shape)} {a.dtype} -> {tuple(b.shape)} {b.dtype}")
            elif not torch.equal(a, b):
                if a.is_floating_point():
                    same = (a == b) | (a.isnan() & b.isnan())
                    if bool(same.all()):
                        continue
                    diff = (a - b).abs()[~same].max().item()
                    problems.append(f"{key}: max abs difference {diff:.3g}")
                else:
                    problems.append(f"{key}: values differ")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="write the outputs to this file")
    group.add_argument("--check", type=Path, help="compare the outputs with this file")
    args = parser.parse_args(argv)
    out = collect()
    if args.write:
        save_file(out, str(args.write))
        print(f"equivalence=written outputs={len(out)} file={args.write}")
        return 0
    problems = compare(load_file(str(args.check)), out)
    for line in problems:
        print(line)
    if problems:
        print(f"equivalence=DIFFERENT outputs={len(out)} differing={len(problems)}")
        return 1
    print(f"equivalence=identical outputs={len(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
