"""Stochastic-optimal-control (SOC) view of guided ARDM rollouts (docs/design.md §2).

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
    l(y, x) = |y - H x|^2 / (2 sigma_y^2)

is the control objective.  With beta = 1 and w = 0, J(u) = KL(Q^u || posterior path measure)
- log E_P[exp(-l)], so min J = -log p(y) - (n_obs / 2) log(2 pi sigma_y^2).

One module per job:

- :mod:`.rollouts`: the one guided multi-frame rollout (:func:`guided_rollout`) under a
  ``torch.Generator`` (never the global RNG), and :class:`ScaledGuidance`;
- :mod:`.accounting`: control energy and log-density ratio recomputed from the kernel's
  records, to be checked against what the kernel reports;
- :mod:`.weights`: importance weights, reweighted means and the one effective sample size;
- :mod:`.objective`: the one J (:func:`objective_terms`, :func:`control_objective`) with
  the library's one likelihood, and live or recorded arrival costs;
- :mod:`.twin`: on the linear-Gaussian twin with the analytic denoiser, the exact J-optimal
  mean-shift control (the Gaussian h-transform, an LQ problem solved by a backward Riccati
  recursion), the exact moments and objective of the controlled chain, and the Kalman
  posterior and evidence to compare with.

Shapes follow docs/design.md §4: frames ``(batch, channels, *space)``, a rollout
``(batch, time, channels, *space)``, per-path scalars ``(batch,)``.  The batch of a guided
rollout holds independent draws of the path (members x trajectories, flattened).
"""

from .accounting import (
    control_energy,
    log_density_ratio,
    substep_control_energy,
    substep_log_ratio,
)
from .objective import (
    ArrivalCosts,
    ObjectiveTerms,
    control_objective,
    objective_terms,
    recorded_arrival_cost,
    terminal_cost,
    window_observations,
)
from .rollouts import GuidedRollout, ScaledGuidance, guided_rollout
from .twin import (
    TwinControlledMoments,
    TwinOptimalControl,
    TwinPosterior,
    twin_optimal_control,
    twin_posterior,
)
from .weights import (
    effective_sample_size,
    importance_weights,
    log_importance_weights,
    reweighted_mean,
)

__all__ = [
    "ArrivalCosts",
    "GuidedRollout",
    "ObjectiveTerms",
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
    "objective_terms",
    "recorded_arrival_cost",
    "reweighted_mean",
    "substep_control_energy",
    "substep_log_ratio",
    "terminal_cost",
    "twin_optimal_control",
    "twin_posterior",
    "window_observations",
]
