"""Offline training of the amortised controller (CA-ARDM, arXiv 2510.06637), artifacts.

Objective (docs/design.md §2).  A training window is L consecutive frames x_1..x_L of a
(normalised) training trajectory, observed through that window's regime,
y_j = M_j (x_j + sigma_y xi_j).  The frozen ARDM is rolled over the L frames with the
controller active (the preview of frame j holds the window's frames j..j+Lambda-1, zero past
the window), and

    J(psi) = E[ sum_j l(y_j, x_j^u) + sum_{j,s} w l(y_j, x0_hat_{j,s}) + beta sum_{j,s} KL_{j,s} ],
    l(y, x) = |M (y - x)|^2 / (2 sigma_y^2),   KL_{j,s} = |u_{j,s}|^2 / (2 tau_s^2) = |f|^2 / 2

(per window, ``controlled_rollout``) is minimised over psi by back-propagating through the
rollout (reparameterised sampler noise) with Adam.  With beta = 1 and w = 0 this is
KL(Q^u || posterior path measure) minus the log-evidence; the paper (arXiv 2510.06637)
trains with beta = 0 plus Tweedie arrival costs (w > 0): both are parameters, and the control
energy (KL) is logged either way.  ``vc`` minimises the same J per instance; this is its
amortised counterpart.

Chains: truncated backpropagation through long assimilation runs.  At inference the
controller acts on contexts that are the model's *own* earlier frames, which drift away
from the truth (for the KS ARDM the unguided forecast needs about 120 frames to reach an
error of 0.1, i.e. sigma_y); windows that always start from the true context would never
show it that situation (over 4 frames from the truth the forecast error is ~0.006, far
below the observation noise, so there is nothing to correct).  The B windows of a step are
therefore the next windows of B persistent chains: each chain starts from a true context at
a random time of a random training trajectory with its own regime, and every window
continues from the frames the controlled ARDM generated in the chain's previous window.  A
chain restarts with probability ``chain_reset`` before each window (mean length
L / chain_reset frames) or when its trajectory ends.  This is on-policy training (as
DAgger / scheduled sampling) at no extra cost: every window is rolled out once.

Gradients and truncation.  The ARDM's parameters are frozen (``requires_grad_(False)``), but
the gradient flows through the denoiser into its *inputs*: from the cost of frame j through
x_j = z_0, every sub-step z_{s-1} = m(z_s) + u_s + tau_s xi (including
dm/dz_s = c_s I + (1 - c_s) dD/dz_s) and, unless ``detach_context``, through the context of
frame j + 1, so the controls of frame j are credited with the costs of the later frames of
the window (this is what makes the preview useful).  Truncation is at the window boundary:
the context a window starts from (true or carried over from the chain) is detached, so
backpropagation spans at most L frames x S sub-steps.  ``detach_context=True`` truncates
further, at every frame boundary (each frame's controls then see only that frame's costs).

Receding horizon.  At inference the controller of frame t sees frames t..t+Lambda-1; in
training the preview of window frame j is cut at the window's end (frames j..L-1), exactly
the information whose costs J charges to it.  Frame j = 0 of a window (L = Lambda) is the
inference situation; later frames teach the shorter look-aheads met near a horizon's end.

Regimes.  Either one fixed :class:`~ardm_infer.observe.Regime` or a
:class:`RegimeDistribution` from which every chain draws its own regime at each restart
(stride or random fraction, temporal interval ``every`` with a random phase, noise level
sigma_y), so one controller is trained across regimes: the mask and sigma_y are inputs of
the network.  Windows of a chain follow the regime's temporal pattern, so with ``every`` > L
some windows hold no observation; the controller's gating makes u = 0 there (the exact
optimum of J) and the chain simply advances under the prior, as at inference.

Validation: ``val_batches`` batches of B chains on held-out trajectories, each started from
the truth and rolled ``val_windows`` windows without gradients, with a fixed generator (the
same chains, regimes and noise at every evaluation); reported: J, its terms and the KL per
window (chain average) and the RMSE of the last window against the truth.

Reproducibility: parameters, chains, regimes, observation noise and sampler noise all come
from explicit generators seeded by ``ControllerTrainConfig.seed``.  Checkpoints are atomic
safetensors (network, Adam state, chain state, generator state, JSON state in the metadata,
with a ``checkpoint.json`` mirror); resuming reproduces an uninterrupted run exactly.  The
artifact is ``<name>.safetensors`` plus a ``<name>.json`` card (configs, regimes, the ARDM it
was trained for, data identity, final losses, history, wall time, code version, sha256);
:func:`load_controller` verifies it.

Shapes: data ``(trajectories, time, C, *space)``; a batch of windows has context
``(B, k, C, *space)``, truth/observation/mask ``(B, L, C, *space)``, sigma_y ``(B,)``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..ardm.training import (
    _atomic_save_tensors,
    _atomic_write_text,
    _sha256,
    card_path,
    learning_rate,
    load_verified_module,
)
from ..observe import Full, RandomFraction, Regime, add_noise
from ..observe import parse_regime as _parse_regime
from .network import Controller, ControllerConfig, count_parameters
from .rollout import controlled_rollout

__all__ = [
    "CONTROLLER_ARTIFACT_FORMAT",
    "CONTROLLER_CHECKPOINT_FORMAT",
    "ControllerTrainConfig",
    "RegimeDistribution",
    "controlled_rollout",
    "controller_presets",
    "load_controller",
    "resolve_regimes",
    "save_controller",
    "train_controller",
]

CONTROLLER_ARTIFACT_FORMAT = "ardm_infer.controller/1"
CONTROLLER_CHECKPOINT_FORMAT = "ardm_infer.controller-checkpoint/1"
_CARD_KIND = "ardm_controller"


# ---------------------------------------------------------------------------------------------
# Regimes drawn per window
# ---------------------------------------------------------------------------------------------


def _stride_tuple(step: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (int(step),) * dims if isinstance(step, int) else tuple(int(s) for s in step)


@dataclass(frozen=True)
class RegimeDistribution:
    """A distribution over observation regimes; every training window draws one.

    Spatial pattern: with probability ``stride_probability`` (when both kinds are enabled)
    a :class:`~ardm_infer.observe.Stride` with a step drawn uniformly from ``strides``
    (ints or per-axis tuples; 1 = full), at a random grid phase if ``spatial_phase``;
    otherwise a :class:`~ardm_infer.observe.RandomFraction` with the fraction log-uniform in
    ``fractions`` (exactly ``round(f n_points)`` points, redrawn every frame, as the
    regime).  Temporal: ``every`` drawn uniformly from ``every``, with a random phase
    conditioned on at least one observed frame in the window.  Noise: sigma_y log-uniform
    in ``sigma``.

    Attributes:
        strides: stride choices (empty: no strided windows).
        fractions: ``(low, high)`` for random fractions, or None (no random windows).
        stride_probability: P(stride) when both kinds are enabled.
        every: temporal interval choices.
        sigma: ``(low, high)`` of sigma_y (normalised units).
        spatial_phase: draw the offset of the stride pattern per window (else index 0 is
            always observed, as :class:`~ardm_infer.observe.Stride`).
    """

    strides: tuple[int | tuple[int, ...], ...] = ()
    fractions: tuple[float, float] | None = None
    stride_probability: float = 0.5
    every: tuple[int, ...] = (1,)
    sigma: tuple[float, float] = (0.1, 0.1)
    spatial_phase: bool = False

    def __post_init__(self) -> None:
        strides = tuple(s if isinstance(s, int) else tuple(int(x) for x in s) for s in self.strides)
        object.__setattr__(self, "strides", strides)
        object.__setattr__(self, "every", tuple(int(e) for e in self.every))
        object.__setattr__(self, "sigma", tuple(float(s) for s in self.sigma))
        if self.fractions is not None:
            object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
            lo, hi = self.fractions
            if len(self.fractions) != 2 or not 0 < lo <= hi <= 1:
                raise ValueError(f"fractions must be (low, high) in (0, 1]; got {self.fractions}")
        if not strides and self.fractions is None:
            raise ValueError("a RegimeDistribution needs strides or fractions (or both)")
        if any(min(_stride_tuple(s, 1 if isinstance(s, int) else len(s))) < 1 for s in strides):
            raise ValueError(f"strides must be >= 1; got {strides}")
        if not self.every or min(self.every) < 1:
            raise ValueError(f"every must be a non-empty tuple of integers >= 1; got {self.every}")
        if len(self.sigma) != 2 or not 0 < self.sigma[0] <= self.sigma[1] < math.inf:
            raise ValueError(f"sigma must be (low, high) with 0 < low <= high; got {self.sigma}")
        if not 0.0 <= self.stride_probability <= 1.0:
            raise ValueError("stride_probability must be in [0, 1]")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_regime(cls, regime: Regime | str, pde: str | None = None) -> RegimeDistribution:
        """The point mass on one regime (its temporal phase is still random per window)."""
        regime = _parse_regime(regime, pde=pde) if isinstance(regime, str) else regime
        sp = regime.spatial
        sigma = (regime.sigma, regime.sigma)
        every = (regime.every,)
        if isinstance(sp, RandomFraction):
            return cls(fractions=(sp.fraction, sp.fraction), every=every, sigma=sigma)
        step = 1 if isinstance(sp, Full) else sp.step
        return cls(strides=(step,), every=every, sigma=sigma)

    @classmethod
    def randomised(cls, frame_shape: tuple[int, ...]) -> RegimeDistribution:
        """The randomised-regime distribution used for the shipped controllers.

        Strides ``2, 4, ...`` up to ``min(space) / 4`` (at most 32; KS 256: 2..32,
        Kolmogorov 64x64: 2..16), random fractions log-uniform in
        ``[max(1.5 / n_points, 0.005), 0.1]``, ``every`` in {1, 2, 4, 8}, sigma_y
        log-uniform in [0.05, 0.5], random stride phase: it covers the six presets of
        docs/design.md §6 (strides 4, 16 / 8; 2 %; every 1, 8; sigma_y 0.1) as interior points.
        """
        space = tuple(frame_shape[1:])
        n_points = math.prod(space)
        strides = []
        step = 2
        while step <= min(32, min(space) // 4):
            strides.append(step)
            step *= 2
        return cls(
            strides=tuple(strides) or (1,),
            fractions=(min(0.1, max(1.5 / n_points, 0.005)), 0.1),
            stride_probability=0.5,
            every=(1, 2, 4, 8),
            sigma=(0.05, 0.5),
            spatial_phase=True,
        )

    @classmethod
    def presets(cls, pde: str) -> RegimeDistribution:
        """The six named regimes of docs/design.md §6 as one distribution (``pde`` "ks" or
        "kolmogorov"): dense or sparse stride, or a 2 % random fraction (each with
        probability 1/3), ``every`` 1 or 8, sigma_y 0.1, random stride phase.

        A narrower training distribution than :meth:`randomised`: in a KS trial the wide one
        (strides 2-32, sigma_y 0.05-0.5) let the densest, least noisy windows (costs 30x
        those of the sparse regimes) dominate the gradient, and after 200 steps the
        controller was no better than the unguided forecast on the sparse regime and worse
        on the dense one (``benchmarks/controller_claims.py``-style check, 140 frames).
        """
        dense = _parse_regime("dense", pde=pde)
        sparse = _parse_regime("sparse", pde=pde)
        fraction = _parse_regime("random", pde=pde).spatial.fraction
        return cls(
            strides=(dense.spatial.step, sparse.spatial.step),
            fractions=(fraction, fraction),
            stride_probability=2.0 / 3.0,
            every=(1, 8),
            sigma=(dense.sigma, dense.sigma),
            spatial_phase=True,
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["strides"] = [s if isinstance(s, int) else list(s) for s in self.strides]
        d["fractions"] = None if self.fractions is None else list(self.fractions)
        d["every"] = list(self.every)
        d["sigma"] = list(self.sigma)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegimeDistribution:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown RegimeDistribution fields {sorted(unknown)}")
        d = dict(d)
        if "strides" in d:
            d["strides"] = tuple(s if isinstance(s, int) else tuple(s) for s in d["strides"])
        return cls(**d)

    def check(self, frame_shape: tuple[int, ...]) -> None:
        """``ValueError`` if a stride exceeds the grid or a fraction selects no point."""
        space = tuple(frame_shape[1:])
        for s in self.strides:
            steps = _stride_tuple(s, len(space))
            if len(steps) != len(space) or any(a > n for a, n in zip(steps, space, strict=True)):
                raise ValueError(f"stride {s} does not fit the grid {space}")
        if self.fractions is not None and round(self.fractions[0] * math.prod(space)) < 1:
            raise ValueError(
                f"fraction {self.fractions[0]} selects no point of a {space} grid; raise it"
            )

    # ------------------------------------------------------------------ sampling

    def draw(
        self,
        batch: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator,
        window: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Draw one regime per window (or per chain of windows): its parameters.

        All draws are made on the CPU from ``generator`` (so they do not depend on the
        device), batched; the same random numbers are consumed whatever the outcome.

        Args:
            batch: B.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator.
            window: if given, the temporal phase is drawn so that the first ``window``
                frames hold at least one observed frame (fresh windows); else uniform.

        Returns:
            CPU tensors: ``stride`` bool ``(B,)`` (else random fraction), ``steps`` and
            ``offset`` long ``(B, dims)``, ``count`` long ``(B,)`` (points per frame of a
            random fraction), ``every`` and ``phase`` long ``(B,)``, ``sigma`` ``(B,)``.
        """
        self.check(frame_shape)
        space = tuple(frame_shape[1:])
        dims, n_points = len(space), math.prod(space)
        g = generator
        u_kind = torch.rand(batch, generator=g)
        if not self.strides:
            is_stride = torch.zeros(batch, dtype=torch.bool)
        elif self.fractions is None:
            is_stride = torch.ones(batch, dtype=torch.bool)
        else:
            is_stride = u_kind < self.stride_probability
        table = torch.tensor(
            [_stride_tuple(s, dims) for s in self.strides] or [(1,) * dims], dtype=torch.long
        )
        steps = table[torch.randint(0, table.shape[0], (batch,), generator=g)]
        u_offset = torch.rand(batch, dims, generator=g)
        offset = (u_offset * steps).long() if self.spatial_phase else torch.zeros_like(steps)
        lo, hi = self.fractions if self.fractions is not None else (1.0, 1.0)
        u_frac = torch.rand(batch, generator=g)
        fraction = torch.exp(math.log(lo) + u_frac * (math.log(hi) - math.log(lo)))
        count = torch.round(fraction * n_points).clamp_(min=1).long()
        every_table = torch.tensor(self.every, dtype=torch.long)
        every = every_table[torch.randint(0, len(self.every), (batch,), generator=g)]
        low = (every - window).clamp(min=0) if window is not None else torch.zeros_like(every)
        u_time = torch.rand(batch, generator=g)
        phase = low + (u_time * (every - low)).long()
        u_sigma = torch.rand(batch, generator=g)
        s_lo, s_hi = self.sigma
        sigma = torch.exp(math.log(s_lo) + u_sigma * (math.log(s_hi) - math.log(s_lo)))
        return {
            "stride": is_stride,
            "steps": steps,
            "offset": offset,
            "count": count,
            "every": every,
            "phase": phase,
            "sigma": sigma.to(torch.float32),
        }

    @staticmethod
    def masks(
        params: dict[str, torch.Tensor],
        clock: torch.Tensor,
        frames: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Masks of ``frames`` consecutive frames for regimes drawn by :meth:`draw`.

        Frame j of the window is frame ``c = clock + j`` (0-based) of its chain and is
        observed iff ``(c + 1 + phase) % every == 0``; strided points are those with
        ``(index - offset) % step == 0`` on every axis; random fractions observe exactly
        ``count`` uniformly drawn points, redrawn every frame (ranks of uniforms, as
        :func:`~ardm_infer.observe.random_mask`).

        Args:
            params: from :meth:`draw` (CPU tensors, batch B).
            clock: ``(B,)`` long, chain frames elapsed before the window.
            frames: L.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator (the random-fraction uniforms).

        Returns:
            bool ``(B, L, C, *space)`` on the CPU.
        """
        channels, space = frame_shape[0], tuple(frame_shape[1:])
        dims, n_points = len(space), math.prod(space)
        batch = params["every"].shape[0]
        steps, offset = params["steps"], params["offset"]
        stride_mask = torch.ones(batch, *space, dtype=torch.bool)
        for axis, n in enumerate(space):  # <= 2 axes: not a loop over grid points
            ok = (torch.arange(n)[None] - offset[:, axis, None]) % steps[:, axis, None] == 0
            shape = [batch] + [1] * dims
            shape[1 + axis] = n
            stride_mask = stride_mask & ok.reshape(shape)
        uniforms = torch.rand(batch, frames, n_points, generator=generator)
        ranks = uniforms.argsort(-1).argsort(-1)
        frac_mask = (ranks < params["count"][:, None, None]).reshape(batch, frames, *space)
        spatial = torch.where(
            params["stride"].reshape(batch, 1, *([1] * dims)), stride_mask.unsqueeze(1), frac_mask
        )
        c = clock.reshape(batch, 1) + torch.arange(frames)[None]
        observed = (c + 1 + params["phase"][:, None]) % params["every"][:, None] == 0
        mask = spatial & observed.reshape(batch, frames, *([1] * dims))
        return mask.unsqueeze(2).expand(batch, frames, channels, *space).contiguous()

    def sample(
        self,
        batch: int,
        frames: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh windows: one regime per window, at least one observed frame in each.

        Args:
            batch: B windows.
            frames: L frames per window.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator.
            device: where to put the results.

        Returns:
            ``(mask, sigma)``: bool ``(B, L, C, *space)`` and sigma_y ``(B,)`` (float32).
        """
        params = self.draw(batch, frame_shape, generator, window=frames)
        clock = torch.zeros(batch, dtype=torch.long)
        mask = self.masks(params, clock, frames, frame_shape, generator)
        return mask.to(device), params["sigma"].to(device)


def resolve_regimes(
    regimes: str | Regime | RegimeDistribution,
    frame_shape: tuple[int, ...],
    pde: str | None = None,
) -> RegimeDistribution:
    """``"randomised"`` -> :meth:`RegimeDistribution.randomised`; a regime (or its spec, e.g.
    ``"sparse"`` with ``pde``) -> its point mass; a distribution is returned unchanged."""
    if isinstance(regimes, RegimeDistribution):
        out = regimes
    elif isinstance(regimes, str) and regimes.strip().lower() in ("randomised", "randomized"):
        out = RegimeDistribution.randomised(tuple(frame_shape))
    elif isinstance(regimes, str) and regimes.strip().lower() == "presets":
        if pde is None:
            raise ValueError("regimes='presets' needs the pde")
        out = RegimeDistribution.presets(pde)
    else:
        out = RegimeDistribution.from_regime(regimes, pde=pde)
    out.check(tuple(frame_shape))
    return out


# ---------------------------------------------------------------------------------------------
# Training config and presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControllerTrainConfig:
    """Hyper-parameters of :func:`train_controller`.

    Attributes:
        steps: Adam steps.
        batch_size: windows per step.
        window: L, frames rolled out per window (None: the controller's preview Lambda).
        beta: weight of the control energy (KL) in J.
        arrival_weight: w, weight of the Tweedie arrival costs l(y_j, x0_hat_{j,s}) (the
            same at every sub-step; 0 = terminal cost only).
        detach_context: truncate backpropagation at every frame boundary (see module
            docstring); default False (truncation only at window boundaries).
        chain_reset: probability that a training chain restarts from a true context at a
            new random time before each window (1: every window starts from the truth; the
            mean chain length is L / chain_reset frames).
        regimes: ``"randomised"`` (:meth:`RegimeDistribution.randomised`), ``"presets"``
            (:meth:`RegimeDistribution.presets`) or a regime spec / preset name (a single
            regime).
        lr: peak learning rate; linear warm-up, then cosine decay to ``min_lr_ratio * lr``.
        warmup_steps, min_lr_ratio: the schedule (as for the ARDM).
        weight_decay: Adam weight decay (coupled; 0 by default).
        grad_clip: max global gradient norm of the loss J / (L * frame size) (0: none).
        adam_betas: Adam betas.
        val_every: validate every this many steps (0: only before and after training).
        val_batches: validation batches of ``batch_size`` held-out chains.
        val_windows: windows per validation chain (each chain starts from a true context
            and is rolled ``val_windows * L`` frames; fewer if the trajectories are short).
        checkpoint_every: checkpoint every this many steps (0: never).
        seed: seeds parameters, windows, regimes and noise; validation uses seed + 104729.
    """

    steps: int
    batch_size: int
    window: int | None = None
    beta: float = 1.0
    arrival_weight: float = 0.0
    detach_context: bool = False
    chain_reset: float = 1.0 / 16
    regimes: str = "randomised"
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    val_every: int = 100
    val_batches: int = 2
    val_windows: int = 4
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.window is not None and self.window < 1:
            raise ValueError("window must be >= 1 (or None)")
        if self.beta < 0 or self.arrival_weight < 0:
            raise ValueError("beta and arrival_weight must be >= 0")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, weight_decay and grad_clip >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if not 0.0 <= self.chain_reset <= 1.0:
            raise ValueError("chain_reset must be in [0, 1]")
        if self.val_windows < 1:
            raise ValueError("val_windows must be >= 1")
        for name in ("val_every", "val_batches", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if len(self.adam_betas) != 2:
            raise ValueError("adam_betas needs 2 values")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ControllerTrainConfig fields {sorted(unknown)}")
        return cls(**d)


def controller_presets(pde: str) -> dict[str, tuple[ControllerConfig, ControllerTrainConfig]]:
    """Named (network, training) configurations for the shipped ARDM of ``pde``.

    - ``"default"``: Lambda = L = 4 for the default ARDM (k = 2, ``Schedule()`` with S = 16
      sub-steps), chains of mean length L / chain_reset frames (KS 128, Kolmogorov 32:
      about the time the unguided forecast needs to drift to an error of order sigma_y),
      beta = 0.1 and w = 0.05 (between the paper's beta = 0 plus arrival costs and the
      exact beta = 1: in a 60-step KS trial on the sparse regime beta = 1 learned only
      tiny controls (validation RMSE after 96 frames 0.096 -> 0.093) while beta = 0.1,
      w = 0.05 reached 0.079 within 30 steps).  Regimes: Kolmogorov draws from the wide
      :meth:`RegimeDistribution.randomised` (450 steps); KS from
      :meth:`RegimeDistribution.presets` (400 steps), because on the wide distribution the
      densest, least noisy KS windows dominated the gradient and after 200 steps the
      controller was no better than the forecast (see :meth:`RegimeDistribution.presets`).
      Step times (torch 2.13, float32, one thread, idle core): 2.7-3.4 s for KS at 16
      windows, 4.6-5.3 s for Kolmogorov at 4 windows; a loaded machine is 2-4x slower.
      Per sub-step the controller costs 0.06x the denoiser's FLOPs (both PDEs) and, in
      wall time at one thread, 0.13-0.22x (KS, batch 64-16; overhead-bound small
      convolutions) and 0.09-0.11x (Kolmogorov).  The shipped controllers' cards record
      what was actually run (both were stopped at 300 steps; see the README).
    - ``"smoke"``: a tiny net and a few steps, for tests and CI.

    Args:
        pde: ``"ks"`` or ``"kolmogorov"``.

    Returns:
        ``{name: (ControllerConfig, ControllerTrainConfig)}``.
    """
    dims = {"ks": 1, "kolmogorov": 2}.get(pde)
    if dims is None:
        raise ValueError(f"unknown pde {pde!r}; expected 'ks' or 'kolmogorov'")
    smoke = (
        ControllerConfig(
            dims=dims,
            channels=1,
            context_frames=2,
            preview=2,
            width=8,
            blocks=2,
            dilations=(1, 2),
            embedding_dim=16,
            fourier_features=8,
            groups=4,
        ),
        ControllerTrainConfig(
            steps=6,
            batch_size=4,
            lr=2e-3,
            warmup_steps=2,
            val_every=3,
            val_batches=1,
            checkpoint_every=3,
        ),
    )
    if pde == "ks":
        default = (
            ControllerConfig(
                dims=1,
                channels=1,
                context_frames=2,
                preview=4,
                width=32,
                blocks=3,
                dilations=(1, 2, 4),
                patch_size=8,
            ),
            ControllerTrainConfig(
                steps=400,
                batch_size=16,
                regimes="presets",
                beta=0.1,
                arrival_weight=0.05,
                chain_reset=1.0 / 32,
                lr=2e-3,
                warmup_steps=50,
                val_every=100,
                val_batches=1,
                val_windows=24,
                checkpoint_every=50,
            ),
        )
    else:
        default = (
            ControllerConfig(
                dims=2,
                channels=1,
                context_frames=2,
                preview=4,
                width=16,
                blocks=4,
                dilations=(1, 2, 4, 4),
                patch_size=4,
            ),
            ControllerTrainConfig(
                steps=450,
                batch_size=4,
                beta=0.1,
                arrival_weight=0.05,
                chain_reset=1.0 / 8,
                lr=2e-3,
                warmup_steps=25,
                val_every=50,
                val_batches=1,
                val_windows=8,
                checkpoint_every=25,
            ),
        )
    return {"default": default, "smoke": smoke}


# ---------------------------------------------------------------------------------------------
# Windows and the controlled rollout
# ---------------------------------------------------------------------------------------------


class _Chains:
    """B persistent rollout chains: truncated backpropagation through long assimilation runs.

    Chain b follows trajectory ``traj[b]`` of the data; ``time[b]`` is the index of the
    next frame it generates, ``clock[b]`` the frames it has generated since its last reset,
    ``context[b]`` its last k frames (its *own* frames after the first window, detached),
    and ``params`` its regime (from :meth:`RegimeDistribution.draw`).  A reset puts a chain
    at a uniform random time of a random trajectory with the true context and a new regime.
    All indices live on the CPU; ``context`` on the data's device.
    """

    keys = ("stride", "steps", "offset", "count", "every", "phase", "sigma")

    def __init__(self, batch: int, frames: torch.Tensor, k: int, dims: int) -> None:
        self.traj = torch.zeros(batch, dtype=torch.long)
        self.time = torch.zeros(batch, dtype=torch.long)
        self.clock = torch.zeros(batch, dtype=torch.long)
        self.live = torch.zeros(batch, dtype=torch.bool)
        self.context = torch.zeros(
            batch, k, *frames.shape[2:], dtype=frames.dtype, device=frames.device
        )
        self.params = {
            "stride": torch.zeros(batch, dtype=torch.bool),
            "steps": torch.ones(batch, dims, dtype=torch.long),
            "offset": torch.zeros(batch, dims, dtype=torch.long),
            "count": torch.ones(batch, dtype=torch.long),
            "every": torch.ones(batch, dtype=torch.long),
            "phase": torch.zeros(batch, dtype=torch.long),
            "sigma": torch.ones(batch, dtype=torch.float32),
        }

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.{n}": getattr(self, n) for n in ("traj", "time", "clock", "live")}
        out[f"{prefix}.context"] = self.context
        out.update({f"{prefix}.param.{n}": v for n, v in self.params.items()})
        return out

    def load(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        for n in ("traj", "time", "clock", "live"):
            setattr(self, n, tensors[f"{prefix}.{n}"].clone())
        self.context = tensors[f"{prefix}.context"].to(self.context)
        self.params = {n: tensors[f"{prefix}.param.{n}"].clone() for n in self.keys}

    def advance(
        self,
        frames: torch.Tensor,
        window: int,
        regimes: RegimeDistribution,
        reset_probability: float,
        generator: torch.Generator,
        span: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Reset the chains that need it, then draw the next window of every chain.

        A chain is reset if it was never started, with probability ``reset_probability``,
        or if its trajectory has fewer than ``window`` frames left; a reset chain starts at
        a time leaving at least ``span`` (default ``window``) frames.

        Returns ``(context (B, k, ...), truth (B, L, ...), observation (B, L, ...),
        mask (B, L, ...), sigma (B,), rollout generator)``; the caller writes the generated
        frames back with :meth:`push`.
        """
        batch, k = self.traj.shape[0], self.context.shape[1]
        n, length = frames.shape[:2]
        frame_shape = tuple(frames.shape[2:])
        g = generator
        # Resets (every random number is drawn whatever the outcome).
        u_reset = torch.rand(batch, generator=g)
        new_traj = torch.randint(0, n, (batch,), generator=g)
        new_time = torch.randint(k, length - max(window, span or 0) + 1, (batch,), generator=g)
        new_params = regimes.draw(batch, frame_shape, g)
        reset = ~self.live | (u_reset < reset_probability) | (self.time + window > length)
        self.traj = torch.where(reset, new_traj, self.traj)
        self.time = torch.where(reset, new_time, self.time)
        self.clock = torch.where(reset, torch.zeros_like(self.clock), self.clock)
        for key, value in new_params.items():
            r = reset.reshape(batch, *([1] * (value.ndim - 1)))
            self.params[key] = torch.where(r, value, self.params[key])
        dev = frames.device
        true_context = frames[
            self.traj[:, None].to(dev), (self.time[:, None] + torch.arange(-k, 0)).to(dev)
        ]
        r = reset.to(dev).reshape(batch, *([1] * (self.context.ndim - 1)))
        self.context = torch.where(r, true_context, self.context)
        self.live = torch.ones_like(self.live)
        # The window.
        index = (self.time[:, None] + torch.arange(window)).to(dev)
        truth = frames[self.traj[:, None].to(dev), index]
        mask = regimes.masks(self.params, self.clock, window, frame_shape, g).to(dev)
        sigma = self.params["sigma"].to(truth)
        sig = sigma.reshape(batch, *([1] * (truth.ndim - 1)))
        observation = add_noise(truth * mask, sig, g, mask)
        seed = int(torch.randint(0, 2**62, (1,), generator=g).item())
        rollout_generator = torch.Generator(device=dev).manual_seed(seed)
        return self.context, truth, observation, mask, sigma, rollout_generator

    def push(self, generated: torch.Tensor) -> None:
        """Continue every chain from its generated window ``(B, L, C, *space)`` (detached)."""
        window = generated.shape[1]
        k = self.context.shape[1]
        self.context = torch.cat([self.context, generated.detach()], dim=1)[:, -k:]
        self.time = self.time + window
        self.clock = self.clock + window


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------


def save_controller(
    network: Controller, card_extra: dict[str, Any], path: str | Path
) -> dict[str, Any]:
    """Save ``network``'s weights at ``path`` (``.safetensors``) and its card beside it.

    The card (``path`` with suffix ``.json``) holds ``card_extra`` plus ``format``,
    ``kind``, ``model_config``, ``parameters``, ``code_version``, ``created_utc``,
    ``weights_file`` and the ``sha256`` of the weights file; both written atomically.

    Returns:
        The card.
    """
    from .._version import code_version

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"artifact path must end in .safetensors, got {path}")
    model_config = network.config.to_dict()
    _atomic_save_tensors(
        dict(network.state_dict()),
        {
            "format": CONTROLLER_ARTIFACT_FORMAT,
            "model_config": json.dumps(model_config, sort_keys=True),
        },
        path,
    )
    card = {
        **card_extra,
        "format": CONTROLLER_ARTIFACT_FORMAT,
        "kind": _CARD_KIND,
        "model_config": model_config,
        "parameters": count_parameters(network),
        "code_version": code_version(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights_file": path.name,
        "sha256": _sha256(path),
    }
    _atomic_write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", card_path(path))
    return card


def load_controller(path: str | Path, device: str | torch.device | None = None) -> Controller:
    """Load a controller saved by :func:`save_controller` (read-only, eval mode).

    Verifies, in order: the card exists, is JSON and is a controller card; the sha256 of
    the weights equals the card's; the file is safetensors; the config stored with the
    weights equals the card's; the tensors fit that architecture exactly and are finite.
    Any failure raises ``ValueError`` naming the check.

    Returns:
        The :class:`Controller` with ``card`` set.
    """
    network, card = load_verified_module(
        path, _CARD_KIND, "controller", ControllerConfig, Controller, device
    )
    network.card = card
    return network


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _write_checkpoint(
    out_dir: Path,
    network: Controller,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    chains: _Chains,
    state: dict[str, Any],
) -> None:
    tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
    tensors.update(chains.tensors("chains"))
    osd = optimizer.state_dict()
    other: dict[str, dict[str, Any]] = {}
    for idx, st in osd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                other.setdefault(str(idx), {})[key] = value
    tensors["rng.train"] = generator.get_state()
    full = {**state, "optimizer": {"param_groups": osd["param_groups"], "state_other": other}}
    _atomic_save_tensors(
        tensors,
        {"format": CONTROLLER_CHECKPOINT_FORMAT, "state": json.dumps(full, sort_keys=True)},
        out_dir / "checkpoint.safetensors",
    )
    _atomic_write_text(
        json.dumps(full, indent=2, sort_keys=True) + "\n", out_dir / "checkpoint.json"
    )


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
        if metadata.get("format") != CONTROLLER_CHECKPOINT_FORMAT:
            raise ValueError(
                f"format {metadata.get('format')!r} != {CONTROLLER_CHECKPOINT_FORMAT!r}"
            )
        state = json.loads(metadata["state"])
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ValueError(
            f"cannot resume from {path} ({err}); delete it or pass resume=False"
        ) from err
    return tensors, state


def _restore_checkpoint(
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    network: Controller,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    chains: _Chains,
) -> None:
    chains.load(tensors, "chains")
    network.load_state_dict(
        {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True
    )
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optimizer."):
            idx, key = k[len("optimizer.") :].split(".", 1)
            opt_state.setdefault(int(idx), {})[key] = v
    for idx, extra in state["optimizer"]["state_other"].items():
        opt_state.setdefault(int(idx), {}).update(extra)
    groups = state["optimizer"]["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    generator.set_state(tensors["rng.train"])


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _ardm_identity(ardm: Any) -> dict[str, Any]:
    card = getattr(ardm, "card", None)
    return {
        "name": getattr(ardm, "name", type(ardm).__name__),
        "frame_shape": list(ardm.frame_shape),
        "context_length": int(ardm.context_length),
        "schedule": asdict(ardm.schedule),
        "weights_sha256": card.get("sha256") if isinstance(card, dict) else None,
    }


def _check_compatible(ardm: Any, config: ControllerConfig) -> None:
    frame = tuple(ardm.frame_shape)
    problems = []
    if len(frame) - 1 != config.dims:
        problems.append(f"{len(frame) - 1} spatial dims vs dims={config.dims}")
    if frame[0] != config.channels:
        problems.append(f"{frame[0]} channels vs channels={config.channels}")
    if ardm.context_length != config.context_frames:
        problems.append(
            f"context length {ardm.context_length} vs context_frames={config.context_frames}"
        )
    if any(n % config.patch_size for n in frame[1:]):
        problems.append(f"grid {frame[1:]} not a multiple of patch_size={config.patch_size}")
    if problems:
        raise ValueError(
            f"controller config does not fit the ARDM {getattr(ardm, 'name', '')}: "
            + "; ".join(problems)
        )


def _split_data(
    data: Any, validation_frames: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any], str | None]:
    """(train, val, data identity, pde) in normalised float32 units."""
    if isinstance(data, torch.Tensor):
        frames = data.to(torch.float32)
        if validation_frames is not None:
            return frames, validation_frames.to(frames), {"data": "frames"}, None
        n = frames.shape[0]
        held = max(1, n // 10) if n >= 2 else 0
        val = frames[n - held :] if held else frames
        return frames[: n - held], val, {"data": "frames", "held_out": held}, None
    train = data.normalise(data.train).to(torch.float32)
    val = data.normalise(data.val).to(torch.float32)
    if validation_frames is not None:
        val = validation_frames.to(train)
    identity = {"data_key": data.config.key(), "data_config": data.config.to_dict()}
    return train, val, identity, data.config.pde


def train_controller(
    ardm: Any,
    data: Any,
    network_config: ControllerConfig,
    train_config: ControllerTrainConfig,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = True,
    *,
    regimes: str | Regime | RegimeDistribution | None = None,
    validation_frames: torch.Tensor | None = None,
    name: str | None = None,
    device: str | torch.device | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a controller for the frozen ``ardm`` and save it as an artifact.

    Args:
        ardm: the :class:`~ardm_infer.ardm.ARDM` to control (normalised units, eta > 0);
            its denoiser's parameters are set to ``requires_grad_(False)``.
        data: a :class:`ardm_infer.data.Dataset` (its train / val splits are normalised with
            ``data.normalise``) or normalised training frames ``(trajectories, time, C,
            *space)`` (then ``validation_frames`` or, by default, the last tenth of the
            trajectories -- at least one, unless there is only one -- is held out).
        network_config: the :class:`ControllerConfig` (must fit the ARDM).
        train_config: the :class:`ControllerTrainConfig`.
        out_dir: where the checkpoint and the artifact go.
        resume: continue from ``out_dir/checkpoint.safetensors`` if present (configs, regimes
            and ARDM identity must match, else ``ValueError``).
        progress: tqdm bar with J and KL.
        regimes: overrides ``train_config.regimes``: ``"randomised"``, a regime or spec, or a
            :class:`RegimeDistribution`.
        validation_frames: held-out normalised frames for validation.
        name: artifact name (default ``controller-<pde>`` or ``controller``).
        device: where to train (default: the device of the ARDM's parameters, else CPU).
        stop_after: checkpoint and return after this many total steps (time slicing).

    Returns:
        ``{"completed", "step", "name", "weights_path", "card_path", "final_train_objective",
        "final_val_objective", "final_val_kl", "wall_seconds", "history", "card"}``.
    """
    tc, cfg = train_config, network_config
    ardm.schedule.require_stochastic("controller training")
    _check_compatible(ardm, cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, val, data_identity, pde = _split_data(data, validation_frames)
    name = name or (f"controller-{pde}" if pde else "controller")
    denoiser = ardm.denoiser
    if isinstance(denoiser, torch.nn.Module):
        denoiser.requires_grad_(False)
        first = next(denoiser.parameters(), None)
        default_device = first.device if first is not None else torch.device("cpu")
    else:
        default_device = torch.device("cpu")
    dev = torch.device(device) if device is not None else default_device
    train, val = train.to(dev), val.to(dev)
    frame_shape = tuple(ardm.frame_shape)
    if tuple(train.shape[2:]) != frame_shape:
        raise ValueError(f"data frames {tuple(train.shape[2:])} vs ARDM frames {frame_shape}")
    dist = resolve_regimes(regimes if regimes is not None else tc.regimes, frame_shape, pde)
    length = tc.window or cfg.preview
    k = ardm.context_length

    network = Controller(cfg, torch.Generator().manual_seed(tc.seed)).to(dev)
    optimizer = torch.optim.Adam(
        network.parameters(), lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay
    )
    generator = torch.Generator().manual_seed(tc.seed + 1)
    chains = _Chains(tc.batch_size, train, k, len(frame_shape) - 1)
    identity = {
        "name": name,
        "model_config": cfg.to_dict(),
        "training_config": tc.to_dict(),
        "regimes": dist.to_dict(),
        "ardm": _ardm_identity(ardm),
        **data_identity,
    }
    state: dict[str, Any] = {
        **identity,
        "step": 0,
        "history": [],
        "window_sums": {"objective": 0.0, "kl": 0.0, "terminal": 0.0},
        "window_steps": 0,
        "wall_seconds": 0.0,
    }
    ckpt = out_dir / "checkpoint.safetensors"
    if resume and ckpt.exists():
        tensors, stored = _read_checkpoint(ckpt)
        differing = [key for key, v in identity.items() if stored.get(key) != v]
        old_tc = dict(stored.get("training_config") or {})
        if differing == ["training_config"] and {**old_tc, "steps": tc.steps} == tc.to_dict():
            # Only the length differs: extend or shorten the run (the cosine schedule
            # follows the new total from here on); recorded in the history.
            if tc.steps < stored["step"]:
                raise ValueError(
                    f"checkpoint {ckpt} is at step {stored['step']}, beyond steps={tc.steps}"
                )
            stored.setdefault("schedule_changes", []).append(
                {"at_step": stored["step"], "steps": [old_tc.get("steps"), tc.steps]}
            )
            stored["training_config"] = tc.to_dict()
            differing = []
        if differing:
            raise ValueError(
                f"checkpoint {ckpt} was written for a different run (differs in {differing}); "
                "use another out_dir or resume=False"
            )
        _restore_checkpoint(tensors, stored, network, optimizer, generator, chains)
        stored.pop("optimizer")
        state = stored
    numel = math.prod(frame_shape) * length

    def validate() -> dict[str, float] | None:
        windows = min(tc.val_windows, (val.shape[1] - k) // length) if val.shape[0] else 0
        if tc.val_batches == 0 or windows < 1:
            return None
        g = torch.Generator().manual_seed(tc.seed + 104_729)
        sums = {"objective": 0.0, "terminal": 0.0, "arrival": 0.0, "kl": 0.0, "rmse": 0.0}
        with torch.no_grad():
            for _ in range(tc.val_batches):
                val_chains = _Chains(tc.batch_size, val, k, len(frame_shape) - 1)
                for _ in range(windows):
                    context, truth, obs, mask, sigma, rg = val_chains.advance(
                        val, length, dist, 0.0, g, span=windows * length
                    )
                    res = controlled_rollout(
                        ardm,
                        network,
                        context,
                        obs,
                        mask,
                        sigma,
                        rg,
                        beta=tc.beta,
                        arrival_weight=tc.arrival_weight,
                    )
                    val_chains.push(res["frames"])
                    for key in ("objective", "terminal", "arrival", "kl"):
                        sums[key] += float(res[key].mean()) / windows
                # RMSE of the last window of the chains: after windows * L frames
                sums["rmse"] += float((res["frames"] - truth).square().mean().sqrt())
        return {key: v / tc.val_batches for key, v in sums.items()}

    def evaluate(step: int) -> dict[str, Any]:
        count = state["window_steps"]
        sums = state["window_sums"]
        entry: dict[str, Any] = {
            "step": step,
            "lr": learning_rate(max(step - 1, 0), tc) if step else 0.0,
            "train_objective": sums["objective"] / count if count else None,
            "train_kl": sums["kl"] / count if count else None,
            "train_terminal": sums["terminal"] / count if count else None,
        }
        result = validate()
        for key in ("objective", "terminal", "arrival", "kl", "rmse"):
            entry[f"val_{key}"] = None if result is None else result[key]
        state["history"].append(entry)
        state["window_sums"] = {"objective": 0.0, "kl": 0.0, "terminal": 0.0}
        state["window_steps"] = 0
        return entry

    wall_before = float(state["wall_seconds"])
    t0 = time.perf_counter()

    def save_checkpoint() -> None:
        state["wall_seconds"] = wall_before + time.perf_counter() - t0
        _write_checkpoint(out_dir, network, optimizer, generator, chains, state)

    def stopped() -> dict[str, Any]:
        return {
            "completed": False,
            "step": state["step"],
            "name": name,
            "weights_path": None,
            "card_path": None,
            "final_train_objective": None,
            "final_val_objective": None,
            "final_val_kl": None,
            "wall_seconds": state["wall_seconds"],
            "history": state["history"],
            "card": None,
        }

    if state["step"] == 0 and not state["history"]:
        evaluate(0)
    bar = tqdm(
        total=tc.steps,
        initial=state["step"],
        desc=f"train {name}",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    network.train()
    params = list(network.parameters())
    try:
        while state["step"] < tc.steps:
            if stop_after is not None and state["step"] >= stop_after:
                save_checkpoint()
                return stopped()
            step = state["step"]
            lr = learning_rate(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            context, _, obs, mask, sigma, rg = chains.advance(
                train, length, dist, tc.chain_reset, generator
            )
            with torch.enable_grad():
                res = controlled_rollout(
                    ardm,
                    network,
                    context,
                    obs,
                    mask,
                    sigma,
                    rg,
                    beta=tc.beta,
                    arrival_weight=tc.arrival_weight,
                    detach_context=tc.detach_context,
                )
                objective = res["objective"].mean()
                loss = objective / numel
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            chains.push(res["frames"])
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            value = float(objective.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"controller objective became {value} at step {step}")
            kl_value = float(res["kl"].detach().mean())
            state["step"] = step + 1
            state["window_sums"]["objective"] += value
            state["window_sums"]["kl"] += kl_value
            state["window_sums"]["terminal"] += float(res["terminal"].detach().mean())
            state["window_steps"] += 1
            bar.update(1)
            if state["step"] % 5 == 0 or state["step"] == tc.steps:
                bar.set_postfix(J=f"{value:.3g}", KL=f"{kl_value:.3g}", refresh=False)
            if tc.val_every and state["step"] % tc.val_every == 0:
                entry = evaluate(state["step"])
                if entry["val_objective"] is not None:
                    bar.set_postfix(
                        J=f"{value:.3g}", KL=f"{kl_value:.3g}", val=f"{entry['val_objective']:.3g}"
                    )
            if tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0:
                save_checkpoint()
    finally:
        bar.close()

    if state["history"][-1]["step"] != state["step"] or state["window_steps"]:
        evaluate(state["step"])
    if tc.checkpoint_every:
        save_checkpoint()
    else:
        state["wall_seconds"] = wall_before + time.perf_counter() - t0
    network.eval()
    final = state["history"][-1]
    trained = [h for h in state["history"] if h["train_objective"] is not None]
    card_extra = {
        "name": name,
        **data_identity,
        "training_config": tc.to_dict(),
        "regimes": dist.to_dict(),
        "ardm": _ardm_identity(ardm),
        "steps_completed": state["step"],
        "schedule_changes": state.get("schedule_changes", []),
        "final_train_objective": trained[-1]["train_objective"] if trained else None,
        "final_train_kl": trained[-1]["train_kl"] if trained else None,
        "final_val_objective": final["val_objective"],
        "final_val_kl": final["val_kl"],
        "final_val_rmse": final["val_rmse"],
        "initial_val_objective": state["history"][0]["val_objective"],
        "initial_val_rmse": state["history"][0]["val_rmse"],
        "wall_seconds": state["wall_seconds"],
        "device": str(dev),
        "history": state["history"],
    }
    weights_path = out_dir / f"{name}.safetensors"
    card = save_controller(network.to("cpu"), card_extra, weights_path)
    network.requires_grad_(False)
    network.card = card
    return {
        "completed": True,
        "step": state["step"],
        "name": name,
        "weights_path": weights_path,
        "card_path": card_path(weights_path),
        "final_train_objective": card_extra["final_train_objective"],
        "final_val_objective": final["val_objective"],
        "final_val_kl": final["val_kl"],
        "wall_seconds": state["wall_seconds"],
        "history": state["history"],
        "card": card,
        "network": network,
    }
