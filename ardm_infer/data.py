"""Trajectory data sets from the numerical solvers, with splits, normalisation and a safe cache.

A data set is fully described by a :class:`DataConfig`.  Its train/val/test splits are drawn
from independent seeds derived from ``config.seed``; a burn-in of ``burn_in`` time units is
integrated and discarded so every trajectory starts on the attractor.  Normalisation
statistics (per-channel mean and standard deviation) come from the train split only.

Cache: files live under ``cache_dir`` (default: ``$ARDM_INFER_CACHE`` or the platform's user
cache directory) in a folder named by the SHA-256 of the full config and a format version, so
a changed parameter never reads stale data.  Each split is written to a temporary name,
flushed and fsynced, then atomically renamed: an interrupted generation never leaves a file
that is later read as complete, and a rerun only generates the splits still missing.  On load,
the stored config is compared with the requested one.

Shapes: each split is ``(trajectories, frames, channels, *space)`` in physical units (float32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .systems import System, available_systems, lookup_system

DATA_FORMAT_VERSION = 1
PDES = available_systems()
"""Names of the registered systems (:mod:`ardm_infer.systems`) at import time."""
SPLITS = ("train", "val", "test")
_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _system(pde: str) -> System:
    """The registered system of the canonical name ``pde`` (``ValueError`` otherwise)."""
    system = lookup_system(pde)
    if system is None or system.name != pde:
        raise ValueError(f"unknown pde {pde!r}; expected one of {available_systems()}")
    return system


def _solver_config_type(pde: str) -> type:
    return _system(pde).solver_config_type


@dataclass(frozen=True)
class DataConfig:
    """Everything that determines a data set.

    Attributes:
        pde: ``"ks"``, ``"kolmogorov"`` or ``"lorenz96"``.
        solver: the solver's config (KSConfig, KolmogorovConfig or Lorenz96Config).
        train, val, test: number of trajectories per split.
        frames: frames per trajectory (after burn-in).
        burn_in: time units integrated and discarded before the first frame.
        seed: base seed; split s uses seed ``1000 * seed + index(s)``.
        batch_size: trajectories integrated at once (memory only; does not change the data).
    """

    pde: str
    solver: Any
    train: int
    val: int
    test: int
    frames: int
    burn_in: float
    seed: int = 0
    batch_size: int = field(default=64, compare=False)

    def __post_init__(self) -> None:
        _system(self.pde)
        if not isinstance(self.solver, _solver_config_type(self.pde)):
            raise TypeError(
                f"solver for pde={self.pde!r} must be {_solver_config_type(self.pde).__name__}"
            )
        for name in ("train", "val", "test", "frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.frames < 1:
            raise ValueError("frames must be >= 1")
        if self.burn_in < 0:
            raise ValueError("burn_in must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (everything that determines the data; not batch_size)."""
        d = dataclasses.asdict(self)
        d.pop("batch_size")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        d = dict(d)
        d["solver"] = _solver_config_type(d["pde"])(**d["solver"])
        return cls(**d)

    def key(self) -> str:
        """SHA-256 of the config and the data format version (hex)."""
        payload = json.dumps(
            {"format": DATA_FORMAT_VERSION, "config": self.to_dict()}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **changes)


def default_data_config(pde: str) -> DataConfig:
    """The default data set of a system: its default solver config and
    :attr:`~ardm_infer.systems.System.data_sizes` (the reasoning is in each system's module).

    - ks: L = 64, 256 points, frames every 0.2 time units; 128/16/32 trajectories of 700
      frames (the long evaluation horizon is 640 frames plus context), burn-in 100.
    - kolmogorov: Re = 1000, n = 4, drag 0.1, simulated at 128^2 and stored at 64^2, frames
      every 0.2; 24/4/8 trajectories of 250 frames (long horizon 180 plus context),
      burn-in 10 (the energy is statistically steady after about 5 time units).
    - lorenz96: 40 variables, F = 8, frames every 0.05; 16/4/8 trajectories of 1000 frames.
    """
    system = _system(pde)
    sizes = system.data_sizes
    return DataConfig(
        pde,
        system.solver_config(),
        train=sizes.train,
        val=sizes.val,
        test=sizes.test,
        frames=sizes.frames,
        burn_in=sizes.burn_in,
    )


def make_solver(pde: str, solver_config: Any) -> Any:
    """Instantiate the solver of ``pde`` for its config."""
    return _system(pde).make_solver(solver_config)


@dataclass(frozen=True)
class Dataset:
    """A generated data set.

    Attributes:
        config: the :class:`DataConfig`.
        train, val, test: ``(trajectories, frames, channels, *space)`` float32, physical units.
        mean, std: per-channel statistics of the train split, ``(channels,)``.
        path: cache file it was read from or written to (None if not cached).
        generation_seconds: wall time of generation (None when read from cache).
    """

    config: DataConfig
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    path: Path | None = None
    generation_seconds: float | None = None

    def split(self, name: str) -> torch.Tensor:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def _stat_shape(self, x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        nd = x.ndim
        cd = channel_dim % nd
        shape = [1] * nd
        shape[cd] = -1
        return self.mean.to(x).reshape(shape), self.std.to(x).reshape(shape)

    def normalise(self, x: torch.Tensor, channel_dim: int = -1 - 0) -> torch.Tensor:
        """Map physical units to normalised units; ``channel_dim`` defaults to the channel
        axis of ``(..., channels, *space)`` inferred from the frame rank."""
        m, s = self._stat_shape(x, self._channel_dim(x, channel_dim))
        return (x - m) / s

    def denormalise(self, x: torch.Tensor, channel_dim: int = -1 - 0) -> torch.Tensor:
        """Inverse of :meth:`normalise`."""
        m, s = self._stat_shape(x, self._channel_dim(x, channel_dim))
        return x * s + m

    def _channel_dim(self, x: torch.Tensor, channel_dim: int) -> int:
        if channel_dim != -1:
            return channel_dim
        space_rank = self.train.ndim - 3
        return x.ndim - 1 - space_rank

    def summary(self) -> str:
        """Human-readable multi-line description."""
        c = self.config
        lines = [
            f"data set '{c.pde}' key={c.key()[:16]}",
            f"  solver: {c.solver}",
            f"  frames per trajectory: {c.frames}, burn-in: {c.burn_in} time units, seed: {c.seed}",
        ]
        for s in SPLITS:
            x = self.split(s)
            lines.append(
                f"  {s:5s}: shape {tuple(x.shape)}  min {x.min().item():+.3f}  "
                f"max {x.max().item():+.3f}  finite {bool(torch.isfinite(x).all())}"
            )
        lines.append(f"  normalisation (train): mean {self.mean.tolist()}  std {self.std.tolist()}")
        if self.path is not None:
            lines.append(f"  cache folder: {self.path}")
        if self.generation_seconds is not None:
            lines.append(f"  generated in {self.generation_seconds:.1f} s")
        else:
            lines.append("  read from cache")
        return "\n".join(lines)


def default_cache_dir() -> Path:
    """``$ARDM_INFER_CACHE`` if set, else the platform's user cache dir for ardm_infer."""
    env = os.environ.get("ARDM_INFER_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ardm_infer"))


def cache_path(config: DataConfig, cache_dir: str | Path | None = None) -> Path:
    """Directory where the data set of ``config`` is (or would be) cached; it holds one
    ``<split>.safetensors`` file per split, each written atomically when that split is done,
    so an interrupted generation resumes from the splits already finished."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "data" / f"{config.pde}-{config.key()[:24]}"


def generate_split(config: DataConfig, split: str, progress: bool = False) -> torch.Tensor:
    """Integrate the trajectories of one split: ``(n, frames, channels, *space)`` float32."""
    n = getattr(config, split)
    system = _system(config.pde)
    solver = system.make_solver(config.solver)
    scfg = config.solver
    g = torch.Generator().manual_seed(1000 * config.seed + _SPLIT_OFFSET[split])
    burn_steps = round(config.burn_in / scfg.dt)
    chunks = []
    bar = tqdm(
        total=n * (burn_steps + config.frames * scfg.substeps),
        desc=f"{config.pde}/{split}",
        unit="step",
        unit_scale=True,
        disable=not progress,
        file=sys.stderr,
    )
    # All initial conditions are drawn first, so the data do not depend on batch_size.
    initial = solver.random_initial_condition(n, g, dtype=torch.float64) if n else None
    for start in range(0, n, config.batch_size):
        b = min(config.batch_size, n - start)
        x = solver.integrate(initial[start : start + b], burn_steps)
        bar.update(b * burn_steps)
        frames = []
        for _ in range(config.frames):
            x = solver.integrate(x, scfg.substeps)
            frames.append(system.stored_frame(x, scfg))
            bar.update(b * scfg.substeps)
        chunks.append(torch.stack(frames, 1).unsqueeze(2).to(torch.float32))
    bar.close()
    if not chunks:
        return torch.zeros(0, config.frames, *solver.frame_shape)
    out = torch.cat(chunks, 0)
    if not torch.isfinite(out).all():
        raise RuntimeError(f"{config.pde}/{split}: the solver produced non-finite values")
    return out


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_split(path: Path, config: DataConfig, split: str) -> dict[str, torch.Tensor] | None:
    """Tensors of a cached split file, or None if it is missing, unreadable or not ours."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        print(f"ardm_infer: ignoring unreadable cache file {path} ({err})", file=sys.stderr)
        return None
    stored = json.loads(meta.get("config", "null"))
    if (
        stored != json.loads(json.dumps(config.to_dict()))
        or meta.get("split") != split
        or meta.get("complete") != "1"
    ):
        print(
            f"ardm_infer: cache file {path} does not match its config; regenerating",
            file=sys.stderr,
        )
        return None
    return tensors


def load_dataset(
    config: DataConfig | str = "ks",
    cache_dir: str | Path | None = None,
    progress: bool = False,
    use_cache: bool = True,
) -> Dataset:
    """Return the data set of ``config`` (a DataConfig or a PDE name for its default),
    generating and caching whatever split is missing.

    ``generation_seconds`` is the time spent generating in this call (None if every split
    came from the cache)."""
    if isinstance(config, str):
        config = default_data_config(config)
    directory = cache_path(config, cache_dir)
    splits: dict[str, torch.Tensor] = {}
    stats: dict[str, torch.Tensor] = {}
    seconds: float | None = None
    for split in SPLITS:
        path = directory / f"{split}.safetensors"
        cached = _read_split(path, config, split) if use_cache else None
        if cached is not None:
            splits[split] = cached["data"]
            if split == "train":
                stats = {"mean": cached["mean"], "std": cached["std"]}
            continue
        t0 = time.perf_counter()
        data = generate_split(config, split, progress=progress)
        tensors = {"data": data}
        if split == "train":
            stats = _statistics(data)
            tensors.update(stats)
        if use_cache:
            _atomic_save(
                tensors,
                {
                    "config": json.dumps(config.to_dict(), sort_keys=True),
                    "split": split,
                    "complete": "1",
                    "format": str(DATA_FORMAT_VERSION),
                },
                path,
            )
        seconds = (seconds or 0.0) + time.perf_counter() - t0
        splits[split] = data
    return Dataset(
        config=config,
        mean=stats["mean"],
        std=stats["std"],
        path=directory if use_cache else None,
        generation_seconds=seconds,
        **splits,
    )


def _statistics(train: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel mean and std of ``(n, frames, channels, *space)``, ``(channels,)`` each."""
    if train.shape[0] == 0:
        return {"mean": torch.zeros(train.shape[2]), "std": torch.ones(train.shape[2])}
    reduce = [d for d in range(train.ndim) if d != 2]
    return {"mean": train.mean(dim=reduce), "std": train.std(dim=reduce)}
