"""Stochastic-optimal-control (SOC) accounting of guided ARDM rollouts (docs/design.md §2).

One controlled sub-step s (S..1) of a physical frame is

    z_{s-1} = m(z_s, s, c) + u_s + tau_s xi,      xi ~ N(0, I),

and the controlled and prior kernels are Gaussians with the same covariance tau_s^2 I that
differ only in their means, so (discrete Girsanov)

    log q_u(z_{s-1} | z_s) - log p(z_{s-1} | z_s) = (u_s . xi) / tau_s + |u_s|^2 / (2 tau_s^2),
    KL(q_u || p) per sub-step                     = |u_s|^2 / (2 tau_s^2).

Summed over the sub-steps and frames of a path these give its control energy and its
log-density ratio log dQ^u/dP; exp(-log ratio) is the importance weight dP/dQ^u that makes
a guided rollout an exact proposal for the prior, and

    J(u) = E_{Q^u}[ sum_j l(y_j, x_j) + sum_{j,s} w_s l(y_j, x0_hat_{j,s}) ] + beta KL,
    l(y, x) = |M (y - x)|^2 / (2 sigma_y^2)

is the control objective.  With beta = 1 and w = 0, J(u) = KL(Q^u || posterior path measure)
- log E_P[exp(-l)], so min J = -log p(y) - (n_obs / 2) log(2 pi sigma_y^2).

This module recomputes that accounting from what the kernel records (the controls, noises
and tau_s of :class:`~ardm_infer.ardm.SubStepInfo`), so that it can be checked against what
the kernel reports; it runs guided rollouts under a ``torch.Generator`` (never the global
RNG); it evaluates J with the library's one likelihood (:func:`ardm_infer.observe.
observation_cost`); and on the linear-Gaussian twin with the analytic denoiser it gives the
exact J-optimal mean-shift control (the Gaussian h-transform, an LQ problem solved by a
backward Riccati recursion), the exact moments and objective of the controlled chain, and
the Kalman posterior and evidence to compare with.

Shapes follow docs/design.md §4: frames ``(batch, channels, *space)``, a rollout
``(batch, time, channels, *space)``, per-path scalars ``(batch,)``.  The batch of a guided
rollout holds independent draws of the path (members x trajectories, flattened).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .ardm.kernel import SubStepInfo
from .ardm.process import ARDM, FrameResult
from .ardm.schedule import Schedule
from .dynamics.linear_gaussian import LinearGaussianTwin, kalman_filter
from .guidance import Guidance, SubStepState
from .observe import observation_cost

__all__ = [
    "GuidedRollout",
    "ScaledGuidance",
    "TwinControlledMoments",
    "TwinOptimalControl",
    "TwinPosterior",
    "control_energy",
    "control_objective",
    "effective_sample_size",
    "guided_rollout",
    "importance_weights",
    "log_density_ratio",
    "log_importance_weights",
    "reweighted_mean",
    "substep_control_energy",
    "substep_log_ratio",
    "terminal_cost",
    "twin_optimal_control",
    "twin_posterior",
]


# --------------------------------------------------------------------------- rollouts


@dataclass
class GuidedRollout:
    """A guided rollout of an ARDM over ``T`` physical frames.

    Attributes:
        frames: the emitted frames z_0, ``(batch, T, channels, *space)``.
        kl: control energy per frame *as reported by the kernel*,
            sum_s |u_s|^2 / (2 tau_s^2), ``(batch, T)``.
        log_ratio: log q_u - log p of each frame's sub-step path *as reported by the
            kernel*, ``(batch, T)``.
        substeps: per frame, the kernel's :class:`~ardm_infer.ardm.SubStepInfo` records
            (s = S first); empty lists when the rollout was not recorded.
    """

    frames: torch.Tensor
    kl: torch.Tensor
    log_ratio: torch.Tensor
    substeps: list[list[SubStepInfo]] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        recorded = sum(len(frame) for frame in self.substeps)
        return (
            f"GuidedRollout(frames={tuple(self.frames.shape)}, kl={tuple(self.kl.shape)}, "
            f"log_ratio={tuple(self.log_ratio.shape)}, recorded_substeps={recorded})"
        )


def guided_rollout(
    ardm: ARDM,
    context: torch.Tensor,
    frames: int,
    generator: torch.Generator,
    guidance: Guidance | Sequence[Guidance | None] | None = None,
    record: bool = True,
) -> GuidedRollout:
    """Run ``frames`` guided physical steps of ``ardm`` autoregressively.

    The only randomness is ``generator`` (the initial latent and one xi per sub-step, in the
    kernel's order), so the same generator state with and without a (zero) guidance gives the
    same noises.

    Args:
        ardm: the :class:`~ardm_infer.ardm.ARDM`.
        context: ``(batch, >= k, channels, *space)``; the last k frames condition frame 0.
        frames: T >= 1.
        generator: the source of randomness (required: never the global RNG).
        guidance: one :class:`~ardm_infer.guidance.Guidance` for every frame, a sequence of
            T guidances (None = unguided frame), or None (the prior sampler).  Frame j is
            generated with ``frame=j``.
        record: keep the per-sub-step records (needed by :func:`control_energy`,
            :func:`log_density_ratio` and arrival costs).

    Returns:
        :class:`GuidedRollout` with frames ``(batch, T, channels, *space)`` and per-frame
        ``kl`` and ``log_ratio`` ``(batch, T)``.
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError("guided_rollout needs an explicit torch.Generator (never the global RNG)")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if guidance is None or isinstance(guidance, Guidance):
        guidances: list[Guidance | None] = [guidance] * frames
    else:
        guidances = list(guidance)
        if len(guidances) != frames:
            raise ValueError(f"need one guidance per frame ({frames}), got {len(guidances)}")
    k = ardm.context_length
    window = context[:, -k:]
    out, kls, ratios, records = [], [], [], []
    for j in range(frames):
        result: FrameResult = ardm.step_frame(
            window, generator, guidance=guidances[j], frame=j, record=record
        )
        out.append(result.frame)
        kls.append(result.kl)
        ratios.append(result.log_ratio)
        records.append(result.substeps)
        window = torch.cat([window[:, 1:], result.frame.unsqueeze(1)], dim=1)
    return GuidedRollout(
        frames=torch.stack(out, 1),
        kl=torch.stack(kls, 1),
        log_ratio=torch.stack(ratios, 1),
        substeps=records,
    )


class ScaledGuidance:
    """The control of another guidance times a constant: u_s -> scale * u_s.

    KL scales by scale^2 along a fixed path; ``scale = 0`` is the prior sampler (a zero
    control, bit for bit the unguided sample under the same generator).

    Args:
        guidance: the :class:`~ardm_infer.guidance.Guidance` to scale.
        scale: the constant lambda.
    """

    def __init__(self, guidance: Guidance, scale: float) -> None:
        self.guidance = guidance
        self.scale = float(scale)
        self.needs_grad = bool(getattr(guidance, "needs_grad", False))

    def control(self, state: SubStepState) -> torch.Tensor | None:
        """``scale * guidance.control(state)`` ``(batch, channels, *space)`` (None stays None)."""
        u = self.guidance.control(state)
        return None if u is None else self.scale * u


# --------------------------------------------------------------------------- path accounting


def _frame_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def substep_control_energy(info: SubStepInfo) -> torch.Tensor:
    """KL(q_u || p) of one recorded sub-step, recomputed: |u_s|^2 / (2 tau_s^2).

    Args:
        info: the kernel's record; ``info.control`` is ``(batch, channels, *space)``.

    Returns:
        ``(batch,)``; exactly 0 where u_s = 0 (also on a deterministic sub-step, tau_s = 0).
    """
    u = info.control
    squared = (u * u).sum(_frame_dims(u))
    if info.tau == 0:
        return torch.zeros_like(squared)
    return squared / (2 * info.tau**2)


def substep_log_ratio(info: SubStepInfo) -> torch.Tensor:
    """log q_u(z_{s-1}|z_s) - log p(z_{s-1}|z_s) of the step taken, recomputed.

    = (u_s . xi) / tau_s + |u_s|^2 / (2 tau_s^2), with xi = ``info.noise`` the noise drawn.

    Args:
        info: the kernel's record (control and noise ``(batch, channels, *space)``).

    Returns:
        ``(batch,)``.
    """
    u, noise = info.control, info.noise
    if info.tau == 0:
        return torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    return (u * noise).sum(_frame_dims(u)) / info.tau + substep_control_energy(info)


PathRecords = SubStepInfo | FrameResult | GuidedRollout | Iterable


def _records(path: PathRecords) -> list[SubStepInfo]:
    """Flatten rollouts, frame results and nested iterables into sub-step records."""
    if isinstance(path, SubStepInfo):
        return [path]
    if isinstance(path, FrameResult):
        if not path.substeps:
            raise ValueError("the FrameResult holds no sub-step records: run it with record=True")
        return list(path.substeps)
    if isinstance(path, GuidedRollout):
        if not path.substeps or not all(path.substeps):
            raise ValueError("the rollout holds no sub-step records: run it with record=True")
        return [info for frame in path.substeps for info in frame]
    out: list[SubStepInfo] = []
    for item in path:
        out.extend(_records(item))
    if not out:
        raise ValueError("no sub-step records in the path")
    return out


def control_energy(path: PathRecords) -> torch.Tensor:
    """Control energy (path KL) recomputed from the records: sum_s |u_s|^2 / (2 tau_s^2).

    Summed over every sub-step (and frame) of ``path``.  Equals KL(Q^u || P) of the path
    measures when the control is a function of the past only.

    Args:
        path: a :class:`SubStepInfo`, a recorded :class:`~ardm_infer.ardm.FrameResult`, a
            recorded :class:`GuidedRollout`, or an iterable of these.

    Returns:
        ``(batch,)``.
    """
    return torch.stack([substep_control_energy(i) for i in _records(path)]).sum(0)


def log_density_ratio(path: PathRecords) -> torch.Tensor:
    """log dQ^u/dP of the path taken, recomputed from the records (discrete Girsanov).

    sum_s (u_s . xi_s) / tau_s + |u_s|^2 / (2 tau_s^2).  Its mean under Q^u is the control
    energy (the cross term has mean 0), and exp(-it) has mean 1 under Q^u.

    Args:
        path: as in :func:`control_energy`.

    Returns:
        ``(batch,)``.
    """
    return torch.stack([substep_log_ratio(i) for i in _records(path)]).sum(0)


# --------------------------------------------------------------------------- importance weights


def log_importance_weights(
    log_ratio: torch.Tensor, *, normalise: bool = False, dim: int = 0
) -> torch.Tensor:
    """Log importance weights of controlled draws against the prior.

    Unnormalised: log w_i = -log_ratio_i = log dP/dQ^u (path_i), with E_{Q^u}[w] = 1.
    Self-normalised (``normalise=True``): log W_i = log w_i - logsumexp_j log w_j over ``dim``.

    Args:
        log_ratio: log q_u - log p of each draw, e.g. ``(batch,)`` or
            ``(members, trajectories)`` (normalised over members with ``dim=0``).
        normalise: self-normalise over ``dim``.
        dim: the dimension of independent draws.

    Returns:
        The shape of ``log_ratio``.
    """
    log_w = -log_ratio
    if normalise:
        log_w = log_w - torch.logsumexp(log_w, dim=dim, keepdim=True)
    return log_w


def importance_weights(
    log_ratio: torch.Tensor, *, normalise: bool = False, dim: int = 0
) -> torch.Tensor:
    """``exp`` of :func:`log_importance_weights`: w_i = dP/dQ^u (path_i) (or W_i, summing to 1).

    Args:
        log_ratio: log q_u - log p of each draw, e.g. ``(batch,)`` or
            ``(members, trajectories)``.
        normalise: self-normalise over ``dim``.
        dim: the dimension of independent draws.

    Returns:
        The shape of ``log_ratio``.
    """
    return torch.exp(log_importance_weights(log_ratio, normalise=normalise, dim=dim))


def reweighted_mean(
    values: torch.Tensor, log_ratio: torch.Tensor, *, normalise: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate E_P[f] from draws of Q^u, with its Monte-Carlo standard error.

    Unnormalised: (1/n) sum_i w_i f_i, standard error std(w f) / sqrt(n) (unbiased).
    Self-normalised: sum_i W_i f_i, standard error sqrt(sum_i W_i^2 (f_i - estimate)^2)
    (delta method; consistent, biased at O(1/n)).

    Args:
        values: f(path_i), ``(n, ...)`` (draws first).
        log_ratio: log q_u - log p of each draw, ``(n,)``.
        normalise: self-normalised estimator.

    Returns:
        ``(estimate, standard_error)``, each ``values.shape[1:]``.
    """
    n = values.shape[0]
    if log_ratio.shape != (n,):
        raise ValueError(f"log_ratio must be ({n},), got {tuple(log_ratio.shape)}")
    expand = (slice(None),) + (None,) * (values.ndim - 1)
    if normalise:
        weights = importance_weights(log_ratio, normalise=True)[expand].to(values.dtype)
        estimate = (weights * values).sum(0)
        error = torch.sqrt((weights**2 * (values - estimate) ** 2).sum(0))
        return estimate, error
    weighted = importance_weights(log_ratio)[expand].to(values.dtype) * values
    return weighted.mean(0), weighted.std(0) / math.sqrt(n)


def effective_sample_size(log_ratio: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's ESS = 1 / sum_i W_i^2 of the self-normalised weights over ``dim``.

    Args:
        log_ratio: log q_u - log p of each draw, e.g. ``(batch,)``.

    Returns:
        ``log_ratio.shape`` without ``dim``.
    """
    log_w = log_importance_weights(log_ratio, normalise=True, dim=dim)
    return torch.exp(-torch.logsumexp(2 * log_w, dim=dim))


# --------------------------------------------------------------------------- the objective


def terminal_cost(
    frames: torch.Tensor,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """sum_j l(y_j, x_j) = sum_j |M_j (y_j - x_j)|^2 / (2 sigma_y^2) over a window.

    The library's one observation cost (:func:`ardm_infer.observe.observation_cost`), summed
    over time and the frame dims (``frame_ndim`` is passed explicitly, so masks may carry a
    batch dim).

    Args:
        frames: x, ``(batch, T, channels, *space)``.
        observation: lifted y, ``(batch, T, channels, *space)`` (or broadcastable).
        mask: bool, ``(T, channels, *space)`` or ``(batch, T, channels, *space)``.
        sigma: sigma_y > 0.

    Returns:
        ``(batch,)``.
    """
    return observation_cost(observation, frames, mask, sigma, frame_ndim=frames.ndim - 1)


def control_objective(
    rollout: GuidedRollout,
    observation: torch.Tensor,
    mask: torch.Tensor,
    sigma: float,
    *,
    beta: float = 1.0,
    arrival_weight: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """The single-path control objective whose Q^u-mean is J(u) (docs/design.md §2).

        J_path = sum_j l(y_j, x_j) + sum_{j,s} w_s l(y_j, x0_hat_{j,s}) + beta sum_j KL_j,

    with KL_j the control energy the kernel reports for frame j (``rollout.kl``) and
    l(y, x) = |M (y - x)|^2 / (2 sigma_y^2) the library's one observation cost.  With
    beta = 1 and w = 0, E_{Q^u}[J_path] = KL(Q^u || posterior) - log E_P[exp(-sum_j l)].

    Args:
        rollout: a :class:`GuidedRollout` (recorded if any w_s > 0).
        observation: lifted y, ``(batch, T, channels, *space)``.
        mask: bool, ``(T, channels, *space)`` or ``(batch, T, channels, *space)``.
        sigma: sigma_y > 0.
        beta: weight of the KL.
        arrival_weight: w_s, a float for every sub-step or a sequence of S floats in the
            recorded order (s = S, ..., 1).

    Returns:
        ``(batch,)``.
    """
    frames = rollout.frames
    total = terminal_cost(frames, observation, mask, sigma) + beta * rollout.kl.sum(1)
    weights = arrival_weight
    if isinstance(weights, int | float):
        if weights == 0:
            return total
    if not rollout.substeps or not all(rollout.substeps):
        raise ValueError("arrival costs need a recorded rollout (record=True)")
    frame_ndim = frames.ndim - 2
    T = frames.shape[1]
    mask_t = mask if mask.ndim == frames.ndim else mask.unsqueeze(0)
    for j in range(T):
        infos = rollout.substeps[j]
        ws = [float(weights)] * len(infos) if isinstance(weights, int | float) else list(weights)
        if len(ws) != len(infos):
            raise ValueError(f"need {len(infos)} arrival weights, got {len(ws)}")
        for w, info in zip(ws, infos, strict=True):
            if w:
                total = total + w * observation_cost(
                    observation[:, j], info.x0_hat, mask_t[:, j], sigma, frame_ndim=frame_ndim
                )
    return total


# --------------------------------------------------------------------------- the exact twin


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
        from .ardm.analytic import sampler_twin

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
