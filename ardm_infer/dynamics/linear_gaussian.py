"""The linear-Gaussian twin: x_{t+1} = A x_t + N(0, Q), observed as y_t = M_t (x_t + noise).

It is the exact oracle of the library (docs/design.md §5): the filtering posterior is Gaussian and
the Kalman filter (Kalman 1960) gives its mean, covariance and the log-likelihood
log p(y_{1:T}) in closed form.

States are ``(batch, d)``; as a process frames are ``(batch, 1, d)``.  Observations use the
library's lifted convention: ``observation`` has the state's shape, ``mask`` marks the
observed entries, unobserved entries are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KalmanResult:
    """Output of :func:`kalman_filter`.

    Attributes:
        mean: filtering means ``(batch, T, d)``.
        covariance: filtering covariances ``(batch, T, d, d)``.
        predicted_mean: one-step predictive means ``(batch, T, d)``.
        predicted_covariance: ``(batch, T, d, d)``.
        log_likelihood: log p(y_{1:T}) per batch element ``(batch,)``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    predicted_mean: torch.Tensor
    predicted_covariance: torch.Tensor
    log_likelihood: torch.Tensor


class LinearGaussianTwin:
    """Stochastic linear process x_{t+1} = A x_t + w, w ~ N(0, Q).

    Args:
        transition: A, ``(d, d)``.
        process_covariance: Q, ``(d, d)`` symmetric positive definite.
    """

    context_length = 1
    stochastic = True

    def __init__(self, transition: torch.Tensor, process_covariance: torch.Tensor) -> None:
        if transition.ndim != 2 or transition.shape[0] != transition.shape[1]:
            raise ValueError("transition must be a square (d, d) matrix")
        if process_covariance.shape != transition.shape:
            raise ValueError("process_covariance must have the shape of transition")
        self.transition = transition
        self.process_covariance = process_covariance
        self._chol = torch.linalg.cholesky(process_covariance)

    @classmethod
    def default(cls, dim: int = 8, dtype: torch.dtype = torch.float64) -> LinearGaussianTwin:
        """A stable, mixing twin: a damped rotation-plus-diffusion on a ring of ``dim`` points."""
        eye = torch.eye(dim, dtype=dtype)
        shift = torch.roll(eye, 1, 0)
        A = 0.9 * (0.6 * eye + 0.2 * shift + 0.2 * shift.T)
        B = eye + 0.5 * shift
        Q = 0.25 * B @ B.T + 0.05 * eye  # spatially correlated, positive definite
        return cls(A, Q)

    @property
    def dim(self) -> int:
        return self.transition.shape[0]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (1, self.dim)

    def stationary_covariance(self) -> torch.Tensor:
        """P solving P = A P A^T + Q (by iterating the Lyapunov recursion), ``(d, d)``."""
        A, Q = self.transition, self.process_covariance
        P = Q.clone()
        for _ in range(2000):
            P_new = A @ P @ A.T + Q
            if torch.allclose(P_new, P, rtol=1e-12, atol=1e-14):
                return P_new
            P = P_new
        return P

    def transition_step(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(batch, d)`` -> A x + w."""
        A = self.transition.to(x)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x @ A.T + noise @ self._chol.to(x).T

    def step(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Process interface: ``(batch, k, 1, d)`` -> ``(batch, 1, d)``."""
        return self.transition_step(context[:, -1, 0], generator).unsqueeze(1)

    def trajectory(
        self, x0: torch.Tensor, frames: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``(batch, d)`` -> ``(batch, frames, d)``."""
        out = []
        x = x0
        for _ in range(frames):
            x = self.transition_step(x, generator)
            out.append(x)
        return torch.stack(out, dim=1)


def kalman_filter(
    twin: LinearGaussianTwin,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    initial_mean: torch.Tensor,
    initial_covariance: torch.Tensor,
) -> KalmanResult:
    """Exact Kalman filter for the twin with masked, lifted observations.

    The state at t = 0 is distributed as N(initial_mean, initial_covariance); frames
    t = 1..T are predicted by the twin and updated with the observed entries of
    ``observation[:, t-1]``.  Unobserved entries are handled exactly by giving them a zero
    row of H (they update nothing and contribute nothing to the log-likelihood).

    Args:
        observation: ``(batch, T, d)`` (lifted: any value where unobserved).
        mask: bool ``(batch, T, d)`` or ``(T, d)``.
        sigma: observation noise standard deviation.
        initial_mean: ``(batch, d)`` or ``(d,)``.
        initial_covariance: ``(d, d)`` or ``(batch, d, d)``.

    Returns:
        :class:`KalmanResult`; log_likelihood is log p(y_{1:T}) over observed entries only.
    """
    if sigma <= 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be positive and finite, got {sigma}")
    batch, T, d = observation.shape
    dtype, dev = observation.dtype, observation.device
    A = twin.transition.to(dtype=dtype, device=dev)
    Q = twin.process_covariance.to(dtype=dtype, device=dev)
    mask = mask.to(dev).expand(batch, T, d)
    m = initial_mean.to(dtype=dtype, device=dev).expand(batch, d).clone()
    P = initial_covariance.to(dtype=dtype, device=dev).expand(batch, d, d).clone()
    eye = torch.eye(d, dtype=dtype, device=dev)
    means, covs, pmeans, pcovs = [], [], [], []
    loglik = torch.zeros(batch, dtype=dtype, device=dev)
    for t in range(T):
        m = m @ A.T
        P = A @ P @ A.T + Q
        pmeans.append(m)
        pcovs.append(P)
        h = mask[:, t].to(dtype)  # (batch, d) diagonal of H
        y = torch.where(mask[:, t], observation[:, t], torch.zeros((), dtype=dtype, device=dev))
        # Innovation covariance: H P H^T + R with R = sigma^2 on observed, 1 on unobserved rows
        # (which have H = 0 and innovation 0, so they neither update nor count once corrected).
        S = h.unsqueeze(-1) * P * h.unsqueeze(-2) + torch.diag_embed(
            torch.where(mask[:, t], sigma**2, 1.0).to(dtype)
        )
        innovation = y - h * m
        L = torch.linalg.cholesky(S)
        alpha = torch.cholesky_solve(innovation.unsqueeze(-1), L).squeeze(-1)
        n_obs = h.sum(-1)
        logdet_obs = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        loglik = loglik - 0.5 * (
            (innovation * alpha).sum(-1) + logdet_obs + n_obs * math.log(2 * math.pi)
        )
        K = (P * h.unsqueeze(-2)) @ torch.cholesky_inverse(L)  # P H^T S^-1
        m = m + (K @ innovation.unsqueeze(-1)).squeeze(-1)
        IKH = eye - K * h.unsqueeze(-2)
        P = IKH @ P @ IKH.transpose(-1, -2) + (sigma**2) * (K * h.unsqueeze(-2)) @ K.transpose(
            -1, -2
        )
        P = 0.5 * (P + P.transpose(-1, -2))
        means.append(m)
        covs.append(P)
    return KalmanResult(
        mean=torch.stack(means, 1),
        covariance=torch.stack(covs, 1),
        predicted_mean=torch.stack(pmeans, 1),
        predicted_covariance=torch.stack(pcovs, 1),
        log_likelihood=loglik,
    )


def fixed_lag_smoother(filtered: KalmanResult, twin: LinearGaussianTwin, lag: int) -> KalmanResult:
    """Exact fixed-lag Kalman smoother: p(x_t | y_{1..min(t + lag, T)}) for every frame t.

    For every frame t the Rauch-Tung-Striebel backward recursion (Rauch, Tung & Striebel
    1965) runs from frame s = min(t + lag, T) down to t on the filter's output:

        G_i = P_i A^T (P_{i+1|i})^-1,
        m_i^s = m_i + G_i (m_{i+1}^s - m_{i+1|i}),
        P_i^s = P_i + G_i (P_{i+1}^s - P_{i+1|i}) G_i^T,

    starting from the filtering moments at s.  ``lag = 0`` returns the filter; a lag at least
    T gives the fixed-interval smoother.  Cost O(T * lag) small solves.

    Args:
        filtered: :func:`kalman_filter`'s result (means ``(batch, T, d)``, covariances
            ``(batch, T, d, d)``).
        twin: the model that produced it (its transition A).
        lag: the number of later frames whose observations each frame sees, >= 0.

    Returns:
        A :class:`KalmanResult` whose ``mean`` / ``covariance`` are the fixed-lag smoothed
        moments ``(batch, T, d)`` / ``(batch, T, d, d)``; the predicted moments and the
        log-likelihood are the filter's.
    """
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    m, P = filtered.mean, filtered.covariance
    mp, Pp = filtered.predicted_mean, filtered.predicted_covariance
    A = twin.transition.to(m)
    horizon = m.shape[1]
    gains = [
        torch.linalg.solve(Pp[:, i + 1], (P[:, i] @ A.T).transpose(-1, -2)).transpose(-1, -2)
        for i in range(horizon - 1)
    ]  # G_i = P_i A^T Pp_{i+1}^-1, (batch, d, d); Pp symmetric
    means, covariances = [], []
    for t in range(horizon):
        end = min(t + lag, horizon - 1)
        mean, cov = m[:, end], P[:, end]
        for i in range(end - 1, t - 1, -1):
            G = gains[i]
            mean = m[:, i] + (G @ (mean - mp[:, i + 1]).unsqueeze(-1)).squeeze(-1)
            cov = P[:, i] + G @ (cov - Pp[:, i + 1]) @ G.transpose(-1, -2)
        means.append(mean)
        covariances.append(0.5 * (cov + cov.transpose(-1, -2)))
    return KalmanResult(
        mean=torch.stack(means, 1),
        covariance=torch.stack(covariances, 1),
        predicted_mean=mp,
        predicted_covariance=Pp,
        log_likelihood=filtered.log_likelihood,
    )
