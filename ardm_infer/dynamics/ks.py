"""Kuramoto–Sivashinsky equation in 1-D:  u_t = -u u_x - u_xx - u_xxxx  on a periodic domain.

Integrated in Fourier space with ETDRK4 (Kassam & Trefethen 2005).  In Fourier space
``L(k) = k^2 - k^4`` and ``N(u_hat) = -(i k / 2) FFT(u^2)``.  The k = 0 mode has L = 0 and
N = 0, so the spatial mean is conserved exactly.

Default data-set choice (see README): domain length 64, 256 grid points (dx = 0.25), internal
step 0.05 and an output interval of 0.2 time units between frames, as in the KS benchmark of
PDE-Refiner (Lippe et al. 2023) that the short/long horizons (140/640 frames) come from.  The
leading Lyapunov exponent at L = 64 is about 0.08-0.09 per time unit
(``benchmarks/diagnostics/ks_lyapunov.py``), so a 640-frame rollout (128 time units) spans
about 11 Lyapunov times, and 140 frames about 2.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .etdrk4 import ETDRK4Coefficients, etdrk4_coefficients, etdrk4_step


@dataclass(frozen=True)
class KSConfig:
    """Parameters of the KS solver.

    Attributes:
        length: domain length L (periodic on [0, L)).
        grid: number of grid points N.
        dt: internal ETDRK4 step.
        output_interval: time between two output frames (a multiple of ``dt``).
    """

    length: float = 64.0
    grid: int = 256
    dt: float = 0.05
    output_interval: float = 0.2

    def __post_init__(self) -> None:
        if self.length <= 0 or self.grid < 4 or self.dt <= 0 or self.output_interval <= 0:
            raise ValueError(f"invalid KSConfig: {self}")
        ratio = self.output_interval / self.dt
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"output_interval ({self.output_interval}) must be a multiple of dt ({self.dt})"
            )

    @property
    def substeps(self) -> int:
        return round(self.output_interval / self.dt)


class KuramotoSivashinsky:
    """Batched, device-agnostic KS solver and a deterministic :class:`~ardm_infer.process.Process`.

    States are real tensors ``(batch, grid)``; as a process, frames are ``(batch, 1, grid)``.
    """

    context_length = 1
    stochastic = False

    def __init__(self, config: KSConfig | None = None) -> None:
        self.config = config or KSConfig()
        n = self.config.grid
        self.wavenumbers = (
            2 * math.pi / self.config.length * torch.fft.rfftfreq(n, d=1.0 / n).to(torch.float64)
        )
        k = self.wavenumbers
        self.linear = k**2 - k**4
        self._coefficients = etdrk4_coefficients(self.linear, self.config.dt)
        self._cache: dict[
            tuple[torch.dtype, torch.device], tuple[ETDRK4Coefficients, torch.Tensor]
        ] = {}

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (1, self.config.grid)

    @property
    def x(self) -> torch.Tensor:
        """Grid coordinates ``(grid,)`` in [0, L)."""
        n = self.config.grid
        return torch.arange(n, dtype=torch.float64) * self.config.length / n

    def _coeffs(self, u: torch.Tensor) -> tuple[ETDRK4Coefficients, torch.Tensor]:
        key = (u.dtype, u.device)
        if key not in self._cache:
            c = self._coefficients.to(u.dtype, u.device)
            ik_half = (
                (-0.5j * self.wavenumbers)
                .to(torch.complex128 if u.dtype == torch.float64 else torch.complex64)
                .to(u.device)
            )
            self._cache[key] = (c, ik_half)
        return self._cache[key]

    def integrate(self, u: torch.Tensor, steps: int, dt: float | None = None) -> torch.Tensor:
        """Advance ``u`` ``(batch, grid)`` by ``steps`` ETDRK4 steps of size ``dt``
        (default ``config.dt``)."""
        if dt is None or dt == self.config.dt:
            c, ik_half = self._coeffs(u)
        else:
            c = etdrk4_coefficients(self.linear, dt).to(u.dtype, u.device)
            _, ik_half = self._coeffs(u)
        n = self.config.grid

        def nonlinear(v: torch.Tensor) -> torch.Tensor:
            w = torch.fft.irfft(v, n=n)
            return ik_half * torch.fft.rfft(w * w)

        v = torch.fft.rfft(u)
        for _ in range(steps):
            v = etdrk4_step(v, nonlinear, c)
        return torch.fft.irfft(v, n=n)

    def advance(self, u: torch.Tensor, frames: int = 1) -> torch.Tensor:
        """Advance ``u`` ``(batch, grid)`` by ``frames`` output intervals."""
        return self.integrate(u, frames * self.config.substeps)

    def trajectory(self, u0: torch.Tensor, frames: int) -> torch.Tensor:
        """Frames after ``u0``: ``(batch, grid)`` -> ``(batch, frames, grid)``."""
        out = []
        u = u0
        for _ in range(frames):
            u = self.advance(u)
            out.append(u)
        return torch.stack(out, dim=1)

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Process interface: ``(batch, k, 1, grid)`` -> ``(batch, 1, grid)``."""
        return self.advance(context[:, -1, 0]).unsqueeze(1)

    def random_initial_condition(
        self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Smooth random fields ``(batch, grid)``: random phases and amplitudes on modes 1..8."""
        n = self.config.grid
        modes = 8
        device = generator.device
        coef = torch.zeros(batch, n // 2 + 1, dtype=torch.complex128, device=device)
        re = torch.randn(batch, modes, generator=generator, dtype=torch.float64, device=device)
        im = torch.randn(batch, modes, generator=generator, dtype=torch.float64, device=device)
        coef[:, 1 : modes + 1] = (re + 1j * im) * (n / 4)
        return torch.fft.irfft(coef, n=n).to(dtype)
