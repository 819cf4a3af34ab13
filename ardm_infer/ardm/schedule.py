"""Noise schedule and the stochastic sub-step coefficients (variance-exploding, EDM levels).

Levels (Karras et al. 2022, eq. 5):
    sigma_i = (sigma_max^(1/rho) + i/(S-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
for i = 0..S-1, giving sigma_S = sigma_max > ... > sigma_1 = sigma_min, plus sigma_0 = the
output level.  The sub-step s maps z_s (level sigma_s) to z_{s-1} (level sigma_{s-1}):

    tau_s = eta * sigma_{s-1} * sqrt(1 - sigma_{s-1}^2 / sigma_s^2)
    m     = x0_hat + sqrt(sigma_{s-1}^2 - tau_s^2) / sigma_s * (z_s - x0_hat)
    z_{s-1} = m + u_s + tau_s xi

eta = 1 is the ancestral (DDPM) posterior q(z_{s-1} | z_s, x0 = x0_hat); 0 < eta < 1 is the
stochastic DDIM family (Song et al. 2021); eta = 0 is deterministic DDIM, for which the KL and
importance weights of docs/design.md §2 are undefined.

So that every sub-step is stochastic, the last level sigma_0 = ``sigma_out`` is small but
positive; the frame emitted by the sampler is z_0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class DeterministicSamplerError(ValueError):
    """Raised when a strategy needs path weights or KL but the sampler has eta = 0."""


@dataclass(frozen=True)
class Schedule:
    """A stochastic (or, with eta = 0, deterministic) VE sampling schedule.

    Attributes:
        substeps: S, number of denoising sub-steps per physical frame.
        sigma_max: sigma_S, level of the initial latent z_S ~ N(0, sigma_max^2 I).
        sigma_min: sigma_1, the last level at which the denoiser is evaluated.
        sigma_out: sigma_0 > 0, the noise level of the emitted frame.
        rho: EDM level-spacing exponent.
        eta: stochasticity in [0, 1].
    """

    substeps: int = 16
    sigma_max: float = 10.0
    sigma_min: float = 0.02
    sigma_out: float = 0.005
    rho: float = 7.0
    eta: float = 1.0

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {self.substeps}")
        if not (self.sigma_max > self.sigma_min > self.sigma_out > 0):
            raise ValueError(
                "need sigma_max > sigma_min > sigma_out > 0, got "
                f"{self.sigma_max}, {self.sigma_min}, {self.sigma_out}"
            )
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def require_stochastic(self, who: str) -> None:
        """Raise :class:`DeterministicSamplerError` if eta = 0 (``who`` names the caller)."""
        if not self.stochastic:
            raise DeterministicSamplerError(
                f"{who} needs path-space weights or KL, which are undefined for the "
                "deterministic sampler (eta = 0); use a Schedule with eta > 0"
            )

    def sigmas(self) -> list[float]:
        """Levels ``[sigma_0, sigma_1, ..., sigma_S]`` (index = sub-step s), in float64."""
        S = self.substeps
        if S == 1:
            levels = [self.sigma_max]
        else:
            a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
            levels = [(a + i / (S - 1) * (b - a)) ** self.rho for i in range(S)]
        return [self.sigma_out, *reversed(levels)]

    def coefficients(self, s: int) -> tuple[float, float, float, float]:
        """``(sigma_s, sigma_{s-1}, tau_s, c_s)`` for sub-step s, where m = x0 + c_s (z - x0)."""
        if not 1 <= s <= self.substeps:
            raise ValueError(f"sub-step s must be in 1..{self.substeps}, got {s}")
        sig = self.sigmas()
        sigma, sigma_next = sig[s], sig[s - 1]
        tau = self.eta * sigma_next * math.sqrt(max(0.0, 1 - sigma_next**2 / sigma**2))
        c = math.sqrt(max(0.0, sigma_next**2 - tau**2)) / sigma
        return sigma, sigma_next, tau, c

    def initial_latent(
        self,
        batch_shape: tuple[int, ...],
        generator: torch.Generator | None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """z_S ~ N(0, sigma_max^2 I) of shape ``batch_shape`` (``(batch, channels, *space)``)."""
        return self.sigma_max * torch.randn(
            batch_shape, generator=generator, dtype=dtype, device=device
        )
