"""The linear-Gaussian twin's exact answers for controlled ARDM sampling (docs/design.md §5).

On the twin with the analytic denoiser every sub-step is affine-Gaussian, so the J-optimal
mean-shift control (the Gaussian h-transform, a linear-quadratic problem solved by a backward
Riccati recursion), the exact moments and objective of the controlled chain, and the Kalman
posterior and evidence are all closed forms.  Shapes: contexts ``(batch, k, 1, d)``,
observations ``(batch, 1, d)``, moments ``(batch, d)`` / ``(batch, d, d)``, float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..ardm.schedule import Schedule
from ..dynamics.linear_gaussian import LinearGaussianTwin, kalman_filter
from ..guidance import SubStepState

__all__ = [
    "TwinControlledMoments",
    "TwinOptimalControl",
    "TwinPosterior",
    "twin_optimal_control",
    "twin_posterior",
]


@dataclass(frozen=True)
class TwinPosterior:
    """Exact posterior of one emitted frame of the twin given an observation of it.

    Attributes:
        mean: posterior mean ``(batch, d)``.
        covariance: posterior covariance ``(batch, d, d)``.
        log_evidence: log p(y) over the observed entries, ``(batch,)``.
        optimal_objective: min over all path measures of J (beta = 1, w = 0),
            = -log E_P[exp(-l(y, x))] = -log p(y) - (n_obs / 2) log(2 pi sigma_y^2),
            ``(batch,)``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    log_evidence: torch.Tensor
    optimal_objective: torch.Tensor


def _twin_inputs(context, observation, mask, d):
    dt = torch.float64
    x = context[:, -1, 0].to(dt)  # (batch, d)
    batch = x.shape[0]
    y = observation.to(dt).reshape(-1, d).expand(batch, d)
    h = mask.to(torch.bool).reshape(-1, d).expand(batch, d)
    return x, y, h


def twin_posterior(
    twin: LinearGaussianTwin,
    context: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    schedule: Schedule | None = None,
) -> TwinPosterior:
    """Kalman posterior of x_{t+1} | x_t, y with x_{t+1} ~ N(A x_t, Q), y = M (x_{t+1} + noise).

    With a ``schedule`` the prior is the law the analytic ARDM *actually* samples at finite S,
    N(A_eff x_t, Q_eff) (:func:`ardm_infer.ardm.sampler_twin`), so the comparison with a
    controlled sampler is free of discretisation error; without, the exact twin (the S -> inf
    limit).  One :func:`ardm_infer.dynamics.kalman_filter` update from a known x_t.

    Args:
        twin: the :class:`~ardm_infer.dynamics.LinearGaussianTwin` (dimension d).
        context: ``(batch, k, 1, d)``; x_t = the last frame.
        observation: lifted y of the emitted frame, ``(batch, 1, d)``.
        mask: bool, broadcastable to ``(batch, 1, d)``, e.g. ``(1, d)``.
        sigma: sigma_y > 0.
        schedule: the sampler's schedule, or None for the exact twin.

    Returns:
        :class:`TwinPosterior` (float64).
    """
    if schedule is not None:
        from ..ardm.analytic import sampler_twin

        twin = sampler_twin(twin, schedule)
    d = twin.dim
    x, y, h = _twin_inputs(context, observation, mask, d)
    zero = torch.zeros(d, d, dtype=torch.float64)
    result = kalman_filter(twin, y.unsqueeze(1), h.unsqueeze(1), sigma, x, zero)
    n_obs = h.sum(-1).to(torch.float64)
    optimal = -result.log_likelihood - 0.5 * n_obs * math.log(2 * math.pi * sigma**2)
    return TwinPosterior(
        mean=result.mean[:, 0],
        covariance=result.covariance[:, 0],
        log_evidence=result.log_likelihood,
        optimal_objective=optimal,
    )


@dataclass(frozen=True)
class TwinControlledMoments:
    """Exact law of the twin's controlled sampler under an affine (scaled optimal) control.

    Attributes:
        mean: E[z_0] ``(batch, d)``.
        covariance: Cov[z_0] ``(batch, d, d)``.
        control_energy: E_{Q^u}[sum_s |u_s|^2 / (2 tau_s^2)] ``(batch,)``.
        expected_cost: E_{Q^u}[l(y, z_0)] ``(batch,)``.
        objective: J = expected_cost + control_energy (beta = 1, w = 0) ``(batch,)``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    control_energy: torch.Tensor
    expected_cost: torch.Tensor
    objective: torch.Tensor


class TwinOptimalControl:
    """The exact J-optimal mean-shift control (beta = 1, w = 0) of the analytic twin ARDM.

    Problem: one frame, z_S ~ N(0, sigma_max^2 I), z_{s-1} = m_s(z_s) + u_s + tau_s xi with
    the analytic denoiser's affine mean m_s(z) = B_s z + b_s, B_s = c_s I + (1 - c_s) G_s,
    G_s = Q (Q + sigma_s^2 I)^-1, b_s = (I - B_s) A x_t; cost l(y, z_0) plus
    sum_s |u_s|^2 / (2 tau_s^2).  It is linear-quadratic, so the value function is quadratic,
    V_s(z) = z^T P_s z / 2 - q_s^T z + const, with V_0 = l (P_0 = M / sigma_y^2,
    q_0 = M y / sigma_y^2) and the backward (Riccati) recursion, K_s = (I + tau_s^2 P_{s-1})^-1,

        P_s = B_s^T K_s P_{s-1} B_s,      q_s = B_s^T K_s (q_{s-1} - P_{s-1} b_s);

    the optimal control of sub-step s, given the prior mean m = m_s(z_s), is

        u_s = tau_s^2 K_s (q_{s-1} - P_{s-1} m) = tau_s^2 grad log h_{s-1}(z_{s-1} = ...),

    i.e. the mean shift of the Gaussian h-transform q*(z'|z) ∝ p(z'|z) h_{s-1}(z'),
    h_{s-1} = E_P[exp(-l(y, z_0)) | z_{s-1}] (certainty equivalence: the mean-shift optimum
    and the h-transform have the same mean; the h-transform also shrinks each step's
    covariance to (tau^-2 I + P)^-1, which a mean shift cannot, so the controlled marginal
    reaches the posterior only as S -> inf and min J exceeds -log E_P[exp(-l)] by a gap
    that vanishes with S).  As sigma_y -> inf, P, q -> 0 and u -> 0.

    It is a :class:`~ardm_infer.guidance.Guidance` for a batch of ``batch`` paths (the same
    one for every physical frame it is used on); built from a batch of one context and
    observation, it applies to any number of paths that share them (broadcast).

    Args:
        twin: the twin (A, Q), dimension d.
        schedule: the sampler's schedule (eta > 0).
        context: ``(batch, k, 1, d)``; x_t = the last frame (batch 1: shared by all paths).
        observation: lifted y of the emitted frame, ``(batch, 1, d)`` (or broadcastable).
        mask: bool, broadcastable to ``(batch, 1, d)``.
        sigma: sigma_y > 0.
        scale: multiply the control by this lambda (1 = optimal).
    """

    needs_grad = False

    def __init__(
        self,
        twin: LinearGaussianTwin,
        schedule: Schedule,
        context: torch.Tensor,
        observation: torch.Tensor,
        mask: torch.Tensor,
        sigma: float,
        scale: float = 1.0,
    ) -> None:
        schedule.require_stochastic("the twin's optimal control")
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be positive and finite, got {sigma}")
        dt = torch.float64
        self.twin, self.schedule, self.sigma, self.scale = twin, schedule, float(sigma), scale
        d = twin.dim
        x, y, h = _twin_inputs(context, observation, mask, d)
        self.batch, self.dim = x.shape[0], d
        self.observation, self.mask = y, h
        A, Q = twin.transition.to(dt), twin.process_covariance.to(dt)
        self.prior_mean = x @ A.T  # (batch, d)
        eye = torch.eye(d, dtype=dt)
        S = schedule.substeps
        # B_s, b_s, tau_s indexed by s = 1..S (index 0 unused).
        self._B: list[torch.Tensor] = [eye]
        self._b: list[torch.Tensor] = [torch.zeros_like(x)]
        self._tau: list[float] = [0.0]
        for s in range(1, S + 1):
            sig, _, tau, c = schedule.coefficients(s)
            G = Q @ torch.linalg.inv(Q + sig**2 * eye)
            B = c * eye + (1 - c) * G
            self._B.append(B)
            self._b.append(self.prior_mean @ (eye - B).T)
            self._tau.append(tau)
        hf = h.to(dt)
        P = torch.diag_embed(hf / sigma**2)  # (batch, d, d)
        q = hf * y / sigma**2  # (batch, d)
        # Value function of level s-1 is what sub-step s needs: keep P_0..P_{S-1}.
        self.precision: list[torch.Tensor] = [P]
        self.linear: list[torch.Tensor] = [q]
        for s in range(1, S):
            K = torch.linalg.inv(eye + self._tau[s] ** 2 * P)
            B, b = self._B[s], self._b[s]
            KP = K @ P
            KP = 0.5 * (KP + KP.transpose(-1, -2))
            q = ((K @ (q - (P @ b.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1)) @ B
            P = B.T @ KP @ B
            self.precision.append(P)
            self.linear.append(q)

    def _gain(self, s: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tau^2 K_s, P_{s-1}, q_{s-1}) for sub-step s."""
        tau = self._tau[s]
        P, q = self.precision[s - 1], self.linear[s - 1]
        eye = torch.eye(self.dim, dtype=P.dtype)
        return tau**2 * torch.linalg.inv(eye + tau**2 * P), P, q

    def control(self, state: SubStepState) -> torch.Tensor:
        """u_s = scale tau_s^2 K_s (q_{s-1} - P_{s-1} m), ``(batch, 1, d)`` from ``state.mean``."""
        m = state.mean
        fits = tuple(m.shape[1:]) == (1, self.dim) and self.batch in (1, m.shape[0])
        if not fits:
            raise ValueError(
                f"this control was built for latents ({self.batch}, 1, {self.dim}) "
                f"(a batch of 1 broadcasts); got {tuple(m.shape)}"
            )
        gain, P, q = self._gain(state.substep)
        gain, P, q = gain.to(m), P.to(m), q.to(m)
        residual = q - (P @ m[:, 0].unsqueeze(-1)).squeeze(-1)
        u = (gain @ residual.unsqueeze(-1)).squeeze(-1)
        return (self.scale * u).unsqueeze(1)

    def exact(self, scale: float | None = None) -> TwinControlledMoments:
        """Exact moments, control energy and J of the chain controlled by ``scale`` u*.

        The controlled step is affine-Gaussian, z_{s-1} = F_s (B_s z_s + b_s) + f_s + tau_s xi
        with F_s = I - lambda tau_s^2 K_s P_{s-1}, f_s = lambda tau_s^2 K_s q_{s-1}, and
        u_s = (F_s - I)(B_s z_s + b_s) + f_s, so the mean and covariance of z_s propagate
        exactly from (0, sigma_max^2 I), and E|u_s|^2 = |E u_s|^2 + tr Cov u_s.

        Args:
            scale: lambda (default: this control's ``scale``).

        Returns:
            :class:`TwinControlledMoments` (float64).
        """
        lam = self.scale if scale is None else float(scale)
        dt = torch.float64
        d, batch = self.dim, self.batch
        eye = torch.eye(d, dtype=dt)
        mean = torch.zeros(batch, d, dtype=dt)
        cov = (self.schedule.sigma_max**2 * eye).expand(batch, d, d).clone()
        energy = torch.zeros(batch, dtype=dt)
        for s in range(self.schedule.substeps, 0, -1):
            gain, P, q = self._gain(s)
            tau, B, b = self._tau[s], self._B[s], self._b[s]
            F = eye - lam * gain @ P
            f = lam * (gain @ q.unsqueeze(-1)).squeeze(-1)
            m_mean = mean @ B.T + b
            m_cov = B @ cov @ B.T
            U = F - eye
            u_mean = (U @ m_mean.unsqueeze(-1)).squeeze(-1) + f
            u_cov = U @ m_cov @ U.transpose(-1, -2)
            u_sq = (u_mean**2).sum(-1) + torch.diagonal(u_cov, dim1=-2, dim2=-1).sum(-1)
            energy = energy + u_sq / (2 * tau**2)
            mean = (F @ m_mean.unsqueeze(-1)).squeeze(-1) + f
            cov = F @ m_cov @ F.transpose(-1, -2) + tau**2 * eye
            cov = 0.5 * (cov + cov.transpose(-1, -2))
        hf = self.mask.to(dt)
        residual = hf * (self.observation - mean)
        cost = ((residual**2).sum(-1) + (hf * torch.diagonal(cov, dim1=-2, dim2=-1)).sum(-1)) / (
            2 * self.sigma**2
        )
        return TwinControlledMoments(
            mean=mean,
            covariance=cov,
            control_energy=energy,
            expected_cost=cost,
            objective=cost + energy,
        )


def twin_optimal_control(
    twin: LinearGaussianTwin,
    schedule: Schedule,
    context: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    scale: float = 1.0,
) -> TwinOptimalControl:
    """The exact J-optimal mean-shift control of the analytic twin ARDM for one frame.

    See :class:`TwinOptimalControl` for the maths; shapes: context ``(batch, k, 1, d)``,
    observation ``(batch, 1, d)``, mask broadcastable to it; the control is
    ``(batch, 1, d)`` at every sub-step (a batch of one broadcasts over any batch of paths).
    """
    return TwinOptimalControl(twin, schedule, context, observation, mask, sigma, scale)
