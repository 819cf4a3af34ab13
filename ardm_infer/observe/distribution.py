"""A distribution over observation regimes: every draw is a :class:`~.regimes.Regime`.

Controller training (:func:`ardm_infer.controller.train_controller`) draws one regime per
chain of windows, so that one controller learns across regimes (the mask and sigma_y are
inputs of the network).  Every draw is a :class:`~.regimes.Regime` and every training mask
is that regime's own mask (:meth:`~.regimes.Regime.window_masks`): a chain that started
``c`` frames ago is, frame for frame, the benchmark's problem of that regime at frames
``t = c + 1, ...`` (timing rule of docs/design.md §6: frame t is observed iff
``t > offset and (t - offset) % every == 0``).  So every mask a controller trains on is one
the benchmark can name by its spec string.

A draw: with probability ``stride_probability`` (when both kinds are enabled) a
:class:`~.regimes.Stride` with a step drawn uniformly from ``strides`` (ints or per-axis
tuples; 1 = full) and, if ``spatial_phase``, a uniform phase ``0 <= phase < step`` per axis;
otherwise a :class:`~.regimes.RandomFraction` with the fraction log-uniform in ``fractions``.
Temporal: ``every`` uniform in ``every`` and the offset uniform in ``[0, every)`` (so the
first observed frame of a chain is ``offset + every``).  Noise: sigma_y log-uniform in
``sigma``.

Shapes: masks ``(B, L, C, *space)`` for B regimes and windows of L frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .regimes import Full, RandomFraction, Regime, Stride, parse_regime

__all__ = ["RegimeDistribution", "resolve_regimes"]


def _stride_tuple(step: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (int(step),) * dims if isinstance(step, int) else tuple(int(s) for s in step)


def _log_uniform(u: torch.Tensor, low: float, high: float) -> list[float]:
    """``low (high / low)^u`` in float64, clipped to ``[low, high]`` (exactly ``low`` when
    ``low == high``)."""
    if low == high:
        return [low] * u.shape[0]
    values = torch.exp(math.log(low) + u.double() * (math.log(high) - math.log(low)))
    return [min(max(float(v), low), high) for v in values]


@dataclass(frozen=True)
class RegimeDistribution:
    """A distribution over observation regimes (see the module docstring).

    Attributes:
        strides: stride choices (empty: no strided regimes).
        fractions: ``(low, high)`` for random fractions, or None (no random regimes).
        stride_probability: P(stride) when both kinds are enabled.
        every: temporal interval choices.
        sigma: ``(low, high)`` of sigma_y (normalised units).
        spatial_phase: draw the phase of the stride pattern (else index 0 is always
            observed).
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
        """The point mass on one regime's spatial pattern, ``every`` and sigma_y; its
        temporal offset is drawn per chain (the stride phase is 0)."""
        regime = parse_regime(regime, pde=pde) if isinstance(regime, str) else regime
        sp = regime.spatial
        sigma = (regime.sigma, regime.sigma)
        every = (regime.every,)
        if isinstance(sp, RandomFraction):
            return cls(fractions=(sp.fraction, sp.fraction), every=every, sigma=sigma)
        step = 1 if isinstance(sp, Full) else sp.step
        return cls(strides=(step,), every=every, sigma=sigma)

    @classmethod
    def randomised(cls, frame_shape: tuple[int, ...]) -> RegimeDistribution:
        """The randomised-regime distribution used for the shipped Kolmogorov controller.

        Strides ``2, 4, ...`` up to ``min(space) / 4`` (at most 32; KS 256: 2..32,
        Kolmogorov 64x64: 2..16), random fractions log-uniform in
        ``[max(1.5 / n_points, 0.005), 0.1]``, ``every`` in {1, 2, 4, 8}, sigma_y
        log-uniform in [0.05, 0.5], random stride phase: it covers the six presets of
        docs/design.md §6 (strides 4, 16 / 8; 2 %; every 1, 8; sigma_y 0.05, at the edge).
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
        probability 1/3), ``every`` 1 or 8, the presets' sigma_y, random stride phase.

        A narrower training distribution than :meth:`randomised`: in a KS trial the wide one
        (strides 2-32, sigma_y 0.05-0.5) let the densest, least noisy windows (costs 30x
        those of the sparse regimes) dominate the gradient, and after 200 steps the
        controller was no better than the unguided forecast on the sparse regime and worse
        on the dense one (``benchmarks/controller_claims.py``-style check, 140 frames).
        """
        dense = parse_regime("dense", pde=pde)
        sparse = parse_regime("sparse", pde=pde)
        fraction = parse_regime("random", pde=pde).spatial.fraction
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
    ) -> list[Regime]:
        """Draw ``batch`` regimes.

        All draws are made on the CPU from ``generator``, batched; the same random numbers
        are consumed whatever the outcome.

        Args:
            batch: B.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator.
            window: if given, the temporal offset is drawn so that the first ``window``
                frames hold an observed frame where that is possible (``every <= window``);
                else uniform in ``[0, every)``.

        Returns:
            B :class:`~.regimes.Regime` objects.
        """
        self.check(frame_shape)
        dims = len(frame_shape) - 1
        g = generator
        u_kind = torch.rand(batch, generator=g)
        table = torch.tensor(
            [_stride_tuple(s, dims) for s in self.strides] or [(1,) * dims], dtype=torch.long
        )
        steps = table[torch.randint(0, table.shape[0], (batch,), generator=g)]
        u_phase = torch.rand(batch, dims, generator=g)
        phases = (u_phase * steps).long() if self.spatial_phase else torch.zeros_like(steps)
        u_fraction = torch.rand(batch, generator=g)
        every = torch.tensor(self.every)[torch.randint(0, len(self.every), (batch,), generator=g)]
        high = every if window is None else (window - every + 1).clamp(min=1).minimum(every)
        offset = (torch.rand(batch, generator=g) * high).long()
        u_sigma = torch.rand(batch, generator=g)
        lo, hi = self.fractions if self.fractions is not None else (1.0, 1.0)
        fractions = _log_uniform(u_fraction, lo, hi)
        sigmas = _log_uniform(u_sigma, *self.sigma)
        if not self.strides:
            is_stride = [False] * batch
        elif self.fractions is None:
            is_stride = [True] * batch
        else:
            is_stride = (u_kind < self.stride_probability).tolist()
        regimes = []
        for b in range(batch):  # building B small objects, not a loop over data
            spatial = (
                Stride(tuple(steps[b].tolist()), phase=tuple(phases[b].tolist()))
                if is_stride[b]
                else RandomFraction(fractions[b])
            )
            regimes.append(Regime(spatial, int(every[b]), sigmas[b], offset=int(offset[b])))
        return regimes

    @staticmethod
    def masks(
        regimes: Sequence[Regime],
        clock: torch.Tensor,
        frames: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The masks of a window of ``frames`` frames of B runs: run b has regime
        ``regimes[b]`` and ``clock[b]`` frames before the window, so its masks are
        ``regimes[b].window_masks(frame_shape, clock[b], frames, generator)``.

        Args:
            regimes: B regimes.
            clock: ``(B,)`` long, frames of each run before the window.
            frames: L.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator (the random-fraction masks, in the order of the runs).

        Returns:
            bool ``(B, L, C, *space)`` on the CPU.
        """
        return torch.stack(
            [
                regime.window_masks(frame_shape, int(start), frames, generator, device="cpu")
                for regime, start in zip(regimes, clock.tolist(), strict=True)
            ]
        )

    def sample(
        self,
        batch: int,
        frames: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh windows (frames ``t = 1..frames``): one regime per window, with an observed
        frame in each window whose ``every`` is at most ``frames``.

        Args:
            batch: B windows.
            frames: L frames per window.
            frame_shape: ``(C, *space)``.
            generator: a CPU generator.
            device: where to put the results.

        Returns:
            ``(mask, sigma)``: bool ``(B, L, C, *space)`` and sigma_y ``(B,)`` (float32).
        """
        regimes = self.draw(batch, frame_shape, generator, window=frames)
        clock = torch.zeros(batch, dtype=torch.long)
        mask = self.masks(regimes, clock, frames, frame_shape, generator)
        sigma = torch.tensor([r.sigma for r in regimes], dtype=torch.float32)
        return mask.to(device), sigma.to(device)


def resolve_regimes(
    regimes: str | Regime | RegimeDistribution,
    frame_shape: tuple[int, ...],
    pde: str | None = None,
) -> RegimeDistribution:
    """``"randomised"`` -> :meth:`RegimeDistribution.randomised`; ``"presets"`` (with
    ``pde``) -> :meth:`RegimeDistribution.presets`; a regime (or its spec, e.g. ``"sparse"``
    with ``pde``) -> its point mass; a distribution is returned unchanged.  Checked against
    the grid."""
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
