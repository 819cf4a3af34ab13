"""The amortised controller of CA-ARDM (arXiv 2510.06637) and its guidance.

Control parameterisation (docs/design.md §2).  At sub-step s of physical step t the controlled
kernel is

    z_{s-1} = m(z_s, s, c) + u_s + tau_s xi,        u_s = tau_s f_psi(inputs),

so the control is an additive shift of the sampler mean measured in units of the sub-step
noise, and the control energy of the sub-step is

    KL(q_u || p) = |u_s|^2 / (2 tau_s^2) = |f_psi|^2 / 2.

Why additive rather than affine in m.  Any affine map a m + b of the mean is the shift
u = (a - 1) m + b, and only that shift enters the KL and the Girsanov weight, so affine
buys no expressiveness; it only changes how the shift is parameterised.  In noise units
the output is well conditioned across the whole schedule (tau_s spans several decades
from sigma_max to sigma_min), its squared norm *is* the KL that J penalises, and the optimal
control of the linear-Gaussian case, to first order u = tau_s^2 grad log h(z) (Doob's
h-transform, h the likelihood of the future observations), is O(tau_s) in these units,
i.e. f stays O(1).  A multiplicative factor on m would instead
scale with |m| ~ sigma_max at the first sub-steps and make the KL blow up for tiny
parameter changes.  The last layer is zero-initialised, so an untrained controller outputs
f = 0 exactly and the controlled sampler *is* the prior sampler, bit for bit under the
same generator.

Inputs of f_psi (each a ``(batch, C, *space)`` block on the channel axis):

* c_in(sigma_s) z_s with c_in = 1 / sqrt(sigma_s^2 + 1) (unit-scale latent, as in EDM);
* x0_hat = D(z_s, sigma_s, c), the Tweedie estimate;
* the k context frames, oldest first;
* for every preview offset i = 1..Lambda: y_i M_i, M_i and the standardised innovation
  M_i (y_i - x0_hat) / sqrt(sigma_y^2 + sigma_s^2) (for offset 1 the innovation of the
  frame being generated; for later offsets a persistence innovation);
* the "gain feature" tau_s M_1 (y_1 - x0_hat) / (sigma_y^2 + sigma_s^2): f = u / tau of
  the h-transform control with the Gaussian approximation p(y | z_s) ~ N(y; x0_hat,
  sigma_y^2 + sigma_s^2) and dx0_hat/dz = I (exact for a unit-variance scalar prior as
  sigma_s -> 0; in the spirit of DPS, Chung et al. 2023, and PiGDM, Song et al. 2023),
  which gives the network a linear head start.

Scalar conditioning by FiLM: sinusoidal features of log(sigma_s) / 4 and of
log(sigma_y) / 4, each through a 2-layer MLP (:class:`~ardm_infer.ardm.nets.NoiseEmbedding`),
summed.  Architecture: a "patchify" stem (a p (x p) convolution with stride
p = ``patch_size``, i.e. space-to-depth followed by a 1x1 convolution), ``blocks`` residual
blocks (GroupNorm -> SiLU -> dilated circular conv -> GroupNorm -> FiLM -> SiLU -> dilated
circular conv, plus skip) with dilations cycling through ``dilations`` (receptive field
about ``1 + 4 sum(dilations) (kernel // 2) p`` points per axis), GroupNorm -> SiLU ->
zero-initialised output conv, depth-to-space; plus a skip a(sigma_s, sigma_y) * gain feature
with a per-channel scale a from a zero-initialised linear head on the embedding, so that the
approximate h-transform control (a = 1) is one scalar function away.  No downsampling, so
the net is exactly translation-equivariant for shifts by multiples of ``patch_size``.

Where and in what units (``active_substeps``, ``output``).  Given its context, one frame of
the shipped ARDMs is nearly deterministic, and a shift of the mean at a sub-step s > 1 is
mostly undone by the denoiser at the next one (docs/design.md §2; the controller issue's
diagnostics: a unit-rms f moves a KS frame by 1.5e-3 at s = 1, 4e-4 at s = 3 and < 1.5e-5
for s >= 8).  ``active_substeps=n`` restricts the control to the last n sub-steps (the
network is not called before them), and ``output="state"`` makes the network's output the
shift u in units of sigma_y, so that a correction of the size of the forecast error is an
O(1) output rather than O(1 / tau_s).  The KL is |u|^2 / (2 tau_s^2) either way.

Gating: if a batch element has no observation anywhere in its preview window, its control
is exactly 0 (the minimiser of J when no cost term depends on u); if no element of the
batch has one, the network is not evaluated at all.

Shapes: frames ``(batch, C, *space)``; context ``(batch, k, C, *space)``; preview
``(batch, Lambda, C, *space)``; noise levels floats or ``(batch,)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..ardm.nets import (
    NoiseEmbedding,
    count_parameters,
    depth_to_space,
    initialise_parameters,
)
from ..guidance import SubStepState
from .preview import Preview

__all__ = [
    "Controller",
    "ControllerConfig",
    "ControllerGuidance",
    "build_controller",
    "count_parameters",
    "ensemble_statistics",
]


@dataclass(frozen=True)
class ControllerConfig:
    """Architecture of a controller network (everything needed to rebuild it from a card).

    Attributes:
        dims: spatial dimensions, 1 (KS, the twin) or 2 (Kolmogorov).
        channels: C, physical channels per frame.
        context_frames: k of the ARDM it controls.
        preview: Lambda, frames of the preview buffer (offsets 1..Lambda).
        width: feature channels.
        blocks: residual blocks.
        dilations: dilation of each block's convolutions, cycled over the blocks.
        kernel_size: odd convolution kernel size.
        patch_size: space-to-depth factor p (the net runs on p (x p) patches).
        embedding_dim: width of the noise-level embeddings.
        fourier_features: sinusoidal features per scalar (even).
        groups: GroupNorm groups (reduced to a divisor of ``width``).
        active_substeps: act only on the last n sub-steps (s <= n) and leave the prior
            kernel alone before them (u = 0, no network call); None: every sub-step.
        output: ``"noise"`` (the network's output is f, u = tau_s f) or ``"state"`` (the
            output is the mean shift u itself, in units of sigma_y, and f = u / tau_s).  With
            ``active_substeps=1`` and ``"state"`` the shift lands in the frame unchanged:
            the controller is an amortised analysis increment of the last sub-step.
        ensemble_inputs: two more input blocks, the member's deviation from the ensemble
            mean of x0_hat and the ensemble spread (std over members) of x0_hat, so that
            the control can depend on the ensemble's uncertainty as an EnKF's gain does.
            The members of a trajectory are the rows ``m * n + i`` of the sampler batch
            (members-major, n = rows of the preview), at inference and in training.
        conserve_mean: (``output="state"`` only) remove the spatial mean (per channel) of
            the shift u, so that the control never changes a frame's mean.  Both shipped
            systems conserve it (KS the mean of u; a periodic flow's mean vorticity is 0),
            and a spurious mean shift accumulates: on the KS ARDM, adding 1e-3 to every
            point of every frame takes the error after 48 frames from 0.015 to 0.15, while
            white noise of that size leaves it at 0.016 (``python
            benchmarks/diagnostics/shift_sensitivity.py``).
    """

    dims: int
    channels: int
    context_frames: int
    preview: int = 4
    width: int = 32
    blocks: int = 4
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    kernel_size: int = 3
    patch_size: int = 1
    embedding_dim: int = 64
    fourier_features: int = 16
    groups: int = 8
    active_substeps: int | None = None
    output: str = "noise"
    ensemble_inputs: bool = False
    conserve_mean: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        if self.active_substeps is not None and self.active_substeps < 1:
            raise ValueError(f"active_substeps must be >= 1 or None, got {self.active_substeps}")
        if self.output not in ("noise", "state"):
            raise ValueError(f"output must be 'noise' or 'state', got {self.output!r}")
        if self.conserve_mean and self.output != "state":
            raise ValueError("conserve_mean needs output='state'")
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {self.dims}")
        for name in ("channels", "context_frames", "preview", "width", "blocks", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError("dilations must be a non-empty tuple of integers >= 1")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and positive")
        if self.fourier_features < 2 or self.fourier_features % 2:
            raise ValueError("fourier_features must be even and >= 2")
        if self.embedding_dim < 1 or self.groups < 1:
            raise ValueError("embedding_dim and groups must be >= 1")

    @property
    def input_blocks(self) -> int:
        """Number of C-channel input blocks: z, x0_hat, k context, 3 Lambda preview, [deviation,
        spread,] gain."""
        return 2 + self.context_frames + 3 * self.preview + 2 * self.ensemble_inputs + 1

    def receptive_field(self) -> int:
        """Receptive field in grid points per axis (of the residual trunk)."""
        d = [self.dilations[i % len(self.dilations)] for i in range(self.blocks)]
        return 1 + 2 * 2 * sum(d) * (self.kernel_size // 2) * self.patch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControllerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ControllerConfig fields {sorted(unknown)}")
        d = dict(d)
        if "dilations" in d:
            d["dilations"] = tuple(d["dilations"])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _circular_pad(x: torch.Tensor, pad: int, dims: int) -> torch.Tensor:
    """Periodic padding by ``pad`` on each side of the last ``dims`` axes (any ``pad``,
    also wrapping around more than once): ``(B, C, *space) -> (B, C, *(n + 2 pad))``."""
    if pad == 0:
        return x
    if pad <= min(x.shape[-dims:]):
        return F.pad(x, (pad,) * (2 * dims), mode="circular")
    for axis in range(x.ndim - dims, x.ndim):
        n = x.shape[axis]
        index = torch.arange(-pad, n + pad, device=x.device) % n
        x = x.index_select(axis, index)
    return x


class _CircularConv(nn.Module):
    """Dilated convolution with periodic boundary conditions (same spatial size out)."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int, dilation: int = 1) -> None:
        super().__init__()
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        self.dims = dims
        self.pad = dilation * (kernel // 2)
        self.conv = cls(cin, cout, kernel, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_circular_pad(x, self.pad, self.dims))


class _PatchStem(nn.Module):
    """ "Patchify" stem: a p (x p) convolution with stride p, i.e. space-to-depth followed by
    a 1x1 convolution, without materialising the folded tensor:
    ``(B, cin, *space) -> (B, cout, *(space / p))``.

    On the CPU the input channels are processed in chunks of at most 12 and summed (the
    same linear map): oneDNN picks a path up to 10x slower for strided convolutions with
    16 or more input channels at moderate batch sizes (measured, torch 2.13).
    """

    chunk = 12

    def __init__(self, dims: int, cin: int, cout: int, patch: int) -> None:
        super().__init__()
        cls = nn.Conv1d if dims == 1 else nn.Conv2d
        self.conv = cls(cin, cout, patch, stride=patch)
        self.function = F.conv1d if dims == 1 else F.conv2d
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        cin = x.shape[1]
        if x.device.type != "cpu" or cin <= self.chunk:
            return conv(x)
        out = None
        for start in range(0, cin, self.chunk):  # a few chunks of channels, not grid points
            part = self.function(
                x[:, start : start + self.chunk],
                conv.weight[:, start : start + self.chunk],
                None,
                stride=conv.stride,
            )
            out = part if out is None else out + part
        return out + conv.bias[(None, slice(None)) + (None,) * self.dims]


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class _Block(nn.Module):
    """Residual block ``x + conv2(SiLU(FiLM(GN(conv1(SiLU(GN(x)))))))``, FiLM from the
    embedding ``(batch, E)``; ``x`` ``(batch, width, *space)``."""

    def __init__(self, dims: int, width: int, emb: int, groups: int, kernel: int, dil: int):
        super().__init__()
        self.dims = dims
        self.norm1 = _norm(width, groups)
        self.conv1 = _CircularConv(dims, width, width, kernel, dil)
        self.film = nn.Linear(emb, 2 * width)
        self.norm2 = _norm(width, groups)
        self.conv2 = _CircularConv(dims, width, width, kernel, dil)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        expand = (...,) + (None,) * self.dims
        h = self.norm2(h) * (1 + scale[expand]) + shift[expand]
        return x + self.conv2(F.silu(h))


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class Controller(nn.Module):
    """f_psi: the control of one sub-step in units of its noise (module docstring).

    Args:
        config: the :class:`ControllerConfig`.
        generator: source of the initial parameters (default: seeded with 0); the global RNG
            is neither used nor advanced.

    Attributes:
        config: the :class:`ControllerConfig`.
        card: the artifact card when loaded by
            :func:`~ardm_infer.controller.training.load_controller` (else None).
    """

    def __init__(self, config: ControllerConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config
        self.card: dict[str, Any] | None = None
        c = config
        fold = c.patch_size**c.dims
        with torch.random.fork_rng(devices=[]):
            self.sigma_embedding = NoiseEmbedding(c.fourier_features, c.embedding_dim)
            self.noise_embedding = NoiseEmbedding(c.fourier_features, c.embedding_dim)
            self.stem = _PatchStem(c.dims, c.input_blocks * c.channels, c.width, c.patch_size)
            self.blocks = nn.ModuleList(
                _Block(
                    c.dims,
                    c.width,
                    c.embedding_dim,
                    c.groups,
                    c.kernel_size,
                    c.dilations[i % len(c.dilations)],
                )
                for i in range(c.blocks)
            )
            self.out_norm = _norm(c.width, c.groups)
            self.out_conv = _CircularConv(c.dims, c.width, c.channels * fold, c.kernel_size)
            self.gain_head = nn.Linear(c.embedding_dim, c.channels)
        self.out_conv.conv.zero_init = True  # type: ignore[attr-defined]
        self.gain_head.zero_init = True  # type: ignore[attr-defined]
        initialise_parameters(self, generator or torch.Generator().manual_seed(0))

    def features(
        self,
        z: torch.Tensor,
        sigma: torch.Tensor,
        tau: torch.Tensor,
        x0_hat: torch.Tensor,
        context: torch.Tensor,
        preview: Preview,
        observation_sigma: torch.Tensor,
        ensemble: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The input stack ``(batch, input_blocks * C, *space)`` (module docstring).

        ``sigma``, ``tau``, ``observation_sigma`` are ``(batch,)``; ``ensemble`` is
        ``(deviation, spread)``, each ``(batch, C, *space)`` (needed iff ``ensemble_inputs``).
        """
        c = self.config
        b = z.shape[0]
        expand = (slice(None),) + (None,) * (z.ndim - 1)
        s2 = sigma[expand] ** 2
        r2 = observation_sigma[expand] ** 2
        y, m = preview.y, preview.mask  # (batch, Lambda, C, *space)
        innovation = m * (y - x0_hat.unsqueeze(1))
        standardised = innovation / (r2 + s2).sqrt().unsqueeze(1)
        gain = tau[expand] * innovation[:, 0] / (r2 + s2)
        blocks = [
            z / (s2 + 1).sqrt(),
            x0_hat,
            context.reshape(b, c.context_frames * c.channels, *z.shape[2:]),
            torch.stack([y, m, standardised], dim=2).reshape(
                b, 3 * c.preview * c.channels, *z.shape[2:]
            ),
            gain,
        ]
        if c.ensemble_inputs:
            if ensemble is None:
                raise ValueError("this controller has ensemble_inputs: pass ensemble=(dev, spread)")
            blocks[-1:-1] = [ensemble[0], ensemble[1]]
        return torch.cat(blocks, dim=1)

    def forward(
        self,
        z: torch.Tensor,
        sigma: torch.Tensor | float,
        tau: torch.Tensor | float,
        x0_hat: torch.Tensor,
        context: torch.Tensor,
        preview: Preview,
        observation_sigma: torch.Tensor | float,
        ensemble: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """f_psi, ``(batch, C, *space)``; the control is ``u = tau * f``.

        Args:
            z: latent z_s ``(batch, C, *space)``.
            sigma: sigma_s (float or ``(batch,)``).
            tau: tau_s (float or ``(batch,)``).
            x0_hat: ``(batch, C, *space)``.
            context: ``(batch, k, C, *space)``.
            preview: :class:`Preview` with ``(batch, Lambda, C, *space)`` tensors.
            observation_sigma: sigma_y (float or ``(batch,)``), > 0.
            ensemble: ``(deviation, spread)`` of x0_hat, each ``(batch, C, *space)``
                (:func:`ensemble_statistics`; only with ``ensemble_inputs``).
        """
        c = self.config
        if z.ndim != c.dims + 2 or z.shape[1] != c.channels:
            raise ValueError(
                f"z must be (batch, {c.channels}, *space) with {c.dims} spatial dims, "
                f"got {tuple(z.shape)}"
            )
        b = z.shape[0]
        if tuple(context.shape) != (b, c.context_frames, *z.shape[1:]):
            raise ValueError(
                f"context must be {(b, c.context_frames, *z.shape[1:])}, got {tuple(context.shape)}"
            )
        want = (b, c.preview, *z.shape[1:])
        if tuple(preview.y.shape) != want or tuple(preview.mask.shape) != want:
            raise ValueError(
                f"preview tensors must be {want}, got {tuple(preview.y.shape)} and "
                f"{tuple(preview.mask.shape)}"
            )
        if any(n % c.patch_size for n in z.shape[2:]):
            raise ValueError(f"grid {tuple(z.shape[2:])} is not a multiple of {c.patch_size}")

        def scalar(v: torch.Tensor | float) -> torch.Tensor:
            v = torch.as_tensor(v, dtype=z.dtype, device=z.device)
            return v.expand(b) if v.ndim == 0 else v

        sigma_t, tau_t, noise_t = scalar(sigma), scalar(tau), scalar(observation_sigma)
        x = self.features(z, sigma_t, tau_t, x0_hat, context, preview, noise_t, ensemble)
        emb = self.sigma_embedding(sigma_t.log() / 4) + self.noise_embedding(noise_t.log() / 4)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        out = depth_to_space(self.out_conv(F.silu(self.out_norm(h))), c.patch_size, c.dims)
        scale = self.gain_head(F.silu(emb))[(...,) + (None,) * c.dims]
        if c.output == "state":
            # u itself, in units of sigma_y (so that one Adam step moves it by ~ lr sigma_y,
            # not by ~ lr: the first KS run in data units took its validation RMSE from
            # 0.065 to 1.2 in 50 steps), plus a learned multiple of the innovation of the
            # frame being generated (a diagonal gain at the observed points); f = u / tau.
            innovation = preview.mask[:, 0] * (preview.y[:, 0] - x0_hat)
            shift = noise_t[(...,) + (None,) * (c.dims + 1)] * out + scale * innovation
            if c.conserve_mean:
                shift = shift - shift.mean(tuple(range(2, shift.ndim)), keepdim=True)
            return shift / tau_t[(...,) + (None,) * (c.dims + 1)]
        # Learned, noise-level dependent multiple of the gain feature (the last C channels):
        # the exact optimal control of a unit-variance scalar Gaussian at a(sigma) = 1.
        gain = x[:, -c.channels :]
        return out + scale * gain


def build_controller(
    config: ControllerConfig | dict[str, Any], generator: torch.Generator | None = None
) -> Controller:
    """A fresh (zero-output) :class:`Controller` for ``config`` (or its ``to_dict`` form)."""
    if isinstance(config, dict):
        config = ControllerConfig.from_dict(config)
    return Controller(config, generator)


# ---------------------------------------------------------------------------------------------
# The guidance
# ---------------------------------------------------------------------------------------------


def ensemble_statistics(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's deviation from its ensemble mean and the ensemble spread, tiled back.

    Args:
        x: ``(members * groups, C, *space)``, members-major (row m * groups + i is member m
            of group i).
        groups: n, the number of ensembles (trajectories, or training chains).

    Returns:
        ``(x - mean, std)``, each ``(members * groups, C, *space)``; the std is over members
        (unbiased; zeros for a single member).
    """
    members = x.shape[0] // groups
    if members * groups != x.shape[0]:
        raise ValueError(f"{x.shape[0]} rows are not a multiple of {groups} ensembles")
    grouped = x.reshape(members, groups, *x.shape[1:])
    mean = grouped.mean(0, keepdim=True)
    spread = grouped.std(0, keepdim=True) if members > 1 else torch.zeros_like(mean)
    deviation = (grouped - mean).reshape(x.shape)
    return deviation, spread.expand_as(grouped).reshape(x.shape)


def _tile(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Tile ``(n, ...)`` to ``(batch, ...)`` members-major (flat index m * n + i -> x[i])."""
    n = x.shape[0]
    if n == batch:
        return x
    if n == 0 or batch % n:
        raise ValueError(f"{what} has {n} rows; the sampler batch of {batch} is not a multiple")
    return x.repeat(batch // n, *([1] * (x.ndim - 1)))


class ControllerGuidance:
    """The controller as a :class:`~ardm_infer.guidance.Guidance`: u_s = tau_s f_psi(...).

    ``needs_grad`` is False: the controller needs no gradient through the denoiser.  The
    returned control keeps its autograd graph when gradients are enabled, so during
    training J back-propagates to psi (and through z_s and x0_hat to earlier controls);
    at inference wrap the rollout in ``torch.inference_mode()``.

    Args:
        network: a :class:`Controller`.
        preview_y: ``(n, Lambda, C, *space)`` lifted observations times mask, with n the
            sampler batch or a divisor of it (tiled members-major, as
            :func:`ardm_infer.strategies.base.flat` lays out members x trajectories).
        preview_mask: ``(n, Lambda, C, *space)`` (bool or float).
        observation_sigma: sigma_y, a float or ``(n,)``.

    The Tweedie arrival costs of the training objective J are recorded around this guidance
    by :class:`ardm_infer.soc.ArrivalCosts` (the one J), not here.

    Attributes:
        calls: network evaluations (per batch element).
    """

    needs_grad = False

    def __init__(
        self,
        network: Controller,
        preview_y: torch.Tensor,
        preview_mask: torch.Tensor,
        observation_sigma: float | torch.Tensor,
    ) -> None:
        self.network = network
        self.preview_y = preview_y
        self.preview_mask = preview_mask
        self.observation_sigma = observation_sigma
        self.calls = 0
        self._cache: tuple[int, torch.dtype, torch.device, Preview, torch.Tensor] | None = None

    def _inputs(self, z: torch.Tensor, dtype: torch.dtype) -> tuple[Preview, torch.Tensor]:
        key = (z.shape[0], dtype, z.device)
        if self._cache is not None and self._cache[:3] == key:
            return self._cache[3], self._cache[4]
        b = z.shape[0]
        y = _tile(self.preview_y, b, "preview_y").to(device=z.device, dtype=dtype)
        m = _tile(self.preview_mask, b, "preview_mask").to(device=z.device, dtype=dtype)
        lam = y.shape[1]
        preview = Preview(y=y * m, mask=m, offset=torch.arange(1, lam + 1, device=z.device))
        noise = torch.as_tensor(self.observation_sigma, dtype=dtype, device=z.device)
        noise = noise.expand(b) if noise.ndim == 0 else _tile(noise, b, "observation_sigma")
        self._cache = (*key, preview, noise)
        return preview, noise

    def control(self, state: SubStepState) -> torch.Tensor | None:
        """u_s = tau_s f_psi, ``(batch, C, *space)``; None if no element observes anything."""
        param = next(self.network.parameters())
        dtype = param.dtype
        active = self.network.config.active_substeps
        if active is not None and state.substep > active:
            return None
        preview, noise = self._inputs(state.z, dtype)
        observed = preview.any_observed()  # (batch,)
        if state.tau == 0 or not bool(observed.any()):
            return None
        b = state.z.shape[0]
        x0_hat = state.x0_hat.to(dtype)
        ensemble = None
        if self.network.config.ensemble_inputs:
            ensemble = ensemble_statistics(x0_hat, self.preview_y.shape[0])
        f = self.network(
            state.z.to(dtype),
            state.sigma,
            state.tau,
            x0_hat,
            state.context.to(dtype),
            preview,
            noise,
            ensemble,
        )
        self.calls += b
        gate = observed.to(dtype).reshape(b, *([1] * (f.ndim - 1)))
        return (state.tau * gate * f).to(state.z.dtype)
