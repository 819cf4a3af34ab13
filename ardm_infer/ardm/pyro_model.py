"""The ARDM's path measure as a Pyro model, for independent checks of our accounting.

One sample site per sub-step (``z_{t}_{s}`` ~ Normal(m + u, tau), conditioned on the latents
actually drawn) and, optionally, one observation site per frame (``y_{t}``, the library's
masked Gaussian likelihood).  Pyro's trace machinery then computes path log-densities with
its own Normal densities, independent of the kernel's closed-form log-ratio.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..observe import observation_distribution
from .process import FrameResult
from .schedule import Schedule


def path_model(
    schedule: Schedule,
    frames: list[FrameResult],
    controlled: bool = True,
    observations: list[tuple[torch.Tensor, torch.Tensor, float] | None] | None = None,
) -> None:
    """Pyro model scoring recorded rollouts.

    Args:
        schedule: the sampler's schedule (gives tau_s).
        frames: :class:`FrameResult` per physical step, recorded with ``record=True``; their
            ``x0_hat`` and ``latent`` give each sub-step's prior mean.
        controlled: score under the controlled kernels q_u (mean m + u) or the prior p (mean m).
        observations: per frame ``(observation, mask, sigma)`` or None; adds sites ``y_{t}``.

    The latents are passed as ``obs``, so ``poutine.trace(path_model).get_trace(...)``
    evaluates log q_u (or log p) of the path that was actually sampled.
    """
    for t, fr in enumerate(frames):
        if not fr.substeps:
            raise ValueError("frames must be recorded with record=True")
        latents = [info.latent for info in fr.substeps] + [fr.frame.detach()]
        batch = latents[0].shape[0]
        event = latents[0].ndim - 1
        with pyro.plate(f"batch_{t}", batch):
            for i, info in enumerate(fr.substeps):
                _, _, tau, c = schedule.coefficients(info.substep)
                mean = info.x0_hat + c * (info.latent - info.x0_hat)
                if controlled:
                    mean = mean + info.control
                pyro.sample(
                    f"z_{t}_{info.substep - 1}",
                    dist.Normal(mean, tau).to_event(event),
                    obs=latents[i + 1],
                )
            if observations is not None and observations[t] is not None:
                y, mask, sigma = observations[t]
                pyro.sample(
                    f"y_{t}",
                    observation_distribution(fr.frame.detach(), mask, sigma),
                    obs=y,
                )


def path_log_density(
    schedule: Schedule,
    frames: list[FrameResult],
    controlled: bool = True,
    observations: list[tuple[torch.Tensor, torch.Tensor, float] | None] | None = None,
) -> torch.Tensor:
    """Per-batch-element log density of the recorded path under :func:`path_model`, ``(batch,)``."""
    trace = pyro.poutine.trace(path_model).get_trace(schedule, frames, controlled, observations)
    trace.compute_log_prob()
    total = None
    for site in trace.nodes.values():
        if site["type"] == "sample":
            lp = site["log_prob"]
            total = lp if total is None else total + lp
    return total
