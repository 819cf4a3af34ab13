"""The analytic Gaussian denoiser of the linear-Gaussian twin.

If x_{t+1} | x_t ~ N(A x_t, Q) and z = x_{t+1} + sigma * eps, then

    D(z, sigma, x_t) = E[x_{t+1} | z, x_t] = A x_t + Q (Q + sigma^2 I)^{-1} (z - A x_t),

exact for every sigma, so the whole sampler can be checked against closed forms.
"""

from __future__ import annotations

import torch

from ..dynamics.linear_gaussian import LinearGaussianTwin
from .process import ARDM
from .schedule import Schedule


class GaussianDenoiser:
    """Exact denoiser for the twin; frames are ``(batch, 1, d)``, context ``(batch, k, 1, d)``."""

    def __init__(self, twin: LinearGaussianTwin) -> None:
        self.twin = twin
        Q = twin.process_covariance
        self._eig, self._vec = torch.linalg.eigh(Q)

    def __call__(self, z: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        A = self.twin.transition.to(z)
        mu = context[:, -1, 0] @ A.T  # (batch, d)
        lam, V = self._eig.to(z), self._vec.to(z)
        gain = lam / (lam + sigma.to(z).unsqueeze(-1) ** 2)  # (batch, d) in Q's eigenbasis
        r = (z[:, 0] - mu) @ V
        return (mu + (gain * r) @ V.T).unsqueeze(1)

    def transition_covariance(self) -> torch.Tensor:
        """Q, the covariance the sampler targets."""
        return self.twin.process_covariance


def analytic_ardm(twin: LinearGaussianTwin, schedule: Schedule | None = None) -> ARDM:
    """An :class:`ARDM` of the twin with the exact denoiser (context length 1)."""
    schedule = schedule or Schedule(substeps=16, sigma_max=50.0, sigma_min=0.01, sigma_out=0.001)
    return ARDM(GaussianDenoiser(twin), schedule, (1, twin.dim), 1, name="linear-gaussian")


def sampler_transition_moments(
    twin: LinearGaussianTwin, schedule: Schedule, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean ``(d,)`` and covariance ``(d, d)`` of the sampler's output z_0 given x_t = x.

    With the linear denoiser every sub-step is affine-Gaussian,
    z_{s-1} = mu + (c_s I + (1 - c_s) G_s)(z_s - mu) + tau_s xi with G_s = Q (Q + sigma_s^2)^-1,
    so the covariance propagates exactly:  C <- B C B^T + tau_s^2 I, from C = sigma_max^2 I
    and mean offset -mu (z_S has mean 0).  Used to separate discretisation error (finite S)
    from Monte-Carlo error in the tests.
    """
    dt = torch.float64
    A, Q = twin.transition.to(dt), twin.process_covariance.to(dt)
    d = Q.shape[0]
    eye = torch.eye(d, dtype=dt)
    mu = A @ x.to(dt)
    C = schedule.sigma_max**2 * eye
    offset = -mu  # E[z_S] - mu
    for s in range(schedule.substeps, 0, -1):
        sigma, _, tau, c = schedule.coefficients(s)
        G = Q @ torch.linalg.inv(Q + sigma**2 * eye)
        B = c * eye + (1 - c) * G
        C = B @ C @ B.T + tau**2 * eye
        offset = B @ offset
    return mu + offset, C


def sampler_twin(twin: LinearGaussianTwin, schedule: Schedule) -> LinearGaussianTwin:
    """The linear-Gaussian twin that the analytic ARDM *actually* samples at finite S.

    The sampler's output given x is exactly Gaussian with mean A_eff x and covariance Q_eff
    (:func:`sampler_transition_moments`); the Kalman filter of (A_eff, Q_eff) is then the
    exact oracle for strategies run on the analytic ARDM, free of discretisation error.
    """
    d = twin.dim
    eye = torch.eye(d, dtype=torch.float64)
    columns = [sampler_transition_moments(twin, schedule, e)[0] for e in eye]
    covariance = sampler_transition_moments(twin, schedule, torch.zeros(d, dtype=torch.float64))[1]
    return LinearGaussianTwin(torch.stack(columns, 1), 0.5 * (covariance + covariance.T))
