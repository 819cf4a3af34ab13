"""Denoiser networks of the learned ARDM: small periodic U-Nets and EDM preconditioning.

Networks (1-D for KS and Lorenz-96, 2-D for Kolmogorov flow) are U-Nets whose convolutions
all use circular padding, so that they respect the periodic domain: with a total downsampling
factor ``f = 2^(levels - 1)``, rolling the input by a multiple of ``f`` grid points along any
spatial axis rolls the output by the same amount (exactly, up to float round-off).  Each
residual block is GroupNorm -> SiLU -> conv -> GroupNorm -> FiLM(noise embedding) -> SiLU ->
conv, plus a (1x1-conv) skip; the noise embedding is sinusoidal (Fourier) features of the
noise label ``c_noise`` passed through an MLP.

The :class:`Denoiser` wraps a U-Net ``F`` in the preconditioning of Karras et al. (2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", Table 1, "EDM"):

    D(z, sigma, c) = c_skip(sigma) z + c_out(sigma) F(c_in(sigma) z ⊕ c, c_noise(sigma))

    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)
    c_out  = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_d^2)
    c_noise = log(sigma) / 4

where ``⊕`` stacks the k context frames on the channel axis.  D(z, sigma, c) estimates
E[x_{t+1} | z, c] for z = x_{t+1} + sigma * eps.  Everything is in normalised units
(:meth:`ardm_infer.data.Dataset.normalise`).

Shapes: a frame batch is ``(batch, channels, *space)``; a context batch is
``(batch, k, channels, *space)``; noise levels are ``(batch,)``.

Parameters are initialised from an explicit ``torch.Generator`` (the global RNG is neither
used nor advanced), so a model is a pure function of its config and seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Denoiser",
    "DenoiserConfig",
    "UNet1d",
    "UNet2d",
    "build_denoiser",
    "count_parameters",
    "depth_to_space",
    "initialise_parameters",
    "space_to_depth",
]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of a learned denoiser (everything needed to rebuild it from a card).

    Attributes:
        dims: number of spatial dimensions, 1 (KS, Lorenz-96) or 2 (Kolmogorov).
        channels: C, physical channels per frame.
        context_frames: k, past frames the next frame is conditioned on.
        base_channels: feature channels at the finest resolution.
        channel_mult: per-level multipliers of ``base_channels``; its length is the number of
            resolution levels (each further level halves every spatial size).
        blocks_per_level: residual blocks per level in the encoder and in the decoder.
        sigma_data: sigma_d of the EDM preconditioning (1 for data normalised to unit std).
        embedding_dim: width of the noise embedding (default ``4 * base_channels``).
        fourier_features: number of sinusoidal features of ``c_noise`` (even).
        groups: GroupNorm groups (reduced to a divisor of each block's width).
        kernel_size: odd convolution kernel size.
        mid_blocks: residual blocks at the coarsest level.
        patch_size: p; the U-Net runs on non-overlapping p (x p) patches folded into channels
            (space-to-depth, an invertible reshape), unfolded again at the output.  p = 2
            makes a 2-D net about 4x cheaper at the same widths.
    """

    dims: int
    channels: int
    context_frames: int
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    blocks_per_level: int = 1
    sigma_data: float = 1.0
    embedding_dim: int | None = None
    fourier_features: int = 32
    groups: int = 8
    kernel_size: int = 3
    mid_blocks: int = 1
    patch_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {self.dims}")
        if self.channels < 1 or self.context_frames < 1:
            raise ValueError("channels and context_frames must be >= 1")
        if self.base_channels < 1 or not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError("base_channels and every channel_mult entry must be >= 1")
        if self.blocks_per_level < 1 or self.mid_blocks < 0:
            raise ValueError("blocks_per_level must be >= 1 and mid_blocks >= 0")
        if not self.sigma_data > 0:
            raise ValueError("sigma_data must be > 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd and positive")
        if self.fourier_features < 2 or self.fourier_features % 2:
            raise ValueError("fourier_features must be even and >= 2")
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")
        if self.patch_size < 1:
            raise ValueError("patch_size must be >= 1")

    @property
    def levels(self) -> int:
        """Number of resolution levels."""
        return len(self.channel_mult)

    @property
    def downsampling_factor(self) -> int:
        """Every spatial size must be a multiple of this; shifts by it commute with the net."""
        return self.patch_size * 2 ** (self.levels - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DenoiserConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DenoiserConfig fields {sorted(unknown)}")
        d = dict(d)
        if "channel_mult" in d:
            d["channel_mult"] = tuple(d["channel_mult"])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def _conv(dims: int, cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Module:
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    if kernel == 1:
        return cls(cin, cout, 1, stride=stride)
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, padding_mode="circular")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def space_to_depth(x: torch.Tensor, patch: int, dims: int) -> torch.Tensor:
    """Fold non-overlapping patches into channels.

    ``(batch, C, L) -> (batch, C p, L / p)`` or ``(batch, C, H, W) -> (batch, C p^2, H/p, W/p)``.
    """
    if patch == 1:
        return x
    if dims == 2:
        return F.pixel_unshuffle(x, patch)
    b, c, n = x.shape
    return x.reshape(b, c, n // patch, patch).transpose(2, 3).reshape(b, c * patch, n // patch)


def depth_to_space(x: torch.Tensor, patch: int, dims: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    if patch == 1:
        return x
    if dims == 2:
        return F.pixel_shuffle(x, patch)
    b, cp, n = x.shape
    return x.reshape(b, cp // patch, patch, n).transpose(2, 3).reshape(b, cp // patch, n * patch)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the noise label followed by a 2-layer MLP.

    Features: ``[cos(w_j c), sin(w_j c)]`` with angular frequencies ``w_j`` spaced
    geometrically in [1, 128] (fixed, not learned).  Input ``(batch,)``, output
    ``(batch, embedding_dim)``.
    """

    def __init__(self, features: int, embedding_dim: int) -> None:
        super().__init__()
        half = features // 2
        freqs = torch.exp(torch.linspace(0.0, math.log(128.0), half, dtype=torch.float64))
        self.register_buffer("frequencies", freqs.to(torch.float32), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(features, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )

    def forward(self, noise_label: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` -> ``(batch, embedding_dim)``."""
        arg = noise_label.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]
        return self.mlp(torch.cat([torch.cos(arg), torch.sin(arg)], dim=1))


class ResidualBlock(nn.Module):
    """Residual block with FiLM conditioning on the noise embedding.

    ``h = conv1(SiLU(GN(x)))``; ``h = conv2(SiLU(GN(h) * (1 + scale) + shift))``;
    output ``skip(x) + h``, with ``(scale, shift) = Linear(SiLU(emb))``.  Input
    ``(batch, cin, *space)``, embedding ``(batch, embedding_dim)``, output
    ``(batch, cout, *space)``.  ``conv2`` is zero-initialised, so a fresh block is the skip.
    """

    def __init__(
        self, dims: int, cin: int, cout: int, embedding_dim: int, groups: int, kernel: int
    ) -> None:
        super().__init__()
        self.dims = dims
        self.norm1 = _norm(cin, groups)
        self.conv1 = _conv(dims, cin, cout, kernel)
        self.film = nn.Linear(embedding_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.conv2 = _conv(dims, cout, cout, kernel)
        self.conv2.zero_init = True  # type: ignore[attr-defined]
        self.skip = _conv(dims, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb)).chunk(2, dim=1)
        expand = (...,) + (None,) * self.dims
        h = self.norm2(h) * (1 + scale[expand]) + shift[expand]
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class _UNet(nn.Module):
    """Periodic U-Net ``(batch, in_channels, *space), (batch,) -> (batch, out_channels, *space)``.

    Optional space-to-depth by ``patch_size`` first (undone at the output).  Encoder: per
    level ``blocks_per_level`` residual blocks, then a stride-2 circular conv.  Middle:
    ``mid_blocks`` residual blocks.  Decoder: per level, a 1x1 conv and nearest-neighbour
    upsampling, concatenation with the encoder's output at that level, and
    ``blocks_per_level`` residual blocks.  The output conv is zero-initialised.
    """

    dims: int = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int = 1,
        embedding_dim: int | None = None,
        fourier_features: int = 32,
        groups: int = 8,
        kernel_size: int = 3,
        mid_blocks: int = 1,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        d = self.dims
        emb = embedding_dim or 4 * base_channels
        widths = [base_channels * m for m in channel_mult]
        self.levels = len(widths)
        self.patch_size = patch_size
        self.downsampling_factor = patch_size * 2 ** (self.levels - 1)
        fold = patch_size**d
        self.embedding = NoiseEmbedding(fourier_features, emb)
        self.stem = _conv(d, in_channels * fold, widths[0], kernel_size)

        def block(cin: int, cout: int) -> ResidualBlock:
            return ResidualBlock(d, cin, cout, emb, groups, kernel_size)

        self.encoder = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = widths[0]
        for i, w in enumerate(widths):
            self.encoder.append(
                nn.ModuleList([block(cin if j == 0 else w, w) for j in range(blocks_per_level)])
            )
            cin = w
            if i < self.levels - 1:
                self.downsample.append(_conv(d, w, widths[i + 1], kernel_size, stride=2))
                cin = widths[i + 1]
        self.middle = nn.ModuleList([block(widths[-1], widths[-1]) for _ in range(mid_blocks)])
        self.upsample = nn.ModuleList(
            [_conv(d, widths[i + 1], widths[i], 1) for i in range(self.levels - 1)]
        )
        self.decoder = nn.ModuleList(
            nn.ModuleList([block(2 * w if j == 0 else w, w) for j in range(blocks_per_level)])
            for w in widths
        )
        self.out_norm = _norm(widths[0], groups)
        self.out_conv = _conv(d, widths[0], out_channels * fold, kernel_size)
        self.out_conv.zero_init = True  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor) -> torch.Tensor:
        """``x`` ``(batch, in_channels, *space)``, ``noise_label`` ``(batch,)`` ->
        ``(batch, out_channels, *space)``."""
        if x.ndim != self.dims + 2:
            raise ValueError(
                f"expected input (batch, channels, *space) with {self.dims} spatial dims, "
                f"got shape {tuple(x.shape)}"
            )
        f = self.downsampling_factor
        if any(n % f for n in x.shape[2:]):
            raise ValueError(
                f"spatial sizes {tuple(x.shape[2:])} must be multiples of {f} "
                f"(patch_size * 2^(levels-1) with {self.levels} levels)"
            )
        emb = self.embedding(noise_label)
        h = self.stem(space_to_depth(x, self.patch_size, self.dims))
        skips = []
        for i, blocks in enumerate(self.encoder):
            for blk in blocks:
                h = blk(h, emb)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        for blk in self.middle:
            h = blk(h, emb)
        for i in reversed(range(self.levels)):
            if i < self.levels - 1:
                h = F.interpolate(self.upsample[i](h), scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips[i]], dim=1)
            for blk in self.decoder[i]:
                h = blk(h, emb)
        out = self.out_conv(F.silu(self.out_norm(h)))
        return depth_to_space(out, self.patch_size, self.dims)


class UNet1d(_UNet):
    """Periodic 1-D U-Net: ``(batch, in_channels, length), (batch,) -> (batch, out, length)``.

    ``length`` must be a multiple of ``2^(len(channel_mult) - 1)``.
    """

    dims = 1


class UNet2d(_UNet):
    """Periodic 2-D U-Net: ``(batch, in_channels, H, W), (batch,) -> (batch, out, H, W)``.

    ``H`` and ``W`` must be multiples of ``2^(len(channel_mult) - 1)``.
    """

    dims = 2


# ---------------------------------------------------------------------------------------------
# Initialisation from an explicit generator
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def initialise_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every conv/linear of ``module`` from ``generator`` (in module order).

    Weights: uniform in ``±1/sqrt(fan_in)`` (PyTorch's default scale); biases zero; layers
    flagged ``zero_init`` (the last conv of each residual block and the output conv) get
    zero weights.  GroupNorm stays at weight 1, bias 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            w = m.weight
            if getattr(m, "zero_init", False):
                w.zero_()
            else:
                fan_in = w[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                u = torch.rand(w.shape, generator=generator, dtype=torch.float32)
                w.copy_((2 * u - 1) * bound)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.GroupNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def count_parameters(module: nn.Module) -> int:
    """Number of parameter scalars of ``module``."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# The preconditioned denoiser
# ---------------------------------------------------------------------------------------------


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser ``D(z, sigma, context) ≈ E[x_{t+1} | z, context]``.

    See the module docstring for the maths (Karras et al. 2022).  The network ``F`` gets
    ``C (k + 1)`` input channels: ``c_in z`` followed by the k context frames (oldest first).

    Args:
        config: the :class:`DenoiserConfig`.
        generator: source of the initial parameters (default: a generator seeded with 0).

    Attributes:
        config: the :class:`DenoiserConfig`.
        net: the :class:`UNet1d` or :class:`UNet2d`.
    """

    def __init__(self, config: DenoiserConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        cls = UNet1d if config.dims == 1 else UNet2d
        # Module constructors draw default initial values from the global RNG; fork it so the
        # caller's global stream is untouched, then re-initialise from the explicit generator.
        with torch.random.fork_rng(devices=[]):
            self.net = cls(
                in_channels=config.channels * (config.context_frames + 1),
                out_channels=config.channels,
                base_channels=config.base_channels,
                channel_mult=config.channel_mult,
                blocks_per_level=config.blocks_per_level,
                embedding_dim=config.embedding_dim,
                fourier_features=config.fourier_features,
                groups=config.groups,
                kernel_size=config.kernel_size,
                mid_blocks=config.mid_blocks,
                patch_size=config.patch_size,
            )
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        initialise_parameters(self.net, generator)

    def preconditioning(
        self, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma`` ``(batch,)``."""
        sd = self.config.sigma_data
        s2 = sigma**2 + sd**2
        c_skip = sd**2 / s2
        c_out = sigma * sd / s2.sqrt()
        c_in = 1.0 / s2.sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(
        self, z: torch.Tensor, sigma: torch.Tensor | float, context: torch.Tensor
    ) -> torch.Tensor:
        """Denoise.

        Args:
            z: noisy next frame ``(batch, channels, *space)``.
            sigma: noise std ``(batch,)`` (a scalar or 0-d tensor is broadcast); must be > 0.
            context: the last k clean frames ``(batch, k, channels, *space)``, oldest first.

        Returns:
            x0_hat ``(batch, channels, *space)``, same dtype and device as ``z``.
        """
        cfg = self.config
        expected = cfg.dims + 2
        if z.ndim != expected:
            raise ValueError(
                f"z must be (batch, channels, *space) with {cfg.dims} spatial dims, "
                f"got shape {tuple(z.shape)}"
            )
        if z.shape[1] != cfg.channels:
            raise ValueError(f"z has {z.shape[1]} channels, the denoiser expects {cfg.channels}")
        batch = z.shape[0]
        want = (batch, cfg.context_frames, *z.shape[1:])
        if tuple(context.shape) != want:
            raise ValueError(
                f"context must be (batch, k, channels, *space) = {want}, got {tuple(context.shape)}"
            )
        sigma = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(batch)
        if sigma.shape != (batch,):
            raise ValueError(f"sigma must be (batch,) = ({batch},), got {tuple(sigma.shape)}")
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma)
        expand = (...,) + (None,) * (cfg.dims + 1)
        ctx = context.to(z.dtype).reshape(batch, cfg.context_frames * cfg.channels, *z.shape[2:])
        inp = torch.cat([c_in[expand] * z, ctx], dim=1)
        out = self.net(inp, c_noise)
        return c_skip[expand] * z + c_out[expand] * out.to(z.dtype)


def build_denoiser(
    config: DenoiserConfig | dict[str, Any], generator: torch.Generator | None = None
) -> Denoiser:
    """A fresh :class:`Denoiser` for ``config`` (a config or its ``to_dict`` form), with
    parameters drawn from ``generator`` (default: seeded with 0)."""
    if isinstance(config, dict):
        config = DenoiserConfig.from_dict(config)
    return Denoiser(config, generator)
