"""Training of the learned ARDM denoiser: the EDM loss, training pairs, validation, presets.

Objective (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", eq. 2 and Table 1): for a training pair (context c = frames [t-k, t), target
x = frame t) in normalised units,

    ln sigma ~ N(p_mean, p_std^2),   z = x + sigma * eps,   eps ~ N(0, I)
    loss = E[ lambda(sigma) |D(z, sigma, c) - x|^2 ]
    lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2

(the mean over all elements of the batch).  With the EDM preconditioning this equals the
plain MSE of the network output against its effective target, so the loss is of order 1 at
every noise level.

Optimiser: AdamW (no weight decay on biases and norms), linear warm-up then cosine decay of
the learning rate, gradient-norm clipping, and an exponential moving average (EMA) of the
weights with decay ``min(ema_decay, (1 + n) / (10 + n))`` after n updates.  The EMA weights
are what is validated and saved.

Every random number (parameter init, training pairs, sigma, eps) comes from explicit
``torch.Generator`` objects seeded from ``TrainConfig.seed``; validation uses its own fixed
generator, so successive validation losses are comparable.

Checkpoints, resume, history and the progress bar are the shared loop of
:mod:`ardm_infer.training_loop`; a killed run resumed from ``out_dir/checkpoint.safetensors``
produces exactly the weights of an uninterrupted one (same device and thread count).

Artifacts: ``out_dir/<name>.safetensors`` (EMA weights only) and ``out_dir/<name>.json``, a
card with the data, model and training configs, final losses, wall time, code version,
normalisation statistics and the sha256 of the weights file, bound to the weights
(:mod:`ardm_infer.ardm.artifact`, :mod:`ardm_infer.artifacts`).

Shapes: data splits are ``(trajectories, frames, channels, *space)``; a training batch is a
target ``(batch, channels, *space)`` and a context ``(batch, k, channels, *space)``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..artifacts import CHECKPOINT_FORMAT, card_path
from ..training_loop import TrainingTask, card_fields, learning_rate, run_result, run_training
from .artifact import ARTIFACT_FORMAT, load_artifact, save_artifact
from .nets import Denoiser, DenoiserConfig, build_denoiser

__all__ = [
    "ARTIFACT_FORMAT",
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "ardm_presets",
    "card_path",
    "edm_loss",
    "evaluate_denoiser",
    "learning_rate",
    "load_artifact",
    "sample_training_pairs",
    "save_artifact",
    "train_ardm",
]

# ---------------------------------------------------------------------------------------------
# Configs and presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_ardm`.

    Attributes:
        steps: optimiser steps.
        batch_size: training pairs per step.
        lr: peak learning rate (AdamW).
        weight_decay: decoupled weight decay on conv/linear weights (not biases or norms).
        ema_decay: EMA decay of the weights (warmed up as ``min(ema_decay, (1+n)/(10+n))``).
        p_mean, p_std: ln sigma ~ N(p_mean, p_std^2) in the EDM loss.
        val_every: validate every this many steps (0: only before and after training).
        val_batches: validation batches (of ``batch_size`` pairs) per evaluation.
        checkpoint_every: write the resumable checkpoint every this many steps (0: never).
        seed: seeds parameter init, training pairs and noise, and validation.
        grad_clip: max global gradient norm (0: no clipping).
        warmup_steps: linear learning-rate warm-up steps, then cosine decay.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        adam_betas: AdamW betas.
        val_sigmas: fixed noise levels at which the validation MSE of x0_hat is reported.
    """

    steps: int
    batch_size: int
    lr: float = 5e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    val_every: int = 500
    val_batches: int = 4
    checkpoint_every: int = 500
    seed: int = 0
    grad_clip: float = 1.0
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    adam_betas: tuple[float, float] = (0.9, 0.999)
    val_sigmas: tuple[float, ...] = (0.02, 0.1, 0.5, 1.0, 5.0, 20.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        object.__setattr__(self, "val_sigmas", tuple(float(s) for s in self.val_sigmas))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in [0, 1)")
        if not self.p_std > 0:
            raise ValueError("p_std must be > 0")
        for name in ("val_every", "val_batches", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.grad_clip < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("grad_clip must be >= 0 and min_lr_ratio in [0, 1]")
        if len(self.adam_betas) != 2 or any(s <= 0 for s in self.val_sigmas):
            raise ValueError("adam_betas needs 2 values and val_sigmas must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        d["val_sigmas"] = list(self.val_sigmas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)


def ardm_presets(pde: str) -> dict[str, tuple[DenoiserConfig, TrainConfig]]:
    """Named (model, training) configurations for the default data set of ``pde``.

    - ``"default"``: the shipped checkpoint, sized to train in well under 45 minutes on 2 CPU
      cores.  Measured on 2 otherwise idle cores (torch 2.13, float32), one full training
      step (forward, backward, AdamW, EMA): KS (736k parameters, patch 4, batch 32) 44 ms,
      so 40k steps take about 30 min; Kolmogorov (895k parameters, patch 2, batch 16 at
      64x64) 112 ms, 15k steps about 28 min; Lorenz-96 (329k parameters, batch 64) 31 ms,
      20k steps about 10 min.  Context k = 2 frames throughout.
    - ``"smoke"``: a tiny net and a dozen steps, for tests and CI (works on any grid whose
      size is a multiple of 2).

    Args:
        pde: ``"ks"``, ``"kolmogorov"`` or ``"lorenz96"``.

    Returns:
        ``{name: (DenoiserConfig, TrainConfig)}``.
    """
    dims = {"ks": 1, "kolmogorov": 2, "lorenz96": 1}.get(pde)
    if dims is None:
        raise ValueError(f"unknown pde {pde!r}; expected 'ks', 'kolmogorov' or 'lorenz96'")
    smoke = (
        DenoiserConfig(
            dims=dims,
            channels=1,
            context_frames=2,
            base_channels=8,
            channel_mult=(1, 2),
            blocks_per_level=1,
            fourier_features=16,
            groups=4,
        ),
        TrainConfig(
            steps=12,
            batch_size=8,
            lr=2e-3,
            ema_decay=0.9,
            val_every=4,
            val_batches=1,
            checkpoint_every=4,
            warmup_steps=2,
        ),
    )
    if pde == "ks":
        default = (
            DenoiserConfig(
                dims=1,
                channels=1,
                context_frames=2,
                base_channels=48,
                channel_mult=(1, 2, 2),
                blocks_per_level=1,
                patch_size=4,
            ),
            TrainConfig(
                steps=40_000,
                batch_size=32,
                lr=5e-4,
                ema_decay=0.999,
                val_every=1000,
                val_batches=8,
                checkpoint_every=1000,
                warmup_steps=500,
            ),
        )
    elif pde == "kolmogorov":
        default = (
            DenoiserConfig(
                dims=2,
                channels=1,
                context_frames=2,
                base_channels=24,
                channel_mult=(1, 2, 4),
                blocks_per_level=1,
                patch_size=2,
            ),
            TrainConfig(
                steps=15_000,
                batch_size=16,
                lr=5e-4,
                ema_decay=0.999,
                val_every=1000,
                val_batches=8,
                checkpoint_every=500,
                warmup_steps=500,
            ),
        )
    else:
        default = (
            DenoiserConfig(
                dims=1,
                channels=1,
                context_frames=2,
                base_channels=32,
                channel_mult=(1, 2, 2),
                blocks_per_level=1,
            ),
            TrainConfig(
                steps=20_000,
                batch_size=64,
                lr=5e-4,
                ema_decay=0.999,
                val_every=1000,
                val_batches=8,
                checkpoint_every=1000,
                warmup_steps=500,
            ),
        )
    return {"default": default, "smoke": smoke}


# ---------------------------------------------------------------------------------------------
# Loss, pairs, schedule, validation
# ---------------------------------------------------------------------------------------------


def sample_training_pairs(
    frames: torch.Tensor, context_frames: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (trajectory, time) windows.

    Args:
        frames: ``(trajectories, time, channels, *space)`` in normalised units.
        context_frames: k.
        batch_size: B.
        generator: a CPU generator (indices are drawn on the CPU, then moved to
            ``frames.device``, so the draw does not depend on the device).

    Returns:
        ``(target (B, channels, *space), context (B, k, channels, *space))`` with context the
        frames ``[t-k, t)`` and target the frame ``t``, ``t`` uniform in ``[k, time)``.
    """
    n, length = frames.shape[:2]
    k = context_frames
    if length <= k:
        raise ValueError(f"trajectories have {length} frames; need more than k = {k}")
    traj = torch.randint(0, n, (batch_size,), generator=generator)
    t = torch.randint(k, length, (batch_size,), generator=generator)
    offsets = torch.arange(-k, 1)
    windows = frames[traj[:, None].to(frames.device), (t[:, None] + offsets).to(frames.device)]
    return windows[:, k], windows[:, :k]


def edm_loss(
    denoiser: Denoiser,
    target: torch.Tensor,
    context: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """Per-sample EDM loss ``lambda(sigma) mean|D(x + sigma eps, sigma, c) - x|^2``.

    Args:
        target: x ``(batch, channels, *space)``.
        context: ``(batch, k, channels, *space)``.
        sigma: ``(batch,)``.
        noise: eps ``(batch, channels, *space)``.

    Returns:
        ``(batch,)``, the weighted squared error averaged over ``(channels, *space)``.
    """
    sd = denoiser.config.sigma_data
    expand = (...,) + (None,) * (target.ndim - 1)
    z = target + sigma[expand] * noise
    x0_hat = denoiser(z, sigma, context)
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    return weight * (x0_hat - target).square().flatten(1).mean(1)


def _draw_sigma_noise(
    target: torch.Tensor, config: TrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    b = target.shape[0]
    log_sigma = config.p_mean + config.p_std * torch.randn(b, generator=generator)
    noise = torch.randn(target.shape, generator=generator)
    return log_sigma.exp().to(target), noise.to(target)


@torch.no_grad()
def evaluate_denoiser(
    denoiser: Denoiser, frames: torch.Tensor, config: TrainConfig
) -> dict[str, Any] | None:
    """Validation of ``denoiser`` on ``frames`` with a fixed generator (seed ``config.seed``).

    Every call with the same inputs draws the same pairs, sigmas and noise, so the numbers
    are comparable across evaluations.

    Args:
        frames: ``(trajectories, time, channels, *space)`` in normalised units.

    Returns:
        ``{"loss": EDM loss with sigma from the training distribution,
        "mse_by_sigma": {str(sigma): mean |D(x + sigma eps) - x|^2 at each fixed val sigma}}``,
        or None when ``frames`` has no trajectories or ``val_batches`` is 0.
    """
    k = denoiser.config.context_frames
    if frames.shape[0] == 0 or config.val_batches == 0 or frames.shape[1] <= k:
        return None
    was_training = denoiser.training
    denoiser.eval()
    g = torch.Generator().manual_seed(config.seed + 104_729)
    loss_sum = 0.0
    mse_sums = dict.fromkeys(config.val_sigmas, 0.0)
    for _ in range(config.val_batches):
        target, context = sample_training_pairs(frames, k, config.batch_size, g)
        sigma, noise = _draw_sigma_noise(target, config, g)
        loss_sum += edm_loss(denoiser, target, context, sigma, noise).mean().item()
        for s in config.val_sigmas:
            sig = torch.full((target.shape[0],), s, dtype=target.dtype, device=target.device)
            x0_hat = denoiser(target + s * noise, sig, context)
            mse_sums[s] += (x0_hat - target).square().mean().item()
    denoiser.train(was_training)
    nb = config.val_batches
    return {
        "loss": loss_sum / nb,
        "mse_by_sigma": {repr(s): v / nb for s, v in mse_sums.items()},
    }


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _check_compatible(dataset: Any, config: DenoiserConfig) -> None:
    train = dataset.train
    space = train.shape[3:]
    if len(space) != config.dims:
        raise ValueError(
            f"data frames have {len(space)} spatial dims, the denoiser config has {config.dims}"
        )
    if train.shape[2] != config.channels:
        raise ValueError(
            f"data frames have {train.shape[2]} channels, the denoiser config has {config.channels}"
        )
    f = config.downsampling_factor
    if any(n % f for n in space):
        raise ValueError(f"grid {tuple(space)} is not a multiple of the net's factor {f}")
    if train.shape[0] == 0 or train.shape[1] <= config.context_frames:
        raise ValueError(
            f"train split {tuple(train.shape)} needs >= 1 trajectory of more than "
            f"k = {config.context_frames} frames"
        )


def _make_optimizer(model: Denoiser, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.adam_betas,
    )


@torch.no_grad()
def _update_ema(ema: Denoiser, model: Denoiser, decay: float) -> None:
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def train_ardm(
    dataset: Any,
    denoiser_config: DenoiserConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train an EDM denoiser on ``dataset`` and save its EMA weights as an artifact.

    Args:
        dataset: a :class:`ardm_infer.data.Dataset`; its train split
            ``(trajectories, frames, channels, *space)`` is normalised with
            ``dataset.normalise`` and windows of k + 1 frames are drawn from it.
        denoiser_config: the architecture.
        train_config: the optimisation (see :class:`TrainConfig`).
        out_dir: where the checkpoint and the artifact are written.
        resume: continue from ``out_dir/checkpoint.safetensors`` if present (its configs must
            equal the given ones, else ``ValueError``).  With False an existing checkpoint is
            ignored and overwritten.
        progress: show a tqdm bar with the running loss.
        name: artifact name (default ``ardm-<pde>``): ``out_dir/<name>.safetensors`` and
            ``out_dir/<name>.json``.
        device: where to train (default: CUDA if available, else CPU).
        stop_after: write a checkpoint and return after this many total steps without
            finishing (for time-sliced jobs); a later call with ``resume=True`` continues.

    Returns:
        ``{"completed", "step", "name", "weights_path", "card_path", "final_train_loss",
        "final_val_loss", "final_val_mse_by_sigma", "wall_seconds", "history", "card"}``
        (paths and card are None when stopped early).
    """
    tc = train_config
    cfg = denoiser_config
    _check_compatible(dataset, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or f"ardm-{dataset.config.pde}"
    dev = torch.device(device) if device is not None else None
    if dev is None:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train = dataset.normalise(dataset.train).to(dev, torch.float32)
    val = dataset.normalise(dataset.val).to(dev, torch.float32)

    model = build_denoiser(cfg, generator=torch.Generator().manual_seed(tc.seed)).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = _make_optimizer(model, tc)
    generator = torch.Generator().manual_seed(tc.seed + 1)
    params = list(model.parameters())
    k = cfg.context_frames

    def train_step(step: int) -> dict[str, float]:
        target, context = sample_training_pairs(train, k, tc.batch_size, generator)
        sigma, noise = _draw_sigma_noise(target, tc, generator)
        loss = edm_loss(model, target, context, sigma, noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        _update_ema(ema, model, min(tc.ema_decay, (step + 2) / (step + 11)))
        return {"loss": loss.item()}

    def validate() -> dict[str, Any]:
        result = evaluate_denoiser(ema, val, tc)
        if result is None:
            return {"val_loss": None, "val_mse_by_sigma": None}
        return {"val_loss": result["loss"], "val_mse_by_sigma": result["mse_by_sigma"]}

    task = TrainingTask(
        name=name,
        out_dir=out_dir,
        identity={
            "name": name,
            "data_key": dataset.config.key(),
            "model_config": cfg.to_dict(),
            "training_config": tc.to_dict(),
        },
        config=tc,
        optimizer=optimizer,
        modules={"model": model, "ema": ema},
        generators={"train": generator},
        metrics=("loss",),
        train_step=train_step,
        validate=validate,
        progress_fields=lambda m, lr: {"loss": f"{m['loss']:.4f}", "lr": f"{lr:.2e}"},
        headline="val_loss",
    )
    model.train()
    state = run_training(task, resume=resume, progress=progress, stop_after=stop_after)
    weights_path = out_dir / f"{name}.safetensors"
    final = state["history"][-1]
    train_losses = [h["train_loss"] for h in state["history"] if h["train_loss"] is not None]
    finals = {
        "final_train_loss": train_losses[-1] if train_losses else None,
        "final_val_loss": final["val_loss"],
        "final_val_mse_by_sigma": final["val_mse_by_sigma"],
    }
    card = None
    if state["completed"]:
        fields = {
            **card_fields(state, dev),
            "data_config": dataset.config.to_dict(),
            "data_key": dataset.config.key(),
            "normalisation": {"mean": dataset.mean.tolist(), "std": dataset.std.tolist()},
            **finals,
        }
        card = save_artifact(ema.to("cpu"), fields, weights_path)
    return run_result(state, weights_path, card, finals)
