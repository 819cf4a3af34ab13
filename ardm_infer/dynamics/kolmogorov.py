"""Kolmogorov flow: 2-D incompressible Navier–Stokes in vorticity form on a periodic square.

    w_t + u . grad(w) = nu lap(w) - alpha w + f(y),      u = (d_y psi, -d_x psi),  lap(psi) = -w

with momentum forcing F = (sin(n y), 0), hence vorticity forcing f = -n cos(n y), viscosity
nu = 1/Re and linear drag alpha (Kochkov et al. 2021 use Re = 1000, n = 4, alpha = 0.1).
Pseudo-spectral in space with the 2/3 dealiasing rule (the state is kept in the truncated
space, so the discrete advection conserves energy and enstrophy exactly), ETDRK4 in time with
the diagonal linear part ``-nu |k|^2 - alpha``.

Fields are ``(batch, grid, grid)`` with axis -2 = y and axis -1 = x, on [0, L)^2.

Energy budget (used by the tests): with E = <|u|^2>/2,
    dE/dt = <u . F> - nu <w^2> - 2 alpha E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .etdrk4 import etdrk4_coefficients, etdrk4_step


@dataclass(frozen=True)
class KolmogorovConfig:
    """Parameters of the Kolmogorov-flow solver.

    Attributes:
        reynolds: Re = 1/nu.
        forcing_wavenumber: n in F = (sin(n y), 0).
        drag: linear drag alpha.
        grid: simulation resolution per axis.
        dt: internal ETDRK4 step.
        output_interval: time between output frames (multiple of dt).
        output_grid: resolution of the returned frames (spectral truncation of the
            simulation; must be <= grid and even).
        length: side of the periodic square.
    """

    reynolds: float = 1000.0
    forcing_wavenumber: int = 4
    drag: float = 0.1
    grid: int = 128
    dt: float = 0.01
    output_interval: float = 0.2
    output_grid: int = 64
    length: float = 2 * math.pi

    def __post_init__(self) -> None:
        if self.reynolds <= 0 or self.grid < 8 or self.dt <= 0 or self.drag < 0:
            raise ValueError(f"invalid KolmogorovConfig: {self}")
        if self.output_grid > self.grid or self.output_grid % 2:
            raise ValueError("output_grid must be even and <= grid")
        ratio = self.output_interval / self.dt
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("output_interval must be a multiple of dt")

    @property
    def substeps(self) -> int:
        return round(self.output_interval / self.dt)


def _wavenumbers(n: int, length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(ky, kx)`` of shape ``(n, 1)`` and ``(1, n//2+1)`` for rfft2 layout (float64)."""
    scale = 2 * math.pi / length
    ky = torch.fft.fftfreq(n, d=1.0 / n).to(torch.float64).unsqueeze(1) * scale
    kx = torch.fft.rfftfreq(n, d=1.0 / n).to(torch.float64).unsqueeze(0) * scale
    return ky, kx


def spectral_resample(field: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample periodic fields ``(..., n, n)`` to ``(..., grid, grid)`` in Fourier space
    (truncation or zero padding)."""
    n = field.shape[-1]
    if grid == n:
        return field
    f = torch.fft.rfft2(field)
    m = min(n, grid)
    out = torch.zeros(*field.shape[:-2], grid, grid // 2 + 1, dtype=f.dtype, device=f.device)
    h = m // 2
    out[..., :h, :h] = f[..., :h, :h]
    out[..., -h:, :h] = f[..., -h:, :h]
    # Nyquist rows/columns are dropped: they are not representable symmetrically.
    return torch.fft.irfft2(out, s=(grid, grid)) * (grid * grid) / (n * n)


class KolmogorovFlow:
    """Batched, device-agnostic Kolmogorov-flow solver and deterministic process.

    As a process, frames are ``(batch, 1, output_grid, output_grid)`` vorticity at the output
    resolution; :meth:`step` upsamples the last frame spectrally, integrates at ``grid`` and
    truncates back.  For data generation use :meth:`trajectory`, which stays at full resolution
    between frames.
    """

    context_length = 1
    stochastic = False

    def __init__(self, config: KolmogorovConfig | None = None) -> None:
        self.config = config or KolmogorovConfig()
        c = self.config
        n = c.grid
        ky, kx = _wavenumbers(n, c.length)
        self.ky, self.kx = ky, kx
        k2 = kx**2 + ky**2
        self.k2 = k2
        self.inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        nu = 1.0 / c.reynolds
        self.linear = (-nu * k2 - c.drag).expand(n, n // 2 + 1).clone()
        # 2/3 rule: keep |k_x|, |k_y| < n/3 in integer wavenumbers.
        iy = torch.fft.fftfreq(n, d=1.0 / n).abs().unsqueeze(1)
        ix = torch.fft.rfftfreq(n, d=1.0 / n).unsqueeze(0)
        self.dealias = ((iy < n / 3) & (ix < n / 3)).to(torch.float64)
        y = torch.arange(n, dtype=torch.float64) * c.length / n
        f_y = -c.forcing_wavenumber * torch.cos(c.forcing_wavenumber * 2 * math.pi / c.length * y)
        self.forcing = f_y.unsqueeze(1).expand(n, n).clone()  # vorticity forcing, (y, x)
        self._coefficients = etdrk4_coefficients(self.linear, c.dt)
        self._cache: dict = {}

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (1, self.config.output_grid, self.config.output_grid)

    def _consts(self, w: torch.Tensor):
        key = (w.dtype, w.device)
        if key not in self._cache:
            cdt = torch.complex128 if w.dtype == torch.float64 else torch.complex64
            dev = w.device
            self._cache[key] = dict(
                coeffs=self._coefficients.to(w.dtype, dev),
                ikx=(1j * self.kx).to(cdt).to(dev),
                iky=(1j * self.ky).to(cdt).to(dev),
                inv_k2=self.inv_k2.to(w.dtype).to(dev),
                dealias=self.dealias.to(w.dtype).to(dev),
                forcing_hat=(torch.fft.rfft2(self.forcing) * self.dealias).to(cdt).to(dev),
            )
        return self._cache[key]

    def velocity(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity ``(u, v)`` from vorticity ``w`` ``(batch, grid, grid)`` (simulation grid)."""
        k = self._consts(w)
        w_hat = torch.fft.rfft2(w)
        psi_hat = w_hat * k["inv_k2"]
        n = w.shape[-1]
        u = torch.fft.irfft2(k["iky"] * psi_hat, s=(n, n))
        v = torch.fft.irfft2(-k["ikx"] * psi_hat, s=(n, n))
        return u, v

    def _nonlinear(self, k: dict, n: int):
        def nonlinear(w_hat: torch.Tensor) -> torch.Tensor:
            psi_hat = w_hat * k["inv_k2"]
            u = torch.fft.irfft2(k["iky"] * psi_hat, s=(n, n))
            v = torch.fft.irfft2(-k["ikx"] * psi_hat, s=(n, n))
            wx = torch.fft.irfft2(k["ikx"] * w_hat, s=(n, n))
            wy = torch.fft.irfft2(k["iky"] * w_hat, s=(n, n))
            adv = torch.fft.rfft2(u * wx + v * wy)
            return (k["forcing_hat"] - adv) * k["dealias"]

        return nonlinear

    def integrate(self, w: torch.Tensor, steps: int, dt: float | None = None) -> torch.Tensor:
        """Advance vorticity ``(batch, grid, grid)`` by ``steps`` ETDRK4 steps (default dt)."""
        n = self.config.grid
        if w.shape[-1] != n or w.shape[-2] != n:
            raise ValueError(f"expected vorticity (batch, {n}, {n}), got {tuple(w.shape)}")
        k = self._consts(w)
        coeffs = k["coeffs"]
        if dt is not None and dt != self.config.dt:
            coeffs = etdrk4_coefficients(self.linear, dt).to(w.dtype, w.device)
        nonlinear = self._nonlinear(k, n)
        v = torch.fft.rfft2(w) * k["dealias"]
        for _ in range(steps):
            v = etdrk4_step(v, nonlinear, coeffs)
        return torch.fft.irfft2(v, s=(n, n))

    def trajectory(self, w0: torch.Tensor, frames: int) -> torch.Tensor:
        """Output frames after ``w0`` ``(batch, grid, grid)``: ``(batch, frames, out, out)``."""
        out = []
        w = w0
        for _ in range(frames):
            w = self.integrate(w, self.config.substeps)
            out.append(spectral_resample(w, self.config.output_grid))
        return torch.stack(out, dim=1)

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Process interface: ``(batch, k, 1, out, out)`` -> ``(batch, 1, out, out)``."""
        w = spectral_resample(context[:, -1, 0], self.config.grid)
        w = self.integrate(w, self.config.substeps)
        return spectral_resample(w, self.config.output_grid).unsqueeze(1)

    def random_initial_condition(
        self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Random band-limited vorticity ``(batch, grid, grid)`` (peak near |k| = 4, rms ~ 3)."""
        n = self.config.grid
        dev = generator.device
        noise = torch.randn(batch, n, n, generator=generator, dtype=torch.float64, device=dev)
        k = torch.sqrt(self.k2).to(dev)
        filt = (k**2) * torch.exp(-((k / 4.0) ** 2))
        w = torch.fft.irfft2(torch.fft.rfft2(noise) * filt * self.dealias.to(dev), s=(n, n))
        w = w / w.std(dim=(-2, -1), keepdim=True) * 3.0
        return w.to(dtype)

    def energy_budget(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms of dE/dt = P - D - 2 alpha E for vorticity ``(batch, grid, grid)``.

        Returns a dict of ``(batch,)`` tensors: energy, power, dissipation, drag."""
        c = self.config
        u, _v = self.velocity(w)
        y = torch.arange(c.grid, dtype=w.dtype, device=w.device) * c.length / c.grid
        force = torch.sin(c.forcing_wavenumber * 2 * math.pi / c.length * y).unsqueeze(1)
        energy = 0.5 * (u**2 + _v**2).mean(dim=(-2, -1))
        power = (u * force).mean(dim=(-2, -1))
        dissipation = (w**2).mean(dim=(-2, -1)) / c.reynolds
        drag = 2 * c.drag * energy
        return {"energy": energy, "power": power, "dissipation": dissipation, "drag": drag}
